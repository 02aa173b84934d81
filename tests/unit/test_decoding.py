"""Decoding record values: Confluent framing, raw Avro, JSON, logical types and registry errors."""

from __future__ import annotations

import json
import math
import random
import socket
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference
from confluent_kafka.schema_registry.error import SchemaRegistryError as ClientRegistryError
from fastavro import parse_schema

from connector.batching import encode
from connector.config import Settings, parse_settings
from connector.errors import (
    ConfigError,
    DecodeError,
    SchemaRegistryAuthError,
    SchemaRegistryError,
    ValidationError,
)
from connector.source import decoding
from connector.source.decoding import (
    SchemaLookup,
    SchemaNotFoundError,
    encode_confluent,
    encode_raw,
    load_schema_file,
    make_decoder,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"

DEVICE = {
    "user_id": "u-1",
    "device_id": "d-1",
    "platform": "ANDROID",
    "push_id": "fcm-token",
    "model": "Pixel 8",
    "os_version": None,
    "app_version": "4.2.0",
    "push_preference": True,
}


def settings(*topics: dict[str, Any], base_dir: Path = REPO) -> Settings:
    raw = {
        "moengage": {"data_center": "01"},
        "kafka": {"bootstrap.servers": "127.0.0.1:9092", "group.id": "g"},
        "schema_registry": {"url": "http://127.0.0.1:8081"},
        "topics": [{"transform": {"entry_point": "passthrough"}, **t} for t in topics],
    }
    return parse_settings(raw, base_dir=base_dir, environ={})


def schema(name: str) -> Any:
    return load_schema_file(SCHEMAS / f"{name}.avsc", key_path="test")


class FakeLookup:
    """A SchemaSource backed by a dict, counting how often each id is asked for."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas
        self.calls: Counter[int] = Counter()

    def get(self, schema_id: int) -> Any:
        self.calls[schema_id] += 1
        if schema_id not in self.schemas:
            raise SchemaNotFoundError(schema_id)
        return self.schemas[schema_id]


def confluent_decoder(lookup: FakeLookup) -> decoding.Decoder:
    s = settings({"name": "t", "format": "confluent"})
    return make_decoder(s.topics[0], s, lookup)


def raw_decoder(name: str) -> decoding.Decoder:
    s = settings({"name": "t", "format": "avro", "schema": f"schemas/{name}.avsc"})
    return make_decoder(s.topics[0], s, None)


def rule_of(decode: decoding.Decoder, value: bytes | None) -> str:
    with pytest.raises(DecodeError) as info:
        decode(value)
    return info.value.rule


# ----- Confluent framing ----------------------------------------------------------------------


def test_confluent_value_decodes_with_the_registry_schema() -> None:
    decode = confluent_decoder(FakeLookup({7: schema("device")}))
    assert decode(encode_confluent(7, schema("device"), DEVICE)) == DEVICE


def test_confluent_wire_format_is_magic_byte_then_big_endian_id() -> None:
    value = encode_confluent(0x01020304, schema("device"), DEVICE)
    assert value[:5] == b"\x00\x01\x02\x03\x04"
    assert value[5:] == encode_raw(schema("device"), DEVICE)


def test_wrong_magic_byte_is_rejected_naming_the_byte() -> None:
    value = b"\x01" + encode_confluent(7, schema("device"), DEVICE)[1:]
    with pytest.raises(DecodeError) as info:
        confluent_decoder(FakeLookup({7: schema("device")}))(value)
    assert info.value.rule == "decode.magic_byte"
    assert "got 0x01" in info.value.message


@pytest.mark.parametrize("value", [b"", b"\x00", b"\x00\x00\x00\x07"])
def test_value_shorter_than_the_header_is_truncated(value: bytes) -> None:
    assert rule_of(confluent_decoder(FakeLookup({7: schema("device")})), value) == (
        "decode.truncated"
    )


def test_unknown_schema_id_is_bad_input_naming_the_id() -> None:
    with pytest.raises(DecodeError) as info:
        confluent_decoder(FakeLookup({}))(encode_confluent(4242, schema("device"), DEVICE))
    assert info.value.rule == "decode.unknown_schema"
    assert "4242" in info.value.message


def test_truncated_avro_body_is_a_decode_error() -> None:
    value = encode_confluent(7, schema("device"), DEVICE)
    for cut in range(5, len(value)):
        assert rule_of(confluent_decoder(FakeLookup({7: schema("device")})), value[:cut]) == (
            "decode.avro"
        ), cut


def test_invalid_utf8_in_a_string_is_a_decode_error() -> None:
    body = b"\x04\xff\xfe"  # a 2-byte string that is not UTF-8
    assert rule_of(raw_decoder("device"), body) == "decode.avro"


@pytest.mark.parametrize("name", ["user", "event", "device"])
def test_random_garbage_raises_only_decode_errors(name: str) -> None:
    rng = random.Random(1234)
    decode = raw_decoder(name)
    rules: Counter[str] = Counter()
    for _ in range(3000):
        garbage = rng.randbytes(rng.randint(1, 80))
        try:
            decode(garbage)
        except DecodeError as e:  # anything else escapes and fails the test
            rules[e.rule] += 1
    assert set(rules) <= {"decode.avro", "decode.trailing_bytes", "decode.decimal_inexact"}
    assert rules["decode.avro"] > 2000


def test_trailing_bytes_after_the_record_are_bad_input() -> None:
    value = encode_confluent(7, schema("device"), DEVICE) + b"\x00\x01junk"
    with pytest.raises(DecodeError) as info:
        confluent_decoder(FakeLookup({7: schema("device")}))(value)
    assert (info.value.stage, info.value.rule) == ("decode", "decode.trailing_bytes")
    assert "6 bytes follow" in info.value.message


def test_registry_is_asked_once_per_schema_id() -> None:
    lookup = FakeLookup({7: schema("device"), 8: schema("device")})
    decode = confluent_decoder(lookup)
    for i in range(50):
        decode(encode_confluent(7 + i % 2, schema("device"), DEVICE))
    assert lookup.calls == {7: 1, 8: 1}


# ----- raw Avro with the shipped schemas ------------------------------------------------------

USER = {
    "user_id": "u-1",
    "email": "ada@example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "name": None,
    "plan": "gold",
    "points": 120,
    "signup_time": datetime(2020, 5, 31, 16, 33, 35, tzinfo=UTC),
    "birthday": date(1990, 12, 10),
    "ltv": Decimal("1234.50"),
    "super_user": False,
    "tags": ["beta", "vip"],
    "mobile": None,
}
EVENT_ID = uuid.UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")
EVENT = {
    "event_id": str(EVENT_ID),
    "user_id": "u-1",
    "device_id": None,
    "event_name": "Purchased",
    "event_time": datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    "platform": "web",
    "app_version": None,
    "tz_offset_seconds": 19800,
    "properties": {"sku": "A-1", "qty": 2, "price": 9.99, "gift": True, "note": None},
}


@pytest.mark.parametrize(
    ("name", "record", "expected"),
    [
        (
            "user",
            USER,
            {
                **USER,
                "signup_time": "2020-05-31T16:33:35Z",
                "birthday": "1990-12-10T00:00:00Z",
                "ltv": 1234.5,
            },
        ),
        ("event", EVENT, {**EVENT, "event_time": "2024-01-02T03:04:05.678Z"}),
        ("device", DEVICE, DEVICE),
    ],
)
def test_raw_avro_round_trips_with_shipped_schemas(
    name: str, record: dict[str, Any], expected: dict[str, Any]
) -> None:
    decoded = raw_decoder(name)(encode_raw(schema(name), record))
    assert decoded == expected
    assert orjson.loads(orjson.dumps(decoded)) == expected  # JSON-able as it stands


ADDRESS = {
    "type": "record",
    "name": "Address",
    "namespace": "io.x",
    "fields": [{"name": "city", "type": "string"}],
}
PERSON = {
    "type": "record",
    "name": "Person",
    "namespace": "io.x",
    "fields": [{"name": "home", "type": "io.x.Address"}],
}


def test_schema_file_may_reference_named_types_in_its_directory(tmp_path: Path) -> None:
    (tmp_path / "io.x.Address.avsc").write_text(json.dumps(ADDRESS))
    (tmp_path / "person.avsc").write_text(json.dumps(PERSON))
    parsed = load_schema_file(tmp_path / "person.avsc", key_path="x")
    s = settings({"name": "t", "format": "avro", "schema": "person.avsc"}, base_dir=tmp_path)
    record = {"home": {"city": "Pune"}}
    assert make_decoder(s.topics[0], s, None)(encode_raw(parsed, record)) == record


def test_missing_schema_file_is_a_config_error_at_its_key_path() -> None:
    s = settings(
        {"name": "a", "format": "json"},
        {"name": "b", "format": "avro", "schema": "schemas/nope.avsc"},
    )
    with pytest.raises(ConfigError) as info:
        make_decoder(s.topics[1], s, None)
    [(path, message)] = info.value.problems
    assert path == "topics[1].schema"
    assert "nope.avsc" in message


def test_invalid_schema_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.avsc").write_text('{"type": "record", "name": "X", "fields": [{"name": 1}]}')
    s = settings({"name": "t", "format": "avro", "schema": "bad.avsc"}, base_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        make_decoder(s.topics[0], s, None, key_path="topics[3].schema")
    assert info.value.problems[0][0] == "topics[3].schema"


def test_a_misspelled_type_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "typo.avsc").write_text('{"type": "recrod", "name": "X", "fields": []}')
    s = settings({"name": "t", "format": "avro", "schema": "typo.avsc"}, base_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        make_decoder(s.topics[0], s, None, key_path="topics[0].schema")
    ((key, message),) = info.value.problems
    assert key == "topics[0].schema"
    assert "unknown type 'recrod'" in message


# ----- logical types --------------------------------------------------------------------------


def one_field(field_type: Any, value: Any) -> Any:
    parsed = parse_schema(
        {"type": "record", "name": "R", "fields": [{"name": "v", "type": field_type}]}
    )
    return decoding._RawAvroDecoder(parsed)(encode_raw(parsed, {"v": value}))["v"]


def logical(avro_type: str, logical_type: str, **extra: Any) -> dict[str, Any]:
    return {"type": avro_type, "logicalType": logical_type, **extra}


TS_MILLIS = logical("long", "timestamp-millis")
TS_MICROS = logical("long", "timestamp-micros")
DECIMAL = logical("bytes", "decimal", precision=12, scale=2)
FIXED_DECIMAL = logical("fixed", "decimal", name="D", size=8, precision=10, scale=1)
T = datetime(2020, 5, 31, 16, 33, 35, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field_type", "value", "expected"),
    [
        (TS_MILLIS, T, "2020-05-31T16:33:35Z"),
        (TS_MILLIS, T.replace(microsecond=123000), "2020-05-31T16:33:35.123Z"),
        (TS_MILLIS, datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), "1969-12-31T23:59:59Z"),
        (TS_MICROS, T.replace(microsecond=123456), "2020-05-31T16:33:35.123456Z"),
        (TS_MICROS, T, "2020-05-31T16:33:35Z"),
        (logical("long", "local-timestamp-millis"), T.replace(tzinfo=None), "2020-05-31T16:33:35"),
        (
            logical("long", "local-timestamp-micros"),
            datetime(2021, 1, 2, 3, 4, 5, 6000),
            "2021-01-02T03:04:05.006",
        ),
        (logical("int", "date"), date(2019, 5, 21), "2019-05-21T00:00:00Z"),
        (logical("int", "time-millis"), time(9, 30, 15), "09:30:15"),
        (logical("int", "time-millis"), time(9, 30, 15, 250000), "09:30:15.250"),
        (logical("long", "time-micros"), time(23, 59, 59, 999999), "23:59:59.999999"),
        (DECIMAL, Decimal("1200.00"), 1200),
        (DECIMAL, Decimal("-3.25"), -3.25),
        (FIXED_DECIMAL, Decimal("7.5"), 7.5),
        (logical("string", "uuid"), str(EVENT_ID), str(EVENT_ID)),
        ("bytes", b"\x00\xffhi", "AP9oaQ=="),
        ({"type": "fixed", "name": "F", "size": 2}, b"\x01\x02", "AQI="),
        ({"type": "array", "items": TS_MILLIS}, [T], ["2020-05-31T16:33:35Z"]),
        ({"type": "map", "values": "bytes"}, {"k": b"\x01"}, {"k": "AQ=="}),
    ],
    ids=lambda v: v.get("logicalType", v.get("type")) if isinstance(v, dict) else None,
)
def test_logical_type_becomes_what_moengage_expects(
    field_type: Any, value: Any, expected: Any
) -> None:
    out = one_field(field_type, value)
    assert out == expected
    assert type(out) is type(expected)


def test_nested_record_logical_types_are_converted() -> None:
    inner = {"type": "record", "name": "In", "fields": [{"name": "at", "type": TS_MILLIS}]}
    out = one_field(["null", inner], {"at": datetime(2020, 1, 1, 0, 0, 1, tzinfo=UTC)})
    assert out == {"at": "2020-01-01T00:00:01Z"}


def test_schema_without_logical_types_skips_the_conversion_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(decoding, "_to_jsonable", lambda v, *_: calls.append(v) or v)
    decoder = raw_decoder("device")
    for _ in range(10):
        decoder(encode_raw(schema("device"), DEVICE))
    assert calls == []


def test_schema_with_logical_types_converts_only_the_fields_that_hold_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(decoding, "_to_jsonable", lambda v, *_: calls.append(v) or v)
    decoded = raw_decoder("user")(encode_raw(schema("user"), USER))
    # Only the fields with a date or a decimal go through the converter; the top-level timestamp
    # is formatted from its integer (below).
    assert sorted(map(type, calls), key=str) == sorted([date, Decimal], key=str)
    assert decoded["signup_time"].endswith("Z")


def test_top_level_timestamps_are_formatted_without_the_generic_converter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(decoding, "_to_jsonable", lambda v, *_: calls.append(v) or v)
    decoded = raw_decoder("event")(encode_raw(schema("event"), EVENT))
    # uuid strings are read as plain strings (no UUID object to convert back), and the
    # timestamp is read as its integer and formatted directly: nothing to convert.
    assert calls == []
    assert decoded["event_time"] == "2024-01-02T03:04:05.678Z"
    assert decoded["event_id"] == str(EVENT_ID)


@pytest.mark.parametrize("units", ["millis", "micros"])
@pytest.mark.parametrize("nullable", [False, True])
def test_direct_timestamp_formatting_matches_the_datetime_path(units: str, nullable: bool) -> None:
    """The integer path gives exactly what fastavro's datetime + _to_jsonable gave, over dates
    before and after the epoch, with and without fractions."""
    field_type: Any = logical("long", f"timestamp-{units}")
    if nullable:
        field_type = ["null", field_type]
    moments = [
        datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC),
        datetime(1901, 1, 1, 0, 0, 0, 1000, tzinfo=UTC),
        datetime(2020, 2, 29, 23, 59, 59, 999000, tzinfo=UTC),
        datetime(2038, 1, 19, 3, 14, 8, 500000, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    ]
    if units == "micros":
        moments += [datetime(2021, 1, 2, 3, 4, 5, 6, tzinfo=UTC)]
    for moment in moments:
        assert one_field(field_type, moment) == decoding._to_jsonable(moment)
    if nullable:
        assert one_field(field_type, None) is None


@pytest.mark.parametrize("units", [1000, 1_000_000])
def test_direct_timestamp_text_matches_the_datetime_path_on_many_times(units: int) -> None:
    rng = random.Random(units)
    for _ in range(5000):
        n = rng.randrange(-62_135_596_800 * units, 253_402_300_800 * units)  # years 1..9999
        if rng.random() < 0.3:
            n -= n % units  # whole seconds
        elif rng.random() < 0.3:
            n -= n % (units // 1000)  # whole milliseconds
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=n * 1_000_000 // units)
        assert decoding._iso_utc(n, units) == decoding._to_jsonable(moment), n


# ----- JSON and tombstones --------------------------------------------------------------------


def test_json_value_decodes() -> None:
    s = settings({"name": "t", "format": "json"})
    value = b'{"user_id": "u-1", "n": 1.5, "tags": ["a"], "ok": true, "x": null}'
    assert make_decoder(s.topics[0], s, None)(value) == {
        "user_id": "u-1",
        "n": 1.5,
        "tags": ["a"],
        "ok": True,
        "x": None,
    }


@pytest.mark.parametrize("value", [b"{not json", b"", b"\xff\xfe"])
def test_invalid_json_is_a_decode_error(value: bytes) -> None:
    s = settings({"name": "t", "format": "json"})
    assert rule_of(make_decoder(s.topics[0], s, None), value) == "decode.json"


@pytest.mark.parametrize("fmt", ["confluent", "avro", "json"])
def test_tombstone_is_a_decode_error(fmt: str) -> None:
    topic = {"name": "t", "format": fmt, "schema": "schemas/device.avsc"}
    if fmt != "avro":
        del topic["schema"]
    s = settings(topic)
    with pytest.raises(DecodeError) as info:
        make_decoder(s.topics[0], s, FakeLookup({}))(None)
    assert info.value.rule == "decode.tombstone"
    assert info.value.message == "record has no value (tombstone)"


# ----- SchemaLookup ---------------------------------------------------------------------------


class FakeClient:
    """Stands in for confluent-kafka's SchemaRegistryClient: schema strings by id."""

    def __init__(self, by_id: dict[int, Any], versions: dict[tuple[str, int], str] | None = None):
        self.by_id = by_id
        self.versions = versions or {}
        self.calls = 0

    def get_schema(self, schema_id: int) -> Schema:
        self.calls += 1
        found = self.by_id[schema_id]
        if isinstance(found, Exception):
            raise found
        return found

    def get_version(self, subject: str, version: int, deleted: bool) -> Any:
        return SimpleNamespace(schema=Schema(self.versions[(subject, version)], "AVRO"))


def lookup_with(client: FakeClient, **registry: Any) -> SchemaLookup:
    s = parse_settings(
        {
            "moengage": {"data_center": "01"},
            "kafka": {"bootstrap.servers": "x:1", "group.id": "g"},
            "schema_registry": {"url": "http://127.0.0.1:8081", **registry},
            "topics": [{"name": "t", "transform": {"entry_point": "passthrough"}}],
        },
        base_dir=REPO,
        environ={},
    )
    assert s.schema_registry is not None
    return SchemaLookup(s.schema_registry, client=client)


def device_schema_str() -> str:
    return (SCHEMAS / "device.avsc").read_text()


def test_lookup_parses_and_caches_registry_schemas() -> None:
    client = FakeClient({3: Schema(device_schema_str(), "AVRO")})
    lookup = lookup_with(client)
    decode = confluent_decoder(FakeLookup({3: lookup.get(3)}))
    assert decode(encode_confluent(3, schema("device"), DEVICE)) == DEVICE
    lookup.get(3)
    assert client.calls == 1


def test_lookup_resolves_schema_references() -> None:
    ref = SchemaReference("io.x.Address", "address-value", 1)
    client = FakeClient(
        {5: Schema(json.dumps(PERSON), "AVRO", [ref])},
        {("address-value", 1): json.dumps(ADDRESS)},
    )
    parsed = lookup_with(client).get(5)
    record = {"home": {"city": "Pune"}}
    assert decoding._RawAvroDecoder(parsed)(encode_raw(parsed, record)) == record


def test_registry_404_is_an_unknown_schema_decode_error() -> None:
    client = FakeClient({9: ClientRegistryError(404, 40403, "Schema 9 not found")})
    lookup = lookup_with(client)
    with pytest.raises(SchemaNotFoundError):
        lookup.get(9)
    s = settings({"name": "t", "format": "confluent"})
    value = encode_confluent(9, schema("device"), DEVICE)
    assert rule_of(make_decoder(s.topics[0], s, lookup), value) == "decode.unknown_schema"


@pytest.mark.parametrize(
    "error",
    [
        ClientRegistryError(500, 50001, "store error"),
        ClientRegistryError(404, -1, "<html>not found</html>"),  # a wrong URL, not a missing id
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
def test_registry_failure_is_retriable_not_bad_input(error: Exception) -> None:
    with pytest.raises(SchemaRegistryError) as info:
        lookup_with(FakeClient({9: error})).get(9)
    assert not isinstance(info.value, SchemaRegistryAuthError)  # retried, not a stop
    assert not isinstance(info.value, DecodeError)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_registry_credentials_are_not_retried_and_name_the_key(status: int) -> None:
    with pytest.raises(SchemaRegistryAuthError) as info:
        lookup_with(FakeClient({9: ClientRegistryError(status, 40101, "unauthorized")})).get(9)
    assert f"HTTP {status}" in str(info.value)
    assert "basic.auth.user.info" in str(info.value)


def test_non_avro_registry_schema_is_unsupported() -> None:
    client = FakeClient({4: Schema('{"type": "object"}', "JSON")})
    with pytest.raises(DecodeError) as info:
        lookup_with(client).get(4)
    assert info.value.rule == "decode.unsupported_schema"


# User info in schema_registry.url is refused by the configuration; test_security.py shows a
# registry error would not print it either.
@pytest.mark.parametrize(
    "registry",
    [
        {"properties": {"basic.auth.user.info": "alice:s3cr3t-pw"}},
    ],
)
def test_registry_errors_never_show_the_user_info(registry: dict[str, Any]) -> None:
    error = OSError("proxy said: bad credentials alice:s3cr3t-pw for http://alice:s3cr3t-pw@r")
    with pytest.raises(SchemaRegistryError) as info:
        lookup_with(FakeClient({1: error}), **registry).get(1)
    assert "s3cr3t-pw" not in str(info.value)
    assert "http://127.0.0.1:8081" in str(info.value)


def test_unreachable_registry_is_a_retriable_schema_registry_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    registry = {
        "url": f"http://127.0.0.1:{port}",
        "properties": {"max.retries": 0, "timeout": 2, "basic.auth.user.info": "bob:hunter22"},
    }
    s = parse_settings(
        {
            "moengage": {"data_center": "01"},
            "kafka": {"bootstrap.servers": "x:1", "group.id": "g"},
            "schema_registry": registry,
            "topics": [{"name": "t", "transform": {"entry_point": "passthrough"}}],
        },
        base_dir=REPO,
        environ={},
    )
    assert s.schema_registry is not None
    decode = make_decoder(s.topics[0], s, SchemaLookup(s.schema_registry))
    with pytest.raises(SchemaRegistryError) as info:
        decode(encode_confluent(1, schema("device"), DEVICE))
    assert not isinstance(info.value, SchemaRegistryAuthError)  # retried, not a stop
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "hunter22" not in str(info.value)


# ----- no record crashes the decoder or changes its values silently (issue 11) ------------------

NODE = {
    "type": "record",
    "name": "Node",
    "fields": [{"name": "v", "type": "long"}, {"name": "next", "type": ["null", "Node"]}],
}
TREE = {
    "type": "record",
    "name": "Tree",
    "fields": [
        {"name": "label", "type": "string"},
        {"name": "children", "type": {"type": "array", "items": "Tree"}},
        {"name": "tags", "type": {"type": "map", "values": ["null", "Tree"]}},
    ],
}


def chain(depth: int) -> bytes:
    """A Node list ``depth`` records deep, built by hand (fastavro's writer recurses too):
    each record is v=0 then union branch 1 (another Node); the last takes branch 0 (null)."""
    return b"\x00\x02" * (depth - 1) + b"\x00\x00"


def decode_error(decode: decoding.Decoder, value: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(value)
    return info.value


def test_raw_avro_with_junk_after_the_record_is_bad_input() -> None:
    error = decode_error(raw_decoder("device"), encode_raw(schema("device"), DEVICE) + b"\x00")
    assert (error.stage, error.rule) == ("decode", "decode.trailing_bytes")


def test_raw_avro_written_with_an_appended_field_is_bad_input_not_a_dropped_field() -> None:
    writer = json.loads((SCHEMAS / "device.avsc").read_text())
    writer["fields"].append({"name": "extra", "type": "string", "default": ""})
    value = encode_raw(parse_schema(writer), {**DEVICE, "extra": "kept?"})
    error = decode_error(raw_decoder("device"), value)
    assert (error.stage, error.rule) == ("decode", "decode.trailing_bytes")


@pytest.mark.parametrize("depth", [1, 2, decoding.MAX_DEPTH])
def test_recursive_records_up_to_the_depth_limit_decode(depth: int) -> None:
    out = decoding._RawAvroDecoder(parse_schema(NODE))(chain(depth))
    for _ in range(depth - 1):
        out = out["next"]
    assert out == {"v": 0, "next": None}


@pytest.mark.parametrize("depth", [decoding.MAX_DEPTH + 1, 5000, 200_000])
def test_recursive_records_past_the_depth_limit_are_bad_input(depth: int) -> None:
    """200,000 records deep would take fastavro's C reader far past the C stack (SIGSEGV); the
    pre-scan refuses it before fastavro starts (tests/integration/test_decoding_depth.py runs
    5,000 in a subprocess against the real reader)."""
    error = decode_error(decoding._RawAvroDecoder(parse_schema(NODE)), chain(depth))
    assert (error.stage, error.rule) == ("decode", "decode.too_deep")
    assert str(decoding.MAX_DEPTH) in error.message


def test_recursive_schema_through_arrays_and_maps_is_bounded_too() -> None:
    parsed = parse_schema(TREE)
    leaf: dict[str, Any] = {"label": "leaf", "children": [], "tags": {"x": None}}
    shallow = {"label": "root", "children": [leaf, leaf], "tags": {"a": leaf, "b": None}}
    decode = decoding._RawAvroDecoder(parsed)
    assert decode(encode_raw(parsed, shallow)) == shallow
    deep: dict[str, Any] = leaf
    for _ in range(decoding.MAX_DEPTH):  # each level: the record and its children array
        deep = {"label": "n", "children": [deep], "tags": {}}
    assert decode_error(decode, encode_raw(parsed, deep)).rule == "decode.too_deep"


def test_non_recursive_schemas_are_not_pre_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(decoding, "_scan_depth", lambda *a: calls.append(a))
    for name in ("user", "event", "device"):
        raw_decoder(name)(
            encode_raw(schema(name), {"user": USER, "event": EVENT}.get(name, DEVICE))
        )
    assert calls == []


def test_json_nested_past_orjsons_limit_is_bad_input() -> None:
    s = settings({"name": "t", "format": "json"})
    error = decode_error(make_decoder(s.topics[0], s, None), b"[" * 2000 + b"]" * 2000)
    assert (error.stage, error.rule) == ("decode", "decode.too_deep")


BIG_DECIMAL = logical("bytes", "decimal", precision=400, scale=2)


@pytest.mark.parametrize(
    "value",
    [
        Decimal(2**64),  # integral but past what orjson writes
        Decimal(-(2**63) - 1),
        Decimal("12345678901234567.89"),  # more digits than a double holds
        Decimal("0.10000000000000000001"),
        Decimal("1" + "0" * 330 + ".25"),  # beyond a double's range: was inf, then null
    ],
    ids=["2^64", "-2^63-1", "19-digits", "tiny-difference", "beyond-double"],
)
def test_decimals_without_an_exact_json_number_are_bad_input(value: Decimal) -> None:
    scale = max(0, -int(value.as_tuple().exponent))
    field_type = logical("bytes", "decimal", precision=400, scale=scale)
    parsed = parse_schema(
        {"type": "record", "name": "R", "fields": [{"name": "v", "type": field_type}]}
    )
    error = decode_error(decoding._RawAvroDecoder(parsed), encode_raw(parsed, {"v": value}))
    assert (error.stage, error.rule) == ("decode", "decode.decimal_inexact")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("19.99"), 19.99),
        (Decimal("-0.10"), -0.1),
        (Decimal(2**64 - 1), 2**64 - 1),
        (Decimal(-(2**63)), -(2**63)),
        (Decimal("1E+2"), 100),
        (Decimal("123456789012345.67"), 123456789012345.67),
    ],
)
def test_decimals_become_the_exact_json_number(value: Decimal, expected: float) -> None:
    out = one_field(BIG_DECIMAL, value)
    assert out == expected
    assert type(out) is type(expected)
    assert Decimal(orjson.dumps(out).decode()) == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_doubles_are_bad_input_not_null(value: float) -> None:
    record = one_field("double", value)
    element = {"type": "customer", "customer_id": "john", "attributes": {"score": record}}
    with pytest.raises(ValidationError) as info:
        encode(element)
    assert (info.value.stage, info.value.rule) == ("validate", "value.non_finite")
    assert "attributes.score" in info.value.message


LOCAL_MILLIS = logical("long", "local-timestamp-millis")


def test_local_timestamps_are_sent_without_a_zone_by_default() -> None:
    assert one_field(LOCAL_MILLIS, datetime(2020, 5, 31, 16, 33, 35)) == "2020-05-31T16:33:35"


def test_local_timestamps_are_converted_to_utc_with_the_configured_zone(tmp_path: Path) -> None:
    record_schema = {"type": "record", "name": "R", "fields": [{"name": "v", "type": LOCAL_MILLIS}]}
    (tmp_path / "r.avsc").write_text(json.dumps(record_schema))
    raw = {
        "moengage": {"data_center": "01"},
        "kafka": {"bootstrap.servers": "127.0.0.1:9092", "group.id": "g"},
        "validation": {"local_timezone": "Europe/Berlin"},
        "topics": [
            {
                "name": "t",
                "format": "avro",
                "schema": "r.avsc",
                "transform": {"entry_point": "passthrough"},
            }
        ],
    }
    s = parse_settings(raw, base_dir=tmp_path, environ={})
    value = encode_raw(parse_schema(record_schema), {"v": datetime(2020, 5, 31, 16, 33, 35)})
    assert make_decoder(s.topics[0], s, None)(value) == {"v": "2020-05-31T14:33:35Z"}  # CEST


def test_unknown_local_timezone_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(
            {
                "moengage": {"data_center": "01"},
                "kafka": {"bootstrap.servers": "127.0.0.1:9092", "group.id": "g"},
                "validation": {"local_timezone": "Mars/Olympus_Mons"},
                "topics": [{"name": "t", "format": "json", "transform": {"entry_point": "x"}}],
            },
            base_dir=REPO,
            environ={},
        )
    assert "validation.local_timezone" in str(info.value)


def _registry_settings(properties: dict[str, Any]) -> Settings:
    return parse_settings(
        {
            "moengage": {"data_center": "01"},
            "kafka": {"bootstrap.servers": "x:1", "group.id": "g"},
            "schema_registry": {"url": "http://127.0.0.1:9", "properties": properties},
            "topics": [
                {"name": "t", "format": "confluent", "transform": {"entry_point": "passthrough"}}
            ],
        },
        base_dir=REPO,
        environ={},
    )


def test_a_registry_property_the_client_refuses_is_a_config_error_when_the_lookup_opens() -> None:
    """Built apart from the constructor (``run`` builds it during the group join); the error
    names the key and never the value."""
    from connector.processing import RecordProcessor  # noqa: PLC0415

    processor = RecordProcessor(_registry_settings({"basic.auth.user.inf": "bob:hunter22"}))
    with pytest.raises(ConfigError) as info:
        processor.open()
    assert info.value.problems[0][0] == "schema_registry"
    assert "basic.auth.user.inf" in info.value.problems[0][1]
    assert "hunter22" not in str(info.value)
    # get() on a lookup never opened opens it first: the same error, not an AttributeError.
    s = _registry_settings({"basic.auth.user.inf": "bob:hunter22"})
    assert s.schema_registry is not None
    with pytest.raises(ConfigError):
        SchemaLookup(s.schema_registry).get(1)


def test_the_registry_package_is_imported_only_when_the_lookup_opens() -> None:
    """confluent-kafka's registry package costs ~0.1 s and ~13 MB to import: the connector's
    modules and the record processor do not import it (``run`` opens the lookup during the group
    join; a configuration without a ``confluent`` topic never does)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import connector.cli, connector.app\n"
        "from connector.config import parse_settings\n"
        "from connector.processing import RecordProcessor\n"
        "def processor(fmt):\n"
        "    return RecordProcessor(parse_settings({'moengage': {'data_center': '01'},"
        " 'kafka': {'bootstrap.servers': 'x:1', 'group.id': 'g'},"
        " 'schema_registry': {'url': 'http://127.0.0.1:9'},"
        " 'topics': [{'name': 't', 'format': fmt,"
        " 'transform': {'entry_point': 'passthrough'}}]}, base_dir=Path('.'), environ={}))\n"
        "processor('json').open()  # a registry configured, no confluent topic to use it\n"
        "p = processor('confluent')\n"
        "print('confluent_kafka.schema_registry' in sys.modules)\n"
        "p.open()\n"
        "print('confluent_kafka.schema_registry' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.split()
    assert out == ["False", "True"]
