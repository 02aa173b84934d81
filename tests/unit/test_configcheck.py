"""validate's messages say what to write instead; every problem is reported in one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector.config import Settings, load_settings, parse_settings
from connector.configcheck import valid_keys
from connector.errors import ConfigError
from tests.unit.configs import minimal_raw


def _problems(raw: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, base_dir=Path("."), environ=env or {})
    return dict(info.value.problems)


def _yaml_problems(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    return dict(info.value.problems)


YAML = """\
moengage:
  data_center: {dc}
kafka:
  bootstrap.servers: h:1
  group.id: g
topics:
  - name: users
    format: json
    transform:
      mapping: {{type: customer, customer_id: {cid}}}
"""


def test_a_number_where_a_value_is_expected_says_field_path_or_const(tmp_path: Path) -> None:
    problems = _yaml_problems(tmp_path, YAML.format(dc='"01"', cid="42"))
    message = problems["topics[0].transform.mapping[0].customer_id"]
    assert "field path string" in message
    assert "{const: ...}" in message
    assert "to send the constant 42 write {const: 42}" in message


def test_an_unquoted_data_centre_is_told_to_be_quoted(tmp_path: Path) -> None:
    problems = _yaml_problems(tmp_path, YAML.format(dc="01", cid="user_id"))
    assert problems == {
        "moengage.data_center": "YAML read this as the number 1: quote the data centre, "
        'data_center: "01"'
    }


def test_an_undocumented_data_centre_names_the_valid_ones_and_base_url() -> None:
    message = _problems(minimal_raw(moengage={"data_center": "99"}))["moengage.data_center"]
    assert "'99' is not a data centre the Data API overview lists" in message
    assert "'01', '02', '03'" in message
    assert "'api', 'api-eu', 'api-serv3'" in message
    assert "moengage.base_url" in message


@pytest.mark.parametrize(
    ("raw_over", "path", "suggestion"),
    [
        ({"moengage": {"base_url": "http://h:1", "lnger_ms": 5}}, "moengage.lnger_ms", "linger_ms"),
        ({"loging": {}}, "loging", "logging"),
        ({"validation": {"identifier_key": []}}, "validation.identifier_key", "identifier_keys"),
    ],
)
def test_an_unknown_key_names_the_closest_valid_one(
    raw_over: dict[str, Any], path: str, suggestion: str
) -> None:
    problems = _problems(minimal_raw(**raw_over))
    assert (
        problems[path] == f"unknown key {path.rsplit('.', 1)[-1]!r}: did you mean {suggestion!r}?"
    )


def test_an_unknown_key_in_a_topic_mapping_names_the_closest_valid_one() -> None:
    raw = minimal_raw()
    raw["topics"][0]["transform"]["mapping"]["custmer_id"] = "x"
    problems = _problems(raw)
    assert problems["topics[0].transform.mapping[0].custmer_id"] == (
        "unknown key 'custmer_id': did you mean 'customer_id'?"
    )


def test_an_unknown_key_far_from_every_valid_one_lists_them() -> None:
    problems = _problems(minimal_raw(pipeline={"zzz": 1}))
    assert problems["pipeline.zzz"].startswith("unknown key 'zzz': the keys here are ")
    assert "commit_interval_ms" in problems["pipeline.zzz"]


def test_every_missing_environment_variable_is_reported_in_one_run() -> None:
    raw = minimal_raw(
        kafka={
            "bootstrap.servers": "${KAFKA_BOOTSTRAP}",
            "group.id": "g",
            "sasl.username": "${KAFKA_USERNAME}",
            "sasl.password": "${KAFKA_PASSWORD}",
        }
    )
    problems = _problems(raw)
    assert problems == {
        "kafka.bootstrap.servers": "environment variable KAFKA_BOOTSTRAP is not set",
        "kafka.sasl.username": "environment variable KAFKA_USERNAME is not set",
        "kafka.sasl.password": "environment variable KAFKA_PASSWORD is not set",
        "": "environment variables not set: KAFKA_BOOTSTRAP, KAFKA_PASSWORD, KAFKA_USERNAME",
    }


def test_valid_keys_use_the_names_users_write() -> None:
    assert "base_dir" not in valid_keys(Settings)  # internal, never written
    from connector.config import AttributesSpec, TopicSpec  # noqa: PLC0415

    assert "from" in valid_keys(AttributesSpec)
    assert "schema" in valid_keys(TopicSpec)


SHAPES = """\
moengage: {data_center: "01"}
kafka: {bootstrap.servers: "${KAFKA_BOOTSTRAP}", group.id: g}
topics:
  - name: a
    format: json
    transform: {mapping: {type: customer, customer_id: 42}}
  - name: b
    format: json
    transform: {function: "nope_mod_b:fn"}
  - name: c
    format: avro
    schema: missing.avsc
    transform: {function: "nope_mod_c:fn"}
"""


def test_validate_reports_every_topic_and_variable_whatever_else_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.cli import main  # noqa: PLC0415

    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text(SHAPES)
    assert main(["validate", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "error: kafka.bootstrap.servers: environment variable KAFKA_BOOTSTRAP is not set" in out
    assert "error: topics[0].transform.mapping[0].customer_id: a value here is" in out
    assert "error: topics[1].transform.function: module 'nope_mod_b' not found" in out
    assert "error: topics[2].schema: cannot read schema file" in out
    assert "error: topics[2].transform.function: module 'nope_mod_c' not found" in out
    assert len(out.splitlines()) == 5  # each once
