"""A recursive Avro schema's record nested 5,000 deep used to kill the process: fastavro reads in C,
recursively, and ran off the C stack (exit -11, SIGSEGV). Run in a child process, so that a crash
is a failed assertion here instead of the end of the test session."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys
    from fastavro import parse_schema
    from connector.errors import DecodeError
    from connector.source.decoding import _RawAvroDecoder

    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "v", "type": "long"}, {"name": "next", "type": ["null", "Node"]}],
    }
    depth = int(sys.argv[1])
    value = b"\\x00\\x02" * (depth - 1) + b"\\x00\\x00"  # by hand: fastavro's writer recurses too
    try:
        _RawAvroDecoder(parse_schema(node))(value)
    except DecodeError as e:
        print(e.stage, e.rule)
    else:
        print("decoded")
    """
)


def _decode_in_child(depth: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(depth)],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_record_nested_5000_deep_is_bad_input_not_a_segfault() -> None:
    done = _decode_in_child(5000)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["decode", "decode.too_deep"]


def test_the_child_decodes_a_shallow_record() -> None:
    done = _decode_in_child(3)
    assert (done.returncode, done.stdout.split()) == (0, ["decoded"])
