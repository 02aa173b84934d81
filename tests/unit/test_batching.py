"""Bodies are exact: their size is tracked, never over the limit, and split in order."""

import itertools

import orjson
import pytest

from connector.batching import ENVELOPE_BYTES, Batch, Batcher, Cost, ElementTooLarge
from connector.offsets import OffsetLedger, Slot


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
    b = Batcher(100_000, max_users=3)
    closed = [b.add(_el(i), _slot(i), Cost(users=1), f"u{i}") for i in range(4)]
    assert closed[:3] == [None, None, None]
    assert closed[3] is not None
    assert closed[3].users == 3


def test_batch_closes_before_exceeding_the_event_budget_capacity() -> None:
    b = Batcher(100_000, max_events=10)
    assert b.add(_el(1), _slot(), Cost(events=6), "a") is None
    closed = b.add(_el(2), _slot(), Cost(events=6), "b")
    assert closed is not None
    assert closed.events == 6


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
