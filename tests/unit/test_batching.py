"""Bodies are exact: their size is tracked, never over the limit, and split in order."""

import itertools
import math
import sys
import tracemalloc
from decimal import Decimal

import orjson
import pytest

from connector.batching import ENVELOPE_BYTES, Batch, Batcher, Cost, ElementTooLarge, encode
from connector.errors import ValidationError
from connector.offsets import OffsetLedger, Slot


class Limits:
    def __init__(self, request_users: int | None, request_events: int | None) -> None:
        self.request_users = request_users
        self.request_events = request_events


def _slot(offset: int = 0) -> Slot:
    ledger = OffsetLedger()
    ledger.assign([("t", 0)])
    tracker = ledger.tracker(("t", 0))
    assert tracker is not None
    return tracker.track(offset, 1)


def _el(i: int, pad: int = 0) -> bytes:
    return orjson.dumps(
        {"type": "customer", "customer_id": f"u{i}", "attributes": {"p": "x" * pad}}
    )


def _check_exact(batch: Batch) -> None:
    body = batch.body()
    assert len(body) == batch.size
    assert orjson.loads(body) == {
        "type": "transition",
        "elements": [orjson.loads(p) for p in batch.parts],
    }


def test_body_is_the_documented_envelope() -> None:
    b = Batcher(100_000)
    b.add(_el(1), _slot(), Cost(users=1), "u1")
    batch = b.flush()
    assert batch is not None
    assert orjson.loads(batch.body())["type"] == "transition"
    _check_exact(batch)


@pytest.mark.parametrize("pad", [0, 37, 500, 4000])
def test_no_body_exceeds_the_limit_and_sizes_are_exact(pad: int) -> None:
    limit = 10_000
    b = Batcher(limit)
    batches = []
    for i in range(300):
        closed = b.add(_el(i, pad), _slot(i), Cost(users=1), f"u{i}")
        if closed:
            batches.append(closed)
    last = b.flush()
    assert last is not None
    batches.append(last)
    assert sum(len(x) for x in batches) == 300
    for batch in batches:
        _check_exact(batch)
        assert batch.size <= limit
    # Every closed batch was closed because the next element did not fit.
    for batch, nxt in itertools.pairwise(batches):
        assert batch.size + len(nxt.parts[0]) + 1 > limit


def test_element_that_fits_exactly_alone_is_accepted() -> None:
    el = b"x" * (1000 - ENVELOPE_BYTES)
    Batcher(1000).check_fits_alone(el)


def test_element_one_byte_too_large_is_rejected() -> None:
    el = b"x" * (1001 - ENVELOPE_BYTES)
    with pytest.raises(ElementTooLarge, match="over max_request_bytes=1000"):
        Batcher(1000).check_fits_alone(el)


def test_batch_closes_before_exceeding_the_user_budget_capacity() -> None:
    b = Batcher(100_000, Limits(3, None))
    closed = [b.add(_el(i), _slot(i), Cost(users=1), f"u{i}") for i in range(4)]
    assert closed[:3] == [None, None, None]
    assert closed[3] is not None
    assert closed[3].users == 3


def test_batch_closes_before_exceeding_the_event_budget_capacity() -> None:
    b = Batcher(100_000, Limits(None, 10))
    assert b.add(_el(1), _slot(), Cost(events=6), "a") is None
    closed = b.add(_el(2), _slot(), Cost(events=6), "b")
    assert closed is not None
    assert closed.events == 6


def test_a_budget_that_shrinks_below_the_batch_closes_it_at_the_next_element() -> None:
    """The limits are read live: an event (no users) still closes a batch of users that the
    smaller users budget no longer allows, and the other way round."""
    limits = Limits(5, 5)
    b = Batcher(100_000, limits)
    b.add(_el(1), _slot(), Cost(users=2), "a")
    limits.request_users = 1
    assert b.add(_el(2), _slot(), Cost(events=1), "b") is not None
    b.add(_el(3), _slot(), Cost(events=3), "c")
    limits.request_events = 4
    assert b.add(_el(4), _slot(), Cost(users=1), "d") is None  # 1 + 3 events: within 4
    limits.request_events = 3
    assert b.add(_el(5), _slot(), Cost(users=1), "e") is not None


def test_split_keeps_order_and_exact_sizes() -> None:
    b = Batcher(100_000)
    for i in range(5):
        b.add(_el(i), _slot(i), Cost(users=1), f"u{i}")
    batch = b.flush()
    assert batch is not None
    first, second = batch.split()
    assert first.parts + second.parts == batch.parts
    assert [s.offset for s in first.slots + second.slots] == [0, 1, 2, 3, 4]
    _check_exact(first)
    _check_exact(second)


def test_adding_an_element_holds_its_record() -> None:
    slot = _slot()
    Batcher(100_000).add(_el(1), slot, Cost(users=1), "u1")
    slot.release()
    assert slot.remaining == 1


# ----- coalescing ---------------------------------------------------------------------------------


def _event(cid: str, name: str, device: str | None = None) -> dict[str, object]:
    el: dict[str, object] = {"type": "event", "customer_id": cid}
    if device:
        el["device_id"] = device
    el["actions"] = [{"action": name, "attributes": {"n": name}}]
    return el


def _update(cid: str, **attrs: object) -> dict[str, object]:
    return {"type": "customer", "customer_id": cid, "attributes": attrs}


def _add(b: Batcher, el: dict[str, object], slot: Slot, cost: Cost) -> None:
    b.add(orjson.dumps(el), slot, cost, str(el["customer_id"]), element=el)


def test_n_events_of_one_customer_become_one_element_with_n_actions() -> None:
    b = Batcher(100_000, coalesce="request")
    slots = [_slot(i) for i in range(5)]
    for i, s in enumerate(slots):
        _add(b, _event("c1", f"e{i}"), s, Cost(events=1))
    batch = b.flush()
    assert batch is not None
    _check_exact(batch)
    (element,) = orjson.loads(batch.body())["elements"]
    assert [a["action"] for a in element["actions"]] == ["e0", "e1", "e2", "e3", "e4"]
    assert batch.events == 5
    assert len(batch.slots) == 5
    assert b.coalesced_events == 4


def test_m_updates_of_one_customer_become_one_element_with_the_last_values() -> None:
    b = Batcher(100_000, coalesce="request")
    _add(b, _update("c1", plan="free", city="Pune"), _slot(0), Cost(users=1))
    _add(b, _update("c1", plan="pro"), _slot(1), Cost(users=1))
    _add(b, _update("c1", plan="enterprise", seats=5), _slot(2), Cost(users=1))
    batch = b.flush()
    assert batch is not None
    _check_exact(batch)
    (element,) = orjson.loads(batch.body())["elements"]
    assert element["attributes"] == {"plan": "enterprise", "city": "Pune", "seats": 5}
    assert batch.users == 1  # the users/min budget is spent once
    assert b.coalesced_updates == 2


@pytest.mark.parametrize("coalesce", ["request", "backlog"])
def test_a_waiting_profile_element_is_held_as_its_bytes_only(coalesce: str) -> None:
    """A batch keeps no reference to the element dicts it was given (a merge reads the earlier
    element back from its JSON): a buffer full of profile updates held ~2 kB more each."""
    b = Batcher(100_000, coalesce=coalesce)  # type: ignore[arg-type]
    first, other = _update("c1", plan="free", city="Pune"), _update("c2", plan="free")
    refs = sys.getrefcount(first), sys.getrefcount(other)
    _add(b, first, _slot(0), Cost(users=1))
    _add(b, other, _slot(1), Cost(users=1))
    assert (sys.getrefcount(first), sys.getrefcount(other)) == refs
    _add(b, _update("c1", plan="pro"), _slot(2), Cost(users=1))
    batch = b.flush()
    assert batch is not None
    elements = orjson.loads(batch.body())["elements"]
    assert [e["attributes"] for e in elements] == [
        {"plan": "pro", "city": "Pune"},
        {"plan": "free"},
    ]
    assert b.coalesced_updates == 1  # merged all the same


def test_coalescing_never_reorders_a_customers_updates_and_events() -> None:
    b = Batcher(100_000, coalesce="request")
    _add(b, _event("c1", "a"), _slot(0), Cost(events=1))
    _add(b, _update("c1", x=1), _slot(1), Cost(users=1))
    _add(b, _event("c1", "b"), _slot(2), Cost(events=1))
    _add(b, _update("c2", y=1), _slot(3), Cost(users=1))
    _add(b, _event("c1", "c"), _slot(4), Cost(events=1))
    batch = b.flush()
    assert batch is not None
    kinds = [
        (e["type"], e.get("actions", [{}])[0].get("action"))
        for e in orjson.loads(batch.body())["elements"]
    ]
    assert kinds == [("event", "a"), ("customer", None), ("event", "b"), ("customer", None)]
    last = orjson.loads(batch.body())["elements"][2]
    assert [a["action"] for a in last["actions"]] == ["b", "c"]


def test_events_of_different_devices_are_not_merged() -> None:
    b = Batcher(100_000, coalesce="request")
    _add(b, _event("c1", "a", device="d1"), _slot(0), Cost(events=1))
    _add(b, _event("c1", "b", device="d2"), _slot(1), Cost(events=1))
    batch = b.flush()
    assert batch is not None
    assert len(batch) == 2


def test_array_operations_are_never_merged() -> None:
    b = Batcher(100_000, coalesce="request")
    _add(b, _update("c1", addValueToArrayField={"tags": ["a"]}), _slot(0), Cost(users=1))
    _add(b, _update("c1", addValueToArrayField={"tags": ["b"]}), _slot(1), Cost(users=1))
    batch = b.flush()
    assert batch is not None
    assert len(batch) == 2


def test_coalescing_off_keeps_every_element() -> None:
    b = Batcher(100_000, coalesce="off")
    for i in range(3):
        _add(b, _event("c1", f"e{i}"), _slot(i), Cost(events=1))
    batch = b.flush()
    assert batch is not None
    assert len(batch) == 3


def test_a_merge_that_would_overflow_the_body_starts_a_new_request() -> None:
    big = "x" * 400
    b = Batcher(1000, coalesce="request")
    closed = [
        b.add(orjson.dumps(e), _slot(i), Cost(events=1), "c1", element=e)
        for i, e in enumerate(_event("c1", big + str(i)) for i in range(4))
    ]
    batches = [c for c in closed if c is not None]
    last = b.flush()
    assert last is not None
    for batch in [*batches, last]:
        _check_exact(batch)
        assert batch.size <= 1000


def test_split_of_a_coalesced_batch_keeps_every_slot_with_its_element() -> None:
    b = Batcher(100_000, coalesce="request")
    for i in range(3):
        _add(b, _event("c1", f"e{i}"), _slot(i), Cost(events=1))
    _add(b, _event("c2", "z"), _slot(3), Cost(events=1))
    batch = b.flush()
    assert batch is not None
    first, second = batch.split()
    assert [s.offset for s in first.slots] == [0, 1, 2]
    assert [s.offset for s in second.slots] == [3]
    _check_exact(first)
    _check_exact(second)


def test_parts_of_a_batch_cost_exactly_what_their_elements_cost() -> None:
    """A coalesced element carries several actions: a part of the batch is priced by its own
    elements, not by a share of the element count."""
    b = Batcher(100_000, coalesce="request")
    for i in range(5):
        _add(b, _event("c1", f"e{i}"), _slot(i), Cost(events=1))  # one element, 5 actions
    _add(b, _event("c2", "z"), _slot(5), Cost(events=1))
    _add(b, _event("c3", "y"), _slot(6), Cost(events=1))
    batch = b.flush()
    assert batch is not None
    assert (len(batch), batch.events) == (3, 7)
    first, second = batch.split(1)
    assert (first.events, second.events) == (5, 2)
    assert batch.affordable_prefix(None, 4) == 0  # the first element alone costs 5
    assert batch.affordable_prefix(None, 6) == 2
    assert batch.affordable_prefix(None, None) == 3


def test_encoded_elements_hold_only_their_own_bytes() -> None:
    element = {"type": "customer", "customer_id": "u1", "attributes": {"name": "x" * 200}}
    assert encode(element) == orjson.dumps(element)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [encode(element) for _ in range(200)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # ~260 bytes of JSON each (orjson's own buffer would keep 4 KiB apiece, 800 KiB in all)
    assert held < 200 * 600, f"{held / len(kept):.0f} bytes held per element"


# ----- values JSON cannot carry (issue 11) -------------------------------------------------------


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _with_attribute(value: object) -> dict[str, object]:
    action = {"action": "Bought", "attributes": {"v": value}}
    return {"type": "event", "customer_id": "john", "actions": [action]}


@pytest.mark.parametrize(
    ("value", "rule", "named"),
    [
        (Decimal("1.5"), "element.unencodable", "decimal.Decimal"),
        (b"\x00\x01", "element.unencodable", "bytes"),
        ({1, 2}, "element.unencodable", "set"),
        ("caf\udce9", "element.unencodable", "lone surrogate"),
        ({1: "one"}, "element.unencodable", "key of type int"),
        ({"\ud800": 1}, "element.unencodable", "lone surrogate"),
        (2**64, "element.unencodable", "2^64"),
        (-(2**63) - 1, "element.unencodable", "2^63"),
        (_nested(300), "element.unencodable", "nested deeper than 254"),
        (math.nan, "value.non_finite", "NaN"),
        (math.inf, "value.non_finite", "Infinity"),
        ([1.0, -math.inf], "value.non_finite", "-Infinity"),
    ],
    ids=[
        "Decimal", "bytes", "set", "surrogate", "int-key", "surrogate-key", "2^64", "-2^63-1",
        "nested-300", "nan", "inf", "-inf-in-list",
    ],
)  # fmt: skip
def test_values_json_cannot_carry_are_bad_input(value: object, rule: str, named: str) -> None:
    with pytest.raises(ValidationError) as info:
        encode(_with_attribute(value))
    assert (info.value.stage, info.value.rule) == ("validate", rule)
    assert "actions[0].attributes.v" in info.value.message
    assert named in info.value.message


@pytest.mark.parametrize("value", [2**64 - 1, -(2**63), 1e308, None, _nested(250), "café"])
def test_values_at_the_edges_of_json_encode(value: object) -> None:
    assert orjson.loads(encode(_with_attribute(value))) == _with_attribute(value)


def test_nesting_of_any_depth_is_reported_without_recursion() -> None:
    with pytest.raises(ValidationError) as info:
        encode(_with_attribute(_nested(100_000)))
    assert info.value.rule == "element.unencodable"
