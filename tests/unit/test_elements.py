"""The seed documents' element rules, one behaviour per test."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

import pytest

from connector import elements
from connector.config import ValidationSettings
from connector.elements import (
    DISALLOWED_CUSTOMER_IDS,
    EVENT_PLATFORMS,
    MOE_PREFIX_EXEMPT,
    PLATFORMS,
    RESERVED_DEVICE_ATTRIBUTES,
    RESERVED_EVENT_ATTRIBUTES,
    RESERVED_USER_ATTRIBUTES,
    TIMEZONE_OFFSET_RANGE,
    Element,
    ElementValidator,
    customer_key,
    normalise_time,
)
from connector.errors import ValidationError

# Seed 001, copied here rather than imported so a change to the constant is caught.
SEED_DISALLOWED = [
    "unknown", "guest", "null", "0", "1", "true", "false", "user_attribute_unique_id", "(empty)",
    "na", "n/a", "", "dummy_seller_code", "user_id", "id", "customer_id", "uid", "userid", "none",
    "-2", "-1", "2",
]  # fmt: skip
# Seed 002 reserved user attribute keys, plus seed 001's "id", "_id", "".
SEED_RESERVED_USER = [
    "USER_ATTRIBUTE_UNIQUE_ID", "USER_ATTRIBUTE_USER_EMAIL", "USER_ATTRIBUTE_USER_MOBILE",
    "USER_ATTRIBUTE_USER_NAME", "USER_ATTRIBUTE_USER_GENDER", "USER_ATTRIBUTE_USER_FIRST_NAME",
    "USER_ATTRIBUTE_USER_LAST_NAME", "USER_ATTRIBUTE_USER_BDAY", "USER_ATTRIBUTE_NOTIFICATION_PREF",
    "USER_ATTRIBUTE_OLD_ID", "MOE_TIME_FORMAT", "MOE_TIME_TIMEZONE",
    "USER_ATTRIBUTE_DND_START_TIME", "USER_ATTRIBUTE_DND_END_TIME", "MOE_GAID", "MOE_ISLATINSTALL",
    "statusUPDATE", "MOE_ISLAT", "user_idstatus", "user_id", "source", "id", "_id", "",
]  # fmt: skip


def validator(identifier_keys: frozenset[str] = frozenset(), **settings: Any) -> ElementValidator:
    return ElementValidator(ValidationSettings(**settings), identifier_keys)


def customer(**extra: Any) -> Element:
    return {"type": "customer", "customer_id": "john@example.com", "attributes": {}, **extra}


def device(**attrs: Any) -> Element:
    base = {"platform": "iOS", "push_id": "irBMohQPf_k2"}
    return {"type": "device", "customer_id": "john@example.com", "attributes": {**base, **attrs}}


def event(**action: Any) -> Element:
    return {
        "type": "event",
        "customer_id": "john@example.com",
        "actions": [{"action": "Added to Cart", **action}],
    }


def rule_of(element: Any, v: ElementValidator | None = None) -> str:
    with pytest.raises(ValidationError) as info:
        (v or validator()).validate(element)
    return info.value.rule


# ----- constants ------------------------------------------------------------------------------


def test_disallowed_ids_match_seed_001() -> None:
    assert set(SEED_DISALLOWED) == DISALLOWED_CUSTOMER_IDS


def test_reserved_user_attributes_match_seeds() -> None:
    assert set(SEED_RESERVED_USER) == RESERVED_USER_ATTRIBUTES


def test_reserved_device_and_event_attributes_match_seed_001() -> None:
    assert {"id", "_id", ""} == RESERVED_DEVICE_ATTRIBUTES
    assert {"id", "_id", "userId", ""} == RESERVED_EVENT_ATTRIBUTES


def test_platform_sets_and_offset_range() -> None:
    assert {"ANDROID", "iOS", "web"} == PLATFORMS
    assert {"ANDROID", "iOS", "web", "unknown"} == EVENT_PLATFORMS
    assert TIMEZONE_OFFSET_RANGE == (-54000, 54000)
    assert {"moe_geo_location", "moe_unsubscribe"} == MOE_PREFIX_EXEMPT


# ----- element type and shape ---------------------------------------------------------------


def test_valid_customer_is_returned_as_the_same_dict() -> None:
    el = customer(attributes={"name": "John", "points": 20})
    assert validator().validate(el) is el
    assert el == customer(attributes={"name": "John", "points": 20})


@pytest.mark.parametrize("value", [[], "customer", None, 3])
def test_non_dict_element_is_rejected(value: Any) -> None:
    assert rule_of(value) == "element.shape"


@pytest.mark.parametrize("kind", ["Customer", "user", "transition", None, 1, ["event"]])
def test_unknown_type_is_rejected(kind: Any) -> None:
    assert rule_of({"type": kind, "customer_id": "abc"}) == "element.type"


def test_missing_type_is_rejected() -> None:
    assert rule_of({"customer_id": "abc"}) == "element.type"


def test_attributes_must_be_a_dict() -> None:
    assert rule_of(customer(attributes=["name"])) == "element.shape"


def test_non_string_attribute_key_is_rejected() -> None:
    assert rule_of(customer(attributes={1: "x"})) == "attribute.key_type"


def test_non_string_device_attribute_key_is_rejected() -> None:
    el = device()
    el["attributes"][2] = "x"
    assert rule_of(el) == "attribute.key_type"


# ----- customer_id ----------------------------------------------------------------------------


@pytest.mark.parametrize("cid", SEED_DISALLOWED)
def test_disallowed_customer_id_is_rejected(cid: str) -> None:
    assert rule_of(customer(customer_id=cid)) == "customer_id.disallowed"


@pytest.mark.parametrize("cid", ["NULL", " Guest ", "N/A", "None"])
def test_disallowed_customer_id_ignores_case_and_whitespace(cid: str) -> None:
    assert rule_of(customer(customer_id=cid)) == "customer_id.disallowed"


def test_extra_disallowed_customer_ids_add_to_the_list() -> None:
    v = validator(extra_disallowed_customer_ids=["Anonymous"])
    assert rule_of(customer(customer_id="anonymous"), v) == "customer_id.disallowed"


def test_disallowed_message_names_type_key_and_value() -> None:
    with pytest.raises(ValidationError) as info:
        validator().validate(customer(customer_id="null"))
    assert info.value.message == (
        "customer element: customer_id 'null' is a value MoEngage disallows (Data API overview)"
    )


@pytest.mark.parametrize("cid", ["x", " x "])
def test_one_character_customer_id_is_too_short(cid: str) -> None:
    assert rule_of(customer(customer_id=cid)) == "customer_id.length"


def test_customer_id_min_length_is_configurable() -> None:
    v = validator(customer_id_min_length=5)
    assert rule_of(customer(customer_id="abcd"), v) == "customer_id.length"


def test_two_character_customer_id_is_accepted() -> None:
    validator().validate(customer(customer_id="ab"))


@pytest.mark.parametrize("cid", [12345, 1.5, True, ["a"]])
def test_non_string_customer_id_is_rejected_with_a_hint(cid: Any) -> None:
    with pytest.raises(ValidationError) as info:
        validator().validate(customer(customer_id=cid))
    assert info.value.rule == "customer_id.type"
    assert "map it to a string" in info.value.message


@pytest.mark.parametrize("build", [customer, device, event])
def test_missing_customer_id_is_rejected(build: Any) -> None:
    el = build()
    del el["customer_id"]
    assert rule_of(el) == "customer_id.missing"


def test_device_cannot_use_identity_resolution() -> None:
    el = device()
    del el["customer_id"]
    el["user_identifiers"] = {"moe_mobile": "+919999"}
    assert rule_of(el, validator(frozenset({"moe_mobile"}))) == "customer_id.missing"


# ----- identity resolution ------------------------------------------------------------------


def test_customer_with_identifier_attribute_needs_no_customer_id() -> None:
    el = {"type": "customer", "attributes": {"moe_mobile": "+919999", "first_name": "John"}}
    validator(frozenset({"moe_mobile"})).validate(el)


def test_customer_identifier_is_only_known_when_configured() -> None:
    el = {"type": "customer", "attributes": {"moe_mobile": "+919999"}}
    assert rule_of(el) == "customer_id.missing"


def test_customer_with_empty_identifier_value_is_rejected() -> None:
    el = {"type": "customer", "attributes": {"moe_mobile": ""}}
    assert rule_of(el, validator(frozenset({"moe_mobile"}))) == "customer_id.missing"


def test_null_customer_id_is_dropped_when_identifiers_are_present() -> None:
    el = {"type": "customer", "customer_id": None, "attributes": {"moe_mobile": "+919999"}}
    validator(frozenset({"moe_mobile"})).validate(el)
    assert "customer_id" not in el


def test_event_with_user_identifiers_needs_no_customer_id() -> None:
    el = {
        "type": "event",
        "user_identifiers": {"moe_mobile": "+919999"},
        "actions": [{"action": "AddToCart"}],
    }
    validator().validate(el)


def test_event_with_empty_user_identifiers_is_rejected() -> None:
    el = {"type": "event", "user_identifiers": {}, "actions": [{"action": "AddToCart"}]}
    assert rule_of(el) == "customer_id.missing"


def test_event_user_identifiers_must_be_a_dict() -> None:
    el = {"type": "event", "user_identifiers": ["moe_mobile"], "actions": [{"action": "A"}]}
    assert rule_of(el) == "element.shape"


# ----- reserved names and the moe_ prefix ---------------------------------------------------


@pytest.mark.parametrize("name", SEED_RESERVED_USER)
def test_reserved_user_attribute_is_rejected(name: str) -> None:
    assert rule_of(customer(attributes={name: "x"})) == "attribute.reserved"


def test_allowed_reserved_attributes_let_a_name_through() -> None:
    v = validator(allowed_reserved_attributes=["source"])
    v.validate(customer(attributes={"source": "Google Ads"}))


@pytest.mark.parametrize("name", ["id", "_id", ""])
def test_reserved_device_attribute_is_rejected(name: str) -> None:
    assert rule_of(device(**{name: "x"})) == "attribute.reserved"


@pytest.mark.parametrize("name", ["id", "_id", "userId", ""])
def test_reserved_event_attribute_is_rejected(name: str) -> None:
    assert rule_of(event(attributes={name: "x"})) == "attribute.reserved"


@pytest.mark.parametrize("name", ["id", "_id", "userId"])
def test_reserved_event_name_is_rejected(name: str) -> None:
    assert rule_of(event(action=name)) == "action.reserved"


@pytest.mark.parametrize("name", ["moe_points", "MOE_points", "Moe_x"])
def test_moe_prefix_is_rejected_in_user_attributes(name: str) -> None:
    assert rule_of(customer(attributes={name: 1})) == "attribute.moe_prefix"


@pytest.mark.parametrize("name", sorted(MOE_PREFIX_EXEMPT))
def test_documented_moe_attributes_are_allowed(name: str) -> None:
    validator().validate(customer(attributes={name: True}))


def test_identifier_keys_are_exempt_from_the_moe_prefix_rule() -> None:
    v = validator(frozenset({"moe_mobile"}))
    v.validate(customer(attributes={"moe_mobile": "+919999"}))


def test_moe_prefix_is_rejected_in_event_names() -> None:
    assert rule_of(event(action="moe_purchase")) == "action.moe_prefix"


def test_moe_prefix_is_rejected_in_event_attributes() -> None:
    assert rule_of(event(attributes={"moe_price": 1})) == "attribute.moe_prefix"


def test_moe_prefix_is_allowed_in_device_attributes() -> None:
    validator().validate(device(moe_sdk="1.0"))


def test_a_name_merely_containing_moe_is_fine() -> None:
    validator().validate(customer(attributes={"shoe_size": 42, "amoe_x": 1}))


# ----- platforms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"), [("android", "ANDROID"), ("IOS", "iOS"), ("Web", "web")]
)
def test_customer_platforms_are_normalised(given: str, canonical: str) -> None:
    el = customer(attributes={"platforms": [{"platform": given, "active": "true"}]})
    validator().validate(el)
    assert el["attributes"]["platforms"][0]["platform"] == canonical


@pytest.mark.parametrize("platform", ["Windows", "unknown", None, 1])
def test_unknown_customer_platform_is_rejected(platform: Any) -> None:
    el = customer(attributes={"platforms": [{"platform": platform, "active": "true"}]})
    assert rule_of(el) == "platform.unknown"


def test_customer_platforms_must_be_a_list() -> None:
    el = customer(attributes={"platforms": {"platform": "iOS"}})
    assert rule_of(el) == "element.shape"


def test_device_platform_is_normalised() -> None:
    el = device(platform="ios")
    validator().validate(el)
    assert el["attributes"]["platform"] == "iOS"


@pytest.mark.parametrize("platform", ["Windows", "unknown"])
def test_unknown_device_platform_is_rejected(platform: str) -> None:
    assert rule_of(device(platform=platform)) == "platform.unknown"


@pytest.mark.parametrize(("given", "canonical"), [("WEB", "web"), ("Unknown", "unknown")])
def test_event_platform_is_normalised(given: str, canonical: str) -> None:
    el = event(platform=given)
    validator().validate(el)
    assert el["actions"][0]["platform"] == canonical


def test_unknown_event_platform_is_rejected() -> None:
    assert rule_of(event(platform="Windows")) == "platform.unknown"


def test_long_offending_value_is_truncated_in_the_message() -> None:
    with pytest.raises(ValidationError) as info:
        validator().validate(event(platform="W" * 500))
    assert "W" * 61 + "..." in info.value.message
    assert "W" * 62 not in info.value.message


# ----- devices ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["platform", "push_id"])
def test_device_mandatory_attribute_is_required(key: str) -> None:
    el = device()
    del el["attributes"][key]
    assert rule_of(el) == "device.missing_field"


def test_device_without_attributes_is_rejected() -> None:
    el = device()
    del el["attributes"]
    assert rule_of(el) == "device.missing_field"


def test_device_push_id_must_be_a_string() -> None:
    assert rule_of(device(push_id=12345)) == "field.type"


def test_device_id_must_be_a_string() -> None:
    el = device()
    el["device_id"] = 7
    assert rule_of(el) == "field.type"


# ----- update_existing_only -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"), [("true", True), ("false", False), ("TRUE", True), (True, True)]
)
def test_update_existing_only_becomes_a_bool(given: Any, expected: bool) -> None:
    el = customer(update_existing_only=given)
    validator().validate(el)
    assert el["update_existing_only"] is expected


@pytest.mark.parametrize("given", ["yes", 1, "1"])
def test_update_existing_only_rejects_other_values(given: Any) -> None:
    assert rule_of(customer(update_existing_only=given)) == "field.type"


# ----- events -------------------------------------------------------------------------------


def test_event_needs_actions() -> None:
    el = event()
    del el["actions"]
    assert rule_of(el) == "actions.empty"


def test_event_with_empty_actions_is_rejected() -> None:
    el = event()
    el["actions"] = []
    assert rule_of(el) == "actions.empty"


def test_event_actions_must_be_a_list() -> None:
    el = event()
    el["actions"] = {"action": "x"}
    assert rule_of(el) == "element.shape"


def test_each_action_must_be_a_dict() -> None:
    el = event()
    el["actions"].append("Purchase")
    assert rule_of(el) == "element.shape"


@pytest.mark.parametrize("name", ["", "   ", None])
def test_empty_action_name_is_rejected(name: Any) -> None:
    assert rule_of(event(action=name)) == "action.empty"


def test_action_name_must_be_a_string() -> None:
    assert rule_of(event(action=42)) == "field.type"


def test_action_attributes_must_be_a_dict() -> None:
    assert rule_of(event(attributes="x")) == "element.shape"


@pytest.mark.parametrize(("given", "expected"), [(839, "839"), (1.5, "1.5"), ("1.2.3", "1.2.3")])
def test_app_version_becomes_a_string(given: Any, expected: str) -> None:
    el = event(app_version=given)
    validator().validate(el)
    assert el["actions"][0]["app_version"] == expected


@pytest.mark.parametrize("given", [True, ["1"]])
def test_app_version_of_other_types_is_rejected(given: Any) -> None:
    assert rule_of(event(app_version=given)) == "field.type"


@pytest.mark.parametrize(
    ("given", "expected"),
    [(19800, 19800), ("19800", 19800), (19800.0, 19800), (54000, 54000), (-54000, -54000)],
)
def test_timezone_offset_is_normalised_to_int(given: Any, expected: int) -> None:
    el = event(user_timezone_offset=given)
    validator().validate(el)
    assert el["actions"][0]["user_timezone_offset"] == expected
    assert type(el["actions"][0]["user_timezone_offset"]) is int


@pytest.mark.parametrize("given", [54001, -54001, "60000"])
def test_timezone_offset_out_of_range_is_rejected(given: Any) -> None:
    assert rule_of(event(user_timezone_offset=given)) == "user_timezone_offset.range"


@pytest.mark.parametrize("given", [1.5, "abc", True])
def test_non_integral_timezone_offset_is_rejected(given: Any) -> None:
    assert rule_of(event(user_timezone_offset=given)) == "field.type"


@pytest.mark.parametrize("key", ["current_time", "user_time"])
def test_event_times_in_milliseconds_become_seconds(key: str) -> None:
    el = event(**{key: "1712567385726"})
    validator().validate(el)
    assert el["actions"][0][key] == 1712567385


@pytest.mark.parametrize("key", ["current_time", "user_time"])
def test_bad_event_time_is_rejected(key: str) -> None:
    assert rule_of(event(**{key: "yesterday"})) == "time.format"


def test_null_optional_action_fields_are_dropped() -> None:
    el = event(platform=None, current_time=None, attributes=None)
    validator().validate(el)
    assert el["actions"][0] == {"action": "Added to Cart"}


# ----- normalise_time -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (1590404615, 1590404615),
        (1712567385726, 1712567385),
        (1712567385999, 1712567385),
        (99_999_999_999, 99_999_999_999),
        (100_000_000_000, 100_000_000),
        (1590404615.9, 1590404615),
        (1712567385726.0, 1712567385),
        ("1590404615", 1590404615),
        ("1712567385726", 1712567385),
        ("1712567385726.5", 1712567385),
    ],
)
def test_epoch_times_become_integer_seconds(given: Any, expected: int) -> None:
    result = normalise_time(given)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "iso",
    ["2020-05-31T16:33:35Z", "2020-05-31T16:33:35+05:30", "2020-05-31T16:33:35.123", "2020-05-31"],
)
def test_iso_8601_strings_are_returned_unchanged(iso: str) -> None:
    assert normalise_time(iso) is iso


@pytest.mark.parametrize("bad", [True, False, None, "abc", "", "nan", math.inf, math.nan, [1]])
def test_other_values_are_not_times(bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        normalise_time(bad)
    assert info.value.rule == "time.format"


# ----- customer_key -------------------------------------------------------------------------


def test_customer_key_is_the_customer_id() -> None:
    assert customer_key(event()) == "john@example.com"


def test_customer_key_from_user_identifiers_is_sorted() -> None:
    a = {"type": "event", "user_identifiers": {"moe_mobile": "+91", "moe_email": "a@b"}}
    b = {"type": "event", "user_identifiers": {"moe_email": "a@b", "moe_mobile": "+91"}}
    assert customer_key(a) == customer_key(b) == "moe_email=a@b&moe_mobile=+91"


def test_customer_key_from_identifier_attributes() -> None:
    el = {"type": "customer", "attributes": {"moe_mobile": "+91", "first_name": "J"}}
    assert customer_key(el, frozenset({"moe_mobile"})) == "moe_mobile=+91"


def test_customer_and_event_of_the_same_identifiers_share_a_key() -> None:
    v = validator(frozenset({"moe_mobile"}))
    cust = {"type": "customer", "attributes": {"moe_mobile": "+91", "first_name": "J"}}
    ev = {"type": "event", "user_identifiers": {"moe_mobile": "+91"}, "actions": []}
    assert v.customer_key(cust) == v.customer_key(ev)


def test_customer_key_without_configured_keys_uses_moe_attributes() -> None:
    el = {"type": "customer", "attributes": {"moe_mobile": "+91", "moe_unsubscribe": True}}
    assert customer_key(el) == "moe_mobile=+91"


# ----- event-time window, epoch magnitudes, zones (issue 11) -----------------------------------

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def clocked(**settings: Any) -> ElementValidator:
    return ElementValidator(ValidationSettings(**settings), clock=lambda: NOW)


def time_error(key: str, value: Any, v: ElementValidator | None = None) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        (v or clocked()).validate(event(**{key: value}))
    return info.value


@pytest.mark.parametrize("key", ["current_time", "user_time"])
@pytest.mark.parametrize(
    "given",
    [
        -1,
        0,
        "0",
        946_684_799,  # 1999-12-31T23:59:59Z
        "9999-12-31T00:00:00Z",
        int(NOW) + 86_400 + 1,
        "2026-01-03T00:00:00+00:00",
        1_767_000_000_000_000_000,  # nanoseconds: read as microseconds, year 57970
        pytest.param(10**5000, id="int-of-5000-digits"),
    ],
)
def test_event_times_outside_the_window_are_bad_input(key: str, given: Any) -> None:
    error = time_error(key, given)
    assert (error.stage, error.rule) == ("validate", "time.range")
    assert "validation.event_time_earliest" in error.message


@pytest.mark.parametrize(
    "given", [946_684_800, int(NOW) + 86_400, "2000-01-01T00:00:00Z", "2026-01-01T23:00:00+01:00"]
)
def test_event_times_at_the_edges_of_the_window_pass(given: Any) -> None:
    clocked().validate(event(current_time=given))


def test_event_time_window_is_configurable() -> None:
    v = clocked(event_time_earliest="1970-01-01T00:00:00Z", event_time_max_future_seconds=0)
    el = event(current_time=0)
    v.validate(el)
    assert el["actions"][0]["current_time"] == 0
    assert time_error("current_time", int(NOW) + 1, v).rule == "time.range"


@pytest.mark.parametrize("key", ["current_time", "user_time"])
def test_a_time_string_of_thousands_of_digits_is_bad_input(key: str) -> None:
    error = time_error(key, "1" * 5000)
    assert (error.stage, error.rule) == ("validate", "time.format")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (1_767_000_000, 1_767_000_000),  # seconds: below 1e11
        (99_999_999_999, 99_999_999_999),
        (1_767_000_000_123, 1_767_000_000),  # milliseconds: from 1e11
        (99_999_999_999_999, 99_999_999_999),
        (1.767e15, 1_767_000_000),  # microseconds: from 1e14
        (1_767_000_000_123_456, 1_767_000_000),
        ("1767000000123456", 1_767_000_000),
        (100_000_000_000_000, 100_000_000),
    ],
)
def test_epochs_are_read_by_magnitude(given: Any, expected: int) -> None:
    assert normalise_time(given) == expected


def test_a_microsecond_epoch_is_sent_in_seconds() -> None:
    el = event(current_time=1.767e15)
    clocked().validate(el)
    assert el["actions"][0]["current_time"] == 1_767_000_000


def test_current_time_without_a_zone_is_bad_input() -> None:
    error = time_error("current_time", "2025-06-01T12:00:00")
    assert (error.stage, error.rule) == ("validate", "time.no_zone")
    assert "user_time" in error.message


def test_user_time_is_a_local_time_and_may_have_no_zone() -> None:
    el = event(user_time="2025-06-01T12:00:00")
    clocked().validate(el)
    assert el["actions"][0]["user_time"] == "2025-06-01T12:00:00"


# ----- control characters in ids and names -------------------------------------------------------


@pytest.mark.parametrize(
    ("element", "rule"),
    [
        ({"type": "customer", "customer_id": "\x00\x00"}, "customer_id.control_character"),
        ({**event(), "customer_id": "john\x1f"}, "customer_id.control_character"),
        (
            {"type": "event", "customer_id": "john", "actions": [{"action": "\x00"}]},
            "action.control_character",
        ),
        (
            {"type": "event", "customer_id": "john", "actions": [{"action": "Bought\x85"}]},
            "action.control_character",
        ),
        ({**event(), "device_id": "d\x7f1"}, "device_id.control_character"),
        (customer(attributes={"first\nname": "J"}), "attribute.control_character"),
        (device(**{"model\x00": "x"}), "attribute.control_character"),
        (event(attributes={"sku\t": 1}), "attribute.control_character"),
        (
            {"type": "event", "user_identifiers": {"moe\x00": "a"}, "actions": [{"action": "A"}]},
            "attribute.control_character",
        ),
    ],
)
def test_control_characters_in_ids_and_names_are_bad_input(element: Element, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        clocked().validate(element)
    assert (info.value.stage, info.value.rule) == ("validate", rule)
    assert "U+" in info.value.message


def test_printable_unicode_in_names_passes() -> None:
    el = customer(customer_id="jöhn 👋", attributes={"prénom": "Zoë", "名前": "x"})
    clocked().validate(el)


def test_a_value_that_cannot_be_compared_is_bad_input_not_a_crash() -> None:
    class Awkward:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparisons")

        __hash__ = object.__hash__

    el = device(push_id=Awkward())
    with pytest.raises(ValidationError) as info:
        clocked().validate(el)
    assert (info.value.stage, info.value.rule) == ("validate", "element.invalid")
    assert "RuntimeError" in info.value.message


# ----- names remembered once they pass ----------------------------------------------------------


def test_a_remembered_name_does_not_let_a_bad_one_through() -> None:
    v = validator()
    ok = event(attributes={"price": 1, "sku": "a"})
    v.validate(ok)
    v.validate(event(attributes={"price": 2, "sku": "b"}))  # every key known: the fast path
    for attrs, rule in [
        ({"price": 3, "moe_x": 1}, "attribute.moe_prefix"),
        ({"price": 3, "id": 1}, "attribute.reserved"),
        ({"price": 3, 5: 1}, "attribute.key_type"),
        ({"price": 3, "a\x01b": 1}, "attribute.control_character"),
    ]:
        with pytest.raises(ValidationError) as info:
            v.validate(event(attributes=attrs))
        assert info.value.rule == rule
        assert "actions[0].attributes key" in str(info.value)


def test_names_are_remembered_per_rule_set() -> None:
    """'moe_mobile' passes as a customer identifier, not as an event attribute; 'source' passes
    in device attributes but is reserved for users."""
    v = validator(frozenset({"moe_mobile"}))
    v.validate(customer(attributes={"moe_mobile": "9198"}))
    with pytest.raises(ValidationError, match="moe_"):
        v.validate(event(attributes={"moe_mobile": "9198"}))
    v.validate(device(source="x"))
    with pytest.raises(ValidationError, match="reserved"):
        v.validate(customer(attributes={"source": "x"}))


def test_a_remembered_event_name_is_still_a_string_and_checked_once_per_rule() -> None:
    v = validator()
    v.validate(event(action="Purchase"))
    v.validate(event(action="Purchase"))
    for name, rule in [(" ", "action.empty"), ("moe_x", "action.moe_prefix"), (5, "field.type")]:
        with pytest.raises(ValidationError) as info:
            v.validate(event(action=name))
        assert info.value.rule == rule


def test_remembered_names_are_bounded() -> None:
    v = validator()
    for i in range(3 * elements._MAX_KNOWN):
        v.validate(event(attributes={f"key_{i}": i}, action=f"name {i}"))
    assert len(v._event_keys._known) <= elements._MAX_KNOWN
    assert len(v._good_actions) <= elements._MAX_KNOWN


# ----- the decoder's UTC form, read without a datetime ------------------------------------------


def _slow_seconds(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:59.999Z",
        "2026-01-01T23:59:59.999999Z",
        "2024-02-29T12:34:56.001Z",
        "2023-02-29T12:34:56Z",  # no such day
        "2026-13-01T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:60:00Z",
        "2026-01-01T00:00:60Z",
        "2026-01-01T00:00:6xZ",
        "2026-01-01T00:00:0\u00b2Z",  # a digit, but not an ASCII one
        "2026-01-01T00:00:00.12Z",
        "2026-01-01T00:00:00,123Z",
        "2026-01-01 00:00:00Z",
        " 2026-01-01T00:00:0Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "1969-12-31T23:59:59.999Z",
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T00:00:00",
    ],
)
def test_the_decoders_utc_form_reads_as_fromisoformat_does(text: str) -> None:
    fast = elements._utc_seconds(text)
    if fast is not None:
        assert fast == _slow_seconds(text)
        assert text.endswith("Z")
    assert elements._utc_seconds(text) == fast  # again, from the cached minute


def test_utc_form_matches_fromisoformat_on_many_times() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        us = rng.randrange(-62_135_596_800 * 10**6, 253_402_300_800 * 10**6)  # years 1..9999
        moment = datetime(1970, 1, 1) + timedelta(microseconds=us)
        spec = rng.choice(["seconds", "milliseconds", "microseconds"])
        text = moment.isoformat(timespec=spec) + "Z"
        assert elements._utc_seconds(text) == _slow_seconds(text), text


def test_event_times_in_the_utc_form_keep_their_window() -> None:
    v = ElementValidator(ValidationSettings(), clock=lambda: 1_767_225_600.0)  # 2026-01-01
    ok = event(current_time="2026-01-02T00:00:00Z")  # exactly now + one day
    assert v.validate(ok)["actions"][0]["current_time"] == "2026-01-02T00:00:00Z"
    for text in ("2026-01-02T00:00:00.001Z", "1999-12-31T23:59:59.999Z"):
        with pytest.raises(ValidationError) as info:
            v.validate(event(current_time=text))
        assert info.value.rule == "time.range"
        assert "read as" not in str(info.value)
