"""Turn measured runs into the JSON document and the printed table, with PASS/MISS per target.

Targets (the performance issue's): end to end >= 60% of the consume-and-decode ceiling and
>= 50,000 records/s; <= 10 CPU-seconds per million records; average request fill >= 95% of
``max_request_bytes`` with a large backlog and never a body over it; peak RSS < 150 MB; with 50 ms
API latency >= 80% of the 0 ms throughput; p99 record latency <= linger + 100 ms at 2,000/s.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.runner import RunResult


def _git(*args: str) -> str:
    exe = shutil.which("git")
    if exe is None:
        raise OSError("git not found")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(  # noqa: S603 - read-only git queries with fixed arguments
        [exe, *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout


def source_tree() -> dict[str, Any]:
    """Which code was measured: HEAD and the files of ``connector/`` changed since (read-only)."""
    try:
        head = _git("rev-parse", "--short", "HEAD").strip()
        status = _git("status", "--porcelain", "--", "connector").splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"head": None, "connector_changes": None}
    return {"head": head, "connector_changes": [line[3:] for line in status]}


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": model,
        "cores": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def run_json(r: RunResult, max_request_bytes: int) -> dict[str, Any]:
    """Every figure of one connector run."""
    s = r.sandbox_stats
    accepted = s.get("accepted_requests", 0)
    bytes_ok = s.get("bytes_accepted", 0)
    avg_body = bytes_ok / accepted if accepted else math.nan
    per_100k = r.cpu_s / r.records_committed * 100_000 if r.records_committed else math.nan
    loop_cpu = r.cpu_s - (r.cpu_at_assignment_s or 0.0)
    return {
        "complete": r.complete,
        "records_target": r.records_target,
        "records_committed": r.records_committed,
        "connector_exit_code": r.exit_code,
        "seconds_assigned_to_all_committed": round(r.seconds, 3),
        "seconds_process_start_to_assigned": (
            round(r.assigned_at - r.process_start, 3) if r.assigned_at else None
        ),
        "records_per_s": round(r.records_per_s, 1),
        "records_per_s_including_startup": round(
            r.records_committed / max(r.end - r.process_start, 1e-9), 1
        ),
        "steady_records_per_s_10_to_90pct": _round(r.steady_records_per_s()),
        "cpu_user_s": round(r.cpu_user_s, 3),
        "cpu_system_s": round(r.cpu_system_s, 3),
        "cpu_s_per_100k_records": _round(per_100k, 3),
        "cpu_s_at_assignment": _round(r.cpu_at_assignment_s, 3),
        "cpu_s_per_100k_records_after_assignment": _round(
            loop_cpu / r.records_committed * 100_000 if r.records_committed else None, 3
        ),
        "connector_core_share": round(r.cpu_s / max(r.end - r.process_start, 1e-9), 3),
        "peak_rss_mb": round(r.maxrss_mb, 1),
        "requests_total": s.get("requests_total"),
        "requests_by_status": s.get("requests_by_status"),
        "accepted_requests": accepted,
        "elements_by_type": s.get("elements_by_type"),
        # Events of one customer in one request share an element (coalescing): count actions.
        "records_delivered": _delivered(s),
        "bytes_accepted": bytes_ok,
        "avg_body_bytes": _round(avg_body, 1),
        "avg_fill_share": _round(avg_body / max_request_bytes, 4),
        "max_body_bytes_seen": s.get("max_body_bytes_seen"),
        "min_requests_needed": math.ceil(bytes_ok / max_request_bytes),
        "during_run_cpu_s": {
            "broker": _round(r.broker_cpu_s, 2),
            "sandbox": _round(r.sandbox_cpu_s, 2),
            "bench_harness": round(r.harness_cpu_s, 2),
        },
        "machine_busy_share_during_run": round(r.machine_busy_share, 3),
        "other_processes_cpu_s_during_run": _round(_others(r), 2),
        "warnings": r.warnings,
        "connector_log": r.log_path,
    }


def _delivered(stats: dict[str, Any]) -> int | None:
    """Records the sandbox received: customers and devices are one each, events one per action."""
    kinds = stats.get("elements_by_type")
    if kinds is None:
        return None
    return int(kinds.get("customer", 0) + kinds.get("device", 0) + stats.get("actions_total", 0))


def _others(r: RunResult) -> float | None:
    """CPU the machine spent meanwhile on processes that are not part of this benchmark."""
    ours = [r.cpu_at_done_s, r.broker_cpu_s, r.sandbox_cpu_s]
    if any(v is None for v in ours):
        return None
    return r.machine_busy_cpu_s - sum(v or 0.0 for v in ours) - r.harness_cpu_s


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def _target(
    name: str, target: str, measured: float | None, ok: bool | None, shown: str
) -> dict[str, Any]:
    verdict = "N/A" if ok is None or measured is None else ("PASS" if ok else "MISS")
    return {"name": name, "target": target, "measured": measured, "shown": shown, "result": verdict}


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    runs, ceiling, lat = doc["runs"], doc.get("ceiling"), doc.get("latency")
    base = runs.get("0ms")
    out = []
    if base is not None and base["records_committed"] > 0:  # else nothing was measured
        rate = base["records_per_s"]
        out.append(_target("e2e records/s", ">= 50,000", rate, rate >= 50_000, f"{rate:,.0f}"))
        if ceiling and ceiling["records_per_s"] > 0:
            share = rate / ceiling["records_per_s"]
            out.append(
                _target(
                    "e2e share of ceiling", ">= 60%", round(share, 4), share >= 0.6, f"{share:.1%}"
                )
            )
        per_m = base["cpu_s_per_100k_records"] * 10
        out.append(
            _target("CPU s per 1M records", "<= 10", round(per_m, 2), per_m <= 10, f"{per_m:.1f}")
        )
        fill = base["avg_fill_share"]
        out.append(
            _target(
                "avg request fill",
                ">= 95%",
                fill,
                None if fill is None else fill >= 0.95,
                "-" if fill is None else f"{fill:.1%}",
            )
        )
        biggest = max(r["max_body_bytes_seen"] or 0 for r in runs.values())
        limit = doc["config"]["max_request_bytes"]
        out.append(
            _target("largest body", f"<= {limit:,} B", biggest, biggest <= limit, f"{biggest:,} B")
        )
        rss = max(r["peak_rss_mb"] for r in runs.values())
        out.append(_target("peak RSS", "< 150 MB", rss, rss < 150, f"{rss:.0f} MB"))
        slow = runs.get("50ms")
        if slow is not None:
            share = slow["records_per_s"] / rate
            out.append(
                _target(
                    "50 ms latency: share of 0 ms rate",
                    ">= 80%",
                    round(share, 4),
                    share >= 0.8,
                    f"{share:.1%}",
                )
            )
    if lat is not None:
        p99, bound = lat["p99_ms"], doc["config"]["latency_linger_ms"] + 100
        valid = p99 is not None and not math.isnan(p99)
        out.append(
            _target(
                f"p99 latency at {lat['rate_per_s']:,}/s",
                f"<= {bound} ms",
                p99 if valid else None,
                p99 <= bound if valid else None,
                f"{p99:.0f} ms" if valid else "-",
            )
        )
    return out


def table(doc: dict[str, Any]) -> str:
    m, w = doc["machine"], doc["workload"]
    lines = [
        f"MoEngage connector benchmark  {m['date']}  {m['platform']}",
        f"CPU {m['cpu_model']} x {m['cores']} cores, load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}",
        _tree_line(doc.get("source")),
        "",
        f"workload: {w['events']['records']:,} events (raw Avro, avg "
        f"{w['events']['avg_avro_bytes']:.0f} B) + {w['users']['records']:,} users (Confluent "
        f"framing, avg {w['users']['avg_avro_bytes']:.0f} B) = {w['records']:,} records, avg "
        f"{w['avg_avro_bytes']:.0f} B of Avro; produced in {w['produce_seconds']:.1f} s "
        f"({w['produce_records_per_s']:,.0f}/s)",
        "",
    ]
    rows: list[tuple[str, ...]] = [
        (
            "run",
            "records",
            "s",
            "rec/s",
            "steady rec/s",
            "CPU s/100k",
            "RSS MB",
            "requests (min)",
            "fill",
            "max body",
        )
    ]
    for name, r in doc["runs"].items():
        fill = r["avg_fill_share"]
        rows.append(
            (
                f"connector {name}",
                f"{r['records_committed']:,}",
                f"{r['seconds_assigned_to_all_committed']:.1f}",
                f"{r['records_per_s']:,.0f}",
                _fmt(r["steady_records_per_s_10_to_90pct"]),
                _fmt(r["cpu_s_per_100k_records"], ".2f"),
                f"{r['peak_rss_mb']:.0f}",
                f"{_fmt(r['requests_total'])} ({r['min_requests_needed']})",
                _fmt(fill, ".1%"),
                _fmt(r["max_body_bytes_seen"]),
            )
        )
    c = doc.get("ceiling")
    if c:
        rows.append(
            (
                "consume+decode ceiling",
                f"{c['records']:,}",
                f"{c['seconds']:.1f}",
                f"{c['records_per_s']:,.0f}",
                "-",
                f"{c['cpu_s_per_100k_records']:.2f}",
                f"{c['peak_rss_mb']:.0f}",
                "-",
                "-",
                "-",
            )
        )
    lines += _columns(rows)
    lines.append("")
    for name, r in doc["runs"].items():
        lines.append(
            f"{name}: start-up + group join {_fmt(r['seconds_process_start_to_assigned'], '.1f')}"
            f" s (rate including it {r['records_per_s_including_startup']:,.0f}/s); CPU "
            f"s/100k after assignment {_fmt(r['cpu_s_per_100k_records_after_assignment'], '.2f')}"
            f"; meanwhile broker {_fmt(r['during_run_cpu_s']['broker'], '.1f')} CPU-s, sandbox "
            f"{_fmt(r['during_run_cpu_s']['sandbox'], '.1f')} CPU-s, other processes "
            f"{_fmt(r['other_processes_cpu_s_during_run'], '.1f')} CPU-s"
        )
    if c:
        lines.append(
            f"ceiling: CPU s/100k in the loop only {c['cpu_s_per_100k_records_loop_only']:.2f}"
        )
    lat = doc.get("latency")
    if lat:
        lines += [
            "",
            f"latency at {lat['rate_per_s']:,}/s for {lat['seconds']:.0f} s (linger "
            f"{doc['config']['latency_linger_ms']} ms): p50 {lat['p50_ms']:.0f} ms, p90 "
            f"{lat['p90_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms "
            f"over {lat['matched_in_sandbox']:,}/{lat['produced']:,} records; connector used "
            f"{lat['connector_core_share']:.0%} of a core",
        ]
        ack, after = lat.get("broker_ack"), lat.get("after_broker_ack")
        if ack and after:
            lines.append(
                f"  timestamp -> broker's write acknowledgement: p50 {ack['p50_ms']:.0f} ms, p99 "
                f"{ack['p99_ms']:.0f} ms; acknowledgement -> 200 (the connector's share): p50 "
                f"{after['p50_ms']:.0f} ms, p99 {after['p99_ms']:.0f} ms"
            )
        bare = lat.get("bare_consumer")
        if bare:
            lines.append(
                f"  a bare consumer on the same topic meanwhile (broker + librdkafka alone): "
                f"p50 {bare['p50_ms']:.0f} ms, p99 {bare['p99_ms']:.0f} ms, max "
                f"{bare['max_ms']:.0f} ms over {bare['records']:,} records"
            )
    lines += [
        "",
        *_columns(
            [("target", "goal", "measured", "result")]
            + [(t["name"], t["target"], t["shown"], t["result"]) for t in doc["targets"]]
        ),
    ]
    return "\n".join(lines)


def _tree_line(tree: dict[str, Any] | None) -> str:
    if not tree or tree.get("head") is None:
        return "code: unknown revision"
    changes = tree["connector_changes"]
    return f"code: HEAD {tree['head']}" + (
        f" + uncommitted changes in {len(changes)} connector/ files" if changes else ""
    )


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out
