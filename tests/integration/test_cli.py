"""The command line as a user runs it: validate names broken keys, preview reads a real topic."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import committed_offsets, produce
from connector.devtools.workload import events
from connector.source.decoding import encode_raw
from tests.integration.conftest import ROOT, base_config, fresh_topic, load_schema


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    "command", ["run", "validate", "preview", "sandbox", "verify", "dev", "produce"]
)
def test_every_command_has_its_own_help(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0
    assert "--" in result.stdout
    assert "usage:" in result.stdout


def test_validate_accepts_the_shipped_demo_configuration() -> None:
    result = cli("validate", "--config", str(ROOT / "config" / "demo.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK (3 topic(s))" in result.stdout


# What a deployment sets: the variables the production example and the Kubernetes manifests read
# (HOSTNAME is set in every Pod). Placeholders only: validate connects to no broker, and a registry
# out of reach is a note (its topics are checked for the form of their paths only).
DEPLOYMENT_ENV = {
    "KAFKA_BOOTSTRAP": "kafka-0.kafka:9093",
    "KAFKA_USERNAME": "connector",
    "KAFKA_PASSWORD": "placeholder",
    "SCHEMA_REGISTRY_URL": "https://schema-registry:8081",
    "SCHEMA_REGISTRY_USER_INFO": "key:placeholder",
    "HOSTNAME": "moengage-connector-0",
}


def _configmap_files(manifest: Path) -> list[dict[str, str]]:
    """Each ConfigMap's files as its volume mount shows them: one file per key."""
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    return [d["data"] for d in docs if d.get("kind") == "ConfigMap"]


@pytest.mark.parametrize(
    "source", ["production.yaml", "kubernetes/sidecar.yaml", "kubernetes/deployment.yaml"]
)
def test_validate_accepts_the_shipped_production_and_kubernetes_configurations(
    source: str, tmp_path: Path
) -> None:
    path = ROOT / "config" / source
    if source.startswith("kubernetes/"):
        (files,) = _configmap_files(path)
        for name, text in files.items():  # config.yaml and the schemas it names beside it
            (tmp_path / name).write_text(text)
        path = tmp_path / "config.yaml"
    env = {"PATH": os.environ.get("PATH", ""), **DEPLOYMENT_ENV}
    result = cli("validate", "--config", str(path), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": OK (" in result.stdout


def test_make_demos_script_delivers_everything_and_exits_0(tmp_path: Path) -> None:
    """What `make demo` runs (a smaller workload): its own broker, registry, sandbox, connector."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector.demo",
            "--users",
            "60",
            "--events",
            "600",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "users in sandbox             60  (expected 60)" in result.stdout
    assert "events in sandbox           600  (expected 600)" in result.stdout
    assert "result                 OK" in result.stdout


def test_validate_names_every_broken_key(tmp_path: Path) -> None:
    broken = {
        "moengage": {"data_center": "eu-west", "linger_ms": -1},
        "kafka": {"bootstrap.servers": "127.0.0.1:1"},
        "topics": [
            {
                "name": "a",
                "format": "avro",
                "schema": "missing.avsc",
                "transform": {"mapping": {"type": "event", "customer_id": "u", "action": "e"}},
            },
            {"name": "b", "format": "json", "transform": {"function": "no_such_module:fn"}},
        ],
    }
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = cli("validate", "--config", str(path))
    assert result.returncode == 1
    out = result.stdout
    assert "error: moengage.data_center:" in out
    assert "error: moengage.linger_ms:" in out
    assert "error: kafka: 'group.id' is required" in out


def test_validate_reports_schema_and_transform_problems_with_their_paths(tmp_path: Path) -> None:
    cfg = {
        "moengage": {"base_url": "http://127.0.0.1:9"},
        "kafka": {"bootstrap.servers": "127.0.0.1:1", "group.id": "g"},
        "topics": [
            {
                "name": "a",
                "format": "avro",
                "schema": "missing.avsc",
                "transform": {"mapping": {"type": "event", "customer_id": "u", "action": "e"}},
            },
        ],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = cli("validate", "--config", str(path))
    assert result.returncode == 1
    assert "error: topics[0].schema:" in result.stdout
    cfg["topics"][0] = {
        "name": "b",
        "format": "json",
        "transform": {"function": "no_such_module:fn"},
    }
    path.write_text(yaml.safe_dump(cfg))
    result = cli("validate", "--config", str(path))
    assert result.returncode == 1
    assert "error: topics[0].transform.function: module 'no_such_module' not found" in (
        result.stdout
    )


def test_validate_lists_problems_of_every_topic_at_once(tmp_path: Path) -> None:
    mapping = {"mapping": {"type": "event", "customer_id": "u", "action": "e"}}
    cfg = {
        "moengage": {"base_url": "http://127.0.0.1:9"},
        "kafka": {"bootstrap.servers": "127.0.0.1:1", "group.id": "g"},
        "topics": [
            {"name": "a", "format": "avro", "schema": "missing.avsc", "transform": mapping},
            {"name": "b", "format": "json", "transform": {"function": "nope_mod:fn"}},
        ],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = cli("validate", "--config", str(path)).stdout
    assert "error: topics[0].schema:" in out
    assert "error: topics[1].transform.function:" in out


def test_preview_prints_elements_for_a_real_topic_without_committing_and_gates_on_failures(
    broker: LocalBroker, names: Callable[[str], str], tmp_path: Path
) -> None:
    """Exit 1 when a previewed record fails or the mapping has a problem, 0 when all is well."""
    topic = fresh_topic(broker, names("preview"), 2)
    clean = fresh_topic(broker, names("preview-clean"), 1)
    _, schema = load_schema("event")
    rows = list(events(6, 3))
    produce(broker.bootstrap, clean, [(e["user_id"].encode(), encode_raw(schema, e)) for e in rows])
    rows[4]["event_name"] = ""  # an empty action name: preview shows the error, not a crash
    # An element that can never fit a request (as 'run' finds it: preview uses its processor).
    rows[2]["properties"] = {f"k{i}": "x" * 200 for i in range(600)}
    produce(broker.bootstrap, topic, [(e["user_id"].encode(), encode_raw(schema, e)) for e in rows])
    group = names("group")
    mapping = {
        "type": "event",
        "customer_id": "user_id",
        "action": "event_name",
        "current_time": "event_time",
        "attributes": {"from": "properties"},
    }
    event_avsc = str(ROOT / "schemas" / "event.avsc")
    topics = [
        {"name": t, "format": "avro", "schema": event_avsc, "transform": {"mapping": m}}
        for t, m in [
            (topic, mapping),
            (clean, mapping),
            (names("misspelled"), {**mapping, "current_time": "event_tme"}),
        ]
    ]
    cfg = base_config(broker, "http://127.0.0.1:9", group, topics)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = cli(
        "preview", "--config", str(path), "--topic", topic, "--limit", "6", "--timeout", "5"
    )
    assert result.returncode == 1, result.stderr  # two records would fail: the gate is shut
    docs = [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(docs) == 6
    ok = [d for d in docs if "elements" in d]
    bad = [d for d in docs if "error" in d]
    assert len(ok) == 4
    assert len(bad) == 2
    assert f"{topic}[" in bad[0]["error"]  # located: topic[partition]@offset
    assert {"action.empty", "element.too_large"} == {
        rule for d in bad for rule in ("action.empty", "element.too_large") if rule in d["error"]
    }
    assert all("users" in c and "events" in c for d in ok for c in d["cost"])
    assert all(d["elements"][0]["type"] == "event" for d in ok)
    assert {d["elements"][0]["customer_id"] for d in ok} <= {e["user_id"] for e in rows}
    assert f"# 6 record(s) previewed from {topic}, 2 failed; nothing committed" in result.stdout
    assert all(off < 0 for off in committed_offsets(broker.bootstrap, group, topic).values())

    result = cli("preview", "--config", str(path), "--topic", clean, "--limit", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"# 3 record(s) previewed from {clean}, 0 failed; nothing committed" in result.stdout

    # The mapping is checked against the schema first; the topic need not even exist.
    result = cli("preview", "--config", str(path), "--topic", topics[2]["name"], "--timeout", "2")
    assert result.returncode == 1
    assert (
        "error: topics[2].transform.mapping[0].current_time: no field 'event_tme' at the top "
        "level of the record; did you mean 'event_time'?"
    ) in result.stderr


# ----- configuration problems found before anything connects --------------------------------------

CREDENTIALS_ENV = {"MOENGAGE_WORKSPACE_ID": "W", "MOENGAGE_API_KEY": "cli-test-key-5a5a"}


def _offline_config(tmp_path: Path, **kafka: Any) -> Path:
    """A configuration whose broker and MoEngage are unreachable: any run must stop at config."""
    cfg = {
        "moengage": {"base_url": "http://127.0.0.1:9"},
        "kafka": {"bootstrap.servers": "127.0.0.1:1", "group.id": "g", **kafka},
        "topics": [
            {
                "name": "users",
                "format": "json",
                "transform": {"mapping": {"type": "customer", "customer_id": "user_id"}},
            }
        ],
        "observability": {"enabled": False},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), **CREDENTIALS_ENV, **extra}


def test_validate_refuses_an_alias_bomb_with_a_message(tmp_path: Path) -> None:
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    path = _offline_config(tmp_path)
    path.write_text(path.read_text() + "x-lol:\n" + "".join(f"  {line}\n" for line in levels))
    result = cli("validate", "--config", str(path), env=_env())
    assert result.returncode == 1
    assert "more than 100,000 values through YAML aliases" in result.stdout


def test_validate_refuses_a_duplicate_key_naming_it_and_its_lines(tmp_path: Path) -> None:
    path = _offline_config(tmp_path)
    path.write_text(path.read_text() + "observability:\n  enabled: true\n")
    result = cli("validate", "--config", str(path), env=_env())
    assert result.returncode == 1
    assert "error: observability: duplicate key at line" in result.stdout


def test_validate_refuses_credentials_in_the_moengage_url_without_printing_them(
    tmp_path: Path,
) -> None:
    path = _offline_config(tmp_path)
    path.write_text(path.read_text().replace("http://127.0.0.1:9", "http://bob:url-pw-6c6c@h:9"))
    result = cli("validate", "--config", str(path), env=_env())
    assert result.returncode == 1
    assert "error: moengage.base_url: credentials in a URL are not allowed" in result.stdout
    assert "url-pw-6c6c" not in result.stdout + result.stderr


def test_an_empty_api_key_file_is_named_by_validate_and_stops_run(tmp_path: Path) -> None:
    key = tmp_path / "api-key"
    key.write_text("\n")
    path = _offline_config(tmp_path)
    env = {"PATH": os.environ.get("PATH", ""), "MOENGAGE_WORKSPACE_ID": "W"}
    env["MOENGAGE_API_KEY_FILE"] = str(key)
    result = cli("validate", "--config", str(path), env=env)
    assert result.returncode == 0
    assert f"warning: moengage.api_key: {key} (named by MOENGAGE_API_KEY_FILE) is empty" in (
        result.stdout
    )
    result = cli("run", "--config", str(path), env=env)
    assert result.returncode == 2
    assert f"{key} (named by MOENGAGE_API_KEY_FILE) is empty" in result.stderr


def test_an_unknown_log_level_in_the_environment_is_a_configuration_error(tmp_path: Path) -> None:
    path = _offline_config(tmp_path)
    env = _env(MOENGAGE_CONNECTOR_LOG_LEVEL="verbose")
    result = cli("validate", "--config", str(path), env=env)
    assert result.returncode == 1
    assert "error: logging.level: MOENGAGE_CONNECTOR_LOG_LEVEL" in result.stdout
    assert "debug, info, warning, error" in result.stdout
    result = cli("run", "--config", str(path), env=env)
    assert result.returncode == 2
    assert "debug, info, warning, error" in result.stderr
    assert "Traceback" not in result.stderr


BAD_KAFKA = {
    "kafka.sesion.timeout.ms": {"sesion.timeout.ms": 45000},
    "kafka.session.timeout.ms": {"session.timeout.ms": "soon"},
    "kafka.sasl.mechanism": {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM_SHA_512",
        "sasl.username": "connector",
        "sasl.password": "scram-pw-1b1b",
    },
}


@pytest.mark.parametrize(("key", "kafka"), BAD_KAFKA.items(), ids=BAD_KAFKA.keys())
def test_validate_names_a_property_librdkafka_refuses(
    key: str, kafka: dict[str, Any], tmp_path: Path
) -> None:
    result = cli("validate", "--config", str(_offline_config(tmp_path, **kafka)), env=_env())
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: {key}: " in result.stdout
    assert "OK" not in result.stdout


@pytest.mark.parametrize(("key", "kafka"), BAD_KAFKA.items(), ids=BAD_KAFKA.keys())
def test_run_stops_with_exit_2_naming_a_property_librdkafka_refuses(
    key: str, kafka: dict[str, Any], tmp_path: Path
) -> None:
    result = cli("run", "--config", str(_offline_config(tmp_path, **kafka)), env=_env())
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"  {key}: " in result.stderr
    assert "Traceback" not in result.stderr
    assert "scram-pw-1b1b" not in result.stdout + result.stderr
