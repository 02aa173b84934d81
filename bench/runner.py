"""One measured run of the real connector process over topics that already hold their records.

The run is observed from outside only: the connector's own JSON log gives the moment its
partitions were assigned, the group's committed offsets (polled every ~100 ms) give progress and
the moment everything was committed, ``os.wait4`` gives its CPU time and peak RSS, the sandbox's
``/_sandbox/stats`` gives the requests it received. Each run uses a fresh consumer group, so the
same topics are read from the start every time.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition

from bench.procs import (
    CLOCK_TICKS,
    ConnectorProcess,
    log_time,
    machine_cpu_jiffies,
    proc_cpu_seconds,
)

WORKSPACE, API_KEY = "BENCH_WORKSPACE", "bench-api-key-not-a-secret"


@dataclass(frozen=True)
class TopicConf:
    """A topic as the connector's configuration names it, with its mapping."""

    name: str
    format: str
    mapping: dict[str, Any]
    schema: Path | None = None

    def as_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "format": self.format}
        if self.schema is not None:
            out["schema"] = str(self.schema)
        out["transform"] = {"mapping": self.mapping}
        return out


EVENT_MAPPING: dict[str, Any] = {
    "type": "event",
    "customer_id": "user_id",
    "device_id": "device_id",
    "action": "event_name",
    "current_time": "event_time",
    "platform": "platform",
    "app_version": "app_version",
    "user_timezone_offset": "tz_offset_seconds",
    "attributes": {"from": "properties"},
}
USER_MAPPING: dict[str, Any] = {
    "type": "customer",
    "customer_id": "user_id",
    "attributes": {"rename": {"signup_time": "created_time"}, "drop": ["tags"]},
}


def write_config(
    path: Path,
    *,
    bootstrap: str,
    group: str,
    sandbox_url: str,
    registry_url: str | None,
    topics: list[TopicConf],
    linger_ms: int,
    max_request_bytes: int,
    level: str = "info",
) -> dict[str, Any]:
    """Write the connector's YAML for one run and return it as a dict (for the report)."""
    config: dict[str, Any] = {
        "moengage": {
            "base_url": sandbox_url,
            "max_request_bytes": max_request_bytes,
            "linger_ms": linger_ms,
            "users_per_minute": None,
            "events_per_minute": None,
        },
        "kafka": {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "session.timeout.ms": 6000,  # one local broker: join quickly
        },
        "topics": [t.as_yaml() for t in topics],
        # info logs only a handful of lines per run (start, assignment, stop): none per record.
        "logging": {"level": level, "format": "json"},
        "observability": {"host": "127.0.0.1", "port": 0},
    }
    if registry_url is not None:
        config["schema_registry"] = {"url": registry_url}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


class CommitWatcher:
    """Reads one group's committed offsets with a long-lived client that never joins the group."""

    def __init__(self, bootstrap: str, group: str, partitions: dict[str, list[int]]) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        self._tps = [TopicPartition(t, p) for t, parts in partitions.items() for p in parts]

    def committed(self) -> int:
        """Records committed so far (a partition with no commit counts 0)."""
        try:
            tps = self._consumer.committed(self._tps, timeout=5)
        except Exception:  # noqa: BLE001 - a slow answer is just a missed sample
            return -1
        return sum(max(tp.offset, 0) for tp in tps)

    def close(self) -> None:
        self._consumer.close()


@dataclass
class RunResult:
    """Every figure of one connector run (times are Unix seconds)."""

    label: str
    records_target: int
    records_committed: int = 0
    complete: bool = False
    exit_code: int | None = None
    process_start: float = 0.0
    assigned_at: float | None = None
    all_committed_at: float | None = None
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    cpu_at_assignment_s: float | None = None
    maxrss_mb: float = 0.0
    broker_cpu_s: float | None = None
    sandbox_cpu_s: float | None = None
    harness_cpu_s: float = 0.0
    machine_busy_share: float = 0.0
    machine_busy_cpu_s: float = 0.0
    cpu_at_done_s: float | None = None
    sandbox_stats: dict[str, Any] = field(default_factory=dict)
    timeline: list[tuple[float, int]] = field(default_factory=list)
    log_path: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def start(self) -> float:
        return self.assigned_at if self.assigned_at is not None else self.process_start

    @property
    def end(self) -> float:
        if self.all_committed_at is not None:
            return self.all_committed_at
        return self.timeline[-1][0] if self.timeline else self.start

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 1e-9)

    @property
    def records_per_s(self) -> float:
        return self.records_committed / self.seconds

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_system_s

    def steady_records_per_s(self, lo: float = 0.1, hi: float = 0.9) -> float | None:
        """Rate between the first samples at ``lo`` and ``hi`` of the target committed."""
        t_lo = next((t for t, n in self.timeline if n >= lo * self.records_target), None)
        t_hi = next((t for t, n in self.timeline if n >= hi * self.records_target), None)
        if t_lo is None or t_hi is None or t_hi <= t_lo:
            return None
        n_lo = next(n for t, n in self.timeline if t == t_lo)
        n_hi = next(n for t, n in self.timeline if t == t_hi)
        return (n_hi - n_lo) / (t_hi - t_lo)


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class _Neighbours:
    """CPU used meanwhile by the broker, the sandbox, this harness and the whole machine."""

    def __init__(self, broker_pid: int | None, sandbox_pid: int | None) -> None:
        self._pids = {"broker": broker_pid, "sandbox": sandbox_pid}
        self._before = {k: proc_cpu_seconds(p) if p else None for k, p in self._pids.items()}
        self._jiffies = machine_cpu_jiffies()
        self._self = _self_cpu()

    def record(self, result: RunResult, connector_pid: int) -> None:
        result.cpu_at_done_s = proc_cpu_seconds(connector_pid)
        delta: dict[str, float | None] = {}
        for key, pid in self._pids.items():
            now, before = proc_cpu_seconds(pid) if pid else None, self._before[key]
            delta[key] = None if now is None or before is None else now - before
        result.broker_cpu_s, result.sandbox_cpu_s = delta["broker"], delta["sandbox"]
        busy, total = machine_cpu_jiffies()
        result.machine_busy_share = (busy - self._jiffies[0]) / max(total - self._jiffies[1], 1)
        result.machine_busy_cpu_s = (busy - self._jiffies[0]) / CLOCK_TICKS
        result.harness_cpu_s = _self_cpu() - self._self


def _watch(
    result: RunResult,
    proc: ConnectorProcess,
    watcher: CommitWatcher,
    timeout: float,
    while_running: Callable[[int], object] | None,
) -> None:
    """Poll the log until assignment (every 20 ms), then the committed offsets (every 100 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.alive():
        if result.assigned_at is None:
            assigned = proc.first_event("partitions_assigned")
            if assigned is None:
                time.sleep(0.02)
                continue
            result.cpu_at_assignment_s = proc_cpu_seconds(proc.pid)
            result.assigned_at = log_time(assigned)
            if while_running is not None:
                while_running(proc.pid)
        done = watcher.committed()
        now = time.time()
        if done >= 0:
            result.timeline.append((now, done))
            result.records_committed = done
        if done >= result.records_target:
            result.all_committed_at = now
            result.complete = True
            return
        time.sleep(0.1)
    result.warnings.append(
        "connector exited early" if proc.usage is not None else f"timed out ({timeout}s)"
    )


def connector_env(**extra: str) -> dict[str, str]:
    """The environment a benchmarked connector runs with: the sandbox's credentials."""
    return {
        **os.environ,
        "MOENGAGE_WORKSPACE_ID": WORKSPACE,
        "MOENGAGE_API_KEY": API_KEY,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def run_connector(
    result: RunResult,
    *,
    config: Path,
    log_path: Path,
    bootstrap: str,
    group: str,
    partitions: dict[str, list[int]],
    timeout: float,
    broker_pid: int | None,
    sandbox_pid: int | None,
    while_running: Callable[[int], object] | None = None,
) -> RunResult:
    """Start the connector, wait until ``result.records_target`` records of ``partitions`` are
    committed (or ``timeout``), stop it with SIGTERM and reap it.

    ``while_running(pid)`` is called once the partitions are assigned (a producer, a profiler).
    """
    env = connector_env()
    watcher = CommitWatcher(bootstrap, group, partitions)
    proc = ConnectorProcess(sys.executable, config, log_path, env)
    result.log_path = str(log_path)
    neighbours = _Neighbours(broker_pid, sandbox_pid)
    try:
        proc.start()
        result.process_start = proc.started_at
        _watch(result, proc, watcher, timeout, while_running)
        neighbours.record(result, proc.pid)
        usage = proc.stop()
        result.exit_code = usage.exit_code
        result.cpu_user_s, result.cpu_system_s = usage.user_s, usage.system_s
        result.maxrss_mb = usage.maxrss_mb
    finally:
        proc.kill()
        with contextlib.suppress(Exception):
            watcher.close()
    return result
