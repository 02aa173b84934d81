"""The budget phases of ``make bench``: how few users/min a backlog of profile updates costs.

A CRM replaying its profiles: ``customers`` customers, 5 updates each on average, skewed (each
customer has one update, and four times as many more are spread by Zipf weights 1/rank), every
update a full profile (so the last one is the customer's final state), shuffled, keyed by
customer on an 8-partition JSON topic. The connector drains it against a scaled-down budget (the
sandbox enforces the same one, so a 429 would show), once with ``coalesce: backlog`` and once
with ``request``. A second backlog mixes events in (for information).

Each run prints: updates produced, customer elements MoEngage accepted (= users spent), users
spent per distinct customer, and the drain time (assignment to every offset committed) against the
budget's lower bound: max(customers / users per window, events / events per window) windows. A
run other than the profile backlog with ``backlog`` (the one with targets) is stopped after
``--budget-cap`` seconds; having read the whole backlog, it has formed every element it would
send, so its users per customer are exact and its drain time is projected from the budget (and
says so). A run that drains is checked against the sandbox: every customer's final state must
equal its last produced update.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.phases import Env
from bench.procs import parse_log_events
from bench.report import _target
from bench.runner import API_KEY, WORKSPACE, RunResult, TopicConf, run_connector, write_config
from bench.workload import PARTITIONS
from connector.devtools.kafkautil import create_topics, produce
from connector.devtools.servers import SandboxProcess

PASSTHROUGH = {"function": "connector.transforms.builtin:passthrough"}
PLANS = ("free", "basic", "pro", "enterprise")
CITIES = ("Pune", "Lisbon", "Austin", "Osaka", "Nairobi", "Lima")


@dataclass(frozen=True)
class Budget:
    window_s: float
    users: int  # per window
    events: int  # per window

    def lower_bound_s(self, customers: int, events: int) -> float:
        return max(customers / self.users, events / self.events) * self.window_s


@dataclass
class Backlog:
    """What was produced to one topic, and each customer's last update."""

    topic: str
    updates: int = 0
    events: int = 0
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)

    @property
    def customers(self) -> int:
        return len(self.last)


def zipf_counts(customers: int, mean: float, rng: random.Random) -> list[int]:
    """One update per customer plus ``(mean - 1) * customers`` more spread by weights 1/rank."""
    extra = round((mean - 1) * customers)
    counts = [1] * customers
    for i in rng.choices(
        range(customers), weights=[1 / (r + 1) for r in range(customers)], k=extra
    ):
        counts[i] += 1
    return counts


def make_backlog(bootstrap: str, customers: int, events_per_update: float, seed: int) -> Backlog:
    """Produce the shuffled backlog (updates, and events if asked) and remember the last state."""
    rng = random.Random(seed)  # noqa: S311 - a seeded workload, not cryptography
    topic = f"bench.budget.{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: PARTITIONS})
    ids = [f"bc{i:06d}" for i in range(customers)]
    order = [
        c for c, n in zip(ids, zipf_counts(customers, 5.0, rng), strict=True) for _ in range(n)
    ]
    n_events = round(len(order) * events_per_update)
    weights = [1 / (r + 1) for r in range(customers)]
    order += [f"!{c}" for c in rng.choices(ids, weights=weights, k=n_events)]
    rng.shuffle(order)
    backlog = Backlog(topic)
    now = int(time.time())
    rows: list[tuple[bytes | None, bytes | None]] = []
    for seq, who in enumerate(order):
        if who.startswith("!"):
            c = who[1:]
            action = {"action": "Viewed Page", "current_time": now, "attributes": {"seq": seq}}
            element: dict[str, Any] = {"type": "event", "customer_id": c, "actions": [action]}
            backlog.events += 1
        else:
            c = who
            attrs = {
                "plan": rng.choice(PLANS),
                "city": rng.choice(CITIES),
                "score": rng.randint(0, 10_000),
                "seq": seq,
            }
            element = {"type": "customer", "customer_id": c, "attributes": attrs}
            backlog.last[c] = attrs
            backlog.updates += 1
        rows.append((c.encode(), orjson.dumps(element)))
    backlog.ends = produce(bootstrap, topic, rows)
    return backlog


@dataclass
class BudgetRun:
    """One connector run over a backlog, and what it cost."""

    phase: str
    mode: str
    result: RunResult
    stats: dict[str, Any]
    attempts: list[list[Any]]
    final_mismatches: int | None
    backlog: Backlog
    budget: Budget

    def as_json(self) -> dict[str, Any]:
        b, r = self.backlog, self.result
        sent = int(self.stats.get("elements_by_type", {}).get("customer", 0))
        bound = self.budget.lower_bound_s(b.customers, b.events)
        first = self.attempts[0][0] if self.attempts else 0.0
        throttled = [a for a in self.attempts if a[1] == 429]
        steady = [a for a in throttled if a[0] >= first + self.budget.window_s]
        out = {
            "phase": self.phase,
            "coalesce": self.mode,
            "updates_produced": b.updates,
            "events_produced": b.events,
            "distinct_customers": b.customers,
            "customer_elements_sent": sent,
            "users_per_distinct_customer": round(sent / b.customers, 4),
            "drain_seconds": round(r.seconds, 1) if r.complete else None,
            "lower_bound_seconds": round(bound, 1),
            "drain_share_of_bound": round(r.seconds / bound, 4) if r.complete else None,
            "complete": r.complete,
            "stopped_after_seconds": None if r.complete else round(r.seconds, 1),
            "requests_429": len(throttled),
            "requests_429_after_first_window": len(steady),
            "requests_by_status": self.stats.get("requests_by_status"),
            "final_state_mismatches": self.final_mismatches,
            "connector_exit_code": r.exit_code,
        }
        if not r.complete:
            out.update(self._projection())
        return out

    def _projection(self) -> dict[str, Any]:
        """A run stopped early had read and batched the whole backlog (the buffer holds it): the
        customer elements it formed are what it would have sent, and the budget says how long
        that takes (one window per ``users`` of them, or per ``events`` events)."""
        stopped = next(
            (
                e
                for e in parse_log_events(Path(self.result.log_path))
                if e.get("event") == "connector_stopped"
            ),
            None,
        )
        b = self.backlog
        if stopped is None or stopped.get("records") != self.result.records_target:
            return {"projection": "none: the backlog was not read whole"}
        formed = b.updates - int(stopped.get("coalesced_updates", 0))
        windows = max(formed / self.budget.users, b.events / self.budget.events)
        seconds = windows * self.budget.window_s
        return {
            "projection": "customer elements formed from the whole backlog; drain from the budget",
            "customer_elements_sent": formed,
            "users_per_distinct_customer": round(formed / b.customers, 4),
            "drain_seconds": round(seconds, 1),
            "drain_share_of_bound": round(
                seconds / self.budget.lower_bound_s(b.customers, b.events), 4
            ),
        }


def _mismatches(backlog: Backlog, users: dict[str, Any]) -> int:
    """Customers whose sandbox attributes differ from their last produced update."""
    bad = 0
    for c, attrs in backlog.last.items():
        got = (users.get(c) or {}).get("attributes") or {}
        if any(got.get(k) != v for k, v in attrs.items()):
            bad += 1
    return bad


def run_budget(
    env: Env, phase: str, backlog: Backlog, budget: Budget, *, mode: str, timeout: float
) -> BudgetRun:
    limits = (
        "--users-per-minute",
        str(budget.users),
        "--events-per-minute",
        str(budget.events),
        "--window-seconds",
        str(budget.window_s),
    )
    group = f"bench-budget-{mode}-{uuid.uuid4().hex[:8]}"
    name = f"budget-{phase}-{mode}"
    result = RunResult(name, sum(backlog.ends.values()))
    sandbox_proc = SandboxProcess(
        "--workspace-id",
        WORKSPACE,
        "--api-key",
        API_KEY,
        *limits,
        log_path=env.workdir / f"{name}.sandbox.log",
    )
    with sandbox_proc as sandbox:
        config = env.workdir / f"{name}.yaml"
        doc = write_config(
            config,
            bootstrap=env.bootstrap,
            group=group,
            sandbox_url=sandbox.url,
            registry_url=None,
            topics=[TopicConf(backlog.topic, "json", {})],
            linger_ms=500,
            max_request_bytes=env.max_request_bytes,
        )
        doc["topics"][0]["transform"] = PASSTHROUGH
        doc["moengage"].update(
            users_per_minute=budget.users,
            events_per_minute=budget.events,
            rate_window_seconds=budget.window_s,
            coalesce=mode,
        )
        # The merge window is the buffer: a backfill holds the whole backlog (a few MB here).
        doc["pipeline"] = {
            "max_buffered_records": 1_000_000,
            "max_buffered_bytes": 512 * 1024 * 1024,
            "shutdown_grace_seconds": 2,
        }
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        run_connector(
            result,
            config=config,
            log_path=env.workdir / f"{name}.connector.log",
            bootstrap=env.bootstrap,
            group=group,
            partitions={backlog.topic: sorted(backlog.ends)},
            timeout=timeout,
            broker_pid=env.broker_pid,
            sandbox_pid=sandbox.proc.pid if sandbox.proc else None,
        )
        stats = sandbox.admin("GET", "stats")
        attempts = sandbox.admin("GET", "attempts")
        mismatches = (
            _mismatches(backlog, sandbox.admin("GET", "users")) if result.complete else None
        )
    return BudgetRun(phase, mode, result, stats, attempts, mismatches, backlog, budget)


def line(r: dict[str, Any]) -> str:
    """One run's figures, as printed."""
    final = r["final_state_mismatches"]
    state = (
        "" if final is None else f"; final state: {final} customers differ from their last update"
    )
    events = f" + {r['events_produced']:,} events" if r["events_produced"] else ""
    head = (
        f"budget {r['phase']} coalesce={r['coalesce']}: {r['updates_produced']:,} updates{events} "
        f"for {r['distinct_customers']:,} customers; "
    )
    throttled = (
        f"; 429s: {r['requests_429']} ({r['requests_429_after_first_window']} after the first "
        "window)"
    )
    if r["drain_seconds"] is None:
        return head + f"stopped after {r['stopped_after_seconds']} s, no projection" + throttled
    projected = (
        ""
        if r["complete"]
        else (
            f" [projected: stopped after {r['stopped_after_seconds']:.0f} s; elements formed "
            "from the whole backlog, drain from the budget]"
        )
    )
    return (
        head + f"{r['customer_elements_sent']:,} customer elements sent; "
        f"{r['users_per_distinct_customer']:.3f} users per distinct customer; drain "
        f"{r['drain_seconds']:.1f} s against a lower bound of {r['lower_bound_seconds']:.1f} s "
        f"({r['drain_share_of_bound']:.0%}){projected}{throttled}{state}"
    )


def targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Acceptance on the profile backlog with ``coalesce: backlog`` (``make bench``'s shape)."""
    out = []
    for r in runs:
        if r["phase"] != "profiles" or r["coalesce"] != "backlog":
            continue
        users, share = r["users_per_distinct_customer"], r["drain_share_of_bound"]
        final, steady = r["final_state_mismatches"], r["requests_429_after_first_window"]
        out += [
            _target(
                "budget: users per distinct customer",
                "<= 1.05",
                users,
                users <= 1.05,
                f"{users:.3f}",
            ),
            _target(
                "budget: drain / lower bound",
                "<= 110%",
                share,
                None if share is None else share <= 1.10,
                "-" if share is None else f"{share:.0%}",
            ),
            _target(
                "budget: customers whose final state differs from their last update",
                "0",
                final,
                None if final is None else final == 0,
                "-" if final is None else str(final),
            ),
            _target("budget: 429s in steady state", "0", steady, steady == 0, str(steady)),
        ]
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--budget-window", type=float, default=2.0, help="budget window, s")
    ap.add_argument("--budget-users", type=int, default=200, help="users per budget window")
    ap.add_argument("--budget-events", type=int, default=2000, help="events per budget window")
    ap.add_argument("--budget-customers", type=int, default=6000, help="profile phase customers")
    ap.add_argument("--budget-mixed-customers", type=int, default=2000, help="mixed phase")
    ap.add_argument(
        "--budget-cap",
        type=float,
        default=30,
        help="stop the runs without targets after this, s (their figures are then projected)",
    )


def run_phases(env: Env, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    """Both backlogs, each with ``backlog`` then ``request``; figures printed as they come."""
    budget = Budget(args.budget_window, args.budget_users, args.budget_events)
    say(
        f"budget: window {budget.window_s:g} s, {budget.users:,} users and {budget.events:,} "
        "events per window; the sandbox enforces the same"
    )
    runs = []
    plans = [("profiles", args.budget_customers, 0.0), ("mixed", args.budget_mixed_customers, 1.0)]
    for phase, customers, events_per_update in plans:
        backlog = make_backlog(env.bootstrap, customers, events_per_update, seed=11)
        bound = budget.lower_bound_s(backlog.customers, backlog.events)
        for mode in ("backlog", "request"):
            measured = phase == "profiles" and mode == "backlog"  # the one with targets
            timeout = bound * 1.6 + 20 if measured else args.budget_cap
            r = run_budget(env, phase, backlog, budget, mode=mode, timeout=timeout).as_json()
            say(line(r))
            runs.append(r)
    checks = targets(runs)
    for c in checks:
        say(f"target {c['name']} {c['target']}: {c['shown']} {c['result']}")
    return {
        "budget": {"window_s": budget.window_s, "users": budget.users, "events": budget.events},
        "runs": runs,
        "targets": checks,
    }
