"""The benchmark's fixed, seeded workload and how it gets into the broker fast.

Events come from ``connector.devtools.workload.events`` (raw Avro, ``schemas/event.avsc``, with a
map of ``EVENT_PROPS`` properties); users from ``users`` (Confluent framing: magic byte, schema id
registered with the Schema Registry stand-in, Avro body). Producing 600,000 records from one
Python process is bound by generating and encoding them, so the events are split into shards, each
produced by its own process with its own fixed seed (shard ``s`` uses ``seed = EVENT_SEED + s``).

End offsets come from the delivery reports (``produce``'s return value): Tansu's ListOffsets answer
is wrong for batches of several records.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import fastavro
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.devtools.kafkautil import produce
from connector.devtools.workload import events, users
from connector.source.decoding import encode_confluent, encode_raw

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
EVENTS_TOPIC = "bench.events"
USERS_TOPIC = "bench.users"
PARTITIONS = 8
EVENT_PROPS = 12  # 6 realistic properties + 6 extra strings: ~310-byte Avro events
EVENT_SEED = 3
USER_SEED = 1


def schema(name: str) -> tuple[str, Any]:
    """The text and the parsed form of ``schemas/<name>.avsc``."""
    text = (SCHEMAS / f"{name}.avsc").read_text()
    return text, fastavro.parse_schema(orjson.loads(text))


@dataclass
class TopicLoad:
    """What was produced to one topic: records, Avro bytes, and end offsets per partition."""

    topic: str
    records: int = 0
    value_bytes: int = 0
    ends: dict[int, int] = field(default_factory=dict)

    def merge(self, records: int, value_bytes: int, ends: dict[int, int]) -> None:
        self.records += records
        self.value_bytes += value_bytes
        for p, end in ends.items():
            self.ends[p] = max(self.ends.get(p, 0), end)

    @property
    def avg_bytes(self) -> float:
        return self.value_bytes / self.records if self.records else 0.0


class _Counted:
    """Wraps an iterable of (key, value) pairs and counts records and value bytes."""

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        self._pairs = pairs
        self.records = 0
        self.value_bytes = 0

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        for key, value in self._pairs:
            self.records += 1
            self.value_bytes += len(value)
            yield key, value


def _event_shard(
    bootstrap: str, n: int, n_users: int, shard: int
) -> tuple[int, int, dict[int, int]]:
    """Produce one shard of events (runs in a worker process)."""
    _, parsed = schema("event")
    pairs = _Counted(
        (e["user_id"].encode(), encode_raw(parsed, e))
        for e in events(n, n_users, seed=EVENT_SEED + shard, props=EVENT_PROPS)
    )
    ends = produce(bootstrap, EVENTS_TOPIC, pairs)
    return pairs.records, pairs.value_bytes, ends


def _user_shard(bootstrap: str, n: int, schema_id: int) -> tuple[int, int, dict[int, int]]:
    """Produce every user, Confluent-framed (runs in a worker process)."""
    _, parsed = schema("user")
    pairs = _Counted(
        (u["user_id"].encode(), encode_confluent(schema_id, parsed, u))
        for u in users(n, seed=USER_SEED)
    )
    ends = produce(bootstrap, USERS_TOPIC, pairs)
    return pairs.records, pairs.value_bytes, ends


def register_user_schema(registry_url: str) -> int:
    text, _ = schema("user")
    with SchemaRegistryClient({"url": registry_url}) as sr:
        schema_id: int = sr.register_schema(f"{USERS_TOPIC}-value", Schema(text, "AVRO"))
    return schema_id


def produce_backlog(
    bootstrap: str, schema_id: int, n_events: int, n_users: int, shards: int
) -> dict[str, TopicLoad]:
    """Produce the whole backlog from ``shards`` event processes plus one user process."""
    loads = {EVENTS_TOPIC: TopicLoad(EVENTS_TOPIC), USERS_TOPIC: TopicLoad(USERS_TOPIC)}
    sizes = [n_events // shards + (1 if s < n_events % shards else 0) for s in range(shards)]
    ctx = multiprocessing.get_context("spawn")  # the parent runs threads: never fork it
    with ProcessPoolExecutor(max_workers=shards + 1, mp_context=ctx) as pool:
        futures = [
            (EVENTS_TOPIC, pool.submit(_event_shard, bootstrap, n, n_users, s))
            for s, n in enumerate(sizes)
        ]
        futures.append((USERS_TOPIC, pool.submit(_user_shard, bootstrap, n_users, schema_id)))
        for topic, fut in futures:
            loads[topic].merge(*fut.result())
    for load in loads.values():
        if sum(load.ends.values()) != load.records:
            raise RuntimeError(
                f"{load.topic}: produced {load.records} records but delivery reports end at "
                f"{sum(load.ends.values())}"
            )
    return loads


class PacedProducer:
    """Produces events at a steady rate from a thread; remembers each one's Kafka timestamp.

    Each event carries ``properties.bench_seq`` so the sandbox's record file can be joined back to
    the record's timestamp (CreateTime, as stored by the broker, from the delivery report).
    """

    def __init__(self, bootstrap: str, topic: str, rate: int, seconds: float) -> None:
        self.topic = topic
        self.rate = rate
        self.seconds = seconds
        self.timestamps_ms: dict[int, int] = {}
        self.acked_at: dict[int, float] = {}
        self.failures: list[str] = []
        self.produced = 0
        self.value_bytes = 0
        self.ends: dict[int, int] = {}
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 1}
        )
        self._thread = threading.Thread(target=self._run, name="paced-producer", daemon=True)

    def start(self) -> PacedProducer:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join()

    def _delivered(self, seq: int, err: Any, msg: Any) -> None:
        if err is not None:
            self.failures.append(str(err))
            return
        self.timestamps_ms[seq] = msg.timestamp()[1]
        # When the broker confirmed the write: before it, no consumer can see the record. The
        # callback runs in poll(), called at least every 10 ms, so this is late by up to that.
        self.acked_at[seq] = time.time()
        p = msg.partition()
        self.ends[p] = max(self.ends.get(p, 0), msg.offset() + 1)

    def _run(self) -> None:
        _, parsed = schema("event")
        total = int(self.rate * self.seconds)
        tick = 0.01  # produce in 10 ms steps: 20 records a step at 2,000/s
        per_tick = max(1, round(self.rate * tick))
        source = events(total, 10_000, seed=EVENT_SEED + 1000, props=EVENT_PROPS)
        start = time.monotonic()
        for seq, event in enumerate(source):
            due = start + (seq // per_tick) * tick
            delay = due - time.monotonic()
            if delay > 0:
                self._producer.poll(delay)
            event["properties"]["bench_seq"] = seq
            value = encode_raw(parsed, event)
            self.value_bytes += len(value)
            self._producer.produce(
                self.topic,
                key=event["user_id"].encode(),
                value=value,
                on_delivery=partial(self._delivered, seq),
            )
            self.produced += 1
            self._producer.poll(0)
        remaining = self._producer.flush(30)
        if remaining:
            self.failures.append(f"{remaining} undelivered")


class ConsumeProbe:
    """A bare consumer on the latency topic (its own group, default fetch settings): the delay
    from a record's Kafka timestamp to its arrival in a client, i.e. what the broker and
    librdkafka alone add before any connector code runs."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.delays_ms: list[float] = []
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{topic}-probe",
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self._thread = threading.Thread(target=self._run, name="consume-probe", daemon=True)

    def start(self) -> ConsumeProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(1000, 0.1):
                if msg.error() is None:
                    now = time.time()
                    self.delays_ms.append(now * 1000 - msg.timestamp()[1])
