"""Scalar conversions of the mapping's value operations: exact decimals, text, numbers, times.

Decimals: the decoder hands an Avro ``decimal`` over as the JSON number of exactly its value (an
int, or a float whose shortest text is the decimal: ``19.99``), so ``Decimal(repr(f))`` is the
decimal again. Arithmetic is done in ``Decimal`` under a context that traps any rounding, and a
result leaves as the documented choice ``decimals: number`` (an int when integral, a float only
when it reads back as the same decimal, else bad input ``mapping.decimal_inexact``) or ``string``
(always its exact text, so an attribute keeps one type).

Times: an ISO 8601 string (``Z``, an offset, or none: UTC), a date ``YYYY-MM-DD``, or an epoch
number (or a string of digits) in seconds, milliseconds or microseconds (``unit``; ``auto`` reads
it by magnitude as event times are: below 1e11 seconds, below 1e14 milliseconds, else
microseconds). A time outside the years 1..9999 is bad input ``mapping.timestamp_range``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal, DecimalException, Inexact, InvalidOperation, Overflow
from typing import Any, Literal

from connector.errors import TransformError

Decimals = Literal["number", "string"]
# Exact or an error: 200 digits hold any sum of decimal(38, s) values a record can carry.
EXACT = Context(prec=200, traps=[Inexact, InvalidOperation, Overflow])
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_INTEGER = re.compile(r"[+-]?[0-9]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_MIN = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_US_MAX = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // timedelta(
    microseconds=1
)
_UNITS = {"s": 1_000_000, "ms": 1000, "us": 1}
_MS_THRESHOLD, _US_THRESHOLD = 100_000_000_000, 100_000_000_000_000  # as connector.elements
# A decimal this far from 1 (its exponent) is never written out: its text would be this many
# digits long, and turning it into an int costs time quadratic in them (a 9-byte "1e1000000"
# held the event loop for half a minute). No exact result of 200 digits comes near it.
_MAX_EXPONENT = 1000
# Longer digit strings are no epoch time (and int() refuses past 4300 digits).
_MAX_EPOCH_DIGITS = 40


def type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def bad_type(where: str, op: str, value: object, wanted: str) -> TransformError:
    return TransformError(
        f"mapping {where}: '{op}' needs {wanted}, the record has a {type_name(value)}",
        rule="mapping.type",
    )


def to_decimal(value: Any, where: str, op: str) -> int | Decimal:
    """A number as an int (kept exact) or a ``Decimal`` of exactly its text; else bad input."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is float:
        if not math.isfinite(value):
            raise bad_type(where, op, value, "a finite number")
        return Decimal(repr(value))
    if kind is Decimal:
        if not value.is_finite():
            raise bad_type(where, op, value, "a finite number")
        return value  # type: ignore[no-any-return]
    raise bad_type(where, op, value, "a number")


def number_out(value: int | Decimal, decimals: Decimals, where: str) -> int | float | str:
    """A computed number as the mapping emits it (see the module docstring)."""
    if type(value) is int:
        return value if decimals == "number" else str(value)
    assert isinstance(value, Decimal)
    size = value.adjusted()
    if abs(size) > _MAX_EXPONENT:
        raise TransformError(
            f"mapping {where}: a number of about 1e{size} has no JSON number and its exact text "
            f"would be over {_MAX_EXPONENT} digits",
            rule="mapping.decimal_inexact",
        )
    if size < 20 and value == value.to_integral_value():  # 1e20 is past 2^64 already
        n = int(value)
        if _INT_MIN <= n <= _INT_MAX:
            return n if decimals == "number" else str(n)
    if decimals == "string":
        return format(value, "f")
    f = float(value)
    if math.isfinite(f) and Decimal(repr(f)) == value:
        return f
    shown = str(value) if value.adjusted() < 60 else f"a number of about 1e{value.adjusted()}"
    raise TransformError(
        f"mapping {where}: {shown} has no exact JSON number (a double would round it); "
        "use 'decimals: string' to send its exact text",
        rule="mapping.decimal_inexact",
    )


def exact(where: str, op: str, compute: Any, *args: Any) -> Any:
    """``compute(*args)`` in the exact context, an inexact result being bad input."""
    try:
        return compute(*args)
    except DecimalException:
        raise TransformError(
            f"mapping {where}: '{op}' has no exact result (more than 200 digits)",
            rule="mapping.decimal_inexact",
        ) from None


def to_text(value: Any, where: str, op: str) -> str:
    """A scalar as text: numbers as written (a decimal exactly), booleans ``true``/``false``."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return repr(value)
    if kind is Decimal:
        return format(value, "f")
    raise bad_type(where, op, value, "a scalar (text, number or boolean)")


def to_number(value: Any, decimals: Decimals, where: str) -> int | float | str:
    """A number, or the text of one (``" 42 "``, ``"19.99"``), as a number; else bad input."""
    kind = type(value)
    if kind is str:
        text = value.strip()
        if _INTEGER.fullmatch(text) and len(text) <= _MAX_EXPONENT:
            return number_out(int(text), decimals, where)
        try:
            parsed = Decimal(text)
        except InvalidOperation:
            parsed = Decimal("NaN")
        if not parsed.is_finite():
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise TransformError(
                f"mapping {where}: 'to: number' cannot read {shown!r} as a number",
                rule="mapping.type",
            )
        return number_out(parsed, decimals, where)
    return number_out(to_decimal(value, where, "to: number"), decimals, where)


def _epoch_us(n: int | float | Decimal, unit: str, where: str) -> int:
    try:
        if unit == "auto":
            size = abs(float(n))  # an int past a double's range: OverflowError
            unit = "s" if size < _MS_THRESHOLD else "ms" if size < _US_THRESHOLD else "us"
        us = int(n) * _UNITS[unit] if type(n) is int else round(Decimal(n) * _UNITS[unit])
    except (OverflowError, ValueError, InvalidOperation):  # inf, nan, past a double
        us = _US_MAX + 1
    if not _US_MIN <= us <= _US_MAX:
        raise TransformError(
            f"mapping {where}: the epoch time {n!r} ({unit}) is outside the years 1 to 9999",
            rule="mapping.timestamp_range",
        )
    return us


def _datetime_us(text: str, where: str) -> int:
    try:
        if len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(text)
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise TransformError(
            f"mapping {where}: {shown!r} is neither ISO 8601 (2024-05-01T10:00:00Z, 2024-05-01) "
            "nor an epoch number",
            rule="mapping.timestamp_format",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    us = (parsed - _EPOCH) // timedelta(microseconds=1)
    if not _US_MIN <= us <= _US_MAX:  # an offset moved it past year 1 or 9999
        raise TransformError(
            f"mapping {where}: {text!r} is outside the years 1 to 9999 in UTC",
            rule="mapping.timestamp_range",
        )
    return us


def epoch_us(value: Any, unit: str, where: str) -> int:
    """A time as microseconds since the epoch (see the module docstring for what is read)."""
    kind = type(value)
    if kind is int or kind is float or kind is Decimal:
        return _epoch_us(value, unit, where)
    if kind is str:
        text = value.strip()
        if _INTEGER.fullmatch(text):
            if len(text) > _MAX_EPOCH_DIGITS:
                raise TransformError(
                    f"mapping {where}: the epoch time {text[:40]!r}... ({len(text)} digits) is "
                    "outside the years 1 to 9999",
                    rule="mapping.timestamp_range",
                )
            return _epoch_us(int(text), unit, where)
        return _datetime_us(text, where)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // timedelta(microseconds=1)
    if isinstance(value, date):
        return _datetime_us(value.isoformat(), where)
    raise bad_type(where, "to", value, "a time (ISO 8601 text, a date or an epoch number)")


def iso8601(us: int) -> str:
    """Microseconds since the epoch as the decoder writes times: ``2020-05-31T16:33:35Z``, with
    ``.fff`` or ``.ffffff`` when they are set."""
    moment = (_EPOCH + timedelta(microseconds=us)).replace(tzinfo=None)
    micro = moment.microsecond
    spec = "seconds" if micro == 0 else "milliseconds" if micro % 1000 == 0 else "microseconds"
    return moment.isoformat(timespec=spec) + "Z"
