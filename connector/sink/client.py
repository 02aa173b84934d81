"""The MoEngage Bulk Import client: one keep-alive session, Basic auth, and answer classification.

The session comes from outside (a seam: unit tests hand in a fake, integration tests use the
sandbox). Redirects are never followed. :func:`classify` is a pure table from an answer (status,
body, headers) to a :class:`Verdict`; the delivery loop acts on verdicts and knows no status codes.
Nothing here logs or raises with the API key or the Authorization header in it.
"""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson
from pydantic import SecretStr


class Verdict(Enum):
    """What to do with an answer: the table in the README, "Answer classification".

    Success is MoEngage's own: only a 2xx whose body is MoEngage's success answer (a JSON object
    with ``"status": "success"``) acknowledges anything. Only an answer carrying MoEngage's error
    body (``{"status": "fail", "error": {"type": ...}}``) may blame the elements (bisect) or their
    size (split); the same status without it came from something else on the way (a proxy, a WAF,
    a captive portal) and says nothing about the records.
    """

    ACCEPTED = "accepted"  # 2xx with MoEngage's success body: acknowledge every element
    THROTTLED = "throttled"  # 429: wait (Retry-After, capped), retry the same request
    RETRY = "retry"  # 5xx, 408, timeout, connection error: back off, retry, for as long as it takes
    UNEXPECTED = "unexpected"  # not MoEngage's answer: back off, retry; fatal after a bounded time
    TOO_LARGE = "too_large"  # MoEngage's 413 for a body big enough to be over its limit: split
    REJECTED = "rejected"  # MoEngage's 400 about the elements: bisect to find the bad ones
    FATAL = "fatal"  # 3xx, 401/403/404/409/415, other 4xx, account-level 400s: stop, fix config


# 400s that are about the account or the request line, not about any element: bisecting would
# wrongly blame every record (Data API overview, "Response Codes").
ACCOUNT_LEVEL_400 = frozenset(
    {"Blacklisted", "InvalidParams", "ParamsRequired", "Missing header value"}
)

# MoEngage refuses bodies over 128 KB with 413 (the documented client limit is 100 kB). A 413 for a
# body under half of that cannot be about its size: splitting it would only end in blaming single
# elements for what something else on the way refused.
SERVER_LIMIT_BYTES = 128 * 1024
TOO_LARGE_FLOOR = SERVER_LIMIT_BYTES // 2
SNIPPET_CHARS = 200  # of a body that is not MoEngage's, in logs and the fatal message

FATAL_HINTS = {
    401: "Check MOENGAGE_WORKSPACE_ID and MOENGAGE_API_KEY (Settings > Account > APIs, Data tile).",
    403: "The MoEngage account is suspended or blocked; contact MoEngage before restarting.",
    404: "Check moengage.data_center / moengage.base_url: the endpoint does not exist there.",
    409: "The workspace id in the URL and in the credentials differ, or no API key is set for it.",
    415: "The request's Content-Type was refused; this is a connector bug, please report it.",
    400: "MoEngage refused the account or request parameters; check the workspace id.",
}
REDIRECT_HINT = (
    "The connector never follows redirects: a redirected POST reaches something other than "
    "MoEngage's Bulk Import API, without its body. Set moengage.data_center, or moengage.base_url "
    "to the MoEngage endpoint itself (Data API overview, data centres); a proxy or captive portal "
    "on the way must let the request through."
)
HTTPS_HINT = (
    "moengage.base_url starts with http:// and the server redirects to https://: set base_url to "
    "the https:// address (or use moengage.data_center)."
)
UNEXPECTED_HINT = (
    "These answers do not come from MoEngage's Bulk Import API (a proxy, a firewall or a wrong "
    "moengage.base_url?). Nothing was acknowledged: the records are read again after a restart."
)


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP exchange, reduced to what the delivery policy needs."""

    status: int  # 0 for a timeout or connection error
    verdict: Verdict
    error_type: str | None = None
    message: str | None = None
    request_id: str | None = None
    retry_after: float | None = None
    hint: str | None = None  # for a FATAL answer: what to fix (else FATAL_HINTS by status)

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


def snippet(body: bytes, secrets: Collection[str] = ()) -> str:
    """The first ``SNIPPET_CHARS`` characters of a body, printable, on one line, with every
    string in ``secrets`` replaced first (an echoing proxy may send our Authorization back), as
    it is and as a JSON encoder that escapes ``/`` writes it (base64 and keys can hold ``/``)."""
    if not body:
        return "(empty body)"
    text = body[: SNIPPET_CHARS * 8].decode("utf-8", errors="replace")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
            if "/" in secret:
                text = text.replace(secret.replace("/", "\\/"), "[redacted]")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text[:SNIPPET_CHARS] + ("..." if len(text) > SNIPPET_CHARS else "")


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def _moengage_error(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``error`` object of MoEngage's error body (``"status": "fail"`` and an ``error`` with a
    string ``type``), or None when the body is not MoEngage's."""
    if payload is None or payload.get("status") != "fail":
        return None
    error = payload.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("type"), str):
        return None
    return error


def _text(error: dict[str, Any], key: str) -> str | None:
    value = error.get(key)
    return value if isinstance(value, str) else None


def classify(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    sent_bytes: int = 0,
    url: str = "",
    secrets: Collection[str] = (),
) -> Answer:
    """The answer to a POST of ``sent_bytes`` bytes to ``url`` → what to do (a pure table)."""
    headers = headers or {}
    retry_after = parse_retry_after(headers.get("Retry-After"))
    payload = _json_object(body)
    error = _moengage_error(payload)

    def unexpected(why: str) -> Answer:
        return Answer(status, Verdict.UNEXPECTED, None, f"{why}: {snippet(body, secrets)}")

    if 200 <= status < 300:
        if payload is not None and payload.get("status") == "success":
            return Answer(status, Verdict.ACCEPTED)
        return unexpected("not MoEngage's success answer")
    if 300 <= status < 400:
        return redirect_answer(status, headers.get("Location"), url)
    if status == 429:
        verdict = Verdict.THROTTLED
    elif status >= 500 or status == 408:
        verdict = Verdict.RETRY
    elif status in (400, 413) and error is None:
        return unexpected("not MoEngage's error answer")
    elif status == 413:
        if sent_bytes < TOO_LARGE_FLOOR:
            why = f"413 for a {sent_bytes}-byte request, far under MoEngage's 128 KB limit"
            return unexpected(why)
        verdict = Verdict.TOO_LARGE
    elif status == 400 and _text(error or {}, "type") not in ACCOUNT_LEVEL_400:
        verdict = Verdict.REJECTED
    else:
        verdict = Verdict.FATAL
    error = error or {}
    etype, msg, rid = _text(error, "type"), _text(error, "message"), _text(error, "request_id")
    if verdict in (Verdict.FATAL, Verdict.RETRY) and not error:
        # Quoted in logs, /readyz and (send.persistent_server_error) dead-letter headers.
        msg = f"not MoEngage's error answer: {snippet(body, secrets)}"
    return Answer(status, verdict, etype, msg, rid, retry_after)


def redirect_answer(status: int, location: str | None, url: str) -> Answer:
    """A 3xx: fatal, naming where it pointed (with the https hint when it is the same host)."""
    if not location:
        return Answer(status, Verdict.FATAL, "redirect", "redirected without a Location", None)
    target = urljoin(url, location) if url else location
    target = target[:SNIPPET_CHARS]
    moved_to_https = (
        url.startswith("http://")
        and target.startswith("https://")
        and urlsplit(url).hostname == urlsplit(target).hostname
    )
    return Answer(
        status,
        Verdict.FATAL,
        "redirect",
        f"redirected to {target} (Location: {location[:SNIPPET_CHARS]})",
        hint=f"{HTTPS_HINT} {REDIRECT_HINT}" if moved_to_https else REDIRECT_HINT,
    )


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
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "MOE-APPKEY": workspace_id,  # Data API overview: "Set the MOE-APPKEY header"
        }
        # Scrubbed from any body quoted in a message (longest first: the token holds the key's
        # base64, and an unpadded token is a prefix of the padded one).
        key = api_key.get_secret_value()
        self._secrets = sorted({token, token.rstrip("="), key}, key=len, reverse=True)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    def __repr__(self) -> str:
        return f"MoEngageClient(url={self.url!r})"

    async def post(self, body: bytes) -> Answer:
        try:
            async with self._session.post(
                self.url,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,  # a redirected POST never reaches MoEngage: see classify
            ) as resp:
                raw = await resp.read()
                status = resp.status
                headers = resp.headers
        except TimeoutError:
            return Answer(0, Verdict.RETRY, "Timeout", "no answer within the request timeout")
        except aiohttp.ClientError as e:
            # str(e) of aiohttp errors names host and port only, never headers.
            return Answer(0, Verdict.RETRY, type(e).__name__, f"connection error: {e}")
        return classify(
            status, raw, headers, sent_bytes=len(body), url=self.url, secrets=self._secrets
        )
