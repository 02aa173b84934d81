"""User-facing text cites MoEngage's documentation by page name ("Bulk Import API", "Data API
overview"), never the project's internal seed files, which users do not have: every string
literal in the package (messages, CLI output, settings descriptions) and the README."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from connector.elements import _MESSAGES

ROOT = Path(__file__).resolve().parents[2]
SEED_CITATION = re.compile(r"\bseeds? ?0\d\d|shared/seeds|\(seed\b", re.IGNORECASE)


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """Every string constant of a module except docstrings (internal notes for developers)."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "connector").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_string_in_the_package_cites_a_seed_file(path: Path) -> None:
    cited = [(line, text) for line, text in _string_literals(path) if SEED_CITATION.search(text)]
    assert cited == []


def test_the_readme_cites_no_seed_file() -> None:
    cited = [
        line for line in (ROOT / "README.md").read_text().splitlines() if SEED_CITATION.search(line)
    ]
    assert cited == []


def test_validation_messages_name_moengage_pages() -> None:
    """The guard above is not vacuous: rule messages do cite MoEngage, by page name."""
    cited = [m for m in _MESSAGES.values() if "API" in m]
    assert len(cited) >= 10
