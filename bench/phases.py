"""The benchmark's phases: a backlog run, the steady-rate latency run, an optional profiled run.

Each phase starts its own sandbox process (fresh counters, nothing kept from an earlier run) and
its own connector process with a fresh consumer group, and stops both before returning.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.runner import (
    API_KEY,
    EVENT_MAPPING,
    USER_MAPPING,
    WORKSPACE,
    RunResult,
    TopicConf,
    run_connector,
    write_config,
)
from bench.workload import (
    EVENTS_TOPIC,
    PARTITIONS,
    SCHEMAS,
    USERS_TOPIC,
    ConsumeProbe,
    PacedProducer,
)
from connector.devtools.kafkautil import create_topics
from connector.devtools.servers import SandboxProcess


@dataclass(frozen=True)
class Env:
    """Where things run and what every connector run shares."""

    bootstrap: str
    registry_url: str
    workdir: Path
    broker_pid: int | None
    max_request_bytes: int


def backlog_topics() -> list[TopicConf]:
    return [
        TopicConf(EVENTS_TOPIC, "avro", EVENT_MAPPING, SCHEMAS / "event.avsc"),
        TopicConf(USERS_TOPIC, "confluent", USER_MAPPING),
    ]


def _sandbox(env: Env, name: str, *extra: str) -> SandboxProcess:
    return SandboxProcess(
        "--workspace-id",
        WORKSPACE,
        "--api-key",
        API_KEY,
        *extra,
        log_path=env.workdir / f"{name}.sandbox.log",
    )


def backlog_run(
    env: Env,
    name: str,
    ends: dict[str, dict[int, int]],
    *,
    linger_ms: int,
    timeout: float,
    latency_ms: float = 0,
    profile_hz: int | None = None,
) -> tuple[RunResult, dict[str, Any] | None]:
    """The connector over the whole backlog; with ``profile_hz``, py-spy samples it too."""
    group = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    extra = ("--latency-ms", str(latency_ms)) if latency_ms else ()
    result = RunResult(name, sum(sum(p.values()) for p in ends.values()))
    profile: dict[str, Any] | None = None
    spy: list[subprocess.Popen[bytes]] = []
    raw = env.workdir / f"{name}.pyspy.txt"
    raw.unlink(missing_ok=True)
    with _sandbox(env, name, *extra) as sandbox:
        config = env.workdir / f"{name}.yaml"
        write_config(
            config,
            bootstrap=env.bootstrap,
            group=group,
            sandbox_url=sandbox.url,
            registry_url=env.registry_url,
            topics=backlog_topics(),
            linger_ms=linger_ms,
            max_request_bytes=env.max_request_bytes,
        )

        def start_spy(pid: int) -> None:
            if profile_hz is not None:
                spy.append(_start_py_spy(pid, raw, profile_hz))

        try:
            run_connector(
                result,
                config=config,
                log_path=env.workdir / f"{name}.connector.log",
                bootstrap=env.bootstrap,
                group=group,
                partitions={t: sorted(p) for t, p in ends.items()},
                timeout=timeout,
                broker_pid=env.broker_pid,
                sandbox_pid=sandbox.proc.pid if sandbox.proc else None,
                while_running=start_spy if profile_hz is not None else None,
            )
        finally:
            for p in spy:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        result.sandbox_stats = sandbox.admin("GET", "stats")
    if profile_hz is not None:
        profile = summarize_py_spy(raw) if raw.exists() else {"error": "py-spy wrote nothing"}
    return result, profile


def latency_run(
    env: Env, *, rate: int, seconds: float, linger_ms: int, timeout: float
) -> tuple[RunResult, dict[str, Any]]:
    """A steady ``rate`` of events into an empty topic while the connector runs; per record,
    latency = sandbox acceptance time - the record's Kafka timestamp."""
    topic = f"bench.latency.{uuid.uuid4().hex[:8]}"
    create_topics(env.bootstrap, {topic: PARTITIONS})
    group = f"bench-latency-{uuid.uuid4().hex[:8]}"
    record = env.workdir / "latency.accepted.jsonl"
    record.unlink(missing_ok=True)
    target = int(rate * seconds)
    result = RunResult("latency", target)
    producer = PacedProducer(env.bootstrap, topic, rate, seconds)
    probe = ConsumeProbe(env.bootstrap, topic, PARTITIONS)
    with _sandbox(env, "latency", "--record", str(record)) as sandbox:
        config = env.workdir / "latency.yaml"
        write_config(
            config,
            bootstrap=env.bootstrap,
            group=group,
            sandbox_url=sandbox.url,
            registry_url=None,
            topics=[TopicConf(topic, "avro", EVENT_MAPPING, SCHEMAS / "event.avsc")],
            linger_ms=linger_ms,
            max_request_bytes=env.max_request_bytes,
        )
        try:
            run_connector(
                result,
                config=config,
                log_path=env.workdir / "latency.connector.log",
                bootstrap=env.bootstrap,
                group=group,
                partitions={topic: list(range(PARTITIONS))},
                timeout=seconds + timeout,
                broker_pid=env.broker_pid,
                sandbox_pid=sandbox.proc.pid if sandbox.proc else None,
                while_running=lambda _pid: (probe.start(), producer.start()),
            )
        finally:
            producer.join()
            probe.stop()
        result.sandbox_stats = sandbox.admin("GET", "stats")
    out = _latencies(record, producer)
    delays = sorted(probe.delays_ms)
    out["bare_consumer"] = {
        "what": "Kafka timestamp -> arrival in a plain confluent-kafka consumer (default fetch "
        "settings, own group) on the same topic at the same time: the broker's share",
        "records": len(delays),
        "p50_ms": percentile(delays, 50),
        "p99_ms": percentile(delays, 99),
        "max_ms": delays[-1] if delays else math.nan,
    }
    return result, out


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _latencies(record: Path, producer: PacedProducer) -> dict[str, Any]:
    accepted: dict[int, float] = {}
    if record.exists():
        with record.open("rb") as f:
            for line in f:
                entry = orjson.loads(line)
                for element in entry["body"].get("elements", ()):
                    for action in element.get("actions") or ():
                        seq = (action.get("attributes") or {}).get("bench_seq")
                        if isinstance(seq, int) and seq not in accepted:
                            accepted[seq] = entry["ts"]
    values = sorted(
        (accepted[seq] - ts_ms / 1000) * 1000
        for seq, ts_ms in producer.timestamps_ms.items()
        if seq in accepted
    )
    # The connector's share: from the broker's acknowledgement of the write (the earliest a
    # consumer can see the record) to the 200. Tansu acknowledges some writes hundreds of ms
    # after the record's timestamp, which no consumer can make up for.
    after_ack = sorted(
        (accepted[seq] - acked) * 1000
        for seq, acked in producer.acked_at.items()
        if seq in accepted
    )
    broker_ack = sorted(
        acked * 1000 - producer.timestamps_ms[seq] for seq, acked in producer.acked_at.items()
    )
    return {
        "rate_per_s": producer.rate,
        "seconds": producer.seconds,
        "produced": producer.produced,
        "delivered_to_kafka": len(producer.timestamps_ms),
        "matched_in_sandbox": len(values),
        "producer_failures": producer.failures[:3],
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": values[-1] if values else math.nan,
        "broker_ack": {
            "what": "record timestamp -> the broker's acknowledgement of the write",
            "p50_ms": percentile(broker_ack, 50),
            "p99_ms": percentile(broker_ack, 99),
        },
        "after_broker_ack": {
            "what": "the broker's acknowledgement of the write -> the 200 (the connector's share)",
            "p50_ms": percentile(after_ack, 50),
            "p99_ms": percentile(after_ack, 99),
        },
    }


# ----- py-spy ------------------------------------------------------------------------------------


def py_spy_path() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def _start_py_spy(pid: int, out: Path, hz: int) -> subprocess.Popen[bytes]:
    exe = py_spy_path()
    assert exe is not None
    return subprocess.Popen(  # noqa: S603 - py-spy on our own child
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(hz),
            "--format",
            "raw",
            "--threads",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=out.with_suffix(".log").open("wb"),  # the child holds the only handle
    )


# Frames that wrap the whole run: always ~100%, they say nothing.
_WRAPPERS = frozenset({"connector/__main__.py", "connector/cli.py"})


def _frame_name(frame: str) -> tuple[str, str]:
    """``func (path/to/file.py:123)`` -> (``func (file.py)``, ``path/to/file.py``): lines merged."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    return (f"{name} ({Path(file).name})" if file else name), file


def _leaf(named: list[tuple[str, str]]) -> str:
    if not named:
        return "(no Python frame)"
    name, file = named[-1]
    if name.startswith("_worker ") and file.endswith("concurrent/futures/thread.py"):
        # Blocked in work_queue.get(): py-spy does not see a lock wait as idle.
        return "(idle: executor thread waiting for work in _worker)"
    return name


def summarize_py_spy(raw: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self samples (native code counts for its Python caller), the connector's
    own functions by inclusive samples, and samples per thread; shares of all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            count = int(count_text)
            frames = stack.split(";")
            total += count
            threads[frames[0].split(": ", 1)[-1]] += count
            named = [_frame_name(f) for f in frames[1:]]
            own[_leaf(named)] += count
            mine = {n for n, f in named if f.startswith("connector/") and f not in _WRAPPERS}
            for name in mine:
                inclusive[name] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / max(total, 1), 1)] for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "self_pct": share(own),
        "connector_inclusive_pct": share(inclusive),
        "threads_pct": share(threads),
    }
