"""The dead-letter topic: bad input, kept whole, with headers that say what went wrong.

A dead-lettered record keeps its original key, value and headers, and gains ``moengage.*``
headers: stage, error class, rule, message, source topic/partition/offset, time and connector
version. Its offset is released for commit only from the delivery report, i.e. after the broker
confirmed the write (idempotent producer, ``acks=all``). Record contents never go into logs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import KafkaError, Message, Producer

from connector import __version__
from connector.errors import BadRecordError

# Consumer-only librdkafka properties: not passed to the dead-letter producer.
_CONSUMER_ONLY_PREFIXES = (
    "group.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.",
    "auto.commit.",
    "partition.assignment.strategy",
    "fetch.",
    "isolation.level",
    "check.crcs",
    "queued.",
    "enable.partition.eof",
    "consume.callback.",
)
MAX_MESSAGE_BYTES = 1000

DoneCallback = Callable[[KafkaError | None], None]


def producer_config(consumer_config: dict[str, Any]) -> dict[str, Any]:
    """Connection and security settings of the consumer, for a producer on the same cluster."""
    base = {k: v for k, v in consumer_config.items() if not k.startswith(_CONSUMER_ONLY_PREFIXES)}
    return {
        **base,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    }


def error_headers(error: BadRecordError, now: dt.datetime | None = None) -> list[tuple[str, bytes]]:
    ref = error.ref
    when = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    message = error.message.encode("utf-8", "replace")[:MAX_MESSAGE_BYTES]
    headers = [
        ("moengage.error.stage", error.stage.encode()),
        ("moengage.error.class", type(error).__name__.encode()),
        ("moengage.error.rule", error.rule.encode()),
        ("moengage.error.message", message),
        ("moengage.error.time", when.encode()),
        ("moengage.connector.version", __version__.encode()),
    ]
    if ref is not None:
        headers += [
            ("moengage.source.topic", ref.topic.encode()),
            ("moengage.source.partition", str(ref.partition).encode()),
            ("moengage.source.offset", str(ref.offset).encode()),
        ]
    return headers


class DeadLetterWriter:
    """An idempotent producer for dead-letter topics; callbacks fire from :meth:`poll`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self.in_flight = 0
        self.written = 0

    def send(self, topic: str, msg: Message, error: BadRecordError, done: DoneCallback) -> None:
        original = cast(list[tuple[str, str | bytes | None]], msg.headers() or [])
        headers: list[tuple[str, str | bytes | None]] = [*original, *error_headers(error)]

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            self.in_flight -= 1
            if err is None:
                self.written += 1
            done(err)

        while True:
            try:
                self._producer.produce(
                    topic,
                    key=msg.key(),
                    value=msg.value(),
                    headers=headers,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:  # the local queue is full: serve callbacks to make room
                self._producer.poll(0.05)
        self.in_flight += 1

    def poll(self) -> None:
        """Serve delivery reports (cheap; called every loop turn)."""
        if self.in_flight:
            self._producer.poll(0)

    def flush(self, timeout: float) -> int:
        """Wait for outstanding writes; return how many are still unconfirmed."""
        remaining: int = self._producer.flush(timeout)
        return remaining
