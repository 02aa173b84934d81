"""take_all: the loop's hand-over of a fetched batch, record by record, without holding the
event loop for the whole batch."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

from connector.flow import take_all

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
