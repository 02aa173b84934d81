"""Transforms: the declarative mapping, loading code by path and entry point, output contract."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from connector.config import TransformSpec
from connector.errors import ConfigError, TransformError
from connector.transforms import (
    CompiledTransform,
    Record,
    identifier_keys,
    load_transform,
)
from connector.transforms.builtin import passthrough
from connector.transforms.registry import import_string

SAMPLES = "tests.unit.sample_transforms"


def rec(
    value: Any,
    *,
    key: bytes | None = b"user-7",
    timestamp_ms: int | None = 1712567385726,
    topic: str = "users",
) -> Record:
    return Record(topic, 0, 42, key, value, (), timestamp_ms)


def mapping(*elements: dict[str, Any]) -> CompiledTransform:
    spec = TransformSpec.model_validate({"mapping": list(elements)})
    return load_transform(spec, key_path="topics[0].transform")


def one(elements: dict[str, Any], value: Any, **record: Any) -> dict[str, Any]:
    out = mapping(elements)(rec(value, **record))
    assert len(out) == 1
    return out[0]


def config_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_transform(TransformSpec.model_validate(raw), key_path="topics[0].transform")
    return info.value.problems


# ----- Record -------------------------------------------------------------------------------


def test_record_is_frozen() -> None:
    r = rec({})
    with pytest.raises(AttributeError):
        r.offset = 1  # type: ignore[misc]


# ----- mapping: customers -------------------------------------------------------------------


def test_customer_mapping_builds_the_moengage_shape() -> None:
    el = one({"type": "customer", "customer_id": "id"}, {"id": "u1", "name": "John"})
    assert el == {"type": "customer", "customer_id": "u1", "attributes": {"name": "John"}}


def test_integer_customer_id_becomes_a_string() -> None:
    el = one({"type": "customer", "customer_id": "id"}, {"id": 42})
    assert el["customer_id"] == "42"


@pytest.mark.parametrize("cid", [True, 4.2])
def test_bool_and_float_customer_ids_are_left_for_validation(cid: Any) -> None:
    el = one({"type": "customer", "customer_id": "id"}, {"id": cid})
    assert el["customer_id"] is cid


@pytest.mark.parametrize("value", [{"name": "John"}, {"id": None}])
def test_missing_customer_id_raises_naming_the_path(value: dict[str, Any]) -> None:
    with pytest.raises(TransformError) as info:
        one({"type": "customer", "customer_id": "id"}, value)
    assert info.value.rule == "mapping.missing_field"
    assert "'id'" in info.value.message


def test_default_fills_a_missing_value() -> None:
    spec = {"type": "customer", "customer_id": {"field": "id", "default": "fallback"}}
    assert one(spec, {})["customer_id"] == "fallback"


def test_nested_path_is_followed() -> None:
    el = one(
        {"type": "customer", "customer_id": "user.ids.main"}, {"user": {"ids": {"main": "u9"}}}
    )
    assert el["customer_id"] == "u9"


def test_nested_path_through_a_non_dict_is_missing() -> None:
    spec = {"type": "customer", "customer_id": {"field": "user.id", "default": "d1"}}
    assert one(spec, {"user": "flat"})["customer_id"] == "d1"


def test_update_existing_only_is_added_when_set() -> None:
    spec = {"type": "customer", "customer_id": "id", "update_existing_only": True}
    assert one(spec, {"id": "u1"})["update_existing_only"] is True


def test_update_existing_only_is_absent_when_unset() -> None:
    assert "update_existing_only" not in one(
        {"type": "customer", "customer_id": "id"}, {"id": "u1"}
    )


def test_customer_platform_becomes_a_platforms_entry() -> None:
    el = one({"type": "customer", "customer_id": "id", "platform": "os"}, {"id": "u1", "os": "iOS"})
    assert el["attributes"] == {"platforms": [{"platform": "iOS", "active": "true"}]}


# ----- mapping: pseudo-fields and constants -------------------------------------------------


def test_key_pseudo_field_is_the_record_key_as_text() -> None:
    assert one({"type": "customer", "customer_id": "$key"}, {})["customer_id"] == "user-7"


def test_missing_key_gives_the_default() -> None:
    spec = {"type": "customer", "customer_id": {"field": "$key", "default": "nokey"}}
    assert one(spec, {}, key=None)["customer_id"] == "nokey"


def test_key_that_is_not_utf8_is_a_transform_error() -> None:
    with pytest.raises(TransformError) as info:
        one({"type": "customer", "customer_id": "$key"}, {}, key=b"\xff\xfe")
    assert info.value.rule == "mapping.key_encoding"


def test_timestamp_and_topic_pseudo_fields() -> None:
    spec = {
        "type": "event",
        "customer_id": "id",
        "action": "$topic",
        "current_time": "$timestamp",
    }
    action = one(spec, {"id": "u1"})["actions"][0]
    assert action["action"] == "users"
    assert action["current_time"] == 1712567385726


def test_unknown_pseudo_field_is_a_config_error() -> None:
    problems = config_problems({"mapping": {"type": "customer", "customer_id": "$partition"}})
    assert problems[0][0] == "topics[0].transform.mapping[0].customer_id"
    assert "$partition" in problems[0][1]


def test_const_value() -> None:
    spec = {"type": "event", "customer_id": "id", "action": {"const": "Purchase"}}
    assert one(spec, {"id": "u1"})["actions"][0]["action"] == "Purchase"


# ----- mapping: attributes ------------------------------------------------------------------


def test_consumed_top_level_fields_are_left_out_of_attributes() -> None:
    spec = {
        "type": "event",
        "customer_id": "user.id",
        "device_id": "dev",
        "action": "name",
        "current_time": "ts",
        "platform": "os",
    }
    value = {"user": {"id": "u1"}, "dev": "d1", "name": "Buy", "ts": 1, "os": "iOS", "price": 3}
    assert one(spec, value)["actions"][0]["attributes"] == {"price": 3}


def test_attributes_from_a_nested_object() -> None:
    spec = {"type": "customer", "customer_id": "id", "attributes": {"from": "profile"}}
    el = one(spec, {"id": "u1", "profile": {"name": "John", "id": "inner"}})
    assert el["attributes"] == {"name": "John", "id": "inner"}


def test_missing_attributes_source_gives_no_attributes() -> None:
    spec = {"type": "customer", "customer_id": "id", "attributes": {"from": "profile"}}
    assert one(spec, {"id": "u1"})["attributes"] == {}


def test_attributes_source_that_is_not_an_object_is_a_transform_error() -> None:
    spec = {"type": "customer", "customer_id": "id", "attributes": {"from": "profile"}}
    with pytest.raises(TransformError) as info:
        one(spec, {"id": "u1", "profile": [1, 2]})
    assert info.value.rule == "mapping.type"


def test_include_is_an_allow_list() -> None:
    spec = {"type": "customer", "customer_id": "id", "attributes": {"include": ["name", "age"]}}
    el = one(spec, {"id": "u1", "name": "John", "email": "j@x"})
    assert el["attributes"] == {"name": "John"}


def test_include_can_keep_a_consumed_field() -> None:
    spec = {"type": "customer", "customer_id": "email", "attributes": {"include": ["email"]}}
    assert one(spec, {"email": "j@x"})["attributes"] == {"email": "j@x"}


def test_drop_removes_fields() -> None:
    spec = {"type": "customer", "customer_id": "id", "attributes": {"drop": ["password"]}}
    el = one(spec, {"id": "u1", "password": "pw", "name": "John"})
    assert el["attributes"] == {"name": "John"}


def test_rename_maps_old_names_to_new() -> None:
    spec = {"type": "customer", "customer_id": "id", "attributes": {"rename": {"mail": "email"}}}
    assert one(spec, {"id": "u1", "mail": "j@x"})["attributes"] == {"email": "j@x"}


def test_constants_are_added_last() -> None:
    spec = {
        "type": "customer",
        "customer_id": "id",
        "attributes": {"constants": {"origin": "kafka", "name": "fixed"}},
    }
    el = one(spec, {"id": "u1", "name": "John"})
    assert el["attributes"] == {"name": "fixed", "origin": "kafka"}


def test_nulls_are_skipped_by_default() -> None:
    el = one({"type": "customer", "customer_id": "id"}, {"id": "u1", "age": None, "name": "J"})
    assert el["attributes"] == {"name": "J"}


def test_nulls_are_kept_when_asked() -> None:
    spec = {"type": "customer", "customer_id": "id", "attributes": {"skip_nulls": False}}
    assert one(spec, {"id": "u1", "age": None})["attributes"] == {"age": None}


def test_mapping_does_not_change_the_record_value() -> None:
    value = {"id": "u1", "name": "John"}
    spec = {"type": "customer", "customer_id": "id", "attributes": {"constants": {"x": 1}}}
    one(spec, value)
    assert value == {"id": "u1", "name": "John"}


def test_attributes_are_a_dict_of_their_own_and_keep_the_record_order() -> None:
    """Copied, excluded keys removed, nulls skipped: every way gives the record's order."""
    props = {"b": 1, "a": None, "c": 2}
    for spec, value, want in [
        ({"from": "props"}, {"id": "u1", "props": props}, [("b", 1), ("c", 2)]),
        ({"from": "props"}, {"id": "u1", "props": {"b": 1, "c": 2}}, [("b", 1), ("c", 2)]),
        ({"drop": ["x"]}, {"x": 0, "z": 1, "id": "u1", "y": 2}, [("z", 1), ("y", 2)]),
        ({"drop": ["x"]}, {"x": 0, "z": None, "id": "u1", "y": 2}, [("y", 2)]),
        ({"rename": {"z": "y", "y": "w"}}, {"z": 1, "id": "u1", "y": None}, [("y", 1)]),
        ({"rename": {"z": "y"}, "skip_nulls": False}, {"z": 1, "y": 2, "id": "u1"}, [("y", 2)]),
    ]:
        el = one(
            {"type": "event", "customer_id": "id", "action": {"const": "A"}, "attributes": spec},
            value,
        )
        attrs = el["actions"][0]["attributes"]
        assert list(attrs.items()) == want, spec
        assert attrs is not value.get("props")
        assert attrs is not value


def test_a_key_error_comes_after_a_missing_identity_as_before() -> None:
    """Values are read in the spec's order: a record without identity fails on that first,
    even when a later value is the record key and the key is not UTF-8."""
    spec = {"type": "event", "customer_id": "id", "device_id": "$key", "action": "a"}
    with pytest.raises(TransformError) as info:
        one(spec, {"a": "x"}, key=b"\xff")
    assert info.value.rule == "mapping.missing_field"
    with pytest.raises(TransformError) as info:
        one(spec, {"a": "x", "id": "u1"}, key=b"\xff")
    assert info.value.rule == "mapping.key_encoding"


# ----- mapping: identity resolution, devices, events ----------------------------------------


def test_customer_identifiers_go_into_attributes_without_customer_id() -> None:
    spec = {"type": "customer", "user_identifiers": {"moe_mobile": "phone"}}
    el = one(spec, {"phone": "+919999", "first_name": "John"})
    assert el == {
        "type": "customer",
        "attributes": {"first_name": "John", "moe_mobile": "+919999"},
    }


def test_missing_identifiers_are_omitted() -> None:
    spec = {"type": "event", "user_identifiers": {"moe_mobile": "phone", "moe_email": "mail"}}
    el = one({**spec, "action": {"const": "A"}}, {"phone": 919999})
    assert el["user_identifiers"] == {"moe_mobile": "919999"}


def test_all_identifiers_missing_is_a_transform_error() -> None:
    spec = {"type": "customer", "user_identifiers": {"moe_mobile": "phone"}}
    with pytest.raises(TransformError) as info:
        one(spec, {"name": "x"})
    assert info.value.rule == "mapping.missing_field"
    assert "'phone'" in info.value.message


def test_event_mapping_builds_the_moengage_shape() -> None:
    spec = {
        "type": "event",
        "customer_id": "uid",
        "device_id": "device",
        "action": "event",
        "platform": "os",
        "app_version": "ver",
        "current_time": "at",
        "user_timezone_offset": {"const": 19800},
    }
    value = {
        "uid": "u1",
        "device": "d1",
        "event": "Buy",
        "os": "iOS",
        "ver": "1.2",
        "at": 1,
        "p": 2,
    }
    assert one(spec, value) == {
        "type": "event",
        "customer_id": "u1",
        "device_id": "d1",
        "actions": [
            {
                "action": "Buy",
                "attributes": {"p": 2},
                "platform": "iOS",
                "app_version": "1.2",
                "current_time": 1,
                "user_timezone_offset": 19800,
            }
        ],
    }


def test_event_optional_keys_are_absent_without_a_value() -> None:
    spec = {"type": "event", "customer_id": "uid", "action": "event", "platform": "os"}
    action = one(spec, {"uid": "u1", "event": "Buy"})["actions"][0]
    assert action == {"action": "Buy", "attributes": {}}


def test_event_with_user_identifiers() -> None:
    spec = {"type": "event", "user_identifiers": {"moe_mobile": "phone"}, "action": "event"}
    el = one(spec, {"phone": "+91", "event": "AddToCart"})
    assert el["user_identifiers"] == {"moe_mobile": "+91"}
    assert "customer_id" not in el


def test_missing_event_name_is_a_transform_error() -> None:
    with pytest.raises(TransformError) as info:
        one({"type": "event", "customer_id": "uid", "action": "event"}, {"uid": "u1"})
    assert info.value.rule == "mapping.missing_field"
    assert "'event'" in info.value.message


def test_device_mapping_builds_the_moengage_shape() -> None:
    spec = {"type": "device", "customer_id": "uid", "device_id": "dev", "platform": "os"}
    el = one(spec, {"uid": "u1", "dev": 77, "os": "iOS", "push_id": "tok"})
    assert el == {
        "type": "device",
        "customer_id": "u1",
        "device_id": "77",
        "attributes": {"push_id": "tok", "platform": "iOS"},
    }


def test_device_mapping_without_customer_id_is_a_config_error() -> None:
    problems = config_problems(
        {"mapping": {"type": "device", "user_identifiers": {"moe_mobile": "phone"}}}
    )
    assert problems[0][0] == "topics[0].transform.mapping[0]"


def test_several_element_specs_give_several_elements_in_order() -> None:
    t = mapping(
        {"type": "customer", "customer_id": "id"},
        {"type": "event", "customer_id": "id", "action": {"const": "Seen"}},
    )
    assert [e["type"] for e in t(rec({"id": "u1"}))] == ["customer", "event"]


def test_identifier_keys_of_a_mapping() -> None:
    spec = TransformSpec.model_validate(
        {
            "mapping": [
                {"type": "customer", "user_identifiers": {"moe_mobile": "phone"}},
                {"type": "event", "user_identifiers": {"moe_email": "m"}, "action": "e"},
            ]
        }
    )
    assert identifier_keys(spec) == {"moe_mobile", "moe_email"}


def test_identifier_keys_of_a_function_are_empty() -> None:
    spec = TransformSpec(function=f"{SAMPLES}:to_customer")
    assert identifier_keys(spec) == frozenset()


# ----- loading code -------------------------------------------------------------------------


def test_function_is_loaded_by_path() -> None:
    t = load_transform(TransformSpec(function=f"{SAMPLES}:to_customer"))
    assert t(rec({"id": "u1"})) == [{"type": "customer", "customer_id": "u1", "attributes": {}}]
    assert t.name == f"{SAMPLES}:to_customer"


def test_missing_module_says_the_module_was_not_found() -> None:
    problems = config_problems({"function": "no_such_pkg.mod:fn"})
    assert problems == [
        (
            "topics[0].transform.function",
            "module 'no_such_pkg.mod' not found (is it installed and importable?)",
        )
    ]


def test_missing_attribute_says_the_attribute_is_missing() -> None:
    problems = config_problems({"function": f"{SAMPLES}:nope"})
    assert problems == [
        ("topics[0].transform.function", f"module '{SAMPLES}' has no attribute 'nope'")
    ]


def test_failing_import_inside_the_module_is_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_import(name: str) -> Any:
        raise ModuleNotFoundError("No module named 'pandas'", name="pandas")

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(ConfigError) as info:
        import_string("mytransforms:fn", key_path="k")
    assert "importing module 'mytransforms' failed" in info.value.problems[0][1]


def test_non_callable_is_a_config_error() -> None:
    problems = config_problems({"function": f"{SAMPLES}:NOT_CALLABLE"})
    assert "not a callable" in problems[0][1]


def test_factory_is_called_with_options() -> None:
    spec = TransformSpec(
        function=f"{SAMPLES}:make_customer", options={"id_field": "uid", "tag": "vip"}
    )
    out = load_transform(spec)(rec({"uid": "u5"}))
    assert out == [{"type": "customer", "customer_id": "u5", "attributes": {"tag": "vip"}}]


def test_factory_rejecting_options_is_a_config_error_at_the_options_key() -> None:
    problems = config_problems({"function": f"{SAMPLES}:make_customer", "options": {"bad": 1}})
    assert problems[0][0] == "topics[0].transform.options"
    assert "TypeError" in problems[0][1]


def test_factory_returning_a_non_callable_is_a_config_error() -> None:
    problems = config_problems({"function": f"{SAMPLES}:make_nothing", "options": {}})
    assert "not a callable transform" in problems[0][1]


def test_entry_point_is_loaded_by_name() -> None:
    t = load_transform(TransformSpec(entry_point="passthrough"))
    element = {"type": "customer", "customer_id": "u1"}
    assert t(rec(element)) == [element]


def test_entry_point_miss_lists_the_available_names() -> None:
    problems = config_problems({"entry_point": "no-such-transform"})
    assert problems[0][0] == "topics[0].transform.entry_point"
    assert "'no-such-transform'" in problems[0][1]
    assert "available: " in problems[0][1]
    assert "passthrough" in problems[0][1]


# ----- the CompiledTransform contract --------------------------------------------------------


def test_none_output_becomes_an_empty_list() -> None:
    assert CompiledTransform("t", lambda r: None)(rec({})) == []


def test_single_dict_output_becomes_a_list() -> None:
    element = {"type": "event"}
    assert CompiledTransform("t", lambda r: element)(rec({})) == [element]


def test_generator_output_becomes_a_list() -> None:
    out = load_transform(TransformSpec(function=f"{SAMPLES}:two_events"))(rec({}))
    assert [e["actions"][0]["action"] for e in out] == ["a", "b"]


def test_tuple_output_becomes_a_list() -> None:
    out = CompiledTransform("t", lambda r: ({"type": "event"},))(rec({}))
    assert out == [{"type": "event"}]


@pytest.mark.parametrize("output", ["customer", 5, b"{}"])
def test_output_that_is_not_elements_is_rejected(output: Any) -> None:
    with pytest.raises(TransformError) as info:
        CompiledTransform("t", lambda r: output)(rec({}))
    assert info.value.rule == "transform.output"


@pytest.mark.parametrize("item", ["customer", {"customer_id": "u1"}, {"type": 1}])
def test_items_must_be_dicts_with_a_string_type(item: Any) -> None:
    with pytest.raises(TransformError) as info:
        CompiledTransform("t", lambda r: [{"type": "event"}, item])(rec({}))
    assert info.value.rule == "transform.output"
    assert "item 1" in info.value.message


def test_exception_is_wrapped_with_rule_and_cause() -> None:
    t = load_transform(TransformSpec(function=f"{SAMPLES}:boom"))
    with pytest.raises(TransformError) as info:
        t(rec({}))
    assert info.value.rule == "transform.raised"
    assert info.value.message == f"transform {SAMPLES}:boom raised ValueError: bad input"
    assert isinstance(info.value.__cause__, ValueError)


def test_exception_inside_a_generator_is_wrapped() -> None:
    t = load_transform(TransformSpec(function=f"{SAMPLES}:breaks_midway"))
    with pytest.raises(TransformError) as info:
        t(rec({}))
    assert info.value.rule == "transform.raised"
    assert isinstance(info.value.__cause__, KeyError)


def test_long_exception_text_is_truncated() -> None:
    def fail(record: Record) -> None:
        raise RuntimeError("x" * 5000)

    with pytest.raises(TransformError) as info:
        CompiledTransform("t", fail)(rec({}))
    assert len(info.value.message) < 300


def test_transform_error_from_user_code_keeps_its_rule() -> None:
    t = load_transform(TransformSpec(function=f"{SAMPLES}:rejects"))
    with pytest.raises(TransformError) as info:
        t(rec({}))
    assert info.value.rule == "custom.skip"


def test_mapping_errors_keep_their_rule() -> None:
    with pytest.raises(TransformError) as info:
        mapping({"type": "customer", "customer_id": "id"})(rec({}))
    assert info.value.rule == "mapping.missing_field"


# ----- passthrough --------------------------------------------------------------------------


def test_passthrough_accepts_one_element() -> None:
    element = {"type": "customer", "customer_id": "u1"}
    assert passthrough(rec(element)) == [element]


def test_passthrough_accepts_a_list_of_elements() -> None:
    elements = [{"type": "customer", "customer_id": "u1"}, {"type": "event"}]
    assert passthrough(rec(elements)) == elements


@pytest.mark.parametrize("value", ["text", 3, None, [{"type": "event"}, "x"]])
def test_passthrough_rejects_anything_else(value: Any) -> None:
    with pytest.raises(TransformError) as info:
        passthrough(rec(value))
    assert info.value.rule == "passthrough.shape"


def test_a_function_next_to_the_configuration_is_found_in_its_directory(tmp_path: Path) -> None:
    package = tmp_path / "next_to_config_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "orders.py").write_text(
        "def to_customer(record):\n"
        "    return {'type': 'customer', 'customer_id': record.value['id']}\n"
    )
    spec = TransformSpec(function="next_to_config_pkg.orders:to_customer")
    try:
        t = load_transform(spec, search_dir=tmp_path)
        assert t(rec({"id": "u1"}))[0]["customer_id"] == "u1"
    finally:
        sys.path.remove(str(tmp_path.resolve()))
        for name in [m for m in sys.modules if m.startswith("next_to_config_pkg")]:
            del sys.modules[name]


def test_a_module_missing_next_to_the_configuration_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_transform(
            TransformSpec(function="absent_pkg.mod:fn"), key_path="k", search_dir=tmp_path
        )
    assert info.value.problems == [
        (
            "k.function",
            f"module 'absent_pkg.mod' not found next to the configuration ({tmp_path.resolve()}) "
            "nor among the installed packages",
        )
    ]
    sys.path.remove(str(tmp_path.resolve()))
