"""Per-minute budgets as a sliding window with a group share and AIMD, on a test-driven clock."""

import pytest

from connector.ratelimit import Budget, Spend, TokenBucket


def test_spend_within_the_limit_goes_at_once() -> None:
    b = Budget(100, None, now=0)
    assert b.wait_time(100, 0, now=0) == 0


def test_spend_over_the_limit_waits_until_the_oldest_spend_leaves_the_window() -> None:
    b = Budget(100, None, now=0, window=60)
    b.take(60, 0, now=0)
    b.take(40, 0, now=10)
    # The spend at t=0 leaves the window at 60 s plus the 2 % margin for clock drift.
    assert b.wait_time(30, 0, now=20) == pytest.approx(41.2)
    assert b.wait_time(30, 0, now=61.2) == 0


def test_short_windows_keep_a_tenth_of_a_second_of_margin() -> None:
    b = Budget(100, None, now=0, window=3)
    b.take(100, 0, now=0)
    assert b.wait_time(1, 0, now=0) == pytest.approx(3.1)


def test_no_window_ever_holds_more_than_the_limit() -> None:
    b = Budget(50, 500, now=0, window=10)
    t, sent = 0.0, []
    while t < 100:
        wait = b.wait_time(7, 70, now=t)
        if wait:
            t += wait
            continue
        b.take(7, 70, now=t)
        sent.append(t)
        t += 0.01
    for start in sent:
        in_window = [s for s in sent if start <= s < start + 10]
        assert len(in_window) * 7 <= 50


def test_events_and_users_are_limited_independently() -> None:
    b = Budget(None, 10, now=0)
    b.take(10**6, 10, now=0)
    assert b.wait_time(10**6, 0, now=0) == 0
    assert b.wait_time(0, 1, now=0) > 0


def test_share_scales_the_limit_and_what_one_request_may_cost() -> None:
    b = Budget(900, 9000, now=0)
    b.set_share(1 / 3, now=0)
    assert (b.max_users, b.max_events) == (300, 3000)
    assert b.fits_ever(300, 3000)
    assert not b.fits_ever(301, 0)


def test_one_request_may_cost_an_eighth_of_the_window() -> None:
    b = Budget(1000, 10_000, now=0)
    b.set_share(0.5, now=0)
    assert (b.request_users, b.request_events) == (62, 625)


def test_owning_nothing_keeps_the_previous_share() -> None:
    b = Budget(900, None, now=0)
    b.set_share(0.5, now=0)
    b.set_share(0.0, now=0)
    assert b.max_users == 450


def test_a_429_settles_just_under_what_the_server_accepted() -> None:
    b = Budget(1000, None, now=-100, window=60)
    b.take(400, 0, now=0)  # the server accepted 400 users this window, then said 429
    b.throttled(now=1)
    assert b.max_users == 360  # 90 % of the observed ceiling
    b.wait_time(0, 0, now=1 + 60 * 10)  # ten quiet windows: no creeping back into 429s
    assert b.max_users == 360


def test_a_429_with_nothing_of_ours_in_the_window_is_waited_out_not_learned() -> None:
    b = Budget(1000, None, now=-100)
    b.throttled(now=5)
    assert b.max_users == 1000


def test_one_wave_of_429s_from_concurrent_lanes_is_one_signal() -> None:
    b = Budget(1000, None, now=-100)
    b.take(500, 0, now=4)
    b.throttled(now=5)
    b.take(-100, 0, now=5.2)  # the server accepted less than we thought: still the same wave
    b.throttled(now=5.5)
    assert b.max_users == 450


def test_after_long_quiet_it_probes_above_the_ceiling_again() -> None:
    b = Budget(1000, None, now=-100, window=60)
    b.take(400, 0, now=0)
    b.throttled(now=1)
    b.wait_time(0, 0, now=1 + 60 * 30)  # thirty windows without a 429
    b.wait_time(0, 0, now=1 + 60 * 40)
    assert b.max_users == 1000


def test_429s_just_after_start_or_a_share_change_do_not_lower_the_budget() -> None:
    b = Budget(1200, None, now=0, window=60)
    b.throttled(now=1)  # a restart: the previous run's spending is still in the server's window
    assert b.max_users == 1200
    b.set_share(1 / 3, now=100)
    b.throttled(now=101)  # the previous owners' spending still fills the server's window
    assert b.max_users == 400
    b.take(200, 0, now=100 + 62)
    b.throttled(now=100 + 62)
    assert b.max_users == 180


def test_a_refund_gives_a_rejected_request_its_cost_back() -> None:
    b = Budget(100, None, now=0)
    receipt = b.take(100, 0, now=0)
    b.refund(receipt, now=0)
    assert b.wait_time(100, 0, now=0) == 0


def test_a_refund_lends_no_room_after_the_refunded_spend_would_have_left() -> None:
    # A 429 answered 2 s after the request was paid for. The server counts what it accepted
    # from then on; so must we, also once the rejected request's own spend would have expired.
    b = Budget(100, None, now=-100, window=10)  # entries leave the window at 10.2 s
    rejected = b.take(50, 0, now=0)
    b.take(50, 0, now=1)  # accepted
    b.refund(rejected, now=2)
    b.take(50, 0, now=3)  # accepted: the window holds 100 from t=3
    assert b.spent(now=10.6) == Spend(100, 0)
    assert b.wait_time(1, 0, now=10.6) > 0  # a negative spend at t=2 would have said "fits"


def test_a_refund_after_the_spend_left_the_window_changes_nothing() -> None:
    b = Budget(100, None, now=-100, window=10)
    late = b.take(40, 0, now=0)
    b.take(30, 0, now=5)
    b.refund(late, now=11)
    b.refund(late, now=11)  # twice is once
    assert b.spent(now=11) == Spend(30, 0)


def test_unlimited_budget_never_waits() -> None:
    b = Budget(None, None, now=0)
    b.take(10**9, 10**9, now=0)
    assert b.wait_time(10**9, 10**9, now=0) == 0
    assert b.max_users is None
    assert b.unlimited


def test_token_bucket_paces_a_single_stream() -> None:
    bucket = TokenBucket(600, now=0)
    bucket.take(600, now=0)
    assert bucket.wait_time(50, now=0) == pytest.approx(5.0)


def test_a_spend_stays_in_the_window_from_when_its_request_was_answered() -> None:
    # Sent at 0, answered at 3: the server counted it somewhere in between, maybe at 3.
    b = Budget(100, None, now=-100, window=10)
    slow = b.take(60, 0, now=0)
    b.answered(slow, now=3)
    assert b.spent(now=11) == Spend(60, 0)  # taken-time expiry (10.2) would have freed it
    assert b.wait_time(60, 0, now=11) == pytest.approx(3 + 10.2 - 11)
    assert b.spent(now=13.5) == Spend(0, 0)


def test_an_answer_after_the_spend_left_the_window_puts_it_back() -> None:
    b = Budget(100, None, now=-100, window=10)
    timed_out = b.take(60, 0, now=0)
    b.take(10, 0, now=1)
    b.answered(timed_out, now=12)  # a 5xx after a long wait: the server may have counted it
    assert b.spent(now=12) == Spend(60, 0)
    assert b.wait_time(41, 0, now=12) == pytest.approx(12 + 10.2 - 12)


def test_an_unlimited_budget_keeps_no_entries() -> None:
    b = Budget(None, None, now=0)
    receipt = b.take(5, 5, now=0)
    b.answered(receipt, now=1)
    assert b.spent(now=1) == Spend(0, 0)
