"""The re-drive's reading of dead-letter records and its options (no broker: see
tests/integration/test_redrive.py for the whole command)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from connector.deadletter import error_headers
from connector.errors import RecordRef, ValidationError
from connector.redrive import Letter, Options, Redrive, Summary, group_id, parse_since, read_letter


class DeadLetterMessage:
    """What a consumer hands back for a dead-letter record."""

    def __init__(self, headers: list[tuple[str, bytes]]) -> None:
        self._headers = headers

    def key(self) -> bytes:
        return b"c-1"

    def value(self) -> bytes:
        return b'{"id": "c-1"}'

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_767_225_600_000)


def written(rule: str = "customer_id.disallowed", **extra: bytes) -> DeadLetterMessage:
    """A record as the dead-letter writer wrote it: original headers first, then ours."""
    err = ValidationError("customer_id 'null' is a value MoEngage disallows", rule=rule)
    err.at(RecordRef("users", 2, 1041))
    when = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    headers = [("origin", b"crm"), *error_headers(err, when), *extra.items()]
    return DeadLetterMessage(headers)


def test_the_original_is_rebuilt_from_the_headers_without_the_connector_s_own() -> None:
    letter = read_letter(written())  # type: ignore[arg-type]
    assert letter.rule == "customer_id.disallowed"
    assert letter.time == dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    original = letter.original
    assert original is not None
    assert original.source == RecordRef("users", 2, 1041)
    assert (original.topic(), original.partition(), original.offset()) == ("users", 2, 1041)
    assert original.headers() == [("origin", b"crm")]
    assert (original.key(), original.value()) == (b"c-1", b'{"id": "c-1"}')
    assert original.timestamp() == (1, 1_767_225_600_000)


def test_a_truncated_value_or_missing_coordinates_cannot_be_redriven() -> None:
    cut = read_letter(written(**{"moengage.value.truncated": b"true"}))  # type: ignore[arg-type]
    assert cut.original is None
    assert cut.problem == "its value was truncated when dead-lettered"
    bare = read_letter(DeadLetterMessage([("moengage.error.rule", b"x")]))  # type: ignore[arg-type]
    assert bare.original is None
    assert bare.problem == "no source coordinates in its headers"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00:00Z", dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)),
        ("2026-12-01T11:00:00+01:00", dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)),
        ("2026-12-01", dt.datetime(2026, 12, 1, tzinfo=dt.UTC)),
        ("1764583200", dt.datetime(2025, 12, 1, 10, tzinfo=dt.UTC)),
    ],
)
def test_since_takes_iso_8601_with_a_zone_a_date_or_epoch_seconds(
    text: str, expected: dt.datetime
) -> None:
    assert parse_since(text) == expected


def test_since_refuses_a_time_without_a_zone() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        parse_since("2026-12-01T10:00:00")


def _selects(opt: Options, letter: Letter) -> bool:
    redrive: Any = object.__new__(Redrive)  # only the options matter here
    redrive.opt = opt
    return bool(redrive._selected(letter))


def test_rule_patterns_and_since_select_records() -> None:
    at = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
    letter = Letter("send.persistent_server_error", at, None)
    assert _selects(Options("dlq"), letter)
    assert _selects(Options("dlq", rule="send.*"), letter)
    assert not _selects(Options("dlq", rule="mapping.*"), letter)
    assert _selects(Options("dlq", since=at), letter)
    assert not _selects(Options("dlq", since=at + dt.timedelta(seconds=1)), letter)
    assert not _selects(Options("dlq", since=at), Letter("x", None, None))  # no time: not since


def test_the_summary_counts_by_rule_and_fails_when_something_still_fails() -> None:
    summary = Summary(read=5, delivered=3, passed_over=1)
    assert summary.exit_code == 0
    summary.still_failing["validate/customer_id.disallowed"] += 1
    text = summary.render("users-dlq", dry_run=False, to="users-dlq-2")
    assert "still failing (written to users-dlq-2): 1" in text
    assert "validate/customer_id.disallowed: 1" in text
    assert f"committed for group {group_id('users-dlq')}: nothing new" in text
    assert summary.exit_code == 1


def test_the_group_is_named_from_the_dead_letter_topic() -> None:
    assert group_id("users-dlq") == "moengage-connector-redrive.users-dlq"
