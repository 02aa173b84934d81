"""User-facing text cites MoEngage's documentation by page name ("Bulk Import API", "Data API
overview"), never the project's internal seed files, which users do not have: every string
literal in the package (log messages, errors, CLI output and help, settings descriptions), the
README, the shipped configuration examples and the Makefile, and the CLI's help as printed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from connector.cli import _parser
from connector.elements import _MESSAGES

ROOT = Path(__file__).resolve().parents[2]
SEED_CITATION = re.compile(
    r"\bseeds? ?0\d\d|shared/seeds|\(seed\b|\b00\d_[0-9a-f]{16}\b", re.IGNORECASE
)


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


USER_FILES = sorted(
    p
    for p in [*(ROOT / "config").rglob("*"), ROOT / "Makefile", ROOT / "Dockerfile"]
    if p.is_file()
)


@pytest.mark.parametrize("path", USER_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_shipped_example_or_build_file_cites_a_seed_file(path: Path) -> None:
    cited = [
        line for line in path.read_text(errors="replace").splitlines() if SEED_CITATION.search(line)
    ]
    assert cited == []


def test_no_command_help_cites_a_seed_file() -> None:
    parser = _parser()
    helps = [parser.format_help()]
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        helps.extend(sub.format_help() for sub in action.choices.values())
    assert len(helps) >= 6
    assert [h for h in helps if SEED_CITATION.search(h)] == []


def test_the_pattern_finds_what_it_guards_against() -> None:
    for text in ("(seed 001)", "see seed 003", "../shared/seeds", "003_8fa5a8de02d8c9d8.txt"):
        assert SEED_CITATION.search(text), text
    assert not SEED_CITATION.search("--seed 4 (of the injected failures)")


def test_validation_messages_name_moengage_pages() -> None:
    """The guard above is not vacuous: rule messages do cite MoEngage, by page name."""
    cited = [m for m in _MESSAGES.values() if "API" in m]
    assert len(cited) >= 10
