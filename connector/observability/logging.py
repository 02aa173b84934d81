"""structlog set-up: JSON lines off a terminal, readable console on one, secrets always redacted.

Secrets (the API key, the Basic credentials in any encoding, librdkafka passwords) are registered
once at start-up; a processor replaces them in every value of every event, whatever key or
container holds it, and a last step redacts the rendered line itself.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"
_secrets: set[str] = set()
# "scheme://user:password@": configuration refuses credentials in URLs, and any URL that still
# reaches a log line (from a library, an error message) loses its user info.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def register_secret(value: str | None) -> None:
    """Never print this value (nor its base64 forms) in any log line."""
    if not value or len(value) < 4:
        return
    _secrets.add(value)


def register_basic_auth(user: str, password: str) -> None:
    register_secret(password)
    pair = f"{user}:{password}".encode()
    register_secret(base64.b64encode(pair).decode())
    register_secret(base64.b64encode(pair).decode().rstrip("="))


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "@" in text and "://" in text:
        text = _URL_USERINFO.sub(r"\1***@", text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    # bytes and any other object: the renderers would print its repr, so scrub that text.
    return redact(repr(value))


def _redact_rendered(_: Any, __: str, rendered: Any) -> Any:
    """The last step, on the rendered line itself: whatever a renderer made of a value, no
    registered secret and no URL user info reaches the output."""
    return redact(rendered) if isinstance(rendered, str) else rendered


def redact_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _secrets:
        return event  # URL user info is masked on the rendered line
    for key, value in list(event.items()):
        event[key] = _scrub(value)
    return event


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog once for the process. ``level`` is debug, info, warning or error."""
    threshold = _LEVELS.get(level.lower())
    if threshold is None:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}")
    out = stream or sys.stderr
    renderer: Any
    use_console = fmt == "console" or (fmt == "auto" and hasattr(out, "isatty") and out.isatty())
    processors: Iterable[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*processors, renderer, _redact_rendered],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
