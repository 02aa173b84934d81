"""The command line's own contract, without running anything: every exit code the README lists is
in `run --help`, counts must be at least 1, and every sandbox option says what it does."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from connector.cli import _parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices[name]
    return parser


def test_run_help_names_every_exit_code_of_the_readme() -> None:
    table = README.read_text().split("Exit codes of `run`:", 1)[1].split("\n\n", 2)[1]
    codes = re.findall(r"^\| (\d) \|", table, re.MULTILINE)
    assert codes == [str(c) for c in range(8)]
    description = _subparser("run").description or ""
    for code in codes:
        assert re.search(rf"\b{code} [A-Za-z]", description), code


@pytest.mark.parametrize(
    "argv",
    [
        ["preview", "--config", "c.yaml", "--topic", "t", "--limit", "-1"],
        ["preview", "--config", "c.yaml", "--topic", "t", "--limit", "0"],
        ["verify", "--config", "c.yaml", "--sample", "0"],
        ["verify", "--config", "c.yaml", "--sample", "many"],
    ],
)
def test_counts_below_one_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "at least 1" in err or "is not a whole number" in err


def test_every_sandbox_option_says_what_it_does() -> None:
    options = [a for a in _subparser("sandbox")._actions if a.option_strings and a.dest != "help"]
    assert options
    assert [a.dest for a in options if not a.help] == []
