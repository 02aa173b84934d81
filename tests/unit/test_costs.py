"""What an element costs (README "What a request costs"), and whose share of the budget a
rebalance changes (README "One budget for the whole consumer group")."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from structlog.testing import capture_logs

from connector.batching import Cost
from connector.flow import BudgetShare
from connector.processing import element_cost
from connector.ratelimit import Budget


def _customer() -> dict[str, Any]:
    return {"type": "customer", "customer_id": "c1", "attributes": {"name": "Ada"}}


def _device() -> dict[str, Any]:
    return {"type": "device", "customer_id": "c1", "device_id": "d1", "attributes": {}}


def _event(actions: int) -> dict[str, Any]:
    return {
        "type": "event",
        "customer_id": "c1",
        "actions": [{"action": f"a{i}", "attributes": {}} for i in range(actions)],
    }


# ----- element_cost -----------------------------------------------------------------------------


def test_customer_costs_one_user_and_no_event() -> None:
    assert element_cost(_customer()) == Cost(users=1, events=0)


@pytest.mark.parametrize("device_cost", [1, 3])
def test_customer_cost_does_not_depend_on_device_cost(device_cost: int) -> None:
    assert element_cost(_customer(), device_cost) == Cost(users=1)


@pytest.mark.parametrize("device_cost", [1, 3])
def test_device_costs_device_cost_users(device_cost: int) -> None:
    assert element_cost(_device(), device_cost) == Cost(users=device_cost, events=0)


def test_device_costs_one_user_by_default() -> None:
    assert element_cost(_device()) == Cost(users=1)


@pytest.mark.parametrize("actions", [1, 5, 31, 32, 33, 40, 500])
def test_event_costs_one_event_per_action_and_no_user(actions: int) -> None:
    assert element_cost(_event(actions)) == Cost(users=0, events=actions)
    # device_cost is about devices only
    assert element_cost(_event(actions), 3) == Cost(users=0, events=actions)


def test_shared_costs_equal_fresh_ones_and_cannot_be_changed() -> None:
    cases = [
        (element_cost(_customer()), Cost(users=1)),
        (element_cost(_device()), Cost(users=1)),
        (element_cost(_device(), 3), Cost(users=3)),
        (element_cost(_event(1)), Cost(events=1)),
        (element_cost(_event(5)), Cost(events=5)),
        (element_cost(_event(32)), Cost(events=32)),
        (element_cost(_event(33)), Cost(events=33)),
    ]
    for shared, fresh in cases:
        assert shared == fresh
        assert hash(shared) == hash(fresh)
        assert (shared.users, shared.events) == (fresh.users, fresh.events)
    # Sharing is safe only because nobody can change a shared Cost in place.
    shared = element_cost(_customer())
    with pytest.raises(dataclasses.FrozenInstanceError):
        shared.users = 2  # type: ignore[misc]
    assert element_cost(_customer()) == Cost(users=1)


def test_costs_of_one_element_are_stable_across_calls() -> None:
    """A second element of the same kind costs the same (nothing accumulates in shared state)."""
    first = [element_cost(_customer()), element_cost(_device(), 3), element_cost(_event(5))]
    second = [element_cost(_customer()), element_cost(_device(), 3), element_cost(_event(5))]
    assert first == second == [Cost(users=1), Cost(users=3), Cost(events=5)]


# ----- budget share at a rebalance --------------------------------------------------------------


class _Source:
    """The attribute of KafkaSource that BudgetShare reads."""

    def __init__(self, total_partitions: int) -> None:
        self.total_partitions = total_partitions


def _share(rate_share: float | None, total: int) -> tuple[BudgetShare, Budget]:
    """A budget built as the connector builds it, and its share over ``total`` partitions."""
    budget = Budget(1000, 10_000, 0.0, window=60.0, share=rate_share or 1.0)
    return BudgetShare(budget, _Source(total), rate_share), budget  # type: ignore[arg-type]


def test_static_rate_share_is_kept_across_rebalances() -> None:
    share, budget = _share(rate_share=0.25, total=12)
    assert budget.share == 0.25

    share.update(4, 1.0)  # assigned 4 of 12 would be a third
    assert budget.share == 0.25
    share.update(12, 2.0)  # everything
    assert budget.share == 0.25
    share.update(1, 3.0)
    assert budget.share == 0.25
    assert budget.max_users == 250
    assert budget.max_events == 2500


def test_without_rate_share_the_share_is_owned_over_total() -> None:
    share, budget = _share(rate_share=None, total=12)
    assert budget.share == 1.0

    share.update(4, 1.0)
    assert budget.share == pytest.approx(4 / 12)
    assert budget.max_users == 333
    assert budget.max_events == 3333

    share.update(6, 2.0)  # one of three instances died: the two others take half each
    assert budget.share == pytest.approx(0.5)
    share.update(12, 3.0)
    assert budget.share == pytest.approx(1.0)


def test_owning_nothing_keeps_the_last_share() -> None:
    """All partitions revoked: the share is not set to 0 (Budget.set_share ignores it)."""
    share, budget = _share(rate_share=None, total=12)
    share.update(4, 1.0)
    share.update(0, 2.0)
    assert budget.share == pytest.approx(4 / 12)


def test_a_revoke_of_everything_writes_no_budget_share_line() -> None:
    """The line says what the budget is: never 'owned_partitions: 0' next to a share it kept."""
    share, _ = _share(rate_share=None, total=12)
    with capture_logs() as logs:
        share.update(4, 1.0)
        share.update(0, 2.0)  # everything revoked
        share.update(6, 3.0)
    lines = [(e["owned_partitions"], e["share"]) for e in logs if e["event"] == "budget_share"]
    assert lines == [(4, pytest.approx(4 / 12, abs=1e-4)), (6, 0.5)]


def test_an_unknown_partition_total_leaves_the_share_alone() -> None:
    """Metadata not fetched yet (total 0): no division by zero, no change."""
    share, budget = _share(rate_share=None, total=0)
    share.update(3, 1.0)
    assert budget.share == 1.0
