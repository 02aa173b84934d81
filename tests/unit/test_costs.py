"""What an element costs (README "What a request costs"), and whose share of the budget a
rebalance changes (README "One budget for the whole consumer group")."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from connector.app import Connector
from connector.batching import Cost
from connector.config import Credentials, parse_settings
from connector.offsets import TopicPartitionKey
from connector.pipeline import element_cost
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
    """The two attributes of KafkaSource that _update_share reads."""

    def __init__(self, total_partitions: int, assignment: set[TopicPartitionKey]) -> None:
        self.total_partitions = total_partitions
        self.assignment = assignment


def _connector(rate_share: float | None) -> Connector:
    moengage: dict[str, Any] = {
        "base_url": "http://127.0.0.1:9",
        "users_per_minute": 1000,
        "events_per_minute": 10_000,
    }
    if rate_share is not None:
        moengage["rate_share"] = rate_share
    settings = parse_settings(
        {
            "moengage": moengage,
            "kafka": {"bootstrap.servers": "127.0.0.1:9", "group.id": "costs"},
            "topics": [
                {
                    "name": "users",
                    "format": "json",
                    "transform": {"mapping": {"type": "customer", "customer_id": "user_id"}},
                }
            ],
            "observability": {"enabled": False},
        },
        base_dir=Path.cwd(),
        environ={},
    )
    return Connector(settings, Credentials(workspace_id="WS", api_key=SecretStr("costs-key")))


def _wire(conn: Connector, total: int, owned: int) -> tuple[_Source, Budget]:
    """A fake source and a Budget built as Connector.run builds it."""
    m = conn.settings.moengage
    source = _Source(total, {("users", p) for p in range(owned)})
    budget = Budget(
        m.users_per_minute,
        m.events_per_minute,
        0.0,
        window=m.rate_window_seconds,
        share=m.rate_share or 1.0,
    )
    conn.source = source  # type: ignore[assignment]
    conn.budget = budget
    return source, budget


async def test_static_rate_share_is_kept_across_rebalances() -> None:
    conn = _connector(rate_share=0.25)
    source, budget = _wire(conn, total=12, owned=4)
    assert budget.share == 0.25

    conn._update_share(len(source.assignment))  # assigned 4 of 12 would be a third
    assert budget.share == 0.25
    conn._update_share(12)  # everything
    assert budget.share == 0.25
    conn._update_share(1)
    assert budget.share == 0.25
    assert budget.max_users == 250
    assert budget.max_events == 2500


async def test_without_rate_share_the_share_is_owned_over_total() -> None:
    conn = _connector(rate_share=None)
    source, budget = _wire(conn, total=12, owned=4)
    assert budget.share == 1.0

    conn._update_share(len(source.assignment))
    assert budget.share == pytest.approx(4 / 12)
    assert budget.max_users == 333
    assert budget.max_events == 3333

    conn._update_share(6)  # one of three instances died: the two others take half each
    assert budget.share == pytest.approx(0.5)
    conn._update_share(12)
    assert budget.share == pytest.approx(1.0)


async def test_rebalance_hooks_update_the_share_from_the_assignment() -> None:
    """_on_assign / _on_revoke feed _update_share with what the source owns (revoked keys out)."""
    conn = _connector(rate_share=None)
    source, budget = _wire(conn, total=12, owned=0)
    # No delivery is running (conn.delivery is None): revocation has nothing in flight to await.

    keys = [("users", p) for p in range(6)]
    source.assignment.update(keys)  # KafkaSource adds them before calling the hook
    await conn._on_assign(keys)
    assert budget.share == pytest.approx(6 / 12)

    revoked = keys[:3]
    await conn._on_revoke(revoked)  # the source still holds them when the hook runs
    assert budget.share == pytest.approx(3 / 12)


async def test_rebalance_hooks_keep_a_static_rate_share() -> None:
    conn = _connector(rate_share=0.5)
    source, budget = _wire(conn, total=12, owned=0)

    keys = [("users", p) for p in range(3)]
    source.assignment.update(keys)
    await conn._on_assign(keys)
    assert budget.share == 0.5
    await conn._on_revoke(keys[:1])
    assert budget.share == 0.5


async def test_owning_nothing_keeps_the_last_share() -> None:
    """All partitions revoked: the share is not set to 0 (Budget.set_share ignores it)."""
    conn = _connector(rate_share=None)
    _, budget = _wire(conn, total=12, owned=4)
    conn._update_share(4)
    conn._update_share(0)
    assert budget.share == pytest.approx(4 / 12)
