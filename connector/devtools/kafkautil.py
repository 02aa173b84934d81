"""Small Kafka helpers shared by the demo, the tests and the benchmark (not used by the service)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create topics with the given partition counts (replication 1); existing ones are kept."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    for name, fut in futures.items():
        try:
            fut.result(30)
        except Exception as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise RuntimeError(f"cannot create topic {name}: {e}") from e


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    partition_of: Any = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> dict[int, int]:
    """Produce (key, value) pairs idempotently, wait for every delivery, return end offsets.

    The end offsets (one past the highest delivered offset, per partition) come from the delivery
    reports: Tansu's ListOffsets answer is the last *batch's* base offset + 1, which is wrong for
    batches of several records, so :func:`end_offsets` cannot be trusted on it.
    """

    def each() -> Iterator[tuple[str, dict[str, Any]]]:
        for n, (key, value) in enumerate(records):
            kwargs: dict[str, Any] = {"key": key, "value": value}
            if partition_of is not None:
                kwargs["partition"] = partition_of(n, key)
            if headers:
                kwargs["headers"] = headers
            yield topic, kwargs

    return produce_many(bootstrap, each()).get(topic, {})


def produce_many(
    bootstrap: str, records: Iterable[tuple[str, dict[str, Any]]]
) -> dict[str, dict[int, int]]:
    """:func:`produce` for records of several topics, each ``(topic, Producer.produce keyword
    arguments)``, through one idempotent producer: each partition keeps the order given, and
    the producer's start-up is paid once. End offsets per topic and partition."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "log_level": 0,  # a failure is reported by the caller, not as raw librdkafka lines
        }
    )
    failures: list[str] = []
    ends: dict[str, dict[int, int]] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))
        else:
            topic_ends = ends.setdefault(msg.topic(), {})
            p = msg.partition()
            topic_ends[p] = max(topic_ends.get(p, 0), msg.offset() + 1)

    for topic, kwargs in records:
        while True:
            try:
                producer.produce(topic, on_delivery=on_delivery, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise RuntimeError(f"{remaining} undelivered, failures: {failures[:3]}")
    return ends


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """High watermark of every partition as the broker reports it (unreliable on Tansu)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "connector-devtools-probe"})
    try:
        meta = c.list_topics(topic, timeout=10)
        parts = sorted(meta.topics[topic].partitions)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed next-offsets per partition (-1001 where nothing is committed)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        meta = c.list_topics(topic, timeout=10)
        tps = [TopicPartition(topic, p) for p in sorted(meta.topics[topic].partitions)]
        return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    finally:
        c.close()
