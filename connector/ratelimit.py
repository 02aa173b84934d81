"""The account's per-minute budgets (seed 001: 1,000 users/min, 10,000 events/min) as buckets.

A bucket holds at most one minute's worth of tokens and refills continuously. A request is sent only
when every bucket can pay for all of it; the batcher never builds a request that costs more than a
bucket can hold, so every request can be paid for eventually. Pure: the caller passes the time.
"""

from __future__ import annotations


class TokenBucket:
    """``per_minute`` tokens a minute, holding at most ``capacity`` (default: a minute's worth)."""

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


class Budget:
    """Users and events buckets paid together; either may be unlimited (None)."""

    def __init__(self, users_per_minute: int | None, events_per_minute: int | None, now: float):
        self.users = TokenBucket(users_per_minute, now) if users_per_minute else None
        self.events = TokenBucket(events_per_minute, now) if events_per_minute else None

    def wait_time(self, users: int, events: int, now: float) -> float:
        waits = [0.0]
        if self.users is not None and users:
            waits.append(self.users.wait_time(users, now))
        if self.events is not None and events:
            waits.append(self.events.wait_time(events, now))
        return max(waits)

    def take(self, users: int, events: int, now: float) -> None:
        if self.users is not None and users:
            self.users.take(users, now)
        if self.events is not None and events:
            self.events.take(events, now)

    @property
    def max_users(self) -> int | None:
        return int(self.users.capacity) if self.users else None

    @property
    def max_events(self) -> int | None:
        return int(self.events.capacity) if self.events else None
