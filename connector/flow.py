"""Small controls of the run loop: handing a fetched batch over record by record without holding
the event loop, backpressure (pause the partitions while too much is buffered) and this
instance's share of the account's budget (its partitions out of all)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from connector.config import PipelineSettings
from connector.offsets import OffsetLedger
from connector.ratelimit import Budget
from connector.sink.delivery import Delivery
from connector.source.consumer import KafkaSource

T = TypeVar("T")

log = structlog.get_logger(__name__)

# Seconds of record processing after which the loop lets the event loop run. A fetched batch
# (up to consume_batch_size records) takes tens of ms: held in one piece, the batches closed
# meanwhile waited for it to be sent and answers waited to be read, leaving lanes idle.
SLICE_SECONDS = 0.005
_CHECK_EVERY = 32  # records between two looks at the clock


async def take_all(
    msgs: Sequence[T],
    take: Callable[[T, int, float], Awaitable[None] | None],
    epoch: int,
    now: float,
    *,
    stopped: Callable[[], bool],
    clock: Callable[[], float],
    slice_seconds: float = SLICE_SECONDS,
) -> None:
    """``take(msg, epoch, now)`` for each message in order, awaiting what it returns when it
    returns something (a record waiting for the Schema Registry), until ``stopped()``. Every
    ``slice_seconds`` of work the event loop gets a turn: lanes send the batches closed meanwhile
    and read answers, the linger clock and the committer run, and rebalance callbacks are served
    (a message fetched under an assignment that has ended since is not tracked: see
    Checkpoint.track)."""
    due = clock() + slice_seconds
    for i, msg in enumerate(msgs, 1):
        if stopped():
            return
        waiting = take(msg, epoch, now)
        if waiting is not None:
            await waiting
        elif not i % _CHECK_EVERY and clock() >= due:
            await asyncio.sleep(0)
            due = clock() + slice_seconds


# How long a full buffer may wait for the lanes to make room before the partitions are paused.
# Pausing purges librdkafka's prefetched records and resuming fetches them again; while a
# refetch from a slow broker was under way the lanes ran dry. A loop that only outruns its lanes
# waits here for a few answers; lanes that stay stuck (an outage, 429s) get the pause.
CATCH_UP_SECONDS = 1.0


class Backpressure:
    """Bound what is held: once the buffer is full, wait up to ``CATCH_UP_SECONDS`` for the
    lanes to bring it under its cap (lanes with nothing else to do send their open batch); if
    they do not, pause every partition, and resume once half of it has drained. The consumer
    keeps being polled while paused, so the group never evicts the instance."""

    def __init__(
        self,
        source: KafkaSource,
        ledger: OffsetLedger,
        settings: PipelineSettings,
        delivery: Delivery,
        stop: asyncio.Event,
        *,
        catch_up_seconds: float = CATCH_UP_SECONDS,
    ) -> None:
        self._source = source
        self._ledger = ledger
        self._max_records = settings.max_buffered_records
        self._max_bytes = settings.max_buffered_bytes
        self._delivery = delivery
        self._stop = stop
        self._catch_up_seconds = catch_up_seconds

    def full(self) -> bool:
        ledger = self._ledger
        return (
            ledger.buffered_records >= self._max_records or ledger.buffered_bytes >= self._max_bytes
        )

    async def apply(self) -> None:
        source, ledger = self._source, self._ledger
        full = self.full()
        if source.fresh:
            await source.settle_fresh(pause=full)
        if full and not source.paused:
            full = await self._catch_up()
        if full:
            self._delivery.flush_all()  # a paused stream must not wait for linger
            await source.pause(source.assignment)
        elif source.paused and (
            ledger.buffered_records < self._max_records // 2
            and ledger.buffered_bytes < self._max_bytes // 2
        ):
            await source.resume(list(source.paused))

    async def _catch_up(self) -> bool:
        """Wait for answers until the buffer is under its cap (False), or, after the catch-up
        time or at a stop (which sets ``delivery.progress``), say it is still full (True)."""
        delivery = self._delivery
        delivery.flush_idle()  # an open batch of an idle lane would otherwise wait for linger
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._catch_up_seconds
        while self.full():
            left = deadline - loop.time()
            if left <= 0 or self._stop.is_set():
                return True
            await delivery.next_answer(left)
        return False


class BudgetShare:
    """This instance's part of the account budget: its partitions out of all the subscribed
    topics' partitions (unless a fixed ``rate_share`` is configured)."""

    def __init__(self, budget: Budget, source: KafkaSource, fixed: float | None) -> None:
        self._budget = budget
        self._source = source
        self._fixed = fixed

    def update(self, owned: int, now: float) -> None:
        """Set the share from what is owned now (logged when it changes). Called at every
        assignment change and every commit interval (the partition total may be learnt later)."""
        total = self._source.total_partitions
        if self._fixed is not None or not total:
            return
        budget = self._budget
        before = budget.share
        budget.set_share(owned / total, now)
        if budget.share == before:
            return
        log.info(
            "budget_share",
            owned_partitions=owned,
            total_partitions=total,
            share=round(budget.share, 4),
            users_per_window=budget.max_users,
            events_per_window=budget.max_events,
        )
