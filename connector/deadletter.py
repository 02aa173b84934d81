"""The dead-letter topic: bad input, kept whole, with headers that say what went wrong.

A dead-lettered record keeps its original key, value and headers, and gains ``moengage.*``
headers: stage, error class, rule, message, what the rule found (``BadRecordError.details``, such
as MoEngage's last answers), source topic/partition/offset, time and connector version. Its offset
is released for commit only from the delivery report, i.e. after the broker confirmed the write
(idempotent producer, ``acks=all``). Record contents never go into logs.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, Message, Producer

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
MAX_MESSAGE_BYTES = 1000  # of the error message header
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000  # librdkafka's message.max.bytes default
# Record batch and record framing around key, value and headers (an upper bound, so a value cut
# to fit is never refused by the producer's own size check).
_FRAMING_BYTES = 1024
TRUNCATED_HEADER = "moengage.value.truncated"
ORIGINAL_BYTES_HEADER = "moengage.value.original_bytes"

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
    headers += [
        (name, text.encode("utf-8", "replace")[:MAX_MESSAGE_BYTES]) for name, text in error.details
    ]
    if ref is not None:
        headers += [
            ("moengage.source.topic", ref.topic.encode()),
            ("moengage.source.partition", str(ref.partition).encode()),
            ("moengage.source.offset", str(ref.offset).encode()),
        ]
    return headers


class DeadLetterWriter:
    """An idempotent producer for dead-letter topics; callbacks fire from :meth:`poll`.

    A record too large for the dead-letter topic is written with its value cut to what fits and
    two headers saying so (``moengage.value.truncated``, ``moengage.value.original_bytes``):
    the error and the coordinates of the source record matter more than its full bytes, which
    are still in the source topic. What fits is first the producer's ``message.max.bytes``; if
    the broker refuses the write as too large (the topic's ``max.message.bytes`` is lower), the
    value is cut to a quarter and written again. Any other refusal, synchronous or reported, is
    passed to ``done`` (the connector stops with exit code 7; the record stays uncommitted).

    Nothing here blocks: a write the producer's local queue has no room for waits in
    ``_waiting`` and is produced again at the next :meth:`poll` (the record stays held meanwhile,
    so backpressure sees it).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._max_bytes = int(config.get("message.max.bytes", DEFAULT_MAX_MESSAGE_BYTES))
        self.in_flight = 0
        self.written = 0
        self.truncated = 0
        self._waiting: deque[Callable[[], None]] = deque()

    def send(self, topic: str, msg: Message, error: BadRecordError, done: DoneCallback) -> None:
        original = cast(list[tuple[str, str | bytes | None]], msg.headers() or [])
        headers: list[tuple[str, str | bytes | None]] = [*original, *error_headers(error)]
        key = msg.key()
        fixed = len(key or b"") + sum(len(k) + len(v or b"") for k, v in headers)
        cap = max(0, self._max_bytes - fixed - _FRAMING_BYTES)
        kind, stamp = msg.timestamp()
        # The original's timestamp is kept: a re-drive gives mappings the record's own $timestamp.
        stamp = stamp if kind != TIMESTAMP_NOT_AVAILABLE else 0  # 0: the producer's clock
        self._write(topic, key, msg.value(), headers=headers, cap=cap, done=done, stamp=stamp)

    def _write(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        headers: list[tuple[str, str | bytes | None]],
        cap: int,
        done: DoneCallback,
        stamp: int = 0,
    ) -> None:
        """Produce ``value`` cut to ``cap`` bytes (with the truncation headers if cut)."""
        sent, sent_headers = value, headers
        if value is not None and len(value) > cap:
            sent = value[:cap]
            sent_headers = [
                *headers,
                (TRUNCATED_HEADER, b"true"),
                (ORIGINAL_BYTES_HEADER, str(len(value)).encode()),
            ]

        def smaller() -> int | None:
            """The next cap after a size refusal; None once nothing is left to cut."""
            return len(sent) // 4 if sent else None

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            self.in_flight -= 1
            if err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                next_cap = smaller()
                if next_cap is not None:
                    self._write(
                        topic, key, value, headers=headers, cap=next_cap, done=done, stamp=stamp
                    )
                    return
            if err is None:
                self.written += 1
                self.truncated += sent is not value
            done(err)

        try:
            self._producer.produce(
                topic,
                key=key,
                value=sent,
                headers=sent_headers,
                on_delivery=on_delivery,
                timestamp=stamp,
            )
        except BufferError:  # the local queue is full: again at the next poll, never waited for
            self._waiting.append(
                lambda: self._write(
                    topic, key, value, headers=headers, cap=cap, done=done, stamp=stamp
                )
            )
            return
        except KafkaException as e:  # refused before it left: too large, or worse
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            if err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                next_cap = smaller()
                if next_cap is not None:
                    self._write(
                        topic, key, value, headers=headers, cap=next_cap, done=done, stamp=stamp
                    )
                    return
            done(err or KafkaError(KafkaError._FAIL, str(e)))
            return
        self.in_flight += 1

    def poll(self) -> None:
        """Serve delivery reports and produce the writes that waited for room (cheap; called
        every loop turn)."""
        if self.in_flight:
            self._producer.poll(0)
        if self._waiting:
            waiting, self._waiting = self._waiting, deque()
            for write in waiting:
                write()

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` for outstanding writes; return how many are unconfirmed."""
        self._producer.flush(timeout)
        self.poll()
        return self.in_flight + len(self._waiting)
