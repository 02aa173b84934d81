"""Re-drive a dead-letter topic after a fix: ``moengage-connector redrive``.

Each dead-letter record still holds its original key, value and headers, and the ``moengage.*``
headers the connector added (:mod:`connector.deadletter`): the source topic, partition and offset
among them. The re-drive reads the dead-letter topic in its own consumer group,
``moengage-connector-redrive.<DLQ>``, from where that group left off, to the end of every
partition (the first end-of-partition event: records written meanwhile are included, so a
re-drive of a topic the connector keeps writing to ends once it has caught up). Each record goes
through the *current* configuration of its source topic -- the same :class:`RecordProcessor` as
``run`` -- and what passes is delivered by the same lanes (:mod:`connector.sink.delivery`): a
dead-letter offset is committed only once every element of its record was accepted with a 200,
or the record was filtered, or it still fails and was left in place (or, with ``--to``, its write
to that topic was confirmed). Still failing means bad input again, at any stage, send included.

``--rule R`` and ``--since T`` select records (by ``moengage.error.rule``, shell-style patterns
allowed, and by ``moengage.error.time``); the others are passed over and committed past too, so
this group will not see them again. ``--dry-run`` prints, like ``preview``, one JSON line per
record with what would happen, and sends, writes and commits nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import sys
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TextIO, cast

import aiohttp
import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from connector.catalogue.guard import make_guard
from connector.catalogue.rule import Names
from connector.config import Credentials, Settings
from connector.deadletter import DeadLetterWriter, producer_config
from connector.errors import (
    BadRecordError,
    ConnectorError,
    ExitCode,
    RecordRef,
    SchemaRegistryError,
)
from connector.observability.metrics import Metrics
from connector.offsets import OffsetLedger, Slot
from connector.processing import RecordProcessor
from connector.ratelimit import Budget
from connector.sink.client import MoEngageClient
from connector.sink.delivery import Delivery, make_delivery

log = structlog.get_logger(__name__)

GROUP_PREFIX = "moengage-connector-redrive."
# What the connector adds to a dead-lettered record; the rest of its headers are the original's.
ADDED_HEADER_PREFIXES = (
    "moengage.error.",
    "moengage.source.",
    "moengage.connector.",
    "moengage.value.",
)
COMMIT_EVERY = 1.0  # seconds, while records keep coming


def group_id(dlq: str) -> str:
    """The re-drive's own consumer group for a dead-letter topic."""
    return f"{GROUP_PREFIX}{dlq}"


@dataclass(frozen=True, slots=True)
class Original:
    """A dead-lettered record as it was in its source topic, in the shape of a consumed message
    (what the processor and the dead-letter writer read)."""

    source: RecordRef
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes]]
    _timestamp: tuple[int, int]

    def topic(self) -> str:
        return self.source.topic

    def partition(self) -> int:
        return self.source.partition

    def offset(self) -> int:
        return self.source.offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers or None

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def error(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead-letter record: its original (None when it cannot be re-driven) and why."""

    rule: str
    time: dt.datetime | None
    original: Original | None
    problem: str | None = None  # why it cannot be re-driven


def read_letter(msg: Message) -> Letter:
    """The original record and the dead-letter facts, from a dead-letter record's headers."""
    raw = cast(list[tuple[str, bytes | None]], msg.headers() or [])
    added = {k: (v or b"").decode("utf-8", "replace") for k, v in raw if _added(k)}
    kept = [(k, v or b"") for k, v in raw if not _added(k)]
    rule = added.get("moengage.error.rule", "unknown")
    when = _time(added.get("moengage.error.time"))
    try:
        source = RecordRef(
            added["moengage.source.topic"],
            int(added["moengage.source.partition"]),
            int(added["moengage.source.offset"]),
        )
    except (KeyError, ValueError):
        return Letter(rule, when, None, "no source coordinates in its headers")
    if added.get("moengage.value.truncated") == "true":
        return Letter(rule, when, None, "its value was truncated when dead-lettered")
    original = Original(source, msg.key(), msg.value(), kept, msg.timestamp())
    return Letter(rule, when, original)


def _added(name: str) -> bool:
    return name.startswith(ADDED_HEADER_PREFIXES)


def _time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_since(text: str) -> dt.datetime:
    """``--since``: ISO 8601 (a zone required; a date alone is midnight UTC) or epoch seconds."""
    try:
        return dt.datetime.fromtimestamp(float(text), dt.UTC)
    except ValueError:
        pass
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        if len(text) > 10:
            raise ValueError(f"{text!r} has no time zone; add Z or an offset")
        when = when.replace(tzinfo=dt.UTC)
    return when


@dataclass
class Summary:
    """What the re-drive did, by outcome and by rule."""

    read: int = 0
    delivered: int = 0
    filtered: int = 0
    passed_over: int = 0
    still_failing: Counter[str] = field(default_factory=Counter)  # rule → records
    cannot: Counter[str] = field(default_factory=Counter)  # why → records
    committed: dict[int, int] = field(default_factory=dict)

    def render(self, dlq: str, *, dry_run: bool, to: str | None) -> str:
        where = f"written to {to}" if to else "left in place"
        lines = [
            f"# re-drive of {dlq}" + (" (dry run: nothing sent, written or committed)" * dry_run),
            f"#   read: {self.read}",
            f"#   delivered: {self.delivered} "
            + ("(pass the current configuration: would be sent)" if dry_run else "(accepted)"),
            f"#   filtered by the transform: {self.filtered}",
            f"#   passed over (--rule / --since): {self.passed_over}",
            f"#   still failing ({where}): {sum(self.still_failing.values())}",
        ]
        lines += [f"#     {rule}: {n}" for rule, n in sorted(self.still_failing.items())]
        lines += [f"#   cannot be re-driven ({why}): {n}" for why, n in sorted(self.cannot.items())]
        if not dry_run:
            marks = ", ".join(f"[{p}]@{o}" for p, o in sorted(self.committed.items()))
            lines.append(f"#   committed for group {group_id(dlq)}: {marks or 'nothing new'}")
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        return 1 if self.still_failing or self.cannot else 0


@dataclass(frozen=True, slots=True)
class Options:
    dlq: str
    rule: str | None = None
    since: dt.datetime | None = None
    dry_run: bool = False
    to: str | None = None
    timeout: float = 10.0  # for the broker's metadata


class Redrive:
    """One re-drive run: a consumer on the dead-letter topic, the processor, delivery lanes."""

    def __init__(
        self, settings: Settings, credentials: Credentials, options: Options, out: TextIO
    ) -> None:
        self.settings, self.credentials, self.opt, self.out = settings, credentials, options, out
        self.processor = RecordProcessor(settings)
        self.processor.open()
        # The account's caps hold for re-driven records too: a name is sent only once claimed.
        self.catalogue = make_guard(settings, credentials.workspace_id)
        self.summary = Summary()
        self.ledger = OffsetLedger()
        self.failure: ConnectorError | None = None
        self.exit_code = ExitCode.OK
        conf = {**settings.librdkafka_config(), "group.id": group_id(options.dlq)}
        self.consumer = Consumer({**conf, "enable.partition.eof": True})
        self.writer: DeadLetterWriter | None = None
        self._sent: set[Slot] = set()  # records handed to the lanes: delivered once all acked
        if options.to is not None and not options.dry_run:
            self.writer = DeadLetterWriter(producer_config(settings.librdkafka_config()))

    # ----- reading ------------------------------------------------------------------------------

    def _assign(self) -> list[int]:
        meta = self.consumer.list_topics(self.opt.dlq, timeout=self.opt.timeout)
        tmeta = meta.topics.get(self.opt.dlq)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            raise ConnectorError(f"dead-letter topic {self.opt.dlq!r} not found on the broker")
        parts = sorted(tmeta.partitions)
        tps = [TopicPartition(self.opt.dlq, p) for p in parts]
        committed = self.consumer.committed(tps, timeout=self.opt.timeout)
        # Where the group left off; from the start the first time (never from the end).
        starts = [TopicPartition(self.opt.dlq, tp.partition, max(tp.offset, 0)) for tp in committed]
        self.consumer.assign(starts)
        self.ledger.assign([(self.opt.dlq, p) for p in parts])
        return parts

    async def run(self) -> int:
        """Re-drive to the end of every partition; print the summary; the exit code."""
        try:
            if not self.opt.dry_run:
                await self.catalogue.start()  # raises ConnectorError: the claims log unusable
            return await self._run()
        finally:
            self.consumer.close()
            await self.catalogue.close()

    async def _run(self) -> int:
        parts = self._assign()
        open_parts = set(parts)
        async with aiohttp.ClientSession() as session:
            delivery = self._delivery(session) if not self.opt.dry_run else None
            if delivery is not None:
                delivery.start()
            loop = asyncio.get_running_loop()
            next_commit = loop.time() + COMMIT_EVERY
            try:
                while open_parts and self.failure is None:
                    msgs = await asyncio.to_thread(self.consumer.consume, 500, 0.5)
                    for msg in msgs:
                        err = msg.error()
                        if err is None:
                            claiming = self._take(msg, delivery)
                            if claiming is not None:  # new names: claimed before it is sent
                                await claiming
                        elif err.code() == KafkaError._PARTITION_EOF:
                            open_parts.discard(cast(int, msg.partition()))
                        else:
                            log.warning("consume_error", error=err.str())
                            if err.fatal():
                                self._fail(ConnectorError(f"Kafka: {err.str()}"), ExitCode.KAFKA)
                    if delivery is not None:
                        delivery.flush_all()
                        await self._wait_for_room(delivery)
                        if delivery.fatal is not None or delivery.crashed is not None:
                            break  # _until_settled reports it; nothing past it is committed
                    self._poll_writer()
                    if loop.time() >= next_commit and not self.opt.dry_run:
                        self._commit()
                        next_commit = loop.time() + COMMIT_EVERY
                if delivery is not None:
                    delivery.flush_all()
                    await self._until_settled(delivery)
                await self._drain_writer()
                self.summary.delivered += sum(1 for s in self._sent if s.remaining == 0)
            finally:
                if delivery is not None:
                    await delivery.stop()
        if not self.opt.dry_run:
            self._commit()
        self.out.write(self.summary.render(self.opt.dlq, dry_run=self.opt.dry_run, to=self.opt.to))
        self.out.write("\n")
        if self.failure is not None:
            sys.stderr.write(f"error: {self.failure}\n")
            return int(self.exit_code)
        return self.summary.exit_code

    def _delivery(self, session: aiohttp.ClientSession) -> Delivery:
        m = self.settings.moengage
        loop_now = asyncio.get_running_loop().time()
        budget = Budget(
            m.users_per_minute,
            m.events_per_minute,
            loop_now,
            window=m.rate_window_seconds,
            share=m.rate_share or 1.0,
        )
        client = MoEngageClient(
            session,
            m.endpoint,
            self.credentials.workspace_id,
            self.credentials.api_key,
            m.request_timeout_seconds,
        )
        return make_delivery(
            self.settings,
            client,
            budget,
            metrics=Metrics(process_metrics=False),
            on_rejected=self._rejected_by_api,
        )

    # ----- one record ---------------------------------------------------------------------------

    def _take(self, msg: Message, delivery: Delivery | None) -> Coroutine[Any, Any, None] | None:
        summary = self.summary
        summary.read += 1
        partition, offset = cast(int, msg.partition()), cast(int, msg.offset())
        tracker = self.ledger.tracker((self.opt.dlq, partition))
        assert tracker is not None
        slot = tracker.track(offset, len(msg.value() or b""))
        letter = read_letter(msg)
        where = f"{self.opt.dlq}[{partition}]@{offset}"
        if not self._selected(letter):
            summary.passed_over += 1
            slot.release()
            return None
        original = letter.original
        if original is None:
            assert letter.problem is not None
            summary.cannot[letter.problem] += 1
            self._show(where, letter, "cannot", {"why": letter.problem})
            slot.release()
            return None
        if original.source.topic not in self.processor.pipelines:
            summary.cannot["its source topic is not in the configuration"] += 1
            self._show(where, letter, "cannot", {"why": "source topic not configured"})
            slot.release()
            return None
        slot.msg = original
        try:
            prepared = self.processor.prepare(
                cast(Message, original),
                original.source.topic,
                original.source.partition,
                original.source.offset,
                original.value(),
            )
        except BadRecordError as e:
            self._show(where, letter, "still fails", {"stage": e.stage, "rule": e.rule})
            self._still_fails(slot, e)
            return None
        except SchemaRegistryError as e:  # not the record's fault: it stays, uncommitted
            self._fail(e, ExitCode.SCHEMA_REGISTRY)
            return None
        if not prepared:
            summary.filtered += 1
            self._show(where, letter, "filtered", {})
            slot.release()
            return None
        try:
            new = None if delivery is None else self.catalogue.admit(prepared)
        except BadRecordError as e:  # a kind of name the account has no room left for
            self._still_fails(slot, e.at(original.source))
            return None
        self._show(where, letter, "deliver", {"elements": [el for *_, el in prepared]})
        if delivery is None:  # a dry run
            summary.delivered += 1
            slot.release()
            return None
        if new is not None:
            return self._after_claim(slot, prepared, new, delivery, original)
        self._hand_over(slot, prepared, delivery)
        return None

    async def _after_claim(
        self,
        slot: Slot,
        prepared: list[Any],
        new: Names,
        delivery: Delivery,
        original: Original,
    ) -> None:
        try:
            await self.catalogue.claim(new)
        except BadRecordError as e:  # an earlier claim took the last free names
            self._still_fails(slot, e.at(original.source))
            return
        except ConnectorError as e:  # the claims log unusable: this record stays uncommitted
            self._fail(e, ExitCode.KAFKA)
            return
        self._hand_over(slot, prepared, delivery)

    def _hand_over(self, slot: Slot, prepared: list[Any], delivery: Delivery) -> None:
        loop_now = asyncio.get_running_loop().time()
        for data, cost, customer, element in prepared:
            delivery.add(data, slot, cost, customer, loop_now, element=element)
        self._sent.add(slot)
        slot.release()

    def _selected(self, letter: Letter) -> bool:
        if self.opt.rule is not None and not fnmatch.fnmatchcase(letter.rule, self.opt.rule):
            return False
        since = self.opt.since
        return since is None or (letter.time is not None and letter.time >= since)

    def _show(self, where: str, letter: Letter, outcome: str, extra: dict[str, Any]) -> None:
        if not self.opt.dry_run:
            return
        line: dict[str, Any] = {"record": where, "was": letter.rule, "outcome": outcome}
        if letter.original is not None:
            line["source"] = str(letter.original.source)
        self.out.write(orjson.dumps({**line, **extra}).decode() + "\n")

    def _still_fails(self, slot: Slot, error: BadRecordError) -> None:
        """Bad input again: counted by its rule, left in place, or written to ``--to`` (and only
        then released for commit)."""
        if slot.dead_lettered:  # another element of a record already counted and written
            slot.ack()
            return
        slot.dead_lettered = True
        self.summary.still_failing[f"{error.stage}/{error.rule}"] += 1
        log.warning("redrive_still_fails", error=str(error))
        if self.writer is None or self.opt.to is None:
            slot.release()
            return
        to = self.opt.to

        def confirmed(err: KafkaError | None) -> None:
            if err is None:
                slot.release()
                return
            self._fail(ConnectorError(f"write to {to} failed: {err.str()}"), ExitCode.DEAD_LETTER)

        self.writer.send(to, cast(Message, slot.msg), error, confirmed)

    def _rejected_by_api(self, slot: Slot, error: BadRecordError) -> None:
        """MoEngage refused an element of a re-driven record (or failed on it alone)."""
        original = cast(Original, slot.msg)
        self._sent.discard(slot)
        self._still_fails(slot, error.at(original.source))

    # ----- settling -----------------------------------------------------------------------------

    def _commit(self) -> None:
        marks = self.ledger.committable()
        if not marks:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in marks.items()]
        for tp in self.consumer.commit(offsets=tps, asynchronous=False) or []:
            if tp.error is not None:
                self._fail(ConnectorError(f"commit failed: {tp.error}"), ExitCode.KAFKA)
                return
        for (t, p), o in marks.items():
            self.ledger.mark_committed((t, p), o)
            self.summary.committed[p] = o

    def _fail(self, error: ConnectorError, code: ExitCode) -> None:
        if self.failure is None:
            self.failure, self.exit_code = error, code

    def _poll_writer(self) -> None:
        if self.writer is not None:
            self.writer.poll()

    async def _drain_writer(self) -> None:
        if self.writer is None:
            return
        while self.writer.flush(0.05):  # noqa: ASYNC110 - librdkafka signals nothing to asyncio
            await asyncio.sleep(0)

    async def _wait_for_room(self, delivery: Delivery) -> None:
        limit = self.settings.pipeline.max_buffered_records
        while self.ledger.buffered_records >= limit and delivery.fatal is None:
            await delivery.next_answer()

    async def _until_settled(self, delivery: Delivery) -> None:
        await delivery.wait_idle()
        if delivery.fatal is not None:
            self._fail(delivery.fatal, ExitCode.FATAL_API)
        elif delivery.crashed is not None:
            self._fail(
                ConnectorError(f"delivery failed: {delivery.crashed!r}"), ExitCode.UNEXPECTED
            )


def command(settings: Settings, credentials: Credentials, options: Options) -> int:
    """``moengage-connector redrive``: the exit code (0 all re-driven, 1 some still fail, else
    the ``run`` codes: 3 MoEngage refused the connector, 5 Schema Registry, 6 Kafka, 7 a write
    to ``--to`` failed)."""

    async def go() -> int:
        return await Redrive(settings, credentials, options, sys.stdout).run()

    return asyncio.run(go())
