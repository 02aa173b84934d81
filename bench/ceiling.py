"""The ceiling: a bare loop that only consumes and decodes the same records, in its own process.

Run as ``python -m bench.ceiling SPEC_JSON``; it prints one JSON line with its timings. The parent
reaps it with ``os.wait4``, so its CPU time and peak RSS are measured exactly as the connector's.
It assigns every partition from offset 0 (no group join), takes ``consume(1000, ...)`` batches
and decodes each value with ``fastavro.schemaless_reader`` (Confluent values: header checked,
schema looked up by id, body read after the 5 bytes). Timing starts right after ``assign``, the
counterpart of the connector's ``partitions_assigned``.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from fastavro import parse_schema, schemaless_reader

from bench.procs import Usage, reap

_HEADER = struct.Struct(">BI")


def _decoders(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for topic, (fmt, path, schema_id) in spec["formats"].items():
        parsed = parse_schema(orjson.loads(Path(path).read_bytes()))
        if fmt == "avro":
            out[topic] = lambda v, s=parsed: schemaless_reader(BytesIO(v), s, None)
        else:
            by_id = {schema_id: parsed}

            def confluent(v: bytes, by_id: dict[int, Any] = by_id) -> Any:
                _, sid = _HEADER.unpack_from(v)
                buf = BytesIO(v)
                buf.seek(_HEADER.size)
                return schemaless_reader(buf, by_id[sid], None)

            out[topic] = confluent
    return out


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def consume_and_decode(spec: dict[str, Any]) -> dict[str, Any]:
    decoders = _decoders(spec)
    ends: dict[str, dict[str, int]] = spec["ends"]
    target = sum(sum(parts.values()) for parts in ends.values())
    consumer = Consumer(
        {
            "bootstrap.servers": spec["bootstrap"],
            "group.id": spec["group"],
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    tps = [TopicPartition(t, int(p), 0) for t, parts in ends.items() for p in parts]
    consumer.assign(tps)
    start, cpu_start = time.time(), _cpu()
    first: float | None = None
    seen = errors = 0
    deadline = time.monotonic() + spec["timeout"]
    while seen < target and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.5):
            if msg.error() is not None:
                errors += 1
                continue
            if first is None:
                first = time.time()
            decoders[str(msg.topic())](msg.value())
            seen += 1
    end, cpu_end = time.time(), _cpu()
    consumer.close()
    return {
        "loop_cpu_s": cpu_end - cpu_start,
        "records": seen,
        "target": target,
        "errors": errors,
        "start": start,
        "first_record": first,
        "end": end,
    }


def run_ceiling(spec: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    """Run the ceiling loop in a child process; its JSON line and its rusage."""
    proc = subprocess.Popen(  # noqa: S603 - this module, with a spec we built
        [
            sys.executable,
            "-m",
            "bench.ceiling",
            orjson.dumps(spec, option=orjson.OPT_NON_STR_KEYS).decode(),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    usage = reap(proc, spec["timeout"] + 30)
    lines = out.decode().strip().splitlines()
    if usage.exit_code != 0 or not lines:
        raise RuntimeError(f"ceiling loop failed with exit code {usage.exit_code}")
    return orjson.loads(lines[-1]), usage


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(consume_and_decode(orjson.loads(sys.argv[1]))).decode() + "\n")
