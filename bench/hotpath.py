"""The connector's per-record CPU, stage by stage, in one process: no broker, no HTTP.

``python -m bench.hotpath [--records N] [--profile]`` builds the benchmark's event and user
records (the same generators, schemas and mappings as ``make bench``), wraps them in real
``confluent_kafka.Message`` objects and feeds them through the run loop's own per-record step
(``Connector.take``: checkpoint, record processor -- decode, transform, validate, encode, size,
cost -- and the delivery lanes' batching) with the lanes not started, so only the loop's work is
measured. It prints microseconds per record for each stage
alone and for the whole path; ``--profile`` adds a cProfile table of the whole path.

The ``fastavro reader alone`` row is the very ``schemaless_reader`` call the decoders make (same
parsed schema, same offset past the Confluent header) without anything the connector does around
it; ``outside the reader`` is the whole path minus that row: the connector's own CPU per record.

Counted in instructions, only inside the measured loop (nothing of the start-up, imports or
OpenSSL's initialisation, which vary from run to run), each ``--only`` run once::

    PYTHONHASHSEED=0 valgrind --tool=callgrind --toggle-collect=_operator_call \
        python -m bench.hotpath --records 6000 --only whole    # then --only reader

``Collected`` in valgrind's summary is the loop's instructions: (whole - reader) / records is the
connector's own work per record. Without ``--toggle-collect``, ``--only reader`` minus ``--only
setup`` is the reader's count (the older way, which carries whatever one-off work differs between
the runs).

This is where the loop's cost per record is read and attributed; ``make bench`` measures the
real process end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import operator
import pstats
import sys
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from confluent_kafka import Message
from fastavro import schemaless_reader
from pydantic import SecretStr

from bench.runner import EVENT_MAPPING, USER_MAPPING
from bench.workload import EVENT_PROPS, EVENT_SEED, SCHEMAS, USER_SEED, schema
from connector.app import Connector
from connector.catalogue.rule import names_of
from connector.config import Credentials, parse_settings
from connector.devtools.workload import events, users
from connector.processing import record_from_message
from connector.source.decoding import Decoder, encode_confluent, encode_raw

EVENTS, USERS = "hot.events", "hot.users"
SCHEMA_ID = 1


class _Registry:
    """The users' writer schema by id, as the Schema Registry client would hand it back."""

    def __init__(self, parsed: Any) -> None:
        self._parsed = parsed

    def get(self, schema_id: int) -> Any:
        return self._parsed


def _messages(n_events: int, n_users: int) -> list[Message]:
    _, ev_schema = schema("event")
    _, us_schema = schema("user")
    evs = events(n_events, max(n_users, 1000), seed=EVENT_SEED, props=EVENT_PROPS)
    return [
        _message(EVENTS, i, e["user_id"], encode_raw(ev_schema, e)) for i, e in enumerate(evs)
    ] + [
        _message(USERS, i, u["user_id"], encode_confluent(SCHEMA_ID, us_schema, u))
        for i, u in enumerate(users(n_users, seed=USER_SEED))
    ]


def _message(topic: str, offset: int, key: str, value: bytes) -> Message:
    return Message(
        topic=topic,
        partition=0,
        offset=offset,
        key=key.encode(),
        value=value,
        timestamp=(1, 1_767_225_600_000 + offset),
    )


def _connector() -> Connector:
    """A connector over the two topics, ready for ``take``: built inside the running loop, its
    lanes and consumer never started (nothing is sent or fetched)."""
    settings = parse_settings(
        {
            "moengage": {
                "base_url": "http://127.0.0.1:9",
                "users_per_minute": None,
                "events_per_minute": None,
            },
            "kafka": {"bootstrap.servers": "127.0.0.1:9", "group.id": "hotpath"},
            "schema_registry": {"url": "http://127.0.0.1:9"},
            "topics": [
                {
                    "name": EVENTS,
                    "format": "avro",
                    "schema": str(SCHEMAS / "event.avsc"),
                    "transform": {"mapping": EVENT_MAPPING},
                },
                {"name": USERS, "format": "confluent", "transform": {"mapping": USER_MAPPING}},
            ],
            "observability": {"enabled": False},
        },
        base_dir=Path.cwd(),
        environ={},
    )
    conn = Connector(settings, Credentials(workspace_id="HOT", api_key=SecretStr("hot-key")))
    users_decoder: Any = conn.processor.pipelines[USERS].decoder
    users_decoder._registry = _Registry(schema("user")[1])  # no registry process here
    conn.checkpoint.assigned([(EVENTS, 0), (USERS, 0)])
    return conn


def _reader_call(decoder: Decoder, sample: bytes) -> tuple[Any, int]:
    """``(parsed schema, start offset)`` of the ``schemaless_reader`` call ``decoder`` makes: the
    plan's schema (the decoder's rewrites included), after the header for the Confluent format.
    A Confluent decoder plans on its first record, so ``sample`` is decoded once."""
    plan = getattr(decoder, "_plan", None)
    if plan is not None:
        return plan.schema, 0
    decoder(sample)
    return decoder._plans[SCHEMA_ID].schema, 5  # type: ignore[attr-defined]


def _reader(conn: Connector, msgs: list[Message]) -> Callable[[], None]:
    """fastavro's reader alone over ``msgs``, called exactly as the topics' decoders call it."""
    calls: dict[str, tuple[Any, int]] = {}
    for m in msgs:
        topic = str(m.topic())
        if topic not in calls:
            calls[topic] = _reader_call(conn.processor.pipelines[topic].decoder, m.value())
    reads = [(m.value(), *calls[str(m.topic())]) for m in msgs]

    def read() -> None:
        for value, parsed, start in reads:
            buf = BytesIO(value)
            buf.seek(start)
            schemaless_reader(buf, parsed, None)

    return read


def _cpu_us(n: int, fn: Callable[[], object]) -> float:
    gc.collect()
    started = time.process_time()
    operator.call(fn)  # the C frame callgrind's --toggle-collect=_operator_call counts inside
    return (time.process_time() - started) / n * 1e6


def _stages(conn: Connector, msgs: list[Message]) -> list[tuple[str, Callable[[], object]]]:
    """Each stage of the path alone, over every message (each feeds the next one's input)."""
    pipelines, validator = conn.processor.pipelines, conn.processor.validator
    decoded: list[Any] = []
    records: list[Any] = []
    elements: list[Any] = []

    def decode() -> None:
        decoded.extend(pipelines[str(m.topic())].decoder(m.value()) for m in msgs)

    def wrap() -> None:
        records.extend(map(record_from_message, msgs, decoded))

    def transform() -> None:
        for r in records:
            elements.extend(pipelines[r.topic].transform(r))

    def validate() -> None:
        for e in elements:
            validator.validate(e)

    return [
        ("fastavro reader alone (schemaless_reader)", _reader(conn, msgs)),
        ("decode (fastavro + logical types)", decode),
        ("record_from_message", wrap),
        ("transform (mapping)", transform),
        ("validate", validate),
    ]


async def _main(args: argparse.Namespace) -> int:
    n_events, n_users = args.records * 5 // 6, args.records // 6
    msgs = _messages(n_events, n_users)
    n = len(msgs)
    conn = _connector()
    stages = _stages(conn, msgs)  # built before '--only setup' returns
    # The whole per-record path runs on a connector of its own (the stages share nothing with it),
    # built here so that '--only setup' builds everything '--only whole' does.
    whole_conn = _connector()
    epoch = whole_conn.checkpoint.epoch
    # The guard's lookups of names it holds: the steady state, no claims.
    for msg in msgs:
        whole_conn.catalogue.assume(names_of(p[3] for p in whole_conn.processor.process(msg)))

    def whole() -> None:
        take = whole_conn.take
        for msg in msgs:
            if take(msg, epoch, 0.0) is not None:  # no registry outage here: never waits
                raise AssertionError("take waited for the Schema Registry")

    try:
        # Each '--only' run does the one full collection _cpu_us does before it measures, so
        # under callgrind the differences of runs hold the path's instructions alone, not a
        # collection of the whole heap (about 37M instructions, 6k a record at 6,000 records).
        if args.only == "setup":
            gc.collect()
            return 0
        if args.only == "reader":
            _cpu_us(n, stages[0][1])
            return 0
        rows = [(label, _cpu_us(n, fn)) for label, fn in stages] if args.only is None else []
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        rows.append(("whole per-record path (Connector.take)", _cpu_us(n, whole)))
        if profiler is not None:
            profiler.disable()
        counts = whole_conn.metrics.counts
        assert whole_conn.checkpoint.ledger.buffered_records == n, counts
        assert counts.bad_records == 0, counts
    finally:
        await conn.close()
        await whole_conn.close()
    out = sys.stdout
    out.write(f"hotpath: {n:,} records ({n_events:,} events, {n_users:,} users), CPU µs each\n")
    for label, us in rows:
        out.write(f"  {label:<45} {us:8.2f}\n")
    if args.only is None and profiler is None:  # a profiled whole path is not comparable
        outside = rows[-1][1] - rows[0][1]
        out.write(f"  {'outside the reader (whole - reader alone)':<45} {outside:8.2f}\n")
    if profiler is not None:
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    ap.add_argument("--records", type=int, default=60_000)
    ap.add_argument("--profile", action="store_true", help="add a cProfile table")
    ap.add_argument(
        "--only",
        choices=["whole", "reader", "setup"],
        help="run only the whole path, only fastavro's reader, or only the set-up: under "
        "'valgrind --tool=callgrind' the difference of whole (or reader) and setup is that "
        "path's instruction count, steady on a busy machine",
    )
    return asyncio.run(_main(ap.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
