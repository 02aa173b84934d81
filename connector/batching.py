"""Packing encoded elements into Bulk Import bodies that never exceed the byte limit.

Each element is encoded to JSON exactly once; a body is ``PREFIX + b",".join(parts) + SUFFIX``, so
its size is known exactly and tracked incrementally instead of re-measured. A batch also closes
before it would need more users or events than the rate-limit buckets can ever hold, so it can
always be sent eventually. Pure: no HTTP, no clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from connector.offsets import Slot

PREFIX = b'{"type":"transition","elements":['
SUFFIX = b"]}"
ENVELOPE_BYTES = len(PREFIX) + len(SUFFIX)

_batch_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Cost:
    """What an element spends from the account's per-minute budgets."""

    users: int = 0
    events: int = 0


@dataclass(slots=True, eq=False)
class Batch:
    """Elements bound for one request, with the records they came from."""

    parts: list[bytes] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)
    size: int = ENVELOPE_BYTES
    users: int = 0
    events: int = 0
    id: int = field(default_factory=lambda: next(_batch_ids))

    def __len__(self) -> int:
        return len(self.parts)

    def body(self) -> bytes:
        return PREFIX + b",".join(self.parts) + SUFFIX

    def split(self) -> tuple[Batch, Batch]:
        """Two halves in order (for 413 and for bisecting a 400)."""
        mid = len(self.parts) // 2
        return self._sub(0, mid), self._sub(mid, len(self.parts))

    def owned(self) -> Batch:
        """The elements whose partitions are still assigned here (revoked ones are dropped:
        their new owner reads those records again)."""
        keep = [i for i, s in enumerate(self.slots) if s.owner.active]
        if len(keep) == len(self.parts):
            return self
        parts = [self.parts[i] for i in keep]
        sub = Batch(parts=parts, slots=[self.slots[i] for i in keep], customers=self.customers)
        sub.size = ENVELOPE_BYTES + sum(len(p) for p in parts) + max(len(parts) - 1, 0)
        return sub

    def singles(self) -> Iterator[Batch]:
        for i in range(len(self.parts)):
            yield self._sub(i, i + 1)

    def _sub(self, start: int, stop: int) -> Batch:
        parts = self.parts[start:stop]
        sub = Batch(parts=parts, slots=self.slots[start:stop], customers=self.customers)
        sub.size = ENVELOPE_BYTES + sum(len(p) for p in parts) + max(len(parts) - 1, 0)
        # Cost is not re-derived for halves: they are retried under the parent's spent budget.
        return sub


class ElementTooLarge(Exception):
    """An element that cannot fit in a request even alone."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"element encodes to {size} bytes; with the request envelope it needs "
            f"{size + ENVELOPE_BYTES} bytes, over max_request_bytes={limit}"
        )


class Batcher:
    """Accumulates elements; hands back a full batch whenever the next element would not fit."""

    def __init__(
        self,
        max_bytes: int,
        max_users: int | None = None,
        max_events: int | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_users = max_users
        self.max_events = max_events
        self.current = Batch()

    def check_fits_alone(self, encoded: bytes) -> None:
        if len(encoded) + ENVELOPE_BYTES > self.max_bytes:
            raise ElementTooLarge(len(encoded), self.max_bytes)

    def add(self, encoded: bytes, slot: Slot, cost: Cost, customer: str) -> Batch | None:
        """Add one element (already checked to fit alone). Returns the batch it closed, if any."""
        closed = None
        cur = self.current
        if cur.parts and (
            cur.size + len(encoded) + 1 > self.max_bytes
            or (self.max_users is not None and cur.users + cost.users > self.max_users)
            or (self.max_events is not None and cur.events + cost.events > self.max_events)
        ):
            closed = cur
            cur = self.current = Batch()
        cur.size += len(encoded) + (1 if cur.parts else 0)
        cur.parts.append(encoded)
        cur.slots.append(slot)
        cur.customers.add(customer)
        cur.users += cost.users
        cur.events += cost.events
        slot.add_element()
        return closed

    def flush(self) -> Batch | None:
        """Close the current batch (linger elapsed, shutdown, or backpressure)."""
        if not self.current.parts:
            return None
        closed, self.current = self.current, Batch()
        return closed

    def __len__(self) -> int:
        return len(self.current.parts)
