"""Every shape of bad record a real producer or a user's transform can write, on the real broker and
the sandbox: each is dead-lettered with the rule that caught it, the good records around it (same
partition, and another partition) are delivered, the connector never exits, and the committed
offsets reach the end of every partition.

One connector reads one topic per case (so a case's outcome is its own), each topic with two
partitions: partition 0 holds good, bad, good; partition 1 holds two good records.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import committed_offsets, create_topics, produce, produce_many
from connector.devtools.servers import BackgroundApp, SandboxProcess
from connector.devtools.workload import events
from connector.source.decoding import encode_confluent, encode_raw, load_schema_file
from tests.integration import bad_records as data
from tests.integration.conftest import (
    API_KEY,
    ROOT,
    WORKSPACE,
    ConnectorProcess,
    base_config,
    wait_until,
)

EVENT_SCHEMA = load_schema_file(data.EVENT_SCHEMA, key_path="test")
MEASURE_SCHEMA = load_schema_file(data.MEASURE_SCHEMA, key_path="test")
NODE_SCHEMA = load_schema_file(data.NODE_SCHEMA, key_path="test")
NODE_TRANSFORM = {"function": "tests.integration.bad_transform:from_node"}
TOO_LARGE = "element_of_2_mb"  # larger than the dead-letter topic takes: written truncated


@dataclass(frozen=True)
class Case:
    """One bad record between good ones: its topic set-up and what must catch it."""

    name: str
    kind: str  # a key of TOPICS
    stage: str
    rule: str


CASES = [Case(b.name, b.topic, b.stage, b.rule) for b in data.bad_records(confluent_schema_id=1)]
CASES.append(Case(TOO_LARGE, "json", "validate", "element.too_large"))
SETUPS = {**data.TOPICS, "avro_node": {**data.TOPICS["avro_node"], "transform": NODE_TRANSFORM}}


def _good(kind: str, tag: str, i: int, schema_id: int) -> tuple[bytes, str]:
    """Good record ``i`` of a topic set-up, and the customer it arrives as."""
    customer = f"{tag}-{i}"
    if kind == "json":
        value = json.dumps({"user_id": customer, "event_name": "Good"}).encode()
    elif kind in ("avro_event", "confluent_event"):
        row = {
            **next(events(1, 1, seed=i)),
            "user_id": customer,
            "event_time": dt.datetime.now(dt.UTC),
        }
        if kind == "avro_event":
            value = encode_raw(EVENT_SCHEMA, row)
        else:
            value = encode_confluent(schema_id, EVENT_SCHEMA, row)
    elif kind == "avro_measure":
        row = {"user_id": customer, "event_name": "Good", "amount": Decimal("1.25"), "score": 1.0,
               "local_at": dt.datetime(2026, 6, 1, 12, 0)}  # fmt: skip
        value = encode_raw(MEASURE_SCHEMA, row)
    else:
        assert kind == "avro_node"
        v = int.from_bytes(tag.encode()[-4:], "big") * 10 + i
        value, customer = encode_raw(NODE_SCHEMA, {"v": v, "next": None}), f"node-{v}"
    return value, customer


@dataclass
class Run:
    proc: ConnectorProcess
    sandbox: SandboxProcess
    group: str
    topics: dict[str, str]  # case name -> topic
    ends: dict[str, dict[int, int]]  # topic -> partition -> end offset
    customers: dict[str, list[str]]  # case name -> customers of its good records
    normalised: dict[str, Any]  # name -> the NormalisedRecord produced
    dead_letters: dict[str, list[Any]] = field(default_factory=dict)  # source topic -> messages


def _read_dead_letters(bootstrap: str, topic: str, expected: int) -> list[Any]:
    """The dead-letter topic's records: every write was confirmed before the offsets it released
    were committed, so all are there; read until ``expected`` came, or 20 s passed (then the
    cases whose record is missing fail on their own)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bad-records-reader"})
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[Any] = []
    deadline = time.monotonic() + 20
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(m for m in c.consume(100, 0.5) if m.error() is None)
    finally:
        c.close()
    return got


def _produce_large(bootstrap: str, topic: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4_000_000})
    producer.produce(topic, key=b"bad", value=value, partition=0)
    assert producer.flush(30) == 0


@pytest.fixture(scope="module")
def run(
    broker: LocalBroker, registry: BackgroundApp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("bad-records")
    suffix = os.urandom(4).hex()
    topics = {c.name: f"bad-{c.name.replace('_', '-')}-{suffix}" for c in CASES}
    normal = {
        n.name: f"normal-{n.name.replace('_', '-')}-{suffix}" for n in data.normalised_records()
    }
    dlq = f"bad-records-dlq-{suffix}"
    create_topics(
        broker.bootstrap,
        {**dict.fromkeys(topics.values(), 2), **dict.fromkeys(normal.values(), 1), dlq: 1},
    )
    with SchemaRegistryClient({"url": registry.url}) as client:
        text = (ROOT / "schemas" / "event.avsc").read_text()
        schema_ids = {
            c.name: client.register_schema(f"{topics[c.name]}-value", Schema(text, "AVRO"))
            for c in CASES
            if c.kind == "confluent_event"
        }
    ends: dict[str, dict[int, int]] = {}
    customers: dict[str, list[str]] = {}
    # Every case's records through one producer (each partition keeps this order): on partition
    # 0 good-0, the bad record (offset 1), good-1; on partition 1 good-2 and good-3. The
    # oversized record needs a producer of its own, so its topic is written in three steps.
    batch: list[tuple[str, dict[str, Any]]] = []
    for case in CASES:
        topic, schema_id = topics[case.name], schema_ids.get(case.name, 0)
        good = [_good(case.kind, case.name, i, schema_id) for i in range(4)]
        customers[case.name] = [customer for _, customer in good]
        if case.name == TOO_LARGE:
            # Many values within MoEngage's 512 characters (a longer one would be truncated to
            # fit by the data policy): only the element as a whole is too large.
            blobs = {f"blob{i}": "x" * 500 for i in range(4200)}
            bad = json.dumps({"user_id": "big", "attributes": blobs}).encode()
            produce(broker.bootstrap, topic, [(b"good-0", good[0][0])], partition_of=lambda n, k: 0)
            _produce_large(broker.bootstrap, topic, bad)
            ends[topic] = {
                **produce(
                    broker.bootstrap, topic, [(b"good-1", good[1][0])], partition_of=lambda n, k: 0
                ),
                **produce(
                    broker.bootstrap,
                    topic,
                    [(b"good-2", good[2][0]), (b"good-3", good[3][0])],
                    partition_of=lambda n, k: 1,
                ),
            }
            continue
        (bad,) = (b.value for b in data.bad_records(schema_id or 1) if b.name == case.name)
        batch += [
            (topic, {"key": b"good-0", "value": good[0][0], "partition": 0}),
            (topic, {"key": b"bad", "value": bad, "partition": 0}),
            (topic, {"key": b"good-1", "value": good[1][0], "partition": 0}),
            (topic, {"key": b"good-2", "value": good[2][0], "partition": 1}),
            (topic, {"key": b"good-3", "value": good[3][0], "partition": 1}),
        ]
    ends.update(produce_many(broker.bootstrap, batch))
    normalised = {n.name: n for n in data.normalised_records()}  # times of now: made once
    for n in normalised.values():
        ends[normal[n.name]] = produce(broker.bootstrap, normal[n.name], [(b"normal", n.value)])
    sandbox = SandboxProcess(
        "--workspace-id", WORKSPACE, "--api-key", API_KEY, log_path=tmp / "sandbox.log"
    ).start()
    group = f"bad-records-{suffix}"
    specs = [
        {"name": topics[c.name], "on_error": "dlq", "dead_letter_topic": dlq, **SETUPS[c.kind]}
        for c in CASES
    ] + [
        {"name": normal[n.name], "on_error": "fail", **SETUPS[n.topic]} for n in normalised.values()
    ]
    cfg = base_config(broker, sandbox.url, group, specs, registry_url=registry.url)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {
        **os.environ,
        "MOENGAGE_WORKSPACE_ID": WORKSPACE,
        "MOENGAGE_API_KEY": API_KEY,
        "PYTHONPATH": str(ROOT),
    }
    proc = ConnectorProcess(path, env, tmp / "connector.log").start()
    try:
        wait_until(
            lambda: (
                not proc.running()
                or all(committed_offsets(broker.bootstrap, group, t) == e for t, e in ends.items())
            ),
            120,
            "every offset of every topic committed (or the connector gone)",
        )
        r = Run(proc, sandbox, group, topics, ends, customers, normalised)
        messages = _read_dead_letters(broker.bootstrap, dlq, len(CASES)) if proc.running() else []
        for m in messages:
            source = dict(m.headers())["moengage.source.topic"].decode()
            r.dead_letters.setdefault(source, []).append(m)
        yield r
    finally:
        if proc.running():
            proc.stop(signal.SIGKILL)
        sandbox.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_record_is_dead_lettered_with_its_rule_and_the_stream_goes_on(
    case: Case, run: Run, broker: LocalBroker
) -> None:
    assert run.proc.running(), run.proc.log()[-3000:]
    topic = run.topics[case.name]
    # Committed to the end of both partitions: past the bad record, and nothing wedged.
    assert committed_offsets(broker.bootstrap, run.group, topic) == run.ends[topic]
    # Exactly the bad record went to the dead-letter topic, with the rule that caught it.
    (m,) = run.dead_letters.get(topic, [])
    headers = dict(m.headers())
    assert (headers["moengage.source.partition"], headers["moengage.source.offset"]) == (b"0", b"1")
    assert (headers["moengage.error.stage"].decode(), headers["moengage.error.rule"].decode()) == (
        case.stage,
        case.rule,
    ), headers["moengage.error.message"]
    assert headers["moengage.error.message"]
    assert m.key() == b"bad"
    if case.name == TOO_LARGE:  # more than the topic takes: the start of it, and a word saying so
        assert headers["moengage.value.truncated"] == b"true"
        assert int(headers["moengage.value.original_bytes"]) > 2_000_000
        assert 0 < len(m.value()) < 1_000_000
    # Every good record of the case, before and after it and on the other partition, arrived.
    users = run.sandbox.admin("GET", "users")
    for customer in run.customers[case.name]:
        assert customer in users, customer
        assert len(users[customer]["events"]) == 1, customer
    logged = [
        e
        for e in run.proc.log_events()
        if e.get("event") == "bad_record" and e.get("topic") == topic
    ]
    assert [(e["offset"], e["rule"]) for e in logged] == [(1, case.rule)]


@pytest.mark.parametrize("name", [n.name for n in data.normalised_records()])
def test_a_value_once_sent_wrong_is_now_sent_right(name: str, run: Run) -> None:
    expected = run.normalised[name].action
    sent = [a for user in run.sandbox.admin("GET", "users").values() for a in user["events"]]
    assert any(all(a.get(k) == v for k, v in expected.items()) for a in sent), (expected, sent)


def test_the_connector_stops_cleanly_after_all_of_them(run: Run) -> None:
    assert run.proc.running()
    assert run.proc.stop() == 0
    assert "Traceback" not in run.proc.log()
