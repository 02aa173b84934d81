"""Field paths checked against an Avro schema: resolution, types, form, and the messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connector.config import ElementSpec
from connector.source.decoding import load_schema_file
from connector.transforms.pathuse import PathUse, Want
from connector.transforms.schemacheck import Problem, check_paths, parse_path, path_uses

DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}
ORDERS: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "order_id", "type": {"type": "string", "logicalType": "uuid"}},
        {
            "name": "customer",
            "type": {
                "type": "record",
                "name": "Customer",
                "fields": [
                    {"name": "id", "type": "string"},
                    {"name": "email", "type": ["null", "string"]},
                    {
                        "name": "address",
                        "type": [
                            "null",
                            {
                                "type": "record",
                                "name": "Address",
                                "fields": [{"name": "city", "type": "string"}],
                            },
                        ],
                    },
                ],
            },
        },
        {
            "name": "items",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Item",
                    "fields": [
                        {"name": "sku", "type": "string"},
                        {"name": "qty", "type": "int"},
                        {
                            "name": "price",
                            "type": {
                                "type": "record",
                                "name": "Price",
                                "fields": [
                                    {"name": "amount", "type": DECIMAL},
                                    {"name": "currency", "type": "string"},
                                ],
                            },
                        },
                    ],
                },
            },
        },
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["PLACED"]}},
        {"name": "tz_minutes", "type": "int"},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at_time", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "epoch", "type": "double"},
        {"name": "billing", "type": ["null", "Customer"]},  # a named type, by its short name
        {"name": "shipping", "type": ["null", "shop.Address"]},  # and by its full name
        {"name": "prefs", "type": {"type": "map", "values": ["null", "string", "long"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "grid", "type": {"type": "array", "items": {"type": "array", "items": "Item"}}},
        {
            "name": "payment",
            "type": [
                "null",
                {"type": "record", "name": "Card", "fields": [{"name": "last4", "type": "string"}]},
                {"type": "record", "name": "Bank", "fields": [{"name": "iban", "type": "string"}]},
            ],
        },
        {"name": "score", "type": ["null", "string", "double"]},
        {"name": "vip", "type": "boolean"},
    ],
}


@pytest.fixture(params=["raw", "fastavro"])
def orders(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The schema as its JSON, and as fastavro parses it (full names, ``__named_schemas``)."""
    if request.param == "raw":
        return ORDERS
    path = tmp_path / "orders.avsc"
    path.write_text(json.dumps(ORDERS))
    return load_schema_file(path, key_path="schema")


def use(path: str, want: Want = "any", item_of: str | None = None, where: str = "k") -> PathUse:
    return PathUse(where, path, want, item_of)


def one(schema: Any, u: PathUse) -> Problem:
    (problem,) = check_paths(schema, [u])
    return problem


# ----- resolution ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "order_id",
        "customer.id",
        "customer.email",  # ["null", string]
        "customer.address.city",  # through a nullable record
        "billing.address.city",  # a named type referenced by short name
        "shipping.city",  # ... and by full name
        "items[0].price.amount",
        "grid[1][0].sku",  # an array of arrays
        "prefs.any_key_at_all",  # a map takes any key
        "payment.iban",  # valid in one branch of a union
        "payment.last4",
        "$key",
        "$timestamp",
        "$topic",
    ],
)
def test_valid_paths_resolve(orders: Any, path: str) -> None:
    assert check_paths(orders, [use(path)]) == []


def test_a_misspelled_nested_name_is_named_with_the_closest_names_at_its_level(orders: Any) -> None:
    problem = one(orders, use("customer.address.ctiy", where="topics[0].x"))
    assert problem.where == "topics[0].x"
    assert problem.name == "ctiy"
    assert problem.closest == ("city",)
    assert problem.message == "no field 'ctiy' in 'customer.address'; did you mean 'city'?"


def test_without_a_close_name_the_names_of_the_level_are_listed(orders: Any) -> None:
    problem = one(orders, use("customer.zzz"))
    assert problem.closest == ()
    assert problem.message == "no field 'zzz' in 'customer'; fields there: id, email, address"


def test_a_union_of_records_offers_the_names_of_every_branch(orders: Any) -> None:
    problem = one(orders, use("payment.iben"))
    assert problem.closest == ("iban",)
    assert "fields there" not in problem.message


def test_a_field_of_an_array_needs_an_index(orders: Any) -> None:
    problem = one(orders, use("items.sku"))
    assert problem.name == "sku"
    assert problem.message == (
        "'items' is an array of record 'Item', with no field 'sku'; "
        "to read an item write 'items[0].sku'"
    )


def test_an_index_into_what_is_no_array_is_refused(orders: Any) -> None:
    assert one(orders, use("tz_minutes[0]")).message == "'tz_minutes' is an int, not an array"
    assert one(orders, use("items[0][0]")).message == (
        "'items[0]' is a record 'Item', not an array"
    )


def test_a_field_of_a_scalar_is_refused(orders: Any) -> None:
    assert one(orders, use("prefs.lang.code")).message == (
        "'prefs.lang' is a string or a long, with no field 'code'"
    )


def test_paths_relative_to_each_item_of_an_array(orders: Any) -> None:
    ok = [use("sku", "string", "items"), use("price.amount", "number", "items")]
    assert check_paths(orders, ok) == []
    assert check_paths(orders, [use("sku", "string", "grid[0]")]) == []
    problem = one(orders, use("price.amuont", "number", "items"))
    assert problem.message == "no field 'amuont' in 'items[].price'; did you mean 'amount'?"


def test_item_of_must_resolve_to_an_array(orders: Any) -> None:
    assert one(orders, use("sku", "any", "customer")).message == (
        "'customer' is a record 'Customer', not an array; its items cannot be read"
    )
    assert one(orders, use("sku", "any", "itmes")).closest == ("items",)


def test_a_recursive_schema_resolves_without_looping() -> None:
    linked = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "value", "type": "int"}, {"name": "next", "type": ["null", "Node"]}],
    }
    assert check_paths(linked, [use("next.next.next.value", "number")]) == []
    assert one(linked, use("next.next.vale")).closest == ("value",)


def test_a_name_the_schema_does_not_define_lets_anything_through() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "elsewhere.T"}]}
    assert check_paths(schema, [use("x.y.z", "number")]) == []


def test_uses_below_a_bad_name_are_reported_once() -> None:
    uses = [
        use("custmer", "object", where="a.from"),
        use("custmer.email", where="a.include[0]"),
        use("custmer.id", where="a.include[1]"),
    ]
    problems = check_paths(ORDERS, uses)
    assert [p.where for p in problems] == ["a.from"]


# ----- types -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("tz_minutes", "number"),
        ("epoch", "number"),
        ("items[0].price.amount", "number"),  # decimal
        ("status", "string"),  # enum: string-like
        ("order_id", "string"),  # uuid
        ("placed_at", "timestamp"),
        ("day", "timestamp"),
        ("tz_minutes", "timestamp"),  # plain int: epoch
        ("epoch", "timestamp"),
        ("order_id", "timestamp"),  # a string
        ("items", "array"),
        ("customer", "object"),
        ("prefs", "object"),
        ("status", "scalar"),
        ("vip", "scalar"),
        ("score", "number"),  # one branch of the union is
        ("score", "string"),
        ("customer", "any"),
    ],
)
def test_a_value_of_the_wanted_type_passes(orders: Any, path: str, want: Want) -> None:
    assert check_paths(orders, [use(path, want)]) == []


@pytest.mark.parametrize(
    ("where", "u", "message"),
    [
        (
            "fields.total.sum",
            use("sku", "number", "items"),
            "'items[].sku' is a string, but sum needs a number (int, long, float, double or "
            "decimal)",
        ),
        (
            "fields.tz.scale",
            use("status", "number"),
            "'status' is an enum 'Status', but scale needs a number (int, long, float, double "
            "or decimal)",
        ),
        (
            "fields.name.lower",
            use("tz_minutes", "string"),
            "'tz_minutes' is an int, but lower needs a string (or an enum)",
        ),
        (
            "attributes.from",
            use("tags", "object"),
            "'tags' is an array of string, but from needs a record or a map",
        ),
        (
            "fields.n.count",
            use("customer", "array"),
            "'customer' is a record 'Customer', but count needs an array",
        ),
        (
            "customer_id",
            use("customer", "scalar"),
            "'customer' is a record 'Customer', but customer_id needs a single value (not a "
            "record, map or array)",
        ),
        (
            "current_time",
            use("at_time", "timestamp"),
            "'at_time' is an int (time-millis), but current_time needs a timestamp (timestamp or "
            "date logical type, epoch int/long/double, string)",
        ),
        (
            "fields.t.scale",
            use("placed_at", "number"),
            "'placed_at' is a long (timestamp-millis), which the connector reads as ISO 8601 "
            "text, but scale needs a number (int, long, float, double or decimal)",
        ),
        (
            "fields.k.scale",
            use("$key", "number"),
            "'$key' is the record key as text, but scale needs a number (int, long, float, "
            "double or decimal)",
        ),
        (
            "fields.n.sum",
            use("vip", "number"),
            "'vip' is a boolean, but sum needs a number (int, long, float, double or decimal)",
        ),
    ],
)
def test_an_operation_on_a_value_of_the_wrong_type_names_both(
    orders: Any, where: str, u: PathUse, message: str
) -> None:
    problem = one(orders, u._replace(where=where))
    assert (problem.where, problem.message) == (where, message)


# ----- the form of a path ------------------------------------------------------------------------


def test_paths_parse_into_names_and_indexes() -> None:
    assert parse_path("a.b[0][12].c") == [("a", ()), ("b", (0, 12)), ("c", ())]
    assert parse_path("user-agent") == [("user-agent", ())]  # a map key may be any text


@pytest.mark.parametrize(
    "text", ["Order Placed", "a..b", "a.", "a[x]", "a[-1]", "[0]", "", "a$b c"]
)
def test_text_that_is_no_path_is_refused_with_the_const_hint(text: str) -> None:
    for schema in (None, ORDERS):  # with or without a schema
        problem = one(schema, use(text, "string", where="mapping[0].action"))
        assert problem.where == "mapping[0].action"
        assert problem.message.endswith(f"for a fixed value write {{const: {json.dumps(text)}}}")
        assert problem.name == text


def test_an_unknown_pseudo_field_is_named() -> None:
    problem = one(None, use("$offset"))
    assert problem.message.startswith('"$offset" is an unknown pseudo-field (use $key, $timestamp')


def test_a_word_that_is_no_field_may_have_been_meant_as_text(orders: Any) -> None:
    problem = one(orders, use("Purchase", "string", where="action"))
    assert problem.message.startswith("no field 'Purchase' at the top level of the record;")
    assert problem.message.endswith('(for a fixed value write {const: "Purchase"})')
    # a close name is the likelier fix, and a key or a source is never text
    assert "const" not in one(orders, use("statu", "string")).message
    assert "const" not in one(orders, use("Purchase", "object")).message


def test_without_a_schema_only_the_form_is_checked() -> None:
    assert check_paths(None, [use("no.such[3].field", "number", "nothing")]) == []


# ----- the mapping's own path_uses -----------------------------------------------------------


def test_attribute_keys_without_from_are_top_level_names() -> None:
    spec = ElementSpec.model_validate(
        {"type": "customer", "customer_id": "id", "attributes": {"include": ["emial"]}}
    )
    fields = [{"name": "id", "type": "long"}, {"name": "email", "type": "string"}]
    schema = {"type": "record", "name": "U", "fields": fields}
    (problem,) = check_paths(schema, path_uses(spec, "m"))
    assert (problem.where, problem.closest) == ("m.attributes.include[0]", ("email",))


def test_only_the_names_about_as_close_as_the_best_are_offered() -> None:
    event = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "event.avsc").read_text())
    assert one(event, use("event_tme")).closest == ("event_time",)
    assert one(event, use("evnt")).closest == ("event_id",)


def test_the_same_mistake_in_another_element_or_key_is_reported_there_too() -> None:
    uses = [
        use("custmer", "object", where="topics[0].transform.mapping[0].attributes.from"),
        use("custmer.id", "scalar", where="topics[0].transform.mapping[1].customer_id"),
        use("custmer.email", where="topics[0].transform.mapping[1].attributes.include[0]"),
        use("custmer.id", "scalar", where="topics[0].transform.mapping[0].customer_id"),
    ]
    problems = check_paths(ORDERS, uses)
    assert [p.where for p in problems] == [
        "topics[0].transform.mapping[0].attributes.from",
        "topics[0].transform.mapping[1].customer_id",
        "topics[0].transform.mapping[1].attributes.include[0]",
    ]
