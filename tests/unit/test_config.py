"""Configuration: errors name key paths, interpolation, credentials, and secrets stay masked."""

from pathlib import Path
from typing import Any

import pytest

from connector.config import (
    load_settings,
    parse_settings,
    resolve_credentials,
)
from connector.errors import ConfigError
from tests.unit.configs import minimal_raw


def _problems(raw: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, base_dir=Path("."), environ=env or {})
    return dict(info.value.problems)


def test_minimal_configuration_loads() -> None:
    s = parse_settings(minimal_raw(), base_dir=Path("."), environ={})
    assert s.moengage.endpoint == "http://127.0.0.1:9"
    assert s.librdkafka_config()["enable.auto.commit"] is False


@pytest.mark.parametrize(
    ("dc", "url"),
    [
        ("01", "https://api-01.moengage.com"),
        ("03", "https://api-03.moengage.com"),
        ("api-eu", "https://api-eu.moengage.com"),
        ("api", "https://api.moengage.com"),
    ],
)
def test_data_centre_selects_the_documented_endpoint(dc: str, url: str) -> None:
    s = parse_settings(minimal_raw(moengage={"data_center": dc}), base_dir=Path("."), environ={})
    assert s.moengage.endpoint == url


def test_unknown_data_centre_is_reported_at_its_key() -> None:
    problems = _problems(minimal_raw(moengage={"data_center": "eu"}))
    assert "two-digit" in problems["moengage.data_center"]


def test_every_problem_is_reported_with_its_path() -> None:
    raw = minimal_raw(pipeline={"commit_interval_ms": 0, "typo": 1})
    raw["topics"][0]["format"] = "protobuf"
    problems = _problems(raw)
    assert set(problems) >= {"pipeline.commit_interval_ms", "pipeline.typo", "topics[0].format"}
    assert "unknown key" in problems["pipeline.typo"]


def test_auto_commit_cannot_be_turned_on() -> None:
    raw = minimal_raw(kafka={"bootstrap.servers": "x", "group.id": "g", "enable.auto.commit": True})
    assert "managed by the connector" in _problems(raw)["kafka"]


def test_raw_avro_needs_a_schema_file() -> None:
    raw = minimal_raw()
    raw["topics"][0]["format"] = "avro"
    assert "schema" in _problems(raw)["topics[0]"]


def test_confluent_format_needs_a_schema_registry() -> None:
    raw = minimal_raw()
    raw["topics"][0]["format"] = "confluent"
    assert "schema_registry" in _problems(raw)[""]


def test_interpolation_with_defaults_and_escape() -> None:
    raw = minimal_raw(
        kafka={
            "bootstrap.servers": "${BROKER}",
            "group.id": "${GROUP:-fallback}",
            "client.id": "$${literal}",
        }
    )
    s = parse_settings(raw, base_dir=Path("."), environ={"BROKER": "h:1"})
    assert s.kafka == {
        "bootstrap.servers": "h:1",
        "group.id": "fallback",
        "client.id": "${literal}",
    }


def test_missing_variable_names_the_key_and_the_variable() -> None:
    raw = minimal_raw(kafka={"bootstrap.servers": "${NOPE}", "group.id": "g"})
    assert _problems(raw) == {"kafka.bootstrap.servers": "environment variable NOPE is not set"}


def test_secrets_are_masked_in_repr() -> None:
    raw = minimal_raw(kafka={"bootstrap.servers": "x", "group.id": "g", "sasl.password": "hunter2"})
    s = parse_settings(raw, base_dir=Path("."), environ={})
    assert "hunter2" not in repr(s)
    assert s.librdkafka_config()["sasl.password"] == "hunter2"


def test_credentials_from_environment() -> None:
    s = parse_settings(minimal_raw(), base_dir=Path("."), environ={})
    creds = resolve_credentials(s, {"MOENGAGE_WORKSPACE_ID": "W", "MOENGAGE_API_KEY": "K"})
    assert creds.workspace_id == "W"
    assert creds.api_key.get_secret_value() == "K"
    assert "K" not in repr(creds)


def test_credentials_from_files_win_over_plain_variables(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("from-file\n")
    s = parse_settings(minimal_raw(), base_dir=Path("."), environ={})
    env = {
        "MOENGAGE_WORKSPACE_ID": "W",
        "MOENGAGE_API_KEY": "plain",
        "MOENGAGE_API_KEY_FILE": str(tmp_path / "key"),
    }
    assert resolve_credentials(s, env).api_key.get_secret_value() == "from-file"


def test_missing_credentials_say_how_to_provide_them() -> None:
    s = parse_settings(minimal_raw(), base_dir=Path("."), environ={})
    with pytest.raises(ConfigError) as info:
        resolve_credentials(s, {})
    problems = dict(info.value.problems)
    assert "MOENGAGE_API_KEY" in problems["moengage.api_key"]
    assert "MOENGAGE_WORKSPACE_ID" in problems["moengage.workspace_id"]


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("moengage:\n  base_url: [\n")
    with pytest.raises(ConfigError, match="line"):
        load_settings(f, environ={})
