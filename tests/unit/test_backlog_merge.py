"""Merging across the backlog (``coalesce: backlog``): a customer's next update goes into its latest
unsent element, in the open batch or one waiting for the budget, never past one of its events,
never into a batch taken up for sending, never past the byte limit or the per-request cost cap;
and every merged record is acknowledged by the 200 of the request that carried it."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from connector.batching import Batch, Batcher, Cost
from connector.config import parse_settings
from connector.errors import ConfigError
from connector.offsets import OffsetLedger, Slot
from connector.ratelimit import Budget
from connector.sink.client import Answer, Verdict
from connector.sink.delivery import Delivery, RetryPolicy
from tests.unit.configs import minimal_raw


class Limits:
    def __init__(self, request_users: int | None, request_events: int | None) -> None:
        self.request_users = request_users
        self.request_events = request_events


class Lane:
    """A batcher and its queue, as a delivery lane holds them (the head is sealed when taken)."""

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher
        self.queue: list[Batch] = []
        self.sent: list[Batch] = []
        ledger = OffsetLedger()
        ledger.assign([("t", 0)])
        tracker = ledger.tracker(("t", 0))
        assert tracker is not None
        self.tracker = tracker
        self.offset = 0

    def add(self, element: dict[str, Any], cost: Cost | None = None) -> Slot:
        slot = self.tracker.track(self.offset, 1)
        self.offset += 1
        if cost is None:
            cost = Cost(events=1) if element["type"] == "event" else Cost(users=1)
        closed = self.batcher.add(
            orjson.dumps(element), slot, cost, str(element["customer_id"]), element=element
        )
        if closed is not None:
            self.queue.append(closed)
        slot.release()
        return slot

    def linger(self) -> None:
        """The open batch closes on its timer and joins the queue."""
        closed = self.batcher.flush()
        if closed is not None:
            self.queue.append(closed)

    def take(self) -> Batch:
        """The lane takes up its next batch for sending."""
        batch = self.queue.pop(0)
        self.batcher.seal(batch)
        self.sent.append(batch)
        return batch

    def close(self) -> list[Batch]:
        """Everything, in the order the lane sends it."""
        last = self.batcher.flush()
        if last is not None:
            self.queue.append(last)
        while self.queue:
            self.take()
        return self.sent


def update(customer: str, **attrs: Any) -> dict[str, Any]:
    return {"type": "customer", "customer_id": customer, "attributes": attrs}


def event(customer: str, action: str) -> dict[str, Any]:
    return {"type": "event", "customer_id": customer, "actions": [{"action": action}]}


def device(customer: str, device_id: str, **attrs: Any) -> dict[str, Any]:
    base = {"platform": "ANDROID", "push_id": "p"}
    return {
        "type": "device",
        "customer_id": customer,
        "device_id": device_id,
        "attributes": {**base, **attrs},
    }


def elements(batch: Batch) -> list[dict[str, Any]]:
    body = batch.body()
    assert len(body) == batch.size  # sizes stay exact through merges
    parsed: list[dict[str, Any]] = orjson.loads(body)["elements"]
    return parsed


def offsets(batch: Batch) -> dict[int, list[int]]:
    """Part index → offsets of the records it carries."""
    out: dict[int, list[int]] = {}
    for slot, part in zip(batch.slots, batch.slot_part, strict=True):
        out.setdefault(part, []).append(slot.offset)
    return out


def two_users_a_request(mode: str = "backlog") -> Lane:
    return Lane(Batcher(100_000, Limits(2, None), coalesce=mode))  # type: ignore[arg-type]


# ----- where a merge goes -----------------------------------------------------------------------


def test_an_update_merges_into_the_customers_element_in_a_waiting_batch() -> None:
    lane = two_users_a_request()
    lane.add(update("c1", plan="free", city="Pune"))
    lane.add(update("c2", plan="free"))
    lane.add(update("c3", plan="free"))  # the first batch is full (2 users): it waits
    assert len(lane.queue) == 1
    lane.add(update("c1", plan="pro"))  # into the waiting batch, not the open one
    waiting = lane.queue[0]
    assert elements(waiting)[0]["attributes"] == {"plan": "pro", "city": "Pune"}
    assert offsets(waiting) == {0: [0, 3], 1: [1]}
    assert waiting.users == 2  # one user spent for c1, not two
    assert len(lane.batcher.current) == 1
    assert lane.batcher.merged_backlog == 1


def test_request_mode_merges_only_within_the_open_batch() -> None:
    lane = two_users_a_request("request")
    for c in ("c1", "c2", "c3"):
        lane.add(update(c, plan="free"))
    lane.add(update("c1", plan="pro"))
    assert len(elements(lane.queue[0])) == 2
    assert [e["customer_id"] for e in elements(lane.batcher.current)] == ["c3", "c1"]


def test_off_merges_nothing() -> None:
    lane = Lane(Batcher(100_000, coalesce="off"))
    lane.add(update("c1", plan="free"))
    lane.add(update("c1", plan="pro"))
    assert len(lane.batcher.current) == 2


def test_a_batch_taken_up_for_sending_is_never_merged_into() -> None:
    lane = two_users_a_request()
    for c in ("c1", "c2", "c3"):
        lane.add(update(c, plan="free"))
    sent = lane.take()
    before = sent.body()
    lane.add(update("c1", plan="pro"))
    assert sent.body() == before
    assert len(sent.slots) == 2
    assert [e["customer_id"] for e in elements(lane.batcher.current)] == ["c3", "c1"]


def test_an_event_between_two_updates_keeps_them_apart_and_in_order() -> None:
    lane = two_users_a_request()
    lane.add(update("c1", step=1))
    lane.add(update("c2", step=1))
    lane.add(update("c3", step=1))  # the first batch waits
    lane.add(event("c1", "Purchase"))  # c1's latest element is now this event
    lane.add(update("c1", step=2))  # may not jump the event into the waiting batch
    sent = lane.close()
    c1 = [
        (e["type"], e.get("attributes"))
        for b in sent
        for e in elements(b)
        if e["customer_id"] == "c1"
    ]
    assert c1 == [("customer", {"step": 1}), ("event", None), ("customer", {"step": 2})]


def test_devices_merge_by_device_id_across_waiting_batches() -> None:
    lane = two_users_a_request()
    lane.add(device("c1", "d1", app_version="1"))
    lane.add(device("c1", "d2", app_version="1"))
    lane.add(update("c2", plan="free"))  # the first batch (2 devices, 2 users) waits
    lane.add(device("c1", "d2", app_version="2"))  # c1's latest element is d2: merged
    lane.add(device("c1", "d1", app_version="2"))  # d1 is not c1's latest: its own element
    waiting = elements(lane.queue[0])
    assert [(e["device_id"], e["attributes"]["app_version"]) for e in waiting] == [
        ("d1", "1"),
        ("d2", "2"),
    ]
    assert [e.get("device_id") for e in elements(lane.batcher.current)] == [None, "d1"]


@pytest.mark.parametrize(
    "second",
    [
        {**update("c1", plan="pro"), "update_existing_only": True},
        update("c1", addValueToArrayField={"tags": ["b"]}),
    ],
    ids=["update_existing_only", "array_operation"],
)
def test_what_the_request_merge_refuses_the_backlog_merge_refuses(second: dict[str, Any]) -> None:
    lane = two_users_a_request()
    for c in ("c1", "c2", "c3"):
        lane.add(update(c, plan="free"))
    lane.add(second)
    assert len(elements(lane.queue[0])) == 2
    assert elements(lane.queue[0])[0]["attributes"] == {"plan": "free"}


def test_events_merge_only_within_the_open_batch() -> None:
    lane = Lane(Batcher(100_000, Limits(None, 10), coalesce="backlog"))
    lane.add(event("c1", "a"))
    lane.add(event("c1", "b"))  # the open batch: appended to c1's element
    lane.add(event("c2", "c"))
    lane.linger()  # the batch closes on time and waits
    lane.add(event("c1", "d"))  # events cost per action: merging them across saves nothing
    assert [len(e["actions"]) for e in elements(lane.queue[0])] == [2, 1]
    assert [len(e["actions"]) for e in elements(lane.batcher.current)] == [1]


# ----- limits -----------------------------------------------------------------------------------


def test_a_merge_never_grows_a_waiting_batch_past_the_byte_limit() -> None:
    limit = 600
    lane = Lane(Batcher(limit, Limits(2, None), coalesce="backlog"))
    lane.add(update("c1", a="x" * 200))
    lane.add(update("c2", b="x" * 200))
    lane.add(update("c3", c="x"))  # the first batch waits, ~500 bytes
    lane.add(update("c1", d="y" * 200))  # merged it would be ~700 bytes: not merged
    waiting = lane.queue[0]
    assert waiting.size <= limit
    assert elements(waiting)[0]["attributes"] == {"a": "x" * 200}
    assert [e["customer_id"] for e in elements(lane.batcher.current)] == ["c3", "c1"]
    lane.add(update("c1", e="z"))  # its latest element is now the open batch's: merged there
    sent = lane.close()
    assert all(b.size <= limit for b in sent)
    assert elements(sent[-1])[-1]["attributes"] == {"d": "y" * 200, "e": "z"}


def test_a_merge_never_grows_a_batch_past_the_cost_cap() -> None:
    lane = Lane(Batcher(100_000, Limits(2, 3), coalesce="backlog"))
    rng = random.Random(5)
    for i in range(300):
        c = f"c{rng.randint(1, 6)}"
        lane.add(update(c, v=i) if rng.random() < 0.6 else event(c, f"a{i}"))
    for batch in lane.close():
        assert batch.users <= 2
        assert batch.events <= 3
        assert batch.users == sum(1 for e in elements(batch) if e["type"] == "customer")
        assert batch.events == sum(len(e.get("actions", ())) for e in elements(batch))


# ----- order and what each element carries ------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_every_customers_records_keep_their_order_and_the_last_value_wins(seed: int) -> None:
    """Random updates and events of a few customers, with the lane taking up batches at random
    moments: in send order, each customer's records (element by element, merged ones in offset
    order) come in exactly the order they were produced, and each update element holds the
    values of the last record merged into it."""
    rng = random.Random(seed)
    lane = Lane(Batcher(2_000, Limits(3, 4), coalesce="backlog"))
    produced: dict[str, list[int]] = {}
    for i in range(400):
        c = f"c{min(rng.randint(1, 8), rng.randint(1, 8))}"  # skewed: low numbers more often
        produced.setdefault(c, []).append(i)
        kind = rng.random()
        if kind < 0.7:
            lane.add(update(c, v=i, **{f"k{i % 5}": i}))
        else:
            lane.add(event(c, f"a{i}"))
        if lane.queue and rng.random() < 0.1:
            lane.take()
    seen: dict[str, list[int]] = {}
    for batch in lane.close():
        assert batch.size <= 2_000
        carried = offsets(batch)
        for index, el in enumerate(elements(batch)):
            offs = carried[index]
            seen.setdefault(el["customer_id"], []).extend(offs)
            if el["type"] == "customer":
                assert el["attributes"]["v"] == max(offs)
            else:
                assert [a["action"] for a in el["actions"]] == [f"a{o}" for o in offs]
    assert seen == produced


# ----- acknowledgement by the 200 that carried it -----------------------------------------------


class GatedClient:
    """Holds each request until the test answers it; remembers every body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.posted = asyncio.Event()
        self.answer = asyncio.Event()

    async def post(self, body: bytes) -> Answer:
        self.bodies.append(body)
        self.posted.set()
        await self.answer.wait()
        self.answer.clear()
        return Answer(200, Verdict.ACCEPTED)


async def test_each_merged_record_is_acknowledged_by_the_200_that_carried_it() -> None:
    ledger = OffsetLedger()
    ledger.assign([("t", 0)])
    tracker = ledger.tracker(("t", 0))
    assert tracker is not None
    now = [0.0]
    sleeping = asyncio.Event()
    wake = asyncio.Event()

    async def sleep(_seconds: float) -> None:  # waits for the test to move the clock
        sleeping.set()
        await wake.wait()
        wake.clear()

    budget = Budget(16, None, now=0, window=60)  # 2 users a request
    client = GatedClient()
    accepted: list[tuple[bytes, list[int]]] = []
    delivery = Delivery(
        client,  # type: ignore[arg-type]
        budget,
        lanes=1,
        max_request_bytes=100_000,
        retry=RetryPolicy(0.1, 1.0),
        on_rejected=lambda slot, err: pytest.fail(f"rejected {slot.offset}: {err}"),
        coalesce="backlog",
        sleep=sleep,
        clock=lambda: now[0],
        on_accepted=lambda b: accepted.append((b.body(), [s.offset for s in b.slots])),
    )
    slots: list[Slot] = []

    def add(element: dict[str, Any]) -> None:
        slot = tracker.track(len(slots), 1)
        slots.append(slot)
        cost = Cost(events=1) if element["type"] == "event" else Cost(users=1)
        data = orjson.dumps(element)
        delivery.add(data, slot, cost, element["customer_id"], now[0], element=element)
        slot.release()

    def done() -> list[int]:
        return [s.offset for s in slots if s.remaining == 0]

    budget.take(16, 0, 0)  # the window is spent: requests wait for the budget
    add(update("c1", v=0))
    add(update("c2", v=1))
    add(update("c3", v=2))  # request A = [c1, c2] waits in the queue
    delivery.start()
    try:
        await asyncio.wait_for(sleeping.wait(), 5)  # the lane waits for room, A still in its queue
        add(update("c1", v=3))  # merged into A
        add(event("c2", "Purchase"))
        add(update("c2", v=5))  # behind c2's event: not merged into A
        assert done() == []
        now[0] = 62.0
        client.posted.clear()
        wake.set()
        await asyncio.wait_for(client.posted.wait(), 5)  # A is sent and waits for its answer
        add(update("c1", v=6))  # A is sent: never merged into; closes B = [c3, event, c2]
        assert done() == []
        client.posted.clear()
        client.answer.set()  # A's 200
        await asyncio.wait_for(client.posted.wait(), 5)  # B is sent
        assert done() == [0, 1, 3]
        delivery.flush_all()  # C = [c1 v=6]
        client.posted.clear()
        client.answer.set()  # B's 200
        await asyncio.wait_for(client.posted.wait(), 5)
        assert done() == [0, 1, 2, 3, 4, 5]
        client.answer.set()  # C's 200
        await asyncio.wait_for(delivery.wait_idle(), 5)
    finally:
        await delivery.stop()
    assert [offs for _, offs in accepted] == [[0, 1, 3], [2, 4, 5], [6]]
    bodies = [orjson.loads(body)["elements"] for body, _ in accepted]
    assert bodies[0] == [update("c1", v=3), update("c2", v=1)]
    assert bodies[1] == [update("c3", v=2), event("c2", "Purchase"), update("c2", v=5)]
    assert bodies[2] == [update("c1", v=6)]
    assert ledger.committable() == {("t", 0): 7}


# ----- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "mode"),
    [(None, "backlog"), (True, "backlog"), (False, "off"), ("request", "request"), ("off", "off")],
)
def test_coalesce_setting(given: object, mode: str) -> None:
    raw = minimal_raw()
    if given is not None:
        raw["moengage"]["coalesce"] = given
    assert parse_settings(raw, base_dir=Path("."), environ={}).moengage.coalesce == mode


def test_an_unknown_coalesce_mode_is_refused_with_the_choices() -> None:
    raw = minimal_raw()
    raw["moengage"]["coalesce"] = "always"
    with pytest.raises(ConfigError) as e:
        parse_settings(raw, base_dir=Path("."), environ={})
    assert "moengage.coalesce" in str(e.value)
    assert "backlog" in str(e.value)
