"""The dead-letter contract: a dead-lettered record's offset is released for commit only once the
broker has CONFIRMED the dead-letter write (the delivery report says so), never on a failed write.

Kafka is not mocked in integration tests; here a small fake stands in for confluent-kafka's
``Producer`` so that *when* the broker answers is under the test's control. Like librdkafka, the
fake never calls a delivery callback from ``produce``: reports are served from ``poll``/``flush``,
and only for writes the "broker" has answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from connector import deadletter
from connector.badinput import BadInputRouter
from connector.config import parse_settings
from connector.deadletter import DeadLetterWriter
from connector.errors import (
    BadRecordError,
    ConnectorError,
    DecodeError,
    ExitCode,
    RecordRef,
    RejectedByApiError,
)
from connector.observability.metrics import Metrics
from connector.offsets import OffsetLedger, Slot
from tests.unit.configs import minimal_raw

TOPIC = "orders"
DLQ = "orders-dlq"
KEY = (TOPIC, 0)


# Compared by identity: comparing a KafkaError with a str leaves a Python error set inside
# confluent-kafka (it surfaces at the KafkaError's next method call).
UNANSWERED = "unanswered"


@dataclass
class Write:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, Any]]
    on_delivery: Any
    answer: KafkaError | str | None = UNANSWERED  # what the broker said, once it said it
    reported: bool = False


@dataclass
class FakeProducer:
    """Records writes; the test plays the broker with :meth:`answer`; reports come from poll."""

    config: dict[str, Any]
    writes: list[Write] = field(default_factory=list)
    full: int = 0  # raise BufferError on the next ``full`` produce calls
    refuse: KafkaError | None = None  # raise this from every produce call, as librdkafka does
    poll_timeouts: list[float] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)  # the timestamp of every write

    def produce(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, Any]],
        on_delivery: Any,
        timestamp: int = 0,
    ) -> None:
        if self.full:
            self.full -= 1
            raise BufferError("Local: Queue full")
        if self.refuse is not None:
            raise KafkaException(self.refuse)
        size = len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)
        if size > int(self.config.get("message.max.bytes", 1_000_000)):
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.stamps.append(timestamp)
        self.writes.append(Write(topic, key, value, list(headers), on_delivery))

    def answer(self, i: int, err: KafkaError | None) -> None:
        """The broker acknowledges (``None``) or fails write ``i``; reported at the next poll."""
        self.writes[i].answer = err

    def poll(self, timeout: float = 0) -> int:
        self.poll_timeouts.append(timeout)
        served = 0
        for w in self.writes:
            if not w.reported and w.answer is not UNANSWERED:
                w.reported = True
                w.on_delivery(w.answer, None)
                served += 1
        return served

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return sum(1 for w in self.writes if w.answer is UNANSWERED)


class FakeMessage:
    """The parts of a consumed ``confluent_kafka.Message`` a dead-letter write reads."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def key(self) -> bytes:
        return b"customer-7"

    def value(self) -> bytes:
        return b"\x01not-confluent-framed"

    def headers(self) -> list[tuple[str, bytes]]:
        return [("origin", b"test")]

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_767_225_600_000)  # TIMESTAMP_CREATE_TIME: kept by the dead-letter write


@pytest.fixture(autouse=True)
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadletter, "Producer", FakeProducer)


def _decode_error(offset: int) -> BadRecordError:
    return DecodeError(
        "value does not start with the Confluent magic byte 0 (got 0x01)",
        rule="decode.magic_byte",
    ).at(RecordRef(TOPIC, 0, offset))


@dataclass
class Harness:
    """The bad-input router over one assigned partition, recording how it stops the connector."""

    router: BadInputRouter
    ledger: OffsetLedger
    metrics: Metrics
    failures: list[tuple[ConnectorError, ExitCode]]

    @property
    def dlq(self) -> DeadLetterWriter | None:
        return self.router.writer

    @property
    def failure(self) -> ConnectorError | None:
        return self.failures[0][0] if self.failures else None

    @property
    def exit_code(self) -> ExitCode:
        return self.failures[0][1] if self.failures else ExitCode.OK


def _connector(tmp_path: Path) -> Harness:
    raw = minimal_raw(observability={"enabled": False})
    raw["topics"][0].update(name=TOPIC, dead_letter_topic=DLQ)
    settings = parse_settings(raw, base_dir=tmp_path, environ={})
    assert settings.topic(TOPIC).error_policy == "dlq"
    failures: list[tuple[ConnectorError, ExitCode]] = []
    metrics = Metrics(process_metrics=False)
    router = BadInputRouter(settings, metrics, lambda e, code: failures.append((e, code)))
    ledger = OffsetLedger()
    ledger.assign([KEY])
    return Harness(router, ledger, metrics, failures)


def _three_records(ledger: OffsetLedger) -> tuple[Slot, Slot, Slot]:
    """Offsets 10, 11, 12 of one partition; 10 and 12 delivered, 11 is the bad one."""
    tracker = ledger.tracker(KEY)
    assert tracker is not None
    before, bad, after = (tracker.track(off, 20) for off in (10, 11, 12))
    before.release()  # no elements: done (as a filtered record is)
    after.release()
    return before, bad, after


def _fake(conn: Harness) -> FakeProducer:
    assert conn.dlq is not None
    producer = conn.dlq._producer
    assert isinstance(producer, FakeProducer)
    return producer


def test_a_dead_lettered_offset_is_committable_only_after_the_broker_confirms(
    tmp_path: Path,
) -> None:
    conn = _connector(tmp_path)
    _, bad, _ = _three_records(conn.ledger)
    conn.router.route(bad, _decode_error(11), FakeMessage(11))  # type: ignore[arg-type]
    producer = _fake(conn)
    assert [w.topic for w in producer.writes] == [DLQ]

    # Written, not yet confirmed: the commit stops at the bad record.
    assert conn.ledger.committable() == {KEY: 11}
    assert conn.dlq is not None
    conn.dlq.poll()  # the broker has not answered: no report to serve
    assert conn.ledger.committable() == {KEY: 11}

    # The broker confirmed, but the report has not been served yet: still held.
    producer.answer(0, None)
    assert conn.ledger.committable() == {KEY: 11}
    assert conn.metrics.counts.dead_lettered == 0

    # The delivery report says "written": only now does the watermark pass the record.
    conn.dlq.poll()
    assert conn.ledger.committable() == {KEY: 13}
    assert conn.metrics.counts.dead_lettered == 1
    assert conn.dlq.written == 1
    assert conn.dlq.in_flight == 0
    assert conn.failure is None


FAILURES = [KafkaError._MSG_TIMED_OUT, KafkaError.TOPIC_AUTHORIZATION_FAILED]


# connector/app.py ``_bad_record``: the failure branch of ``confirmed`` calls
# ``log.error("dead_letter_failed", topic=dlq_topic, ..., **fields)`` while ``fields`` already
# holds ``topic``, so it raises TypeError out of ``poll()`` before ``_fail`` runs.
def _failed_write(tmp_path: Path, code: int) -> tuple[Harness, Slot]:
    conn = _connector(tmp_path)
    _, bad, _ = _three_records(conn.ledger)
    conn.router.route(bad, _decode_error(11), FakeMessage(11))  # type: ignore[arg-type]
    _fake(conn).answer(0, KafkaError(code))
    return conn, bad


@pytest.mark.parametrize("code", FAILURES)
def test_a_failed_dead_letter_write_never_releases_the_record(tmp_path: Path, code: int) -> None:
    conn, bad = _failed_write(tmp_path, code)
    assert conn.dlq is not None
    conn.dlq.poll()
    assert conn.ledger.committable() == {KEY: 11}  # never past the record
    assert bad.remaining == 1
    assert conn.metrics.counts.dead_lettered == 0
    assert conn.dlq.written == 0
    assert conn.dlq.in_flight == 0


@pytest.mark.parametrize("code", FAILURES)
def test_a_failed_dead_letter_write_stops_the_connector_with_exit_code_7(
    tmp_path: Path, code: int
) -> None:
    conn, bad = _failed_write(tmp_path, code)
    assert conn.dlq is not None
    conn.dlq.poll()
    assert conn.ledger.committable() == {KEY: 11}
    assert bad.remaining == 1
    # The connector stops with the dead-letter exit code and says which topic failed.
    assert conn.exit_code == ExitCode.DEAD_LETTER
    assert conn.failure is not None
    assert DLQ in str(conn.failure)
    assert len(conn.failures) == 1  # stops the connector, once


def test_an_unconfirmed_write_at_shutdown_keeps_the_record_uncommitted(tmp_path: Path) -> None:
    conn = _connector(tmp_path)
    _, bad, _ = _three_records(conn.ledger)
    conn.router.route(bad, _decode_error(11), FakeMessage(11))  # type: ignore[arg-type]
    assert conn.dlq is not None
    assert conn.dlq.flush(0.01) == 1  # the broker never answered within the grace period
    assert conn.ledger.committable() == {KEY: 11}
    assert conn.failure is None  # not a failure: the record is read again after a restart


def test_a_record_with_two_rejected_elements_waits_for_its_one_dead_letter_write(
    tmp_path: Path,
) -> None:
    """MoEngage rejects two elements of one record: one write, and the record is released only
    when that write is confirmed, not by the second rejection."""
    conn = _connector(tmp_path)
    tracker = conn.ledger.tracker(KEY)
    assert tracker is not None
    slot = tracker.track(20, 40)
    slot.msg = FakeMessage(20)
    slot.add_element()
    slot.add_element()
    slot.release()  # both elements handed to batches
    for _ in range(2):
        rejected = RejectedByApiError("MoEngage rejected it", rule="api.rejected")
        conn.router.rejected_by_api(slot, rejected)
    producer = _fake(conn)
    assert len(producer.writes) == 1
    assert slot.remaining == 1  # the second rejection released its own count only
    assert conn.ledger.committable() == {}  # still at offset 20, where reading started

    producer.answer(0, None)
    assert conn.dlq is not None
    conn.dlq.poll()
    assert slot.remaining == 0
    assert conn.ledger.committable() == {KEY: 21}


def test_the_writer_reports_only_from_poll_and_keeps_the_record_whole() -> None:
    writer = DeadLetterWriter({"bootstrap.servers": "127.0.0.1:1"})
    producer = writer._producer
    assert isinstance(producer, FakeProducer)
    producer.full = 2  # the local queue is full twice: the write waits for the next polls
    reports: list[KafkaError | None] = []
    writer.send(DLQ, FakeMessage(11), _decode_error(11), reports.append)  # type: ignore[arg-type]
    # Nothing blocks the event loop: no write yet, and no waiting poll (the old writer looped on
    # poll(0.05) here, stalling every delivery lane while the queue was full).
    assert producer.writes == []
    assert producer.poll_timeouts == []
    assert writer.flush(0) == 1  # tried again, still no room: unconfirmed
    assert producer.writes == []
    writer.poll()  # room now
    assert reports == []  # produce() never reports; the broker has not answered
    assert writer.in_flight == 1
    assert all(t == 0 for t in producer.poll_timeouts)

    (w,) = producer.writes
    assert (w.key, w.value) == (b"customer-7", b"\x01not-confluent-framed")
    headers = dict(w.headers)
    assert headers["origin"] == b"test"  # the original headers are kept
    assert headers["moengage.error.stage"] == b"decode"
    assert headers["moengage.error.class"] == b"DecodeError"
    assert headers["moengage.error.rule"] == b"decode.magic_byte"
    assert b"magic byte" in headers["moengage.error.message"]
    assert headers["moengage.source.topic"] == TOPIC.encode()
    assert headers["moengage.source.partition"] == b"0"
    assert headers["moengage.source.offset"] == b"11"
    assert producer.stamps == [1_767_225_600_000]  # the original's time: a re-drive's $timestamp

    writer.poll()
    assert reports == []
    producer.answer(0, None)
    writer.poll()
    assert reports == [None]
    assert (writer.in_flight, writer.written) == (0, 1)


class BigMessage(FakeMessage):
    """A 2 MB record: larger than any dead-letter topic takes by default (1 MB)."""

    def value(self) -> bytes:
        return b"v" * 2_000_000


def test_a_record_too_large_for_the_dead_letter_topic_is_written_truncated_and_says_so(
    tmp_path: Path,
) -> None:
    conn = _connector(tmp_path)
    _, bad, _ = _three_records(conn.ledger)
    conn.router.route(bad, _decode_error(11), BigMessage(11))  # type: ignore[arg-type]
    producer = _fake(conn)
    (w,) = producer.writes
    assert w.value is not None
    assert 0 < len(w.value) < 1_000_000
    assert w.value == b"v" * len(w.value)  # the start of the record, as it was
    headers = dict(w.headers)
    assert headers["moengage.value.truncated"] == b"true"
    assert headers["moengage.value.original_bytes"] == b"2000000"
    assert headers["moengage.error.rule"] == b"decode.magic_byte"
    assert conn.ledger.committable() == {KEY: 11}  # released only by the confirmation
    producer.answer(0, None)
    assert conn.dlq is not None
    conn.dlq.poll()
    assert conn.ledger.committable() == {KEY: 13}
    assert conn.dlq.truncated == 1
    assert conn.failure is None


def test_a_size_refusal_from_the_broker_is_written_again_smaller(tmp_path: Path) -> None:
    """The topic's own limit is below the producer's: the broker refuses; a quarter is tried."""
    conn = _connector(tmp_path)
    _, bad, _ = _three_records(conn.ledger)
    conn.router.route(bad, _decode_error(11), BigMessage(11))  # type: ignore[arg-type]
    producer = _fake(conn)
    assert conn.dlq is not None
    producer.answer(0, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    conn.dlq.poll()
    first, second = producer.writes
    assert first.value is not None
    assert second.value is not None
    assert len(second.value) == len(first.value) // 4
    assert dict(second.headers)["moengage.value.original_bytes"] == b"2000000"
    assert conn.ledger.committable() == {KEY: 11}  # the refused write released nothing
    assert conn.failure is None
    producer.answer(1, None)
    conn.dlq.poll()
    assert conn.ledger.committable() == {KEY: 13}
    assert (conn.dlq.written, conn.dlq.in_flight) == (1, 0)


def test_a_write_the_producer_refuses_at_once_stops_with_exit_code_7(tmp_path: Path) -> None:
    """produce() itself raises (unknown topic, fatal producer state): the documented exit 7,
    not a traceback, and the record stays uncommitted."""
    conn = _connector(tmp_path)
    _, bad, _ = _three_records(conn.ledger)
    _fake(conn).refuse = KafkaError(KafkaError._UNKNOWN_TOPIC)
    conn.router.route(bad, _decode_error(11), FakeMessage(11))  # type: ignore[arg-type]
    assert conn.exit_code == ExitCode.DEAD_LETTER
    assert conn.failure is not None
    assert DLQ in str(conn.failure)
    assert conn.ledger.committable() == {KEY: 11}
    assert bad.remaining == 1
    assert conn.dlq is not None
    assert conn.dlq.in_flight == 0
