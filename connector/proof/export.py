"""Get User API client: look users up by customer id to confirm they were ingested.

A 200 from Bulk Import only means "accepted for processing"; ``POST /v1/customers/export`` is how
ingestion is confirmed. The documented limits are kept on the client side: at most 20 identifiers
per request and 1,000 users a minute (a token bucket sized so that no 60-second window ever holds
more). A 429 waits for ``Retry-After``; 5xx, 408, timeouts and connection errors back off and
retry a bounded number of times (this serves a command, not the pipeline); any other refusal
raises :class:`FatalApiError` with a hint. The session comes from outside; nothing here logs or
raises with the API key or the Authorization header in it.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import structlog
from pydantic import SecretStr

from connector.errors import ConnectorError, FatalApiError
from connector.ratelimit import TokenBucket
from connector.sink.client import FATAL_HINTS, parse_retry_after, redirect_answer
from connector.sink.delivery import RetryPolicy

log = structlog.get_logger(__name__)

EXPORT_PATH = "/v1/customers/export"
MAX_IDENTIFIERS = 20  # Get User API: "20 users per payload"
USERS_PER_MINUTE = 1000  # Get User API: "1000 users per minute"

EXPORT_HINTS = {
    **FATAL_HINTS,
    400: "MoEngage refused the Get User request; this is a connector bug, please report it.",
    413: "The Get User request was too large; this is a connector bug, please report it.",
}

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ExportResult:
    """Users MoEngage knows (customer id -> the attributes it returned) and those it does not."""

    found: dict[str, JsonDict] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)


class ExportError(ConnectorError):
    """The Get User API gave no usable answer after every retry (``last``: the last answer, or
    what happened instead, when there was one)."""

    def __init__(self, message: str, last: str | None = None) -> None:
        super().__init__(message)
        self.last = last


@dataclass(slots=True)
class _Pacer:
    """Spends ``users`` tokens before each request, sleeping while the bucket is short."""

    bucket: TokenBucket
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]

    async def pay(self, users: int) -> None:
        # A float shortfall far below a clock tick would never be slept off: treat it as paid.
        while (wait := self.bucket.wait_time(users, self.clock())) > 1e-6:
            await self.sleep(wait)
        self.bucket.take(users, self.clock())


def make_bucket(users_per_minute: int, chunk: int, now: float) -> TokenBucket:
    """A bucket holding one request's worth, refilled so that burst + a minute's refill stays
    within ``users_per_minute``: no 60-second window ever holds more than the budget."""
    refill = max(1, users_per_minute - chunk)
    return TokenBucket(refill, now, capacity=chunk)


async def export_users(
    session: aiohttp.ClientSession,
    endpoint: str,
    workspace_id: str,
    api_key: SecretStr,
    customer_ids: list[str],
    *,
    fields: list[str] | None = None,
    users_per_minute: int = USERS_PER_MINUTE,
    timeout_seconds: float = 30.0,
    retry: RetryPolicy | None = None,
    max_attempts: int = 8,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> ExportResult:
    """Look up ``customer_ids`` (duplicates once each) in chunks of at most 20, paced."""
    ids = list(dict.fromkeys(customer_ids))
    request = _Request(
        session, endpoint, workspace_id, api_key, fields=fields, timeout_seconds=timeout_seconds
    )
    # Half the budget at most per request, so small test budgets still pace rather than burst.
    chunk = min(MAX_IDENTIFIERS, max(1, users_per_minute // 2))
    pacer = _Pacer(make_bucket(users_per_minute, chunk, clock()), clock, sleep)
    policy = retry or RetryPolicy(0.5, 30.0)
    jitter = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    found: dict[str, JsonDict] = {}
    not_found: list[str] = []
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        await pacer.pay(len(part))
        data = await _with_retries(
            request, part, policy, max_attempts=max_attempts, sleep=sleep, rng=jitter
        )
        _collect(data, part, found, not_found)
    return ExportResult(found, not_found)


class _Request:
    """One Get User POST: headers, body and answer reading; HTTP problems become ``_Answer``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        workspace_id: str,
        api_key: SecretStr,
        *,
        fields: list[str] | None,
        timeout_seconds: float,
    ) -> None:
        self._session = session
        self.url = f"{endpoint.rstrip('/')}{EXPORT_PATH}"
        self._params = {"app_id": workspace_id}  # seed 003 lists app_id as a request parameter
        token = base64.b64encode(f"{workspace_id}:{api_key.get_secret_value()}".encode()).decode()
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "MOE-APPKEY": workspace_id,  # Data API overview: "Set the MOE-APPKEY header"
        }
        # customer_id is asked for so every returned user can be matched to the id looked up.
        self._fields = None if fields is None else list(dict.fromkeys([*fields, "customer_id"]))
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    def __repr__(self) -> str:
        return f"_Request(url={self.url!r})"

    async def post(self, ids: list[str]) -> _Answer:
        body: JsonDict = {
            "data": {
                "identifiers": [{"identifier_type": "customer_id", "identifier": i} for i in ids]
            }
        }
        if self._fields is not None:
            body["user_fields_to_export"] = self._fields
        try:
            async with self._session.post(
                self.url,
                data=orjson.dumps(body),
                params=self._params,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,  # a redirected POST reaches something else, without body
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                if 300 <= status < 400:
                    redirect = redirect_answer(status, resp.headers.get("Location"), self.url)
                    raise FatalApiError(
                        status,
                        redirect.error_type or "redirect",
                        redirect.message or "redirected",
                        redirect.hint or "",
                    )
        except TimeoutError:
            return _Answer(0, None, "no answer within the request timeout")
        except aiohttp.ClientError as e:
            # str(e) of aiohttp errors names host and port only, never headers.
            return _Answer(0, None, f"connection error: {type(e).__name__}: {e}")
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            payload = None
        return _Answer(status, payload if isinstance(payload, dict) else None, None, retry_after)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int  # 0: no HTTP answer
    payload: JsonDict | None
    problem: str | None = None
    retry_after: str | None = None

    def error(self) -> tuple[str, str]:
        err = self.payload.get("error") if self.payload else None
        err = err if isinstance(err, dict) else {}
        etype, message = err.get("type"), err.get("message")
        return (
            etype if isinstance(etype, str) else "error",
            message if isinstance(message, str) else "no message",
        )

    def describe(self) -> str:
        if self.status == 0:
            return self.problem or "no answer"
        etype, message = self.error()
        return f"HTTP {self.status} {etype}: {message}"


async def _with_retries(
    request: _Request,
    ids: list[str],
    policy: RetryPolicy,
    *,
    max_attempts: int,
    sleep: Callable[[float], Awaitable[None]],
    rng: random.Random,
) -> JsonDict:
    """The ``data`` object of a 200, after as many retries as ``max_attempts`` allows."""
    max_attempts = max(1, max_attempts)
    for attempt in range(max_attempts):
        answer = await request.post(ids)
        status = answer.status
        if status == 200:
            data = answer.payload.get("data") if answer.payload else None
            if not isinstance(data, dict):
                raise ExportError("the Get User API answered 200 without a 'data' object")
            return data
        if status not in (0, 408, 429) and status < 500:
            etype, message = answer.error()
            hint = EXPORT_HINTS.get(status, "Check the connector's MoEngage settings.")
            raise FatalApiError(status, etype, message, hint)
        delay = policy.backoff(attempt, rng)
        if status == 429:
            delay = max(delay, parse_retry_after(answer.retry_after) or 0.0)
        if attempt + 1 < max_attempts:
            log.warning(
                "export_retry",
                answer=answer.describe(),
                attempt=attempt + 1,
                delay_s=round(delay, 3),
            )
            await sleep(delay)
    raise ExportError(
        f"the Get User API gave no usable answer in {max_attempts} attempts "
        f"(last: {answer.describe()})",
        last=answer.describe(),
    )


def _collect(
    data: JsonDict, asked: list[str], found: dict[str, JsonDict], missing: list[str]
) -> None:
    """Sort one answer's users into found/not found. An id the answer names in neither list
    (a user returned without its customer_id) counts as not found: nothing confirmed it."""
    wanted = set(asked)
    users = data.get("users")
    for user in users if isinstance(users, list) else []:
        attrs = user.get("user_attributes") if isinstance(user, dict) else None
        cid = attrs.get("customer_id") if isinstance(attrs, dict) else None
        if isinstance(cid, str) and cid in wanted and isinstance(attrs, dict):
            found[cid] = attrs
    missing.extend(i for i in asked if i not in found)
