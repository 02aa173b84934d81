"""The Kafka side: a confluent-kafka consumer driven from asyncio through one dedicated thread.

Every call on the consumer (consume, commit, pause, resume, close) runs on the same single worker
thread, so they never overlap. Rebalance callbacks fire inside ``consume``/``close`` on that thread;
they hand their work to the event loop with ``run_coroutine_threadsafe`` and wait for it, which is
safe because the loop is free while it awaits the consume call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from connector.observability.kafkalog import BrokerWatch, RepeatFilter
from connector.offsets import TopicPartitionKey

log = structlog.get_logger(__name__)

METADATA_TIMEOUT = 5.0  # seconds: a metadata request that cannot be answered is tried again later
PROBE_INTERVAL = 3.0  # seconds between "is the cluster back" metadata requests while it is not
PROBE_TIMEOUT = 1.0

RebalanceHook = Callable[
    [list[TopicPartitionKey]], Coroutine[Any, Any, dict[TopicPartitionKey, int]]
]

# Commit errors that mean "this instance no longer owns the partition": the new owner will re-read,
# so the commit is dropped instead of failing the connector.
STALE_COMMIT_ERRORS = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._ASSIGNMENT_LOST,
        KafkaError._STATE,
    }
)


def _keys(partitions: Iterable[TopicPartition]) -> list[TopicPartitionKey]:
    return [(tp.topic, tp.partition) for tp in partitions]


def owned_now(
    offsets: dict[TopicPartitionKey, tuple[int, int]],
    assignment: set[TopicPartitionKey],
    generations: dict[TopicPartitionKey, int],
) -> dict[TopicPartitionKey, int]:
    """The offsets whose partition is assigned now, in the generation they were computed for."""
    return {
        key: offset
        for key, (offset, generation) in offsets.items()
        if key in assignment and generations.get(key) == generation
    }


class KafkaSource:
    """Subscribe, consume in batches, commit exact offsets, pause and resume."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: list[str],
        *,
        on_assign: RebalanceHook,
        on_revoke: RebalanceHook,
        on_lost: RebalanceHook,
        watch: BrokerWatch | None = None,
    ) -> None:
        self._config = config
        # Whether the cluster is in reach: connection errors go to it, not one line each.
        self.watch = watch or BrokerWatch(str(config.get("bootstrap.servers", "")))
        self._error_lines = RepeatFilter(self.watch.interval)
        self._next_probe = 0.0
        self._topics = topics
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Consumer | None = None
        self.assignment: set[TopicPartitionKey] = set()
        self.paused: set[TopicPartitionKey] = set()
        # Assigned since the last backpressure turn. librdkafka keeps a partition's pause flag
        # across a revoke and a re-assignment, so these are resumed (or paused) explicitly.
        self.fresh: set[TopicPartitionKey] = set()
        self.last_error: KafkaError | None = None
        # How many times each partition was assigned: a commit names the assignment it was
        # computed for, and is dropped on the Kafka thread if that assignment is over.
        self.generations: dict[TopicPartitionKey, int] = {}
        self.total_partitions = 0  # of the subscribed topics: the denominator of the budget share
        self._total_stale = True

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._call(self._start_sync)

    def _start_sync(self) -> None:
        self._consumer = Consumer({**self._config, "error_cb": self._error_cb})
        # Subscribe first: the join starts at once (the broker holds a new group's first join
        # for seconds). The count is still in before the first assignment needs it: assignments
        # are delivered by consume(), which runs on this same thread after this returns.
        self._consumer.subscribe(
            self._topics,
            on_assign=self._assign_cb,
            on_revoke=self._revoke_cb,
            on_lost=self._lost_cb,
        )
        self._refresh_total(self._consumer)

    def _error_cb(self, err: KafkaError) -> None:
        self.last_error = err
        if self.watch.on_error(err):
            return
        suppressed = self._error_lines.admit((err.code(), err.str()))
        if suppressed is not None or err.fatal():
            log.warning(
                "kafka_error",
                error=err.str(),
                code=err.name(),
                fatal=err.fatal(),
                repeats_suppressed=suppressed or 0,
            )

    # ----- rebalance callbacks: on the kafka thread ---------------------------------------------

    def _run_on_loop(self, hook: RebalanceHook, keys: list[TopicPartitionKey]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(hook(keys), self._loop).result()

    def _refresh_total(self, consumer: Consumer) -> None:
        """The subscribed topics' partition count, from metadata. Never called from a rebalance
        callback: a metadata request nested in one clears confluent-kafka's per-thread call
        state, and the next callback of the same consume call aborts the process (SIGABRT,
        "CallState_get: Assertion 'cs != NULL' failed")."""
        self._total_stale = False
        total = 0
        for topic in self._topics:
            try:
                meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT).topics.get(topic)
            except KafkaException as e:
                err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
                # A connection failure before any broker answered: the "unreachable" line.
                if err is None or not self.watch.on_error(err):
                    log.warning("metadata_failed", topic=topic, error=err.str() if err else str(e))
                self._total_stale = True  # keep the last known total; try again later
                return
            self.watch.up()
            if meta is not None and meta.error is None:
                total += len(meta.partitions)
        if total:
            self.total_partitions = total

    def _assign_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = _keys(partitions)
        self._total_stale = True  # partitions may have been added: recount before next consume
        self.watch.up()
        self.assignment.update(keys)
        self.fresh.update(keys)
        for key in keys:
            self.generations[key] = self.generations.get(key, 0) + 1
        log.info("partitions_assigned", partitions=[f"{t}[{p}]" for t, p in keys])
        self._run_on_loop(self._on_assign, keys)

    def _revoke_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = _keys(partitions)
        log.info("partitions_revoked", partitions=[f"{t}[{p}]" for t, p in keys])
        final = self._run_on_loop(self._on_revoke, keys)
        if final:  # this assignment's last commit: it still owns the partitions here
            self._commit_owned(final)
        self.assignment.difference_update(keys)
        self.paused.difference_update(keys)

    def _lost_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = _keys(partitions)
        log.warning("partitions_lost", partitions=[f"{t}[{p}]" for t, p in keys])
        self._run_on_loop(self._on_lost, keys)
        self.assignment.difference_update(keys)
        self.paused.difference_update(keys)

    # ----- operations ---------------------------------------------------------------------------

    async def consume(self, max_messages: int, timeout: float) -> list[Message]:
        msgs: list[Message] = await self._call(self._consume_sync, max_messages, timeout)
        return msgs

    def _consume_sync(self, max_messages: int, timeout: float) -> list[Message]:
        assert self._consumer is not None
        if self.watch.down_since is not None:
            self._probe(self._consumer)
        elif self._total_stale:  # here, outside any rebalance callback
            self._refresh_total(self._consumer)
        msgs: list[Message] = self._consumer.consume(max_messages, timeout)
        if self.watch.down_since is not None and any(m.error() is None for m in msgs):
            self.watch.up()  # a record fetched: a broker answered
        return msgs

    def _probe(self, consumer: Consumer) -> None:
        """While the cluster is out of reach, a short metadata request every few seconds tells
        when it is back (librdkafka says when brokers go down, not when they come back)."""
        now = time.monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + PROBE_INTERVAL
        try:
            consumer.list_topics(self._topics[0], timeout=PROBE_TIMEOUT)
        except KafkaException:
            return
        self.watch.up()
        self._total_stale = True

    async def commit(
        self, offsets: dict[TopicPartitionKey, tuple[int, int]]
    ) -> dict[TopicPartitionKey, int]:
        """Commit next-offsets, each for the assignment generation it was computed under;
        return the ones the broker confirmed. Runs on the Kafka thread, in order with the
        rebalance callbacks: a partition revoked (or revoked and assigned again) since the
        offsets were computed is left out, so a late commit never lands after the revoke's final
        commit nor moves the new owner's position."""
        done: dict[TopicPartitionKey, int] = await self._call(self._commit_current, offsets)
        return done

    def _commit_current(
        self, offsets: dict[TopicPartitionKey, tuple[int, int]]
    ) -> dict[TopicPartitionKey, int]:
        return self._commit_owned(owned_now(offsets, self.assignment, self.generations))

    def _commit_owned(self, offsets: dict[TopicPartitionKey, int]) -> dict[TopicPartitionKey, int]:
        """The one place offsets are committed: synchronously, every partition's error checked."""
        assert self._consumer is not None
        if not offsets:
            return {}
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as e:
            err = e.args[0] if e.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            level = "info" if code in STALE_COMMIT_ERRORS else "warning"
            getattr(log, level)("commit_failed", error=str(e), partitions=len(tps))
            return {}
        done: dict[TopicPartitionKey, int] = {}
        for tp in result or []:
            if tp.error is None:
                done[(tp.topic, tp.partition)] = tp.offset
            else:
                log.warning(
                    "commit_partition_failed",
                    topic=tp.topic,
                    partition=tp.partition,
                    error=tp.error.str(),
                )
        return done

    async def lags(self) -> dict[TopicPartitionKey, int]:
        """High watermark minus position per assigned partition, from librdkafka's cached fetch
        state (no broker round trip). A paused partition fetches nothing, so its figure is as of
        the pause; partitions without both figures yet are left out."""
        lags: dict[TopicPartitionKey, int] = await self._call(self._lags_sync)
        return lags

    def _lags_sync(self) -> dict[TopicPartitionKey, int]:
        assert self._consumer is not None
        tps = [TopicPartition(t, p) for t, p in self.assignment]
        if not tps:
            return {}
        try:
            positions = self._consumer.position(tps)
        except KafkaException:
            return {}
        out: dict[TopicPartitionKey, int] = {}
        for tp in positions:
            if tp.offset < 0:  # nothing consumed yet: no position to measure from
                continue
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                out[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        return out

    async def settle_fresh(self, pause: bool) -> None:
        """Put newly assigned partitions in the state backpressure wants, whatever librdkafka
        remembered from an earlier assignment (a partition paused, revoked and assigned back
        came back paused and was never resumed: the stream stalled)."""
        keys = [k for k in self.fresh if k in self.assignment]
        self.fresh.clear()
        if keys:
            await self._call(self._pause_sync, keys, pause)

    async def pause(self, keys: Iterable[TopicPartitionKey]) -> None:
        todo = [k for k in keys if k in self.assignment and k not in self.paused]
        if todo:
            await self._call(self._pause_sync, todo, True)

    async def resume(self, keys: Iterable[TopicPartitionKey]) -> None:
        todo = [k for k in keys if k in self.paused]
        if todo:
            await self._call(self._pause_sync, todo, False)

    def _pause_sync(self, keys: list[TopicPartitionKey], pause: bool) -> None:
        assert self._consumer is not None
        tps = [TopicPartition(t, p) for t, p in keys]
        try:
            (self._consumer.pause if pause else self._consumer.resume)(tps)
        except KafkaException as e:  # a partition revoked meanwhile: nothing to pause any more
            log.info("pause_resume_skipped", error=str(e))
            return
        if pause:
            self.paused.update(keys)
        else:
            self.paused.difference_update(keys)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._call(self._consumer.close)
            self._consumer = None
        self._executor.shutdown(wait=True)
