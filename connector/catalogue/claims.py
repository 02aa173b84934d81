"""The claims log: one single-partition Kafka topic per account, read by every instance.

A claim is one JSON message: ``{"id", "seed", "user_attributes", "events"}`` (or a bare
``{"id", "sync": true}`` marker). Every instance reads the partition from the beginning and
applies each claim to its :class:`~connector.catalogue.rule.Catalogue` in log order, so all
instances hold the same catalogue and reach the same verdict on every claim. An instance that
claims names waits until it has read its own claim back: its verdict is then the log's.

At start-up the log is read to its end before the first record is processed: the instance writes
a sync marker and reads until it sees it (a high watermark would do, but not every broker
reports it exactly). Writes go through an idempotent producer with ``acks=all``.

Nothing here blocks the event loop: the consumer lives on one thread of its own (every call on
it runs there), the producer on another; claims are applied on the event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from connector.catalogue.rule import Catalogue, Names, Refusal
from connector.deadletter import producer_config
from connector.errors import ConnectorError

log = structlog.get_logger(__name__)

_PRODUCER_ONLY = ("enable.idempotence", "acks", "linger.ms")
_READ_BATCH = 500
_READ_TIMEOUT = 0.2  # seconds one consume call may wait; bounds how late a stop is noticed
_ADMIN_TIMEOUT = 30.0
_PROBE_TIMEOUT = 10.0  # the first metadata request: a cluster out of reach is retried by the caller
# Claims must outlive every record that used their names: never deleted by time or size.
_TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}


class CatalogueUnavailable(ConnectorError):
    """The claims log could not be created, written or read in time (the connector stops with
    exit code 6; no record waiting for a claim is committed)."""


class CatalogueUnreachable(CatalogueUnavailable):
    """No broker answered while opening the claims log: worth waiting for, not a stop."""

    def __init__(self, message: str, error: KafkaError) -> None:
        super().__init__(message)
        self.error = error  # librdkafka's, for the connector's broker watch


_UNREACHABLE = (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN)


class ClaimsLog:
    """Reads the claims topic into ``catalogue``; writes claims and waits for their verdicts."""

    def __init__(
        self,
        kafka_config: dict[str, Any],
        topic: str,
        catalogue: Catalogue,
        *,
        replication_factor: int = -1,
        timeout: float = 30.0,
        on_change: Callable[[], None] = lambda: None,
        client_props: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.topic = topic
        self.catalogue = catalogue
        self._replication = replication_factor
        self._timeout = timeout
        self._on_change = on_change
        self._client_props = client_props  # the connector's log and broker watch, per client
        self._producer_config = producer_config(kafka_config)
        base = {k: v for k, v in self._producer_config.items() if k not in _PRODUCER_ONLY}
        self._consumer_config = {
            **base,
            "group.id": f"{topic}.reader",  # never joined, never committed: partitions assigned
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 50,  # a claim is read back soon after it is written
        }
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalogue-read")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalogue-write")
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._waiting: dict[str, asyncio.Future[Refusal | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.claims_read = 0

    # ----- start and stop -----------------------------------------------------------------------

    async def start(self) -> None:
        """Create the topic if missing, then read the log to its end (raises
        ``CatalogueUnavailable``)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._open_sync)
        await loop.run_in_executor(self._reader, self._subscribe_sync)
        self._task = asyncio.create_task(self._read_forever())
        await self._write({"id": uuid.uuid4().hex, "sync": True})

    def _open_sync(self) -> None:
        # The producer asks for the metadata: an admin client (three more librdkafka threads) is
        # made only to create the topic, once per account.
        producer = Producer({**self._producer_config, **self._client_props(), "linger.ms": 0})
        try:
            # All topics: a request naming the topic may auto-create it with many partitions.
            meta = producer.list_topics(timeout=_PROBE_TIMEOUT).topics.get(self.topic)
        except KafkaException as e:
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            if err is not None and err.code() in _UNREACHABLE:
                raise CatalogueUnreachable(f"catalogue topic {self.topic}: {err.str()}", err) from e
            raise CatalogueUnavailable(f"catalogue topic {self.topic}: {e}") from e
        if meta is None or meta.error is not None:
            self._create_sync()
        elif len(meta.partitions) != 1:
            raise CatalogueUnavailable(
                f"catalogue topic {self.topic} has {len(meta.partitions)} partitions; claims are "
                "decided by their order in one partition: give catalogue.topic a new name"
            )
        self._producer = producer

    def _create_sync(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # noqa: PLC0415

        admin = AdminClient({**self._producer_config, **self._client_props()})
        new = NewTopic(self.topic, 1, self._replication, config=_TOPIC_CONFIG)
        try:
            admin.create_topics([new])[self.topic].result(_ADMIN_TIMEOUT)
        except KafkaException as e:
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            if err is None or err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise CatalogueUnavailable(
                    f"cannot create the catalogue topic {self.topic}: {e}; create it with one "
                    "partition or grant the connector CreateTopics on it"
                ) from e
        log.info("catalogue_topic_created", topic=self.topic)

    def _subscribe_sync(self) -> None:
        self._consumer = Consumer({**self._consumer_config, **self._client_props()})
        self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])

    async def close(self) -> None:
        self._stopping = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        loop = asyncio.get_running_loop()
        if self._consumer is not None:
            await loop.run_in_executor(self._reader, self._consumer.close)
            self._consumer = None
        if self._producer is not None:
            await loop.run_in_executor(self._writer, self._producer.flush, 5.0)
            self._producer = None
        self._reader.shutdown(wait=False)
        self._writer.shutdown(wait=False)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(CatalogueUnavailable("the connector is stopping"))

    # ----- claims -------------------------------------------------------------------------------

    async def claim(self, names: Names, *, seed: bool = False) -> Refusal | None:
        """Write a claim for ``names`` and wait until it is read back: None if the log granted
        it, else the refusal (raises ``CatalogueUnavailable`` after ``timeout``)."""
        return await self._write({"id": uuid.uuid4().hex, "seed": seed, **names.as_json()})

    async def _write(self, claim: dict[str, Any]) -> Refusal | None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Refusal | None] = loop.create_future()
        self._waiting[claim["id"]] = fut
        try:
            async with asyncio.timeout(self._timeout):
                await loop.run_in_executor(self._writer, self._produce_sync, orjson.dumps(claim))
                return await fut
        except TimeoutError as e:
            raise CatalogueUnavailable(
                f"a claim on the catalogue topic {self.topic} was not read back within "
                f"{self._timeout:g} s (catalogue.claim_timeout_seconds)"
            ) from e
        finally:
            self._waiting.pop(claim["id"], None)

    def _produce_sync(self, value: bytes) -> None:
        assert self._producer is not None
        failed: list[KafkaError] = []

        def done(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(err)

        self._producer.produce(self.topic, value=value, partition=0, on_delivery=done)
        if self._producer.flush(self._timeout) or failed:
            why = failed[0].str() if failed else "no delivery report in time"
            raise CatalogueUnavailable(f"cannot write to the catalogue topic {self.topic}: {why}")

    # ----- reading ------------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                msgs = await loop.run_in_executor(self._reader, self._read_sync)
            except KafkaException as e:  # pragma: no cover - a closed consumer at shutdown
                log.warning("catalogue_read_failed", topic=self.topic, error=str(e))
                continue
            changed = False
            for msg in msgs:
                changed |= self._apply(msg)
            if changed:
                self._on_change()

    def _read_sync(self) -> list[Message]:
        """What the log has now: returns as soon as one message arrives (``consume`` with a
        count waits for the whole count or the timeout), with whatever else is already here."""
        assert self._consumer is not None
        msgs = self._consumer.consume(1, _READ_TIMEOUT)
        return msgs + self._consumer.consume(_READ_BATCH, 0) if msgs else msgs

    def _apply(self, msg: Message) -> bool:
        """One message of the log; whether it changed the catalogue."""
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("catalogue_read_error", topic=self.topic, error=err.str())
            return False
        self.claims_read += 1
        try:
            claim = orjson.loads(msg.value() or b"")
            names = None if claim.get("sync") else Names.from_json(claim)
        except (orjson.JSONDecodeError, ValueError, AttributeError) as e:
            log.warning("catalogue_claim_unreadable", offset=msg.offset(), error=str(e))
            return False
        verdict = None
        before = self.catalogue.sizes()
        if names is not None:
            verdict = self.catalogue.apply(names, seed=bool(claim.get("seed")))
        fut = self._waiting.get(claim.get("id", ""))
        if fut is not None and not fut.done():
            fut.set_result(verdict)
        return self.catalogue.sizes() != before
