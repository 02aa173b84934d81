"""Delivery: lanes of batches, sent one request per lane at a time, retried until accepted.

Every customer is routed to one lane by a hash of its id, and a lane sends its batches strictly in
order, one request at a time, retrying in place. So two requests holding the same customer are never
in flight together and a retry can never reorder a customer's updates and events, while different
lanes go out concurrently (``max_in_flight`` lanes).

Lanes act on verdicts (the table is :func:`connector.sink.client.classify`), never on status codes:
ACCEPTED (a 2xx with MoEngage's success body) acknowledges every element's record slot; THROTTLED
waits ``Retry-After`` (capped at ``RetryPolicy.retry_after_cap``) and resends; RETRY (5xx, timeouts,
connection errors) backs off exponentially with full jitter, and once one request has failed so for
``RetryPolicy.max_retry`` seconds :mod:`connector.sink.poison` decides between an outage (keep
waiting, say so) and a poison element (bisect, dead-letter the element that keeps failing alone,
rule ``send.persistent_server_error``); UNEXPECTED (an
answer that is not MoEngage's: a 2xx without its success body, a 400/413 without its error body)
backs off and resends too, and becomes fatal once one request has had such answers for
``RetryPolicy.unexpected_for`` seconds; TOO_LARGE splits the request; REJECTED bisects down to the
elements MoEngage rejects and reports each one as bad input; FATAL (redirects included) raises
:class:`FatalApiError`. Nothing is acknowledged except by ACCEPTED.

With ``coalesce: backlog`` a lane takes up its next batch only once the budget has room for it
(:meth:`Delivery._until_room`): a batch waiting for the budget waits in the queue, where a
customer's next update may still merge into it, and is sealed (:meth:`Batcher.seal`) when the lane
takes it up, so nothing is merged into a request being paid for, sent or retried.

Once requests have gone unaccepted for ``unready_after`` seconds, :meth:`Delivery.api_problem` says
why (for ``/readyz``). :meth:`Delivery.stopping` ends every backoff and throttle wait at once: those
records stay unacknowledged (read again after a restart), while requests in flight get their answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from connector.batching import Batch, Batcher, Cost
from connector.config import Settings
from connector.errors import FatalApiError, RejectedByApiError
from connector.merging import Coalesce
from connector.observability.metrics import Metrics, retry_reason
from connector.offsets import Slot
from connector.ratelimit import Budget, Receipt
from connector.sink.client import (
    FATAL_HINTS,
    UNEXPECTED_HINT,
    Answer,
    MoEngageClient,
    Verdict,
)
from connector.sink.poison import Decision, ServerErrorJudge, persistent_server_error

log = structlog.get_logger(__name__)

RejectHandler = Callable[[Slot, RejectedByApiError], None]
AcceptHandler = Callable[[Batch], None]

_LANE: contextvars.ContextVar[int] = contextvars.ContextVar("lane", default=-1)  # per worker task
LAST_ANSWERS = 3  # server errors quoted when an element is dead-lettered for them


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long lanes wait before resending, and how long they put up with odd answers."""

    initial: float = 0.2
    maximum: float = 30.0
    retry_after_cap: float = 120.0  # a longer Retry-After is cut to this (and logged)
    unexpected_for: float = 300.0  # answers not from MoEngage this long (one request): fatal
    max_retry: float | None = 600.0  # server errors this long (one request): poison or outage?

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Capped exponential backoff with full jitter (AWS architecture blog's "Full Jitter")."""
        return rng.uniform(0, min(self.maximum, self.initial * (2**attempt)))


class _Stopped(Exception):
    """The connector is stopping: a lane leaves its backoff with its batch unacknowledged."""


class Lane:
    """One ordered stream of batches: a batcher, a queue of closed batches, one worker."""

    def __init__(self, index: int, batcher: Batcher) -> None:
        self.index = index
        self.batcher = batcher
        self.queue: deque[Batch] = deque()
        self.wakeup = asyncio.Event()
        self.opened_at: float | None = None  # when the open batch got its first element
        self.busy = False
        self.stopped = False  # gave up waiting to resend because the connector is stopping


class Delivery:
    """Routes elements to lanes and runs the lanes' workers."""

    def __init__(
        self,
        client: MoEngageClient,
        budget: Budget,
        *,
        lanes: int,
        max_request_bytes: int,
        retry: RetryPolicy,
        on_rejected: RejectHandler,
        coalesce: Coalesce = "off",
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] | None = None,
        metrics: Metrics | None = None,
        on_accepted: AcceptHandler | None = None,
        unready_after: float = 10.0,
    ) -> None:
        self._client = client
        self.metrics = metrics or Metrics(process_metrics=False)
        self._on_accepted = on_accepted
        self._posting = 0  # requests awaiting an answer right now
        self._sleep = sleep
        self._clock = clock or asyncio.get_running_loop().time
        self._budget = budget
        self._budget_lock = asyncio.Lock()
        self._retry = retry
        self._on_rejected = on_rejected
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.lanes = [
            Lane(i, Batcher(max_request_bytes, budget, coalesce=coalesce)) for i in range(lanes)
        ]
        # Backlog merging: a lane takes up its next batch only once the budget has room for it,
        # so batches that wait for the budget wait in the queue, where updates still merge.
        self._hold_back = coalesce == "backlog"
        self.fatal: FatalApiError | None = None
        self.crashed: Exception | None = None
        self._unready_after = unready_after
        self._trouble_since: float | None = None  # first unaccepted answer since the last 200
        self._trouble: Answer | None = None  # the latest one
        self._judge = ServerErrorJudge(retry.max_retry)
        self._outage: dict[int, float] = {}  # lane → since when its request waits out an outage
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.progress = asyncio.Event()  # set whenever a request finished: waiters re-check
        self._workers: list[asyncio.Task[None]] = []

    # ----- producer side (called from the run loop, synchronously) ------------------------------

    def add(
        self,
        encoded: bytes,
        slot: Slot,
        cost: Cost,
        customer: str,
        now: float,
        *,
        element: dict[str, Any] | None = None,
    ) -> None:
        lane = self.lanes[hash(customer) % len(self.lanes)]
        was_open = bool(lane.batcher.current.parts)
        closed = lane.batcher.add(encoded, slot, cost, customer, element=element)
        if closed is not None:
            lane.opened_at = now
            self._enqueue(lane, closed)
        elif not was_open and lane.batcher.current.parts:  # not merged into a waiting batch
            lane.opened_at = now

    def add_all(
        self, prepared: list[tuple[bytes, Cost, str, dict[str, Any]]], slot: Slot, now: float
    ) -> None:
        """:meth:`add` for each of one record's prepared elements, in order."""
        lanes = self.lanes
        n = len(lanes)
        for encoded, cost, customer, element in prepared:
            lane = lanes[hash(customer) % n]
            batcher = lane.batcher
            was_open = bool(batcher.current.parts)
            closed = batcher.add(encoded, slot, cost, customer, element=element)
            if closed is not None:
                lane.opened_at = now
                self._enqueue(lane, closed)
            elif not was_open and batcher.current.parts:  # not merged into a waiting batch
                lane.opened_at = now

    def flush_lingering(self, now: float, linger: float) -> None:
        for lane in self.lanes:
            if lane.opened_at is not None and now >= lane.opened_at + linger:
                self._flush_lane(lane)

    def next_linger_due(self, linger: float) -> float | None:
        """When the oldest open batch reaches its linger time (None: no batch is open)."""
        opened = [lane.opened_at for lane in self.lanes if lane.opened_at is not None]
        return min(opened) + linger if opened else None

    def flush_all(self) -> None:
        for lane in self.lanes:
            self._flush_lane(lane)

    def flush_idle(self) -> None:
        """Close the open batch of every lane with nothing queued or in flight."""
        for lane in self.lanes:
            if not lane.busy and not lane.queue:
                self._flush_lane(lane)

    def _flush_lane(self, lane: Lane) -> None:
        closed = lane.batcher.flush()
        lane.opened_at = None
        if closed is not None:
            self._enqueue(lane, closed)

    def _enqueue(self, lane: Lane, batch: Batch) -> None:
        lane.queue.append(batch)
        self._idle.clear()
        lane.wakeup.set()

    # ----- workers --------------------------------------------------------------------------

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(lane)) for lane in self.lanes]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def idle(self) -> bool:
        return all(not lane.queue and not lane.busy for lane in self.lanes)

    def _settled(self) -> bool:
        """Nothing is being sent or waits to be: each lane is idle or has stopped waiting."""
        return all(lane.stopped or (not lane.queue and not lane.busy) for lane in self.lanes)

    async def next_answer(self, seconds: float | None = None) -> None:
        """Until a request finishes (or :attr:`progress` is set for another reason: waiters
        re-check their condition), or ``seconds`` have passed (None: no limit)."""
        self.progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.progress.wait(), seconds)

    async def wait_idle(self) -> None:
        """Until every queued batch has been answered, or given up on because the connector is
        stopping (see :meth:`stopping`), or the connector failed."""
        while not self._settled() and self.fatal is None and self.crashed is None:
            self._idle.clear()
            await self._idle.wait()

    def stopping(self) -> None:
        """The connector is shutting down: lanes waiting to resend (a backoff or a throttle wait)
        stop waiting now and give up their batch, unacknowledged, so it is not committed and is
        read again after a restart. Requests in flight still get their answer, and batches not
        yet sent are still sent once each; only a resend is given up."""
        self._stopping.set()

    def api_problem(self) -> str | None:
        """Why MoEngage is not taking requests, once none has been accepted for ``unready_after``
        seconds of retrying or waiting out a 429 (None otherwise): ``/readyz``'s reason."""
        since, answer = self._trouble_since, self._trouble
        if since is None or answer is None:
            return None
        lasted = self._clock() - since
        if lasted < self._unready_after:
            return None
        if answer.verdict is Verdict.THROTTLED:
            return f"throttled by MoEngage (429) for {lasted:.0f} s"
        if answer.verdict is Verdict.UNEXPECTED:
            limit = self._retry.unexpected_for
            return (
                f"answers not from MoEngage: retrying for {lasted:.0f} s, fatal after "
                f"{limit:g} s: {answer.describe()}"
            )
        if self._outage:
            return (
                f"every request to MoEngage is failing (an outage): retrying for {lasted:.0f} s, "
                f"nothing is dead-lettered while no request is accepted: {answer.describe()}"
            )
        return f"MoEngage unreachable: retrying for {lasted:.0f} s: {answer.describe()}"

    def coalesced(self) -> tuple[int, int]:
        """Events appended to an earlier event element, updates merged into an earlier one."""
        return (
            sum(lane.batcher.coalesced_events for lane in self.lanes),
            sum(lane.batcher.coalesced_updates for lane in self.lanes),
        )

    def in_flight(self) -> int:
        return sum(1 for lane in self.lanes if lane.busy)

    def queued_batches(self) -> int:
        return sum(len(lane.queue) for lane in self.lanes)

    async def _work(self, lane: Lane) -> None:
        _LANE.set(lane.index)  # this task's own context: _deliver reads which lane it serves
        while True:
            while not lane.queue:
                lane.wakeup.clear()
                await lane.wakeup.wait()
            if self._hold_back:
                await self._until_room(lane.queue[0])
            batch = lane.queue[0]
            lane.batcher.seal(batch)  # taken up: nothing merges into it from now on
            lane.busy = True
            try:
                await self._deliver(batch, batch.users, batch.events)
            except _Stopped:
                lane.stopped = True  # the batch stays queued and unacknowledged
                log.info(
                    "lane_stopped_waiting",
                    lane=lane.index,
                    batch_id=batch.id,
                    unacknowledged_batches=len(lane.queue),
                    note="not committed; read again after a restart",
                )
                self._idle.set()
                return
            except FatalApiError as e:
                self.fatal = e
                self._idle.set()
                return
            except Exception as e:  # a bug: stop the connector loudly rather than stall a lane
                log.exception("lane_crashed", lane=lane.index, batch_id=batch.id)
                self.crashed = e
                self._idle.set()
                return
            finally:
                lane.busy = False
            lane.queue.popleft()
            if self._settled():
                self._idle.set()

    async def _until_room(self, batch: Batch) -> None:
        """Wait (without taking anything) until the budget has room for ``batch``, or for a part
        of it worth sending now (:meth:`_affordable_cut`'s rule): until then it stays in the
        queue, unsealed, and a customer's next update can still merge into it. Taking it up then
        goes through :meth:`_pay` as usual (which may still wait, when another lane took the
        room first)."""
        users, events = batch.users, batch.events
        budget = self._budget
        while True:
            now = self._clock()
            wait = budget.wait_time(users, events, now)
            if wait <= 0 or not budget.fits_ever(users, events):
                return  # a batch that never fits: :meth:`_pay` splits it
            if self._affordable_cut(batch, users, events, wait, now) is not None:
                return
            self.metrics.waited_for_tokens(min(wait, 1.0))
            await self._sleep(min(wait, 1.0))

    async def _pay(
        self, batch: Batch, users: int, events: int, may_cut: bool
    ) -> Receipt | int | None:
        """Wait until the budget allows this spend and take it: its receipt; None if it never
        could; or, when ``may_cut`` and the room there is now would otherwise sit unspent, how
        many leading elements to send now (the caller splits; nothing is taken)."""
        async with self._budget_lock:
            while True:
                now = self._clock()
                wait = self._budget.wait_time(users, events, now)  # a window if it never fits
                if wait <= 0:
                    break
                if may_cut:  # decided here, holding the lock, with the room as it is now
                    cut = self._affordable_cut(batch, users, events, wait, now)
                    if cut is not None:
                        return cut
                if not self._budget.fits_ever(users, events):
                    return None
                self.metrics.waited_for_tokens(min(wait, 1.0))
                await self._sleep(min(wait, 1.0))  # re-check: the share may change meanwhile
            receipt = self._budget.take(users, events, self._clock())
            self._report_budget()
            return receipt

    async def _pay_alone(self, users: int, events: int) -> Receipt:
        """Take the spend of one element larger than the budget holds now (its share shrank, or
        429s cut it): once nothing else is in the window, so it is the window's only spend. The
        budget's adaptation to 429s stays as it is for every lane."""
        async with self._budget_lock:
            while (wait := self._budget.wait_empty(self._clock())) > 0:
                self.metrics.waited_for_tokens(min(wait, 1.0))
                await self._sleep(min(wait, 1.0))
            receipt = self._budget.take(users, events, self._clock())
            self._report_budget()
            return receipt

    def _report_budget(self) -> None:
        budget = self._budget
        spent = budget.spent(self._clock())
        mu, me = budget.max_users, budget.max_events
        self.metrics.tokens(
            None if mu is None else max(0, mu - spent.users),
            None if me is None else max(0, me - spent.events),
        )
        self.metrics.budget_shape(budget.share, budget.factor)

    async def _deliver(
        self, batch: Batch, users: int, events: int, *, suspect: float | None = None
    ) -> None:
        """Send until accepted, divided, or given up on. ``suspect``: this batch is a piece of a
        request being isolated (see :mod:`connector.sink.poison`) that began failing then."""
        attempt = 0
        odd_since: float | None = None  # first answer to this request that was not MoEngage's
        failing_since = suspect  # first server error of this request (of its whole, if a piece)
        server_errors: deque[Answer] = deque(maxlen=LAST_ANSWERS)
        lone_failures = 0
        body = batch.body()
        while True:
            owned = batch.owned()
            if owned is not batch:  # partitions were revoked while this waited or retried
                if not owned.parts:
                    return
                batch, body = owned, owned.body()
                users, events = owned.users, owned.events
            receipt = await self._pay(batch, users, events, may_cut=attempt == 0)
            if isinstance(receipt, int):
                # The room left now would sit unspent until the whole request fits: its leading
                # elements go now, the rest after (same lane, in order).
                self.metrics.split("room")
                first, rest = batch.split(receipt)
                await self._deliver(first, first.users, first.events, suspect=suspect)
                await self._deliver(rest, rest.users, rest.events, suspect=suspect)
                return
            if receipt is None:
                # More than the budget can ever hold now (its share shrank, or 429s cut it):
                # smaller requests, same order. A single element always fits a positive budget.
                if len(batch) > 1:
                    self.metrics.split("budget")
                    await self._divide(batch, None, users, events)
                    return
                receipt = await self._pay_alone(users, events)  # one element always goes
            answer = await self._send(batch, body, receipt)
            verdict = answer.verdict
            if verdict is Verdict.ACCEPTED:
                self._trouble_since = self._trouble = None
                self._judge.accepted(self._clock())
                self._outage.pop(_LANE.get(), None)
                for slot in batch.slots:
                    slot.ack()
                if self._on_accepted is not None:
                    self._on_accepted(batch)
                return
            if verdict is Verdict.FATAL:
                raise FatalApiError(
                    answer.status,
                    answer.error_type or "error",
                    answer.message or "no message",
                    answer.hint
                    or FATAL_HINTS.get(answer.status, "Check the connector's MoEngage settings."),
                )
            if verdict in (Verdict.TOO_LARGE, Verdict.REJECTED):
                await self._divide(batch, answer, users, events)
                return
            if verdict is Verdict.RETRY:
                failing_since = self._clock() if failing_since is None else failing_since
                server_errors.append(answer)
                lone_failures += len(batch) == 1
                settled = await self._after_server_error(
                    batch, failing_since, suspect is not None, lone_failures, server_errors
                )
                if settled:
                    return
            # THROTTLED, RETRY or UNEXPECTED: the same request again, after a pause; never dropped.
            if verdict is Verdict.UNEXPECTED and odd_since is None:
                odd_since = self._clock()
            await self._wait_to_resend(batch, answer, attempt, odd_since)
            attempt += 1

    async def _after_server_error(
        self,
        batch: Batch,
        failing_since: float,
        isolating: bool,
        lone_failures: int,
        answers: deque[Answer],
    ) -> bool:
        """Poison or outage (:mod:`connector.sink.poison`): bisect the batch, or dead-letter its
        lone element (True: settled), or let the caller resend it (False)."""
        lane, now = _LANE.get(), self._clock()
        judge = self._judge
        judge.failed(lane, now)
        decision = judge.decide(
            lane,
            failing_since,
            now,
            size=len(batch),
            isolating=isolating,
            lone_failures=lone_failures,
        )
        if decision is Decision.OUTAGE:
            if lane not in self._outage:
                self._outage[lane] = now
                log.warning(
                    "outage_waiting",
                    batch_id=batch.id,
                    failing_s=round(now - failing_since, 1),
                    answer=answers[-1].describe(),
                    note="no request of this instance is being accepted: waiting; nothing is "
                    "bisected or dead-lettered (moengage.max_retry_seconds)",
                )
            return False
        self._outage.pop(lane, None)
        if decision is Decision.WAIT:
            return False
        if decision is Decision.BISECT:
            log.warning(
                "poison_isolating",
                batch_id=batch.id,
                elements=len(batch),
                failing_s=round(now - failing_since, 1),
                answer=answers[-1].describe(),
                note="other requests are accepted: bisecting to find the element that fails",
            )
            self.metrics.split("poison")
            first, second = batch.split()
            await self._deliver(first, first.users, first.events, suspect=failing_since)
            await self._deliver(second, second.users, second.events, suspect=failing_since)
            return True
        judge.dead_lettered(lane, now)
        for slot in batch.slots:  # a coalesced element carries several records
            err = persistent_server_error(answers, lone_failures, now - failing_since)
            self._on_rejected(slot, err)
        return True

    async def _wait_to_resend(
        self, batch: Batch, answer: Answer, attempt: int, odd_since: float | None
    ) -> None:
        """Count a retry and wait before it: backoff, at least a 429's (capped) Retry-After, and
        never past the bound on answers not from MoEngage, which is fatal once reached."""
        now = self._clock()
        if self._trouble_since is None:
            self._trouble_since = now
        self._trouble = answer
        delay = self._retry.backoff(attempt, self._rng)
        if odd_since is not None:
            left = odd_since + self._retry.unexpected_for - now
            if answer.verdict is Verdict.UNEXPECTED and left <= 0:
                raise FatalApiError(
                    answer.status,
                    "unexpected answer",
                    f"{answer.message} (such answers for {now - odd_since:.0f} s, the limit "
                    "set by moengage.unexpected_answer_max_seconds)",
                    UNEXPECTED_HINT,
                )
            delay = min(delay, max(0.0, left))  # the last try lands on the limit, not past it
        self.metrics.retry(retry_reason(answer.status, answer.error_type))
        if answer.verdict is Verdict.THROTTLED:
            self._budget.throttled(now)
            if answer.retry_after is not None:
                delay = max(delay, self._retry_after(answer))
        log.warning(
            "request_retry",
            batch_id=batch.id,
            request_id=answer.request_id,
            answer=answer.describe(),
            attempt=attempt + 1,
            delay_s=round(delay, 3),
        )
        await self._pause(delay)

    def _retry_after(self, answer: Answer) -> float:
        """A 429's ``Retry-After``, cut to the policy's cap: a lane must not sleep for days."""
        assert answer.retry_after is not None
        cap = self._retry.retry_after_cap
        if answer.retry_after <= cap:
            return answer.retry_after
        log.warning(
            "retry_after_capped",
            request_id=answer.request_id,
            retry_after_s=answer.retry_after,
            cap_s=cap,
            setting="moengage.max_retry_after_seconds",
        )
        return cap

    async def _pause(self, delay: float) -> None:
        """Sleep before a resend, unless the connector is stopping (then raise ``_Stopped``, at
        once or as soon as it starts to)."""
        stop = asyncio.ensure_future(self._stopping.wait())
        nap = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait((stop, nap), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            nap.cancel()
        if self._stopping.is_set():
            raise _Stopped

    async def _send(self, batch: Batch, body: bytes, receipt: Receipt) -> Answer:
        """Post a paid-for request; settle its spend with the budget and count the answer."""
        answer = await self._post(body)
        if answer.verdict is Verdict.THROTTLED:
            self._budget.refund(receipt, self._clock())  # not counted by the server
        else:
            self._budget.answered(receipt, self._clock())  # counted some time until now
        self.progress.set()
        accepted = Counter(batch.kinds) if answer.verdict is Verdict.ACCEPTED else {}
        self.metrics.request_done(answer.status, len(body), len(batch), accepted)
        return answer

    async def _post(self, body: bytes) -> Answer:
        """One request, counted in flight while it waits for its answer."""
        self._posting += 1
        self.metrics.set_in_flight(self._posting)
        try:
            return await self._client.post(body)
        finally:
            self._posting -= 1
            self.metrics.set_in_flight(self._posting)

    # Room that would otherwise sit unspent this long (a share of the window) is worth a request
    # of its own, however small: at the end of a burst, the room left waits for the burst's own
    # spending to leave the window, a whole window later.
    LONG_WAIT = 0.05

    def _affordable_cut(
        self, batch: Batch, users: int, events: int, wait: float, now: float
    ) -> int | None:
        """Where to cut a request that must wait ``wait`` seconds to fit whole but whose first
        part fits now: None when nothing of it fits yet, or when what fits is under a quarter
        of it and the whole fits soon (then waiting costs less than one more request)."""
        if len(batch) < 2 or users != batch.users or events != batch.events:
            return None  # costs not per element (a hand-made batch): leave it whole
        budget = self._budget
        cut = batch.affordable_prefix(*budget.room(now))
        if not 0 < cut < len(batch):
            return None
        if cut >= len(batch) // 4 or wait >= budget.window * self.LONG_WAIT:
            return cut
        return None

    async def _divide(self, batch: Batch, answer: Answer | None, users: int, events: int) -> None:
        if answer is None:  # split for the budget, not because MoEngage refused anything
            first, second = batch.split()
            await self._deliver(first, first.users, first.events)
            await self._deliver(second, second.users, second.events)
            return
        if len(batch) == 1:
            rule = "api.too_large" if answer.verdict is Verdict.TOO_LARGE else "api.rejected"
            for slot in batch.slots:  # a coalesced element carries several records
                err = RejectedByApiError(
                    f"MoEngage refused the element: {answer.describe()}", rule=rule
                )
                self._on_rejected(slot, err)
            return
        log.info(
            "request_divided",
            batch_id=batch.id,
            request_id=answer.request_id,
            answer=answer.describe(),
            elements=len(batch),
        )
        self.metrics.split("divided")
        first, second = batch.split()
        await self._deliver(first, first.users, first.events)
        await self._deliver(second, second.users, second.events)


def make_delivery(
    settings: Settings,
    client: MoEngageClient,
    budget: Budget,
    *,
    metrics: Metrics,
    on_rejected: RejectHandler,
    on_accepted: AcceptHandler | None = None,
) -> Delivery:
    """The lanes between the batches and MoEngage, as the settings describe them."""
    m = settings.moengage
    return Delivery(
        client,
        budget,
        lanes=m.max_in_flight,
        max_request_bytes=m.max_request_bytes,
        retry=RetryPolicy(
            m.retry_initial_ms / 1000,
            m.retry_max_ms / 1000,
            retry_after_cap=m.max_retry_after_seconds,
            unexpected_for=m.unexpected_answer_max_seconds,
            max_retry=m.max_retry_seconds,
        ),
        unready_after=m.unready_after_seconds,
        on_rejected=on_rejected,
        coalesce=m.coalesce,
        metrics=metrics,
        on_accepted=on_accepted,
    )
