"""``make bench``: throughput, CPU, memory, request fill and latency of the real connector process.

Starts a Tansu broker, the Schema Registry stand-in and (per run) the MoEngage sandbox on loopback;
produces a fixed, seeded backlog once (events as raw Avro, users in Confluent framing) into
8-partition topics; then, each with a fresh consumer group over the same topics:

1. the connector over the whole backlog against a sandbox with no added latency;
2. the consume-and-decode ceiling (a bare loop in a child process);
3. the connector again with 50 ms of sandbox latency per request;
4. the connector on an empty topic fed 2,000 records/s in real time: per-record latency;
5. the connector over the backlog once more, sampled by py-spy (if installed; its figures are
   reported apart and used for no target);
6. the budget phases (``bench/budget.py``): a backlog of profile updates, then one with events
   mixed in, against a scaled-down users/events budget, with ``coalesce: backlog`` and
   ``request``. ``--only budget`` runs just these.

Prints a table and writes every figure to ``.bench/results.json`` with PASS/MISS per target.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import orjson

import connector
from bench import budget as budget_phase
from bench.ceiling import run_ceiling
from bench.phases import Env, backlog_run, latency_run, py_spy_path
from bench.procs import compile_bytecode
from bench.report import machine, run_json, source_tree, table, targets
from bench.runner import RunResult
from bench.workload import (
    EVENT_PROPS,
    EVENTS_TOPIC,
    PARTITIONS,
    ROOT,
    SCHEMAS,
    USERS_TOPIC,
    TopicLoad,
    produce_backlog,
    register_user_schema,
)
from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import create_topics
from connector.devtools.servers import BackgroundApp
from connector.observability.logging import configure
from connector.sandbox.registry import create_registry_app


def _say(text: str) -> None:
    sys.stdout.write(f"bench: {text}\n")
    sys.stdout.flush()


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="1/10 of the workload, 10 s latency run")
    ap.add_argument("--events", type=int, help="events in the backlog (default 500,000)")
    ap.add_argument("--users", type=int, help="user updates in the backlog (default 100,000)")
    ap.add_argument("--shards", type=int, default=3, help="event producer processes")
    ap.add_argument("--linger-ms", type=int, default=500, help="linger of the backlog runs")
    ap.add_argument("--max-request-bytes", type=int, default=100_000)
    ap.add_argument("--run-timeout", type=float, default=200, help="cap per backlog run, s")
    ap.add_argument("--latency-rate", type=int, default=2000, help="records/s")
    ap.add_argument("--latency-seconds", type=float, help="default 20 (10 with --quick)")
    ap.add_argument("--latency-linger-ms", type=int, default=200)
    ap.add_argument("--skip-ceiling", action="store_true")
    ap.add_argument("--skip-slow-api", action="store_true", help="no 50 ms latency run")
    ap.add_argument("--skip-latency", action="store_true", help="no steady-rate latency run")
    ap.add_argument("--skip-profile", action="store_true", help="no extra run under py-spy")
    ap.add_argument("--budget", type=float, default=560, help="skip later phases past this, s")
    ap.add_argument("--only", choices=["budget"], help="run only these phases")
    ap.add_argument("--skip-budget", action="store_true", help="no budget phases")
    budget_phase.add_arguments(ap)
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "results.json")
    args = ap.parse_args(argv)
    scale = 10 if args.quick else 1
    args.events = args.events or 500_000 // scale
    args.users = args.users or 100_000 // scale
    args.latency_seconds = args.latency_seconds or (10.0 if args.quick else 20.0)
    return args


def _workload(loads: dict[str, TopicLoad], seconds: float, args: argparse.Namespace) -> Any:
    ev, us = loads[EVENTS_TOPIC], loads[USERS_TOPIC]
    records = ev.records + us.records
    return {
        "events": {
            "topic": EVENTS_TOPIC,
            "format": "avro (raw)",
            "records": ev.records,
            "avg_avro_bytes": round(ev.avg_bytes, 1),
            "ends": ev.ends,
            "generator": f"events(n, {args.users}, seed=3+shard, props={EVENT_PROPS})",
        },
        "users": {
            "topic": USERS_TOPIC,
            "format": "confluent (registry stand-in)",
            "records": us.records,
            "avg_avro_bytes": round(us.avg_bytes, 1),
            "ends": us.ends,
            "generator": f"users({args.users}, seed=1)",
        },
        "records": records,
        "partitions": PARTITIONS,
        "avg_avro_bytes": round((ev.value_bytes + us.value_bytes) / records, 1),
        "produce_seconds": round(seconds, 2),
        "produce_records_per_s": round(records / seconds, 1),
    }


def _ceiling(env: Env, ends: dict[str, dict[int, int]], schema_id: int, timeout: float) -> Any:
    spec = {
        "bootstrap": env.bootstrap,
        "group": "bench-ceiling",
        "ends": ends,
        "formats": {
            EVENTS_TOPIC: ["avro", str(SCHEMAS / "event.avsc"), None],
            USERS_TOPIC: ["confluent", str(SCHEMAS / "user.avsc"), schema_id],
        },
        "timeout": timeout,
    }
    out, usage = run_ceiling(spec)
    seconds = out["end"] - out["start"]
    return {
        "records": out["records"],
        "complete": out["records"] >= out["target"],
        "seconds": round(seconds, 3),
        "records_per_s": round(out["records"] / seconds, 1),
        "cpu_user_s": round(usage.user_s, 3),
        "cpu_system_s": round(usage.system_s, 3),
        "cpu_s_per_100k_records": round(usage.cpu_s / max(out["records"], 1) * 100_000, 3),
        "cpu_s_per_100k_records_loop_only": round(
            out["loop_cpu_s"] / max(out["records"], 1) * 100_000, 3
        ),
        "peak_rss_mb": round(usage.maxrss_mb, 1),
        "how": "assign all partitions from 0, consume(1000, 0.5), fastavro.schemaless_reader",
    }


def _anomalies(doc: dict[str, Any]) -> list[str]:
    out = []
    for name, r in doc["runs"].items():
        if not r["complete"]:
            out.append(f"run {name}: incomplete ({'; '.join(r['warnings'])})")
        if r["connector_exit_code"] != 0:
            out.append(f"run {name}: connector exit code {r['connector_exit_code']}")
        delivered = r["records_delivered"]
        if delivered != r["records_target"]:
            out.append(
                f"run {name}: the sandbox received {delivered} records (customers + actions) "
                f"for {r['records_target']} produced"
            )
        other = {k: v for k, v in (r["requests_by_status"] or {}).items() if k != "200"}
        if other:
            out.append(f"run {name}: non-200 answers {other}")
        others = r["other_processes_cpu_s_during_run"]
        if others is not None and others > 0.1 * r["seconds_assigned_to_all_committed"]:
            out.append(
                f"run {name}: processes outside the benchmark used {others:.1f} CPU-s "
                "meanwhile (shared machine: figures may be low)"
            )
        if r["machine_busy_share_during_run"] > 0.9:
            out.append(
                f"run {name}: both cores {r['machine_busy_share_during_run']:.0%} busy "
                "(broker, sandbox and connector share them)"
            )
    if doc["machine"]["loadavg_at_start"][0] > 0.5:
        out.append(
            f"load average {doc['machine']['loadavg_at_start'][0]:.2f} at start: "
            "other work was running on this machine"
        )
    return out


def _record(doc: dict[str, Any], name: str, result: RunResult, max_bytes: int) -> None:
    doc["runs"][name] = r = run_json(result, max_bytes)
    _say(
        f"run {name}: {r['records_committed']:,} records in "
        f"{r['seconds_assigned_to_all_committed']:.1f} s = {r['records_per_s']:,.0f}/s, "
        f"CPU {r['cpu_user_s'] + r['cpu_system_s']:.1f} s, RSS {r['peak_rss_mb']:.0f} MB, "
        f"{r['requests_total']} requests"
    )


class _Clock:
    """The run's time budget: later phases are skipped (and said so) when they would not fit."""

    def __init__(self, budget: float, doc: dict[str, Any]) -> None:
        self._end = time.monotonic() + budget
        self._doc = doc

    def left(self) -> float:
        return self._end - time.monotonic()

    def fits(self, phase: str, needs: float) -> bool:
        if needs <= self.left():
            return True
        note = f"{phase}: skipped, needs ~{needs:.0f} s and {max(self.left(), 0):.0f} s are left"
        self._doc.setdefault("skipped", []).append(note)
        _say(note)
        return False

    def timeout(self, cap: float) -> float:
        return max(10.0, min(cap, self.left() - 10))


def _phases(
    args: argparse.Namespace,
    env: Env,
    ends: dict[str, dict[int, int]],
    *,
    schema_id: int,
    doc: dict[str, Any],
    clock: _Clock,
) -> None:
    _say("run 0ms: connector over the backlog, no added API latency")
    r0, _ = backlog_run(
        env, "0ms", ends, linger_ms=args.linger_ms, timeout=clock.timeout(args.run_timeout)
    )
    _record(doc, "0ms", r0, args.max_request_bytes)
    base = r0.end - r0.process_start  # what one backlog run costs, start-up included
    if not args.skip_ceiling and clock.fits("ceiling", base / 2):
        _say("ceiling: consume + decode only")
        doc["ceiling"] = c = _ceiling(env, ends, schema_id, clock.timeout(args.run_timeout))
        _say(
            f"ceiling: {c['records']:,} records in {c['seconds']:.1f} s = "
            f"{c['records_per_s']:,.0f}/s, CPU {c['cpu_s_per_100k_records']:.2f} s/100k"
        )
    if not args.skip_slow_api and clock.fits("run 50ms", base * 1.5 + 10):
        _say("run 50ms: connector over the backlog, 50 ms added to every API request")
        r50, _ = backlog_run(
            env,
            "50ms",
            ends,
            linger_ms=args.linger_ms,
            timeout=clock.timeout(args.run_timeout),
            latency_ms=50,
        )
        _record(doc, "50ms", r50, args.max_request_bytes)
    if not args.skip_latency and clock.fits("latency", args.latency_seconds + 20):
        _say(
            f"latency: {args.latency_rate:,} records/s for {args.latency_seconds:.0f} s, "
            f"linger {args.latency_linger_ms} ms"
        )
        lr, lat = latency_run(
            env,
            rate=args.latency_rate,
            seconds=args.latency_seconds,
            linger_ms=args.latency_linger_ms,
            timeout=60,
        )
        lrj = run_json(lr, args.max_request_bytes)
        lat.update(
            connector_core_share=lrj["connector_core_share"],
            connector_cpu_s=round(lr.cpu_s, 2),
            complete=lr.complete,
            peak_rss_mb=lrj["peak_rss_mb"],
            requests=lrj["requests_total"],
            warnings=lr.warnings,
        )
        doc["latency"] = lat
        _say(
            f"latency: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
            f"({lat['matched_in_sandbox']:,} records)"
        )
    if not args.skip_budget and clock.fits("budget", 240):
        doc["budget"] = budget_phase.run_phases(env, args, _say)
    if args.skip_profile:
        return
    if py_spy_path() is None:
        doc["profile"] = {"error": "py-spy is not installed (pip install py-spy into .venv)"}
    elif clock.fits("profile", base * 1.4 + 10):
        _say("profile: the 0ms run again, sampled by py-spy at 100 Hz (figures not used)")
        rp, prof = backlog_run(
            env,
            "profile",
            ends,
            linger_ms=args.linger_ms,
            timeout=clock.timeout(args.run_timeout),
            profile_hz=100,
        )
        doc["profile"] = {**(prof or {}), "records_per_s": round(rp.records_per_s)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = args.out.parent
    workdir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"machine": machine(), "source": source_tree()}
    compile_bytecode(Path(connector.__file__).parent)  # start-up as installed (bench/procs.py)
    doc["args"] = {k: str(v) for k, v in vars(args).items()}
    clock = _Clock(args.budget, doc)
    doc["config"] = {
        "max_request_bytes": args.max_request_bytes,
        "linger_ms": args.linger_ms,
        "latency_linger_ms": args.latency_linger_ms,
        "max_in_flight": 4,
        "commit_interval_ms": 1000,
        "users_per_minute": None,
        "events_per_minute": None,
        "logging": "info, json (a few lines per run)",
    }
    doc["runs"] = {}
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        registry = BackgroundApp(create_registry_app()).start()
        try:
            create_topics(broker.bootstrap, {EVENTS_TOPIC: PARTITIONS, USERS_TOPIC: PARTITIONS})
            schema_id = register_user_schema(registry.url)
            _say(
                f"producing {args.events:,} events + {args.users:,} users "
                f"({args.shards} event processes + 1 user process)"
            )
            t = time.monotonic()
            loads = produce_backlog(
                broker.bootstrap, schema_id, args.events, args.users, args.shards
            )
            doc["workload"] = w = _workload(loads, time.monotonic() - t, args)
            _say(
                f"produced {w['records']:,} records in {w['produce_seconds']:.1f} s; average "
                f"Avro record {w['avg_avro_bytes']:.0f} B (events "
                f"{w['events']['avg_avro_bytes']:.0f} B, users "
                f"{w['users']['avg_avro_bytes']:.0f} B)"
            )
            env = Env(
                broker.bootstrap,
                registry.url,
                workdir,
                broker.proc.pid if broker.proc else None,
                args.max_request_bytes,
            )
            ends = {t: load.ends for t, load in loads.items()}
            _phases(args, env, ends, schema_id=schema_id, doc=doc, clock=clock)
        finally:
            registry.stop()
    return doc


def only_budget(args: argparse.Namespace) -> int:
    """``--only budget``: the budget phases alone, on a broker of their own."""
    workdir = args.out.parent
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        env = Env(
            broker.bootstrap,
            "",
            workdir,
            broker.proc.pid if broker.proc else None,
            args.max_request_bytes,
        )
        doc = {"machine": machine(), "budget": budget_phase.run_phases(env, args, _say)}
    doc["wall_seconds"] = round(time.monotonic() - t0, 1)
    out = args.out.with_name("budget.json")
    out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str))
    _say(f"results: {out}   wall time {doc['wall_seconds']:.0f} s")
    return 0 if all(t["result"] == "PASS" for t in doc["budget"]["targets"]) else 1


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    configure("warning", "console")  # the registry stand-in in this process: quiet
    if args.only == "budget":
        return only_budget(args)
    t0 = time.monotonic()
    doc = run(args)
    doc["wall_seconds"] = round(time.monotonic() - t0, 1)
    doc["targets"] = targets(doc) + doc.get("budget", {}).get("targets", [])
    doc["anomalies"] = _anomalies(doc)
    args.out.write_bytes(
        orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str)
    )
    out = [table(doc)]
    prof = doc.get("profile")
    if prof and "self_pct" in prof:
        out += [
            "",
            f"profile (py-spy, {prof['samples']} samples, run at "
            f"{prof['records_per_s']:,}/s): top self time",
        ]
        out += [f"  {pct:5.1f}%  {name}" for name, pct in prof["self_pct"]]
        out += ["connector functions by inclusive time (share of all samples)"]
        out += [f"  {pct:5.1f}%  {name}" for name, pct in prof["connector_inclusive_pct"]]
        threads = ", ".join(f"{name} {pct:.0f}%" for name, pct in prof["threads_pct"])
        out += [f"samples by thread: {threads}"]
    if doc["anomalies"]:
        out += ["", "anomalies:", *(f"  - {a}" for a in doc["anomalies"])]
    out += ["", f"results: {args.out}   wall time {doc['wall_seconds']:.0f} s"]
    sys.stdout.write("\n" + "\n".join(out) + "\n")
    return 0 if not math.isnan(doc["wall_seconds"]) else 1


if __name__ == "__main__":
    sys.exit(main())
