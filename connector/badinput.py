"""Bad input: where a record that can never be delivered as it is goes, per its topic's policy.

``fail`` stops the connector (exit 4) and never releases the record; ``skip`` counts, logs and
releases it; ``dlq`` writes it to the dead-letter topic and releases it only once the broker has
confirmed the write. This part owns the dead-letter writer; nothing here blocks the event loop (a
full producer queue is retried at the next :meth:`BadInputRouter.poll`, not waited for).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import structlog
from confluent_kafka import KafkaError, Message

from connector.config import Settings
from connector.deadletter import DeadLetterWriter, producer_config
from connector.errors import BadRecordError, ConnectorError, ExitCode, RecordRef
from connector.observability.kafkalog import kafka_logging
from connector.observability.metrics import Metrics
from connector.offsets import Slot

log = structlog.get_logger(__name__)

FailHandler = Callable[[ConnectorError, ExitCode], None]


class BadInputRouter:
    """Routes each :class:`BadRecordError` as its topic's ``on_error`` says."""

    def __init__(self, settings: Settings, metrics: Metrics, on_fail: FailHandler) -> None:
        self._specs = {t.name: t for t in settings.topics}
        self._metrics = metrics
        self._on_fail = on_fail
        self._log_contents = settings.logging.log_record_contents
        self.dlq_topics = frozenset(t.name for t in settings.topics if t.error_policy == "dlq")
        self.writer: DeadLetterWriter | None = (
            DeadLetterWriter(
                {**producer_config(settings.librdkafka_config()), **kafka_logging(settings)}
            )
            if self.dlq_topics
            else None
        )

    def route(self, slot: Slot, error: BadRecordError, msg: Message | None = None) -> None:
        """Route bad input. ``slot`` holds one count for this failure (the record's hold, or the
        element MoEngage rejected); it is released only by ``skip`` or by a confirmed dead-letter
        write, never under ``fail``."""
        ref = error.ref
        assert ref is not None
        spec = self._specs[ref.topic]
        policy = spec.error_policy
        self._metrics.bad_record(ref.topic, error.stage, error.rule)
        fields: dict[str, Any] = {
            "topic": ref.topic,
            "partition": ref.partition,
            "offset": ref.offset,
            "stage": error.stage,
            "rule": error.rule,
            "error": error.message,
            "policy": policy,
        }
        message = msg if msg is not None else cast(Message | None, slot.msg)
        if self._log_contents and message is not None:
            fields["value"] = repr((message.value() or b"")[:1024])
        (log.error if policy == "fail" else log.warning)("bad_record", **fields)
        if policy == "fail":
            self._on_fail(error, ExitCode.BAD_RECORD)  # the count is never released
            return
        if policy == "skip" or slot.dead_lettered:
            # skip: counted and logged; a second rejected element of a record already being
            # dead-lettered: that write (which holds its own count) covers the whole record.
            if policy == "skip":
                self._metrics.skipped()
            slot.ack()
            return
        assert self.writer is not None
        assert spec.dead_letter_topic is not None
        assert message is not None
        slot.dead_lettered = True
        dlq_topic = spec.dead_letter_topic

        def confirmed(err: KafkaError | None) -> None:
            if err is None:
                self._metrics.dead_lettered(ref.topic, error.stage)
                slot.ack()  # only now may the record's offset be committed
                return
            log.error(
                "dead_letter_failed", dead_letter_topic=dlq_topic, write_error=err.str(), **fields
            )
            self._on_fail(
                ConnectorError(f"dead-letter write to {dlq_topic} failed: {err.str()}"),
                ExitCode.DEAD_LETTER,
            )

        self.writer.send(dlq_topic, message, error, confirmed)

    def rejected_by_api(self, slot: Slot, error: BadRecordError) -> None:
        """MoEngage refused an element of this record alone (the delivery lanes' report)."""
        if not slot.owner.active:
            return  # revoked meanwhile: the new owner re-reads and judges the record itself
        topic, partition = slot.owner.key
        self.route(slot, error.at(RecordRef(topic, partition, slot.offset)))

    def keeps_message(self, topic: str) -> bool:
        """Whether a record of ``topic`` must keep its message: an element MoEngage rejects later
        is dead-lettered as that record."""
        return topic in self.dlq_topics

    def poll(self) -> None:
        """Serve dead-letter delivery reports and retry writes the local queue had no room for
        (cheap; every loop turn)."""
        if self.writer is not None:
            self.writer.poll()

    async def drain(self) -> None:
        """Until every dead-letter write is confirmed, serving reports in short slices so the
        loop (and a second stop signal) is never blocked for long."""
        if self.writer is None:
            return
        # librdkafka signals nothing to asyncio: its reports are served by flush itself.
        while self.writer.flush(0.05):  # noqa: ASYNC110
            await asyncio.sleep(0)
