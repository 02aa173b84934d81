"""Two small controls of the run loop: backpressure (pause the partitions while too much is
buffered) and this instance's share of the account's budget (its partitions out of all)."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from connector.config import PipelineSettings
from connector.offsets import OffsetLedger
from connector.ratelimit import Budget
from connector.source.consumer import KafkaSource

log = structlog.get_logger(__name__)


class Backpressure:
    """Pause every partition once the buffer is full, resume once half of it has drained; the
    consumer keeps being polled meanwhile, so the group never evicts the instance."""

    def __init__(
        self,
        source: KafkaSource,
        ledger: OffsetLedger,
        settings: PipelineSettings,
        flush: Callable[[], None],
    ) -> None:
        self._source = source
        self._ledger = ledger
        self._max_records = settings.max_buffered_records
        self._max_bytes = settings.max_buffered_bytes
        self._flush = flush  # a paused stream must not wait for linger

    async def apply(self) -> None:
        source, ledger = self._source, self._ledger
        full = (
            ledger.buffered_records >= self._max_records or ledger.buffered_bytes >= self._max_bytes
        )
        if source.fresh:
            await source.settle_fresh(pause=full)
        if full:
            self._flush()
            await source.pause(source.assignment)
        elif source.paused and (
            ledger.buffered_records < self._max_records // 2
            and ledger.buffered_bytes < self._max_bytes // 2
        ):
            await source.resume(list(source.paused))


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
