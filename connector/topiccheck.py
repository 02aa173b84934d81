"""Each topic checked on its own, for ``validate`` when the whole configuration is invalid.

A shape error anywhere (a bad key in ``moengage``, a wrong type in one topic) stops the settings
from being built, and with them the check of every topic's schema file and transform import.
Here each topic that is valid on its own is checked inside neutral settings (a placeholder
endpoint and broker; the document's own Schema Registry and validation sections when they are
valid), so one ``validate`` run reports the import errors of every topic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from connector.config import (
    SchemaRegistrySettings,
    Settings,
    ValidationSettings,
    interpolate,
)
from connector.errors import ConfigError
from connector.processing import build_pipelines, schema_lookup
from connector.safeyaml import load_yaml

Problem = tuple[str, str]
_PLACEHOLDERS = {
    "moengage": {"base_url": "http://127.0.0.1:9"},
    "kafka": {"bootstrap.servers": "127.0.0.1:9", "group.id": "validate"},
}


class _Blank(dict[str, str]):
    """An environment in which every variable is set (to ""): missing ones are reported
    elsewhere, and must not hide a topic's own problems."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return ""


def each_topic_problems_in(path: str | Path, known: list[Problem]) -> list[Problem]:
    """:func:`each_topic_problems` of the configuration file at ``path``, less the ``known``
    problems; none if the file cannot be read as YAML (that is reported already)."""
    p = Path(path)
    try:
        raw = load_yaml(p.read_text(encoding="utf-8"), str(p))
    except Exception:  # noqa: BLE001 - unreadable or not YAML: already reported
        return []
    found = each_topic_problems(raw, p.parent.resolve(), os.environ)
    return [problem for problem in found if problem not in known]


def each_topic_problems(raw: Any, base_dir: Path, environ: Mapping[str, str]) -> list[Problem]:
    """The schema and transform problems of every topic that is valid on its own, at the topic's
    own key path (``topics[2].transform.function``)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("topics"), list):
        return []
    env = _Blank(environ)
    data = interpolate(raw, env)
    shared: dict[str, Any] = {}
    for key, model in (
        ("schema_registry", SchemaRegistrySettings),
        ("validation", ValidationSettings),
    ):
        try:
            if isinstance(data.get(key), dict):
                shared[key] = model.model_validate(data[key])
        except PydanticValidationError:
            continue
    problems: list[Problem] = []
    for i, topic in enumerate(data["topics"]):
        doc: dict[str, Any] = {**_PLACEHOLDERS, **shared, "topics": [topic], "base_dir": base_dir}
        if "schema_registry" not in doc:
            doc["schema_registry"] = {"url": "http://127.0.0.1:9"}  # never contacted here
        try:
            settings = Settings.model_validate(doc)
        except PydanticValidationError:
            continue  # its shape errors are reported with the whole configuration's
        try:
            build_pipelines(settings, schema_lookup(settings))
        except ConfigError as e:
            problems.extend((_at_index(path, i), message) for path, message in e.problems)
    return problems


def _at_index(path: str, index: int) -> str:
    """``topics[0]...`` (the topic alone) back at its place in the document."""
    if path.startswith("topics[0]"):
        return f"topics[{index}]" + path.removeprefix("topics[0]")
    return path
