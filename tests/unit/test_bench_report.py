"""The benchmark's arithmetic: percentiles, rates, profile summaries, targets (no processes)."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from bench.phases import _latencies, percentile, summarize_py_spy
from bench.report import run_json, table, targets
from bench.runner import RunResult
from bench.workload import PacedProducer


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))


def test_rates_use_assignment_and_commit_times() -> None:
    r = RunResult("x", 1000, records_committed=1000, complete=True)
    r.process_start, r.assigned_at, r.all_committed_at = 100.0, 103.0, 108.0
    r.timeline = [(104.0, 50), (105.0, 100), (106.0, 500), (107.0, 900), (108.0, 1000)]
    assert r.records_per_s == 200
    assert r.steady_records_per_s() == (900 - 100) / (107 - 105)
    r.cpu_user_s, r.cpu_system_s, r.cpu_at_assignment_s = 1.5, 0.5, 0.5
    doc = run_json(r, 100_000)
    assert doc["cpu_s_per_100k_records"] == 200
    assert doc["cpu_s_per_100k_records_after_assignment"] == 150
    assert doc["records_per_s_including_startup"] == 125


def test_py_spy_summary_counts_self_inclusive_and_threads(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "thread (1): MainThread;main (connector/cli.py:1);run (connector/app.py:10);"
        "_read_avro (connector/source/decoding.py:5) 3\n"
        "thread (1): MainThread;main (connector/cli.py:1);run (connector/app.py:12) 1\n"
        "thread (2): kafka_0;_worker (concurrent/futures/thread.py:83) 4\n"
    )
    out = summarize_py_spy(raw)
    assert out["samples"] == 8
    assert out["self_pct"][0] == ["(idle: executor thread waiting for work in _worker)", 50.0]
    assert ["_read_avro (decoding.py)", 37.5] in out["self_pct"]
    inclusive = dict(out["connector_inclusive_pct"])
    assert inclusive == {"run (app.py)": 50.0, "_read_avro (decoding.py)": 37.5}
    assert dict(out["threads_pct"]) == {"MainThread": 50.0, "kafka_0": 50.0}


def test_latency_join_uses_first_acceptance(tmp_path: Path) -> None:
    producer = PacedProducer.__new__(PacedProducer)
    producer.rate, producer.seconds, producer.produced, producer.failures = 10, 1.0, 2, []
    producer.timestamps_ms = {0: 1_000_000, 1: 1_000_100}
    producer.acked_at = {0: 1000.05, 1: 1000.2}  # the broker confirmed each write this late

    def line(ts: float, seqs: list[int]) -> bytes:
        actions = [{"action": "a", "attributes": {"bench_seq": s}} for s in seqs]
        body = {"elements": [{"type": "event", "actions": actions}]}
        return orjson.dumps({"ts": ts, "request_id": "r", "body": body}) + b"\n"

    record = tmp_path / "accepted.jsonl"
    record.write_bytes(line(1000.25, [0]) + line(1000.5, [1, 0]))
    out = _latencies(record, producer)
    assert out["matched_in_sandbox"] == 2
    assert out["p50_ms"] == pytest.approx(250)
    assert out["max_ms"] == pytest.approx(400)
    # The connector's share starts at the broker's acknowledgement: 200 ms and 300 ms.
    assert out["broker_ack"]["p99_ms"] == pytest.approx(100)
    assert out["after_broker_ack"]["p50_ms"] == pytest.approx(200)
    assert out["after_broker_ack"]["p99_ms"] == pytest.approx(300)


def test_targets_pass_and_miss() -> None:
    run = {"records_committed": 1, "records_per_s": 60_000.0, "cpu_s_per_100k_records": 2.0,
           "avg_fill_share": 0.97,
           "max_body_bytes_seen": 100_000, "peak_rss_mb": 120.0}  # fmt: skip
    slow = {**run, "records_per_s": 30_000.0}
    doc = {
        "runs": {"0ms": run, "50ms": slow},
        "ceiling": {"records_per_s": 120_000.0},
        "latency": {"rate_per_s": 2000, "p99_ms": 250.0},
        "config": {"max_request_bytes": 100_000, "latency_linger_ms": 200},
    }
    verdicts = {t["name"]: t["result"] for t in targets(doc)}
    assert verdicts == {
        "e2e records/s": "PASS",
        "e2e share of ceiling": "MISS",
        "CPU s per 1M records": "MISS",
        "avg request fill": "PASS",
        "largest body": "PASS",
        "peak RSS": "PASS",
        "50 ms latency: share of 0 ms rate": "MISS",
        "p99 latency at 2,000/s": "PASS",
    }


def test_table_renders_a_minimal_document() -> None:
    r = RunResult("0ms", 10, records_committed=10, complete=True)
    r.process_start, r.assigned_at, r.all_committed_at = 0.0, 1.0, 2.0
    doc = {
        "machine": {"date": "d", "platform": "p", "cpu_model": "c", "cores": 2,
                    "loadavg_at_start": [0.0, 0.0, 0.0]},
        "workload": {"events": {"records": 8, "avg_avro_bytes": 300.0},
                     "users": {"records": 2, "avg_avro_bytes": 120.0}, "records": 10,
                     "avg_avro_bytes": 264.0, "produce_seconds": 1.0,
                     "produce_records_per_s": 10.0},
        "runs": {"0ms": run_json(r, 100_000)},
        "config": {"max_request_bytes": 100_000, "latency_linger_ms": 200},
    }  # fmt: skip
    doc["targets"] = targets(doc)
    text = table(doc)
    assert "connector 0ms" in text
    assert "e2e records/s" in text
