"""Poison or outage: the pure decision table, then the lanes acting on it against a scripted
MoEngage whose clock is the test's (``moengage.max_retry_seconds``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from connector.batching import Cost
from connector.config import parse_settings
from connector.deadletter import error_headers
from connector.errors import RecordRef, RejectedByApiError
from connector.offsets import OffsetLedger, Slot
from connector.ratelimit import Budget
from connector.sink.client import Answer, Verdict, classify
from connector.sink.delivery import Delivery, RetryPolicy
from connector.sink.poison import ALONE_ATTEMPTS, Decision, ServerErrorJudge
from tests.unit.configs import minimal_raw

OK = Answer(200, Verdict.ACCEPTED)
FAIL = Answer(500, Verdict.RETRY, "Server Error", "An unexpected error", "rq1")

# ----- the decision table ----------------------------------------------------------------------


def decide(
    judge: ServerErrorJudge, now: float, *, since: float = 0.0, **kw: int | bool
) -> Decision:
    args: dict[str, int | bool] = {"size": 4, "isolating": False, "lone_failures": 0, **kw}
    return judge.decide(0, since, now, **args)  # type: ignore[arg-type]


def test_before_the_limit_a_failing_request_just_waits() -> None:
    judge = ServerErrorJudge(60.0)
    judge.accepted(50.0)
    assert decide(judge, 59.0) is Decision.WAIT


def test_past_the_limit_with_a_recent_200_and_no_other_failure_it_is_bisected() -> None:
    judge = ServerErrorJudge(60.0)
    judge.accepted(30.0)
    assert decide(judge, 61.0) is Decision.BISECT


def test_past_the_limit_without_any_200_it_is_an_outage() -> None:
    assert decide(ServerErrorJudge(60.0), 61.0) is Decision.OUTAGE


def test_another_lane_failing_after_the_latest_200_makes_it_an_outage() -> None:
    judge = ServerErrorJudge(60.0)
    judge.accepted(30.0)
    judge.failed(1, 40.0)
    assert decide(judge, 61.0) is Decision.OUTAGE
    judge.accepted(45.0)  # and a later 200 answers that failure
    assert decide(judge, 61.0) is Decision.BISECT


def test_the_request_s_own_lane_failing_is_not_evidence_of_an_outage() -> None:
    judge = ServerErrorJudge(60.0)
    judge.accepted(30.0)
    judge.failed(0, 61.0)
    assert decide(judge, 61.0) is Decision.BISECT


def test_a_200_older_than_the_limit_is_no_evidence() -> None:
    judge = ServerErrorJudge(60.0)
    judge.accepted(10.0)
    assert decide(judge, 70.5, since=5.0) is Decision.OUTAGE


def test_a_piece_being_isolated_is_judged_at_once_and_alone_only_after_repeated_failures() -> None:
    judge = ServerErrorJudge(60.0)
    judge.accepted(100.0)
    assert decide(judge, 101.0, since=40.0, isolating=True) is Decision.BISECT
    for n in range(1, ALONE_ATTEMPTS):
        got = decide(judge, 101.0, since=40.0, isolating=True, size=1, lone_failures=n)
        assert got is Decision.WAIT
    got = decide(judge, 101.0, since=40.0, isolating=True, size=1, lone_failures=ALONE_ATTEMPTS)
    assert got is Decision.DEAD_LETTER
    got = decide(judge, 101.0, since=100.5, isolating=True, size=1, lone_failures=ALONE_ATTEMPTS)
    assert got is Decision.OUTAGE  # no 200 since the request began failing
    judge.failed(3, 102.0)  # an outage begins: the lone element is kept, not dead-lettered
    got = decide(judge, 103.0, since=40.0, isolating=True, size=1, lone_failures=9)
    assert got is Decision.OUTAGE


def test_a_lane_that_just_dead_lettered_judges_its_next_failures_at_once() -> None:
    judge = ServerErrorJudge(60.0)
    judge.accepted(100.0)
    judge.dead_lettered(0, 100.0)
    assert decide(judge, 101.0, since=101.0) is Decision.BISECT  # not 60 s more
    assert judge.decide(1, 101.0, 101.0, size=4, isolating=False, lone_failures=0) is (
        Decision.WAIT  # another lane waits the limit as usual
    )
    judge.accepted(170.0)
    assert decide(judge, 171.0, since=171.0) is Decision.WAIT  # the limit has passed since


def test_null_retries_for_ever() -> None:
    judge = ServerErrorJudge(None)
    judge.accepted(1e6)
    assert decide(judge, 1e6 + 1, size=1, lone_failures=100) is Decision.WAIT


def test_the_setting_has_a_documented_default_and_null_means_for_ever() -> None:
    here = {"base_dir": Path("."), "environ": {}}
    assert parse_settings(minimal_raw(), **here).moengage.max_retry_seconds == 600.0  # type: ignore[arg-type]
    raw = minimal_raw(moengage={"base_url": "http://127.0.0.1:9", "max_retry_seconds": None})
    assert parse_settings(raw, **here).moengage.max_retry_seconds is None  # type: ignore[arg-type]


# ----- the lanes -------------------------------------------------------------------------------


class Api:
    """MoEngage, scripted: ``fails(body, now)`` says which requests get a 500."""

    def __init__(self, fails: Callable[[bytes, float], bool], clock: Callable[[], float]):
        self.fails, self.clock = fails, clock
        self.accepted: list[bytes] = []
        self.failed = 0

    async def post(self, body: bytes) -> Answer:
        if self.fails(body, self.clock()):
            self.failed += 1
            return FAIL
        self.accepted.append(body)
        return OK


class Lanes:
    """Four lanes, a fake clock moved by every wait, and a trickle of records for customers of
    other lanes every ``every`` seconds of that clock (the rest of the stream)."""

    def __init__(self, fails: Callable[[bytes, float], bool], *, every: float | None) -> None:
        self.now = 0.0
        self.ledger = OffsetLedger()
        self.ledger.assign([("t", 0)])
        self.rejected: list[tuple[Slot, RejectedByApiError]] = []
        self.api = Api(fails, lambda: self.now)
        self.every, self.next_trickle, self.offset = every, 0.0, 0
        self.problems: list[str] = []

        async def sleep(seconds: float) -> None:
            self.now += seconds
            while self.every is not None and self.now >= self.next_trickle:
                self.next_trickle += self.every
                self.add(f"other{self.offset}", lane_not=self.lane_of("poison"))
                self.delivery.flush_all()
            problem = self.delivery.api_problem()
            if problem:
                self.problems.append(problem)

        self.delivery = Delivery(
            self.api,  # type: ignore[arg-type]
            Budget(None, None, now=0),
            lanes=4,
            max_request_bytes=100_000,
            retry=RetryPolicy(0.1, 2.0, max_retry=30.0),
            on_rejected=lambda slot, err: self.rejected.append((slot, err)),
            sleep=sleep,
            clock=lambda: self.now,
            unready_after=5.0,
        )

    def lane_of(self, customer: str) -> int:
        return hash(customer) % len(self.delivery.lanes)

    def add(self, customer: str, lane_not: int | None = None) -> Slot:
        if lane_not is not None:  # keep the trickle out of the poison's lane
            n = 0
            while self.lane_of(f"{customer}-{n}") == lane_not:
                n += 1
            customer = f"{customer}-{n}"
        tracker = self.ledger.tracker(("t", 0))
        assert tracker is not None
        slot = tracker.track(self.offset, 1)
        self.offset += 1
        el = orjson.dumps({"type": "customer", "customer_id": customer, "attributes": {"a": 1}})
        self.delivery.add(el, slot, Cost(users=1), customer, now=self.now)
        slot.release()
        return slot

    def poison_lane_customers(self, n: int) -> list[str]:
        lane = self.lane_of("poison")
        out, i = [], 0
        while len(out) < n:
            if self.lane_of(f"c{i}") == lane:
                out.append(f"c{i}")
            i += 1
        return out

    async def run_until(self, done: Callable[[], bool], fake_seconds: float) -> None:
        self.delivery.flush_all()
        self.delivery.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10  # real seconds: a stalled lane fails the test, not hangs it
        try:
            while not done() and self.now < fake_seconds:
                assert loop.time() < deadline, "the lanes stopped moving"
                await asyncio.sleep(0)
        finally:
            await self.delivery.stop()

    def delivered(self, customer: str) -> bool:
        return any(f'"customer_id":"{customer}"'.encode() in b for b in self.api.accepted)


def poison_fails(body: bytes, _now: float) -> bool:
    return b'"customer_id":"poison"' in body


async def test_a_poison_element_is_isolated_dead_lettered_and_the_rest_delivered() -> None:
    lanes = Lanes(poison_fails, every=1.0)
    before, after = lanes.poison_lane_customers(8)[:4], lanes.poison_lane_customers(8)[4:]
    slots = [lanes.add(c) for c in before]
    poison = lanes.add("poison")
    slots += [lanes.add(c) for c in after]
    await lanes.run_until(lambda: bool(lanes.rejected), 600)

    assert [s for s, _ in lanes.rejected] == [poison]
    err = lanes.rejected[0][1]
    assert err.rule == "send.persistent_server_error"
    assert err.stage == "send"
    headers = dict(error_headers(err.at(RecordRef("t", 0, poison.offset))))
    assert headers["moengage.error.status"] == b"500"
    assert b"HTTP 500 Server Error: An unexpected error" in headers["moengage.error.answers"]
    assert all(lanes.delivered(c) for c in before + after)
    assert lanes.now >= 30.0  # not before max_retry_seconds
    # At least once: the dead-letter write is not confirmed yet, so the commit stops there.
    assert lanes.ledger.committable() == {("t", 0): poison.offset}
    poison.ack()  # the broker's confirmation (badinput.py does this from the delivery report)
    assert lanes.ledger.committable()[("t", 0)] > poison.offset


async def test_the_same_poison_customer_in_later_requests_costs_one_limit_not_one_each() -> None:
    lanes = Lanes(poison_fails, every=1.0)
    customers = lanes.poison_lane_customers(6)
    poisons = []
    for i in range(3):  # three requests in the poison's lane, each holding it
        lanes.add(customers[2 * i])
        poisons.append(lanes.add("poison"))
        lanes.add(customers[2 * i + 1])
        lanes.delivery.flush_all()
    await lanes.run_until(lambda: len(lanes.rejected) == 3, 600)

    assert [s for s, _ in lanes.rejected] == poisons
    assert all(lanes.delivered(c) for c in customers)
    assert 30.0 <= lanes.now < 60.0  # one max_retry_seconds, not three


async def test_an_outage_soon_after_a_poison_dead_letters_nothing_else() -> None:
    outage = [False]
    lanes = Lanes(lambda body, _now: outage[0] or poison_fails(body, _now), every=1.0)
    lanes.add("poison")
    await lanes.run_until(lambda: bool(lanes.rejected), 600)
    # The poison is out; the rest of the stream stops (the other lanes go idle) and every
    # request fails from now on, within max_retry_seconds of that dead-letter.
    lanes.every, outage[0] = None, True
    innocent = [lanes.add(c) for c in lanes.poison_lane_customers(4)]
    start = lanes.now
    await lanes.run_until(lambda: False, start + 25)
    assert len(lanes.rejected) == 1
    assert all(s.remaining > 0 for s in innocent)


async def test_an_outage_dead_letters_nothing_and_says_so_then_delivers_everything() -> None:
    # Every request fails for 120 s of the clock (four times max_retry_seconds), the rest of
    # the stream included; then the API is back.
    lanes = Lanes(lambda _b, now: now < 120.0, every=1.0)
    first = [lanes.add(c) for c in lanes.poison_lane_customers(6)]
    await lanes.run_until(lambda: lanes.now >= 120 and lanes.delivery.idle(), 600)

    assert lanes.rejected == []
    assert all(s.remaining == 0 for s in first)
    assert lanes.api.failed > 20
    assert any("an outage" in p and "nothing is dead-lettered" in p for p in lanes.problems)
    assert lanes.ledger.pending_records() == 0


@pytest.mark.parametrize("every", [None, 1000.0])
async def test_an_instance_with_nothing_else_accepted_waits_instead_of_dead_lettering(
    every: float | None,
) -> None:
    lanes = Lanes(poison_fails, every=every)
    lanes.add("poison")
    lanes.add(lanes.poison_lane_customers(1)[0])
    await lanes.run_until(lambda: False, 300)
    assert lanes.rejected == []
    assert any("an outage" in p for p in lanes.problems)


def test_a_server_error_that_is_not_moengage_s_quotes_the_start_of_its_body_without_secrets() -> (
    None
):
    answer = classify(502, b"<html>Bad gateway: key s3cret</html>", secrets=["s3cret"])
    assert answer.verdict is Verdict.RETRY
    assert answer.describe() == (
        "HTTP 502: not MoEngage's error answer: <html>Bad gateway: key [redacted]</html>"
    )
    moengage = classify(500, b'{"status": "fail", "error": {"type": "Server Error"}}')
    assert moengage.describe() == "HTTP 500 Server Error"
