"""The mapping's structure: attributes from nested paths (``fields``), ``flatten``, ``when``
filters, ``then`` functions, the configuration errors a path in the wrong key raises, and the
paths a mapping reads (``path_uses``) for the schema check."""

from __future__ import annotations

from typing import Any

import pytest

from connector.config import TransformSpec, parse_settings
from connector.errors import ConfigError, TransformError
from connector.mappingspec import ElementSpec
from connector.transforms import Record, load_transform
from connector.transforms.pathuse import PathUse
from connector.transforms.uses import path_uses
from tests.unit.configs import minimal_raw

THEN = "tests.unit.then_steps"
ORDER = {
    "order_id": "o-1",
    "status": "PLACED",
    "customer": {"id": 7, "email": "ann@example.com", "address": {"city": "Paris", "zip": None}},
    "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
    "prefs": {"lang": "fr", "push": {"on": True, "hour": 9}},
}


def run(*elements: dict[str, Any], value: Any = ORDER) -> list[dict[str, Any]]:
    spec = TransformSpec.model_validate({"mapping": list(elements)})
    transform = load_transform(spec, key_path="topics[0].transform")
    return transform(Record("orders", 0, 42, b"k", value, (), 1_700_000_000_000))


def problems(mapping: dict[str, Any]) -> list[tuple[str, str]]:
    raw = minimal_raw()
    raw["topics"][0]["transform"] = {"mapping": mapping}
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, base_dir=".", environ={})  # type: ignore[arg-type]
    return info.value.problems


CUSTOMER = {"type": "customer", "customer_id": "customer.id"}


# ----- fields -------------------------------------------------------------------------------------


def test_fields_set_attributes_from_nested_paths_only() -> None:
    fields = {"email": "customer.email", "city": "customer.address.city", "sku": "items[1].sku"}
    (element,) = run({**CUSTOMER, "attributes": {"fields": fields}})
    assert element == {
        "type": "customer",
        "customer_id": "7",
        "attributes": {"email": "ann@example.com", "city": "Paris", "sku": "B-2"},
    }


def test_fields_skip_nulls_unless_told() -> None:
    fields = {"zip": "customer.address.zip", "city": "customer.address.city"}
    (skipped,) = run({**CUSTOMER, "attributes": {"fields": fields}})
    assert skipped["attributes"] == {"city": "Paris"}
    (kept,) = run({**CUSTOMER, "attributes": {"fields": fields, "skip_nulls": False}})
    assert kept["attributes"] == {"zip": None, "city": "Paris"}


def test_fields_next_to_copied_keys_and_constants() -> None:
    attrs = {
        "drop": ["items", "prefs"],
        "fields": {"email": "customer.email"},
        "constants": {"s": 1},
    }
    (element,) = run({**CUSTOMER, "attributes": attrs})
    # customer is used by customer_id, so it is left out of the copied top level
    assert element["attributes"] == {
        "order_id": "o-1",
        "status": "PLACED",
        "email": "ann@example.com",
        "s": 1,
    }


def test_from_takes_a_nested_path_with_an_index() -> None:
    (element,) = run({**CUSTOMER, "attributes": {"from": "items[0]"}})
    assert element["attributes"] == {"sku": "A-1", "qty": 2}


def test_dotted_value_paths_are_left_out_of_the_top_level_by_their_first_name() -> None:
    (element,) = run({"type": "customer", "customer_id": {"path": "customer.id", "to": "string"}})
    assert "customer" not in element["attributes"]
    assert element["customer_id"] == "7"


# ----- flatten ------------------------------------------------------------------------------------


def test_flatten_with_the_default_prefix() -> None:
    (element,) = run({**CUSTOMER, "attributes": {"flatten": {"path": "prefs"}}})
    assert element["attributes"] == {
        "prefs_lang": "fr",
        "prefs_push_on": True,
        "prefs_push_hour": 9,
    }


def test_flatten_with_prefix_separator_and_depth() -> None:
    flat = {"path": "prefs", "prefix": "p.", "separator": ".", "max_depth": 1}
    (element,) = run({**CUSTOMER, "attributes": {"flatten": [flat]}})
    assert element["attributes"] == {"p.lang": "fr", "p.push": {"on": True, "hour": 9}}


def test_flatten_of_a_missing_map_and_of_a_scalar() -> None:
    (element,) = run({**CUSTOMER, "attributes": {"flatten": {"path": "nope"}}})
    assert element["attributes"] == {}
    with pytest.raises(TransformError) as info:
        run({**CUSTOMER, "attributes": {"flatten": {"path": "status"}}})
    assert info.value.rule == "mapping.type"


# ----- configuration errors -----------------------------------------------------------------------


def test_a_dotted_include_is_a_configuration_error_naming_fields() -> None:
    ((where, problem),) = problems({**CUSTOMER, "attributes": {"include": ["customer.email"]}})
    assert where == "topics[0].transform.mapping[0].attributes.include"
    assert "item 0 'customer.email' is a path" in problem
    assert "fields: {name: path}" in problem
    assert "flatten" in problem


def test_dotted_include_drop_and_rename_are_each_reported() -> None:
    attrs = {"include": ["a.b"], "drop": ["items[0]"], "rename": {"c.d": "e"}}
    where = [w for w, _ in problems({**CUSTOMER, "attributes": attrs})]
    assert where == [
        f"topics[0].transform.mapping[0].attributes.{k}" for k in ("include", "drop", "rename")
    ]


def test_a_dotted_rename_key_is_a_configuration_error_naming_fields() -> None:
    attrs = {"rename": {"customer.email": "email"}}
    ((where, problem),) = problems({**CUSTOMER, "attributes": attrs})
    assert where == "topics[0].transform.mapping[0].attributes.rename"
    assert "key 'customer.email' is a path" in problem
    assert "fields: {email: customer.email}" in problem


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a..b", "empty segment"),
        ("a[x]", "is not 'name' or 'name[N]'"),
        ("a[-1]", "is not 'name' or 'name[N]'"),
        ("$key.x", "unknown pseudo-field"),
        ("$offset", "unknown pseudo-field"),
    ],
)
def test_paths_outside_the_grammar_are_configuration_errors(value: str, message: str) -> None:
    spec = TransformSpec.model_validate({"mapping": {"type": "customer", "customer_id": value}})
    with pytest.raises(ConfigError) as info:
        load_transform(spec, key_path="topics[0].transform")
    ((where, problem),) = info.value.problems
    assert where == "topics[0].transform.mapping[0].customer_id"
    assert message in problem


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"path": "a", "const": 1}, "exactly one source"),
        ({"sum": "items"}, "'sum' needs 'of'"),
        ({"path": "a", "of": "b"}, "'of' only applies"),
        ({"count": "items", "of": ["a", "b"]}, "for 'sum' only"),
        ({"path": "a", "to": "date"}, "Input should be"),
    ],
)
def test_malformed_values_are_reported_at_load(value: dict[str, Any], message: str) -> None:
    ((where, problem),) = problems({**CUSTOMER, "attributes": {"fields": {"x": value}}})
    assert where.startswith("topics[0].transform.mapping[0].attributes.fields.x")
    assert message in problem


# ----- when ---------------------------------------------------------------------------------------


EVENT = {"type": "event", "customer_id": "customer.id", "action": {"const": "Order Placed"}}


@pytest.mark.parametrize(
    ("when", "produced"),
    [
        ({"path": "status", "equals": "PLACED"}, True),
        ({"path": "status", "equals": "PAID"}, False),
        ({"path": "status", "in": ["PAID", "PLACED"]}, True),
        ({"path": "customer.address.zip", "exists": True}, False),
        ({"path": "customer.address.zip", "exists": False}, True),
        ({"path": "customer.address.zip", "equals": None}, True),
        ({"path": "prefs.push.on", "equals": 1}, False),  # a boolean equals only a boolean
        ({"path": "prefs.push.hour", "in": [9, 10]}, True),
        ({"not": {"path": "status", "equals": "PLACED"}}, False),
        ([{"path": "status", "equals": "PLACED"}, {"path": "items[1]", "exists": True}], True),
        ({"any": [{"path": "status", "equals": "X"}, {"path": "order_id", "exists": True}]}, True),
    ],
)
def test_when_decides_whether_the_element_is_made(when: Any, produced: bool) -> None:
    assert len(run({**EVENT, "when": when})) == int(produced)


def test_a_discriminator_picks_the_element_type() -> None:
    elements = run(
        {**EVENT, "when": {"path": "status", "equals": "PLACED"}},
        {**CUSTOMER, "when": {"path": "status", "equals": "SIGNUP"}},
    )
    assert [e["type"] for e in elements] == ["event"]


def test_a_record_no_element_is_made_for_yields_no_elements() -> None:
    assert run({**EVENT, "when": {"path": "status", "equals": "CANCELLED"}}) == []


def test_malformed_when_is_reported_at_load() -> None:
    ((where, problem),) = problems({**CUSTOMER, "when": {"path": "s"}})
    assert where == "topics[0].transform.mapping[0].when"
    assert "exactly one of 'equals', 'in' or 'exists'" in problem


# ----- then ---------------------------------------------------------------------------------------


def test_then_gets_the_element_and_the_record() -> None:
    (element,) = run({**CUSTOMER, "attributes": {"include": []}, "then": f"{THEN}:add_offset"})
    assert element["attributes"] == {"kafka_offset": 42}


def test_then_may_drop_or_split_the_element() -> None:
    assert run({**CUSTOMER, "then": f"{THEN}:drop_it"}) == []
    assert [e["customer_id"] for e in run({**CUSTOMER, "then": f"{THEN}:split"})] == [
        "7",
        "other-1",
    ]


def test_then_is_not_called_for_a_filtered_record() -> None:
    when = {"path": "status", "equals": "NO"}
    assert run({**CUSTOMER, "when": when, "then": f"{THEN}:boom"}) == []


def test_what_then_returns_or_raises_is_bad_input() -> None:
    with pytest.raises(TransformError) as info:
        run({**CUSTOMER, "then": f"{THEN}:junk"})
    assert info.value.rule == "transform.output"
    with pytest.raises(TransformError) as info:
        run({**CUSTOMER, "then": f"{THEN}:boom"})
    assert info.value.rule == "transform.raised"
    assert "'then' tests.unit.then_steps:boom raised KeyError" in str(info.value)


@pytest.mark.parametrize(
    ("then", "message"),
    [(f"{THEN}:missing", "has no attribute"), (f"{THEN}:NOT_CALLABLE", "not a function")],
)
def test_a_then_that_cannot_be_loaded_is_a_configuration_error(then: str, message: str) -> None:
    spec = TransformSpec.model_validate({"mapping": {**CUSTOMER, "then": then}})
    with pytest.raises(ConfigError) as info:
        load_transform(spec, key_path="topics[0].transform")
    ((where, problem),) = info.value.problems
    assert where == "topics[0].transform.mapping[0].then"
    assert message in problem


# ----- path_uses ----------------------------------------------------------------------------------


def test_path_uses_lists_every_path_with_what_it_needs() -> None:
    spec = ElementSpec.model_validate(
        {
            "type": "event",
            "when": {"path": "status", "in": ["PLACED"]},
            "customer_id": "customer.id",
            "action": {"path": "status", "map": {"PLACED": "Order Placed"}},
            "current_time": "placed_at",
            "user_timezone_offset": {"path": "tz_minutes", "scale": 60},
            "attributes": {
                "from": "extra",
                "include": ["a"],
                "rename": {"b": "bee"},
                "flatten": {"path": "prefs"},
                "fields": {
                    "n": {"count": "items"},
                    "total": {"sum": "items", "of": ["qty", "price.amount"]},
                    "ts": {"path": "$timestamp", "to": "iso8601"},
                    "who": {"coalesce": ["nick", {"path": "email", "lower": True}]},
                },
            },
        }
    )
    m = "topics[0].transform.mapping[0]"
    assert path_uses(spec, m) == [
        PathUse(f"{m}.when.path", "status", "scalar"),
        PathUse(f"{m}.customer_id", "customer.id", "scalar"),
        PathUse(f"{m}.action", "status", "scalar"),
        PathUse(f"{m}.current_time", "placed_at", "timestamp"),
        PathUse(f"{m}.user_timezone_offset", "tz_minutes", "number"),
        PathUse(f"{m}.attributes.from", "extra", "object"),
        PathUse(f"{m}.attributes.include[0]", "extra.a", "any"),
        PathUse(f"{m}.attributes.rename.b", "extra.b", "any"),
        PathUse(f"{m}.attributes.flatten[0].path", "prefs", "object"),
        PathUse(f"{m}.attributes.fields.n.count", "items", "array"),
        PathUse(f"{m}.attributes.fields.total.sum", "items", "array"),
        PathUse(f"{m}.attributes.fields.total.of[0]", "qty", "number", "items"),
        PathUse(f"{m}.attributes.fields.total.of[1]", "price.amount", "number", "items"),
        PathUse(f"{m}.attributes.fields.ts", "$timestamp", "timestamp"),
        PathUse(f"{m}.attributes.fields.who.coalesce[0]", "nick", "any"),
        PathUse(f"{m}.attributes.fields.who.coalesce[1]", "email", "string"),
    ]


def test_a_missing_coalesced_identity_names_every_path_tried() -> None:
    spec = {"type": "customer", "customer_id": {"coalesce": ["customer.uid", "customer.login"]}}
    with pytest.raises(TransformError) as info:
        run(spec)
    assert info.value.rule == "mapping.missing_field"
    assert "'customer.uid', 'customer.login'" in str(info.value)
