"""Bad records for the "no record crashes the connector" integration test (issue 11): data only.

Each ``BadRecord`` is the raw value of one Kafka record, the topic set-up it needs (a key of
``TOPICS``: merge that dict into a ``topics[]`` entry with your topic name and error policy) and
the ``(stage, rule)`` the connector must route it with. ``bad_records(schema_id)`` lists them all;
the ``confluent_event`` cases need the id under which ``schemas/event.avsc`` is registered for
that topic (``register(f"{topic}-value", "event")`` in conftest), and are left out without one.

``normalised_records()`` are the other side of the same rules: records that used to be sent
wrongly and must now be delivered, with the action fields MoEngage must receive.

The transforms live in ``bad_transform.py`` (and ``poison_transform.py``); the schemas in
``schemas/`` (the repository's) and ``tests/integration/schemas/``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastavro import parse_schema

from connector.source.decoding import encode_confluent, encode_raw, load_schema_file

REPO = Path(__file__).resolve().parents[2]
EVENT_SCHEMA = REPO / "schemas" / "event.avsc"
NODE_SCHEMA = REPO / "tests" / "integration" / "schemas" / "node.avsc"
MEASURE_SCHEMA = REPO / "tests" / "integration" / "schemas" / "measure.avsc"

# Topic set-ups, by key: "format", "schema" and "transform" of a topics[] entry.
TOPICS: dict[str, dict[str, Any]] = {
    "json": {
        "format": "json",
        "transform": {"function": "tests.integration.bad_transform:from_json"},
    },
    "avro_event": {
        "format": "avro",
        "schema": str(EVENT_SCHEMA),
        "transform": {"function": "tests.integration.poison_transform:to_event"},
    },
    "avro_node": {
        "format": "avro",
        "schema": str(NODE_SCHEMA),
        "transform": {"entry_point": "passthrough"},
    },
    "avro_measure": {
        "format": "avro",
        "schema": str(MEASURE_SCHEMA),
        "transform": {"function": "tests.integration.bad_transform:from_measure"},
    },
    # Needs schema_registry, and schemas/event.avsc registered as "<topic>-value".
    "confluent_event": {
        "format": "confluent",
        "transform": {"function": "tests.integration.poison_transform:to_event"},
    },
}


@dataclass(frozen=True, slots=True)
class BadRecord:
    name: str
    topic: str  # a key of TOPICS
    value: bytes
    stage: str  # "decode", "transform", "validate" or "policy"
    rule: str


@dataclass(frozen=True, slots=True)
class NormalisedRecord:
    name: str
    topic: str
    value: bytes
    action: dict[str, Any]  # fields the delivered event's first action must have


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def _event_row(**changes: Any) -> dict[str, Any]:
    """A good ``schemas/event.avsc`` record (an event time of now, inside the window)."""
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": "bad-user-1",
        "device_id": None,
        "event_name": "Bought",
        "event_time": datetime.now(UTC).replace(microsecond=0),
        "platform": None,
        "app_version": None,
        "tz_offset_seconds": None,
        "properties": {"sku": "A1"},
        **changes,
    }


def _measure(**changes: Any) -> bytes:
    row = {
        "user_id": "bad-user-1",
        "event_name": "Measured",
        "amount": Decimal("19.99"),
        "score": 0.5,
        "local_at": datetime(2026, 6, 1, 12, 0, 0),
        **changes,
    }
    return encode_raw(load_schema_file(MEASURE_SCHEMA, key_path="test"), row)


def node_chain(depth: int) -> bytes:
    """A ``node.avsc`` list ``depth`` records deep, by hand: fastavro's writer recurses in C too."""
    return b"\x00\x02" * (depth - 1) + b"\x00\x00"


def _nested_json(depth: int) -> bytes:
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"user_id":"bad-deep","event_name":"Bought","attributes":' + inner + b"}"


def _transform_rule(kind: str) -> str:
    """The rule a transform's bad value breaks: an object (``{1: "one"}``) is refused by the data
    policy before the encoder sees its key."""
    if kind in ("nan", "infinity"):
        return "value.non_finite"
    return "policy.object" if kind == "int_key" else "element.unencodable"


def bad_records(confluent_schema_id: int | None = None) -> list[BadRecord]:
    """Every bad record of issue 11, items 3 and 6."""
    event = load_schema_file(EVENT_SCHEMA, key_path="test")
    writer = json.loads(EVENT_SCHEMA.read_text())
    writer["fields"].append({"name": "added_by_producer", "type": "string", "default": ""})
    appended = encode_raw(parse_schema(writer), {**_event_row(), "added_by_producer": "x"})
    base = {"user_id": "bad-user-1", "event_name": "Bought"}
    cases = [
        # --- 3. crash loops ---
        BadRecord("json_too_deep_to_decode", "json", b"[" * 2000 + b"]" * 2000, "decode",
                  "decode.too_deep"),
        # An object value: MoEngage's data policy refuses it before the encoder sees its depth
        # (test_batching covers the encoder's own limit).
        BadRecord("json_too_deep_to_encode", "json", _nested_json(300), "policy",
                  "policy.object"),
        BadRecord("time_of_5000_digits", "json", _json({**base, "current_time": "1" * 5000}),
                  "validate", "time.format"),
        BadRecord("avro_decimal_2_64", "avro_measure", _measure(amount=Decimal(2**64)), "decode",
                  "decode.decimal_inexact"),
        BadRecord("avro_decimal_beyond_double", "avro_measure",
                  _measure(amount=Decimal("1" + "0" * 330 + ".25")), "decode",
                  "decode.decimal_inexact"),
        BadRecord("avro_decimal_too_precise", "avro_measure",
                  _measure(amount=Decimal("12345678901234567.89")), "decode",
                  "decode.decimal_inexact"),
        BadRecord("recursive_record_5000_deep", "avro_node", node_chain(5000), "decode",
                  "decode.too_deep"),
        *(
            BadRecord(f"transform_returns_{kind}", "json", _json({**base, "bad": kind}),
                      "policy" if kind == "int_key" else "validate", _transform_rule(kind))
            for kind in ("decimal", "bytes", "set", "surrogate", "int_key", "int_2_64", "nan",
                         "infinity")
        ),
        # --- 6. values changed without a word ---
        BadRecord("avro_double_nan", "avro_measure", _measure(score=float("nan")), "validate",
                  "value.non_finite"),
        BadRecord("avro_double_infinity", "avro_measure", _measure(score=float("-inf")),
                  "validate", "value.non_finite"),
        BadRecord("raw_avro_trailing_junk", "avro_event", encode_raw(event, _event_row()) + b"junk",
                  "decode", "decode.trailing_bytes"),
        BadRecord("raw_avro_appended_field", "avro_event", appended, "decode",
                  "decode.trailing_bytes"),
        BadRecord("event_time_minus_1", "json", _json({**base, "current_time": -1}), "validate",
                  "time.range"),
        BadRecord("event_time_0", "json", _json({**base, "current_time": 0}), "validate",
                  "time.range"),
        BadRecord("event_time_9999", "json",
                  _json({**base, "current_time": "9999-12-31T23:59:59Z"}), "validate",
                  "time.range"),
        BadRecord("user_time_9999_local", "json", _json({**base, "user_time": "9999-12-31"}),
                  "validate", "time.range"),
        BadRecord("nanosecond_epoch", "json",
                  _json({**base, "current_time": time.time_ns()}), "validate", "time.range"),
        BadRecord("avro_local_timestamp_as_current_time", "avro_measure",
                  _measure(event_name="local_as_current"), "validate", "time.no_zone"),
        BadRecord("customer_id_nuls", "json", _json({**base, "user_id": "\x00\x00"}), "validate",
                  "customer_id.control_character"),
        BadRecord("action_nul", "json", _json({**base, "event_name": "\x00"}), "validate",
                  "action.control_character"),
    ]  # fmt: skip
    if confluent_schema_id is not None:
        framed = encode_confluent(confluent_schema_id, event, _event_row())
        cases.append(
            BadRecord("confluent_trailing_junk", "confluent_event", framed + b"\x00junk",
                      "decode", "decode.trailing_bytes")
        )  # fmt: skip
    return cases


def normalised_records() -> list[NormalisedRecord]:
    """Records once sent wrongly that must now be delivered as ``action`` says."""
    now_us = time.time_ns() // 1000
    base = {"user_id": "good-user-1", "event_name": "Bought"}
    return [
        NormalisedRecord("microsecond_epoch", "json", _json({**base, "current_time": now_us}),
                         {"current_time": now_us // 1_000_000}),
        # Without validation.local_timezone: a local time, no "Z" (the Data API overview's
        # user_time is the local time of the event).
        NormalisedRecord("avro_local_timestamp_as_user_time", "avro_measure", _measure(),
                         {"user_time": "2026-06-01T12:00:00",
                          "attributes": {"amount": 19.99, "score": 0.5}}),
    ]  # fmt: skip
