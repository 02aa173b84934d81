"""Turn a Kafka record value into a JSON-able Python value, per the topic's declared format.

Three formats (``TopicSpec.format``):

* ``confluent`` -- Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the
  Avro binary body. Writer schemas come from the Schema Registry, once per id.
* ``avro`` -- schemaless Avro binary read with the topic's local ``.avsc`` file.
* ``json`` -- a JSON document.

Bad bytes raise ``DecodeError`` with a rule id (``decode.*``) so the pipeline can route the record;
a registry that cannot be reached raises ``SchemaRegistryError``, which is retriable and says
nothing about the record. Avro logical types are rewritten into the forms MoEngage expects (ISO
8601 UTC strings, plain numbers), but only for schemas that contain them: that walk is skipped on
the hot path for every other schema.

What no record can do: leave bytes after its Avro datum (``decode.trailing_bytes``), nest deeper
than ``MAX_DEPTH`` records, arrays and maps (``decode.too_deep``: fastavro reads recursively in C,
so a recursive schema's values are measured first by a bounded, iterative pre-scan), or carry a
decimal JSON cannot hold exactly (``decode.decimal_inexact``). Anything else fastavro raises on
a body is ``decode.avro``.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import math
import struct
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson
from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import LOGICAL_READERS
from fastavro.repository.base import AbstractSchemaRepository, SchemaRepositoryError
from fastavro.schema import SchemaParseException, UnknownType, load_schema

from connector.config import (
    SchemaRegistrySettings,
    Settings,
    TopicSpec,
    mask_userinfo,
    secret_strings,
)
from connector.errors import (
    ConfigError,
    DecodeError,
    SchemaRegistryAuthError,
    SchemaRegistryError,
)

_HEADER = struct.Struct(">BI")  # Confluent framing: magic byte, schema id
_MAGIC = 0


class _UnknownTypeError(Exception):
    """A ``type`` that is neither an Avro type nor a name: fastavro fails on it obscurely."""


_SCHEMA_ERRORS = (
    _UnknownTypeError,
    SchemaParseException,
    UnknownType,
    SchemaRepositoryError,
    ValueError,
    KeyError,
    RecursionError,  # a schema nested past Python's recursion limit
)

# Records, arrays and maps nested inside one another: the most a value may hold. fastavro reads
# recursively in C; a recursive schema's value 5,000 records deep exhausted the C stack (SIGSEGV).
MAX_DEPTH = 64
# What JSON carries exactly: integers orjson writes.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})


class Decoder(Protocol):
    """Decode one record value into dict/list/str/int/float/bool/None, or raise DecodeError."""

    def __call__(self, value: bytes | None) -> Any: ...


class SchemaSource(Protocol):
    """Where writer schemas come from: ``get`` returns a parsed fastavro schema.

    It raises ``KeyError`` (``SchemaNotFoundError``) for an id the registry does not know, and
    ``connector.errors.SchemaRegistryError`` when the registry cannot be asked.
    """

    def get(self, schema_id: int) -> Any: ...


class SchemaNotFoundError(KeyError):
    """The registry answered that it has no schema with this id (bad input, not an outage)."""


# ----- encoding (demo, tests, benchmark producers) -----------------------------------------------


def encode_raw(parsed_schema: Any, record: Any) -> bytes:
    """Schemaless Avro binary of ``record``: the ``avro`` format's value."""
    buf = BytesIO()
    schemaless_writer(buf, parsed_schema, record)
    return buf.getvalue()


def encode_confluent(schema_id: int, parsed_schema: Any, record: Any) -> bytes:
    """Confluent wire-format value: magic byte 0, big-endian schema id, Avro body."""
    return _HEADER.pack(_MAGIC, schema_id) + encode_raw(parsed_schema, record)


# ----- schemas ---------------------------------------------------------------------------------


class _Repository(AbstractSchemaRepository):
    """Named schemas for fastavro's ``load_schema``: from a dict, else ``<dir>/<fullname>.avsc``."""

    def __init__(self, schemas: dict[str, Any], directory: Path | None = None) -> None:
        self._schemas = schemas
        self._directory = directory

    def load(self, name: Any) -> Any:
        if not isinstance(name, str):  # fastavro hands over a whole dict whose type is unknown
            kind = name.get("type") if isinstance(name, dict) else name
            raise _UnknownTypeError(
                f"unknown type {kind!r} (expected record, enum, array, map, fixed, a primitive "
                "type or the name of a schema file beside this one)"
            )
        if name in self._schemas:
            return self._schemas[name]
        if self._directory is not None:
            with contextlib.suppress(OSError):
                return json.loads((self._directory / f"{name}.avsc").read_text(encoding="utf-8"))
        raise SchemaRepositoryError(f"no schema named {name!r}")


def load_schema_file(path: Path, *, key_path: str) -> Any:
    """Parse a local ``.avsc`` file; named types it references load from the same directory.

    Any problem is a ``ConfigError`` at ``key_path``: a missing schema stops start-up, not a record.
    """
    try:
        root = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError([(key_path, f"cannot read schema file {path}: {e.strerror}")]) from None
    except ValueError as e:
        raise ConfigError([(key_path, f"{path} is not valid JSON: {e}")]) from None
    try:
        return load_schema("$root", repo=_Repository({"$root": root}, path.parent))
    except _SCHEMA_ERRORS as e:
        raise ConfigError([(key_path, f"{path} is not a valid Avro schema: {e}")]) from None


@dataclass(frozen=True, slots=True)
class _Plan:
    """A parsed writer schema and which parts of its values need logical-type rewriting.

    ``fields`` names the top-level record fields to rewrite; ``None`` means the whole value.
    ``stamps`` are top-level timestamp fields read as plain integers and formatted directly
    (``(name, units per second)``), without a ``datetime`` in between.
    """

    schema: Any
    convert: bool
    fields: tuple[str, ...] | None
    stamps: tuple[tuple[str, int], ...] = ()
    named: dict[str, Any] | None = None  # set when values must be pre-scanned for their depth


_UNITS_PER_SECOND = {"timestamp-millis": 1000, "timestamp-micros": 1_000_000}


def _plain_timestamp(field_type: Any) -> tuple[Any, int] | None:
    """``(the type without its logical type, units per second)`` for a UTC timestamp type or a
    union of null and one; None for anything else."""
    if isinstance(field_type, list):
        if len(field_type) != 2 or "null" not in field_type:
            return None
        i = 1 - field_type.index("null")
        found = _plain_timestamp(field_type[i])
        if found is None:
            return None
        union = list(field_type)
        union[i] = found[0]
        return union, found[1]
    if isinstance(field_type, dict) and field_type.get("type") == "long":
        units = _UNITS_PER_SECOND.get(field_type.get("logicalType", ""))
        if units is not None:
            return "long", units
    return None


def _with_plain_timestamps(schema: Any) -> tuple[Any, tuple[tuple[str, int], ...]]:
    """The record schema with its top-level timestamp fields read as integers, and those fields.

    fastavro turns each such value into an aware ``datetime`` that ``_to_jsonable`` then turns
    into an ISO string (make bench: about 4 µs of a 30 µs decode); ``_iso_utc`` formats the
    integer directly, to the same string.
    """
    if not (isinstance(schema, dict) and schema.get("type") == "record"):
        return schema, ()
    fields, stamps = [], []
    for f in schema["fields"]:
        found = _plain_timestamp(f["type"])
        if found is None:
            fields.append(f)
        else:
            fields.append({**f, "type": found[0]})
            stamps.append((f["name"], found[1]))
    return ({**schema, "fields": fields}, tuple(stamps)) if stamps else (schema, ())


_EPOCH = datetime(1970, 1, 1)  # naive on purpose: only its calendar fields are used
_MINUTES: dict[int, str] = {}  # minutes since the epoch -> "YYYY-MM-DDTHH:MM:" (bounded below)
# The rest of the text by table: concatenation costs about half of formatting with widths.
_SECONDS = tuple(f"{s:02d}" for s in range(60))
_SECONDS_Z = tuple(f"{s:02d}Z" for s in range(60))
_MILLIS_Z = tuple(f".{f:03d}Z" for f in range(1000))


def _iso_utc(n: int, units: int) -> str:
    """An epoch timestamp in ``units`` per second as ISO 8601 UTC, as ``_to_jsonable`` writes a
    ``datetime``: ``2020-05-31T16:33:35Z``, with ``.fff`` or ``.ffffff`` when they are set.

    Neighbouring records mostly share their minute, so its text is cached."""
    s, frac = divmod(n, units)
    minute, sec = divmod(s, 60)
    prefix = _MINUTES.get(minute)
    if prefix is None:
        if len(_MINUTES) >= 4096:  # a stream spread over many minutes: keep the cache small
            _MINUTES.clear()
        prefix = _MINUTES[minute] = (_EPOCH + timedelta(minutes=minute)).isoformat()[:17]
    if not frac:
        return prefix + _SECONDS_Z[sec]
    if units == 1000:
        return prefix + _SECONDS[sec] + _MILLIS_Z[frac]
    if frac % 1000 == 0:
        return prefix + _SECONDS[sec] + _MILLIS_Z[frac // 1000]
    return f"{prefix}{sec:02d}.{frac:06d}Z"


def _without_uuid(schema: Any) -> Any:
    """The schema with ``uuid`` logical types dropped: fastavro then returns the string as it is
    instead of building a ``UUID`` that would be turned back into the same string (a measurable
    share of decoding time). A string is the same union branch with or without the logical type.
    """
    if isinstance(schema, list):
        return [_without_uuid(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("logicalType") == "uuid" and schema.get("type") == "string":
        return {k: v for k, v in schema.items() if k != "logicalType"}
    kind = schema.get("type")
    if kind in {"record", "error"}:
        fields = [{**f, "type": _without_uuid(f["type"])} for f in schema["fields"]]
        return {**schema, "fields": fields}
    if kind == "array":
        return {**schema, "items": _without_uuid(schema["items"])}
    if kind == "map":
        return {**schema, "values": _without_uuid(schema["values"])}
    if isinstance(kind, dict | list):
        return {**schema, "type": _without_uuid(kind)}
    return schema


def _plan(schema: Any) -> _Plan:
    """Walk the schema once so decoding knows whether (and where) to rewrite values, and whether
    its values can nest deeper than ``MAX_DEPTH`` (a recursive schema) and need the pre-scan."""
    schema, stamps = _with_plain_timestamps(_without_uuid(schema))
    definitions = _named_types(schema)
    deep = _depth(schema, definitions, set(), {}) > MAX_DEPTH
    scan = definitions if deep else None
    named: dict[str, bool] = {}
    convert = _needs_conversion(schema, named)
    if convert and isinstance(schema, dict) and schema.get("type") == "record":
        fields = tuple(f["name"] for f in schema["fields"] if _needs_conversion(f["type"], named))
        return _Plan(schema, convert, fields, stamps, scan)
    return _Plan(schema, convert, None, stamps, scan)


def _named_types(schema: Any) -> dict[str, Any]:
    """Every named type defined in a parsed schema, by full name (iterative)."""
    found: dict[str, Any] = {}
    stack = [schema]
    while stack:
        s = stack.pop()
        if isinstance(s, list):
            stack.extend(s)
        elif isinstance(s, dict):
            if s.get("type") in _NAMED_KINDS and isinstance(s.get("name"), str):
                found.setdefault(s["name"], s)
            stack.extend(s[k] for k in ("type", "items", "values") if k in s)
            stack.extend(f.get("type") for f in s.get("fields", ()) if isinstance(f, dict))
    return found


def _depth(s: Any, named: dict[str, Any], open_: set[str], memo: dict[str, int]) -> int:
    """How deep records, arrays and maps of ``s`` nest; ``MAX_DEPTH + 1`` once it is more, or
    when the schema is recursive (a named type used inside itself). Stops at that bound, so
    Python's own recursion stays shallow."""
    if isinstance(s, str):
        if s in _PRIMITIVES:
            return 0
        if s in open_:
            return MAX_DEPTH + 1
        if s in memo:
            return memo[s]
        return _depth(named[s], named, open_, memo) if s in named else 0
    if isinstance(s, list):
        return max((_depth(b, named, open_, memo) for b in s), default=0)
    if not isinstance(s, dict):
        return 0
    kind = s.get("type")
    if isinstance(kind, dict | list):
        return _depth(kind, named, open_, memo)
    if kind in ("record", "error"):
        name = s.get("name", "")
        open_.add(name)
        deepest = 0
        for f in s.get("fields", ()):
            deepest = max(deepest, _depth(f["type"], named, open_, memo))
            if deepest >= MAX_DEPTH:
                break
        open_.discard(name)
        memo[name] = 1 + deepest
        return 1 + deepest
    if kind == "array":
        return 1 + _depth(s.get("items"), named, open_, memo)
    if kind == "map":
        return 1 + _depth(s.get("values"), named, open_, memo)
    return 0


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint (Avro int and long) at ``pos``: ``(value, next position)``."""
    shift = result = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise DecodeError("Avro body ends inside a number", rule="decode.avro")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


_FIXED_SIZES = {"null": 0, "boolean": 1, "float": 4, "double": 8}


def _too_deep() -> DecodeError:
    return DecodeError(
        f"Avro value nests records, arrays or maps more than {MAX_DEPTH} deep",
        rule="decode.too_deep",
    )


def _scan_block(
    data: bytes, pos: int, s: dict[str, Any], stack: list[Any], *, depth: int, left: int
) -> int:
    """One step through an array or map: start a block when ``left`` is 0, else queue the next
    item (and its key) ahead of the rest of the block. Returns the position after what it read."""
    if left == 0:
        count, pos = _varint(data, pos)
        if count == 0:
            return pos
        if count < 0:
            count = -count
            _, pos = _varint(data, pos)  # the block's size in bytes
        if count > len(data):
            raise DecodeError(
                f"Avro block of {count} items is longer than the record", rule="decode.avro"
            )
        left = count
    stack.append((s, depth, left - 1))
    if s["type"] == "array":
        stack.append((s["items"], depth, -1))
    else:
        stack.append((s["values"], depth, -1))
        stack.append(("string", depth, -1))
    return pos


def _scan_depth(data: bytes, pos: int, schema: Any, named: dict[str, Any]) -> None:
    """Walk one Avro datum without building it, with an explicit stack, and raise
    ``decode.too_deep`` past ``MAX_DEPTH``: run before fastavro's recursive reader on schemas
    whose values can nest without bound. Anything malformed is left for fastavro to report."""
    end = len(data)
    # (schema, depth, items left in the current array/map block or -1 for "a plain value")
    stack: list[tuple[Any, int, int]] = [(schema, 0, -1)]
    while stack:
        s, depth, left = stack.pop()
        if left >= 0:  # inside an array or map: s is its schema
            pos = _scan_block(data, pos, s, stack, depth=depth, left=left)
            continue
        while isinstance(s, str) and s not in _PRIMITIVES and s in named:
            s = named[s]
        while isinstance(s, dict) and isinstance(s.get("type"), dict | list):
            s = s["type"]
        if isinstance(s, list):
            branch, pos = _varint(data, pos)
            if not 0 <= branch < len(s):
                return  # fastavro reports the bad branch
            stack.append((s[branch], depth, -1))
            continue
        kind = s if isinstance(s, str) else s.get("type")
        if kind in _FIXED_SIZES:
            pos += _FIXED_SIZES[kind]
        elif kind in ("int", "long", "enum"):
            _, pos = _varint(data, pos)
        elif kind in ("bytes", "string"):
            size, pos = _varint(data, pos)
            if size < 0:
                return
            pos += size
        elif kind == "fixed":
            pos += int(s["size"])
        elif kind in ("record", "error", "array", "map"):
            if depth >= MAX_DEPTH:
                raise _too_deep()
            if kind in ("array", "map"):
                stack.append((s, depth + 1, 0))
            else:
                stack.extend((f["type"], depth + 1, -1) for f in reversed(s["fields"]))
        else:
            return  # an unknown type: fastavro reports it
        if pos > end:
            return  # truncated: fastavro reports it


def _needs_conversion(schema: Any, named: dict[str, bool]) -> bool:
    """True when values of ``schema`` may hold datetimes, Decimals, UUIDs or bytes."""
    if isinstance(schema, str):
        return schema == "bytes" or named.get(schema, False)
    if isinstance(schema, list):
        return any([_needs_conversion(s, named) for s in schema])  # noqa: C419 -- visit all
    kind = schema.get("type")
    if f"{kind}-{schema.get('logicalType')}" in LOGICAL_READERS:  # e.g. "long-timestamp-millis"
        result = True  # fastavro hands back a datetime, date, time, Decimal or UUID
    elif kind in {"record", "error"}:
        named.setdefault(schema["name"], False)  # a recursive reference adds nothing new
        result = any([_needs_conversion(f["type"], named) for f in schema["fields"]])  # noqa: C419
    elif kind == "array":
        result = _needs_conversion(schema["items"], named)
    elif kind == "map":
        result = _needs_conversion(schema["values"], named)
    else:
        result = kind in ("bytes", "fixed") or (
            not isinstance(kind, str) and _needs_conversion(kind, named)
        )
    if kind in ("record", "error", "fixed", "enum"):
        named[schema["name"]] = result
    return result


# ----- logical types -> what MoEngage expects -------------------------------------------------


def _timespec(microsecond: int) -> str:
    if microsecond == 0:
        return "seconds"
    return "milliseconds" if microsecond % 1000 == 0 else "microseconds"


def _decimal(value: Decimal) -> int | float:
    """A decimal as the JSON number of exactly its value: an int when integral (within
    -2^63..2^64-1), else a float whose shortest text is the decimal itself (``19.99``).
    Anything else -- more significant digits than a double holds, beyond its range, an integer
    past 64 bits -- would change on the way: ``decode.decimal_inexact``."""
    if value.is_finite():
        if value == value.to_integral_value():
            if value.adjusted() < 20:  # |value| < 1e20: int() stays small
                n = int(value)
                if _INT_MIN <= n <= _INT_MAX:
                    return n
        else:
            f = float(value)
            if math.isfinite(f) and Decimal(repr(f)) == value:
                return f
    shown = str(value) if value.adjusted() < 60 else f"a decimal of about 1e{value.adjusted()}"
    raise DecodeError(
        f"decimal {shown} has no exact JSON number (an integer within -2^63..2^64-1 or a "
        "double that reads back as the same decimal)",
        rule="decode.decimal_inexact",
    )


def _to_jsonable(value: Any, zone: ZoneInfo | None = None) -> Any:
    """Rewrite fastavro's Python objects into JSON-able values, recursively.

    Timestamps become ISO 8601 UTC (``2020-05-31T16:33:35Z``, ``.123Z`` when milliseconds are set),
    dates midnight UTC (the form MoEngage recognises as a date attribute), times ``HH:MM:SS[.fff]``,
    decimals an exact int or float (``_decimal``), UUIDs strings and raw bytes base64. Local
    timestamps (naive) are converted from ``zone`` to UTC, or without a zone are written as
    ISO 8601 local time, without ``Z``.
    """
    kind = type(value)
    if kind is dict:
        return {k: _to_jsonable(v, zone) for k, v in value.items()}
    if kind is list:
        return [_to_jsonable(v, zone) for v in value]
    if kind is datetime:
        if value.tzinfo is None:
            if zone is None:
                return value.isoformat(timespec=_timespec(value.microsecond))
            value = value.replace(tzinfo=zone)
        value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec=_timespec(value.microsecond)) + "Z"
    if kind is date:
        return f"{value.isoformat()}T00:00:00Z"
    if kind is time:
        return value.isoformat(timespec=_timespec(value.microsecond))
    if kind is Decimal:
        return _decimal(value)
    if kind is UUID:
        return str(value)
    if kind is bytes:
        return base64.b64encode(value).decode("ascii")
    return value


def _read_avro(data: bytes, start: int, plan: _Plan, zone: ZoneInfo | None = None) -> Any:
    """Read the one Avro datum that ``data`` holds from ``start``: bytes after it are bad input
    (a datum written with another schema, or junk), and so is any error fastavro raises."""
    try:
        if plan.named is not None:
            _scan_depth(data, start, plan.schema, plan.named)
        buf = BytesIO(data)  # shares the bytes object: no copy, unlike slicing off a header
        buf.seek(start)
        value: Any = schemaless_reader(buf, plan.schema, None)
        left = len(data) - buf.tell()
        for name, units in plan.stamps:
            stamp = value[name]
            if stamp is not None:
                value[name] = _iso_utc(stamp, units)
    except DecodeError:
        raise
    except Exception as e:  # fuzzing found EOF, Value, Index, Key, Overflow, struct errors
        raise DecodeError(
            f"Avro body does not match its schema: {type(e).__name__}: {str(e)[:200]}",
            rule="decode.avro",
        ) from e
    if left:
        raise DecodeError(
            f"{left} bytes follow the Avro datum: the value holds more than one record of its "
            "schema (junk, or a record written with a newer schema than the one read with)",
            rule="decode.trailing_bytes",
        )
    if not plan.convert:
        return value
    try:
        if plan.fields is None:
            return _to_jsonable(value, zone)
        for name in plan.fields:
            value[name] = _to_jsonable(value[name], zone)
    except DecodeError:
        raise
    except (OverflowError, ValueError) as e:  # a local time moved past year 1 or 9999
        raise DecodeError(
            f"Avro value cannot be converted: {type(e).__name__}: {e}", rule="decode.avro"
        ) from e
    return value


# ----- decoders --------------------------------------------------------------------------------


def _tombstone() -> DecodeError:
    return DecodeError("record has no value (tombstone)", rule="decode.tombstone")


class _ConfluentDecoder:
    """Confluent wire format; parsed writer schemas are cached per id, so the registry is asked
    once per id for the life of the decoder."""

    def __init__(self, registry: SchemaSource, zone: ZoneInfo | None = None) -> None:
        self._registry = registry
        self._zone = zone
        self._plans: dict[int, _Plan] = {}

    def __call__(self, value: bytes | None) -> Any:
        if value is None:
            raise _tombstone()
        if len(value) < _HEADER.size:
            raise DecodeError(
                f"value is {len(value)} bytes, shorter than the 5-byte Confluent header",
                rule="decode.truncated",
            )
        magic, schema_id = _HEADER.unpack_from(value)
        if magic != _MAGIC:
            raise DecodeError(
                f"value does not start with the Confluent magic byte 0 (got 0x{magic:02x})",
                rule="decode.magic_byte",
            )
        plan = self._plans.get(schema_id)
        if plan is None:
            plan = self._plans[schema_id] = _plan(self._writer_schema(schema_id))
        return _read_avro(value, _HEADER.size, plan, self._zone)

    def _writer_schema(self, schema_id: int) -> Any:
        try:
            return self._registry.get(schema_id)
        except KeyError:
            raise DecodeError(
                f"schema id {schema_id} is not in the Schema Registry",
                rule="decode.unknown_schema",
            ) from None


class _RawAvroDecoder:
    """Schemaless Avro read with one local schema."""

    def __init__(self, schema: Any, zone: ZoneInfo | None = None) -> None:
        self._plan = _plan(schema)
        self._zone = zone

    def __call__(self, value: bytes | None) -> Any:
        if value is None:
            raise _tombstone()
        return _read_avro(value, 0, self._plan, self._zone)


def _decode_json(value: bytes | None) -> Any:
    """A JSON document. orjson refuses NaN, Infinity and numbers beyond a double's range, and
    documents nested past 1,024 levels (``decode.too_deep``)."""
    if value is None:
        raise _tombstone()
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as e:
        if "depth limit" in str(e) or "recursion" in str(e):
            raise DecodeError(
                f"JSON value nests deeper than orjson's limit of 1,024 levels: {e}",
                rule="decode.too_deep",
            ) from None
        raise DecodeError(f"value is not valid JSON: {e}", rule="decode.json") from None


def make_decoder(
    topic: TopicSpec,
    settings: Settings,
    registry: SchemaSource | None,
    *,
    key_path: str | None = None,
) -> Decoder:
    """Build the decoder for ``topic``. Local schema problems raise ``ConfigError``.

    ``registry`` is needed for ``confluent`` topics (usually a ``SchemaLookup``); ``key_path``
    names the topic's schema setting in errors, by default ``topics[<index>].schema``.
    """
    zone_name = settings.validation.local_timezone
    zone = ZoneInfo(zone_name) if zone_name is not None else None
    if topic.format == "json":
        return _decode_json
    if topic.format == "confluent":
        if registry is None:
            raise ConfigError([("schema_registry.url", f"topic {topic.name!r} needs a registry")])
        return _ConfluentDecoder(registry, zone)
    if key_path is None:
        index = next((i for i, t in enumerate(settings.topics) if t.name == topic.name), 0)
        key_path = f"topics[{index}].schema"
    path = settings.schema_path(topic)
    if path is None:
        raise ConfigError([(key_path, "format 'avro' needs the path of an .avsc file")])
    return _RawAvroDecoder(load_schema_file(path, key_path=key_path), zone)


# ----- Schema Registry -------------------------------------------------------------------------


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network failures the registry client lets through (it uses httpx2, or httpx)."""
    from confluent_kafka.schema_registry.error import OAuthTokenError  # noqa: PLC0415

    found: list[type[BaseException]] = [OSError, OAuthTokenError]
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(module).HTTPError)
    return tuple(found)


class SchemaLookup:
    """Writer schemas by id from the Confluent Schema Registry, parsed and cached.

    An id the registry does not know raises ``SchemaNotFoundError`` (the record is bad); refused
    credentials (401/403) raise ``SchemaRegistryAuthError``, which is not retriable; anything else
    -- refused connections, timeouts, 5xx -- raises ``SchemaRegistryError``, which is retriable.
    Messages never contain the registry's credentials.
    """

    def __init__(self, registry: SchemaRegistrySettings, *, client: Any = None) -> None:
        config = registry.client_config()
        self._secrets = _secrets(config)
        self._url = _strip_userinfo(registry.url)
        self._cache: dict[int, Any] = {}
        self._config = config
        self._client = client
        self._client_error: type[Any] = Exception  # the client's error class, set by open()
        self._transport: tuple[type[BaseException], ...] = ()

    def open(self) -> None:
        """Build the registry client (ConfigError on properties it refuses); connects nothing.

        Apart from construction because confluent-kafka's registry package costs about 0.1 s and
        13 MB to import (httpx, authlib, cryptography): ``run`` builds it while its group join is
        under way, and a configuration without a registry never imports it. Idempotent; the
        first :meth:`get` opens the lookup if nothing did."""
        if self._transport:
            return
        from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415
        from confluent_kafka.schema_registry.error import SchemaRegistryError  # noqa: PLC0415

        if self._client is None:
            try:
                self._client = SchemaRegistryClient(self._config)
            except (ValueError, TypeError) as e:
                raise ConfigError([("schema_registry", self._redact(str(e)))]) from None
        self._client_error = SchemaRegistryError
        self._transport = _transport_errors()

    def get(self, schema_id: int) -> Any:
        """The parsed writer schema with id ``schema_id``, from the cache after the first call."""
        parsed = self._cache.get(schema_id)
        if parsed is None:
            parsed = self._cache[schema_id] = self._fetch(schema_id)
        return parsed

    def _fetch(self, schema_id: int) -> Any:
        self.open()
        try:
            schema = self._client.get_schema(schema_id)
            if (schema.schema_type or "AVRO") != "AVRO":
                raise DecodeError(
                    f"schema id {schema_id} is a {schema.schema_type} schema, not Avro",
                    rule="decode.unsupported_schema",
                )
            references: dict[str, str] = {}
            self._collect_references(schema, references)
        except self._client_error as e:
            # 40403 "schema not found"; a 404 without a registry code is more likely a wrong URL.
            if e.http_status_code == 404 and 40400 <= (e.error_code or 0) < 40500:
                raise SchemaNotFoundError(schema_id) from None
            if e.http_status_code in (401, 403):
                raise SchemaRegistryAuthError(
                    f"the Schema Registry at {self._url} refused the connector's credentials "
                    f"(HTTP {e.http_status_code}) fetching schema id {schema_id}: check "
                    "schema_registry.properties (basic.auth.user.info, bearer.auth.*) and the "
                    "registry's access rules for this subject"
                ) from None
            raise self._error(schema_id, f"HTTP {e.http_status_code}: {e.error_message}") from None
        except self._transport as e:
            raise self._error(schema_id, f"{type(e).__name__}: {e}") from None
        try:
            return _parse_with_references(schema.schema_str, references)
        except (*_SCHEMA_ERRORS, TypeError) as e:
            raise DecodeError(
                f"schema id {schema_id} is not a usable Avro schema: {e}",
                rule="decode.unsupported_schema",
            ) from None

    def _collect_references(self, schema: Any, found: dict[str, str]) -> None:
        """Fetch the schemas ``schema`` references, recursively, keyed by reference name."""
        for ref in schema.references or ():
            if ref.name in found:
                continue
            registered = self._client.get_version(ref.subject, ref.version, True)
            found[ref.name] = registered.schema.schema_str
            self._collect_references(registered.schema, found)

    def _error(self, schema_id: int, detail: str) -> SchemaRegistryError:
        return SchemaRegistryError(
            f"cannot fetch schema id {schema_id} from the Schema Registry at {self._url}: "
            + self._redact(detail)
        )

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _parse_with_references(schema_str: str, references: dict[str, str]) -> Any:
    """Parse a registry schema, resolving named types from its references' JSON."""
    named: dict[str, Any] = {}
    for ref_name, text in references.items():
        raw = json.loads(text)
        named[ref_name] = raw
        if isinstance(raw, dict) and "name" in raw:  # also by full name, as the root may use it
            ns, name = raw.get("namespace"), raw["name"]
            named.setdefault(f"{ns}.{name}" if ns and "." not in name else name, raw)
    named["$root"] = json.loads(schema_str)
    return load_schema("$root", repo=_Repository(named))


def _secrets(config: dict[str, Any]) -> list[str]:
    """Credential strings in the client config, longest first so none is half-masked."""
    props = {k: v for k, v in config.items() if k != "url"}
    return sorted(secret_strings(props, str(config.get("url", ""))), key=len, reverse=True)


def _strip_userinfo(url: str) -> str:
    """The registry URL(s) without ``user:password@``, fit for a message."""
    return mask_userinfo(url, mask="")
