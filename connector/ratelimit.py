"""The account's per-minute budgets (seed 001: 1,000 users/min, 10,000 events/min).

MoEngage counts users and events per minute for the whole account, so the budget is a *sliding
window*: a request is sent only if what this instance spent in the last ``window`` seconds plus
the request's cost stays within its limit. (A token bucket holding a minute's worth could spend
twice the limit inside one minute and draw 429s.) One request may cost at most an eighth of the
window's budget, so whole requests keep fitting until the window is nearly spent.

Each instance of a consumer group spends ``share`` of the account budget: the partitions it owns
out of all partitions of its topics, recomputed on every assignment change, so the group as a
whole stays within the account's limits without a coordinator.

A spend is taken when its request is sent and dated again when it is answered (the server
counted it somewhere in between), so it leaves our window no earlier than the server's; a 429
voids it where it was taken (the server did not count it), and what the server *did*
accept in the window becomes the ceiling: the rate drops to 90 % of it at once, grows back
additively (a tenth of the configured limit per window) up to that 90 %, and probes above the
ceiling only after 30 windows without a 429. A misconfigured or shared budget therefore converges
instead of hammering the API. 429s that say nothing about the account's limit are waited out
without adapting: within a window of a start or a share change (the server still counts the
previous owners' spending) and while nothing of ours is in the window. Entries leave the window
2 % late (at least 0.1 s): with spends dated from their answers this only has to absorb the drift
between our clock and the server's, not latency. Pure: the caller passes the time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Spend:
    users: int
    events: int


class Receipt:
    """One spend in the window: :meth:`Budget.take` returns it, :meth:`Budget.refund` voids it."""

    __slots__ = ("at", "events", "users")

    def __init__(self, at: float, users: int, events: int) -> None:
        self.at = at
        self.users = users
        self.events = events


class Budget:
    """Users and events spent in a sliding window, against limit x share x adaptive factor."""

    MIN_FACTOR = 1 / 64
    RECOVERY = 0.1  # of the configured limit, per window without a 429
    SETTLE = 0.9  # of the observed ceiling: headroom beyond the window margin, one wave settles
    PROBE_AFTER = 30  # windows without a 429 before trying above the ceiling
    MARGIN = 0.02  # of the window, and at least MIN_MARGIN seconds
    MIN_MARGIN = 0.1

    def __init__(
        self,
        users_per_minute: int | None,
        events_per_minute: int | None,
        now: float,
        *,
        window: float = 60.0,
        share: float = 1.0,
    ) -> None:
        self.users_limit = users_per_minute
        self.events_limit = events_per_minute
        self.window = window
        self._share = share
        self._factor = 1.0
        self._caps()
        self.ceiling = 1.0 / self.SETTLE
        self._span = window + max(window * self.MARGIN, self.MIN_MARGIN)
        self._spent: deque[Receipt] = deque()
        self._users = 0
        self._events = 0
        self._last_throttle = now - window
        self._last_recovery = now
        self._share_changed = now

    # ----- limits -----------------------------------------------------------------------------

    @property
    def unlimited(self) -> bool:
        return self.users_limit is None and self.events_limit is None

    def _effective(self, limit: int | None) -> int | None:
        if limit is None:
            return None
        return max(1, math.floor(limit * self.share * self.factor))

    @property
    def max_users(self) -> int | None:
        """The most users one request may cost now (a request above it must be split)."""
        return self._effective(self.users_limit)

    @property
    def max_events(self) -> int | None:
        return self._effective(self.events_limit)

    # A request costs at most this part of the window's budget: with requests the size of a large
    # part of the window, whole requests stop fitting long before the window is spent (a budget
    # of 400 and requests of 86 events use only 344 a window); an eighth loses at most a few %.
    REQUEST_PART = 8

    # The most users/events one request may cost (``request_users``, ``request_events``: plain
    # attributes, read for every element batched) are set again whenever the share or the
    # adaptive factor they depend on changes.
    @property
    def share(self) -> float:
        return self._share

    @share.setter
    def share(self, share: float) -> None:
        self._share = share
        self._caps()

    @property
    def factor(self) -> float:
        return self._factor

    @factor.setter
    def factor(self, factor: float) -> None:
        self._factor = factor
        self._caps()

    def _caps(self) -> None:
        users, events = self._effective(self.users_limit), self._effective(self.events_limit)
        self.request_users = None if users is None else max(1, users // self.REQUEST_PART)
        self.request_events = None if events is None else max(1, events // self.REQUEST_PART)

    def set_share(self, share: float, now: float) -> None:
        if share > 0 and share != self.share:  # owning nothing sends nothing: keep the last one
            self.share = min(1.0, share)
            self._share_changed = now

    def fits_ever(self, users: int, events: int) -> bool:
        mu, me = self.max_users, self.max_events
        return (mu is None or users <= mu) and (me is None or events <= me)

    # ----- spending ---------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        spent = self._spent
        horizon = now - self._span
        while spent and spent[0].at <= horizon:
            gone = spent.popleft()
            self._users -= gone.users
            self._events -= gone.events

    def wait_time(self, users: int, events: int, now: float) -> float:
        """Seconds until this spend fits in the window (0 if it fits now).

        A spend that can never fit (:meth:`fits_ever`) gets the window's length.
        """
        self._recover(now)
        self._expire(now)
        mu, me = self.max_users, self.max_events
        over_u = 0 if mu is None else self._users + users - mu
        over_e = 0 if me is None else self._events + events - me
        if over_u <= 0 and over_e <= 0:
            return 0.0
        freed_u = freed_e = 0
        for r in self._spent:
            freed_u += r.users
            freed_e += r.events
            if freed_u >= over_u and freed_e >= over_e:
                return max(0.0, r.at + self._span - now)
        return self._span  # cannot fit even in an empty window: the caller must split

    def wait_empty(self, now: float) -> float:
        """Seconds until nothing is spent in the window any more (0: nothing is)."""
        self._expire(now)
        if not self._spent:
            return 0.0
        return max(0.0, self._spent[-1].at + self._span - now)

    def room(self, now: float) -> tuple[int | None, int | None]:
        """Users and events still spendable in the window now (None: that budget is unlimited)."""
        self._recover(now)
        self._expire(now)
        mu, me = self.max_users, self.max_events
        return (
            None if mu is None else max(0, mu - self._users),
            None if me is None else max(0, me - self._events),
        )

    def take(self, users: int, events: int, now: float) -> Receipt:
        receipt = Receipt(now, users, events)
        if (users or events) and not self.unlimited:
            self._add(receipt)
        return receipt

    def answered(self, receipt: Receipt, now: float) -> None:
        """The server answered (other than 429): it counted the spend at some moment between
        its take and now. Keep it in the window until ``now`` + the window, so that a slow answer
        (up to a client timeout) never frees room before the server frees it. (If it had left
        our window already, it goes back in: the server may count it a while yet.)"""
        if receipt.at >= now or not (receipt.users or receipt.events) or self.unlimited:
            return
        self._expire(now)
        self._withdraw(receipt)
        receipt.at = now
        self._add(receipt)  # every entry was taken or answered at or before now: still in order

    def _add(self, receipt: Receipt) -> None:
        self._spent.append(receipt)
        self._users += receipt.users
        self._events += receipt.events

    def _withdraw(self, receipt: Receipt) -> None:
        """Take a spend out of the window, if it is still in it."""
        try:
            self._spent.remove(receipt)
        except ValueError:
            return
        self._users -= receipt.users
        self._events -= receipt.events

    def spent(self, now: float) -> Spend:
        self._expire(now)
        return Spend(self._users, self._events)

    # ----- adapting to the server -------------------------------------------------------------

    def refund(self, receipt: Receipt, now: float) -> None:
        """A request the server rejected without counting it (429): void its spend where it was
        taken. (A negative spend taken *now* would outlive the voided one by the request's
        round trip, and for that long lend room the server does not have: a 429 one window after
        every 429.)"""
        self._expire(now)
        self._withdraw(receipt)  # if it left the window already, there is nothing to give
        receipt.users = receipt.events = 0

    def _accepted_ratio(self, now: float) -> float:
        """What the window holds, as a share of the full (un-throttled) limit of this instance."""
        self._expire(now)
        ratios = [0.0]
        if self.users_limit:
            ratios.append(self._users / (self.users_limit * self.share))
        if self.events_limit:
            ratios.append(self._events / (self.events_limit * self.share))
        return max(ratios)

    def throttled(self, now: float) -> None:
        """A 429 (after its refund): settle just under what the server accepted this window."""
        if now - self._last_throttle < 1.0:
            return  # one wave of 429s from concurrent lanes is one signal
        if now - self._share_changed < self._span:
            # Within a window of a rebalance the server still counts the previous owners'
            # spending: a 429 now says nothing about the account's limit. Wait, don't adapt.
            return
        accepted = self._accepted_ratio(now)
        if accepted <= 0:
            # Nothing of ours in the window: the account is busy with others' (or a previous
            # owner's) spending. That says nothing about our rate: wait as told, don't adapt.
            return
        self.ceiling = min(accepted, self.ceiling)
        self.factor = max(self.MIN_FACTOR, min(self.factor, self.SETTLE * accepted))
        self._last_throttle = now
        self._last_recovery = now

    def _recover(self, now: float) -> None:
        windows = (now - self._last_recovery) / self.window
        if windows < 0.1:
            return
        if now - self._last_throttle >= self.PROBE_AFTER * self.window:
            self.ceiling = min(1.0 / self.SETTLE, self.ceiling * (1 + self.RECOVERY * windows))
        cap = min(1.0, self.SETTLE * self.ceiling + 1e-9)
        if self.factor < cap:
            self.factor = min(cap, self.factor + self.RECOVERY * windows)
        self._last_recovery = now


class TokenBucket:
    """A simple bucket for pacing a single stream (the Get User export: 1,000 users/min)."""

    def __init__(self, per_minute: float, now: float, capacity: float | None = None) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = float(capacity if capacity is not None else per_minute)
        self.tokens = self.capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` tokens are available (0 if they are now)."""
        self._refill(now)
        missing = amount - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.tokens -= amount
