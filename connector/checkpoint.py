"""The checkpoint: which records may be committed, committing them, and handing partitions over.

Commits come soon after progress (:class:`Committer`): a request accepted wakes it, and it commits
what has become contiguous, at most one commit at a time and at most one per ``gap``; the run
loop never waits for a commit. A hard kill then resends only what was accepted in the last
``gap`` or so (plus what was in flight), not a whole ``commit_interval_ms`` of it.

It owns the offset ledger (:mod:`connector.offsets`). Every record is tracked under the assignment
it was fetched under: a message fetched before a revoke is never tracked under a later assignment
of its partition (it is read again from the committed offset), and a commit names the assignment
generation each offset belongs to, so it is only ever issued for partitions owned at that moment,
in order with the rebalance callbacks on the Kafka thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from connector.observability.metrics import Metrics
from connector.offsets import OffsetLedger, Slot, TopicPartitionKey
from connector.source.consumer import KafkaSource


class Checkpoint:
    """The ledger of tracked records and the one place that commits their offsets."""

    def __init__(self, source: KafkaSource, metrics: Metrics) -> None:
        self.ledger = OffsetLedger()
        self._partitions = self.ledger.partitions  # the same dict for the ledger's life
        self._source = source
        self._metrics = metrics
        self._lock = asyncio.Lock()  # one commit at a time, whoever asks

    @property
    def epoch(self) -> int:
        """Moves at every assignment change: read it when a batch of messages arrives."""
        return self.ledger.epoch

    def track(self, key: TopicPartitionKey, offset: int, size: int, fetched_at: int) -> Slot | None:
        """A slot for a consumed record fetched at epoch ``fetched_at``; None when its partition
        is not this instance's any more, or was assigned to it anew since the fetch."""
        tracker = self._partitions.get(key)  # ledger.tracker_for(key, fetched_at), inline
        if tracker is None or tracker.epoch > fetched_at:
            return None
        return tracker.track(offset, size)

    async def commit(self) -> None:
        """Commit what is delivered, in three steps:

        1. every partition's watermark that moved (only records MoEngage accepted, dead-lettered
           with a confirmed write, skipped or filtered are behind it), with the assignment
           generation it was computed under;
        2. a synchronous commit on the Kafka thread of those whose partition is still owned in
           that generation, every partition's error checked;
        3. each confirmed offset marked in the ledger (it is the new baseline) and reported.
        """
        async with self._lock:
            await self._commit()

    async def _commit(self) -> None:
        ledger = self.ledger
        offsets = {
            key: (offset, ledger.partitions[key].generation)
            for key, offset in ledger.committable().items()
        }
        if not offsets:
            return
        started = time.perf_counter()
        done = await self._source.commit(offsets)
        self._metrics.committed(done, time.perf_counter() - started)
        for key, offset in done.items():
            ledger.mark_committed(key, offset)

    def assigned(self, keys: list[TopicPartitionKey]) -> None:
        self.ledger.assign(keys, self._source.generations)

    def revoked(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Detach the partitions; their last watermarks, for the revoke's final commit."""
        return self.ledger.revoke(keys)

    def lost(self, keys: list[TopicPartitionKey]) -> None:
        """The group moved on without us: detach, and commit nothing (it would be stale)."""
        self.ledger.revoke(keys)

    def pending_records(self, keys: list[TopicPartitionKey] | None = None) -> int:
        return self.ledger.pending_records(keys)


class Committer:
    """Commits the checkpoint soon after each :meth:`poke` (an accepted request, the commit
    interval): at once when idle, else ``gap`` seconds after the previous commit, so a stream of
    accepted requests costs at most one commit per ``gap``. Runs as a task beside the loop."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        gap: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._checkpoint = checkpoint
        self._gap = gap
        self._sleep = sleep
        self._due = asyncio.Event()

    def poke(self) -> None:
        self._due.set()

    async def run(self) -> None:
        due = self._due
        while True:
            await due.wait()
            due.clear()
            await self._checkpoint.commit()
            await self._sleep(self._gap)
