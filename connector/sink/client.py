"""The MoEngage Bulk Import client: one keep-alive session, Basic auth, and answer classification.

The session comes from outside (a seam: unit tests hand in a fake, integration tests use the
sandbox). Nothing here logs or raises with the API key or the Authorization header in it.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr


class Verdict(Enum):
    """What to do with an answer (the table in the README, "Answer classification")."""

    ACCEPTED = "accepted"  # 200: acknowledge every element in the request
    THROTTLED = "throttled"  # 429: wait (Retry-After), retry the same request
    RETRY = "retry"  # 5xx, timeout, connection error: back off, retry
    TOO_LARGE = "too_large"  # 413: split in halves
    REJECTED = "rejected"  # 400 about the elements: bisect to find the bad ones
    FATAL = "fatal"  # 401/403/409/415/404 and account-level 400s: stop, fix configuration


# 400s that are about the account or the request line, not about any element: bisecting would
# wrongly blame every record (seed 001's response code table).
ACCOUNT_LEVEL_400 = frozenset(
    {"Blacklisted", "InvalidParams", "ParamsRequired", "Missing header value"}
)

FATAL_HINTS = {
    401: "Check MOENGAGE_WORKSPACE_ID and MOENGAGE_API_KEY (Settings > Account > APIs, Data tile).",
    403: "The MoEngage account is suspended or blocked; contact MoEngage before restarting.",
    404: "Check moengage.data_center / moengage.base_url: the endpoint does not exist there.",
    409: "The workspace id in the URL and in the credentials differ, or no API key is set for it.",
    415: "The request's Content-Type was refused; this is a connector bug, please report it.",
    400: "MoEngage refused the account or request parameters; check the workspace id.",
}


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP exchange, reduced to what the delivery policy needs."""

    status: int  # 0 for a timeout or connection error
    verdict: Verdict
    error_type: str | None = None
    message: str | None = None
    request_id: str | None = None
    retry_after: float | None = None

    def describe(self) -> str:
        if self.status == 0:
            return self.message or "no answer"
        kind = f" {self.error_type}" if self.error_type else ""
        text = f": {self.message}" if self.message else ""
        return f"HTTP {self.status}{kind}{text}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(status: int, payload: dict[str, Any] | None, retry_after: str | None) -> Answer:
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    etype = error.get("type") if isinstance(error.get("type"), str) else None
    msg = error.get("message") if isinstance(error.get("message"), str) else None
    rid = error.get("request_id") if isinstance(error.get("request_id"), str) else None
    if 200 <= status < 300:
        verdict = Verdict.ACCEPTED
    elif status == 429:
        verdict = Verdict.THROTTLED
    elif status >= 500 or status == 408:
        verdict = Verdict.RETRY
    elif status == 413:
        verdict = Verdict.TOO_LARGE
    elif status == 400 and etype not in ACCOUNT_LEVEL_400:
        verdict = Verdict.REJECTED
    else:
        verdict = Verdict.FATAL
    return Answer(status, verdict, etype, msg, rid, parse_retry_after(retry_after))


class MoEngageClient:
    """POSTs transition bodies; never raises for HTTP-level problems, it classifies them."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        workspace_id: str,
        api_key: SecretStr,
        timeout_seconds: float,
    ) -> None:
        self._session = session
        self.url = f"{endpoint}/v1/transition/{workspace_id}"
        token = base64.b64encode(f"{workspace_id}:{api_key.get_secret_value()}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    def __repr__(self) -> str:
        return f"MoEngageClient(url={self.url!r})"

    async def post(self, body: bytes) -> Answer:
        try:
            async with self._session.post(
                self.url, data=body, headers=self._headers, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            return Answer(0, Verdict.RETRY, "Timeout", "no answer within the request timeout")
        except aiohttp.ClientError as e:
            # str(e) of aiohttp errors names host and port only, never headers.
            return Answer(0, Verdict.RETRY, type(e).__name__, f"connection error: {e}")
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            payload = None
        return classify(status, payload, retry_after)


async def sleep_until(deadline: float) -> None:
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)
