"""MoEngage's data-tracking policy end to end, on the real broker and the sandbox: records breaking
every per-record row (and non-finite Avro doubles), one topic per action, read by one connector;
a second connector stops on such a record under ``fail``. Shows that nothing the sandbox would
truncate or drop reaches it (its loss record stays empty), that each record went where its action
says, and that nothing is lost: by offset, produced = delivered + dead-lettered + skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import committed_offsets, create_topics, produce
from connector.devtools.servers import SandboxProcess
from connector.source.decoding import encode_raw, load_schema_file
from tests.integration import bad_records as data
from tests.integration.conftest import ROOT, ConnectorProcess, base_config, wait_until

TRANSFORM = {"function": "tests.integration.policy_transform:to_element"}
MEASURE = load_schema_file(data.MEASURE_SCHEMA, key_path="test")
URL = "https://example.com/" + "p" * 600

# What each bad row looks like: (kind, event name, attributes), and the rule it breaks.
ROWS: dict[str, tuple[tuple[str, str, dict[str, Any]], str]] = {
    "value": (("customer", "", {"bio": "b" * 600}), "policy.value_length"),
    "url": (("customer", "", {"link": URL}), "policy.url_length"),
    "attr_name": (("customer", "", {"n" * 210: 1}), "policy.name_length"),
    "event_name": (("event", "E" * 210, {"a": 1}), "policy.name_length"),
    "array_length": (("customer", "", {"tags": list(range(60))}), "policy.array_length"),
    "array_item": (("customer", "", {"tags": ["x" * 600]}), "policy.array_item_length"),
    "array_mixed": (("customer", "", {"tags": ["a", 1]}), "policy.array_mixed_types"),
    "object": (("event", "Moved", {"address": {"city": "Pune", "zip": "411001"}}), "policy.object"),
    "period": (("event", "order.placed", {"a": 1}), "policy.event_name_period"),
}
FIXABLE = ["value", "attr_name", "event_name", "array_length", "array_item", "array_mixed",
           "object", "period"]  # fmt: skip
REJECTED = ["url", "array_length", "array_item", "array_mixed", "object", "period"]
FIX_POLICY = {
    "object": "flatten",
    "array_length": "stringify",
    "array_item_length": "stringify",
    "array_mixed_types": "stringify",
    "event_name_period": "replace",
}
NON_FINITE = [float("nan"), float("inf"), float("-inf")]


def _json_record(tag: str, offset: int, row: str | None) -> bytes:
    kind, name, attrs = ROWS[row][0] if row else ("customer", "", {"plan": "pro"})
    return json.dumps(
        {"id": f"{tag}-{offset}", "kind": kind, "name": name or "Good", "attrs": attrs}
    ).encode()


def _measure(tag: str, offset: int, score: float) -> bytes:
    row = {"user_id": f"{tag}-{offset}", "event_name": "Measured", "amount": Decimal("1.5"),
           "score": score, "local_at": dt.datetime(2026, 6, 1, 12, 0)}  # fmt: skip
    return encode_raw(MEASURE, row)


@dataclass
class Topic:
    """One topic: its records (by offset: the row each breaks, or None for a good one)."""

    tag: str
    name: str
    spec: dict[str, Any]
    rows: list[Any]
    policy: dict[str, str] = field(default_factory=dict)

    def customer(self, offset: int) -> str:
        return f"{self.tag}-{offset}"


@dataclass
class Runs:
    topics: dict[str, Topic]
    main: ConnectorProcess
    main_exit: int
    failing: ConnectorProcess
    failing_exit: int
    group: str
    fail_group: str
    sandbox: SandboxProcess
    users: dict[str, Any]
    losses: dict[str, Any]
    dead_letters: dict[tuple[str, int], dict[str, str]]  # (source topic, offset) -> headers


def _dead_letters(bootstrap: str, topic: str, expected: int) -> list[Any]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "policy-dlq-reader"})
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[Any] = []
    deadline = time.monotonic() + 20
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(m for m in c.consume(100, 0.5) if m.error() is None)
    finally:
        c.close()
    return got


@pytest.fixture(scope="module")
def runs(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    tmp = tmp_path_factory.mktemp("data-policy")
    suffix = os.urandom(4).hex()
    dlq = f"policy-dead-letters-{suffix}"
    avro = {"format": "avro", "schema": str(data.MEASURE_SCHEMA),
            "transform": {"function": "tests.integration.bad_transform:from_measure"}}  # fmt: skip
    as_json = {"format": "json", "transform": TRANSFORM}
    bad = [None, *REJECTED, None]
    topics = {
        "fix": Topic("fix", "", {**as_json, "on_error": "fail"}, [None, *FIXABLE, None],
                     FIX_POLICY),
        "stringify": Topic("str", "", {**as_json, "on_error": "fail"}, [None, "object"],
                           {"object": "stringify"}),
        "allow": Topic("allow", "", {**as_json, "on_error": "fail"}, ["object"],
                       {"object": "allow"}),
        "skip": Topic("skip", "", {**as_json, "on_error": "skip"}, bad),
        "dlq": Topic("dlq", "", {**as_json, "on_error": "dlq", "dead_letter_topic": dlq}, bad),
        "nf_stringify": Topic("nfs", "", {**avro, "on_error": "fail"}, [0.5, *NON_FINITE],
                              {"non_finite": "stringify"}),
        "nf_dlq": Topic("nfd", "", {**avro, "on_error": "dlq", "dead_letter_topic": dlq},
                        [0.5, *NON_FINITE, 0.25]),
        "fail": Topic("fail", "", {**as_json, "on_error": "fail"}, [None, "url", None]),
    }  # fmt: skip
    for t in topics.values():
        t.name = f"policy-{t.tag}-{suffix}"
    create_topics(broker.bootstrap, {**{t.name: 1 for t in topics.values()}, dlq: 1})
    for t in topics.values():
        if "schema" in t.spec:
            values = [_measure(t.tag, i, s) for i, s in enumerate(t.rows)]
        else:
            values = [_json_record(t.tag, i, row) for i, row in enumerate(t.rows)]
        produce(broker.bootstrap, t.name, [(t.tag.encode(), v) for v in values])
    # An account with the Object data type, so `allow` for objects loses nothing there either.
    sandbox = SandboxProcess("--workspace-id", "IT_WORKSPACE", "--api-key",
                             "it-api-key-0123456789", "--object-data-type",
                             log_path=tmp / "sandbox.log").start()  # fmt: skip
    env = {**os.environ, "MOENGAGE_WORKSPACE_ID": "IT_WORKSPACE",
           "MOENGAGE_API_KEY": "it-api-key-0123456789", "PYTHONPATH": str(ROOT)}  # fmt: skip

    def start(group: str, chosen: list[Topic], n: int) -> ConnectorProcess:
        specs = [{"name": t.name, **t.spec} for t in chosen]
        cfg = base_config(broker, sandbox.url, group, specs)
        cfg["policy"] = {"topics": {t.name: t.policy for t in chosen if t.policy}}
        path = tmp / f"config{n}.yaml"
        path.write_text(json.dumps(cfg))  # JSON is YAML
        return ConnectorProcess(path, env, tmp / f"connector{n}.log").start()

    group, fail_group = f"policy-{suffix}", f"policy-fail-{suffix}"
    main_topics = [t for k, t in topics.items() if k != "fail"]
    main = start(group, main_topics, 0)
    failing = start(fail_group, [topics["fail"]], 1)
    try:
        wait_until(
            lambda: (
                not main.running()
                or all(
                    committed_offsets(broker.bootstrap, group, t.name) == {0: len(t.rows)}
                    for t in main_topics
                )
            ),
            90,
            "every offset of the main run committed (or the connector gone)",
        )
        try:
            failing_exit = failing.wait(60)
        except subprocess.TimeoutExpired:
            failing_exit = -1  # still running: test_both_runs_ended_as_their_policies_say fails
        main_exit = main.stop()
        expected = sum(1 for r in topics["dlq"].rows if r) + len(NON_FINITE)
        letters = {}
        for m in _dead_letters(broker.bootstrap, dlq, expected):
            headers = {k: (v or b"").decode() for k, v in m.headers()}
            key = (headers["moengage.source.topic"], int(headers["moengage.source.offset"]))
            letters[key] = headers
        users, losses = sandbox.admin("GET", "users"), sandbox.admin("GET", "policy-losses")
        yield Runs(topics, main, main_exit, failing, failing_exit, group, fail_group, sandbox,
                   users, losses, letters)  # fmt: skip
    finally:
        for proc in (main, failing):
            if proc.running():
                proc.stop()
        sandbox.stop()


def _delivered(runs: Runs, t: Topic) -> set[int]:
    return {i for i in range(len(t.rows)) if t.customer(i) in runs.users}


def _skipped(runs: Runs, t: Topic) -> set[int]:
    return {
        e["offset"]
        for e in runs.main.log_events()
        if e.get("event") == "bad_record" and e.get("topic") == t.name and e["policy"] == "skip"
    }


def test_both_runs_ended_as_their_policies_say(runs: Runs) -> None:
    assert runs.main_exit == 0, runs.main.log()[-3000:]
    assert runs.failing_exit == 4, runs.failing.log()[-3000:]
    assert "Traceback" not in runs.main.log() + runs.failing.log()


def test_nothing_reaches_the_sandbox_that_it_would_truncate_or_drop(runs: Runs) -> None:
    assert (runs.losses["total"], runs.losses["losses"]) == (0, []), runs.losses
    assert (runs.losses["appkey"]["missing"], runs.losses["appkey"]["wrong"]) == (0, 0)


def test_nothing_is_lost_produced_is_delivered_plus_dead_lettered_plus_skipped(
    runs: Runs,
) -> None:
    for key, t in runs.topics.items():
        if key == "fail":
            continue
        delivered, skipped = _delivered(runs, t), _skipped(runs, t)
        lettered = {offset for (topic, offset) in runs.dead_letters if topic == t.name}
        assert not delivered & skipped, key
        assert not delivered & lettered, key
        assert not skipped & lettered, key
        assert delivered | skipped | lettered == set(range(len(t.rows))), (
            key, delivered, skipped, lettered)  # fmt: skip


def test_fixing_actions_deliver_what_moengage_would_keep(runs: Runs) -> None:
    t = runs.topics["fix"]
    got = {row: runs.users[t.customer(i)] for i, row in enumerate(t.rows) if row}
    assert got["value"]["attributes"]["bio"] == "b" * 512  # truncated and counted
    assert got["attr_name"]["attributes"]["n" * 200] == 1
    assert got["event_name"]["events"][0]["action"] == "E" * 200
    assert got["array_length"]["attributes"]["tags"] == json.dumps(
        list(range(60)), separators=(",", ":")
    )
    # stringified, then cut to 512 characters as MoEngage would (counted as a truncation)
    assert got["array_item"]["attributes"]["tags"] == ('["' + "x" * 600 + '"]')[:512]
    assert got["array_mixed"]["attributes"]["tags"] == '["a",1]'
    assert got["object"]["events"][0]["attributes"] == {
        "address_city": "Pune",
        "address_zip": "411001",
    }
    assert got["period"]["events"][0]["action"] == "order_placed"
    s = runs.topics["stringify"]
    assert runs.users[s.customer(1)]["events"][0]["attributes"]["address"] == (
        '{"city":"Pune","zip":"411001"}')  # fmt: skip
    a = runs.topics["allow"]
    assert runs.users[a.customer(0)]["events"][0]["attributes"]["address"] == {
        "city": "Pune", "zip": "411001"}  # fmt: skip
    n = runs.topics["nf_stringify"]
    scores = [runs.users[n.customer(i)]["events"][0]["attributes"]["score"] for i in range(4)]
    assert scores == [0.5, "NaN", "Infinity", "-Infinity"]


def test_bad_input_is_skipped_or_dead_lettered_with_the_rule_in_the_header(runs: Runs) -> None:
    for key in ("skip", "dlq"):
        t = runs.topics[key]
        bad = {i: ROWS[row][1] for i, row in enumerate(t.rows) if row}
        assert _delivered(runs, t) == {0, len(t.rows) - 1}, key
        if key == "skip":
            logged = {
                e["offset"]: e["rule"]
                for e in runs.main.log_events()
                if e.get("event") == "bad_record" and e.get("topic") == t.name
            }
            assert logged == bad
        else:
            rules = {o: h["moengage.error.rule"] for (tp, o), h in runs.dead_letters.items()
                     if tp == t.name}  # fmt: skip
            assert rules == bad
    nf = runs.topics["nf_dlq"]
    rules = {o: h["moengage.error.rule"] for (tp, o), h in runs.dead_letters.items()
             if tp == nf.name}  # fmt: skip
    assert rules == {1: "value.non_finite", 2: "value.non_finite", 3: "value.non_finite"}
    assert _delivered(runs, nf) == {0, 4}


def test_under_fail_the_connector_stops_on_the_record(runs: Runs, broker: LocalBroker) -> None:
    t = runs.topics["fail"]
    assert committed_offsets(broker.bootstrap, runs.fail_group, t.name) == {0: 1}
    assert _delivered(runs, t) == {0}
    (line,) = [e for e in runs.failing.log_events() if e.get("event") == "bad_record"]
    assert (line["offset"], line["rule"], line["policy"]) == (1, "policy.url_length", "fail")


def test_the_stop_summary_counts_every_application(runs: Runs) -> None:
    (summary,) = [e for e in runs.main.log_events() if e.get("event") == "connector_stopped"]
    counts = {k: v for k, v in summary.items() if k.startswith("policy_")}
    assert counts == {
        "policy_truncated": 4,  # bio, an attribute name, an event name, a stringified array
        "policy_flattened": 1,
        "policy_stringified": 3 + 1 + 3,  # arrays, an object, non-finite doubles
        "policy_replaced": 1,
        "policy_bad_input": 2 * len(REJECTED) + len(NON_FINITE),
        "policy_allowed": 1,
    }
