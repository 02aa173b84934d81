"""Every configuration key is documented: each field of the settings models appears in the
README's configuration reference, in the table of its section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from connector.catalogue.settings import CatalogueSettings
from connector.config import (
    AttributesSpec,
    ElementSpec,
    LoggingSettings,
    MoEngageSettings,
    ObservabilitySettings,
    PipelineSettings,
    SchemaRegistrySettings,
    Settings,
    TopicSpec,
    TransformSpec,
    ValidationSettings,
    ValueSpec,
)
from connector.configcheck import valid_keys

README = Path(__file__).resolve().parents[2] / "README.md"

# Each model, and the README heading whose tables list its keys.
SECTIONS: list[tuple[type[BaseModel], str]] = [
    (MoEngageSettings, "### `moengage`"),
    (SchemaRegistrySettings, "### `schema_registry`"),
    (TopicSpec, "### `topics` (a list)"),
    (TransformSpec, "### `transform`"),
    (ElementSpec, "### `transform.mapping` — no code"),
    (AttributesSpec, "### `transform.mapping` — no code"),
    (ValueSpec, "### `transform.mapping` — no code"),
    (PipelineSettings, "### `pipeline`"),
    (ValidationSettings, "### `validation`"),
    (ObservabilitySettings, "### `observability`"),
    (LoggingSettings, "### `logging`"),
    (CatalogueSettings, "### `catalogue`"),
]


def _reference() -> str:
    text = README.read_text()
    start = text.index("## Configuration reference")
    return text[start : text.index("\n## ", start + 1)]


def _section(heading: str) -> str:
    text = _reference()
    start = text.index(heading + "\n")
    end = text.find("\n### ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def _table_keys(section: str) -> set[str]:
    """The keys named in the first column of the section's tables (`a` / `b` names two)."""
    keys: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            keys.update(re.findall(r"`([^`]+)`", first))
    return keys


@pytest.mark.parametrize(("model", "heading"), SECTIONS, ids=lambda x: getattr(x, "__name__", x))
def test_every_key_of_a_section_is_in_its_readme_table(
    model: type[BaseModel], heading: str
) -> None:
    missing = set(valid_keys(model)) - _table_keys(_section(heading))
    assert missing == set()


def test_every_top_level_section_has_its_heading() -> None:
    reference = _reference()
    missing = [k for k in valid_keys(Settings) if f"### `{k}`" not in reference]
    assert missing == []


def test_the_check_reads_the_tables() -> None:
    """Not vacuous: a key that is not in the README is found missing."""
    assert "linger_ms" in _table_keys(_section("### `moengage`"))
    assert "no_such_key" not in _table_keys(_section("### `moengage`"))
