"""Metrics, probes and ``verify`` on the real connector process, broker and sandbox."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import produce
from connector.devtools.servers import SandboxProcess
from tests.integration.conftest import (
    API_KEY,
    WORKSPACE,
    ConnectorProcess,
    all_committed,
    base_config,
    fresh_topic,
    wait_until,
)

MAPPING = {"type": "customer", "customer_id": "id"}
USERS = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


class Delivered:
    """USERS customers delivered by a connector whose observability server is on ``port``."""

    def __init__(self, cfg: dict[str, Any], port: int, proc: ConnectorProcess) -> None:
        self.cfg = cfg
        self.base = f"http://127.0.0.1:{port}"
        self.proc = proc


@pytest.fixture
def delivered(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
    tmp_path: Path,
) -> Delivered:
    topic = fresh_topic(broker, names("users"), 2)
    group = names("group")
    rows = [{"id": f"user-{i}", "plan": "pro" if i % 2 else "free"} for i in range(USERS)]
    ends = produce(
        broker.bootstrap, topic, [(r["id"].encode(), json.dumps(r).encode()) for r in rows]
    )
    port = free_port()
    topics = [{"name": topic, "format": "json", "transform": {"mapping": MAPPING}}]
    cfg = base_config(broker, sandbox.url, group, topics)
    cfg["observability"] = {
        "host": "127.0.0.1",
        "port": port,
        "delivered_log_path": str(tmp_path / "delivered.jsonl"),
    }
    proc = connector(cfg)
    wait_until(lambda: all_committed(broker.bootstrap, group, topic, ends), 60, "all committed")
    return Delivered(cfg, port, proc)


def run_verify(cfg: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "verify.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "MOENGAGE_WORKSPACE_ID": WORKSPACE, "MOENGAGE_API_KEY": API_KEY}
    return subprocess.run(
        [sys.executable, "-m", "connector", "verify", "--config", str(path), "--sample", "100"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_probes_answer_while_running(delivered: Delivered) -> None:
    wait_until(lambda: get(f"{delivered.base}/readyz")[0] == 200, 30, "ready")
    assert get(f"{delivered.base}/healthz") == (200, "ok")


def test_metrics_count_what_was_consumed_and_accepted(delivered: Delivered) -> None:
    status, text = get(f"{delivered.base}/metrics")
    assert status == 200
    assert f'moengage_connector_elements_accepted_total{{type="customer"}} {USERS}.0' in text
    consumed = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("moengage_connector_records_consumed_total{")
    )
    assert consumed == USERS
    assert "moengage_connector_committed_offset{" in text


def test_verify_finds_every_delivered_customer(delivered: Delivered, tmp_path: Path) -> None:
    assert delivered.proc.stop() == 0
    result = run_verify(delivered.cfg, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"found        {USERS}" in result.stdout


def test_verify_reports_a_customer_missing_from_moengage(
    delivered: Delivered, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    assert delivered.proc.stop() == 0
    req = urllib.request.Request(f"{sandbox.url}/_sandbox/users/user-3", method="DELETE")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204
    result = run_verify(delivered.cfg, tmp_path)
    assert result.returncode == 1
    assert "not found    1: user-3" in result.stdout
