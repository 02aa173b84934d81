"""The connector's per-record CPU, stage by stage, in one process: no broker, no HTTP.

``python -m bench.hotpath [--records N] [--profile]`` builds the benchmark's event and user
records (the same generators, schemas and mappings as ``make bench``), wraps them in real
``confluent_kafka.Message`` objects and feeds them through the run loop's own per-record code
(``Connector._handle``: decode, transform, validate, encode, batch, ledger) with the lanes not
started, so only the loop's work is measured. It prints microseconds per record for each stage
alone and for the whole path; ``--profile`` adds a cProfile table of the whole path.

The ``fastavro reader alone`` row is the very ``schemaless_reader`` call the decoders make (same
parsed schema, same offset past the Confluent header) without anything the connector does around
it; ``outside the reader`` is the whole path minus that row: the connector's own CPU per record.
Under callgrind, ``--only reader`` minus ``--only setup`` is the reader's instruction count.

This is where the loop's cost per record is read and attributed; ``make bench`` measures the
real process end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
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
from connector.config import Credentials, parse_settings
from connector.devtools.workload import events, users
from connector.pipeline import record_from_message
from connector.ratelimit import Budget
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
    """A connector over the two topics, ready for ``_handle``: lanes built but never started."""
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
    users_decoder: Any = conn.pipelines[USERS].decoder
    users_decoder._registry = _Registry(schema("user")[1])  # no registry process here
    # Lanes are never started: nothing is sent.
    conn.delivery = conn.make_delivery(None, Budget(None, None, 0.0))  # type: ignore[arg-type]
    conn.ledger.assign([(EVENTS, 0), (USERS, 0)])
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
            calls[topic] = _reader_call(conn.pipelines[topic].decoder, m.value())
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
    fn()
    return (time.process_time() - started) / n * 1e6


async def _main(args: argparse.Namespace) -> int:
    n_events, n_users = args.records * 5 // 6, args.records // 6
    msgs = _messages(n_events, n_users)
    n = len(msgs)
    conn = _connector()
    decoded: list[Any] = []
    records: list[Any] = []
    elements: list[Any] = []

    def decode() -> None:
        decoded.extend(conn.pipelines[str(m.topic())].decoder(m.value()) for m in msgs)

    read = _reader(conn, msgs)  # built before '--only setup' returns

    def wrap() -> None:
        records.extend(map(record_from_message, msgs, decoded))

    def transform() -> None:
        for r in records:
            elements.extend(conn.pipelines[r.topic].transform(r))

    def validate() -> None:
        for e in elements:
            conn.validator.validate(e)

    # The whole per-record path runs on a connector of its own (the stages share nothing with it),
    # built here so that '--only setup' builds everything '--only whole' does.
    whole_conn = _connector()
    if args.only == "setup":
        return 0
    if args.only == "reader":
        read()
        return 0
    rows = []
    if args.only is None:
        rows += [
            ("fastavro reader alone (schemaless_reader)", _cpu_us(n, read)),
            ("decode (fastavro + logical types)", _cpu_us(n, decode)),
            ("record_from_message", _cpu_us(n, wrap)),
            ("transform (mapping)", _cpu_us(n, transform)),
            ("validate", _cpu_us(n, validate)),
        ]

    def whole() -> None:
        for msg in msgs:
            coro = whole_conn._handle(msg, 0.0)
            try:
                coro.send(None)  # never suspends: no registry outage, no I/O
            except StopIteration:
                continue
            raise AssertionError("_handle suspended")

    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    rows.append(("whole per-record path (Connector._handle)", _cpu_us(n, whole)))
    if profiler is not None:
        profiler.disable()
    assert whole_conn.stats.records == n, whole_conn.stats
    assert whole_conn.stats.bad_records == 0, whole_conn.stats

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
