"""Packing encoded elements into Bulk Import bodies that never exceed the byte limit.

Each element is encoded to JSON exactly once; a body is ``PREFIX + b",".join(parts) + SUFFIX``, so
its size is known exactly and tracked incrementally instead of re-measured. A batch also closes
before it would cost more users or events than the rate-limit budget allows one request, so it can
always be sent eventually.

Coalescing (``moengage.coalesce``; the rules are :mod:`connector.merging`'s): a customer's next
element is merged into its latest element when that one is still unsent, so the users/min budget
is spent once. With ``request``, only within the open batch; with ``backlog``, profile elements
(customer updates, devices) also merge into closed batches that wait for the budget, until the lane
takes one up for sending (:meth:`Batcher.seal`). A merge never grows a batch past the byte limit
or the budget's per-request cost cap; a merge that would is not made (the element opens its own
place in the open batch). Only the customer's *latest* element is ever merged into, so one
customer's updates and events keep their order. Pure: no HTTP, no clock.

``encode`` is the last check of an element: whatever JSON cannot carry exactly -- NaN or
±Infinity (orjson would write ``null``), an integer outside -2^63..2^64-1, a lone surrogate, a
non-string object key, a ``Decimal``, ``bytes`` or ``set``, nesting deeper than 254 levels -- is a
``ValidationError`` naming the attribute path and the type, never an exception of orjson's.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from connector.errors import ValidationError
from connector.merging import PROFILE_SAME, Coalesce, is_profile, merge_event, merge_profile
from connector.offsets import Slot

PREFIX = b'{"type":"transition","elements":['
SUFFIX = b"]}"
ENVELOPE_BYTES = len(PREFIX) + len(SUFFIX)

_batch_ids = itertools.count(1)


class CostLimits(Protocol):
    """The most users/events one request may cost (the rate-limit budget, read live)."""

    @property
    def request_users(self) -> int | None: ...

    @property
    def request_events(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Cost:
    """What an element spends from the account's per-minute budgets."""

    users: int = 0
    events: int = 0


# What orjson writes: integers in this range, containers nested at most this deep.
INT_RANGE: Final = (-(2**63), 2**64 - 1)
MAX_NESTING: Final = 254
_MAX_SHOWN: Final = 40


def encode(element: dict[str, Any]) -> bytes:
    """An element's JSON, in a bytes object of its own size; ``ValidationError`` when JSON
    cannot carry one of its values exactly (rules ``element.unencodable``, ``value.non_finite``).

    orjson hands back its working buffer: a 300-byte element keeps a 4 KiB allocation. Elements
    wait in batches until their request is acknowledged, so that was 4 KiB per buffered element
    (make bench: peak RSS 148 MB, most of it these buffers); a copy costs well under 1 µs.
    """
    try:
        data = orjson.dumps(element)
    except Exception as e:  # noqa: BLE001 -- JSONEncodeError, or whatever a value's type raises
        raise _unencodable(element, e) from None
    # orjson writes NaN and ±Infinity as null: only an element with a null in it can hold one.
    # (bytes.find: 'in' first tries the needle as a byte value, and that failure costs more than
    # the search, 0.49 against 0.33 us on a bench event.)
    if data.find(b"null") >= 0 and _has_non_finite(element):
        problem = find_unencodable(element)
        if problem is not None:
            raise _error(element, *problem)
    return bytes(memoryview(data))


def _has_non_finite(value: Any) -> bool:
    """Whether a float in ``value`` is NaN or infinite: the quick gate (about 1 µs for a typical
    event) before ``find_unencodable`` spends time on naming it. ``x - x`` is 0.0 for every
    finite float and NaN otherwise; exact types first, subclasses after."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        x = pop()
        t = type(x)
        if t is dict:
            push(x.values())
        elif t is list:
            push(x)
        elif t is float:
            if x - x != 0.0:
                return True
        elif t is str or t is int or t is bool or x is None:
            pass
        elif isinstance(x, dict):
            push(x.values())
        elif isinstance(x, list | tuple):
            push(x)
        elif isinstance(x, float) and not math.isfinite(x):
            return True
    return False


def _unencodable(element: dict[str, Any], cause: Exception) -> ValidationError:
    problem = find_unencodable(element)
    if problem is None:
        text = str(cause)[:200]
        problem = ("element.unencodable", "", f"not JSON ({type(cause).__name__}: {text})")
    return _error(element, *problem)


def _error(element: dict[str, Any], rule: str, path: str, what: str) -> ValidationError:
    kind = element.get("type") if isinstance(element, dict) else None
    where = f"{kind} element: " if isinstance(kind, str) else ""
    if rule == "value.non_finite":
        text = f"{path} is {what}, which JSON cannot carry (it would reach MoEngage as null)"
    else:
        text = (
            f"{path or 'the element'} is {what}, which JSON cannot carry; convert it in the "
            "transform"
        )
    return ValidationError(where + text, rule=rule)


def _show(key: object) -> str:
    try:
        text = repr(key) if not isinstance(key, str) else key
    except Exception:  # noqa: BLE001 -- a key whose repr fails is still named by its type
        text = f"<{type(key).__name__}>"
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _type_name(value: object) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


# A path is built only when reported: (parent, segment) links, "" at the root.
_Crumbs = tuple[Any, str] | None


def _path(crumbs: _Crumbs) -> str:
    parts: list[str] = []
    while crumbs is not None:
        crumbs, segment = crumbs
        parts.append(segment)
    text = "".join(reversed(parts)).lstrip(".")
    return text if len(text) <= 160 else f"{text[:80]}...{text[-77:]}"


def find_unencodable(value: Any) -> tuple[str, str, str] | None:
    """The first value JSON cannot carry exactly, as ``(rule, path, description)``, or None.

    Iterative and bounded by ``MAX_NESTING``, so no input can exhaust the stack; paths read like
    ``actions[0].attributes.price``.
    """
    low, high = INT_RANGE
    stack: list[tuple[Any, int, _Crumbs]] = [(value, 0, None)]
    while stack:
        v, depth, crumbs = stack.pop()
        problem = None
        if v is None or v is True or v is False:
            continue
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                problem = "element.unencodable", "a string with a lone surrogate (not UTF-8)"
        elif isinstance(v, int):
            if not low <= v <= high:
                problem = "element.unencodable", "an integer outside -2^63..2^64-1"
        elif isinstance(v, float):
            if not math.isfinite(v):
                name = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
                problem = "value.non_finite", name
        elif isinstance(v, dict | list | tuple):
            if depth >= MAX_NESTING:
                problem = "element.unencodable", f"nested deeper than {MAX_NESTING} levels"
            elif isinstance(v, dict):
                children = []
                for k, item in v.items():
                    if not isinstance(k, str):
                        what = f"an object with a key of type {_type_name(k)} ({_show(k)})"
                        return "element.unencodable", _path(crumbs), what
                    if not k.isascii() and find_unencodable(k) is not None:  # a str: no recursion
                        what = "an object with a key holding a lone surrogate (not UTF-8)"
                        return "element.unencodable", _path(crumbs), what
                    children.append((item, depth + 1, (crumbs, f".{k}")))
                stack.extend(reversed(children))
            else:
                stack.extend(
                    (item, depth + 1, (crumbs, f"[{i}]"))
                    for i, item in reversed(list(enumerate(v)))
                )
        else:
            try:
                orjson.dumps(v)  # datetime, UUID, enum, ...: types orjson writes itself
            except Exception:  # noqa: BLE001
                problem = "element.unencodable", f"a value of type {_type_name(v)}"
        if problem is not None:
            return problem[0], _path(crumbs), problem[1]
    return None


def _size(parts: list[bytes]) -> int:
    return ENVELOPE_BYTES + sum(len(p) for p in parts) + max(len(parts) - 1, 0)


@dataclass(slots=True, eq=False)
class Batch:
    """Elements bound for one request, and for each record slot the element it rode in."""

    parts: list[bytes] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    slot_part: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # each part's element type (metrics, verify)
    part_users: list[int] = field(default_factory=list)  # what each part costs, exactly, so a
    part_events: list[int] = field(default_factory=list)  # part of the batch costs its own sum
    latest: dict[str, int] = field(default_factory=dict)  # customer → index of its latest part
    size: int = ENVELOPE_BYTES
    users: int = 0
    events: int = 0
    id: int = field(default_factory=lambda: next(_batch_ids))
    sealed: bool = False  # taken up for sending: nothing is merged into it any more

    def __len__(self) -> int:
        return len(self.parts)

    def body(self) -> bytes:
        return PREFIX + b",".join(self.parts) + SUFFIX

    def split(self, at: int | None = None) -> tuple[Batch, Batch]:
        """Two parts in order, cut before element ``at`` (default: halves, for 413, for
        bisecting a 400, for a shrunken budget); each costs exactly what its elements cost."""
        mid = len(self.parts) // 2 if at is None else at
        return self._select(range(mid)), self._select(range(mid, len(self.parts)))

    def affordable_prefix(self, users: int | None, events: int | None) -> int:
        """How many leading elements cost at most ``users`` / ``events`` (None: no limit)."""
        u = e = 0
        for n, (pu, pe) in enumerate(zip(self.part_users, self.part_events, strict=True)):
            u, e = u + pu, e + pe
            if (users is not None and u > users) or (events is not None and e > events):
                return n
        return len(self.parts)

    def owned(self) -> Batch:
        """The elements that still carry a record of a partition assigned here (the new owner
        of a revoked partition reads those records again)."""
        keep = sorted(
            {p for s, p in zip(self.slots, self.slot_part, strict=True) if s.owner.active}
        )
        if len(keep) == len(self.parts):
            return self
        return self._select(keep)

    def _select(self, indices: range | list[int]) -> Batch:
        remap = {old: new for new, old in enumerate(indices)}
        sub = Batch(
            parts=[self.parts[i] for i in indices],
            kinds=[self.kinds[i] for i in indices],
            part_users=[self.part_users[i] for i in indices],
            part_events=[self.part_events[i] for i in indices],
        )
        for slot, part in zip(self.slots, self.slot_part, strict=True):
            new = remap.get(part)
            if new is not None:
                sub.slots.append(slot)
                sub.slot_part.append(new)
        sub.size = _size(sub.parts)
        sub.users, sub.events = sum(sub.part_users), sum(sub.part_events)
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
    """Accumulates elements; hands back a full batch whenever the next element would not fit.

    With ``coalesce="backlog"`` it also remembers, per customer, the unsealed batch holding the
    customer's latest element (the open one or one waiting in the lane's queue), so a profile
    update merges there; :meth:`seal` ends that for a batch taken up for sending.
    """

    def __init__(
        self, max_bytes: int, limits: CostLimits | None = None, *, coalesce: Coalesce = "off"
    ) -> None:
        self.max_bytes = max_bytes
        self.limits = limits
        self.coalesce = coalesce
        self._merging = coalesce != "off"
        self._backlog = coalesce == "backlog"
        self.current = Batch()
        self.coalesced_events = 0
        self.coalesced_updates = 0  # customer updates and devices, in any batch
        self.merged_backlog = 0  # of those, merged into a closed batch waiting to be sent
        self._home: dict[str, Batch] = {}  # backlog: customer → batch of its latest element

    def check_fits_alone(self, encoded: bytes) -> None:
        if len(encoded) + ENVELOPE_BYTES > self.max_bytes:
            raise ElementTooLarge(len(encoded), self.max_bytes)

    def _over_cost(self, cur: Batch, users: int, events: int) -> bool:
        limits = self.limits
        if limits is None:
            return False
        # A limit is read only when the batch would spend some of it: nothing fits any limit (a
        # request may always cost at least 1), and a lane of events never spends users.
        users += cur.users
        if users:
            mu = limits.request_users
            if mu is not None and users > mu:
                return True
        events += cur.events
        if events:
            me = limits.request_events
            return me is not None and events > me
        return False

    def add(
        self,
        encoded: bytes,
        slot: Slot,
        cost: Cost,
        customer: str,
        *,
        element: dict[str, Any] | None = None,
    ) -> Batch | None:
        """Add one element (already checked to fit alone). Returns the batch it closed, if any."""
        cur = self.current
        merging = element is not None and self._merging
        if merging:
            if customer in cur.latest:
                if self._merge(cur, encoded, slot, cost, customer=customer, element=element):  # type: ignore[arg-type]
                    return None
            elif self._backlog and customer:
                home = self._home.get(customer)
                if (
                    home is not None
                    and not home.sealed
                    and is_profile(element)  # type: ignore[arg-type]
                    and self._merge(home, encoded, slot, cost, customer=customer, element=element)  # type: ignore[arg-type]
                ):
                    self.merged_backlog += 1
                    return None
        closed = None
        users, events = cost.users, cost.events
        size = len(encoded)
        index = len(cur.parts)
        if index and (
            cur.size + size + 1 > self.max_bytes
            or (self.limits is not None and self._over_cost(cur, users, events))
        ):
            closed = cur
            cur = self.current = Batch()
            index = 0
        cur.size += size + 1 if index else size
        cur.parts.append(encoded)
        kind = element.get("type") if element is not None else "unknown"
        cur.kinds.append(kind if type(kind) is str else str(kind))
        cur.part_users.append(users)
        cur.part_events.append(events)
        cur.slots.append(slot)
        cur.slot_part.append(index)
        cur.latest[customer] = index
        if self._backlog and customer:
            self._home[customer] = cur
        cur.users += users
        cur.events += events
        slot.remaining += 1  # slot.add_element()
        return closed

    def seal(self, batch: Batch) -> None:
        """``batch`` is taken up for sending: from now on nothing is merged into it."""
        batch.sealed = True
        home = self._home
        for customer in batch.latest:
            if home.get(customer) is batch:
                del home[customer]

    def _merge(
        self,
        cur: Batch,
        encoded: bytes,
        slot: Slot,
        cost: Cost,
        *,
        customer: str,
        element: dict[str, Any],
    ) -> bool:
        """Merge into ``cur``'s element of ``customer`` (its latest in the lane), if the rules
        allow it and the batch stays within the byte limit and the per-request cost cap."""
        index = cur.latest[customer]
        old = cur.parts[index]
        merged = None
        if element.get("type") == "event":
            new = merge_event(old, encoded, element)
        else:  # a profile element adds nothing to the cost: one user spent, not two
            # The earlier profile element is read back from its JSON only here, when a merge is
            # tried: kept as a dict beside its bytes, each buffered update held about 2 kB more
            # (make bench's 50 ms run: +15 MB at its peak, with the buffer full of users).
            previous = orjson.loads(old) if cur.kinds[index] in PROFILE_SAME else None
            merged = merge_profile(previous, element)
            new = encode(merged) if merged is not None else None
        if new is None:
            return False
        delta = len(new) - len(old)
        if cur.size + delta > self.max_bytes:
            return False
        if cost.events and self._over_cost(cur, 0, cost.events):
            return False
        cur.parts[index] = new
        cur.size += delta
        cur.events += cost.events
        cur.part_events[index] += cost.events
        cur.slots.append(slot)
        cur.slot_part.append(index)
        if merged is not None:
            self.coalesced_updates += 1
        else:
            self.coalesced_events += 1
        slot.remaining += 1  # slot.add_element()
        return True

    def flush(self) -> Batch | None:
        """Close the current batch (linger elapsed, shutdown, or backpressure)."""
        if not self.current.parts:
            return None
        closed, self.current = self.current, Batch()
        return closed

    def __len__(self) -> int:
        return len(self.current.parts)
