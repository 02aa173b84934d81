"""``validate`` checks every mapping's field paths against the topic's schema: local ``.avsc``
files, the Schema Registry's latest schema of the topic's subject, or (JSON) their form only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.cli import main
from connector.config import load_settings
from connector.devtools.servers import BackgroundApp
from connector.preflight import check_schemas
from connector.sandbox.registry import create_registry_app
from connector.source.topicschemas import TopicSchemas
from tests.unit.test_schemacheck import ORDERS

ROOT = Path(__file__).resolve().parents[2]
M = "topics[0].transform.mapping[0]"


def write_config(tmp_path: Path, topics: list[dict[str, Any]], registry: str | None = None) -> Path:
    (tmp_path / "orders.avsc").write_text(json.dumps(ORDERS))
    cfg: dict[str, Any] = {
        "moengage": {"base_url": "http://127.0.0.1:9"},
        "kafka": {"bootstrap.servers": "127.0.0.1:1", "group.id": "g"},
        "topics": topics,
    }
    if registry is not None:
        cfg["schema_registry"] = {"url": registry}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def orders_topic(mapping: dict[str, Any], name: str = "orders") -> dict[str, Any]:
    return {
        "name": name,
        "format": "avro",
        "schema": "orders.avsc",
        "transform": {"mapping": mapping},
    }


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["validate", "--config", str(path)])
    return code, capsys.readouterr().out.splitlines()


def errors(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("error: ")]


EVENT = {"type": "event", "customer_id": "customer.id", "action": {"const": "Order Placed"}}


# ----- the silent mistakes of a first mapping, each now an error with its fix ---------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"customer_id": "customer.idd"},
            f"error: {M}.customer_id: no field 'idd' in 'customer'; did you mean 'id'?",
        ),
        (
            {"current_time": "placed_att"},
            f"error: {M}.current_time: no field 'placed_att' at the top level of the record; "
            "did you mean 'placed_at'?",
        ),
        (
            {"attributes": {"from": "custmer"}},
            f"error: {M}.attributes.from: no field 'custmer' at the top level of the record; "
            "did you mean 'customer'?",
        ),
        (
            {"action": "Order Placed"},
            f'error: {M}.action: "Order Placed" is not a field path (dot-separated names; '
            "'name[N]' for an array item); for a fixed value write {const: \"Order Placed\"}",
        ),
    ],
    ids=["misspelled-nested-id", "misspelled-time", "misspelled-from", "bare-string-action"],
)
def test_a_silent_mistake_is_a_validate_error_naming_the_key_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], expected: str
) -> None:
    path = write_config(tmp_path, [orders_topic({**EVENT, **change})])
    code, lines = validate(path, capsys)
    assert code == 1
    assert errors(lines) == [expected]
    assert not any(": OK (" in line for line in lines)


def test_the_mapping_the_mistakes_were_made_in_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = {
        **EVENT,
        "current_time": "placed_at",
        "user_timezone_offset": "tz_minutes",
        "attributes": {"from": "customer", "include": ["email"], "rename": {"email": "mail"}},
    }
    code, lines = validate(write_config(tmp_path, [orders_topic(mapping)]), capsys)
    assert (code, errors(lines)) == (0, [])
    assert lines[-1].endswith(": OK (1 topic(s))")


def test_attribute_keys_not_in_the_from_record_are_named_with_the_closest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    attributes = {
        "from": "customer",
        "include": ["emial"],
        "drop": ["ID"],
        "rename": {"adress": "a"},
    }
    code, lines = validate(
        write_config(tmp_path, [orders_topic({**EVENT, "attributes": attributes})]), capsys
    )
    assert code == 1
    assert errors(lines) == [
        f"error: {M}.attributes.include[0]: no field 'emial' in 'customer'; did you mean 'email'?",
        f"error: {M}.attributes.drop[0]: no field 'ID' in 'customer'; fields there: id, email, "
        "address",
        f"error: {M}.attributes.rename.adress: no field 'adress' in 'customer'; did you mean "
        "'address'?",
    ]


def test_every_problem_of_every_topic_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = [
        orders_topic({**EVENT, "customer_id": "customer.idd", "current_time": "placed_att"}),
        {
            "name": "clicks",
            "format": "json",
            "transform": {"mapping": {"type": "event", "customer_id": "u", "action": "Clicked It"}},
        },
        orders_topic({"type": "customer", "customer_id": "$key"}, name="orders2"),
        {"name": "code", "format": "json", "transform": {"function": "json:loads"}},
    ]
    code, lines = validate(write_config(tmp_path, topics), capsys)
    assert code == 1
    assert [line.split(":")[1].strip() for line in errors(lines)] == [
        f"{M}.customer_id",
        f"{M}.current_time",
        "topics[1].transform.mapping[0].action",
    ]
    # JSON has no schema: said once, for the topic whose mapping was checked for form only
    notes = [line for line in lines if line.startswith("note: ")]
    assert notes == [
        "note: topics[1] (clicks): format 'json' has no schema: field paths are checked for "
        "their form only"
    ]


def test_a_path_the_transform_refuses_already_is_named_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, [orders_topic({**EVENT, "customer_id": "$offset"})])
    code, lines = validate(path, capsys)
    assert code == 1
    assert [line for line in errors(lines) if f"{M}.customer_id" in line] == [
        f"error: {M}.customer_id: unknown pseudo-field '$offset'; use $key, $timestamp or $topic"
    ]


# ----- schemas from the Schema Registry ---------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    app = BackgroundApp(create_registry_app()).start()
    with SchemaRegistryClient({"url": app.url}) as client:
        client.register_schema("orders-value", Schema(json.dumps(ORDERS), "AVRO"))
    yield app.url
    app.stop()


def confluent_topic(name: str, mapping: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "format": "confluent", "transform": {"mapping": mapping}}


def test_a_confluent_topic_is_checked_against_its_subjects_latest_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], registry: str
) -> None:
    topics = [confluent_topic("orders", {**EVENT, "customer_id": "customer.idd"})]
    code, lines = validate(write_config(tmp_path, topics, registry), capsys)
    assert code == 1
    assert errors(lines) == [
        f"error: {M}.customer_id: no field 'idd' in 'customer'; did you mean 'id'?"
    ]
    assert [line for line in lines if line.startswith("note: ")] == []


def test_a_subject_not_registered_is_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], registry: str
) -> None:
    topics = [confluent_topic("fresh", {**EVENT, "customer_id": "customer.idd"})]
    code, lines = validate(write_config(tmp_path, topics, registry), capsys)
    assert code == 0
    assert (
        "note: topics[0] (fresh): no schema is registered under subject 'fresh-value' yet: "
        "field paths are checked for their form only"
    ) in lines


def test_a_registry_out_of_reach_is_one_note_not_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = [
        confluent_topic("a", {**EVENT, "customer_id": "customer.idd"}),
        confluent_topic("b", {**EVENT, "action": "Still Checked"}),  # the form still is
    ]
    code, lines = validate(write_config(tmp_path, topics, "http://127.0.0.1:9"), capsys)
    assert code == 1
    assert errors(lines) == [
        'error: topics[1].transform.mapping[0].action: "Still Checked" is not a field path '
        "(dot-separated names; 'name[N]' for an array item); for a fixed value write "
        '{const: "Still Checked"}'
    ]
    (note,) = [line for line in lines if line.startswith("note: ")]
    assert note.startswith(
        "note: topics[0] (a), topics[1] (b): the Schema Registry at http://127.0.0.1:9 cannot be "
        "reached (ConnectError"
    )
    assert note.endswith("): field paths are checked for their form only")
    assert not any("Traceback" in line for line in lines)


class _DownRegistry:
    """A registry client whose every request fails as a refused connection does."""

    def __init__(self) -> None:
        self.calls = 0

    def get_latest_version(self, subject: str) -> Any:
        self.calls += 1
        raise ConnectionRefusedError("connection refused by 127.0.0.1:8081 for user:hunter2")


def test_a_registry_out_of_reach_is_asked_once_and_its_secrets_stay_out_of_the_note(
    tmp_path: Path,
) -> None:
    topics = [confluent_topic(n, EVENT) for n in ("a", "b", "c")]
    path = write_config(tmp_path, topics, "http://127.0.0.1:8081")
    cfg = yaml.safe_load(path.read_text())
    cfg["schema_registry"]["properties"] = {"basic.auth.user.info": "user:hunter2"}
    path.write_text(yaml.safe_dump(cfg))
    settings = load_settings(path)
    down = _DownRegistry()
    result = check_schemas(settings, schemas=TopicSchemas(settings, client=down))
    assert down.calls == 1
    (note,) = result.notes
    assert "hunter2" not in note
    assert note.startswith("topics[0] (a), topics[1] (b), topics[2] (c): the Schema Registry at ")


# ----- the shipped configurations ---------------------------------------------------------------


def _shipped() -> list[tuple[str, dict[str, str]]]:
    found = [
        (p.name, {"config.yaml": p.read_text()}) for p in sorted((ROOT / "config").glob("*.yaml"))
    ]
    for manifest in sorted((ROOT / "config" / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(manifest.read_text()):
            if doc and doc.get("kind") == "ConfigMap":
                found.append((manifest.name, dict(doc["data"])))  # every key is a mounted file
    return found


@pytest.mark.parametrize(("name", "files"), _shipped(), ids=[n for n, _ in _shipped()])
def test_every_shipped_configuration_still_validates(
    name: str,
    files: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var, value in {
        "KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "KAFKA_USERNAME": "u",
        "KAFKA_PASSWORD": "p",
        "SCHEMA_REGISTRY_URL": "http://127.0.0.1:9",  # out of reach: a note, at once
        "SCHEMA_REGISTRY_USER_INFO": "key:placeholder",
        "HOSTNAME": "pod-0",
    }.items():
        monkeypatch.setenv(var, value)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (tmp_path / "schemas").symlink_to(ROOT / "schemas")  # the demo's '../schemas/*.avsc'
    for file_name, text in files.items():
        (config_dir / file_name).write_text(text)
    path = config_dir / "config.yaml"
    code, lines = validate(path, capsys)
    assert (code, errors(lines)) == (0, [])
    assert lines[-1].endswith(" topic(s))")
