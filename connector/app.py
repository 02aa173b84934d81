"""The connector: builds every part from the settings, runs the loop, handles signals and shutdown.

A record flows one way through the parts:

    source (consumer.py) → checkpoint.track (checkpoint.py) → processor (processing.py)
      → catalogue guard (catalogue/; a record with new names awaits its claim)
      → delivery lanes (sink/delivery.py) → 200: slot acknowledged → checkpoint.commit
                    └→ bad input (badinput.py): fail / skip / dead-letter, then acknowledged

Each turn of the loop: take the batch the Kafka thread fetched (and start fetching the next);
hand each message through the checkpoint and the processor to delivery or bad-input routing;
commit the checkpoint every ``commit_interval_ms``; apply backpressure. A clean stop (a signal,
bad input under ``fail``, a fatal answer): stop consuming, send what is buffered, wait up to the
grace period for requests in flight (a second signal ends the wait), commit, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from confluent_kafka import KafkaError, Message

from connector.badinput import BadInputRouter
from connector.batching import Batch
from connector.catalogue.guard import CatalogueUnavailable, CatalogueUnreachable, make_guard
from connector.catalogue.rule import Names
from connector.checkpoint import Checkpoint, Committer
from connector.config import Credentials, Settings
from connector.credcheck import check_credentials
from connector.errors import (
    BadRecordError,
    ConfigError,
    ConnectorError,
    ExitCode,
    FatalApiError,
    SchemaRegistryAuthError,
    SchemaRegistryError,
)
from connector.flow import Backpressure, BudgetShare, take_all
from connector.observability.health import HealthState, fatal_reason, serve_observability
from connector.observability.kafkalog import BrokerWatch, kafka_logging
from connector.observability.metrics import Metrics
from connector.offsets import Slot, TopicPartitionKey
from connector.processing import Prepared, RecordProcessor, message_ref
from connector.proof.delivered import open_delivered_log
from connector.ratelimit import Budget
from connector.sink.client import MoEngageClient
from connector.sink.delivery import make_delivery
from connector.source.consumer import KafkaSource

log = structlog.get_logger(__name__)
_UNREACHABLE_RETRY_SECONDS = 5.0  # between attempts to open the claims log while Kafka is out

# Each stops the connector cleanly; a second one during the drain ends the grace period.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
REVOKE_DRAIN_SECONDS = 10.0  # at most, for in-flight work of partitions being revoked


class Connector:
    """One instance of the service. Build it inside a running event loop: every part is made
    here, whole, from the settings (nothing connects before :meth:`run`)."""

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        *,
        session: aiohttp.ClientSession | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.settings = settings
        self._credentials = credentials
        m, p = settings.moengage, settings.pipeline
        self.metrics = metrics or Metrics()
        self.health = HealthState(now=loop.time())
        self.processor = RecordProcessor(settings, on_policy=self.metrics.policy)
        kafka = settings.librdkafka_config()
        watch = BrokerWatch(kafka["bootstrap.servers"], settings.logging.repeat_interval_seconds)
        self.catalogue = make_guard(
            settings,
            credentials.workspace_id,
            self.metrics,
            lambda: {**kafka_logging(settings, watch), "error_cb": watch.on_error},
        )
        self.source = KafkaSource(
            {**kafka, **kafka_logging(settings, watch)},
            [t.name for t in settings.topics],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
            watch=watch,
        )
        self.checkpoint = Checkpoint(self.source, self.metrics)
        soon = p.commit_after_accept_ms
        self.committer = Committer(
            self.checkpoint, (p.commit_interval_ms if soon is None else soon) / 1000
        )
        self._commit_soon = soon is not None
        self.router = BadInputRouter(settings, self.metrics, self._fail)
        self._dlq_topics = self.router.dlq_topics  # the topics whose records keep their message
        self.budget = Budget(
            m.users_per_minute,
            m.events_per_minute,
            loop.time(),
            window=m.rate_window_seconds,
            share=m.rate_share or 1.0,
        )
        self.share = BudgetShare(self.budget, self.source, m.rate_share)
        self.delivered_log = open_delivered_log(settings)
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=m.max_in_flight * 2)
        )
        self.client = MoEngageClient(
            self._session,
            m.endpoint,
            credentials.workspace_id,
            credentials.api_key,
            m.request_timeout_seconds,
        )
        self.delivery = make_delivery(
            settings,
            self.client,
            self.budget,
            metrics=self.metrics,
            on_rejected=self.router.rejected_by_api,
            on_accepted=self._accepted,
        )
        self._stop = asyncio.Event()
        self.backpressure = Backpressure(
            self.source, self.checkpoint.ledger, p, self.delivery, self._stop
        )
        self.failure: ConnectorError | None = None
        self.exit_code = ExitCode.OK
        self.observability_port: int | None = None
        self._hurry = asyncio.Event()  # a second signal: end the shutdown's grace period now
        self._closing = False
        # Counted per record, published to the metrics once per batch (see _publish_consumed).
        self._consumed: dict[TopicPartitionKey, int] = {}
        self._elements = self._filtered = 0
        self._linger = m.linger_ms / 1000

    def _accepted(self, batch: Batch) -> None:
        """A request was accepted: its records are committed soon (never awaited here)."""
        if self._commit_soon:
            self.committer.poke()
        if self.delivered_log is not None:
            self.delivered_log.accepted(batch)

    # ----- lifecycle ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()
        self.delivery.progress.set()  # a wait for room (backpressure) re-checks and sees the stop

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _on_signal(self, sig: signal.Signals) -> None:
        """The first SIGTERM, SIGINT or SIGHUP stops the connector cleanly (drain within the
        grace period, commit, close); another one during that drain cuts the grace period short:
        what is answered by then is committed, the rest is read again on the next start."""
        if not self._stop.is_set():
            log.info("stop_requested", signal=sig.name)
            self.request_stop()
        elif not self._hurry.is_set():
            log.warning("stop_hurried", signal=sig.name, note="not waiting for the grace period")
            self._hurry.set()

    def _fail(self, error: ConnectorError, code: ExitCode) -> None:
        if self.failure is None:
            self.failure = error
            self.exit_code = code
            self.health.set_fatal(fatal_reason(error))
        self.request_stop()

    async def run(self) -> int:
        try:
            runner = await self._start_observability()
            try:
                code = await self._run()
                linger = self.settings.observability.fatal_linger_seconds
                if code != ExitCode.OK and runner is not None and linger > 0:
                    # Let an orchestrator (or a person) read the reason from /readyz first.
                    log.info("fatal_linger", seconds=linger, port=self.observability_port)
                    await self._fatal_linger(linger)
                return code
            finally:
                if runner is not None:
                    await runner.cleanup()
        finally:
            await self.close()

    async def close(self) -> None:
        """Release what the constructor opened (the HTTP session, the delivered log): after
        :meth:`run`, or instead of it."""
        if self.delivered_log is not None:
            self.delivered_log.close()
        if self._own_session and not self._session.closed:
            await self._session.close()

    async def _fatal_linger(self, seconds: float) -> None:
        """Wait ``seconds``, or less if a stop signal comes first: the exit code stays the
        failure's (an orchestrator stopping the Pod sees 3, not a death by signal)."""
        loop = asyncio.get_running_loop()
        cut_short = asyncio.Event()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, cut_short.set)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cut_short.wait(), seconds)
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    async def _start_observability(self) -> web.AppRunner | None:
        o = self.settings.observability
        if not o.enabled:
            return None
        runner, self.observability_port = await serve_observability(self.metrics, self.health, o)
        return runner

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        log.info(
            "connector_starting", endpoint=self.client.url, topics=list(self.processor.pipelines)
        )
        self.delivery.start()
        try:
            started = await self._credentials_accepted()
            if started:
                # The group join (seconds: brokers hold a new group's first join for
                # group.initial.rebalance.delay.ms) runs while the Schema Registry client is
                # built and the claims log is read: the first record is taken only once all are
                # done, so nothing is read or committed before.
                await self.source.start()
                started = self._processor_opened() and await self._catalogue_started()
            if not started:
                await self.source.close()  # nothing read, nothing to commit: leave the group
                return int(self.exit_code)
            await self._loop()
            await self._shutdown()
        finally:
            await self.delivery.stop()
            await self.catalogue.close()
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
        return int(self.exit_code)

    def _processor_opened(self) -> bool:
        """:meth:`RecordProcessor.open`; False (exit 2) if the registry client refuses its
        ``schema_registry.properties``."""
        try:
            self.processor.open()
        except ConfigError as e:
            self._stopped_at_start(e, ExitCode.CONFIG)
            return False
        return True

    def _stopped_at_start(self, error: ConnectorError, code: ExitCode) -> None:
        """A start-up step failed before any record was read: say why, and stop with ``code``."""
        log.error("connector_stopped", reason=str(error), exit_code=int(code))
        self._fail(error, code)

    async def _credentials_accepted(self) -> bool:
        """The start-up check (``connector/credcheck.py``) before the consumer subscribes:
        False if MoEngage refused the credentials (exit 3) or a stop signal came first."""
        if self.settings.moengage.startup_check_seconds <= 0:
            return True
        check = asyncio.ensure_future(
            check_credentials(self._session, self.settings, self._credentials)
        )
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({check, stop}, return_when=FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not check.done():
                check.cancel()
            await asyncio.gather(check, stop, return_exceptions=True)
        if check.cancelled():
            log.info("connector_stopped", exit_code=int(self.exit_code), note="before start")
            return False
        error = check.exception()
        if isinstance(error, FatalApiError):
            self._fail(error, ExitCode.FATAL_API)
            log.error(
                "connector_stopped",
                reason=str(error),
                exit_code=int(self.exit_code),
                note="before any record was read",
            )
            return False
        if error is not None:
            raise error
        return True

    # ----- the loop -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        p = self.settings.pipeline
        source = self.source

        def fetch() -> asyncio.Task[list[Message]]:
            return asyncio.create_task(
                source.consume(p.consume_batch_size, p.poll_timeout_ms / 1000)
            )

        # The Kafka thread fetches the next batch while this one is processed. A prefetched batch
        # left over at shutdown is never tracked: it is not committed and is read again.
        pending = fetch()
        # Batches close on time even while the loop waits for the consumer (at a low input rate
        # that wait was added to the linger of every batch).
        clock = asyncio.create_task(self._linger_clock()) if self._linger > 0 else None
        committer = asyncio.create_task(self.committer.run())
        committer.add_done_callback(self._committer_ended)
        try:
            pending = await self._turns(pending, fetch)
        finally:
            if clock is not None:
                clock.cancel()
            committer.cancel()  # the shutdown commits last, after any commit under way
            await asyncio.gather(committer, return_exceptions=True)
            if not pending.done():
                await asyncio.wait([pending])

    def _committer_ended(self, task: asyncio.Task[None]) -> None:
        """The committer only ends when cancelled; anything else is a bug: stop loudly."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("committer_crashed", error=repr(error))
        self._fail(ConnectorError(f"committing failed: {error!r}"), ExitCode.UNEXPECTED)

    async def _linger_clock(self) -> None:
        """Close each lane's open batch when its linger time is up."""
        delivery, linger = self.delivery, self._linger
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            now = loop.time()
            delivery.flush_lingering(now, linger)
            due = delivery.next_linger_due(linger)
            await asyncio.sleep(linger if due is None else max(0.001, due - now))

    async def _turns(
        self,
        pending: asyncio.Task[list[Message]],
        fetch: Callable[[], asyncio.Task[list[Message]]],
    ) -> asyncio.Task[list[Message]]:
        """Turns of the loop until a stop; returns the fetch still under way."""
        loop = asyncio.get_running_loop()
        commit_every = self.settings.pipeline.commit_interval_ms / 1000
        next_commit = loop.time() + commit_every
        delivery, checkpoint = self.delivery, self.checkpoint
        while not self._stop.is_set():
            msgs = await pending
            fetched_at = checkpoint.epoch  # the assignment these messages were fetched under
            pending = fetch()
            now = loop.time()
            self.health.alive_tick(now)
            self.health.set_kafka_problem(self.source.watch.problem)
            await take_all(
                msgs, self.take, fetched_at, now, stopped=self._stop.is_set, clock=loop.time
            )
            self._publish_consumed()
            self.router.poll()
            delivery.flush_lingering(loop.time(), self._linger)
            self.health.set_api_problem(delivery.api_problem())
            if delivery.fatal is not None:
                self._fail(delivery.fatal, ExitCode.FATAL_API)
                break
            if delivery.crashed is not None:
                crash = delivery.crashed
                self._fail(ConnectorError(f"delivery failed: {crash!r}"), ExitCode.UNEXPECTED)
                break
            if loop.time() >= next_commit:
                self.committer.poke()  # dead-letter confirmations, filtered records
                self.share.update(len(self.source.assignment), loop.time())
                self.metrics.coalesced(*delivery.coalesced())
                for (topic, partition), lag in (await self.source.lags()).items():
                    self.metrics.set_lag(topic, partition, lag)
                next_commit = loop.time() + commit_every
            await self.backpressure.apply()
            ledger = checkpoint.ledger
            self.metrics.set_buffer(
                ledger.buffered_records, ledger.buffered_bytes, len(self.source.paused)
            )
        return pending

    def take(self, msg: Message, fetched_at: int, now: float) -> Coroutine[Any, Any, None] | None:
        """One consumed message, fetched at checkpoint epoch ``fetched_at``: tracked by the
        checkpoint, turned into elements by the processor, then handed to delivery (or, when it
        is bad input, to the bad-input router). Returns None once that is done, or, when the
        Schema Registry cannot be reached, a coroutine that finishes it (the loop awaits it)."""
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume_error", error=err.str(), fatal=err.fatal())
                if err.fatal():
                    self._fail(ConnectorError(f"Kafka: {err.str()}"), ExitCode.KAFKA)
            return None
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        raw = msg.value()
        key: TopicPartitionKey = (topic, partition)  # type: ignore[assignment]
        slot = self.checkpoint.track(key, offset, len(raw) if raw else 0, fetched_at)  # type: ignore[arg-type]
        if slot is None:  # its assignment is over: whoever owns the partition reads it again
            return None
        consumed = self._consumed
        consumed[key] = consumed.get(key, 0) + 1
        if topic in self._dlq_topics:  # self.router.keeps_message(topic)
            slot.msg = msg  # an element MoEngage rejects later is dead-lettered as this record
        try:
            prepared = self.processor.prepare(msg, topic, partition, offset, raw)  # type: ignore[arg-type]
        except BadRecordError as e:
            self.router.route(slot, e, msg)
            return None
        except SchemaRegistryError as e:
            return self._after_registry(msg, slot, e, now)
        return self._admit(msg, slot, prepared, now)

    async def _after_registry(
        self, msg: Message, slot: Slot, error: SchemaRegistryError, now: float
    ) -> None:
        try:
            prepared = await self.processor.retry_registry(msg, error)
        except BadRecordError as e:
            self.router.route(slot, e, msg)
            return
        except SchemaRegistryAuthError as e:  # the same credentials would be refused again
            self._fail(e, ExitCode.CONFIG)
            return  # the record keeps its hold and is not committed
        except SchemaRegistryError as e:  # not bad input: the record is fine, the registry not
            self._fail(e, ExitCode.SCHEMA_REGISTRY)
            return
        claiming = self._admit(msg, slot, prepared, now)
        if claiming is not None:
            await claiming

    # ----- the catalogue guard (connector/catalogue/) -------------------------------------------

    async def _catalogue_started(self) -> bool:
        """Read the claims log to its end before the first record; False: the connector stops.
        While no broker answers, it waits (``/readyz`` and the log say so) until a stop signal."""
        while True:
            try:
                await self.catalogue.start()
            except CatalogueUnreachable as e:
                watch = self.source.watch
                watch.on_error(e.error)  # the one slow 'Kafka brokers unreachable' line
                self.health.set_kafka_problem(
                    watch.problem or f"Kafka brokers unreachable: {watch.bootstrap}"
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), _UNREACHABLE_RETRY_SECONDS)
                if self._stop.is_set():
                    log.info(
                        "connector_stopped", exit_code=int(self.exit_code), note="before start"
                    )
                    return False
                continue
            except ConnectorError as e:  # the claims topic cannot be used, or the seed file is bad
                self._stopped_at_start(
                    e, ExitCode.CONFIG if isinstance(e, ConfigError) else ExitCode.KAFKA
                )
                return False
            self.health.set_kafka_problem(None)
            return True

    def _admit(
        self, msg: Message, slot: Slot, prepared: list[Prepared], now: float
    ) -> Coroutine[Any, Any, None] | None:
        """The record's names past the catalogue guard, then :meth:`_hand_over`. Returns a
        coroutine (the loop awaits it) when the record brings names to claim first."""
        try:
            new = self.catalogue.admit(prepared)
        except BadRecordError as e:
            self.router.route(slot, e.at(message_ref(msg)), msg)
            return None
        if new is not None:
            return self._after_claim(msg, slot, prepared, new, now)
        self._hand_over(slot, prepared, now)
        return None

    async def _after_claim(
        self, msg: Message, slot: Slot, prepared: list[Prepared], new: Names, now: float
    ) -> None:
        try:
            await self.catalogue.claim(new)
        except BadRecordError as e:  # the log gave the last free names to an earlier claim
            self.router.route(slot, e.at(message_ref(msg)), msg)
            return
        except CatalogueUnavailable as e:  # the record keeps its hold and is not committed
            self._fail(e, ExitCode.KAFKA)
            return
        self._hand_over(slot, prepared, now)

    def _hand_over(self, slot: Slot, prepared: list[Prepared], now: float) -> None:
        """The record's elements to the delivery lanes; its hold released."""
        if prepared:
            self._elements += len(prepared)
            self.delivery.add_all(prepared, slot, now)
        else:
            self._filtered += 1
        slot.release()

    def _publish_consumed(self) -> None:
        """Records read since the last call, per partition, into the metrics (once per batch:
        a Prometheus counter takes a lock per increment)."""
        metrics = self.metrics
        for (topic, partition), n in self._consumed.items():
            metrics.record_consumed(topic, partition, n)
        self._consumed.clear()
        metrics.prepared(self._elements, self._filtered)
        self._elements = self._filtered = 0

    # ----- shutdown -----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        grace = self.settings.pipeline.shutdown_grace_seconds
        delivery = self.delivery
        log.info(
            "connector_stopping",
            reason=str(self.failure) if self.failure else "signal",
            pending_records=self.checkpoint.pending_records(),
        )
        if self.exit_code != ExitCode.FATAL_API:
            delivery.flush_all()
            delivery.stopping()  # backoffs end now; requests in flight get the grace
            if not await self._until_or_hurried(delivery.wait_idle(), grace):
                log.warning(
                    "shutdown_grace_exceeded" if not self._hurry.is_set() else "shutdown_hurried",
                    grace_s=grace,
                    undelivered_records=self.checkpoint.pending_records(),
                    note="these records are not committed and will be read again",
                )
            if delivery.fatal is not None:
                self._fail(delivery.fatal, ExitCode.FATAL_API)
        if not await self._until_or_hurried(self.router.drain(), grace):
            log.warning("dead_letter_unconfirmed", note="those records are not committed")
        await self.checkpoint.commit()
        self._closing = True
        await self.source.close()
        self.metrics.coalesced(*delivery.coalesced())
        summary = self.metrics.counts.as_dict()
        if self.failure is not None:
            log.error(
                "connector_stopped",
                reason=str(self.failure),
                exit_code=int(self.exit_code),
                **summary,
            )
        else:
            log.info("connector_stopped", exit_code=0, **summary)

    async def _until_or_hurried(self, work: Coroutine[Any, Any, None], seconds: float) -> bool:
        """Run ``work`` for at most ``seconds``, or until a second stop signal: whether it
        finished."""
        done_task = asyncio.ensure_future(work)
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait({done_task, hurry}, timeout=seconds, return_when=FIRST_COMPLETED)
        finally:
            for task in (done_task, hurry):
                task.cancel()
            await asyncio.gather(done_task, hurry, return_exceptions=True)
        return done_task.done() and not done_task.cancelled() and done_task.exception() is None

    # ----- rebalance hooks (run on the loop, called from the Kafka thread) ----------------------

    async def _on_assign(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        self.checkpoint.assigned(keys)
        owned = len(self.source.assignment)
        self.share.update(owned, asyncio.get_running_loop().time())
        self.health.set_assigned(owned)
        return {}

    async def _on_revoke(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Give in-flight work for these partitions a bounded time, then hand back watermarks."""
        delivery = self.delivery
        if not self._closing and delivery.fatal is None:
            delivery.flush_all()
            loop = asyncio.get_running_loop()
            grace = self.settings.pipeline.shutdown_grace_seconds
            deadline = loop.time() + min(REVOKE_DRAIN_SECONDS, grace)
            while self.checkpoint.pending_records(keys) and loop.time() < deadline:
                await delivery.next_answer(deadline - loop.time())
        final = self.checkpoint.revoked(keys)
        self._partitions_gone(keys)
        return final

    async def _on_lost(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        self.checkpoint.lost(keys)  # lost: the group moved on; committing would be stale
        self._partitions_gone(keys)
        return {}

    def _partitions_gone(self, keys: list[TopicPartitionKey]) -> None:
        owned = len(self.source.assignment - set(keys))
        self.share.update(owned, asyncio.get_running_loop().time())
        self.health.set_assigned(owned)
        self.metrics.forget_partitions(keys)
