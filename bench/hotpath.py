"""The connector's per-record CPU, stage by stage, in one process: no broker, no HTTP.

``python -m bench.hotpath [--records N] [--profile]`` builds the benchmark's event and user
records (the same generators, schemas and mappings as ``make bench``), wraps them in real
``confluent_kafka.Message`` objects and feeds them through the run loop's own per-record step
(``Connector.take``: checkpoint, record processor -- decode, transform, validate, encode, size,
cost -- and the delivery lanes' batching) with the lanes not started, so only the loop's work is
measured. It prints microseconds per record for each stage
alone and for the whole path; ``--profile`` adds a cProfile table of the whole path.

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
from pathlib import Path
from typing import Any

from confluent_kafka import Message
from pydantic import SecretStr

from bench.runner import EVENT_MAPPING, USER_MAPPING
from bench.workload import EVENT_PROPS, EVENT_SEED, SCHEMAS, USER_SEED, schema
from connector.app import Connector
from connector.config import Credentials, parse_settings
from connector.devtools.workload import events, users
from connector.processing import record_from_message
from connector.source.decoding import encode_confluent, encode_raw

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
        decoded.extend(conn.processor.pipelines[str(m.topic())].decoder(m.value()) for m in msgs)

    def wrap() -> None:
        records.extend(map(record_from_message, msgs, decoded))

    def transform() -> None:
        for r in records:
            elements.extend(conn.processor.pipelines[r.topic].transform(r))

    def validate() -> None:
        for e in elements:
            conn.processor.validator.validate(e)

    # The whole per-record path runs on a connector of its own (the stages share nothing with it),
    # built here so that '--only setup' builds everything '--only whole' does.
    whole_conn = _connector()
    if args.only == "setup":
        await conn.close()
        await whole_conn.close()
        return 0
    rows = []
    if args.only is None:
        rows += [
            ("decode (fastavro + logical types)", _cpu_us(n, decode)),
            ("record_from_message", _cpu_us(n, wrap)),
            ("transform (mapping)", _cpu_us(n, transform)),
            ("validate", _cpu_us(n, validate)),
        ]

    epoch = whole_conn.checkpoint.epoch

    def whole() -> None:
        take = whole_conn.take
        for msg in msgs:
            coro = take(msg, epoch, 0.0)
            try:
                coro.send(None)  # never suspends: no registry outage, no I/O
            except StopIteration:
                continue
            raise AssertionError("take suspended")

    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    rows.append(("whole per-record path (Connector.take)", _cpu_us(n, whole)))
    if profiler is not None:
        profiler.disable()
    counts = whole_conn.metrics.counts
    assert whole_conn.checkpoint.ledger.buffered_records == n, counts
    assert counts.bad_records == 0, counts

    await conn.close()
    await whole_conn.close()
    out = sys.stdout
    out.write(f"hotpath: {n:,} records ({n_events:,} events, {n_users:,} users), CPU µs each\n")
    for label, us in rows:
        out.write(f"  {label:<45} {us:8.2f}\n")
    if profiler is not None:
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    ap.add_argument("--records", type=int, default=60_000)
    ap.add_argument("--profile", action="store_true", help="add a cProfile table")
    ap.add_argument(
        "--only",
        choices=["whole", "setup"],
        help="run only the whole path, or only the set-up: under 'valgrind --tool=callgrind' "
        "the difference of the two is the path's instruction count, steady on a busy machine",
    )
    return asyncio.run(_main(ap.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
