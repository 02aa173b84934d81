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
from connector.source import clientconfig
from connector.source.clientconfig import kafka_config_problems
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
    assert "use one of '01', '02', '03'" in problems["moengage.data_center"]


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


# ----- YAML: duplicate keys, aliases -------------------------------------------------------------

MINIMAL_YAML = """\
moengage:
  base_url: http://127.0.0.1:9
kafka:
  bootstrap.servers: 127.0.0.1:1
  group.id: g
topics:
  - name: users
    format: json
    transform:
      mapping: {type: customer, customer_id: user_id}
"""

# "Billion laughs", as reported (a 756-byte file grew `validate` to 1.5 GB): nine levels of nine
# aliases, 9**9 strings once expanded, in a few hundred bytes.
ALIAS_BOMB = (
    MINIMAL_YAML.replace("topics:", "# the bomb\ntopics:")
    + """\
x-lol:
  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""
)


def _load_problems(tmp_path: Path, text: str) -> dict[str, str]:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    return dict(info.value.problems)


def test_the_minimal_yaml_loads(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(MINIMAL_YAML)
    assert load_settings(f, environ={}).kafka["group.id"] == "g"


def test_a_duplicate_key_is_an_error_with_its_path_and_both_lines(tmp_path: Path) -> None:
    text = MINIMAL_YAML.replace("  group.id: g\n", "  group.id: g\n  group.id: other\n")
    problems = _load_problems(tmp_path, text)
    assert set(problems) == {"kafka.group.id"}
    assert "duplicate key at line 6 (first at line 5)" in problems["kafka.group.id"]


def test_a_duplicate_top_level_section_is_an_error(tmp_path: Path) -> None:
    problems = _load_problems(tmp_path, MINIMAL_YAML + "moengage:\n  data_center: '01'\n")
    assert "duplicate key at line 11" in problems["moengage"]


def test_a_duplicate_key_in_a_flow_mapping_of_a_list_item_is_an_error(tmp_path: Path) -> None:
    text = MINIMAL_YAML.replace("customer_id: user_id}", "customer_id: a, customer_id: b}")
    problems = _load_problems(tmp_path, text)
    assert "duplicate key at line 10" in problems["topics[0].transform.mapping.customer_id"]


def test_the_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    assert len(ALIAS_BOMB.encode()) < 1000
    problems = _load_problems(tmp_path, ALIAS_BOMB)
    ((path, message),) = problems.items()
    assert path.startswith("x-lol.")
    assert "more than 100,000 values through YAML aliases" in message


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path) -> None:
    problems = _load_problems(tmp_path, MINIMAL_YAML + "x-loop: &loop [1, *loop]\n")
    assert problems == {"x-loop[1]": "a YAML alias refers to a value that contains it"}


@pytest.mark.parametrize("depth", [70, 5000])
def test_deep_nesting_is_refused(tmp_path: Path, depth: int) -> None:
    problems = _load_problems(tmp_path, MINIMAL_YAML + "x-deep: " + "[" * depth + "]" * depth)
    assert "nested" in " ".join(problems.values())


def test_anchors_aliases_and_merge_keys_within_the_budget_still_load(tmp_path: Path) -> None:
    text = """\
moengage: {base_url: "http://127.0.0.1:9"}
kafka: {bootstrap.servers: "127.0.0.1:1", group.id: g}
topics:
  - name: a
    format: json
    transform: &customers
      mapping: {type: customer, customer_id: user_id}
  - name: b
    format: json
    transform: *customers
pipeline:
  <<: {commit_interval_ms: 500, consume_batch_size: 10}
  commit_interval_ms: 2000
"""
    f = tmp_path / "c.yaml"
    f.write_text(text)
    s = load_settings(f, environ={})
    assert s.topics[0].transform == s.topics[1].transform
    assert (s.pipeline.commit_interval_ms, s.pipeline.consume_batch_size) == (2000, 10)


# ----- credentials: where they come from, what a problem says -------------------------------------


def _settings() -> Any:
    return parse_settings(minimal_raw(), base_dir=Path("."), environ={})


def _key_file_settings(path: Path) -> Any:
    raw = minimal_raw(moengage={"base_url": "http://127.0.0.1:9", "api_key_file": str(path)})
    return parse_settings(raw, base_dir=Path("."), environ={})


def _credential_problems(settings: Any, env: dict[str, str]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        resolve_credentials(settings, {"MOENGAGE_WORKSPACE_ID": "W", **env})
    return dict(info.value.problems)


def test_an_empty_api_key_file_says_so_and_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("\n")
    problems = _credential_problems(_key_file_settings(tmp_path / "key"), {})
    assert problems == {
        "moengage.api_key_file": f"{tmp_path / 'key'} (named by moengage.api_key_file) is empty"
    }


def test_an_empty_file_named_by_the_environment_says_so_and_names_it(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("")
    problems = _credential_problems(_settings(), {"MOENGAGE_API_KEY_FILE": str(tmp_path / "key")})
    message = problems["moengage.api_key"]
    assert message == f"{tmp_path / 'key'} (named by MOENGAGE_API_KEY_FILE) is empty"


def test_a_missing_key_file_names_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "key"
    problems = _credential_problems(_key_file_settings(missing), {})
    assert str(missing) in problems["moengage.api_key_file"]
    assert "No such file or directory" in problems["moengage.api_key_file"]


def test_a_missing_workspace_id_file_names_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "ws"
    with pytest.raises(ConfigError) as info:
        resolve_credentials(
            _settings(), {"MOENGAGE_WORKSPACE_ID_FILE": str(missing), "MOENGAGE_API_KEY": "K"}
        )
    assert str(missing) in dict(info.value.problems)["moengage.workspace_id"]


@pytest.mark.parametrize("raw", ["key-1234\n", "  key-1234\r\n", "\tkey-1234 \n\n"])
def test_a_key_from_the_environment_and_from_a_file_are_stripped_alike(
    tmp_path: Path, raw: str
) -> None:
    (tmp_path / "key").write_text(raw)
    from_file = resolve_credentials(
        _settings(), {"MOENGAGE_WORKSPACE_ID": "W", "MOENGAGE_API_KEY_FILE": str(tmp_path / "key")}
    )
    from_env = resolve_credentials(
        _settings(), {"MOENGAGE_WORKSPACE_ID": "W\n", "MOENGAGE_API_KEY": raw}
    )
    assert from_file.api_key.get_secret_value() == "key-1234"
    assert from_env.api_key.get_secret_value() == "key-1234"
    assert from_env.workspace_id == "W"


def test_a_blank_key_in_the_environment_is_reported_as_empty() -> None:
    problems = _credential_problems(_settings(), {"MOENGAGE_API_KEY": " \n"})
    assert problems == {"moengage.api_key": "MOENGAGE_API_KEY is set but empty"}


# ----- librdkafka properties ---------------------------------------------------------------------


def _kafka_problems(extra: dict[str, Any], dead_letters: bool = False) -> dict[str, str]:
    raw = minimal_raw(kafka={"bootstrap.servers": "127.0.0.1:1", "group.id": "g", **extra})
    if dead_letters:
        raw["topics"][0]["dead_letter_topic"] = "users.dlq"
    return dict(kafka_config_problems(parse_settings(raw, base_dir=Path("."), environ={})))


def test_a_valid_kafka_section_has_no_librdkafka_problems() -> None:
    profile = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "p",
        "client.id": "c",
    }
    assert _kafka_problems(profile, dead_letters=True) == {}


def test_a_misspelt_librdkafka_property_is_named_with_a_suggestion() -> None:
    problems = _kafka_problems({"sesion.timeout.ms": 45000})
    assert "unknown librdkafka property" in problems["kafka.sesion.timeout.ms"]
    assert "did you mean 'session.timeout.ms'?" in problems["kafka.sesion.timeout.ms"]


def test_a_bad_librdkafka_value_is_named_with_the_value() -> None:
    problems = _kafka_problems({"session.timeout.ms": "soon"})
    assert set(problems) == {"kafka.session.timeout.ms"}
    assert "invalid value 'soon'" in problems["kafka.session.timeout.ms"]


@pytest.mark.parametrize("key", ["sasl.mechanism", "sasl.mechanisms"])
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-999", "PLAINTEXT", "scram-sha-512"])
def test_an_unsupported_sasl_mechanism_is_named_at_the_key_the_user_wrote(
    key: str, mechanism: str
) -> None:
    sasl = {"security.protocol": "SASL_SSL", "sasl.username": "u", "sasl.password": "p"}
    problems = _kafka_problems({**sasl, key: mechanism})
    assert set(problems) == {f"kafka.{key}"}
    assert f"invalid value '{mechanism}'" in problems[f"kafka.{key}"]
    assert "use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512" in problems[f"kafka.{key}"]


def test_every_bad_librdkafka_property_is_listed_at_once() -> None:
    problems = _kafka_problems(
        {"sesion.timeout.ms": 1, "fetch.wait.max.ms": "later", "security.protocol": "tls"}
    )
    assert set(problems) == {
        "kafka.sesion.timeout.ms",
        "kafka.fetch.wait.max.ms",
        "kafka.security.protocol",
    }


def test_a_property_only_the_dead_letter_producer_refuses_is_named() -> None:
    extra = {"max.in.flight.requests.per.connection": 10}
    assert _kafka_problems(extra) == {}  # the consumer does not care
    problems = _kafka_problems(extra, dead_letters=True)
    assert "dead-letter producer" in problems["kafka.max.in.flight.requests.per.connection"]


def test_a_librdkafka_message_never_echoes_a_secret() -> None:
    # Contrived so that librdkafka quotes a secret: the mechanism is set to the password.
    problems = _kafka_problems(
        {
            "security.protocol": "SASL_SSL",
            "sasl.password": "pw-1f2e-secret",
            "sasl.mechanism": "pw-1f2e-secret",
        }
    )
    assert "kafka.sasl.mechanism" in problems
    assert "pw-1f2e-secret" not in " ".join(problems.values())


def test_the_librdkafka_check_contacts_no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    class Recording:
        def __init__(self, config: dict[str, Any]) -> None:
            seen.append(config)

        def close(self) -> None:
            pass

        def flush(self, timeout: float) -> int:
            return 0

    monkeypatch.setattr(clientconfig, "Consumer", Recording)
    monkeypatch.setattr(clientconfig, "Producer", Recording)
    assert _kafka_problems({}, dead_letters=True) == {}
    assert len(seen) == 2
    assert not [c for c in seen if "bootstrap.servers" in c]
    assert seen[0]["group.id"] == "g"  # the consumer's configuration, less the broker list
