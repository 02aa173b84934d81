"""Per-minute budgets as token buckets, driven by a clock the test controls."""

import pytest

from connector.ratelimit import Budget, TokenBucket


def test_full_bucket_pays_immediately() -> None:
    assert TokenBucket(600, now=0).wait_time(600, now=0) == 0


def test_empty_bucket_waits_for_the_refill_rate() -> None:
    bucket = TokenBucket(600, now=0)  # 10 tokens a second
    bucket.take(600, now=0)
    assert bucket.wait_time(50, now=0) == pytest.approx(5.0)
    assert bucket.wait_time(50, now=5.0) == 0


def test_bucket_never_holds_more_than_its_capacity() -> None:
    bucket = TokenBucket(60, now=0)
    assert bucket.wait_time(61, now=10_000) == pytest.approx(1.0)


def test_budget_waits_for_the_scarcer_bucket() -> None:
    budget = Budget(users_per_minute=60, events_per_minute=6000, now=0)
    budget.take(60, 0, now=0)
    assert budget.wait_time(users=2, events=10, now=0) == pytest.approx(2.0)


def test_unlimited_budget_never_waits() -> None:
    budget = Budget(None, None, now=0)
    budget.take(10**9, 10**9, now=0)
    assert budget.wait_time(10**9, 10**9, now=0) == 0
    assert budget.max_users is None
