"""The budget phase's workload and verdicts (the runs themselves are ``python -m bench --only
budget``)."""

from __future__ import annotations

import random

from bench.budget import Backlog, Budget, _mismatches, targets, zipf_counts


def test_every_customer_has_an_update_and_the_mean_is_five_skewed() -> None:
    counts = zipf_counts(1000, 5.0, random.Random(1))
    assert min(counts) == 1
    assert sum(counts) == 5000
    assert max(counts) > 100  # the head of a Zipf distribution
    assert sorted(counts)[500] <= 3  # and a long tail


def test_the_lower_bound_is_whichever_budget_binds() -> None:
    b = Budget(window_s=2.0, users=200, events=2000)
    assert b.lower_bound_s(6000, 0) == 60.0
    assert b.lower_bound_s(1000, 40_000) == 40.0


def test_a_customer_whose_sandbox_state_differs_from_its_last_update_is_counted() -> None:
    backlog = Backlog("t", last={"a": {"plan": "pro", "seq": 9}, "b": {"plan": "free", "seq": 4}})
    users = {"a": {"attributes": {"plan": "pro", "seq": 9, "extra": 1}}, "b": {"attributes": {}}}
    assert _mismatches(backlog, users) == 1


def test_targets_apply_to_the_profile_backlog_run_only() -> None:
    run = {
        "phase": "profiles",
        "coalesce": "backlog",
        "users_per_distinct_customer": 1.06,
        "complete": True,
        "drain_share_of_bound": 1.05,
        "final_state_mismatches": 0,
        "requests_429_after_first_window": 0,
    }
    other = {**run, "coalesce": "request", "users_per_distinct_customer": 3.0}
    verdicts = {t["name"]: t["result"] for t in targets([run, other])}
    assert verdicts == {
        "budget: users per distinct customer": "MISS",
        "budget: drain / lower bound": "PASS",
        "budget: customers whose final state differs from their last update": "PASS",
        "budget: 429s in steady state": "PASS",
    }
