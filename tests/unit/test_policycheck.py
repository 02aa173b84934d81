"""Pre-flight checks of MoEngage's data-tracking policy: each rule under each of its actions, the
defaults, per-topic overrides, counting and rate-limited logging, and the record processor's use."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from structlog.testing import capture_logs

from connector.config import ValidationSettings, parse_settings
from connector.elements import ElementValidator
from connector.errors import BadRecordError, ConfigError
from connector.observability.metrics import Metrics
from connector.policy import PolicySettings
from connector.policycheck import Preflight
from connector.processing import RecordProcessor

Json = dict[str, Any]
TOPIC = "t"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Check:
    """One topic's pre-flight check, with what it counted."""

    def __init__(self, clock: Clock | None = None, **policy: Any) -> None:
        self.counted: list[tuple[str, str]] = []
        validator = ElementValidator(ValidationSettings())
        self.preflight = Preflight(
            PolicySettings(**policy),
            [TOPIC, "other"],
            on_count=lambda rule, action: self.counted.append((rule, action)),
            revalidate=validator.validate,
            clock=clock or Clock(),
        )

    def __call__(self, element: Json, topic: str = TOPIC) -> Json:
        self.preflight.checker(topic)(element)
        return element


def user(**attributes: Any) -> Json:
    return {"type": "customer", "customer_id": "u1", "attributes": attributes}


def event(name: str = "Buy", **attributes: Any) -> Json:
    action = {"action": name, "current_time": 1767225600, "attributes": attributes}
    return {"type": "event", "customer_id": "u1", "actions": [action]}


def attrs(element: Json) -> Json:
    holder = element["actions"][0] if element["type"] == "event" else element
    result: Json = holder["attributes"]
    return result


def rule_of(check: Check, element: Json) -> str:
    with pytest.raises(BadRecordError) as info:
        check(element)
    return info.value.rule


def test_a_clean_element_is_left_as_it_is_and_nothing_is_counted() -> None:
    check = Check()
    element = event(price=1.5, n=3, ok=True, none=None, s="x" * 512, **{"k" * 200: 1})
    before = repr(element)
    inner = attrs(element)
    assert attrs(check(element)) is inner
    assert repr(element) == before
    assert check.counted == []


@pytest.mark.parametrize("make", [user, event])
def test_long_values_are_truncated_counted_and_logged_once_per_name(make: Any) -> None:
    clock = Clock()
    check = Check(clock, log_interval_seconds=60)
    with capture_logs() as logs:
        first = check(make(bio="b" * 600, other="o"))
        check(make(bio="c" * 513))
        clock.now += 61
        check(make(bio="d" * 513))
    assert attrs(first) == {"bio": "b" * 512, "other": "o"}
    assert check.counted == [("policy.value_length", "truncate")] * 3
    lines = [x for x in logs if x["event"] == "policy_applied"]
    assert len(lines) == 2  # once, then again after the interval
    assert lines[0]["rule"] == "policy.value_length"
    assert lines[0]["attribute"] == "bio"
    assert lines[0]["topic"] == TOPIC
    assert "bbb" not in str(lines)  # the value itself is never logged


def test_long_values_under_bad_input_and_allow() -> None:
    assert rule_of(Check(value_length="bad_input"), user(bio="b" * 513)) == "policy.value_length"
    allowed = Check(value_length="allow")
    assert attrs(allowed(user(bio="b" * 513))) == {"bio": "b" * 513}
    assert allowed.counted == [("policy.value_length", "allow")]


def test_a_long_url_is_bad_input_by_default_never_truncated() -> None:
    url = "HTTPS://example.com/" + "p" * 600
    assert rule_of(Check(), event(link=url)) == "policy.url_length"
    allowed = Check(url_length="allow")
    assert attrs(allowed(event(link=url))) == {"link": url}
    assert allowed.counted == [("policy.url_length", "allow")]


def test_long_names_are_truncated_in_place_keeping_the_order() -> None:
    check = Check()
    element = check(user(a=1, **{"n" * 230: 2}, z=3))
    assert list(attrs(element)) == ["a", "n" * 200, "z"]
    named = check(event("E" * 201, **{"x" * 201: 1}))
    assert named["actions"][0]["action"] == "E" * 200
    assert attrs(named) == {"x" * 200: 1}
    assert check.counted == [("policy.name_length", "truncate")] * 3
    assert rule_of(Check(name_length="bad_input"), event("E" * 201)) == "policy.name_length"


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (list(range(51)), "policy.array_length"),
        (["a", "b" * 513], "policy.array_item_length"),
        (["a", 1], "policy.array_mixed_types"),
        ([1, True], "policy.array_mixed_types"),
        ([{"a": 1}], "policy.object"),
    ],
)
def test_arrays_moengage_rejects_are_bad_input_by_default(value: list[Any], rule: str) -> None:
    assert rule_of(Check(), user(tags=value)) == rule
    assert rule_of(Check(), event(tags=value)) == rule


def test_arrays_can_be_stringified_or_allowed() -> None:
    check = Check(array_mixed_types="stringify")
    assert attrs(check(user(tags=["a", 1]))) == {"tags": '["a",1]'}
    assert check.counted == [("policy.array_mixed_types", "stringify")]
    allowed = Check(array_length="allow")
    assert attrs(allowed(user(tags=list(range(60))))) == {"tags": list(range(60))}


def test_arrays_within_the_rules_and_documented_structures_pass() -> None:
    check = Check()
    platforms = [{"platform": "ANDROID", "active": "true"}]
    geo = {"lat": 12.11, "lon": 123.122}
    good = {"n": [1, 2.5], "s": ["x" * 512] * 50, "e": [], "platforms": platforms}
    assert attrs(check(user(**good, moe_geo_location=geo))) == {**good, "moe_geo_location": geo}
    assert check.counted == []


def test_objects_are_bad_input_by_default() -> None:
    assert rule_of(Check(), user(address={"city": "Pune"})) == "policy.object"
    assert rule_of(Check(), event(address={"city": "Pune"})) == "policy.object"


def test_objects_flatten_to_parent_child_keys_with_the_separator() -> None:
    check = Check(object="flatten")
    element = check(user(a=1, address={"city": "Pune", "geo": {"lat": 1.5}}, z=2))
    assert attrs(element) == {"a": 1, "address_city": "Pune", "address_geo_lat": 1.5, "z": 2}
    assert check.counted == [("policy.object", "flatten")] * 2
    dotted = Check(object="flatten", flatten_separator="__")
    assert attrs(dotted(event(p={"q": "x" * 600}))) == {"p__q": "x" * 512}
    assert dotted.counted == [("policy.object", "flatten"), ("policy.value_length", "truncate")]


def test_flattened_names_pass_validation_again() -> None:
    with pytest.raises(BadRecordError) as info:
        Check(object="flatten")(user(user={"id": "x"}))  # user_id is reserved
    assert info.value.rule == "attribute.reserved"


def test_a_flattened_name_the_element_already_has_is_bad_input_not_an_overwrite() -> None:
    # {"a_b": 1, "a": {"b": 2}} flattened to {"a_b": 2}: the record's own a_b was lost, silently.
    for given in (user(a_b=1, a={"b": 2}), user(a={"b": 2}, a_b=1), event(a_b=1, a={"b": 2})):
        check = Check(object="flatten")
        with pytest.raises(BadRecordError) as info:
            check(given)
        assert info.value.rule == "policy.object"
        assert "'a_b'" in str(info.value)
    nested = Check(object="flatten")  # two objects that flatten to one name
    with pytest.raises(BadRecordError):
        nested(user(a={"b_c": 1, "b": {"c": 2}}))
    distinct = Check(object="flatten")  # no collision: flattened as before
    assert attrs(distinct(user(a_b=1, a={"c": 2}))) == {"a_b": 1, "a_c": 2}


def test_objects_stringify_or_are_allowed() -> None:
    check = Check(object="stringify")
    assert attrs(check(event(o={"b": 1, "a": [1]}))) == {"o": '{"b":1,"a":[1]}'}
    allowed = Check(object="allow")
    assert attrs(allowed(event(o={"b": 1}))) == {"o": {"b": 1}}
    assert allowed.counted == [("policy.object", "allow")]


def test_event_names_with_a_period() -> None:
    assert rule_of(Check(), event("order.placed")) == "policy.event_name_period"
    replaced = Check(event_name_period="replace", period_replacement="-")
    assert replaced(event("a.b.c"))["actions"][0]["action"] == "a-b-c"
    assert replaced.counted == [("policy.event_name_period", "replace")]
    allowed = Check(event_name_period="allow")
    assert allowed(event("a.b"))["actions"][0]["action"] == "a.b"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_bad_input_by_default(bad: float) -> None:
    assert rule_of(Check(), event(score=bad)) == "value.non_finite"
    assert rule_of(Check(), user(scores=[1.0, bad])) == "value.non_finite"


def test_non_finite_numbers_can_be_stringified() -> None:
    check = Check(non_finite="stringify", object="stringify")
    element = check(event(a=math.nan, b=[1.0, -math.inf], c={"d": math.inf}))
    assert attrs(element) == {"a": "NaN", "b": [1.0, "-Infinity"], "c": '{"d":"Infinity"}'}


def test_topics_override_only_the_rules_they_name() -> None:
    check = Check(topics={TOPIC: {"object": "flatten"}}, value_length="bad_input")
    assert attrs(check(user(o={"a": 1}))) == {"o_a": 1}
    assert rule_of(check, user(o="x" * 513)) == "policy.value_length"
    with pytest.raises(BadRecordError):
        check(user(o={"a": 1}), topic="other")


def test_overrides_for_an_unknown_topic_are_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"policy\.topics\.nope"):
        Preflight(PolicySettings(topics={"nope": {"object": "allow"}}), [TOPIC])


def _settings(policy: Any) -> Any:
    raw = {
        "moengage": {"data_center": "01"},
        "kafka": {"bootstrap.servers": "127.0.0.1:9092", "group.id": "g"},
        "topics": [{"name": TOPIC, "format": "json", "transform": {"mapping": {
            "type": "customer", "customer_id": "id"}}}],
        "policy": policy,
    }  # fmt: skip
    return parse_settings(raw, base_dir=Path(), environ={})


def test_the_policy_section_is_validated() -> None:
    assert _settings({"object": "flatten"}).policy.object == "flatten"
    with pytest.raises(ConfigError, match=r"policy\.object"):
        _settings({"object": "truncate"})  # MoEngage does not truncate objects
    with pytest.raises(ConfigError, match=r"policy\.objects"):
        _settings({"objects": "flatten"})
    with pytest.raises(ConfigError, match=r"policy\.topics\.t\.value_length"):
        _settings({"topics": {TOPIC: {"value_length": "flatten"}}})


def test_the_record_processor_applies_the_policy_and_counts_through_metrics() -> None:
    metrics = Metrics(process_metrics=False)
    processor = RecordProcessor(_settings({}), on_policy=metrics.policy)
    value = b'{"id": "u-1", "bio": "' + b"b" * 600 + b'"}'
    msg = Message(topic=TOPIC, partition=0, offset=3, value=value, timestamp=(1, 0))
    ((data, _, _, element),) = processor.process(msg)
    assert element["attributes"]["bio"] == "b" * 512
    assert b"b" * 513 not in data
    assert metrics.counts.policy_truncated == 1
    sample = metrics.registry.get_sample_value(
        "moengage_connector_policy_total",
        {"rule": "policy.value_length", "action": "truncate"},
    )
    assert sample == 1.0
    bad = Message(topic=TOPIC, partition=0, offset=4, value=b'{"id": "u-1", "o": {"a": 1}}')
    with pytest.raises(BadRecordError) as info:
        processor.process(bad)
    assert (info.value.rule, str(info.value.ref)) == ("policy.object", f"{TOPIC}[0]@4")
    assert metrics.counts.policy_bad_input == 1


def test_many_names_log_at_most_a_hundred_lines_per_interval_then_say_how_many_more() -> None:
    clock = Clock()
    check = Check(clock, log_interval_seconds=60)
    with capture_logs() as logs:
        for i in range(150):
            check(user(**{f"k{i}": "v" * 513}))
        clock.now += 60
        check(user(last="v" * 513))
    applied = [x for x in logs if x["event"] == "policy_applied"]
    (suppressed,) = [x for x in logs if x["event"] == "policy_applied_suppressed"]
    assert len(applied) == 101  # a hundred, then the next interval's first
    assert suppressed["lines"] == 50
    assert len(check.counted) == 151  # every one counted all the same
