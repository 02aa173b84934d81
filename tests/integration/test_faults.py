"""Fault-injection suite (issue 3): the real connector process, the real broker, the sandbox.

Every scenario checks: every produced record delivered or dead-lettered (lost == 0), duplicates
within the stated bound, no committed offset ever ahead of a record not yet accepted, committed
offsets never moving backwards, and at the end committed == end offsets. Each prints its figures
(``-s`` or the closing note shows them).
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from connector.devtools.broker import LocalBroker
from connector.devtools.servers import SandboxProcess
from connector.devtools.workload import events
from connector.source.decoding import encode_confluent
from tests.integration.conftest import (
    ROOT,
    ConnectorProcess,
    base_config,
    fresh_topic,
    load_schema,
    short_session,
    wait_until,
)
from tests.integration.faults import (
    CommitSampler,
    Kill,
    Tracked,
    Verdict,
    accepted_times,
    accepted_uncommitted,
    event_topic_spec,
    handovers,
    judge,
    log_time,
    produce_events,
    resend_bound,
)

pytestmark = pytest.mark.integration

Factory = Callable[..., Any]


class Run:
    """One scenario: a topic with tracked events, a recording sandbox, a sampler, a verdict."""

    def __init__(
        self,
        broker: LocalBroker,
        sandbox_factory: Factory,
        connector: Factory,
        names: Callable[[str], str],
        tmp_path: Path,
        *,
        records: int,
        partitions: int,
        users: int = 500,
        sandbox_args: tuple[str, ...] = (),
    ) -> None:
        self.broker = broker
        self.record_file = tmp_path / "accepted.jsonl"
        self.sandbox: SandboxProcess = sandbox_factory(
            "--record", str(self.record_file), *sandbox_args
        )
        self.topic = fresh_topic(broker, names("faults"), partitions)
        self.group = names("group")
        self.partitions = partitions
        self.tracked: Tracked = produce_events(broker.bootstrap, self.topic, records, users)
        self._connector = connector
        self.sampler = CommitSampler(broker.bootstrap, self.group, self.topic, partitions)
        self.kills: list[Kill] = []

    def config(self, **moengage: Any) -> dict[str, Any]:
        return base_config(
            self.broker, self.sandbox.url, self.group, [event_topic_spec(self.topic)], **moengage
        )

    def start(
        self, config: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> ConnectorProcess:
        proc: ConnectorProcess = self._connector(config or self.config(), env=env)
        return proc

    def accepted(self) -> int:
        return int(self.sandbox.admin("GET", "stats")["actions_total"])

    def all_committed(self) -> bool:
        latest = self.sampler.latest()
        return all(latest.get(p, -1) == end for p, end in self.tracked.ends.items())

    def wait_all_committed(self, timeout: float) -> None:
        wait_until(self.all_committed, timeout, "every offset committed")

    def resend_bound(self, *procs: ConnectorProcess) -> int:
        """Duplicates allowed when no request outlives the client timeout (see resend_bound):
        the records not yet committed on each partition when it changed hands."""
        moves = handovers(self.topic, *(p.log_events() for p in procs))
        return resend_bound(self.tracked, self.sampler, moves)

    def verdict(self, name: str, **kw: Any) -> Verdict:
        v = judge(self.tracked, self.record_file, self.sampler, **kw)
        print(v.line(name))
        assert v.lost == 0
        assert v.commits_ahead == 0
        assert v.backwards == 0
        assert self.all_committed()
        return v


@pytest.fixture
def run(
    broker: LocalBroker,
    sandbox_factory: Factory,
    connector: Factory,
    names: Callable[[str], str],
    tmp_path: Path,
) -> Callable[..., Run]:
    def make(**kw: Any) -> Run:
        return Run(broker, sandbox_factory, connector, names, tmp_path, **kw)

    return make


@pytest.mark.parametrize(
    "records", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow, id="1M")]
)
def test_1_baseline_sigterm_no_loss_no_duplicates(run: Callable[..., Run], records: int) -> None:
    r = run(records=records, partitions=6, users=2000)
    with r.sampler:
        proc = r.start()
        r.wait_all_committed(240 * records // 100_000)
        assert proc.stop(signal.SIGTERM) == 0
    v = r.verdict(f"baseline {records}")
    assert v.duplicates == 0
    assert v.delivered == records


@pytest.mark.parametrize(
    ("kills", "records"),
    [(10, 20_000), pytest.param(40, 150_000, marks=pytest.mark.slow, id="40-kills")],
)
def test_2_sigkill_at_random_moments_loses_nothing(
    run: Callable[..., Run], kills: int, records: int
) -> None:
    buffered, batch = 2000, 500
    r = run(records=records, partitions=6, users=1000, sandbox_args=("--latency-ms", "20"))
    cfg = r.config(max_in_flight=2)
    cfg["pipeline"]["max_buffered_records"] = buffered
    cfg["pipeline"]["consume_batch_size"] = batch
    short_session(cfg)
    rng = random.Random(7)
    with r.sampler:
        for _ in range(kills):
            target = r.accepted() + rng.randint(300, 2000)
            proc = r.start(cfg)
            # Kill at a random point of progress (not a random time): observable, not a sleep.
            # With few duplicates the last kills may find everything delivered and committed
            # before the target: the kill then comes once the instance is idle.
            wait_until(
                lambda t=target, p=proc: r.accepted() >= t or r.all_committed() or not p.running(),
                60,
                "progress before the kill",
            )
            proc.stop(signal.SIGKILL)
            dead_at = time.time()
            # The commits it left (nobody commits now): the second sample finished after it
            # died was asked for after it died.
            wait_until(
                lambda t=dead_at: sum(1 for at, _ in r.sampler.samples[-2:] if at > t) == 2,
                30,
                "two commit samples",
            )
            r.kills.append(Kill(dead_at, dict(r.sampler.latest())))
        final = r.start(cfg)
        # Up before it is stopped (a SIGTERM before the handlers are installed is a plain kill),
        # even when the last killed instance had already committed everything.
        wait_until(
            lambda: any(e["event"] == "partitions_assigned" for e in final.log_events()),
            60,
            "the last instance assigned its partitions",
        )
        r.wait_all_committed(120)
        assert final.stop() == 0
    v = r.verdict(f"sigkill x{kills}")
    exposed = accepted_uncommitted(r.tracked, r.record_file, r.kills)
    print(
        f"sigkill x{kills}: duplicates per kill={v.duplicates / kills:.0f}, accepted but not "
        f"committed at the kill={exposed / kills:.0f} per kill"
    )
    # Bound: per kill, at most what was read but not committed is resent. The partitions are
    # paused once the buffer holds max_buffered_records at the end of a loop turn, so it can hold
    # up to one consumed batch more than that (a fresh clone once measured 26,132 for 10 kills
    # against the old bound of 20,000 that left the batch out; b20bcdf measured 12,297 and 15,561).
    assert v.duplicates <= kills * (buffered + batch)


def test_3_sigterm_with_requests_in_flight_drains_and_restart_sees_no_duplicates(
    run: Callable[..., Run],
) -> None:
    r = run(records=3000, partitions=3, users=300, sandbox_args=("--latency-ms", "1500"))
    cfg = r.config(max_in_flight=4)
    cfg["pipeline"]["shutdown_grace_seconds"] = 20
    with r.sampler:
        proc = r.start(cfg)
        wait_until(
            lambda: (
                r.sandbox.admin("GET", "stats")["requests_total"] >= 1
                or len(r.sandbox.admin("GET", "attempts")) >= 1
            ),
            60,
            "a request in flight",
        )
        wait_until(lambda: "partitions_assigned" in proc.log(), 30, "assignment")
        assert proc.stop(signal.SIGTERM, timeout=30) == 0  # within the grace period
        drained = [e for e in proc.log_events() if e.get("event") == "shutdown_grace_exceeded"]
        assert drained == []
        second = r.start(cfg)
        r.wait_all_committed(60)
        wait_until(lambda: "partitions_assigned" in second.log(), 30, "the restart to be up")
        assert second.stop() == 0
    v = r.verdict("sigterm in flight")
    assert v.duplicates == 0


def test_4_outage_of_30s_and_20_percent_5xx_deliver_everything(run: Callable[..., Run]) -> None:
    r = run(
        records=20_000,
        partitions=6,
        users=1000,
        sandbox_args=("--fail-rate", "0.2", "--fail-status", "503", "--seed", "4"),
    )
    with r.sampler:
        proc = r.start()
        wait_until(lambda: r.accepted() >= 2000, 60, "some progress")
        r.sandbox.admin("POST", "faults", {"outage": True})
        before = dict(r.sampler.latest())
        outage_start = r.sandbox.admin("GET", "attempts")[-1][0]
        wait_until(
            lambda: r.sandbox.admin("GET", "attempts")[-1][0] - outage_start >= 30,
            60,
            "30 s of outage",
        )
        during = dict(r.sampler.latest())
        r.sandbox.admin("POST", "faults", {"outage": False})
        r.wait_all_committed(120)
        assert proc.stop() == 0
    statuses = [a[1] for a in r.sandbox.admin("GET", "attempts")]
    assert statuses.count(503) > 50
    # During the outage nothing new was accepted, so nothing new may have been committed
    # beyond what was accepted before it (the judge checks this per sample, too).
    assert all(during.get(p, -1) >= before.get(p, -1) for p in during)
    v = r.verdict("outage 30s + 20% 5xx")
    # Bound: a 503 is answered before the sandbox accepts anything, so the retry that follows it
    # is a first delivery; every answer comes long before request_timeout_seconds (30 s, no
    # added latency), so nothing accepted is resent after a timeout. Only a handover (none is
    # expected: one instance that keeps polling through the outage) could add duplicates.
    bound = r.resend_bound(proc)
    print(f"outage duplicate bound={bound}")
    assert v.duplicates <= bound


def test_5_429_with_retry_after_waits_at_least_that_long_and_no_rebalance(
    run: Callable[..., Run],
) -> None:
    r = run(
        records=1000,
        partitions=2,
        users=200,
        sandbox_args=("--events-per-minute", "300", "--window-seconds", "5"),
    )
    # The connector believes in a budget the account lacks, so the sandbox answers 429. Requests
    # are kept small enough (~80 events) to fit the sandbox's window of 300 events at all.
    cfg = r.config(max_in_flight=1, events_per_minute=1_000_000, max_request_bytes=20_000)
    with r.sampler:
        proc = r.start(cfg)
        r.wait_all_committed(90)
        assert proc.stop() == 0
    attempts = r.sandbox.admin("GET", "attempts")
    throttled = [(t, ra) for t, status, ra in attempts if status == 429]
    assert len(throttled) >= 2
    times = [a[0] for a in attempts]
    for t, retry_after in throttled:
        after = [x for x in times if x > t]
        if after:
            assert after[0] - t >= retry_after - 0.05
    events = running_events(proc)
    assert events.count("partitions_assigned") == 1
    assert "partitions_revoked" not in events
    assert "partitions_lost" not in events
    v = r.verdict("429 retry-after")
    assert v.duplicates == 0


def running_events(proc: ConnectorProcess) -> list[str]:
    """Log events before shutdown began (closing the consumer revokes partitions by design)."""
    events = [str(e.get("event")) for e in proc.log_events()]
    return (
        events[: events.index("connector_stopping")] if "connector_stopping" in events else events
    )


def owns_partitions(proc: ConnectorProcess) -> bool:
    """The instance was assigned at least one partition (not only the empty first round)."""
    return any(
        e.get("event") == "partitions_assigned" and e.get("partitions") for e in proc.log_events()
    )


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_6_outage_longer_than_max_poll_interval_keeps_the_group_and_memory_flat(
    run: Callable[..., Run],
) -> None:
    r = run(records=20_000, partitions=4, users=1000)
    cfg = short_session(r.config())
    cfg["kafka"]["max.poll.interval.ms"] = 5_000
    cfg["pipeline"]["max_buffered_records"] = 1000
    # The outage starts before the connector: its start-up credentials check would spend its
    # bound retrying, and the outage measured here would start before the first Bulk request.
    cfg["moengage"]["startup_check_seconds"] = 0
    r.sandbox.admin("POST", "faults", {"outage": True})
    rss: list[float] = []
    with r.sampler:
        proc = r.start(cfg)
        assert proc.proc is not None
        wait_until(lambda: "partitions_assigned" in proc.log(), 30, "assignment")
        first_attempt = wait_until(lambda: r.sandbox.admin("GET", "attempts"), 30, "attempts")
        t0 = first_attempt[0][0]

        def outage_long_enough() -> bool:
            assert proc.proc is not None
            rss.append(_rss_mb(proc.proc.pid))
            return bool(r.sandbox.admin("GET", "attempts")[-1][0] - t0 >= 10)

        wait_until(outage_long_enough, 60, "an outage twice max.poll.interval.ms")
        assert proc.running()
        assert r.sampler.latest() == {}  # nothing committed during the outage
        r.sandbox.admin("POST", "faults", {"outage": False})
        r.wait_all_committed(90)
        assert proc.stop() == 0
    events = running_events(proc)
    assert events.count("partitions_assigned") == 1
    assert "partitions_revoked" not in events
    assert "partitions_lost" not in events
    steady = rss[len(rss) // 4 :]
    print(f"outage rss MB: min={min(steady):.1f} max={max(steady):.1f}")
    assert max(steady) - min(steady) < 25  # paused in Kafka, not held in memory
    v = r.verdict("outage > max.poll.interval")
    # Bound: the outage answers 503 without accepting, and the instance kept its partitions (no
    # revocation or loss while running, asserted above): nothing is read or accepted twice. Its
    # closing revocation comes after everything was committed, so the bound is 0.
    bound = r.resend_bound(proc)
    assert bound == 0
    assert v.duplicates <= bound


def test_7_accepted_but_answered_after_the_timeout_counts_bounded_duplicates(
    run: Callable[..., Run],
) -> None:
    r = run(records=5000, partitions=3, users=500)
    r.sandbox.admin("POST", "faults", {"ack_delay_ms": 2500, "ack_delay_count": 3})
    cfg = r.config(request_timeout_seconds=1, max_request_bytes=20_000)
    with r.sampler:
        proc = r.start(cfg)
        r.wait_all_committed(90)
        assert proc.stop() == 0
    v = r.verdict("late acknowledgement")
    # Three requests were accepted but answered after the client gave up: those are resent.
    per_request = 20_000 // 150  # elements of ~150 bytes at most fill one request
    assert 1 <= v.duplicates <= 3 * per_request


def _poison_run(
    broker: LocalBroker, register: Callable[[str, str], int], names: Callable[[str], str]
) -> tuple[Tracked, dict[str, tuple[int, str]]]:
    """A Confluent-framed topic: 200 good events and six kinds of poison, all in partition 0.

    Every record is tracked by its key (a good event's key is its ``eid``); the poison ones are
    also returned as name → (offset, the rule that must catch it)."""

    topic = fresh_topic(broker, names("poison"), 1)
    schema_id = register(f"{topic}-value", "event")
    _, schema = load_schema("event")
    rows = list(events(200, 20))
    for i, e in enumerate(rows):
        e["properties"]["eid"] = f"good{i}"
    huge = dict(rows[0], properties={f"k{i}": "x" * 200 for i in range(600)})
    raises = dict(rows[1], event_name="RAISE")
    null_id = dict(rows[2], user_id="null")
    good = encode_confluent(schema_id, schema, rows[3])
    poison = {
        "bad_magic": (b"\x01" + good[1:], "decode.magic_byte"),
        "unknown_schema": (
            b"\x00" + (99_999).to_bytes(4, "big") + good[5:],
            "decode.unknown_schema",
        ),
        "truncated": (good[:12], "decode.avro"),
        "disallowed_id": (encode_confluent(schema_id, schema, null_id), "customer_id.disallowed"),
        "too_large": (encode_confluent(schema_id, schema, huge), "element.too_large"),
        "raises": (encode_confluent(schema_id, schema, raises), "transform.raised"),
    }
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    where: dict[str, tuple[int, str]] = {}
    order: list[tuple[str, bytes, str | None]] = []
    for i, e in enumerate(rows):
        order.append((f"good{i}", encode_confluent(schema_id, schema, e), None))
        if i % 30 == 10 and poison:
            name, (value, rule) = poison.popitem()
            order.append((name, value, rule))
    offsets: dict[str, int] = {}

    def report(err: Any, msg: Any) -> None:
        assert err is None
        offsets[msg.key().decode()] = msg.offset()

    for key, value, _ in order:
        producer.produce(
            topic,
            key=key.encode(),
            value=value,
            partition=0,
            headers=[("origin", b"test")],
            on_delivery=report,
        )
    producer.flush(30)
    for key, _, rule in order:
        if rule is not None:
            where[key] = (offsets[key], rule)
    tracked = Tracked(topic, {key: (0, off) for key, off in offsets.items()}, {0: len(order)})
    assert len(tracked.where) == len(order)
    return tracked, where


# What each rule's ``moengage.error.message`` must name (see the messages in connector/).
POISON_MESSAGE = {
    "decode.magic_byte": "magic byte",
    "decode.unknown_schema": "schema id 99999",
    "decode.avro": "does not match its schema",
    "customer_id.disallowed": "customer_id",
    "element.too_large": "max_request_bytes",
    "transform.raised": "RuntimeError",
}


@pytest.mark.parametrize("policy", ["dlq", "skip"])
def test_8_poison_records_go_where_the_policy_says_and_the_stream_never_stalls(
    policy: str,
    broker: LocalBroker,
    registry: Any,
    register: Callable[[str, str], int],
    sandbox_factory: Factory,
    connector: Factory,
    names: Callable[[str], str],
    tmp_path: Path,
) -> None:
    tracked, poison = _poison_run(broker, register, names)
    topic = tracked.topic
    record_file = tmp_path / "accepted.jsonl"
    sandbox: SandboxProcess = sandbox_factory("--record", str(record_file))
    dlq = fresh_topic(broker, names("dlq"), 1)
    group = names("group")
    spec = {
        "name": topic,
        "format": "confluent",
        "on_error": policy,
        "transform": {"function": "tests.integration.poison_transform:to_event"},
    }
    if policy == "dlq":
        spec["dead_letter_topic"] = dlq
    cfg = base_config(
        broker, sandbox.url, group, [spec], registry_url=registry.url, max_request_bytes=50_000
    )
    sampler = CommitSampler(broker.bootstrap, group, topic, 1)
    with sampler:
        proc = connector(cfg, env={"PYTHONPATH": str(ROOT)})
        wait_until(lambda: sampler.latest() == tracked.ends, 60, "every offset committed")
        assert proc.stop() == 0
    assert sandbox.admin("GET", "stats")["actions_total"] == 200
    bad_events = [e for e in proc.log_events() if e.get("event") == "bad_record"]
    assert {(e["offset"], e["rule"]) for e in bad_events} == set(poison.values())
    assert all(e.get("policy") == policy for e in bad_events)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": names("reader")})
    c.assign([TopicPartition(dlq, 0, 0)])
    got = []
    while True:
        m = c.poll(3 if policy == "dlq" else 1)
        if m is None:
            break
        got.append(m)
    c.close()

    # The poison records are accounted for by the policy, from the moment it acted on them: a
    # skipped record when the connector logged it; a dead-lettered one when its write was
    # produced (the dead-letter record's CreateTime; the broker confirms it later still). A
    # sampled commit past one of them before that moment counts as commits_ahead.
    offset_name = {off: name for name, (off, _) in poison.items()}
    if policy == "dlq":
        assert all(m.timestamp()[1] > 0 for m in got)
        routed = {m.key().decode(): m.timestamp()[1] / 1000 for m in got}
        v = judge(tracked, record_file, sampler, dead_lettered=routed)
    else:
        routed = {offset_name[e["offset"]]: log_time(e) for e in bad_events}
        v = judge(tracked, record_file, sampler, skipped=routed)
    print(v.line(f"poison/{policy}"))
    assert set(routed) == set(poison)
    assert v.produced == len(tracked.where) == 200 + len(poison)
    assert v.delivered == 200
    assert v.lost == 0
    assert v.commits_ahead == 0
    assert v.backwards == 0
    assert sampler.latest() == tracked.ends
    # Bound: one instance, answers without added latency (no timeouts): nothing is sent twice
    # unless the partition changes hands (see resend_bound; none is expected).
    moves = handovers(topic, proc.log_events())
    assert v.duplicates <= resend_bound(tracked, sampler, moves)

    if policy == "skip":
        assert got == []
        return
    assert len(got) == len(poison)
    for m in got:
        headers = dict(m.headers())
        name = m.key().decode()
        offset, rule = poison[name]
        assert headers["origin"] == b"test"  # the original headers are kept
        assert headers["moengage.error.rule"].decode() == rule
        assert headers["moengage.source.topic"].decode() == topic
        assert int(headers["moengage.source.offset"]) == offset
        assert headers["moengage.error.stage"].decode() in {"decode", "transform", "validate"}
        assert headers["moengage.error.class"]
        assert headers["moengage.error.time"]
        assert headers["moengage.connector.version"]
        message = headers["moengage.error.message"]
        assert 0 < len(message) <= 1000
        assert POISON_MESSAGE[rule] in message.decode(), (rule, message)


def test_9_an_earlier_failing_request_holds_the_commit_while_a_later_one_succeeds(
    run: Callable[..., Run],
) -> None:
    r = run(records=400, partitions=1, users=40)
    assert r.tracked.where["e50"] == (0, 50)
    # The customer of offset 50 (same seed as the produced workload) fails until released.
    blocked_user = next(islice(events(400, 40), 50, None))["user_id"]
    r.sandbox.admin("POST", "faults", {"fail_customers": [blocked_user], "fail_status": 503})
    # A customer's lane is hash(customer id) % lanes, and str hashes are salted per process: with
    # a random salt the blocked customer's lane held more than 100 of the 400 records in ~4 % of
    # runs, and "300 delivered" below never came. Seed 0 puts 62 records in that lane.
    with r.sampler:
        proc = r.start(r.config(max_in_flight=8), env={"PYTHONHASHSEED": "0"})
        # Every request without that customer succeeds...
        wait_until(
            lambda: len(accepted_times(r.record_file)) >= 300, 60, "the other customers delivered"
        )
        samples_before = len(r.sampler.samples)
        wait_until(lambda: len(r.sampler.samples) >= samples_before + 10, 30, "ten samples")
        # ...but the commit never passes the first record of the failing customer.
        first_blocked = min(
            off
            for eid, (p, off) in r.tracked.where.items()
            if eid not in accepted_times(r.record_file)
        )
        assert r.sampler.latest().get(0, -1) <= first_blocked <= 50
        r.sandbox.admin("POST", "faults", {"fail_customers": []})
        r.wait_all_committed(60)
        assert proc.stop() == 0
    v = r.verdict("earlier fails, later succeeds")
    # Bound: the sandbox refuses a request holding the blocked customer whole (503, nothing
    # accepted), so its retries deliver each record once; the requests that succeed are never
    # sent again. Only a handover of the partition could add duplicates (none is expected).
    bound = r.resend_bound(proc)
    print(f"earlier-fails duplicate bound={bound}")
    assert v.duplicates <= bound


def test_10_instances_join_and_leave_while_requests_are_slow(run: Callable[..., Run]) -> None:
    # ~80 events a request, 300 ms each, two lanes: roughly 500 events/s per instance. While
    # the others join, answers take 3 s (about 50 events/s), so the backlog outlasts the joins
    # however long they take on a loaded machine.
    r = run(records=12_000, partitions=6, users=1000, sandbox_args=("--latency-ms", "300"))
    cfg = r.config(max_in_flight=2, max_request_bytes=20_000)
    with r.sampler:
        first = r.start(cfg)
        wait_until(lambda: r.accepted() >= 500, 60, "progress with one instance")
        r.sandbox.admin("POST", "faults", {"latency_ms": 3000})
        second, third = r.start(cfg), r.start(cfg)
        # Cooperative rebalancing first gives a joiner an empty assignment, and the partitions
        # only once their owner has revoked them (a second round): wait for real ones.
        wait_until(
            lambda: owns_partitions(second) and owns_partitions(third),
            60,
            "the joiners get partitions",
        )
        r.sandbox.admin("POST", "faults", {"latency_ms": 300})
        progress = r.accepted()
        assert progress < 12_000, "the backlog drained before the joiners arrived"
        wait_until(
            lambda: r.accepted() >= min(progress + 1000, 12_000),
            60,
            f"progress with three (from {progress})",
        )
        assert second.stop() == 0
        assert third.stop() == 0
        r.wait_all_committed(120)
        assert first.stop() == 0
    revoked = [e for e in first.log_events() if e.get("event") == "partitions_revoked"]
    assert revoked  # the first instance really gave partitions away to the joiners
    v = r.verdict("join and leave")
    # Bound: answers take 300 ms against a 30 s timeout, so a record is delivered twice only
    # when its partition changes hands: the new owner re-reads from the committed offset. Each
    # join and each leave hands partitions over; each handover can resend at most the records
    # of those partitions not yet committed at that moment.
    bound = r.resend_bound(first, second, third)
    moves = handovers(r.topic, first.log_events(), second.log_events(), third.log_events())
    print(f"join/leave duplicates={v.duplicates} bound={bound} handovers={len(moves)}")
    assert v.duplicates <= bound


def test_11_broker_frozen_and_resumed_everything_is_delivered(run: Callable[..., Run]) -> None:
    r = run(records=20_000, partitions=4, users=1000, sandbox_args=("--latency-ms", "20"))
    with r.sampler:
        proc = r.start(r.config(max_in_flight=2))
        wait_until(lambda: r.accepted() >= 2000, 60, "progress before the freeze")
        r.broker.freeze()
        try:
            committed_at_freeze = dict(r.sampler.latest())
            frozen_at = r.accepted()
            # While the broker is stopped the connector keeps sending what it had read.
            wait_until(
                lambda: r.accepted() > frozen_at or not proc.running(),
                30,
                "the connector to keep working from its buffer",
            )
        finally:
            r.broker.thaw()
        r.wait_all_committed(120)
        assert proc.stop() == 0
    v = r.verdict("broker SIGSTOP/SIGCONT")
    # Bound: HTTP is untouched by the freeze (20 ms answers, 30 s timeout), so a duplicate needs
    # the instance to lose its partitions (its session may expire while the broker is stopped)
    # and re-read from the committed offset: at most what was not committed when the broker
    # froze, once per loss. No loss: 0.
    bound = r.resend_bound(proc)
    held = sum(end - committed_at_freeze.get(p, 0) for p, end in r.tracked.ends.items())
    print(f"freeze duplicate bound={bound} (uncommitted at the freeze: {held})")
    assert v.duplicates <= bound
