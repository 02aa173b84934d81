"""``moengage-connector produce``: write sample records from a JSON Lines file to a topic.

For trying one's own topics on the local environment of ``moengage-connector dev``. Each line of
the file is one record's value, written as JSON, as raw Avro (``--schema FILE.avsc``) or as
Confluent-framed Avro (the schema registered under the topic's ``<topic>-value`` subject).

Every line is read and encoded before anything is sent: a line that is not JSON, or a record that
does not match the schema, is reported with the file and line number and nothing is produced, so a
fixed file can simply be produced again. JSON values map to Avro as fastavro writes Python values,
with three conveniences for hand-written samples: ISO 8601 strings are accepted for
``timestamp-*`` and ``date`` fields, strings for ``bytes`` (UTF-8), and a field the schema does not
have is an error rather than silently dropped.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("json", "avro", "confluent")
MAX_REPORTED = 20


class SampleError(Exception):
    """Lines of a sample file that cannot be produced, as ``file:line: what is wrong``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topic", required=True, help="the topic to write to")
    p.add_argument("--file", required=True, type=Path, help="JSON Lines: one record value a line")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="json, avro (raw, with --schema) or confluent (registry framing, with --schema); "
        "default: the topic's format in --config, else json",
    )
    p.add_argument(
        "--schema",
        type=Path,
        default=None,
        help="the .avsc to encode with (default: the topic's schema in --config)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="a configuration to take the broker, the registry, the format and the schema from",
    )
    p.add_argument("--bootstrap", default=None, help="broker address (default: from --config)")
    p.add_argument("--registry", default=None, help="Schema Registry URL (default: from --config)")
    p.add_argument(
        "--key", default=None, metavar="FIELD", help="top-level field whose value is the record key"
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=None,
        metavar="N",
        help="create the topic with N partitions if it does not exist",
    )


# ----- reading and encoding -----------------------------------------------------------------


def read_lines(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed JSON value) for every non-blank line; SampleError lists bad lines."""
    import orjson  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SampleError([f"{path}: cannot read: {e}"]) from None
    values: list[tuple[int, Any]] = []
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append((n, orjson.loads(line)))
        except orjson.JSONDecodeError as e:
            problems.append(f"{path}:{n}: not JSON: {e}")
    if problems:
        raise SampleError(problems)
    return values


def _from_iso(value: Any, logical: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if logical == "date":
            return dt.date.fromisoformat(value[:10])
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return value  # left for the schema check to report
    if logical.startswith("timestamp") and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _adapt(value: Any, schema: Any, named: dict[str, Any], path: str) -> Any:
    """JSON value → what fastavro writes for ``schema``; raises ValueError on an unknown field."""
    if isinstance(schema, str):
        schema = named.get(schema, schema)
    if isinstance(schema, list):  # a union: adapt for the first branch that takes the value
        if value is None:
            return None
        first_error: ValueError | None = None
        for branch in schema:
            if branch != "null":
                try:
                    adapted = _adapt(value, branch, named, path)
                except ValueError as e:  # a record branch without one of its fields: next one
                    first_error = first_error or e
                    continue
                if adapted is not value:
                    return adapted
        if first_error is not None:
            raise first_error
        return value
    if not isinstance(schema, dict):
        if schema == "bytes" and isinstance(value, str):
            return value.encode()
        return value
    kind, logical = schema.get("type"), schema.get("logicalType")
    if logical in ("date", "timestamp-millis", "timestamp-micros") or (
        isinstance(logical, str) and logical.startswith("local-timestamp")
    ):
        return _from_iso(value, logical)
    if kind == "record" and isinstance(value, dict):
        fields = {f["name"]: f["type"] for f in schema["fields"]}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            where = f" at {path}" if path else ""
            raise ValueError(
                f"field {unknown[0]!r}{where} is not in the schema's record "
                f"{schema.get('name')} (fields: {', '.join(fields)})"
            )
        return {
            k: _adapt(v, fields[k], named, f"{path}.{k}" if path else k) for k, v in value.items()
        }
    if kind == "array" and isinstance(value, list):
        return [_adapt(v, schema["items"], named, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        return {k: _adapt(v, schema["values"], named, f"{path}.{k}") for k, v in value.items()}
    if kind in ("bytes", "fixed") and isinstance(value, str):
        return value.encode()
    if isinstance(kind, dict | list):
        return _adapt(value, kind, named, path)
    return value


@dataclass(frozen=True)
class AvroSchema:
    """A local ``.avsc`` file, parsed (named types it references load from its directory)."""

    path: Path
    text: str
    parsed: Any

    @classmethod
    def load(cls, path: Path) -> AvroSchema:
        from connector.errors import ConfigError  # noqa: PLC0415
        from connector.source.decoding import load_schema_file  # noqa: PLC0415

        try:
            parsed = load_schema_file(path, key_path="--schema")
        except ConfigError as e:
            raise SampleError([msg for _, msg in e.problems]) from None
        return cls(path, path.read_text(encoding="utf-8"), parsed)

    def datum(self, value: Any) -> Any:
        """``value`` as fastavro writes it for this schema; ValueError saying which field does
        not match."""
        from fastavro.validation import ValidationError, validate  # noqa: PLC0415

        named = self.parsed.get("__named_schemas", {}) if isinstance(self.parsed, dict) else {}
        datum = _adapt(value, self.parsed, named, "")
        try:
            validate(datum, self.parsed, raise_errors=True)
        except ValidationError as e:
            raise ValueError(_explain(e)) from None
        return datum

    def encode(self, value: Any) -> bytes:
        """Schemaless Avro (the ``avro`` format's value)."""
        from connector.source.decoding import encode_raw  # noqa: PLC0415

        return encode_raw(self.parsed, self.datum(value))


def _explain(e: Any) -> str:
    parts = []
    for err in getattr(e, "errors", ()):
        field = getattr(err, "field", None) or "the record"
        datum, expected = getattr(err, "datum", None), getattr(err, "schema", None)
        if isinstance(expected, dict):
            expected = expected.get("logicalType") or expected.get("type")
        shown = "missing (null)" if datum is None else f"{datum!r} ({type(datum).__name__})"
        parts.append(f"{field} is {shown}, the schema expects {expected}")
    return "; ".join(parts) or str(e)


def encode_file(
    path: Path, encode: Callable[[Any], bytes], key_field: str | None
) -> list[tuple[bytes | None, bytes]]:
    """(key, value) for every line; SampleError naming file and line of each record that fails."""
    records: list[tuple[bytes | None, bytes]] = []
    problems: list[str] = []
    for n, value in read_lines(path):
        try:
            key: bytes | None = None
            if key_field is not None:
                if not isinstance(value, dict) or value.get(key_field) is None:
                    raise ValueError(f"no {key_field!r} field for the record key (--key)")
                key = str(value[key_field]).encode()
            records.append((key, encode(value)))
        except ValueError as e:
            problems.append(f"{path}:{n}: {e}")
    if problems:
        more = len(problems) - MAX_REPORTED
        shown = problems[:MAX_REPORTED] + ([f"... and {more} more"] if more > 0 else [])
        raise SampleError(shown)
    return records


def encode_json(value: Any) -> bytes:
    import orjson  # noqa: PLC0415

    return orjson.dumps(value)


# ----- the command --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where and how to produce, from the flags and (for what they leave open) a configuration."""

    bootstrap: str
    registry: str | None
    fmt: str
    schema: Path | None


def resolve_target(args: argparse.Namespace) -> Target:
    bootstrap, registry, fmt, schema = args.bootstrap, args.registry, args.format, args.schema
    if args.config is not None:
        from connector.config import load_settings  # noqa: PLC0415

        settings = load_settings(args.config)
        bootstrap = bootstrap or str(settings.kafka["bootstrap.servers"])
        if registry is None and settings.schema_registry is not None:
            registry = settings.schema_registry.url
        try:
            topic = settings.topic(args.topic)
        except KeyError:
            topic = None
        if topic is not None:
            fmt = fmt or topic.format
            schema = schema or settings.schema_path(topic)
    fmt = fmt or "json"
    problems = []
    if not bootstrap:
        problems.append("no broker: pass --bootstrap HOST:PORT or --config FILE")
    if fmt in ("avro", "confluent") and schema is None:
        problems.append(f"format {fmt} needs the record schema: pass --schema FILE.avsc")
    if fmt == "confluent" and not registry:
        problems.append("format confluent needs a Schema Registry: pass --registry URL or --config")
    if problems:
        raise SampleError(problems)
    return Target(bootstrap, registry, fmt, schema)


def _ensure_topic(bootstrap: str, topic: str, partitions: int | None) -> None:
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    from connector.devtools.kafkautil import create_topics  # noqa: PLC0415

    # librdkafka's own lines stay quiet: an unreachable broker is this command's one error line.
    meta = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=10)
    if topic in meta.topics and meta.topics[topic].error is None:
        return
    if partitions is None:
        raise SampleError(
            [
                f"topic {topic!r} does not exist on {bootstrap}: create it with "
                f"'moengage-connector dev --topic {topic}:PARTITIONS', or pass --partitions N"
            ]
        )
    create_topics(bootstrap, {topic: partitions})


def produce_file(args: argparse.Namespace) -> int:
    """The ``produce`` command: 0 when every record was delivered, 1 otherwise."""
    import sys  # noqa: PLC0415

    from confluent_kafka import KafkaException  # noqa: PLC0415

    from connector.devtools.kafkautil import produce  # noqa: PLC0415
    from connector.source.decoding import encode_confluent  # noqa: PLC0415

    try:
        target = resolve_target(args)
        encode: Callable[[Any], bytes] = encode_json
        schema_note = ""
        if target.fmt != "json":
            assert target.schema is not None
            schema = AvroSchema.load(target.schema)
            encode = schema.encode
            if target.fmt == "confluent":
                assert target.registry is not None
                schema_id = _register(target.registry, f"{args.topic}-value", schema.text)
                schema_note = f", schema id {schema_id} under {args.topic}-value"

                def encode(value: Any) -> bytes:
                    return encode_confluent(schema_id, schema.parsed, schema.datum(value))

        records = encode_file(args.file, encode, args.key)
        _ensure_topic(target.bootstrap, args.topic, args.partitions)
        ends = produce(target.bootstrap, args.topic, records)
    except SampleError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    except (KafkaException, RuntimeError) as e:
        print(f"error: producing to {args.topic!r} failed: {e}", file=sys.stderr)
        return 1
    print(
        f"produced {len(records)} record(s) from {args.file} to {args.topic} as "
        f"{target.fmt}{schema_note}; end offsets {dict(sorted(ends.items()))}"
    )
    return 0


def _register(registry: str, subject: str, text: str) -> int:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient  # noqa: PLC0415
    from confluent_kafka.schema_registry.error import SchemaRegistryError  # noqa: PLC0415

    try:
        with SchemaRegistryClient({"url": registry}) as client:
            return int(client.register_schema(subject, Schema(text, "AVRO")))
    except SchemaRegistryError as e:
        raise SampleError([f"the Schema Registry refused the schema under {subject}: {e}"]) from e
    except Exception as e:  # the client's transport errors (httpx) vary by version; re-raised
        raise SampleError([f"cannot register the schema at {registry}: {e}"]) from e
