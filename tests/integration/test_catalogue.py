"""Issue 14, the catalogue guard: three connector instances in one group, a topic whose records
bring 400 distinct custom user attributes, MoEngage's default cap of 256 (not configured here).
The account as the sandbox stores it never holds more than 256 custom attributes, and no request
the connector sent carried more (so the check holds whether or not the sandbox enforces the cap
itself), across an instance killed with SIGKILL and restarted; records past the cap are
dead-lettered with a message naming the cap; every record is delivered or dead-lettered."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from connector.catalogue.guard import CatalogueGuard, CatalogueUnavailable
from connector.catalogue.rule import CatalogueError, Names
from connector.config import parse_settings
from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import end_offsets, produce
from connector.devtools.servers import SandboxProcess
from tests.integration.conftest import (
    ConnectorProcess,
    all_committed,
    base_config,
    fresh_topic,
    short_session,
    wait_until,
)
from tests.unit.configs import minimal_raw
from tests.unit.test_catalogue import customer, prepared

pytestmark = pytest.mark.integration

NAMES = 400
CAP = 256  # MoEngage's default, which the connector applies when nothing is configured
PARTITIONS = 6
STANDARD = {"first_name"}  # a standard attribute: every record sends it, it never counts


def rows(start: int, count: int) -> list[tuple[bytes, bytes]]:
    """Customer ``c<i>`` with ``first_name`` and one custom attribute ``attr_<i mod 400>``."""
    out = []
    for i in range(start, start + count):
        cid = f"c{i:05d}"
        element = {
            "type": "customer",
            "customer_id": cid,
            "attributes": {"first_name": "Ann", f"attr_{i % NAMES:03d}": i},
        }
        out.append((cid.encode(), orjson.dumps(element)))
    return out


def custom_names(sandbox: SandboxProcess) -> set[str]:
    """The account's distinct custom user attributes, as the sandbox stores its customers."""
    users = sandbox.admin("GET", "users")
    return {name for u in users.values() for name in u["attributes"]} - STANDARD


def sent_names(record_file: Path) -> set[str]:
    """Distinct custom user attributes in every request body the sandbox accepted: what the
    connector sent, whatever the sandbox then stores."""
    names: set[str] = set()
    for line in record_file.read_bytes().splitlines():
        for element in orjson.loads(line)["body"]["elements"]:
            names.update(element.get("attributes", {}))
    return names - STANDARD


def dead_letters(bootstrap: str, topic: str) -> dict[str, dict[str, str]]:
    """Key -> headers of every record on the dead-letter topic (read until nothing more)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader"})
    c.assign([TopicPartition(topic, 0, 0)])
    out: dict[str, dict[str, str]] = {}
    try:
        while (m := c.poll(2)) is not None:
            if m.error() is None:
                headers = {k: (v or b"").decode() for k, v in m.headers() or []}
                out[(m.key() or b"").decode()] = headers
    finally:
        c.close()
    return out


def test_three_instances_never_pass_the_accounts_attribute_cap_across_a_kill_and_restart(
    broker: LocalBroker,
    sandbox_factory: Callable[..., SandboxProcess],
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
    tmp_path: Path,
) -> None:
    record = tmp_path / "accepted.jsonl"
    sandbox = sandbox_factory("--record", str(record))
    topic = fresh_topic(broker, names("catalogue"), PARTITIONS)
    dlq = fresh_topic(broker, names("catalogue-dlq"), 1)
    group = names("group")
    spec = {
        "name": topic,
        "format": "json",
        "transform": {"function": "connector.transforms.builtin:passthrough"},
        "on_error": "dlq",
        "dead_letter_topic": dlq,
    }
    cfg = short_session(base_config(broker, sandbox.url, group, [spec]))
    ends = produce(broker.bootstrap, topic, rows(0, 2 * NAMES))
    largest = 0

    def watched(cond: Callable[[], Any]) -> Callable[[], Any]:
        """``cond``, sampling the sandbox's catalogue on every poll."""

        def check() -> Any:
            nonlocal largest
            largest = max(largest, len(custom_names(sandbox)))
            return cond()

        return check

    procs = [connector(cfg) for _ in range(3)]
    wait_until(watched(lambda: largest >= 60), 90, "the group claiming attributes")
    procs[2].stop(signal.SIGKILL)
    procs.append(connector(cfg))  # the killed instance restarted: it replays the claims log
    # More records once it runs again: judged against the catalogue it read back.
    at_kill = largest
    ready = wait_until(
        lambda: [e for e in procs[3].log_events() if e.get("event") == "catalogue_ready"],
        60,
        "the restarted instance reading the claims log",
    )
    more = produce(broker.bootstrap, topic, rows(2 * NAMES, NAMES))
    ends = {p: max(ends.get(p, 0), more.get(p, 0)) for p in range(PARTITIONS)}
    wait_until(
        watched(lambda: all_committed(broker.bootstrap, group, topic, ends)),
        120,
        "every offset committed",
    )
    for p in (procs[0], procs[1], procs[3]):
        assert p.stop() == 0

    stored = custom_names(sandbox)
    users = sandbox.admin("GET", "users")
    dead = dead_letters(broker.bootstrap, dlq)
    print(
        f"catalogue: {len(stored)} custom attributes stored (largest seen {largest}), "
        f"{len(users)} customers delivered, {len(dead)} records dead-lettered; "
        f"{at_kill} stored at the kill, {ready[0]['user_attributes']} claimed at the restart"
    )
    assert largest <= CAP
    assert len(stored) == CAP  # the cap was used in full, and not passed
    assert sent_names(record) == stored  # nothing past the cap was even sent
    # Nothing lost: every record delivered or dead-lettered, never both.
    produced = {key.decode() for key, _ in rows(0, 3 * NAMES)}
    assert set(users) | set(dead) == produced
    assert set(users) & set(dead) == set()
    refused = {f"attr_{int(cid[1:]) % NAMES:03d}" for cid in dead}
    assert len(refused) == NAMES - CAP
    assert refused.isdisjoint(stored)
    for headers in dead.values():
        assert headers["moengage.error.stage"] == "policy"
        assert headers["moengage.error.rule"] == "policy.catalogue.user_attributes"
        message = headers["moengage.error.message"]
        assert f"cap of {CAP} distinct custom user attributes ({CAP} in use" in message


def test_the_claims_log_seeds_decides_races_in_log_order_and_replays_on_restart(
    broker: LocalBroker, names: Callable[[str], str], tmp_path: Path
) -> None:
    """The claims log on the real broker, without connector processes: a seed file written as
    claims at start-up, two instances racing for the last free name, a restarted reader."""
    claims = names("claims")
    seed = tmp_path / "seed.yaml"
    seed.write_text("user_attributes: [plan, tier]\nevents:\n  Buy: [sku]\n")
    raw = minimal_raw(
        kafka={"bootstrap.servers": broker.bootstrap, "group.id": names("g")},
        catalogue={"topic": claims, "max_user_attributes": 3, "seed_file": "seed.yaml"},
    )
    settings = parse_settings(raw, base_dir=tmp_path, environ={})

    async def scenario() -> tuple[list[Any], list[Any]]:
        first, second = CatalogueGuard(settings, "WS"), CatalogueGuard(settings, "WS")
        await first.start()  # creates the topic, writes the seed
        await second.start()  # reads it; the seed's names are claimed already
        assert second.catalogue.user_attributes == {"plan", "tier"}
        results = await asyncio.gather(
            first.claim(Names({"from_first"})),
            second.claim(Names({"from_second"})),
            return_exceptions=True,
        )
        views = [first.catalogue.user_attributes, second.catalogue.user_attributes]
        await asyncio.gather(first.close(), second.close())
        restarted = CatalogueGuard(settings, "WS")
        await restarted.start()
        views.append(restarted.catalogue.user_attributes)
        assert restarted.catalogue.events == {"Buy": {"sku"}}
        with pytest.raises(CatalogueError, match=r"\(3 in use"):
            restarted.admit(prepared(customer(x=1)))
        await restarted.close()
        return results, views

    results, views = asyncio.run(scenario())
    winners = [r for r in results if r is None]
    losers = [r for r in results if isinstance(r, CatalogueError)]
    assert (len(winners), len(losers)) == (1, 1), results
    assert "cap of 3 distinct custom user attributes (3 in use" in losers[0].message
    assert views[0] == views[1] == views[2]
    assert len(views[0]) == 3
    assert end_offsets(broker.bootstrap, claims).keys() == {0}  # created with one partition


def test_a_claims_topic_of_several_partitions_is_refused(
    broker: LocalBroker, names: Callable[[str], str]
) -> None:
    claims = fresh_topic(broker, names("claims"), 2)
    raw = minimal_raw(
        kafka={"bootstrap.servers": broker.bootstrap, "group.id": names("g")},
        catalogue={"topic": claims},
    )
    guard = CatalogueGuard(parse_settings(raw, base_dir=Path("."), environ={}), "WS")

    async def start() -> None:
        try:
            await guard.start()
        finally:
            await guard.close()

    with pytest.raises(CatalogueUnavailable, match="has 2 partitions"):
        asyncio.run(start())


def test_the_cli_seeds_the_claims_log_and_shows_it(
    broker: LocalBroker, names: Callable[[str], str], tmp_path: Path
) -> None:
    claims = names("claims")
    cfg = minimal_raw(
        kafka={"bootstrap.servers": broker.bootstrap, "group.id": names("g")},
        catalogue={"topic": claims},
    )
    config = tmp_path / "c.yaml"
    config.write_text(orjson.dumps(cfg).decode())  # JSON is YAML
    seed = tmp_path / "names.yaml"
    seed.write_text("user_attributes: [plan, first_name]\nevents:\n  Buy: [sku]\n")

    def cli(*args: str) -> Any:
        result = subprocess.run(
            [sys.executable, "-m", "connector", "catalogue", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return orjson.loads(result.stdout)

    seeded = cli("seed", "--file", str(seed))
    held = {"user_attributes": ["plan"], "events": {"Buy": ["sku"]}}  # first_name is standard
    assert seeded["seeded"] == held
    again = cli("seed", "--file", str(seed))
    assert again["seeded"] == {"user_attributes": [], "events": {}}  # held already: no claim
    shown = cli("show")
    assert shown["topic"] == claims
    assert shown["names"] == held
    assert shown["caps"] == {"user_attributes": 256, "events": 512, "event_attributes": 100}
