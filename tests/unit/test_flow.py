"""The run loop's small controls: take_all (a fetched batch handed over record by record without
holding the event loop) and Backpressure (a full buffer waits for the lanes, then pauses)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import cast

from connector.config import PipelineSettings
from connector.flow import Backpressure, take_all
from connector.offsets import OffsetLedger
from connector.sink.delivery import Delivery
from connector.source.consumer import KafkaSource

Take = Callable[[int, int, float], Awaitable[None] | None]


def recorder(log: list[object]) -> Take:
    def take(msg: int, epoch: int, now: float) -> None:
        log.append((msg, epoch, now))

    return take


def ticking(step: float) -> Callable[[], float]:
    """A clock that moves ``step`` seconds at every reading."""
    return itertools.count(0.0, step).__next__


async def test_every_message_is_taken_once_in_order_with_its_epoch_and_time() -> None:
    log: list[object] = []
    await take_all(range(100), recorder(log), 7, 1.5, stopped=lambda: False, clock=ticking(1.0))
    assert log == [(m, 7, 1.5) for m in range(100)]


async def test_other_tasks_run_within_a_batch_once_the_slice_is_spent() -> None:
    log: list[object] = []
    seen: list[int] = []  # how many messages were taken when the other task got its turn

    async def lane() -> None:
        seen.append(len(log))

    other = asyncio.create_task(lane())
    # Each reading of the clock is 5 ms later than the one before: the 5 ms slice (due from the
    # first reading) is spent at the first look at the clock, after 32 records.
    await take_all(range(1000), recorder(log), 0, 0.0, stopped=lambda: False, clock=ticking(0.005))
    await other
    assert len(log) == 1000
    assert seen == [32]


async def test_no_turn_is_given_while_the_slice_lasts() -> None:
    log: list[object] = []
    seen: list[int] = []

    async def lane() -> None:
        seen.append(len(log))

    other = asyncio.create_task(lane())
    await take_all(range(1000), recorder(log), 0, 0.0, stopped=lambda: False, clock=lambda: 0.0)
    await other
    assert seen == [1000]


async def test_a_waiting_record_is_awaited_before_the_next_message_is_taken() -> None:
    log: list[object] = []

    async def registry_back(msg: int) -> None:
        await asyncio.sleep(0)  # a real suspension: later messages must still wait for it
        log.append(("finished", msg))

    def take(msg: int, epoch: int, now: float) -> Awaitable[None] | None:
        log.append(("taken", msg))
        return registry_back(msg) if msg == 1 else None

    await take_all(range(3), take, 0, 0.0, stopped=lambda: False, clock=lambda: 0.0)
    assert log == [("taken", 0), ("taken", 1), ("finished", 1), ("taken", 2)]


async def test_a_stop_ends_the_batch_before_the_next_message() -> None:
    log: list[object] = []
    stop = asyncio.Event()

    def take(msg: int, epoch: int, now: float) -> None:
        log.append(msg)
        if msg == 5:
            stop.set()

    await take_all(range(100), take, 0, 0.0, stopped=stop.is_set, clock=lambda: 0.0)
    assert log == list(range(6))


# ----- Backpressure --------------------------------------------------------------------------


class FakeSource:
    def __init__(self) -> None:
        self.assignment = {("t", 0), ("t", 1)}
        self.paused: set[tuple[str, int]] = set()
        self.fresh: set[tuple[str, int]] = set()
        self.calls: list[str] = []

    async def settle_fresh(self, pause: bool) -> None:
        self.calls.append(f"settle_fresh(pause={pause})")
        self.fresh.clear()

    async def pause(self, keys: object) -> None:
        if self.paused != self.assignment:  # like KafkaSource: only partitions not paused yet
            self.calls.append("pause")
        self.paused = set(self.assignment)

    async def resume(self, keys: object) -> None:
        self.calls.append("resume")
        self.paused = set()


class FakeLedger:
    def __init__(self, records: int) -> None:
        self.buffered_records = records
        self.buffered_bytes = records * 100


class FakeDelivery:
    def __init__(self) -> None:
        self.progress = asyncio.Event()
        self.calls: list[str] = []

    async def next_answer(self, seconds: float | None = None) -> None:  # as Delivery's
        self.progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.progress.wait(), seconds)

    def flush_all(self) -> None:
        self.calls.append("flush_all")

    def flush_idle(self) -> None:
        self.calls.append("flush_idle")


def backpressure(
    source: FakeSource,
    ledger: FakeLedger,
    delivery: FakeDelivery,
    stop: asyncio.Event | None = None,
    catch_up_seconds: float = 30.0,
) -> Backpressure:
    settings = PipelineSettings(max_buffered_records=1000, max_buffered_bytes=10**9)
    return Backpressure(
        cast(KafkaSource, source),
        cast(OffsetLedger, ledger),
        settings,
        cast(Delivery, delivery),
        stop or asyncio.Event(),
        catch_up_seconds=catch_up_seconds,
    )


async def test_a_full_buffer_waits_for_answers_and_is_not_paused_when_they_make_room() -> None:
    source, ledger, delivery = FakeSource(), FakeLedger(1000), FakeDelivery()

    async def lanes_answer() -> None:
        for left in (1000, 999):  # an answer that leaves it full, then one that makes room
            await asyncio.sleep(0)
            ledger.buffered_records = left
            delivery.progress.set()

    answers = asyncio.create_task(lanes_answer())
    await backpressure(source, ledger, delivery).apply()  # catch-up time: 30 s, not reached
    await answers
    assert source.calls == []  # never paused: librdkafka keeps its prefetched records
    assert delivery.calls == ["flush_idle"]  # only idle lanes' batches went out early


async def test_lanes_that_make_no_room_in_the_catch_up_time_get_the_partitions_paused() -> None:
    source, ledger, delivery = FakeSource(), FakeLedger(1200), FakeDelivery()
    bp = backpressure(source, ledger, delivery, catch_up_seconds=0.01)
    await bp.apply()
    assert source.calls == ["pause"]
    assert delivery.calls == ["flush_idle", "flush_all"]
    await bp.apply()  # still full and paused: no second wait
    assert delivery.calls == ["flush_idle", "flush_all", "flush_all"]
    ledger.buffered_records = 501  # under the cap, over half of it: stays paused
    await bp.apply()
    assert source.paused
    assert source.calls == ["pause"]
    ledger.buffered_records = 499
    await bp.apply()
    assert source.calls == ["pause", "resume"]


async def test_a_stop_ends_the_catch_up_at_once() -> None:
    source, ledger, delivery = FakeSource(), FakeLedger(1000), FakeDelivery()
    stop = asyncio.Event()

    async def stop_soon() -> None:  # as Connector.request_stop: the stop, and waiters woken
        await asyncio.sleep(0)
        stop.set()
        delivery.progress.set()

    stopper = asyncio.create_task(stop_soon())
    # A catch-up time no test run reaches: only the stop can end this wait.
    await asyncio.wait_for(backpressure(source, ledger, delivery, stop, 3600.0).apply(), 60)
    await stopper
    assert source.calls == ["pause"]


async def test_a_buffer_under_its_cap_neither_waits_nor_pauses() -> None:
    source, ledger, delivery = FakeSource(), FakeLedger(999), FakeDelivery()
    await backpressure(source, ledger, delivery).apply()
    assert source.calls == []
    assert delivery.calls == []
