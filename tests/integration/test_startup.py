"""Start-up against what is wrong: a Kafka cluster out of reach, a wrong MoEngage API key."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import committed_offsets, produce
from connector.devtools.servers import SandboxProcess
from tests.integration.conftest import (
    API_KEY,
    ConnectorProcess,
    all_committed,
    base_config,
    fresh_topic,
    wait_until,
)

WRONG_KEY = "wrong-key-7d3e1b9c"
TOPIC = {
    "format": "json",
    "transform": {"mapping": {"type": "customer", "customer_id": "user_id"}},
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _readyz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            body: dict[str, Any] = orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        body = orjson.loads(e.read())
    return body


def test_an_unreachable_cluster_is_one_clear_json_line_a_readyz_reason_and_a_preview_message(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    tmp_path: Path,
) -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    cfg = base_config(broker, sandbox.url, "g-unreachable", [{"name": "users", **TOPIC}])
    cfg["kafka"]["bootstrap.servers"] = bootstrap
    cfg["logging"]["repeat_interval_seconds"] = 2
    proc = connector(cfg)
    reason = f"Kafka brokers unreachable: {bootstrap}"

    def unready_for_kafka() -> bool:
        port = next(
            (e["port"] for e in proc.log_events() if e["event"] == "observability_listening"),
            None,
        )
        return port is not None and _readyz(port)["reason"] == reason

    wait_until(unready_for_kafka, 30, "/readyz to name the unreachable brokers")
    wait_until(
        lambda: sum(e["event"] == "kafka_brokers_unreachable" for e in proc.log_events()) >= 2,
        30,
        "the unreachable line repeated",
    )
    assert proc.stop() == 0
    lines = proc.log().splitlines()
    assert all(line.startswith("{") for line in lines), [
        line for line in lines if not line.startswith("{")
    ]
    events = proc.log_events()  # every line parses as JSON
    unreachable = [e for e in events if e["event"] == "kafka_brokers_unreachable"]
    assert unreachable[0]["message"] == reason
    # Slowly: librdkafka retries its connections many times a second.
    assert len(unreachable) <= len(lines) // 2 + 1
    assert sum(e["event"] == "librdkafka" for e in events) <= 3

    path = tmp_path / "preview.yaml"
    path.write_text(yaml.safe_dump(cfg))
    preview = ["preview", "--config", str(path), "--topic", "users", "--timeout", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "connector", *preview],
        capture_output=True,
        text=True,
        timeout=60,
        env=proc.env,
        check=False,
    )
    assert result.returncode == 6
    assert "Traceback" not in result.stderr
    assert f"error: {reason} (no metadata for 'users' within 2 s" in result.stderr
    # Besides the CLI's own "error:" and the schema check's "note:" lines, only JSON log lines.
    others = [
        line for line in result.stderr.splitlines() if not line.startswith(("error: ", "note: "))
    ]
    assert all(line.startswith("{") for line in others), others
    assert result.stdout == ""


def test_a_wrong_api_key_stops_with_exit_3_before_reading_and_the_right_one_starts(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    topic = fresh_topic(broker, names("startup"), 2)
    ends = produce(
        broker.bootstrap,
        topic,
        [(f"u{i}".encode(), orjson.dumps({"user_id": f"user-{i}"})) for i in range(10)],
    )
    group = names("group")
    cfg = base_config(broker, sandbox.url, group, [{"name": topic, **TOPIC}])
    wrong = connector(cfg, env={"MOENGAGE_API_KEY": WRONG_KEY})
    assert wrong.wait(60) == 3
    events = wrong.log_events()
    refused = [e for e in events if e["event"] == "moengage_credentials_refused"]
    assert len(refused) == 1
    assert refused[0]["status"] == 401
    assert "refused the connector's credentials" in refused[0]["message"]
    assert WRONG_KEY not in wrong.log()
    # The consumer never subscribed: no assignment, no record, no commit.
    assert not any(e["event"].startswith("partitions_") for e in events)
    assert all(off < 0 for off in committed_offsets(broker.bootstrap, group, topic).values())
    assert sandbox.admin("GET", "stats")["requests_total"] == 0

    # validate --online runs the same check (and asks Kafka for the topic).
    path = wrong.config_path
    online = ["validate", "--config", str(path), "--online", "--timeout", "10"]
    refused_run = _cli(online, {**wrong.env})
    assert refused_run.returncode == 1
    assert "error: moengage: MoEngage refused the credentials: MoEngage answered 401" in (
        refused_run.stdout
    )
    assert "ok: Kafka brokers reachable" in refused_run.stdout
    assert WRONG_KEY not in refused_run.stdout + refused_run.stderr
    accepted = _cli(online, {**wrong.env, "MOENGAGE_API_KEY": API_KEY})
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "ok: MoEngage accepted the credentials" in accepted.stdout

    right = connector(cfg)
    wait_until(
        lambda: all_committed(broker.bootstrap, group, topic, ends),
        60,
        "every record committed with the right key",
    )
    assert right.stop() == 0
    assert any(e["event"] == "moengage_credentials_accepted" for e in right.log_events())
