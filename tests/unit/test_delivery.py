"""The delivery policy against a scripted client: only MoEngage's success answer acknowledges
anything, answers that are not MoEngage's blame no element, waits are bounded and a stop ends
them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from connector.batching import Cost
from connector.config import parse_settings
from connector.errors import FatalApiError, RejectedByApiError
from connector.observability.metrics import Metrics
from connector.offsets import OffsetLedger, Slot
from connector.ratelimit import Budget, Spend
from connector.sink.client import Answer, Verdict, classify, parse_retry_after
from connector.sink.delivery import Delivery, RetryPolicy, make_delivery
from tests.unit.configs import minimal_raw

OK = Answer(200, Verdict.ACCEPTED)


def moengage_error(etype: str, message: str) -> bytes:
    """MoEngage's error body (Bulk Import API, error samples)."""
    error = {"message": message, "type": etype, "request_id": "oWvxnUuo"}
    return orjson.dumps({"status": "fail", "error": error})


class ScriptedClient:
    """Answers each POST with the next scripted answer, or with ``rule(body)`` once exhausted."""

    def __init__(self, script: list[Answer], rule: Callable[[bytes], Answer] | None = None):
        self.script = list(script)
        self.rule = rule or (lambda _body: OK)
        self.bodies: list[bytes] = []

    async def post(self, body: bytes) -> Answer:
        self.bodies.append(body)
        return self.script.pop(0) if self.script else self.rule(body)


def splits(h: Harness, reason: str) -> float:
    """Requests the lanes cut in two for ``reason`` (the requests_split_total metric)."""
    registry = h.delivery.metrics.registry
    value = registry.get_sample_value("moengage_connector_requests_split_total", {"reason": reason})
    return value or 0.0


class Harness:
    def __init__(
        self,
        client: ScriptedClient,
        lanes: int = 1,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
        unready_after: float = 10.0,
    ) -> None:
        self.ledger = OffsetLedger()
        self.ledger.assign([("t", 0)])
        self.rejected: list[tuple[int, RejectedByApiError]] = []
        self.sleeps: list[float] = []
        self.now = 0.0

        async def fake_sleep(seconds: float) -> None:
            self.sleeps.append(seconds)
            self.now += seconds

        self.delivery = Delivery(
            client,  # type: ignore[arg-type]
            budget or Budget(None, None, now=0),
            lanes=lanes,
            max_request_bytes=100_000,
            retry=retry or RetryPolicy(0.1, 5.0),
            on_rejected=lambda slot, err: self.rejected.append((slot.offset, err)),
            sleep=fake_sleep,
            clock=lambda: self.now,
            unready_after=unready_after,
        )

    def add(self, offset: int, customer: str, extra: str = "") -> Slot:
        tracker = self.ledger.tracker(("t", 0))
        assert tracker is not None
        slot = tracker.track(offset, 1)
        el = orjson.dumps({"type": "customer", "customer_id": customer, "attributes": {"x": extra}})
        self.delivery.add(el, slot, Cost(users=1), customer, now=0)
        slot.release()
        return slot

    async def deliver(self) -> None:
        self.delivery.flush_all()
        self.delivery.start()
        try:
            await asyncio.wait_for(self.delivery.wait_idle(), 5)
        finally:
            await self.delivery.stop()


async def test_200_acknowledges_every_record_in_the_request() -> None:
    h = Harness(ScriptedClient([]))
    for i in range(3):
        h.add(i, f"user{i}")
    await h.deliver()
    assert h.ledger.committable() == {("t", 0): 3}


async def test_5xx_is_retried_and_nothing_is_acknowledged_until_the_200() -> None:
    client = ScriptedClient([Answer(503, Verdict.RETRY), Answer(0, Verdict.RETRY, "Timeout")])
    h = Harness(client)
    h.add(0, "user0")
    await h.deliver()
    assert len(client.bodies) == 3
    assert client.bodies[0] == client.bodies[2]  # the same request, resent
    assert h.delivery.metrics.counts.retries == 2
    assert h.ledger.committable() == {("t", 0): 1}


async def test_backoff_grows_and_stays_under_the_cap() -> None:
    client = ScriptedClient([Answer(500, Verdict.RETRY)] * 12)
    h = Harness(client)
    h.add(0, "user0")
    await h.deliver()
    assert len(h.sleeps) == 12
    assert all(0 <= s <= 5.0 for s in h.sleeps)
    assert max(h.sleeps[6:]) > max(h.sleeps[:2])  # jittered, but the ceiling grows


async def test_429_waits_at_least_retry_after() -> None:
    client = ScriptedClient([Answer(429, Verdict.THROTTLED, retry_after=7.0)])
    h = Harness(client)
    h.add(0, "user0")
    await h.deliver()
    assert h.sleeps
    assert h.sleeps[0] >= 7.0
    assert h.ledger.committable() == {("t", 0): 1}


async def test_413_splits_the_request_and_delivers_both_halves() -> None:
    client = ScriptedClient([Answer(413, Verdict.TOO_LARGE)])
    h = Harness(client)
    for i in range(4):
        h.add(i, f"user{i}")
    await h.deliver()
    counts = [len(orjson.loads(b)["elements"]) for b in client.bodies]
    assert counts == [4, 2, 2]
    assert h.ledger.committable() == {("t", 0): 4}


async def test_400_bisects_to_the_rejected_element_and_delivers_the_rest() -> None:
    def rule(body: bytes) -> Answer:
        if b'"poison"' in body:
            return Answer(400, Verdict.REJECTED, "MissingAttributeError", "bad")
        return OK

    client = ScriptedClient([], rule)
    h = Harness(client)
    for i in range(8):
        h.add(i, f"user{i}", extra="poison" if i == 5 else "")
    await h.deliver()
    assert [off for off, _ in h.rejected] == [5]
    assert h.rejected[0][1].rule == "api.rejected"
    # Records before the rejected one are committable; the rejected one blocks the rest.
    assert h.ledger.committable() == {("t", 0): 5}
    delivered = [
        e["customer_id"]
        for b in client.bodies
        if b'"poison"' not in b
        for e in orjson.loads(b)["elements"]
    ]
    assert sorted(delivered) == [f"user{i}" for i in range(8) if i != 5]


@pytest.mark.parametrize("status", [401, 403, 409, 415])
async def test_fatal_answers_stop_delivery_and_acknowledge_nothing(status: int) -> None:
    client = ScriptedClient([classify(status, moengage_error("x", "m"))])
    h = Harness(client)
    h.add(0, "user0")
    await h.deliver()
    assert isinstance(h.delivery.fatal, FatalApiError)
    assert h.delivery.fatal.status == status
    assert len(client.bodies) == 1
    assert h.ledger.committable() == {}


async def test_account_level_400_is_fatal_not_bisected() -> None:
    answer = classify(400, moengage_error("Blacklisted", "blacklisted"))
    client = ScriptedClient([answer])
    h = Harness(client)
    for i in range(4):
        h.add(i, f"user{i}")
    await h.deliver()
    assert h.delivery.fatal is not None
    assert h.rejected == []
    assert len(client.bodies) == 1


async def test_one_customer_always_goes_to_the_same_lane() -> None:
    h = Harness(ScriptedClient([]), lanes=8)
    for i in range(20):
        h.add(i, "same-customer")
    assert sum(1 for lane in h.delivery.lanes if lane.batcher.current.parts) == 1


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None


async def test_a_request_costing_more_than_the_budget_holds_is_split_not_stuck() -> None:
    client = ScriptedClient([])
    budget = Budget(80, None, now=0)  # one request may cost 80 / 8 = 10 users
    h = Harness(client, budget=budget)
    for i in range(8):
        h.add(i, f"user{i}")  # 8 users: one request while batching
    budget.set_share(1 / 16, now=0)  # then the share shrinks to 5 users a window
    await h.deliver()
    counts = [len(orjson.loads(b)["elements"]) for b in client.bodies]
    assert counts == [5, 3]  # as much as the window holds, then the rest once it has room
    assert splits(h, "room") == 1
    assert h.ledger.committable() == {("t", 0): 8}
    assert h.sleeps  # the second part waited for the window to slide


async def test_a_request_that_no_longer_fits_whole_is_halved_when_nothing_fits_now() -> None:
    client = ScriptedClient([])
    budget = Budget(80, None, now=0)
    h = Harness(client, budget=budget)
    for i in range(8):
        h.add(i, f"user{i}")
    budget.set_share(1 / 16, now=0)  # 5 users a window, and the window is already spent
    budget.take(5, 0, now=0)
    await h.deliver()
    counts = [len(orjson.loads(b)["elements"]) for b in client.bodies]
    assert sum(counts) == 8
    assert max(counts) <= 5
    assert splits(h, "budget") >= 1
    assert h.ledger.committable() == {("t", 0): 8}


async def test_the_room_left_in_the_window_is_used_by_the_first_part_of_a_request() -> None:
    """A request that does not fit whole but mostly does: its leading elements go now, in order,
    the rest once the window slides; the window never holds more than the budget."""
    client = ScriptedClient([])
    budget = Budget(160, None, now=0, window=10)  # a request may cost 160 / 8 = 20 users
    h = Harness(client, budget=budget)
    budget.take(145, 0, now=0)  # 15 users of room left in this window
    for i in range(20):
        h.add(i, f"user{i}")  # one request of 20 users
    await h.deliver()
    bodies = [[e["customer_id"] for e in orjson.loads(b)["elements"]] for b in client.bodies]
    assert [len(b) for b in bodies] == [15, 5]
    assert [c for b in bodies for c in b] == [f"user{i}" for i in range(20)]  # order kept
    assert splits(h, "room") == 1
    assert h.sleeps
    assert h.now >= 10  # the last 5 waited for the first spend to leave the window
    assert h.ledger.committable() == {("t", 0): 20}


async def test_a_small_room_is_not_filled_with_a_tiny_request_when_the_whole_fits_soon() -> None:
    client = ScriptedClient([])
    budget = Budget(160, None, now=-20, window=10)  # entries leave the window 10.2 s late
    h = Harness(client, budget=budget)
    budget.take(20, 0, now=-10.1)  # leaves the window at 0.1 s
    budget.take(137, 0, now=0)  # 3 users of room: under a quarter of the 20-user request
    for i in range(20):
        h.add(i, f"user{i}")
    await h.deliver()
    assert [len(orjson.loads(b)["elements"]) for b in client.bodies] == [20]
    assert splits(h, "room") == 0
    assert h.now == pytest.approx(0.1)  # it waited the tenth of a second, not a window


async def test_a_small_room_is_filled_when_the_whole_would_wait_a_window() -> None:
    # The end of a burst: the room left would sit unspent until the burst itself leaves.
    client = ScriptedClient([])
    budget = Budget(160, None, now=-20, window=10)
    h = Harness(client, budget=budget)
    budget.take(157, 0, now=0)  # 3 users of room, and the whole request fits only at 10.2 s
    for i in range(20):
        h.add(i, f"user{i}")
    await h.deliver()
    assert [len(orjson.loads(b)["elements"]) for b in client.bodies] == [3, 17]
    assert splits(h, "room") == 1
    assert h.ledger.committable() == {("t", 0): 20}


async def test_the_room_is_judged_when_a_lane_gets_the_budget_not_before_it_queued() -> None:
    # Two lanes. Lane one waits 0.1 s for its whole request, holding the budget; lane two
    # queues behind it, when its own request would also fit 0.1 s later. Once lane one has
    # paid, lane two's whole request fits only a window later: the room left goes now.
    sent: list[tuple[float, int]] = []

    class TimedClient(ScriptedClient):
        async def post(self, body: bytes) -> Answer:
            sent.append((h.now, len(orjson.loads(body)["elements"])))
            return OK

    budget = Budget(160, None, now=-20, window=10)  # a request may cost 20 users
    h = Harness(TimedClient([]), lanes=2, budget=budget)
    budget.take(20, 0, now=-10.1)  # leaves the window at 0.1 s
    budget.take(137, 0, now=0)  # 3 users of room until then
    lanes = [[c for c in (f"user{i}" for i in range(200)) if hash(c) % 2 == k][:20] for k in (0, 1)]
    for n, customer in enumerate(lanes[0] + lanes[1]):
        h.add(n, customer)
    await h.deliver()
    assert sent[0] == (pytest.approx(0.1), 20)  # lane one, once the old spend left
    assert sent[1] == (pytest.approx(0.1), 3)  # lane two: the room left, at once
    assert sent[2][1] == 17  # the rest
    assert sent[2][0] >= 10  # a window later
    assert h.ledger.committable() == {("t", 0): 40}


async def test_a_429_refunds_and_settles_under_what_was_accepted() -> None:
    budget = Budget(1000, None, now=-100)  # long after start-up: a 429 is a real signal
    budget.take(400, 0, now=-1)  # the account accepted 400 users this window
    h = Harness(ScriptedClient([Answer(429, Verdict.THROTTLED, retry_after=1.0)]), budget=budget)
    h.add(0, "user0")
    await h.deliver()
    assert budget.max_users == 360  # the refunded request does not count as accepted
    assert h.delivery.metrics.counts.throttled == 1


async def test_a_spend_counts_from_its_answer_and_a_429_voids_it() -> None:
    budget = Budget(100, None, now=-100, window=10)  # entries leave the window 10.2 s late
    answers = [Answer(429, Verdict.THROTTLED, retry_after=1.0), OK]

    class SlowClient(ScriptedClient):
        async def post(self, body: bytes) -> Answer:
            self.bodies.append(body)
            h.now += 2.0  # every answer takes two seconds
            return answers.pop(0)

    h = Harness(SlowClient([]), budget=budget)
    h.add(0, "user0")
    await h.deliver()
    answered = h.now
    assert budget.spent(answered) == Spend(1, 0)  # the 429'd attempt is gone, the 200 is in
    assert budget.spent(answered + 10.1) == Spend(1, 0)  # dated from the answer, not the send
    assert budget.spent(answered + 10.3) == Spend(0, 0)
    assert h.ledger.committable() == {("t", 0): 1}


async def test_a_crashing_lane_is_reported_not_left_stalled() -> None:
    def explode(_body: bytes) -> Answer:
        raise RuntimeError("bug in the client")

    h = Harness(ScriptedClient([], explode))
    h.add(0, "user0")
    await h.deliver()  # returns: wait_idle does not hang on a dead lane
    assert isinstance(h.delivery.crashed, RuntimeError)
    assert h.ledger.committable() == {}


def test_the_oldest_open_batch_sets_when_the_linger_clock_fires_next() -> None:
    h = Harness(ScriptedClient([]), lanes=4)
    assert h.delivery.next_linger_due(0.2) is None  # nothing open: nothing to wake for
    tracker = h.ledger.tracker(("t", 0))
    assert tracker is not None
    for offset, (customer, at) in enumerate([("a", 1.0), ("b", 1.05), ("c", 1.1)]):
        slot = tracker.track(offset, 1)
        el = orjson.dumps({"type": "customer", "customer_id": customer, "attributes": {}})
        h.delivery.add(el, slot, Cost(users=1), customer, now=at)
    opened = sorted(lane.opened_at for lane in h.delivery.lanes if lane.opened_at is not None)
    assert h.delivery.next_linger_due(0.2) == pytest.approx(opened[0] + 0.2)
    h.delivery.flush_lingering(opened[0] + 0.2, 0.2)  # the clock fires: that batch closes
    still_open = sorted(lane.opened_at for lane in h.delivery.lanes if lane.opened_at is not None)
    assert opened[0] not in still_open
    due = h.delivery.next_linger_due(0.2)
    assert due is None or due == pytest.approx(still_open[0] + 0.2)


def test_flush_idle_closes_only_the_open_batches_of_lanes_with_nothing_to_send() -> None:
    h = Harness(ScriptedClient([]), lanes=2)
    a, b = h.delivery.lanes
    customers: dict[int, str] = {}
    for name in (f"c{i}" for i in range(50)):  # one customer for each lane
        customers.setdefault(hash(name) % 2, name)
    for offset, lane in enumerate((0, 1)):
        h.add(offset, customers[lane])
    a.busy = True  # lane 0 has a request in flight: its open batch may still fill
    h.delivery.flush_idle()
    assert (len(a.queue), a.opened_at is not None) == (0, True)
    assert (len(b.queue), b.opened_at) == (1, None)  # lane 1 was idle: its batch goes out now


# ----- answers that are not MoEngage's ----------------------------------------------------------

HTML_400 = b"<html><body><h1>400 Bad Request</h1>Request blocked by policy</body></html>"


def _elements(body: bytes) -> int:
    return len(orjson.loads(body)["elements"])


async def test_a_200_without_moengage_s_body_acknowledges_nothing_and_ends_fatal() -> None:
    client = ScriptedClient([], lambda body: classify(200, b"<html>It works!</html>"))
    h = Harness(client, retry=RetryPolicy(0.1, 5.0, unexpected_for=20.0))
    for i in range(3):
        h.add(i, f"user{i}")
    await h.deliver()
    assert h.ledger.committable() == {}
    assert isinstance(h.delivery.fatal, FatalApiError)
    assert "It works!" in str(h.delivery.fatal)
    assert "unexpected_answer_max_seconds" in str(h.delivery.fatal)
    assert len(client.bodies) > 2  # resent meanwhile
    assert h.now == pytest.approx(20.0)  # at the bound, not a backoff past it


@pytest.mark.parametrize(
    ("status", "body"),
    [(400, HTML_400), (413, HTML_400), (400, b""), (413, moengage_error("Payload too large", "x"))],
)
async def test_a_400_or_413_not_from_moengage_blames_no_element(status: int, body: bytes) -> None:
    """A proxy answering 400/413 to everything (or a 413 for a small body): never bisected or
    split into bad input; resent whole until the bound, then fatal; nothing acknowledged."""

    def rule(sent: bytes) -> Answer:
        return classify(status, body, sent_bytes=len(sent))

    client = ScriptedClient([], rule)
    h = Harness(client, retry=RetryPolicy(0.1, 5.0, unexpected_for=30.0))
    for i in range(8):
        h.add(i, f"user{i}")
    await h.deliver()
    assert h.rejected == []
    assert h.ledger.committable() == {}
    assert isinstance(h.delivery.fatal, FatalApiError)
    assert h.delivery.fatal.status == status
    assert {_elements(b) for b in client.bodies} == {8}  # always the whole request
    assert splits(h, "divided") == 0


async def test_answers_not_from_moengage_then_a_success_deliver_everything() -> None:
    odd = classify(400, HTML_400)
    success = classify(200, b'{"status":"success","message":"accepted"}')
    client = ScriptedClient([odd, odd, odd], lambda _body: success)
    h = Harness(client, retry=RetryPolicy(0.1, 5.0, unexpected_for=300.0))
    for i in range(4):
        h.add(i, f"user{i}")
    await h.deliver()
    assert h.delivery.fatal is None
    assert h.rejected == []
    assert h.ledger.committable() == {("t", 0): 4}


async def test_moengage_s_own_413_for_a_big_body_still_splits() -> None:
    big = "y" * 20_000

    def rule(sent: bytes) -> Answer:
        if len(sent) > 70_000:
            return classify(413, moengage_error("Payload too large", "x"), sent_bytes=len(sent))
        return OK

    client = ScriptedClient([], rule)
    h = Harness(client)
    for i in range(4):
        h.add(i, f"user{i}", extra=big)
    await h.deliver()
    assert [_elements(b) for b in client.bodies] == [4, 2, 2]
    assert h.ledger.committable() == {("t", 0): 4}


async def test_a_redirect_is_fatal_naming_the_location() -> None:
    moved = classify(301, b"", {"Location": "/landing"}, url="http://127.0.0.1:9/v1/transition/W")
    client = ScriptedClient([moved])
    h = Harness(client)
    h.add(0, "user0")
    await h.deliver()
    assert isinstance(h.delivery.fatal, FatalApiError)
    assert "http://127.0.0.1:9/landing" in str(h.delivery.fatal)
    assert "never follows redirects" in str(h.delivery.fatal)
    assert len(client.bodies) == 1
    assert h.ledger.committable() == {}


# ----- bounded waits and what readiness hears about them ------------------------------------------


async def test_a_huge_retry_after_is_capped_and_logged() -> None:
    client = ScriptedClient([Answer(429, Verdict.THROTTLED, retry_after=864_000.0)])
    h = Harness(client, retry=RetryPolicy(0.1, 5.0, retry_after_cap=90.0))
    h.add(0, "user0")
    with capture_logs() as logs:
        await h.deliver()
    assert h.sleeps == [90.0]
    capped = [e for e in logs if e["event"] == "retry_after_capped"]
    assert len(capped) == 1
    assert capped[0]["retry_after_s"] == 864_000.0
    assert capped[0]["cap_s"] == 90.0
    assert h.ledger.committable() == {("t", 0): 1}


async def test_a_retry_after_under_the_cap_is_honoured() -> None:
    client = ScriptedClient([Answer(429, Verdict.THROTTLED, retry_after=45.0)])
    h = Harness(client, retry=RetryPolicy(0.1, 5.0, retry_after_cap=90.0))
    h.add(0, "user0")
    await h.deliver()
    assert h.sleeps == [45.0]


class Watching(Harness):
    """Records what ``api_problem`` says at the end of every wait."""

    def __init__(self, client: ScriptedClient, **kw: Any) -> None:
        super().__init__(client, **kw)
        self.problems: list[str | None] = []
        waited = self.delivery._sleep

        async def sleep_and_look(seconds: float) -> None:
            await waited(seconds)
            self.problems.append(self.delivery.api_problem())

        self.delivery._sleep = sleep_and_look


async def test_api_problem_says_throttled_while_429s_last_and_clears_on_acceptance() -> None:
    throttled = [Answer(429, Verdict.THROTTLED, retry_after=40.0)] * 2
    h = Watching(ScriptedClient(throttled), unready_after=30.0)
    h.add(0, "user0")
    assert h.delivery.api_problem() is None
    await h.deliver()
    # After the first wait: throttled for 40 s (over the 30 s threshold); then 80 s.
    assert h.problems == [
        "throttled by MoEngage (429) for 40 s",
        "throttled by MoEngage (429) for 80 s",
    ]
    assert h.delivery.api_problem() is None  # the 200 ended it
    assert h.ledger.committable() == {("t", 0): 1}


async def test_api_problem_says_unreachable_once_retries_pass_the_threshold() -> None:
    failing = [Answer(503, Verdict.RETRY, "Server Error", "An unexpected error")] * 10
    h = Watching(ScriptedClient(failing), retry=RetryPolicy(1.0, 4.0), unready_after=5.0)
    h.add(0, "user0")
    await h.deliver()
    late = [p for p, t in zip(h.problems, _elapsed(h.sleeps), strict=True) if t >= 5.0]
    early = [p for p, t in zip(h.problems, _elapsed(h.sleeps), strict=True) if t < 5.0]
    assert late
    assert all(p is None for p in early)  # a short blip does not make the connector unready
    for p in late:
        assert p is not None
        assert p.startswith("MoEngage unreachable: retrying for ")
        assert p.endswith(" s: HTTP 503 Server Error: An unexpected error")
    assert h.delivery.api_problem() is None


def _elapsed(sleeps: list[float]) -> list[float]:
    out, total = [], 0.0
    for s in sleeps:
        total += s
        out.append(total)
    return out


async def test_api_problem_names_answers_not_from_moengage() -> None:
    h = Watching(
        ScriptedClient([], lambda _b: classify(400, HTML_400)),
        retry=RetryPolicy(2.0, 2.0, unexpected_for=60.0),
        unready_after=5.0,
    )
    h.add(0, "user0")
    await h.deliver()
    seen = [p for p in h.problems if p is not None]
    assert seen
    assert seen[-1].startswith("answers not from MoEngage: retrying for ")
    assert "fatal after 60 s" in seen[-1]
    assert "400 Bad Request" in seen[-1]


# ----- stopping during a backoff ----------------------------------------------------------------


class Stalled:
    """A lane's waits that only end when the test says so (a ten-day Retry-After, say)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.never = asyncio.Event()

    async def __call__(self, _seconds: float) -> None:
        self.entered.set()
        await self.never.wait()


async def test_stopping_ends_a_backoff_at_once_and_acknowledges_nothing() -> None:
    client = ScriptedClient([], lambda _b: Answer(429, Verdict.THROTTLED, retry_after=864_000.0))
    h = Harness(client, lanes=2)
    stalled = Stalled()
    h.delivery._sleep = stalled
    for i in range(4):
        h.add(i, f"user{i}")
    h.delivery.flush_all()
    h.delivery.start()
    try:
        await asyncio.wait_for(stalled.entered.wait(), 5)
        waiting = asyncio.ensure_future(h.delivery.wait_idle())
        await asyncio.sleep(0)
        assert not waiting.done()  # a lane is still waiting to resend
        h.delivery.stopping()
        await asyncio.wait_for(waiting, 1)  # returns promptly, not after ten days
        sent = len(client.bodies)
        assert h.ledger.committable() == {}
        assert h.delivery.fatal is None
        assert h.delivery.crashed is None
        await asyncio.sleep(0)
        assert len(client.bodies) == sent  # and nothing is resent after the stop
    finally:
        await h.delivery.stop()


class HeldClient(ScriptedClient):
    """Says when a request was posted, and answers it with ``answer`` once released."""

    def __init__(self, answer: Answer) -> None:
        super().__init__([])
        self.answer = answer
        self.release = asyncio.Event()
        self.posted = asyncio.Event()

    async def post(self, body: bytes) -> Answer:
        self.bodies.append(body)
        self.posted.set()
        await self.release.wait()
        return self.answer


async def test_stopping_lets_a_request_in_flight_finish_and_acknowledge() -> None:
    client = HeldClient(OK)
    release, posted = client.release, client.posted
    h = Harness(client)
    h.add(0, "user0")
    h.delivery.flush_all()
    h.delivery.start()
    try:
        await asyncio.wait_for(posted.wait(), 5)
        h.delivery.stopping()
        waiting = asyncio.ensure_future(h.delivery.wait_idle())
        await asyncio.sleep(0)
        assert not waiting.done()  # the request in flight gets its answer
        release.set()
        await asyncio.wait_for(waiting, 5)
        assert h.ledger.committable() == {("t", 0): 1}
    finally:
        await h.delivery.stop()


async def test_a_lane_answered_with_a_retry_after_stopping_does_not_wait() -> None:
    client = HeldClient(Answer(503, Verdict.RETRY))
    release, posted = client.release, client.posted
    h = Harness(client)
    h.delivery._sleep = Stalled()
    h.add(0, "user0")
    h.delivery.flush_all()
    h.delivery.start()
    try:
        await asyncio.wait_for(posted.wait(), 5)
        h.delivery.stopping()
        release.set()
        await asyncio.wait_for(h.delivery.wait_idle(), 1)
        assert len(client_bodies(h)) == 1
        assert h.ledger.committable() == {}
    finally:
        await h.delivery.stop()


def client_bodies(h: Harness) -> list[bytes]:
    client = h.delivery._client
    assert isinstance(client, ScriptedClient)
    return client.bodies


async def test_the_settings_reach_the_lanes() -> None:
    """make_delivery hands the cap, the bound and the readiness threshold to Delivery."""
    raw = minimal_raw()
    raw["moengage"] = {
        **raw["moengage"],
        "max_retry_after_seconds": 7,
        "unexpected_answer_max_seconds": 11,
        "unready_after_seconds": 13,
    }
    settings = parse_settings(raw, base_dir=Path("."), environ={})
    delivery = make_delivery(
        settings,
        ScriptedClient([]),  # type: ignore[arg-type]
        Budget(None, None, now=0),
        metrics=Metrics(process_metrics=False),
        on_rejected=lambda slot, error: None,
    )
    assert delivery._retry.retry_after_cap == 7
    assert delivery._retry.unexpected_for == 11
    assert delivery._unready_after == 13


def test_the_new_settings_have_documented_defaults() -> None:
    m = parse_settings(minimal_raw(), base_dir=Path("."), environ={}).moengage
    assert (
        m.max_retry_after_seconds,
        m.unexpected_answer_max_seconds,
        m.unready_after_seconds,
    ) == (
        120.0,
        300.0,
        10.0,
    )


async def test_an_element_larger_than_the_budget_goes_alone_and_keeps_the_429_adaptation() -> None:
    """429s have cut the budget to one user a window; an element costing three can never fit.
    It is sent alone once the window is empty; the budget's adaptation (shared by every lane)
    stays. (Delivery used to set the factor back to 1.0 here, undoing it for all lanes.)"""
    budget = Budget(10, None, now=0, window=10)
    budget.factor = 0.1
    assert budget.max_users == 1
    h = Harness(ScriptedClient([]), budget=budget)
    tracker = h.ledger.tracker(("t", 0))
    assert tracker is not None
    slot = tracker.track(0, 1)
    device = orjson.dumps({"type": "device", "customer_id": "u1", "device_id": "d1"})
    h.delivery.add(device, slot, Cost(users=3), "u1", now=0)
    slot.release()
    await h.deliver()
    assert h.ledger.committable() == {("t", 0): 1}
    assert budget.factor == 0.1
