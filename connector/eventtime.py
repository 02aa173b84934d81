"""Event times as the validator reads them: epoch numbers by magnitude, ISO 8601 text, and the
one form the Avro decoder writes (``YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z``) read from its minute's
cached start. Pure: no clock (the window is the validator's, ``connector.elements``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Final

# Epoch magnitudes: below 1e11 seconds (up to the year 5138), from 1e11 milliseconds (1973-03-03
# onwards), from 1e14 microseconds (1973-03-03 onwards). A nanosecond epoch reads as microseconds
# and lands tens of thousands of years ahead, outside the window: bad input, not a wrong date.
_MS_THRESHOLD: Final = 100_000_000_000
_US_THRESHOLD: Final = 100_000_000_000_000
_MAX_EPOCH_DIGITS: Final = 30  # longer digit strings are no time (and int() would refuse them)


def _epoch(n: int) -> int:
    if n >= _US_THRESHOLD:
        return n // 1_000_000
    return n // 1000 if n >= _MS_THRESHOLD else n


def parse_time(value: object) -> tuple[int | str, datetime | None] | None:
    """``(the normalised time, its ISO 8601 datetime or None for an epoch)``, or None when
    ``value`` is not a time MoEngage accepts."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _epoch(value), None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value >= _US_THRESHOLD:
            value /= 1_000_000
        elif value >= _MS_THRESHOLD:
            value /= 1000
        return math.floor(value), None
    if isinstance(value, str):
        stripped = value.strip()
        # A number never holds ':' (ISO 8601 times do): skip the float() that would raise.
        if stripped.isascii() and ":" not in stripped:
            if stripped.isdigit():
                if len(stripped) > _MAX_EPOCH_DIGITS:
                    return None
                return _epoch(int(stripped)), None
            if "_" not in stripped:
                try:
                    number = float(stripped)
                except ValueError:
                    pass
                else:
                    return parse_time(number)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return value, parsed
    return None


_UTC_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE_US: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:" -> microseconds since the epoch (bounded)
_SECOND_US: Final = {f"{s:02d}": s * 1_000_000 for s in range(60)}  # "SS" -> microseconds


def utc_seconds(value: str) -> float | None:
    """``datetime.fromisoformat(value).timestamp()`` for the one form the Avro decoder writes,
    ``YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z``, from its minute's cached start; None for any other
    text (``parse_time`` reads that). The same float: whole microseconds over 10^6, as
    ``timestamp()`` computes it. Only ASCII digits match, as ``fromisoformat`` reads."""
    minute = _MINUTE_US.get(value[:17])
    if minute is None:
        minute = _minute_us(value[:17])
        if minute is None:
            return None
    second = _SECOND_US.get(value[17:19])
    if second is None:
        return None
    n = len(value)
    if n == 20:
        return (minute + second) / 1_000_000 if value[19] == "Z" else None
    if n in (24, 27) and value[19] == "." and value[-1] == "Z":
        frac = value[20:-1]
        if frac.isascii() and frac.isdigit():
            return (minute + second + int(frac) * (1000 if n == 24 else 1)) / 1_000_000
    return None


def _minute_us(prefix: str) -> int | None:
    """The start of a ``YYYY-MM-DDTHH:MM:`` minute in microseconds, cached; None if it is no
    valid minute in exactly that form."""
    digits = prefix[:4] + prefix[5:7] + prefix[8:10] + prefix[11:13] + prefix[14:16]
    if prefix[4::3] != "--T::" or not digits.isdigit():  # positions 4, 7, 10, 13, 16
        return None
    try:
        start = datetime.fromisoformat(prefix + "00+00:00")
    except ValueError:
        return None
    if len(_MINUTE_US) >= 4096:
        _MINUTE_US.clear()
    us = _MINUTE_US[prefix] = (start - _UTC_EPOCH) // timedelta(microseconds=1)
    return us


def describe_seconds(seconds: float) -> str:
    """An epoch in seconds as ISO 8601 UTC when a datetime can hold it, else as a number."""
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return "before the year 1" if seconds < 0 else "after the year 9999"
