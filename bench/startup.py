"""Start-up of the real connector process, from one or more source trees, runs alternating.

``python -m bench.startup [--runs N] [TREE ...]`` starts the broker, the Schema Registry
stand-in and one sandbox, creates ``make bench``'s two topics (nothing in them), then runs
``python -m connector run`` with ``make bench``'s configuration and a fresh consumer group,
``--runs`` times for each tree in turn (``PYTHONPATH`` and working directory set to the tree; the
same interpreter and packages for all), and prints, per tree, seconds from the process start to
``connector_starting`` (imports and construction), to ``catalogue_ready`` and to
``partitions_assigned`` (the figure ``make bench`` calls "start-up + group join"). Without a
tree, this one. Each tree's bytecode is written first, as ``pip install`` does.

To compare two commits: ``git worktree add /tmp/a <rev>`` for each, then
``python -m bench.startup --runs 6 /tmp/a /tmp/b``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

from bench.phases import backlog_topics
from bench.procs import ConnectorProcess, compile_bytecode, log_time, parse_log_events
from bench.runner import API_KEY, WORKSPACE, connector_env, write_config
from bench.workload import EVENTS_TOPIC, PARTITIONS, USERS_TOPIC, register_user_schema
from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import create_topics
from connector.devtools.servers import BackgroundApp, SandboxProcess
from connector.observability.logging import configure
from connector.sandbox.registry import create_registry_app

EVENTS = ("connector_starting", "catalogue_ready", "partitions_assigned")
REPO = Path(__file__).resolve().parents[1]


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _one(tree: Path, config: Path, log_path: Path, timeout: float) -> dict[str, float]:
    """Seconds from the process start to each of ``EVENTS`` the log shows by the assignment."""
    env = connector_env(PYTHONPATH=str(tree))
    proc = ConnectorProcess(sys.executable, config, log_path, env, cwd=tree).start()
    seen: dict[str, float] = {}
    try:
        deadline = time.monotonic() + timeout
        while "partitions_assigned" not in seen and time.monotonic() < deadline and proc.alive():
            time.sleep(0.01)
            for event in parse_log_events(log_path):
                if event.get("event") in EVENTS:
                    seen.setdefault(str(event["event"]), log_time(event) - proc.started_at)
    finally:
        proc.stop(30)
    return seen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    ap.add_argument("trees", nargs="*", type=Path, help="source trees (default: this one)")
    ap.add_argument("--runs", type=int, default=5, help="runs per tree")
    ap.add_argument("--timeout", type=float, default=60.0, help="per run, s")
    ap.add_argument("--out", type=Path, default=REPO / ".bench" / "startup")
    args = ap.parse_args(argv)
    trees = [t.resolve() for t in args.trees] or [REPO]
    args.out.mkdir(parents=True, exist_ok=True)
    for tree in trees:
        compile_bytecode(tree / "connector")  # each starts as installed (bench/procs.py)
    configure("warning", "console")
    found: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
    with LocalBroker(log_path=args.out / "broker.log") as broker:
        registry = BackgroundApp(create_registry_app()).start()
        try:
            create_topics(broker.bootstrap, {EVENTS_TOPIC: PARTITIONS, USERS_TOPIC: PARTITIONS})
            register_user_schema(registry.url)
            sandbox_args = ("--workspace-id", WORKSPACE, "--api-key", API_KEY)
            with SandboxProcess(*sandbox_args, log_path=args.out / "sandbox.log") as sandbox:
                for i in range(args.runs):
                    for n, tree in enumerate(trees):
                        config = args.out / "connector.yaml"
                        write_config(
                            config,
                            bootstrap=broker.bootstrap,
                            group=f"startup-{uuid.uuid4().hex[:8]}",
                            sandbox_url=sandbox.url,
                            registry_url=registry.url,
                            topics=backlog_topics(),
                            linger_ms=500,
                            max_request_bytes=100_000,
                        )
                        log_path = args.out / f"tree{n}.run{i}.log"
                        seen = _one(tree, config, log_path, args.timeout)
                        found[tree].append(seen)
                        shown = ", ".join(f"{k} {v:.3f}" for k, v in seen.items())
                        _say(f"run {i + 1} {tree}: {shown}")
        finally:
            registry.stop()
    for tree, runs in found.items():
        _say(f"{tree} ({len(runs)} runs), seconds from the process start:")
        for name in EVENTS:
            xs = [r[name] for r in runs if name in r]
            if xs:
                _say(
                    f"  {name:<20} median {statistics.median(xs):.3f}  mean "
                    f"{statistics.mean(xs):.3f}  min {min(xs):.3f}  max {max(xs):.3f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
