"""A backlog that waits for the budget spends one user per customer (``coalesce: backlog``): the
real connector, broker and sandbox, with a budget scaled to 10 users a second."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import produce
from connector.devtools.servers import SandboxProcess
from tests.integration.conftest import ConnectorProcess, base_config, fresh_topic, wait_until
from tests.integration.faults import CommitSampler

pytestmark = pytest.mark.integration

USERS_PER_WINDOW, WINDOW = 10, 1.0
CUSTOMERS = 30


def _updates(n: int, seq0: int, rng: random.Random) -> list[tuple[bytes, bytes]]:
    """``n`` full-profile updates of skewed customers (low numbers more often)."""
    rows = []
    for seq in range(seq0, seq0 + n):
        c = f"cust{min(rng.randrange(CUSTOMERS), rng.randrange(CUSTOMERS)):02d}"
        element = {
            "type": "customer",
            "customer_id": c,
            "attributes": {"seq": seq, "v": f"{c}-{seq}"},
        }
        rows.append((c.encode(), orjson.dumps(element)))
    return rows


def test_updates_arriving_while_requests_wait_for_the_budget_merge_into_them(
    broker: LocalBroker,
    sandbox_factory: Callable[..., SandboxProcess],
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    sandbox = sandbox_factory(
        "--users-per-minute", str(USERS_PER_WINDOW), "--window-seconds", str(WINDOW)
    )
    topic = fresh_topic(broker, names("backlog"), 2)
    group = names("group")
    cfg: dict[str, Any] = base_config(
        broker,
        sandbox.url,
        group,
        [
            {
                "name": topic,
                "format": "json",
                "transform": {"function": "connector.transforms.builtin:passthrough"},
            }
        ],
        users_per_minute=USERS_PER_WINDOW,
        rate_window_seconds=WINDOW,
        coalesce="backlog",
    )
    rng = random.Random(4)
    first, second = _updates(150, 0, rng), _updates(150, 150, rng)
    last: dict[str, dict[str, Any]] = {}
    for _, value in first + second:
        element = orjson.loads(value)
        last[element["customer_id"]] = element["attributes"]

    def customers_sent() -> int:
        return int(sandbox.admin("GET", "stats")["elements_by_type"].get("customer", 0))

    with CommitSampler(broker.bootstrap, group, topic, 2) as sampler:
        ends = produce(broker.bootstrap, topic, first)
        proc = connector(cfg)
        # The first window is spent; the rest of the first half waits for the budget.
        wait_until(lambda: customers_sent() >= USERS_PER_WINDOW, 60, "the first window's requests")
        more = produce(broker.bootstrap, topic, second)  # merged into the waiting requests
        ends = {p: max(ends.get(p, 0), more.get(p, 0)) for p in ends.keys() | more.keys()}
        wait_until(
            lambda: all(sampler.latest().get(p) == end for p, end in ends.items()),
            60,
            "every offset committed",
        )
        assert proc.stop() == 0
    stats = sandbox.admin("GET", "stats")
    users = sandbox.admin("GET", "users")
    distinct = len(last)
    # Each customer is sent once, except those already sent (or taken up for sending) before
    # their later updates arrived: at most the first two windows' worth. Without merging across
    # requests (coalesce: request, one user a request here) it would be one per run of updates.
    assert customers_sent() <= distinct + 2 * USERS_PER_WINDOW
    final = {c: {k: users[c]["attributes"].get(k) for k in attrs} for c, attrs in last.items()}
    assert final == last  # every customer's last update won
    assert "429" not in stats["requests_by_status"]
