"""Wiring and the run loop: consume → decode → transform → validate → batch → send → commit.

The loop, in order, each turn:
  1. consume a batch of messages (on the Kafka thread; rebalance callbacks may run there);
  2. turn each into elements and hand them to delivery lanes, tracking the record in the ledger;
  3. close batches whose linger time has passed;
  4. commit the ledger's watermarks (only records whose every element got a 200) every interval;
  5. pause all partitions while too much is buffered; resume once half of it has drained.
Shutdown (SIGTERM/SIGINT, bad input under ``fail``, or a fatal API answer): stop consuming, flush,
wait up to the grace period for in-flight requests, commit, close the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Coroutine
from typing import Any, cast

import aiohttp
import structlog
from aiohttp import web
from confluent_kafka import KafkaError, Message

from connector.batching import ENVELOPE_BYTES, Batch, Cost, ElementTooLarge, encode
from connector.config import Credentials, Settings
from connector.deadletter import DeadLetterWriter, producer_config
from connector.elements import Element
from connector.errors import (
    BadRecordError,
    ConfigError,
    ConnectorError,
    DecodeError,
    RecordRef,
    SchemaRegistryAuthError,
    SchemaRegistryError,
    ValidationError,
    unexpected,
)
from connector.observability.health import (
    HealthState,
    fatal_reason,
    start_observability_server,
)
from connector.observability.metrics import Metrics
from connector.offsets import OffsetLedger, Slot, TopicPartitionKey
from connector.pipeline import (
    ExitCode,
    RunStats,
    TopicPipeline,
    build_pipelines,
    build_validator,
    element_cost,
    message_coordinates,
    open_delivered_log,
    record_from_message,
)
from connector.ratelimit import Budget
from connector.sink.client import MoEngageClient
from connector.sink.delivery import Delivery, RetryPolicy
from connector.source.consumer import KafkaSource
from connector.transforms import Record

log = structlog.get_logger(__name__)

# Each stops the connector cleanly; a second one during the drain ends the grace period.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Connector:
    """One instance of the service: owns the consumer, the lanes, the ledger and the loop."""

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        *,
        session: aiohttp.ClientSession | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self._credentials = credentials
        self._session = session
        self.pipelines = build_pipelines(settings)
        self.validator = build_validator(settings)
        self.topic_specs = {t.name: t for t in settings.topics}
        self.dlq: DeadLetterWriter | None = None
        if any(t.error_policy == "dlq" for t in settings.topics):
            self.dlq = DeadLetterWriter(producer_config(settings.librdkafka_config()))
        self.ledger = OffsetLedger()
        self.stats = RunStats()
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal: end the shutdown's grace period now
        self.failure: ConnectorError | None = None
        self.exit_code = ExitCode.OK
        self._closing = False
        self.delivery: Delivery | None = None
        self.source: KafkaSource | None = None
        self.budget: Budget | None = None
        self._last_fetch: asyncio.Task[list[Message]] | None = None
        self.metrics = metrics or Metrics()
        self.health = HealthState(now=time.monotonic())  # the loop's clock on asyncio's loops
        self.observability_port: int | None = None
        self.delivered_log = open_delivered_log(settings)
        # Read once per record: plain attributes, not lookups through the settings models.
        self._dlq_topics = frozenset(t.name for t in settings.topics if t.error_policy == "dlq")
        self._device_cost = settings.moengage.device_cost
        self._max_element_bytes = settings.moengage.max_request_bytes - ENVELOPE_BYTES
        self._consumed: dict[TopicPartitionKey, int] = {}  # records read since the last publish

    # ----- lifecycle ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

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
        self._stop.set()

    async def run(self) -> int:
        runner = await self._start_observability()
        try:
            code = await self._run()
            linger = self.settings.observability.fatal_linger_seconds
            if code != ExitCode.OK and runner is not None and linger > 0:
                # Let an orchestrator (or a person) read the reason from /readyz before exiting.
                log.info("fatal_linger", seconds=linger, port=self.observability_port)
                await self._linger(linger)
            return code
        finally:
            if runner is not None:
                await runner.cleanup()
            if self.delivered_log is not None:
                self.delivered_log.close()

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

    async def _dead_letters(self) -> None:
        """Until every dead-letter write is confirmed, serving reports in short slices so the
        loop (and a second stop signal) is never blocked for long."""
        assert self.dlq is not None
        # librdkafka signals nothing to asyncio: its reports are served by flush itself.
        while self.dlq.flush(0.05):  # noqa: ASYNC110
            await asyncio.sleep(0)

    async def _linger(self, seconds: float) -> None:
        """Wait ``seconds``, or less if SIGTERM/SIGINT come first: the exit code stays the
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
        """/metrics, /healthz, /readyz on the configured port, in this event loop."""
        o = self.settings.observability
        if not o.enabled:
            return None
        try:
            runner, self.observability_port = await start_observability_server(
                self.metrics,
                self.health,
                o.host,
                o.port,
                max_silence_s=o.liveness_max_silence_seconds,
            )
        except OSError as e:
            problem = f"cannot listen on {o.host}:{o.port}: {e.strerror or e}"
            raise ConfigError([("observability.port", problem)]) from None
        log.info("observability_listening", host=o.host, port=self.observability_port)
        return runner

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        own_session = self._session is None
        session = self._session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.moengage.max_in_flight * 2)
        )
        m = self.settings.moengage
        client = MoEngageClient(
            session,
            m.endpoint,
            self._credentials.workspace_id,
            self._credentials.api_key,
            m.request_timeout_seconds,
        )
        self.budget = Budget(
            m.users_per_minute,
            m.events_per_minute,
            loop.time(),
            window=m.rate_window_seconds,
            share=m.rate_share or 1.0,
        )
        self.delivery = self.make_delivery(client, self.budget)
        self.source = KafkaSource(
            self.settings.librdkafka_config(),
            [t.name for t in self.settings.topics],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("connector_starting", endpoint=client.url, topics=list(self.pipelines))
        self.delivery.start()
        try:
            await self.source.start()
            await self._loop()
            await self._shutdown()
        finally:
            await self.delivery.stop()
            if own_session:
                await session.close()
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
        return int(self.exit_code)

    async def _loop(self) -> None:
        assert self.source is not None
        assert self.delivery is not None
        p = self.settings.pipeline
        linger = self.settings.moengage.linger_ms / 1000
        commit_every = p.commit_interval_ms / 1000
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + commit_every
        source = self.source

        def fetch() -> asyncio.Task[list[Message]]:
            return asyncio.create_task(
                source.consume(p.consume_batch_size, p.poll_timeout_ms / 1000)
            )

        # The Kafka thread fetches the next batch while this one is processed (make bench: the
        # loop and the consumer took turns). A prefetched batch left over at shutdown is never
        # tracked, so its records are not committed and are read again on the next start.
        pending = fetch()
        # Batches close on time even while the loop waits for the consumer (up to the poll
        # timeout plus the broker's fetch wait): at a low input rate that wait was added to the
        # linger of every batch (make bench: p99 543 ms with a 200 ms linger).
        clock = asyncio.create_task(self._linger_clock(linger)) if linger > 0 else None
        try:
            await self._turns(pending, fetch, linger, commit_every, next_commit)
        finally:
            if clock is not None:
                clock.cancel()
            last = self._last_fetch or pending
            if not last.done():
                await asyncio.wait([last])

    async def _linger_clock(self, linger: float) -> None:
        """Close each lane's open batch when its linger time is up."""
        assert self.delivery is not None
        delivery = self.delivery
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
        linger: float,
        commit_every: float,
        next_commit: float,
    ) -> None:
        """The run loop's turns (see the module docstring); ``pending`` is the prefetch."""
        assert self.source is not None
        assert self.delivery is not None
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            msgs = await pending
            pending = self._last_fetch = fetch()
            now = loop.time()
            self.health.alive_tick(now)
            for msg in msgs:
                if self._stop.is_set():
                    break
                await self._handle(msg, now)
            self._publish_consumed()
            if self.dlq is not None:
                self.dlq.poll()
            self.delivery.flush_lingering(loop.time(), linger)
            self.health.set_api_problem(self.delivery.api_problem())
            if self.delivery.fatal is not None:
                self._fail(self.delivery.fatal, ExitCode.FATAL_API)
                break
            if self.delivery.crashed is not None:
                crash = self.delivery.crashed
                self._fail(ConnectorError(f"delivery failed: {crash!r}"), ExitCode.UNEXPECTED)
                break
            if loop.time() >= next_commit:
                await self.commit()
                self.metrics.coalesced(*self.delivery.coalesced())
                for (topic, partition), lag in (await self.source.lags()).items():
                    self.metrics.set_lag(topic, partition, lag)
                next_commit = loop.time() + commit_every
            await self._backpressure()
            ledger = self.ledger
            self.metrics.set_buffer(
                ledger.buffered_records, ledger.buffered_bytes, len(self.source.paused)
            )

    async def _shutdown(self) -> None:
        assert self.source is not None
        assert self.delivery is not None
        grace = self.settings.pipeline.shutdown_grace_seconds
        log.info(
            "connector_stopping",
            reason=str(self.failure) if self.failure else "signal",
            pending_records=self.ledger.pending_records(),
        )
        if self.exit_code != ExitCode.FATAL_API:
            self.delivery.flush_all()
            self.delivery.stopping()  # backoffs end now; requests in flight get the grace
            if not await self._until_or_hurried(self.delivery.wait_idle(), grace):
                log.warning(
                    "shutdown_grace_exceeded" if not self._hurry.is_set() else "shutdown_hurried",
                    grace_s=grace,
                    undelivered_records=self.ledger.pending_records(),
                    note="these records are not committed and will be read again",
                )
            if self.delivery.fatal is not None:
                self._fail(self.delivery.fatal, ExitCode.FATAL_API)
        if self.dlq is not None and not await self._until_or_hurried(self._dead_letters(), grace):
            log.warning("dead_letter_unconfirmed", note="those records are not committed")
        await self.commit()
        self._closing = True
        await self.source.close()
        st, ds = self.stats, self.delivery.stats
        events_merged, updates_merged = self.delivery.coalesced()
        self.metrics.coalesced(events_merged, updates_merged)
        summary = {
            "records": st.records,
            "elements": st.elements,
            "filtered": st.filtered,
            "bad_records": st.bad_records,
            "skipped": st.skipped,
            "dead_lettered": st.dead_lettered,
            "requests": ds.requests,
            "bytes_sent": ds.bytes_sent,
            "retries": ds.retries,
            "throttled": ds.throttled,
            "coalesced_events": events_merged,
            "coalesced_updates": updates_merged,
        }
        if self.failure is not None:
            log.error(
                "connector_stopped",
                reason=str(self.failure),
                exit_code=int(self.exit_code),
                **summary,
            )
        else:
            log.info("connector_stopped", exit_code=0, **summary)

    # ----- per message --------------------------------------------------------------------------

    async def _handle(self, msg: Message, now: float) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume_error", error=err.str(), fatal=err.fatal())
                if err.fatal():
                    self._fail(ConnectorError(f"Kafka: {err.str()}"), ExitCode.KAFKA)
            return
        topic, partition, offset = message_coordinates(msg)
        key = (topic, partition)
        tracker = self.ledger.tracker(key)
        if tracker is None:  # revoked while this batch was in flight: the new owner reads it
            return
        raw = msg.value()
        slot = tracker.track(offset, len(raw) if raw else 0)
        self.stats.records += 1
        consumed = self._consumed
        consumed[key] = consumed.get(key, 0) + 1
        if topic in self._dlq_topics:
            slot.msg = msg  # an element MoEngage rejects later is dead-lettered as this record
        pipe = self.pipelines[topic]
        try:
            try:
                value = pipe.decoder(raw)
            except SchemaRegistryError as e:
                value = await self._decode_retrying(pipe, raw, e)
            except BadRecordError:
                raise
            except Exception as e:  # no record may crash the connector: it is bad input
                raise unexpected(DecodeError, "decode.unexpected", "the decoder", e) from e
            encoded = self._elements(record_from_message(msg, value), pipe)
        except BadRecordError as e:
            self._bad_record(slot, e.at(RecordRef(topic, partition, offset)), msg)
            return
        except SchemaRegistryError:
            return  # the connector is stopping; this record keeps its hold and is not committed
        if not encoded:
            self.stats.filtered += 1
        assert self.delivery is not None
        add = self.delivery.add
        for data, cost, customer, element in encoded:
            add(data, slot, cost, customer, now, element=element)
        self.stats.elements += len(encoded)
        slot.release()

    def _elements(
        self, record: Record, pipe: TopicPipeline
    ) -> list[tuple[bytes, Cost, str, Element]]:
        """Transform, validate and encode one record; raise BadRecordError if it can't be."""
        validate, customer_key = self.validator.validate, self.validator.customer_key
        out = []
        for produced in pipe.transform(record):
            try:
                element = validate(produced)
                data = encode(element)
                if len(data) > self._max_element_bytes:
                    assert self.delivery is not None
                    try:
                        self.delivery.check_fits_alone(data)
                    except ElementTooLarge as e:
                        raise ValidationError(str(e), rule="element.too_large") from None
                cost, customer = element_cost(element, self._device_cost), customer_key(element)
            except BadRecordError:
                raise
            except Exception as e:  # junk that slipped past the rules: bad input, never a crash
                raise unexpected(
                    ValidationError, "element.unexpected", "validating or encoding an element", e
                ) from e
            out.append((data, cost, customer, element))
        return out

    def _publish_consumed(self) -> None:
        """Records read since the last call, per partition, into the metrics (once per batch:
        a Prometheus counter takes a lock per increment)."""
        for (topic, partition), n in self._consumed.items():
            self.metrics.record_consumed(topic, partition, n)
        self._consumed.clear()

    async def _decode_retrying(
        self, pipe: TopicPipeline, raw: bytes | None, error: Exception
    ) -> Any:
        """The Schema Registry failed for this record: retry about 30 s (1 + 2 + 4 + 8 + 16),
        then stop the connector (exit 5); refused credentials stop it at once (exit 2)."""
        delay = 1.0
        for attempt in range(1, 7):
            if isinstance(error, SchemaRegistryAuthError):
                self._fail(error, ExitCode.CONFIG)  # the same credentials would be refused again
                raise error
            if attempt == 6:
                assert isinstance(error, SchemaRegistryError)
                self._fail(error, ExitCode.SCHEMA_REGISTRY)
                raise error  # not bad input: the record is fine, the registry is not
            log.warning("schema_registry_retry", error=str(error), delay_s=delay)
            await asyncio.sleep(delay)
            delay *= 2
            try:
                return pipe.decoder(raw)
            except SchemaRegistryError as e:
                error = e
        raise AssertionError("unreachable")  # pragma: no cover

    def _bad_record(self, slot: Slot, error: BadRecordError, msg: Message | None) -> None:
        """Route bad input per its topic's policy. ``slot`` holds one count for this failure
        (the record's hold, or the element MoEngage rejected); it is released only by ``skip``
        or by a confirmed dead-letter write, never under ``fail``."""
        ref = error.ref
        assert ref is not None
        spec = self.topic_specs[ref.topic]
        policy = spec.error_policy
        self.stats.bad_records += 1
        self.metrics.bad_record(ref.topic, error.stage, error.rule)
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
        if self.settings.logging.log_record_contents and message is not None:
            fields["value"] = repr((message.value() or b"")[:1024])
        (log.error if policy == "fail" else log.warning)("bad_record", **fields)
        if policy == "fail":
            self._fail(error, ExitCode.BAD_RECORD)  # the count is never released
            return
        if policy == "skip" or slot.dead_lettered:
            # skip: counted and logged; a second rejected element of a record already being
            # dead-lettered: that write (which holds its own count) covers the whole record.
            self.stats.skipped += policy == "skip"
            slot.ack()
            return
        assert self.dlq is not None
        assert spec.dead_letter_topic is not None
        assert message is not None
        slot.dead_lettered = True
        dlq_topic = spec.dead_letter_topic

        def confirmed(err: KafkaError | None) -> None:
            if err is None:
                self.stats.dead_lettered += 1
                self.metrics.dead_lettered(ref.topic, error.stage)
                slot.ack()  # only now may the record's offset be committed
                return
            log.error(
                "dead_letter_failed", dead_letter_topic=dlq_topic, write_error=err.str(), **fields
            )
            self._fail(
                ConnectorError(f"dead-letter write to {dlq_topic} failed: {err.str()}"),
                ExitCode.DEAD_LETTER,
            )

        self.dlq.send(dlq_topic, message, error, confirmed)

    def _accepted(self, batch: Batch) -> None:
        """A 200: its customer elements go to the delivered log for 'verify' (one write)."""
        assert self.delivered_log is not None
        self.delivered_log.append_elements(
            [p for p, kind in zip(batch.parts, batch.kinds, strict=True) if kind == "customer"]
        )

    def _rejected_by_api(self, slot: Slot, error: BadRecordError) -> None:
        topic, partition = slot.owner.key
        if not slot.owner.active:
            return  # revoked meanwhile: the new owner re-reads and judges the record itself
        self._bad_record(slot, error.at(RecordRef(topic, partition, slot.offset)), None)

    # ----- committing and backpressure ----------------------------------------------------------

    async def commit(self) -> None:
        """Commit every partition's watermark that moved: only delivered records are behind it."""
        assert self.source is not None
        offsets = self.ledger.committable()
        if not offsets:
            return
        started = time.perf_counter()
        done = await self.source.commit(offsets)
        self.metrics.committed(done, time.perf_counter() - started)
        for key, offset in done.items():
            self.ledger.mark_committed(key, offset)
            self.stats.committed[key] = offset
        self.stats.commits += 1

    async def _backpressure(self) -> None:
        assert self.source is not None
        p = self.settings.pipeline
        ledger = self.ledger
        full = (
            ledger.buffered_records >= p.max_buffered_records
            or ledger.buffered_bytes >= p.max_buffered_bytes
        )
        if self.source.fresh:
            await self.source.settle_fresh(pause=full)
        if full:
            assert self.delivery is not None
            self.delivery.flush_all()  # a paused stream must not wait for linger
            await self.source.pause(self.source.assignment)
        elif self.source.paused and (
            ledger.buffered_records < p.max_buffered_records // 2
            and ledger.buffered_bytes < p.max_buffered_bytes // 2
        ):
            await self.source.resume(list(self.source.paused))

    def make_delivery(self, client: MoEngageClient, budget: Budget) -> Delivery:
        """The lanes between the batches and MoEngage, as the settings describe them."""
        m = self.settings.moengage
        return Delivery(
            client,
            budget,
            lanes=m.max_in_flight,
            max_request_bytes=m.max_request_bytes,
            retry=RetryPolicy(
                m.retry_initial_ms / 1000,
                m.retry_max_ms / 1000,
                retry_after_cap=m.max_retry_after_seconds,
                unexpected_for=m.unexpected_answer_max_seconds,
            ),
            unready_after=m.unready_after_seconds,
            on_rejected=self._rejected_by_api,
            coalesce=m.coalesce,
            metrics=self.metrics,
            on_accepted=self._accepted if self.delivered_log is not None else None,
        )

    # ----- rebalance hooks (run on the loop, called from the Kafka thread) ----------------------

    def _update_share(self, owned: int) -> None:
        """This instance's part of the account budget: its partitions out of all of them."""
        assert self.source is not None
        total = self.source.total_partitions
        if self.settings.moengage.rate_share is not None or not total or self.budget is None:
            return
        self.budget.set_share(owned / total, asyncio.get_running_loop().time())
        log.info(
            "budget_share",
            owned_partitions=owned,
            total_partitions=total,
            share=round(self.budget.share, 4),
            users_per_window=self.budget.max_users,
            events_per_window=self.budget.max_events,
        )

    async def _on_assign(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        self.ledger.assign(keys)
        assert self.source is not None
        self._update_share(len(self.source.assignment))
        self.health.set_assigned(len(self.source.assignment))
        return {}

    async def _on_revoke(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Give in-flight work for these partitions a bounded time, then hand back watermarks."""
        if not self._closing and self.delivery is not None and self.delivery.fatal is None:
            self.delivery.flush_all()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + min(10.0, self.settings.pipeline.shutdown_grace_seconds)
            while self.ledger.pending_records(keys) and loop.time() < deadline:
                self.delivery.progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.delivery.progress.wait(), deadline - loop.time())
        final = self.ledger.revoke(keys)
        if self.source is not None:
            self._update_share(len(self.source.assignment - set(keys)))
        self._partitions_gone(keys)
        return final

    async def _on_lost(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        self.ledger.revoke(keys)  # lost: the group moved on; committing would be stale
        self._partitions_gone(keys)
        return {}

    def _partitions_gone(self, keys: list[TopicPartitionKey]) -> None:
        assert self.source is not None
        self.health.set_assigned(len(self.source.assignment - set(keys)))
        self.metrics.forget_partitions(keys)
