"""What may be committed: a per-partition acknowledgement watermark.

Every consumed record gets a :class:`Slot`. A slot starts with one *hold* (taken while the record
is decoded and transformed) plus one count per element it produced; each 200 for an element and
the final release of the hold count it down. A partition's committable offset is the offset of its
first record whose slot is not yet at zero (or one past its last record if all are done), so an
offset is never committed past a record that MoEngage has not accepted. Acknowledgements may arrive
in any order (concurrent requests); the watermark only moves over a contiguous done prefix.

Pure: no Kafka, no clock. A revoked partition's tracker is detached, so late acknowledgements for it
land on an object nobody reads, and a reassigned partition starts from a fresh tracker. Every
assignment change moves the ledger's ``epoch``; a tracker remembers the epoch it was created in,
so a record fetched before a revoke (at an earlier epoch) is never tracked under a later
assignment of its partition (:meth:`OffsetLedger.tracker_for`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

TopicPartitionKey = tuple[str, int]


class Slot:
    """One record's outstanding work. ``remaining`` reaches zero when the record is delivered."""

    __slots__ = ("dead_lettered", "msg", "offset", "owner", "remaining", "size")

    def __init__(self, owner: PartitionTracker, offset: int, size: int) -> None:
        self.owner = owner
        self.offset = offset
        self.size = size
        self.remaining = 1  # the hold, released once every element has been handed to a batch
        self.msg: object = None  # the Kafka message, kept only if a dead-letter write may need it
        self.dead_lettered = False

    def add_element(self) -> None:
        self.remaining += 1

    def ack(self) -> None:
        """One element accepted (or the hold released). Completes the record at zero."""
        self.remaining -= 1
        if self.remaining == 0:
            self.owner.record_done(self)
        elif self.remaining < 0:  # pragma: no cover - a bug, never bad input
            raise RuntimeError(f"slot for offset {self.offset} acknowledged too many times")

    release = ack  # releasing the hold is an acknowledgement of "no more elements"


class PartitionTracker:
    """Records of one assigned partition, in offset order, and how far they are done."""

    __slots__ = ("_next", "_pending", "active", "committed", "epoch", "generation", "key", "ledger")

    def __init__(
        self, key: TopicPartitionKey, ledger: OffsetLedger, epoch: int, generation: int = 0
    ) -> None:
        self.key = key
        self.ledger = ledger
        self.epoch = epoch  # the ledger's epoch when this assignment began
        self.generation = generation  # the consumer's count of assignments of this partition
        self.active = True
        self._pending: deque[Slot] = deque()
        self._next: int | None = None  # one past the last tracked offset
        self.committed: int | None = None  # last offset we committed (the next to read)

    def track(self, offset: int, size: int) -> Slot:
        if self._next is not None and offset < self._next:
            # A seek backwards (e.g. after a pause) re-reads records: forget what was pending
            # beyond the new position; those slots can no longer move this watermark.
            while self._pending and self._pending[-1].offset >= offset:
                self.ledger.forget(self._pending.pop())
        if self.committed is None:
            # Where reading started is already the group's position: committing it adds nothing.
            self.committed = offset
        slot = Slot(self, offset, size)
        self._pending.append(slot)
        self._next = offset + 1
        self.ledger.buffered_records += 1
        self.ledger.buffered_bytes += size
        return slot

    def record_done(self, slot: Slot) -> None:
        slot.msg = None
        self.ledger.forget(slot)

    def watermark(self) -> int | None:
        """The offset to commit: everything before it is delivered. None if nothing was read."""
        pending = self._pending
        while pending and pending[0].remaining == 0:
            pending.popleft()
        if pending:
            return pending[0].offset
        return self._next

    def pending_records(self) -> int:
        return sum(1 for s in self._pending if s.remaining > 0)


class OffsetLedger:
    """All assigned partitions, plus the totals that decide backpressure."""

    def __init__(self) -> None:
        self.partitions: dict[TopicPartitionKey, PartitionTracker] = {}
        self.epoch = 0  # moves at every assignment change
        self.buffered_records = 0
        self.buffered_bytes = 0

    def forget(self, slot: Slot) -> None:
        if slot.size >= 0:
            self.buffered_records -= 1
            self.buffered_bytes -= slot.size
            slot.size = -1  # never counted twice (a done slot may also be dropped by a seek)

    def assign(
        self,
        keys: Iterable[TopicPartitionKey],
        generations: Mapping[TopicPartitionKey, int] | None = None,
    ) -> None:
        self.epoch += 1
        for key in keys:
            if key not in self.partitions:
                generation = generations.get(key, 0) if generations is not None else 0
                self.partitions[key] = PartitionTracker(key, self, self.epoch, generation)

    def revoke(self, keys: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Detach partitions; return what may still be committed for them (their watermarks)."""
        self.epoch += 1
        final: dict[TopicPartitionKey, int] = {}
        for key in keys:
            tracker = self.partitions.pop(key, None)
            if tracker is None:
                continue
            tracker.active = False
            mark = tracker.watermark()
            if mark is not None and (tracker.committed is None or mark > tracker.committed):
                final[key] = mark
            for slot in tracker._pending:
                self.forget(slot)
        return final

    def tracker(self, key: TopicPartitionKey) -> PartitionTracker | None:
        return self.partitions.get(key)

    def tracker_for(self, key: TopicPartitionKey, fetched_at: int) -> PartitionTracker | None:
        """The tracker for a record fetched when the ledger's epoch was ``fetched_at``: None if
        its partition is not assigned now, or was assigned anew since (the record belongs to an
        assignment that is over; this instance reads it again from the committed offset)."""
        tracker = self.partitions.get(key)
        if tracker is None or tracker.epoch > fetched_at:
            return None
        return tracker

    def committable(self) -> dict[TopicPartitionKey, int]:
        """Watermarks that moved since the last commit."""
        out: dict[TopicPartitionKey, int] = {}
        for key, tracker in self.partitions.items():
            mark = tracker.watermark()
            if mark is not None and (tracker.committed is None or mark > tracker.committed):
                out[key] = mark
        return out

    def mark_committed(self, key: TopicPartitionKey, offset: int) -> None:
        tracker = self.partitions.get(key)
        if tracker is not None and (tracker.committed is None or offset > tracker.committed):
            tracker.committed = offset

    def pending_records(self, keys: Iterable[TopicPartitionKey] | None = None) -> int:
        trackers = (
            self.partitions.values()
            if keys is None
            else [t for k in keys if (t := self.partitions.get(k)) is not None]
        )
        return sum(t.pending_records() for t in trackers)
