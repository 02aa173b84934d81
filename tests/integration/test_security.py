"""Security on the real broker and sandbox: a Schema Registry that requires HTTP basic auth,
reached with credentials from ``schema_registry.properties``; and wrong credentials, which must
stop the connector without committing anything and without printing the password.

Kafka SASL/TLS is not exercised here: the local broker (Tansu 0.6.0) cannot serve it. With
``--authentication`` it speaks SCRAM but no user can be created (``tansu user create`` is itself
refused as unauthenticated, and the memory store does not outlive a restart), PLAIN is not built
in, and ``--cert``/``--key`` are accepted but the listener stays plaintext. The pass-through of
``security.protocol``/``sasl.*``/``ssl.*`` to librdkafka is covered by tests/unit/test_security.py.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import committed_offsets, produce
from connector.devtools.servers import BackgroundApp, SandboxProcess
from connector.devtools.workload import users
from connector.errors import ExitCode
from connector.sandbox.registry import create_registry_app
from connector.source.decoding import encode_confluent
from tests.integration.conftest import (
    ConnectorProcess,
    all_committed,
    base_config,
    fresh_topic,
    load_schema,
    short_session,
    wait_until,
)

SR_USER = "sr-connector"
SR_PASSWORD = "sr-pw-Zq8v1c7M"
WRONG_PASSWORD = "wrong-sr-pw-Kd93xa"
URL_PASSWORD = "url-pw-Hq27Lm"
MAPPING = {
    "type": "customer",
    "customer_id": "user_id",
    "attributes": {"include": ["email", "first_name", "points"]},
}


@pytest.fixture(scope="module")
def auth_registry() -> Iterator[BackgroundApp]:
    """The Schema Registry stand-in, refusing every request without the right basic auth."""
    app = BackgroundApp(create_registry_app(basic_auth=(SR_USER, SR_PASSWORD))).start()
    yield app
    app.stop()


def _status_without_credentials(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def _users_topic(broker: LocalBroker, registry_url: str, topic: str, n: int) -> tuple[Any, ...]:
    """Register the user schema (authenticated), produce ``n`` Confluent-framed users."""
    text, parsed = load_schema("user")
    client_config = {"url": registry_url, "basic.auth.user.info": f"{SR_USER}:{SR_PASSWORD}"}
    with SchemaRegistryClient(client_config) as client:
        schema_id = int(client.register_schema(f"{topic}-value", Schema(text, "AVRO")))
    rows = list(users(n))
    ends = produce(
        broker.bootstrap,
        topic,
        [(u["user_id"].encode(), encode_confluent(schema_id, parsed, u)) for u in rows],
    )
    return rows, ends


def _config(
    broker: LocalBroker, sandbox: SandboxProcess, registry: BackgroundApp, group: str, topic: str
) -> dict[str, Any]:
    cfg = short_session(
        base_config(
            broker,
            sandbox.url,
            group,
            [{"name": topic, "format": "confluent", "transform": {"mapping": MAPPING}}],
            registry_url=registry.url,
        )
    )
    # As the README suggests: the user info comes from the environment, never the YAML itself.
    cfg["schema_registry"]["properties"] = {"basic.auth.user.info": "${SR_KEY}:${SR_SECRET}"}
    return cfg


def _secret_forms(user: str, password: str) -> list[str]:
    pair = f"{user}:{password}".encode()
    return [password, base64.b64encode(pair).decode(), base64.b64encode(pair).decode().rstrip("=")]


def _nothing_sent_or_committed(
    broker: LocalBroker, sandbox: SandboxProcess, group: str, topic: str, ends: Any
) -> None:
    """No user reached the sandbox and the group committed no offset on any partition."""
    assert sandbox.admin("GET", "users") == {}
    committed = committed_offsets(broker.bootstrap, group, topic)
    assert set(committed) == set(ends)
    assert all(offset < 0 for offset in committed.values()), committed


def test_records_arrive_through_a_schema_registry_that_requires_basic_auth(
    broker: LocalBroker,
    auth_registry: BackgroundApp,
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    assert _status_without_credentials(auth_registry.url) == 401  # the registry really checks
    topic = fresh_topic(broker, names("sr-auth-users"), 2)
    group = names("group")
    rows, ends = _users_topic(broker, auth_registry.url, topic, 30)

    proc = connector(
        _config(broker, sandbox, auth_registry, group, topic),
        env={"SR_KEY": SR_USER, "SR_SECRET": SR_PASSWORD},
    )
    wait_until(lambda: all_committed(broker.bootstrap, group, topic, ends), 60, "all committed")
    assert proc.stop(signal.SIGTERM) == 0

    store = sandbox.admin("GET", "users")
    assert set(store) == {u["user_id"] for u in rows}
    for u in rows:
        expected = {k: u[k] for k in ("email", "first_name", "points") if u[k] is not None}
        assert store[u["user_id"]]["attributes"] == expected, u["user_id"]
    log = proc.log()
    assert not [s for s in _secret_forms(SR_USER, SR_PASSWORD) if s in log]


def test_wrong_registry_credentials_stop_the_connector_without_commits_or_leaks(
    broker: LocalBroker,
    auth_registry: BackgroundApp,
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    topic = fresh_topic(broker, names("sr-badauth-users"), 2)
    group = names("group")
    _, ends = _users_topic(broker, auth_registry.url, topic, 10)

    proc = connector(
        _config(broker, sandbox, auth_registry, group, topic),
        env={"SR_KEY": SR_USER, "SR_SECRET": WRONG_PASSWORD},
    )
    # A refusal is not an outage: retrying would send the same credentials again. The connector
    # stops at once with the configuration exit code and names the keys to fix.
    assert proc.wait(60) == ExitCode.CONFIG

    events = proc.log_events()
    assert not [e for e in events if e.get("event") == "schema_registry_retry"]
    stopped = next(e for e in events if e.get("event") == "connector_stopped")
    assert stopped["exit_code"] == ExitCode.CONFIG
    assert "HTTP 401" in stopped["reason"]
    assert "basic.auth.user.info" in stopped["reason"]
    log = proc.log()
    assert not [s for s in _secret_forms(SR_USER, WRONG_PASSWORD) if s in log]

    _nothing_sent_or_committed(broker, sandbox, group, topic, ends)


def test_a_registry_property_the_client_refuses_stops_run_with_exit_2_and_reads_nothing(
    broker: LocalBroker,
    auth_registry: BackgroundApp,
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    """The registry client is built while the group join is under way (not before the first log
    line, as it once was); a property it refuses still stops the run with the configuration
    exit code, names the key, prints no secret and commits nothing."""
    topic = fresh_topic(broker, names("sr-badprop-users"), 2)
    group = names("group")
    _, ends = _users_topic(broker, auth_registry.url, topic, 5)
    cfg = _config(broker, sandbox, auth_registry, group, topic)
    cfg["schema_registry"]["properties"] = {"basic.auth.user.inf": "${SR_KEY}:${SR_SECRET}"}

    proc = connector(cfg, env={"SR_KEY": SR_USER, "SR_SECRET": SR_PASSWORD})
    assert proc.wait(60) == ExitCode.CONFIG

    stopped = next(e for e in proc.log_events() if e.get("event") == "connector_stopped")
    assert stopped["exit_code"] == ExitCode.CONFIG
    assert "basic.auth.user.inf" in stopped["reason"]
    assert not [s for s in _secret_forms(SR_USER, SR_PASSWORD) if s in proc.log()]
    _nothing_sent_or_committed(broker, sandbox, group, topic, ends)


def test_credentials_in_the_moengage_url_stop_run_before_anything_prints_them(
    tmp_path: Path,
) -> None:
    """Before: `validate` said OK, `connector_starting` printed the password, and every request
    failed inside aiohttp until the lanes crashed (exit 1). Now `run` refuses it as configuration
    (exit 2) and the password is in no output."""
    cfg = {
        "moengage": {"base_url": "http://bob:${URL_PW}@127.0.0.1:9"},
        "kafka": {"bootstrap.servers": "127.0.0.1:1", "group.id": "g"},
        "topics": [{"name": "t", "format": "json", "transform": {"mapping": MAPPING}}],
        "observability": {"enabled": False},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "MOENGAGE_WORKSPACE_ID": "W",
        "MOENGAGE_API_KEY": "key-7e7e",
        "URL_PW": URL_PASSWORD,
    }
    result = subprocess.run(
        [sys.executable, "-m", "connector", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert "moengage.base_url: credentials in a URL are not allowed" in result.stderr
    assert "MOENGAGE_API_KEY" in result.stderr
    assert URL_PASSWORD not in result.stdout + result.stderr
    assert "connector_starting" not in result.stderr
