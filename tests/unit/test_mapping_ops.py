"""The mapping's value operations, one by one, with their edge cases: a missing path, null, an
empty array, mixed types, decimal precision, times out of range."""

from __future__ import annotations

from typing import Any

import pytest

from connector.config import TransformSpec
from connector.errors import TransformError
from connector.transforms import Record, load_transform

ABSENT = object()


def value(spec: Any, record_value: Any, **record: Any) -> Any:
    """The attribute ``x`` that ``spec`` gives for ``record_value`` (ABSENT when none)."""
    raw = {"mapping": {"type": "customer", "customer_id": {"const": "u-1"}}}
    raw["mapping"]["attributes"] = {"fields": {"x": spec}}
    transform = load_transform(TransformSpec.model_validate(raw), key_path="topics[0].transform")
    r = Record("t", 0, 7, record.get("key", b"k-1"), record_value, (), record.get("ts"))
    (element,) = transform(r)
    return element["attributes"].get("x", ABSENT)


def fails(spec: Any, record_value: Any, rule: str) -> str:
    with pytest.raises(TransformError) as info:
        value(spec, record_value)
    assert info.value.rule == rule
    return str(info.value)


ORDER = {
    "status": "PLACED",
    "tz_minutes": 90,
    "customer": {"id": 7, "email": " Ann@Example.COM ", "address": {"city": "Paris"}},
    "items": [
        {"sku": "A-1", "qty": 2, "price": {"amount": 19.99, "currency": "EUR"}},
        {"sku": "B-2", "qty": 1, "price": {"amount": 0.01, "currency": "EUR"}},
        {"sku": "C-3", "qty": 3, "price": {"amount": 10.1, "currency": "EUR"}},
    ],
}


# ----- paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("customer.address.city", "Paris"),
        ("items[0].sku", "A-1"),
        ("items[2].price.currency", "EUR"),
        ("items[3].sku", ABSENT),  # past the end
        ("customer.address.zip", ABSENT),  # missing
        ("status.deeper", ABSENT),  # through a scalar
        ("customer[0]", ABSENT),  # an index into an object
    ],
)
def test_paths_reach_into_records_and_arrays(path: str, expected: Any) -> None:
    assert value(path, ORDER) == expected


def test_field_is_still_accepted_for_path() -> None:
    assert value({"field": "customer.address.city"}, ORDER) == "Paris"
    assert value({"field": "customer.address.zip", "default": "-"}, ORDER) == "-"


def test_pseudo_fields_and_defaults() -> None:
    assert value("$key", {}) == "k-1"
    assert value("$timestamp", {}, ts=1_700_000_000_123) == 1_700_000_000_123
    assert value({"path": "nope", "default": "n/a"}, {}) == "n/a"
    assert value({"path": "n", "default": 0}, {"n": None}) == 0


# ----- scale --------------------------------------------------------------------------------------


def test_scale_turns_minutes_into_seconds() -> None:
    assert value({"path": "tz_minutes", "scale": 60}, ORDER) == 5400
    assert value({"path": "tz_minutes", "scale": 60}, {"tz_minutes": -330}) == -19800


def test_scale_of_a_decimal_is_exact() -> None:
    assert value({"path": "p", "scale": 3}, {"p": 19.99}) == 59.97  # not 59.97000000000001
    assert value({"path": "p", "scale": 0.1, "decimals": "string"}, {"p": 3}) == "0.3"


def test_scale_of_missing_null_and_text() -> None:
    assert value({"path": "m", "scale": 60}, {}) is ABSENT
    assert value({"path": "m", "scale": 60, "default": 0}, {"m": None}) == 0
    assert "needs a number" in fails({"path": "m", "scale": 60}, {"m": "90"}, "mapping.type")
    fails({"path": "m", "scale": 60}, {"m": True}, "mapping.type")  # a boolean is no number


# ----- map ----------------------------------------------------------------------------------------


def test_map_with_a_default() -> None:
    spec = {"path": "status", "map": {"PLACED": "placed", "PAID": "paid"}, "default": "other"}
    assert value(spec, ORDER) == "placed"
    assert value(spec, {"status": "REFUNDED"}) == "other"
    assert value(spec, {}) == "other"


def test_map_without_a_default_keeps_unlisted_values() -> None:
    assert value({"path": "s", "map": {"A": "a"}}, {"s": "B"}) == "B"
    assert value({"path": "s", "map": {True: "yes"}}, {"s": True}) == "yes"
    assert value({"path": "s", "map": {1: "one"}}, {"s": 1}) == "one"
    fails({"path": "s", "map": {"A": "a"}}, {"s": ["A"]}, "mapping.type")


# ----- text ---------------------------------------------------------------------------------------


def test_trim_lower_upper() -> None:
    assert (
        value({"path": "customer.email", "trim": True, "lower": True}, ORDER) == "ann@example.com"
    )
    assert value({"path": "status", "upper": True}, {"status": "placed"}) == "PLACED"
    fails({"path": "n", "lower": True}, {"n": 5}, "mapping.type")


def test_to_string() -> None:
    assert value({"path": "n", "to": "string"}, {"n": 42}) == "42"
    assert value({"path": "n", "to": "string"}, {"n": 19.99}) == "19.99"
    assert value({"path": "n", "to": "string"}, {"n": False}) == "false"
    fails({"path": "n", "to": "string"}, {"n": {"a": 1}}, "mapping.type")


def test_to_number() -> None:
    assert value({"path": "n", "to": "number"}, {"n": " 42 "}) == 42
    assert value({"path": "n", "to": "number"}, {"n": "19.99"}) == 19.99
    assert value({"path": "n", "to": "number", "decimals": "string"}, {"n": "0.10"}) == "0.10"
    assert "cannot read" in fails({"path": "n", "to": "number"}, {"n": "abc"}, "mapping.type")
    fails({"path": "n", "to": "number"}, {"n": "NaN"}, "mapping.type")
    precise = "12345678901234567.89"  # more digits than a double holds
    assert "decimals: string" in fails(
        {"path": "n", "to": "number"}, {"n": precise}, "mapping.decimal_inexact"
    )
    assert value({"path": "n", "to": "number", "decimals": "string"}, {"n": precise}) == precise


@pytest.mark.parametrize("decimals", ["number", "string"])
@pytest.mark.parametrize("given", ["1e100000", "-1e-100000", "1e999999999999999999", "9" * 5000])
def test_to_number_of_an_absurd_exponent_is_bad_input(decimals: str, given: str) -> None:
    # A 9-byte text that means a 100,001-digit number: its exact text was sent (decimals:
    # string), and turning it into an int first took time quadratic in its digits (1e1000000
    # held the event loop for half a minute; 1e999999999999999999 never came back).
    spec = {"path": "n", "to": "number", "decimals": decimals}
    assert "over 1000 digits" in fails(spec, {"n": given}, "mapping.decimal_inexact")


# ----- times --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "seconds", "iso"),
    [
        ("2024-05-01T10:00:00Z", 1_714_557_600, "2024-05-01T10:00:00Z"),
        ("2024-05-01T12:00:00+02:00", 1_714_557_600, "2024-05-01T10:00:00Z"),
        ("2024-05-01T10:00:00.250Z", 1_714_557_600, "2024-05-01T10:00:00.250Z"),
        ("2024-05-01T00:00:00Z", 1_714_521_600, "2024-05-01T00:00:00Z"),  # an Avro date, decoded
        ("2024-05-01", 1_714_521_600, "2024-05-01T00:00:00Z"),
        (1_714_557_600, 1_714_557_600, "2024-05-01T10:00:00Z"),  # epoch seconds
        (1_714_557_600_250, 1_714_557_600, "2024-05-01T10:00:00.250Z"),  # epoch ms
        (1_714_557_600_000_001, 1_714_557_600, "2024-05-01T10:00:00.000001Z"),  # epoch us
        ("1714557600", 1_714_557_600, "2024-05-01T10:00:00Z"),
    ],
)
def test_timestamps_to_epoch_seconds_and_iso(given: Any, seconds: int, iso: str) -> None:
    assert value({"path": "t", "to": "epoch_seconds"}, {"t": given}) == seconds
    assert value({"path": "t", "to": "epoch_millis"}, {"t": given}) // 1000 == seconds
    assert value({"path": "t", "to": "iso8601"}, {"t": given}) == iso


def test_epoch_unit_can_be_given() -> None:
    assert value({"path": "t", "to": "iso8601", "unit": "ms"}, {"t": 0}) == "1970-01-01T00:00:00Z"
    assert value({"path": "t", "to": "epoch_seconds", "unit": "ms"}, {"t": 1500}) == 1
    assert value({"path": "$timestamp", "to": "epoch_seconds"}, {}, ts=1_714_557_600_999) == (
        1_714_557_600
    )


@pytest.mark.parametrize(
    "given", [10**20, -(10**20), 1e300, float("inf"), float("nan"), "9" * 30, 2**64 * 10**6]
)
def test_epoch_overflow_is_bad_input_not_a_crash(given: Any) -> None:
    for to in ("epoch_seconds", "epoch_millis", "iso8601"):
        assert "years 1 to 9999" in fails(
            {"path": "t", "to": to, "unit": "us"}, {"t": given}, "mapping.timestamp_range"
        )


@pytest.mark.parametrize("given", [1e300, "9" * 400, "9" * 5000, "-" + "9" * 5000])
def test_epoch_far_past_the_calendar_in_unit_auto_is_bad_input_named_so(given: Any) -> None:
    # 'auto' reads the unit from the magnitude: an integer past a double's range (or a digit
    # string past int()'s 4300-digit limit) was an OverflowError/ValueError (transform.raised).
    for to in ("epoch_seconds", "epoch_millis", "iso8601"):
        assert "years 1 to 9999" in fails(
            {"path": "t", "to": to}, {"t": given}, ("mapping.timestamp_range")
        )


def test_time_offsets_past_the_calendar_and_bad_text() -> None:
    fails(
        {"path": "t", "to": "epoch_seconds"},
        {"t": "0001-01-01T00:00:00+01:00"},
        "mapping.timestamp_range",
    )
    fails({"path": "t", "to": "epoch_seconds"}, {"t": "tomorrow"}, "mapping.timestamp_format")
    fails({"path": "t", "to": "epoch_seconds"}, {"t": [1]}, "mapping.type")
    assert value({"path": "t", "to": "epoch_seconds"}, {"t": None}) is ABSENT


# ----- aggregates ---------------------------------------------------------------------------------


def test_count_of_items_and_of_a_field() -> None:
    assert value({"count": "items"}, ORDER) == 3
    assert value({"count": "items", "of": "coupon"}, ORDER) == 0
    assert value({"count": "items"}, {"items": []}) == 0
    assert value({"count": "items"}, {}) is ABSENT
    assert value({"count": "items", "default": 0}, {"items": None}) == 0
    assert "an array" in fails({"count": "items"}, {"items": "abc"}, "mapping.type")


def test_sum_of_a_field_and_of_a_product_is_exact() -> None:
    assert value({"sum": "items", "of": "qty"}, ORDER) == 6
    total = {"sum": "items", "of": ["qty", "price.amount"]}
    assert value(total, ORDER) == 70.29  # 39.98 + 0.01 + 30.3, not 70.28999999999999
    assert value({**total, "decimals": "string"}, ORDER) == "70.29"
    assert value(total, {"items": []}) == 0
    assert value(total, {}) is ABSENT


def test_sum_skips_nulls_and_refuses_text() -> None:
    items = [{"qty": 1}, {"qty": None}, {}, {"qty": 2.5}]
    assert value({"sum": "items", "of": "qty"}, {"items": items}) == 3.5
    mixed = {"items": [{"qty": 1}, {"qty": "2"}]}
    assert "needs a number" in fails({"sum": "items", "of": "qty"}, mixed, "mapping.type")


def test_sum_past_a_double_is_an_error_or_exact_text() -> None:
    items = [{"a": 0.1}] * 3 + [{"a": 12345678901234567}]
    assert value({"sum": "items", "of": "a", "decimals": "string"}, {"items": items}) == (
        "12345678901234567.3"
    )
    fails({"sum": "items", "of": "a"}, {"items": items}, "mapping.decimal_inexact")


def test_sum_of_integers_stays_an_integer() -> None:
    big = [{"a": 2**62}, {"a": 2**62}]
    assert value({"sum": "items", "of": "a"}, {"items": big}) == 2**63


def test_min_and_max() -> None:
    assert value({"min": "items", "of": "price.amount"}, ORDER) == 0.01
    assert value({"max": "items", "of": "price.amount"}, ORDER) == 19.99
    assert value({"max": "items", "of": "qty", "decimals": "string"}, ORDER) == "3"
    assert value({"min": "items", "of": "qty"}, {"items": []}) is ABSENT
    fails({"min": "items", "of": "sku"}, ORDER, "mapping.type")


def test_first_and_join() -> None:
    assert value({"first": "items", "of": "sku"}, ORDER) == "A-1"
    assert value({"first": "tags"}, {"tags": [None, "b"]}) == "b"
    assert value({"first": "tags"}, {"tags": []}) is ABSENT
    assert value({"join": "items", "of": "sku", "separator": "|"}, ORDER) == "A-1|B-2|C-3"
    assert value({"join": "tags"}, {"tags": ["a", None, 3, True]}) == "a,3,true"
    assert value({"join": "tags"}, {"tags": []}) == ""
    fails({"join": "tags"}, {"tags": [{"a": 1}]}, "mapping.type")


# ----- coalesce and concat ------------------------------------------------------------------------


def test_coalesce_takes_the_first_present_value() -> None:
    spec = {"coalesce": ["nick", "customer.email", {"const": "anonymous"}]}
    assert value(spec, {"nick": None, "customer": {"email": "a@b"}}) == "a@b"
    assert value(spec, {}) == "anonymous"
    assert value({"coalesce": ["a", "b"]}, {}) is ABSENT


def test_concat_joins_text_and_skips_nulls() -> None:
    spec = {"concat": ["first", {"const": " "}, "last"]}
    assert value(spec, {"first": "Ann", "last": "Lee"}) == "Ann Lee"
    assert value(spec, {"first": "Ann"}) == "Ann "
    assert value({"concat": ["a", "b"]}, {"a": 1, "b": 2.5}) == "12.5"
    assert value({"concat": ["a", "b"]}, {}) is ABSENT
    fails({"concat": ["a"]}, {"a": [1]}, "mapping.type")


def test_operations_compose_in_their_fixed_order() -> None:
    spec = {"path": "s", "trim": True, "lower": True, "map": {"placed": 1}, "scale": 10}
    assert value(spec, {"s": " PLACED "}) == 10
    assert value({"count": "items", "to": "string"}, ORDER) == "3"


def test_decimals_string_always_gives_text() -> None:
    for spec in (
        {"path": "n", "scale": 60},
        {"path": "n", "to": "number"},
        {"sum": "items", "of": "n"},
        {"max": "items", "of": "n"},
    ):
        got = value({**spec, "decimals": "string"}, {"n": 2, "items": [{"n": 2}]})
        assert got in ("120", "2"), spec
