"""``make demo``: the whole pipeline end to end on loopback, then a summary.

Starts a Tansu broker, the Schema Registry stand-in and the MoEngage sandbox; creates the topics;
produces seeded Avro users (Confluent framing), devices and events (raw Avro); runs the real
``moengage-connector run`` process until every offset is committed; stops it with SIGTERM; checks
that the sandbox holds every user and event; prints a summary and exits 0 (1 if anything is off).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fastavro
import orjson
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import committed_offsets, create_topics, produce
from connector.devtools.servers import BackgroundApp, SandboxProcess
from connector.devtools.workload import devices, events, users
from connector.sandbox.registry import create_registry_app
from connector.source.decoding import encode_confluent, encode_raw

ROOT = Path(__file__).resolve().parent.parent
WORKSPACE, API_KEY = "DEMO_WORKSPACE", "demo-api-key-not-a-secret"
TOPICS = {"demo.users": 3, "demo.devices": 3, "demo.events": 3}
GROUP = "moengage-connector-demo"


def _schema(name: str) -> tuple[str, Any]:
    text = (ROOT / "schemas" / f"{name}.avsc").read_text()
    return text, fastavro.parse_schema(orjson.loads(text))


def _produce_all(bootstrap: str, registry_url: str, n_users: int, n_events: int) -> dict[str, Any]:
    user_text, user_schema = _schema("user")
    with SchemaRegistryClient({"url": registry_url}) as sr:
        user_id = sr.register_schema("demo.users-value", Schema(user_text, "AVRO"))
    _, device_schema = _schema("device")
    _, event_schema = _schema("event")
    return {
        "demo.users": produce(
            bootstrap,
            "demo.users",
            (
                (u["user_id"].encode(), encode_confluent(user_id, user_schema, u))
                for u in users(n_users)
            ),
        ),
        "demo.devices": produce(
            bootstrap,
            "demo.devices",
            ((d["user_id"].encode(), encode_raw(device_schema, d)) for d in devices(n_users)),
        ),
        "demo.events": produce(
            bootstrap,
            "demo.events",
            (
                (e["user_id"].encode(), encode_raw(event_schema, e))
                for e in events(n_events, n_users)
            ),
        ),
    }


def _wait_committed(
    bootstrap: str, ends: dict[str, dict[int, int]], proc: Any, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if all(
            committed_offsets(bootstrap, GROUP, t) == {p: ends[t].get(p, 0) for p in range(n)}
            for t, n in TOPICS.items()
        ):
            return True
        time.sleep(0.5)
    return False


COALESCING_NOTE = (
    "                         (a customer's events in one request travel as the actions of one "
    "event element:\n                          fewer elements than event records, every event kept)"
)


def _policy_counts(log_path: Path) -> dict[str, int]:
    """The ``policy_*`` counts of the connector's ``connector_stopped`` line (JSON logs)."""
    for line in reversed(log_path.read_bytes().splitlines()):
        if line.startswith(b"{") and b'"connector_stopped"' in line:
            stopped = orjson.loads(line)
            return {k[7:]: v for k, v in stopped.items() if k.startswith("policy_")}
    return {}


def _print_summary(
    *,
    produced: dict[str, int],
    stats: dict[str, Any],
    store: dict[str, Any],
    n_events: int,
    args: argparse.Namespace,
    policy: dict[str, int],
    losses: dict[str, Any],
    committed: dict[str, Any],
    elapsed: float,
    code: int,
    ok: bool,
) -> None:
    workdir = args.workdir
    print()
    print("MoEngage Kafka connector demo — summary")
    print(f"  records produced       {sum(produced.values()):>8}  {produced}")
    print(
        f"  elements accepted      {sum(stats['elements_by_type'].values()):>8}  "
        f"{stats['elements_by_type']}\n{COALESCING_NOTE}"
    )
    print(
        f"  requests               {stats['requests_total']:>8}  "
        f"by status {stats['requests_by_status']}"
    )
    print(
        f"  bytes accepted         {stats['bytes_accepted']:>8}  (largest body "
        f"{stats['max_body_bytes_seen']} B, limit 100000)"
    )
    print(f"  users in sandbox       {len(store):>8}  (expected {args.users})")
    print(f"  events in sandbox      {n_events:>8}  (expected {args.events})")
    print(f"  data policy applied    {sum(policy.values()):>8}  {policy or 'no summary line'}")
    print(
        f"  sandbox policy losses  {losses['total']:>8}  (what MoEngage would have truncated or "
        "dropped; Data Tracking Policies)"
    )
    print(f"  committed offsets      {committed}")
    print(f"  time to deliver        {elapsed:>8.1f}s  connector exit code {code}")
    print(f"  result                 {'OK' if ok else f'FAILED: see {workdir}/connector.log'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--workdir", type=Path, default=ROOT / ".demo", help="logs go here")
    args = ap.parse_args(argv)
    (workdir := args.workdir).mkdir(parents=True, exist_ok=True)
    print(f"demo: logs in {workdir}")
    with (
        LocalBroker(log_path=workdir / "broker.log") as broker,
        SandboxProcess(
            "--workspace-id", WORKSPACE, "--api-key", API_KEY, log_path=workdir / "sandbox.log"
        ) as sandbox,
    ):
        registry = BackgroundApp(create_registry_app()).start()
        try:
            print(
                f"demo: broker {broker.bootstrap}, sandbox {sandbox.url}, registry {registry.url}"
            )
            create_topics(broker.bootstrap, TOPICS)
            t0 = time.monotonic()
            ends = _produce_all(broker.bootstrap, registry.url, args.users, args.events)
            produced = {t: sum(e.values()) for t, e in ends.items()}
            print(f"demo: produced {produced} in {time.monotonic() - t0:.1f}s")
            env = {
                **os.environ,
                "KAFKA_BOOTSTRAP": broker.bootstrap,
                "KAFKA_GROUP": GROUP,
                "SCHEMA_REGISTRY_URL": registry.url,
                "MOENGAGE_BASE_URL": sandbox.url,
                "MOENGAGE_WORKSPACE_ID": WORKSPACE,
                "MOENGAGE_API_KEY": API_KEY,
            }
            log = open(workdir / "connector.log", "wb")  # noqa: SIM115 - closed below
            t1 = time.monotonic()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "connector",
                    "run",
                    "--config",
                    str(ROOT / "config/demo.yaml"),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                done = _wait_committed(broker.bootstrap, ends, proc, args.timeout)
                elapsed = time.monotonic() - t1
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                log.close()
            stats = sandbox.admin("GET", "stats")
            losses = sandbox.admin("GET", "policy-losses")
            store = sandbox.admin("GET", "users")
            committed = {t: committed_offsets(broker.bootstrap, GROUP, t) for t in TOPICS}
        finally:
            registry.stop()
    n_events = sum(len(u.get("events", [])) for u in store.values())
    policy = _policy_counts(workdir / "connector.log")
    ok = (
        done
        and code == 0
        and len(store) == args.users
        and n_events == args.events
        and losses["total"] == 0
    )
    _print_summary(
        produced=produced,
        stats=stats,
        store=store,
        n_events=n_events,
        args=args,
        policy=policy,
        losses=losses,
        committed=committed,
        elapsed=elapsed,
        code=code,
        ok=ok,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
