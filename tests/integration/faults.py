"""Harness for the fault-injection suite: tracked workloads, a committed-offset sampler, and the
invariants every scenario checks.

Each produced event carries a unique id (``properties.eid``) and we learn its partition and
offset from the producer's delivery report. The sandbox records every accepted request with the
time it accepted it (``--record``), so for every sampled commit ``(t, partition, offset)`` we can
check that every record below ``offset`` had been accepted by ``t``: no commit ahead of delivery.
"""

from __future__ import annotations

import bisect
import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from connector.devtools.workload import events
from connector.source.decoding import encode_raw
from tests.integration.conftest import ROOT, load_schema

INF = float("inf")
EVENT_MAPPING = {
    "type": "event",
    "customer_id": "user_id",
    "action": "event_name",
    "current_time": "event_time",
    "platform": "platform",
    "attributes": {"from": "properties"},
}


def event_topic_spec(topic: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": topic,
        "format": "avro",
        "schema": str(ROOT / "schemas" / "event.avsc"),
        "transform": {"mapping": EVENT_MAPPING},
        **extra,
    }


@dataclass
class Tracked:
    """What was produced: event id → (partition, offset), and the end offsets."""

    topic: str
    where: dict[str, tuple[int, int]] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)

    def by_partition(self) -> dict[int, list[tuple[int, str]]]:
        out: dict[int, list[tuple[int, str]]] = {}
        for eid, (p, off) in self.where.items():
            out.setdefault(p, []).append((off, eid))
        for rows in out.values():
            rows.sort()
        return out


def produce_events(
    bootstrap: str, topic: str, n: int, n_users: int, *, seed: int = 3, start: int = 0
) -> Tracked:
    """Produce ``n`` seeded events keyed by user; record where each landed."""
    _, schema = load_schema("event")
    tracked = Tracked(topic)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20}
    )
    errors: list[str] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
            return
        eid = msg.key().decode().split("|", 1)[1]
        p, off = msg.partition(), msg.offset()
        tracked.where[eid] = (p, off)
        tracked.ends[p] = max(tracked.ends.get(p, 0), off + 1)

    for i, e in enumerate(events(n, n_users, seed=seed)):
        eid = f"e{start + i}"
        e["properties"]["eid"] = eid
        while True:
            try:
                # Key = user id (so one user's events share a partition) + the id, for the report;
                # partitioning uses the user part only via an explicit partition choice below.
                producer.produce(
                    topic,
                    key=f"{e['user_id']}|{eid}".encode(),
                    value=encode_raw(schema, e),
                    partition=_partition_of(e["user_id"], bootstrap, topic, producer),
                    on_delivery=report,
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    assert not errors, errors[:3]
    assert len(tracked.where) == n
    return tracked


_partition_counts: dict[tuple[str, str], int] = {}


def _partition_of(user: str, bootstrap: str, topic: str, producer: Producer) -> int:
    key = (bootstrap, topic)
    if key not in _partition_counts:
        meta = producer.list_topics(topic, timeout=10)
        _partition_counts[key] = len(meta.topics[topic].partitions)
    # A stable hash of the user id (Python's str hash is salted per process).
    return int.from_bytes(user.encode()[-4:], "big") % _partition_counts[key]


class CommitSampler:
    """Samples the group's committed offsets in a thread, with the time each sample was taken."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.samples: list[tuple[float, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CommitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                got = self._consumer.committed(self._tps, timeout=5)
            except KafkaException:
                continue  # the broker is frozen in one scenario: keep trying
            t = time.time()
            self.samples.append((t, {tp.partition: tp.offset for tp in got if tp.offset >= 0}))
            self._stop.wait(0.1)

    def latest(self) -> dict[int, int]:
        return self.samples[-1][1] if self.samples else {}


def accepted_times(record_file: Path) -> dict[str, list[float]]:
    """event id → the times the sandbox accepted a request holding it (one per delivery)."""
    out: dict[str, list[float]] = {}
    if not record_file.exists():
        return out
    for line in record_file.read_bytes().splitlines():
        entry = orjson.loads(line)
        for element in entry["body"]["elements"]:
            for action in element.get("actions", ()):
                eid = (action.get("attributes") or {}).get("eid")
                if eid is not None:
                    out.setdefault(eid, []).append(entry["ts"])
    return out


@dataclass
class Verdict:
    produced: int
    delivered: int
    dead_lettered: int
    duplicates: int
    lost: int
    commits_ahead: int
    samples: int
    backwards: int
    skipped: int = 0

    def line(self, name: str) -> str:
        skipped = f"skipped={self.skipped} " if self.skipped else ""
        return (
            f"{name}: produced={self.produced} delivered={self.delivered} "
            f"dead_lettered={self.dead_lettered} {skipped}duplicates={self.duplicates} "
            f"lost={self.lost} commits_ahead={self.commits_ahead} (of {self.samples} samples) "
            f"backwards={self.backwards}"
        )


def _ready(routed: set[str] | Mapping[str, float] | None) -> dict[str, float]:
    """Records taken care of without MoEngage → the time from which committing past them is
    allowed (a plain set: from the start)."""
    if routed is None:
        return {}
    if isinstance(routed, Mapping):
        return dict(routed)
    return dict.fromkeys(routed, 0.0)


def judge(
    tracked: Tracked,
    record_file: Path,
    sampler: CommitSampler,
    *,
    dead_lettered: set[str] | Mapping[str, float] | None = None,
    skipped: set[str] | Mapping[str, float] | None = None,
) -> Verdict:
    """Check the invariants: nothing lost, nothing committed ahead, commits never go back.

    ``dead_lettered`` and ``skipped`` are records the policy routed away from MoEngage; given as
    a mapping, the time each was routed (e.g. the dead-letter write), before which a commit
    past it is "ahead"."""
    dead = _ready(dead_lettered)
    skip = _ready(skipped)
    routed = {**dead, **skip}
    accepted = accepted_times(record_file)
    counts = Counter({eid: len(ts) for eid, ts in accepted.items()})
    lost = [eid for eid in tracked.where if eid not in accepted and eid not in routed]
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    # For each partition: prefix maximum of first-acceptance time by offset.
    offsets_by: dict[int, list[int]] = {}
    ready_by: dict[int, list[float]] = {}
    for p, rows in tracked.by_partition().items():
        latest = 0.0
        offsets, prefix = [], []
        for off, eid in rows:
            first = min(accepted[eid]) if eid in accepted else routed.get(eid, INF)
            latest = max(latest, first)
            offsets.append(off)
            prefix.append(latest)
        offsets_by[p], ready_by[p] = offsets, prefix
    ahead = 0
    backwards = 0
    last: dict[int, int] = {}
    for t, committed in sampler.samples:
        for p, c in committed.items():
            if c < last.get(p, -1):
                backwards += 1
            last[p] = c
            i = bisect.bisect_left(offsets_by.get(p, []), c)
            if i and ready_by[p][i - 1] > t + 0.05:  # 50 ms for clock reads in two processes
                ahead += 1
    return Verdict(
        produced=len(tracked.where),
        delivered=len(set(accepted) & set(tracked.where)),
        dead_lettered=len(dead),
        duplicates=duplicates,
        lost=len(lost),
        commits_ahead=ahead,
        samples=len(sampler.samples),
        backwards=backwards,
        skipped=len(skip),
    )


# ----- the duplicate bound ----------------------------------------------------------------------

# A lost assignment may already have been taken over when its old owner notices: the broker
# evicts a member one session timeout after its last heartbeat and the member learns it at its
# next heartbeat (3 s by default). The suite's session timeout is at most 6 s: look that far back.
LOST_LEAD_S = 6.0


@dataclass(frozen=True)
class Handover:
    """A partition changing hands: revoked (the old owner drained and committed first) or lost."""

    at: float  # when the old owner logged it, seconds since the epoch
    partitions: tuple[int, ...]
    lost: bool


def log_time(event: Mapping[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(event["timestamp"])).timestamp()


def handovers(topic: str, *logs: Iterable[Mapping[str, Any]]) -> list[Handover]:
    """Every ``partitions_revoked``/``partitions_lost`` of ``topic`` in the connectors' logs."""
    out = []
    prefix = f"{topic}["
    for log in logs:
        for e in log:
            if e.get("event") not in ("partitions_revoked", "partitions_lost"):
                continue
            parts = tuple(
                int(tp[len(prefix) : -1]) for tp in e["partitions"] if tp.startswith(prefix)
            )
            if parts:
                out.append(Handover(log_time(e), parts, e["event"] == "partitions_lost"))
    return sorted(out, key=lambda h: h.at)


def resend_bound(tracked: Tracked, sampler: CommitSampler, moves: Iterable[Handover]) -> int:
    """The most records a run may deliver twice when no request outlives the client timeout.

    Within one ownership a record is read once and resent only after an answer that did not
    accept it (the sandbox records a request only when it accepts it): never twice. A second
    delivery needs a handover: the next owner re-reads from the group's committed offset and can
    resend each record at or above it once. Commits never go back (the judge checks), so the
    committed offset at a handover is at least the last one sampled before it (for a loss, before
    the takeover could have happened). Bound: over all handovers, the sum of each handed-over
    partition's end offset minus that sampled commit. No handover: 0.
    """
    times = [t for t, _ in sampler.samples]
    total = 0
    for h in moves:
        cutoff = h.at - (LOST_LEAD_S if h.lost else 0.0)
        i = bisect.bisect_right(times, cutoff)
        committed = sampler.samples[i - 1][1] if i else {}
        for p in h.partitions:
            total += max(0, tracked.ends.get(p, 0) - committed.get(p, 0))
    return total


# ----- exposure at a hard kill ------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    """A SIGKILL: when it happened and the group's committed offsets it left behind."""

    at: float
    committed: dict[int, int]


def accepted_uncommitted(tracked: Tracked, record_file: Path, kills: Iterable[Kill]) -> int:
    """Records the killed run had delivered (accepted since the previous kill, up to this one)
    whose offsets were not committed at the kill, summed over the kills: what each restart reads
    again and resends, so about the duplicates to expect."""
    accepted = accepted_times(record_file)
    rows = tracked.by_partition()
    total = 0
    since = 0.0
    for kill in sorted(kills, key=lambda k: k.at):
        for p, offsets in rows.items():
            start = kill.committed.get(p, 0)
            total += sum(
                1
                for off, eid in offsets
                if off >= start and any(since < t <= kill.at for t in accepted.get(eid, ()))
            )
        since = kill.at
    return total
