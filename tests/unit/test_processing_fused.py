"""The record processor's one-pass path for a mapping that makes one event per record: the same
elements, bytes, costs, customers, errors (stage, rule, message) and policy counts as the general
path (validate, policy, encode one after the other), over values chosen to hit every check."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from connector.config import parse_settings
from connector.errors import BadRecordError
from connector.processing import RecordProcessor
from connector.transforms import CompiledTransform, MappingCompiled

TOPIC = "ev"
MAPPING: dict[str, Any] = {
    "type": "event",
    "customer_id": "user_id",
    "device_id": "device_id",
    "action": "event_name",
    "current_time": "event_time",
    "platform": "platform",
    "app_version": "app_version",
    "user_timezone_offset": "tz",
    "attributes": {"from": "properties"},
}
IDENTIFIED = {**MAPPING, "user_identifiers": {"moe_mobile": "mobile"}}
# Mappings by name, and whether each is plain (read from the value alone, see PlainEvent).
MAPPING_IDS = {
    "customer_id": True,
    "identifiers": False,
    "top_level": True,
    "defaults_and_drops": True,
    "fields": False,
    "keeping_nulls": True,
    "user_time": False,
    "nested_customer": False,
}
MAPPINGS = [
    MAPPING,
    IDENTIFIED,
    {**MAPPING, "attributes": {"drop": ["mobile"]}},  # copied from the top level
    {
        **MAPPING,
        "customer_id": {"field": "user_id", "default": "fallback-user"},
        "device_id": {"field": "device_id", "default": 7},
        "action": {"field": "event_name", "default": "Defaulted"},
        "attributes": {"from": "properties", "drop": ["sku", "none"]},
    },
    {**MAPPING, "attributes": {"from": "properties", "fields": {"sku2": "properties.sku"}}},
    {**MAPPING, "attributes": {"from": "properties", "skip_nulls": False}},
    {**MAPPING, "user_time": "event_time"},
    {**MAPPING, "customer_id": "properties.sku"},
]


def _id(mapping: dict[str, Any]) -> str:
    return list(MAPPING_IDS)[MAPPINGS.index(mapping)]


def _processor(
    mapping: dict[str, Any], policy: dict[str, Any]
) -> tuple[RecordProcessor, list[tuple[str, str]]]:
    counted: list[tuple[str, str]] = []
    settings = parse_settings(
        {
            "moengage": {"base_url": "http://127.0.0.1:9"},
            "kafka": {"bootstrap.servers": "127.0.0.1:9", "group.id": "g"},
            "topics": [{"name": TOPIC, "format": "json", "transform": {"mapping": mapping}}],
            "observability": {"enabled": False},
            "policy": policy,
        },
        base_dir=Path.cwd(),
        environ={},
    )
    processor = RecordProcessor(settings, on_policy=lambda r, a: counted.append((r, a)))
    return processor, counted


def _outcome(processor: RecordProcessor, value: dict[str, Any]) -> Any:
    processor.pipelines[TOPIC].decoder = lambda raw: value  # any Python value, NaN included
    msg = Message(topic=TOPIC, partition=0, offset=7, value=b"-", timestamp=(1, 0))
    try:
        prepared = processor.process(msg)
    except BadRecordError as e:
        return (type(e).__name__, e.stage, e.rule, str(e))
    return [(data, cost, customer, repr(el)) for data, cost, customer, el in prepared]


def _event(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "user_id": "user-1",
        "device_id": None,
        "event_name": "Added to Cart",
        "event_time": "2026-01-01T00:00:00Z",
        "platform": "web",
        "app_version": "4.2.0",
        "tz": 3600,
        "mobile": "919800000000",
        "properties": {"price": 2.5, "sku": "s-1", "n": 3, "ok": True, "none": None},
    }
    value.update(changes)
    return value


def _props(**props: Any) -> dict[str, Any]:
    return _event(properties=props)


class _Str(str):
    pass


class _Int(int):
    pass


class _Float(float):
    pass


CASES = [
    _event(),
    _event(properties={}),
    _event(properties=None),
    _event(device_id="dev-1"),
    _event(device_id=""),
    _event(device_id="d\x01"),
    _event(user_id=12345),
    _event(user_id=None),
    _event(user_id="guest"),
    _event(user_id=" "),
    _event(user_id="u\x02x"),
    _event(user_id=True),
    _event(event_name=None),
    _event(event_name=""),
    _event(event_name="moe_x"),
    _event(event_name="a.b"),
    _event(event_name="n" * 205),
    _event(event_name=5),
    _event(platform="ios"),
    _event(platform=" Web "),
    _event(platform="tv"),
    _event(platform=3),
    _event(app_version=4.2),
    _event(app_version=[1]),
    _event(tz=99999),
    _event(tz="3600"),
    _event(tz=3600.0),
    _event(tz=True),
    _event(event_time=1767225600000),
    _event(event_time="1767225600"),
    _event(event_time="2026-01-01T00:00:00"),
    _event(event_time="2026-01-01T00:00:00.123Z"),
    _event(event_time="3026-01-01T00:00:00Z"),
    _event(event_time="1999-01-01T00:00:00Z"),
    _event(event_time=math.nan),
    _event(event_time="soon"),
    _props(price=math.nan),
    _props(price=math.inf),
    _props(deep={"a": [math.nan]}),
    _props(big=2**70),
    _props(text="x" * 513),
    _props(url="http://" + "u" * 600),
    _props(**{"k" * 201: 1}),
    _props(**{"a.b": 1}),
    _props(lst=[1, "a"]),
    _props(lst=list(range(60))),
    _props(obj={"a": 1}),
    _props(id=1),
    _props(moe_x=1),
    _props(**{"c\x03": 1}),
    _props(bad="\ud800"),
    _props(when=object()),
    # The one-pass check of attribute values (exact types, lengths, finiteness) at its edges.
    _props(text="x" * 512),
    _props(text="x" * 512, more="y"),
    _props(text="x" * 300, other="z" * 300),
    _props(text="é" * 513),
    _props(a=1.5, b=-0.0, c=1e308, d=-math.inf),
    _props(flag=True, n=0, f=0.0, s="", none=None),
    _props(sub=_Str("s")),
    _props(note="nullable", price=2.5),
    _props(note="null", price=math.nan),
    _props(sub=_Int(3)),
    _props(sub=_Float(math.nan)),
    _props(sub=_Float(2.5)),
    _event(mobile=math.nan),
    _event(mobile=None, user_id=None),
    _event(mobile=""),
]
POLICIES = [
    {},
    {"non_finite": "stringify", "object": "flatten", "array_length": "stringify"},
    {"value_length": "bad_input", "name_length": "allow", "event_name_period": "replace"},
]


@pytest.mark.parametrize("fast", [True, False], ids=["from-the-value", "from-the-record"])
@pytest.mark.parametrize("policy", POLICIES, ids=["defaults", "lenient", "strict"])
@pytest.mark.parametrize("mapping", MAPPINGS, ids=list(MAPPING_IDS))
def test_one_event_mapping_prepares_as_the_general_path(
    mapping: dict[str, Any], policy: dict[str, Any], fast: bool
) -> None:
    fused, fused_counts = _processor(mapping, policy)
    general, general_counts = _processor(mapping, policy)
    transform = fused.pipelines[TOPIC].transform
    assert isinstance(transform, MappingCompiled)
    assert transform.single_kind == "event"  # the one-pass path is taken
    # The one-pass event from the decoded value: built for a plain mapping only.
    assert (fused.pipelines[TOPIC].fast is not None) == MAPPING_IDS[_id(mapping)]
    prepared_fast: list[object] = []
    one_pass = fused.pipelines[TOPIC].fast
    if not fast:  # from the record: the mapping's element, checked in one pass
        fused.pipelines[TOPIC].fast = None
    elif one_pass is not None:

        def counted(value: Any) -> Any:
            done = one_pass(value)
            if done is not None:
                prepared_fast.append(done)
            return done

        fused.pipelines[TOPIC].fast = counted
    # The same mapping behind the general wrapper: validate, policy, encode one after another.
    general.pipelines[TOPIC].transform = CompiledTransform("mapping", transform)
    general.pipelines[TOPIC].fast = None
    for case in CASES:
        for _ in range(2):  # the second time with the names the first one taught
            expected = _outcome(general, case)
            assert _outcome(fused, case) == expected, case
    assert fused_counts == general_counts
    if fast and one_pass is not None:  # a good record, its names known: from the value
        prepared_fast.clear()
        good = _event(properties=None)  # no object among the attributes of any mapping
        assert _outcome(fused, good) == _outcome(general, good)
        assert len(prepared_fast) == 1


class _SubStr(str):
    pass


class _SubInt(int):
    pass


_ODD_TEXT = ["null", "nullable", "a.b", "moe_x", "guest", "GUEST ", "u\x01", "\ud800", "é" * 300]
_TIMES = ["2026-01-01T00:00:00.123Z", "2026-01-01T00:00:00", "1999-12-31T23:59:59Z", "soon"]
_KEYS = ["price", "sku", "n", "ok", "none", "k" * 201, "a.b", "id", "moe_x", "c\x03", "user_id"]


def _random_value(r: random.Random, depth: int = 0) -> Any:
    """A value a producer could write, ugly ones over-represented."""
    pick = r.randrange(16)
    choices: list[Any] = [
        None,
        r.choice([0, -1, 2**63, 2**70, 3600, 99999, -54000, 54001]),
        r.choice([0.0, -0.0, 2.5, 1e308, math.nan, math.inf, -math.inf]),
        r.choice([True, False]),
        r.choice(["", " ", "x" * r.choice([200, 201, 511, 512, 513, 600])]),
        r.choice(_ODD_TEXT),
        r.choice(["web", " Web ", "ios", "tv", "unknown", "4.2.0"]),
        r.choice([*_TIMES, 1767225600000, "2026-13-01T00:00:00Z"]),
        _SubStr("s"),
        _SubInt(5),
    ]
    if pick < len(choices):
        return choices[pick]
    if pick == len(choices) and depth < 2:
        return [_random_value(r, depth + 1) for _ in range(r.randrange(3))]
    if pick == len(choices) + 1 and depth < 2:
        return {r.choice(["a", "b", "c.d"]): _random_value(r, depth + 1) for _ in range(2)}
    return r.choice(["user-1", "user-2", "sku-1", "Added to Cart", "Viewed"])


def _random_event(r: random.Random) -> dict[str, Any]:
    value = _event()
    for key in list(value):
        if r.random() < 0.25:
            value[key] = _random_value(r)
    if r.random() < 0.5:
        value["properties"] = {r.choice(_KEYS): _random_value(r) for _ in range(r.randrange(6))}
    return value


@pytest.mark.parametrize("policy", POLICIES, ids=["defaults", "lenient", "strict"])
@pytest.mark.parametrize("mapping", MAPPINGS, ids=list(MAPPING_IDS))
def test_random_records_prepare_as_the_general_path(
    mapping: dict[str, Any], policy: dict[str, Any]
) -> None:
    """Seeded random records (ugly values over-represented), each twice: the one-pass paths
    and the general path agree on every outcome and on the policy counts."""
    fused, fused_counts = _processor(mapping, policy)
    general, general_counts = _processor(mapping, policy)
    general.pipelines[TOPIC].transform = CompiledTransform(
        "mapping", fused.pipelines[TOPIC].transform
    )
    general.pipelines[TOPIC].fast = None
    one_pass, from_the_value = fused.pipelines[TOPIC].fast, []
    if one_pass is not None:

        def counted(value: Any) -> Any:
            done = one_pass(value)
            from_the_value.append(done is not None)
            return done

        fused.pipelines[TOPIC].fast = counted
    r = random.Random(f"{_id(mapping)}-{sorted(policy.items())}")
    for _ in range(300):
        value = _random_event(r)
        for _ in range(2):
            expected = _outcome(general, value)
            assert _outcome(fused, value) == expected, value
    assert fused_counts == general_counts
    # A plain mapping prepared some of them from the value (the rest it handed on).
    assert any(from_the_value) == MAPPING_IDS[_id(mapping)]
