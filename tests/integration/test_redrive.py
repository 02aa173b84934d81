"""Re-drive after a fix, on the real broker and the sandbox: records a mapping dead-lettered are
sent again once the mapping is fixed, each arrives once, the re-drive's group commits to the end
of the dead-letter topic, and a second re-drive sends nothing. A dry run first sends, writes and
commits nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from connector.deadletter import error_headers
from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import committed_offsets, create_topics, produce
from connector.devtools.servers import SandboxProcess
from connector.errors import RecordRef, TransformError
from connector.redrive import group_id
from tests.integration.conftest import (
    API_KEY,
    WORKSPACE,
    all_committed,
    base_config,
    wait_until,
)

pytestmark = pytest.mark.integration

Factory = Callable[..., Any]
# The first mapping reads the id from a field the legacy producer never writes; the fix reads it
# from the record key, which every producer sets.
BROKEN = {"type": "customer", "customer_id": "user_id", "attributes": {"from": "attrs"}}
FIXED = {"type": "customer", "customer_id": "$key", "attributes": {"from": "attrs"}}


def redrive(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOENGAGE_WORKSPACE_ID": WORKSPACE, "MOENGAGE_API_KEY": API_KEY}
    return subprocess.run(
        [sys.executable, "-m", "connector", "redrive", "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def read_all(bootstrap: str, topic: str, partitions: int, expected: int) -> list[Any]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "redrive-test-reader"})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[Any] = []
    deadline = time.monotonic() + 20
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got += [m for m in c.consume(100, 0.2) if m.error() is None]
    finally:
        c.close()
    return got


def test_dead_lettered_records_are_redriven_once_after_the_mapping_is_fixed(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Factory,
    names: Callable[[str], str],
    tmp_path: Path,
) -> None:
    bootstrap = broker.bootstrap
    topic, dlq, group = names("profiles"), names("profiles-dlq"), names("group")
    create_topics(bootstrap, {topic: 2, dlq: 2})
    good = [f"good-{i}" for i in range(10)]
    legacy = [f"legacy-{i}" for i in range(6)]
    rows: list[tuple[bytes | None, bytes | None]] = []
    for i, customer in enumerate(good + legacy):
        value: dict[str, Any] = {"attrs": {"n": i}}
        if customer in good:
            value["user_id"] = customer
        rows.append((customer.encode(), orjson.dumps(value)))
    ends = produce(bootstrap, topic, rows, partition_of=lambda n, _key: n % 2)

    def config(mapping: dict[str, Any]) -> dict[str, Any]:
        spec = {
            "name": topic,
            "format": "json",
            "transform": {"mapping": mapping},
            "dead_letter_topic": dlq,
        }
        return base_config(broker, sandbox.url, group, [spec])

    proc = connector(config(BROKEN))
    wait_until(lambda: all_committed(bootstrap, group, topic, ends), 60, "the first run committed")
    assert proc.stop() == 0
    letters = read_all(bootstrap, dlq, 2, len(legacy))
    assert sorted(m.key().decode() for m in letters) == sorted(legacy)
    assert {dict(m.headers())["moengage.error.rule"] for m in letters} == {b"mapping.missing_field"}
    dlq_ends: dict[int, int] = {}
    for m in letters:
        dlq_ends[m.partition()] = max(dlq_ends.get(m.partition(), 0), m.offset() + 1)
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump(config(FIXED), sort_keys=False))
    sent_before = len(sandbox.admin("GET", "requests"))

    dry = redrive(fixed, "--topic", dlq, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = [orjson.loads(line) for line in dry.stdout.splitlines() if line.startswith("{")]
    assert [line["outcome"] for line in lines] == ["deliver"] * len(legacy)
    assert {line["elements"][0]["customer_id"] for line in lines} == set(legacy)
    assert len(sandbox.admin("GET", "requests")) == sent_before  # nothing sent
    assert all(o < 0 for o in committed_offsets(bootstrap, group_id(dlq), dlq).values())

    first = redrive(fixed, "--topic", dlq)
    assert first.returncode == 0, first.stderr
    assert f"delivered: {len(legacy)} " in first.stdout
    assert all_committed(bootstrap, group_id(dlq), dlq, dlq_ends)
    requests = sandbox.admin("GET", "requests")
    sent = Counter(e["customer_id"] for body in requests for e in body["elements"])
    assert {c: sent[c] for c in legacy} == dict.fromkeys(legacy, 1)  # each arrived once
    users = sandbox.admin("GET", "users")
    for i, customer in enumerate(legacy, start=len(good)):
        assert users[customer]["attributes"]["n"] == i

    second = redrive(fixed, "--topic", dlq)
    assert second.returncode == 0, second.stderr
    assert "read: 0" in second.stdout
    assert len(sandbox.admin("GET", "requests")) == len(requests)  # sends nothing


def test_what_still_fails_goes_to_a_second_topic_once_confirmed_with_its_coordinates(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    names: Callable[[str], str],
    tmp_path: Path,
) -> None:
    bootstrap = broker.bootstrap
    topic, dlq, second = names("profiles"), names("profiles-dlq"), names("profiles-dlq2")
    create_topics(bootstrap, {dlq: 1, second: 1})
    rows = []
    for i in range(3):
        err = TransformError("no customer identity in the record", rule="mapping.missing_field")
        headers = [("origin", b"crm"), *error_headers(err.at(RecordRef(topic, 1, 40 + i)))]
        rows.append((f"legacy-{i}".encode(), orjson.dumps({"attrs": {"n": i}}), headers))
    truncated = [*rows[0][2], ("moengage.value.truncated", b"true")]
    rows.append((b"cut", b"{", truncated))
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value, headers in rows:
        producer.produce(dlq, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0
    spec = {"name": topic, "format": "json", "transform": {"mapping": BROKEN}}
    still_broken = tmp_path / "broken.yaml"
    still_broken.write_text(
        yaml.safe_dump(base_config(broker, sandbox.url, names("group"), [spec]), sort_keys=False)
    )

    done = redrive(still_broken, "--topic", dlq, "--to", second)
    assert done.returncode == 1, done.stderr  # some still fail
    assert f"still failing (written to {second}): 3" in done.stdout
    assert "transform/mapping.missing_field: 3" in done.stdout
    assert "cannot be re-driven (its value was truncated when dead-lettered): 1" in done.stdout
    assert all_committed(bootstrap, group_id(dlq), dlq, {0: 4})
    moved = read_all(bootstrap, second, 1, 3)
    assert [m.key() for m in moved] == [b"legacy-0", b"legacy-1", b"legacy-2"]
    for i, m in enumerate(moved):
        names_ = [k for k, _ in m.headers()]
        headers = dict(m.headers())
        assert names_.count("moengage.error.rule") == 1  # fresh headers, not the old ones too
        assert headers["origin"] == b"crm"
        assert headers["moengage.error.rule"] == b"mapping.missing_field"
        assert headers["moengage.source.topic"] == topic.encode()
        assert headers["moengage.source.offset"] == str(40 + i).encode()
    assert sandbox.admin("GET", "requests") == []


def test_a_redrive_holds_to_the_accounts_caps_like_run(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Factory,
    names: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Records past a catalogue cap, re-driven with the cap unchanged, still fail: the re-drive
    claims new names through the same claims log as ``run`` and sends none past the cap."""
    bootstrap = broker.bootstrap
    topic, dlq, group = names("wide"), names("wide-dlq"), names("group")
    create_topics(bootstrap, {topic: 1, dlq: 1})
    rows = [
        (f"c{i}".encode(), orjson.dumps({"id": f"c{i}", "attrs": {f"attr_{i}": i}}))
        for i in range(8)
    ]
    ends = produce(bootstrap, topic, rows, partition_of=lambda _n, _key: 0)
    spec = {
        "name": topic,
        "format": "json",
        "transform": {
            "mapping": {"type": "customer", "customer_id": "id", "attributes": {"from": "attrs"}}
        },
        "dead_letter_topic": dlq,
    }
    cfg = base_config(broker, sandbox.url, group, [spec])
    cfg["catalogue"] = {**cfg.get("catalogue", {}), "max_user_attributes": 3}
    proc = connector(cfg)
    wait_until(lambda: all_committed(bootstrap, group, topic, ends), 60, "the first run committed")
    assert proc.stop() == 0
    letters = read_all(bootstrap, dlq, 1, 5)
    assert {dict(m.headers())["moengage.error.rule"] for m in letters} == {
        b"policy.catalogue.user_attributes"
    }
    path = tmp_path / "same-cap.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    sent_before = len(sandbox.admin("GET", "requests"))

    again = redrive(path, "--topic", dlq)
    assert again.returncode == 1, again.stderr  # some still fail
    assert "policy/policy.catalogue.user_attributes" in again.stdout
    assert len(sandbox.admin("GET", "requests")) == sent_before  # nothing past the cap was sent
    stored = {n for user in sandbox.admin("GET", "users").values() for n in user["attributes"]}
    assert len({n for n in stored if n.startswith("attr_")}) == 3
