"""The sandbox applies MoEngage's data-tracking policy after its 200, as the help-centre articles
"Data Tracking Policies" / "Understand the MoEngage Data Tracking Policy" describe each row, keeps a
record of every loss (``GET /_sandbox/policy-losses``), and flags requests without MOE-APPKEY."""

from __future__ import annotations

from typing import Any

import pytest

from connector.cli import _parser
from connector.sandbox.datapolicy import AccountPolicy, PolicyLimits, period_name
from connector.sandbox.server import STATE, losses_summary
from tests.unit.test_sandbox import (
    HEADERS,
    WS,
    Client,
    Json,
    Start,
    bulk,
    clock,
    customer,
    sandbox,
    send,
)

__all__ = ["clock", "sandbox"]  # fixtures shared with test_sandbox

ACCEPTED = {
    "status": "success",
    "message": "Your request has been accepted and will be processed soon.",
}


def action(name: str, **attributes: Any) -> Json:
    return {"action": name, "current_time": 1767225600, "attributes": attributes}


def events(cid: str, *actions: Json) -> Json:
    return {"type": "event", "customer_id": cid, "actions": list(actions)}


async def accepted(client: Client, *elements: Json, headers: dict[str, str] | None = None) -> None:
    """Send ``elements``; MoEngage answers 200 with its success body whatever the policy does."""
    status, body, _ = await send(client, bulk(*elements), headers=headers)
    assert (status, body) == (200, ACCEPTED)


async def user(client: Client, cid: str) -> Json:
    async with client.get(f"/_sandbox/users/{cid}") as r:
        assert r.status == 200
        result: Json = await r.json()
        return result


async def losses(client: Client) -> Json:
    async with client.get("/_sandbox/policy-losses") as r:
        assert r.status == 200
        result: Json = await r.json()
        return result


def rules(report: Json) -> list[tuple[str, str, str]]:
    return [(x["rule"], x["action"], x["name"][:20]) for x in report["losses"]]


async def test_long_string_values_keep_their_first_512_characters(sandbox: Start) -> None:
    client = await sandbox()
    await accepted(
        client, customer("u1", bio="b" * 600), events("u1", action("Buy", note="n" * 513))
    )
    stored = await user(client, "u1")
    assert stored["attributes"]["bio"] == "b" * 512
    assert stored["events"][0]["attributes"]["note"] == "n" * 512
    report = await losses(client)
    assert rules(report) == [
        ("policy.value_length", "truncated", "bio"),
        ("policy.value_length", "truncated", "note"),
    ]
    assert report["losses"][1]["event"] == "Buy"
    assert report["by_rule"] == {"policy.value_length:truncated": 2}


async def test_a_url_over_512_characters_is_rejected(sandbox: Start) -> None:
    client = await sandbox()
    url = "https://example.com/" + "p" * 600
    await accepted(client, customer("u1", link=url, short="https://example.com/a"))
    assert (await user(client, "u1"))["attributes"] == {"short": "https://example.com/a"}
    assert rules(await losses(client)) == [("policy.url_length", "rejected", "link")]


async def test_names_over_200_characters_keep_their_first_200(sandbox: Start) -> None:
    client = await sandbox()
    long_attr, long_event = "a" * 201, "E" * 250
    await accepted(
        client, customer("u1", **{long_attr: 1}), events("u1", action(long_event, **{long_attr: 2}))
    )
    stored = await user(client, "u1")
    assert stored["attributes"] == {"a" * 200: 1}
    assert stored["events"][0]["action"] == "E" * 200
    assert stored["events"][0]["attributes"] == {"a" * 200: 2}
    assert [r[:2] for r in rules(await losses(client))] == [("policy.name_length", "truncated")] * 3


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (list(range(51)), "policy.array_length"),
        (["x", "y" * 513], "policy.array_item_length"),
        (["x", 1], "policy.array_mixed_types"),
        ([True, "true"], "policy.array_mixed_types"),
        ([{"a": 1}], "policy.object"),
    ],
)
async def test_arrays_breaking_a_rule_are_rejected(sandbox: Start, value: Any, rule: str) -> None:
    client = await sandbox()
    await accepted(
        client, customer("u1", tags=value, ok=1), events("u1", action("Buy", tags=value))
    )
    stored = await user(client, "u1")
    assert stored["attributes"] == {"ok": 1}
    assert stored["events"][0]["attributes"] == {}
    assert rules(await losses(client)) == [(rule, "rejected", "tags")] * 2


async def test_arrays_within_the_rules_are_stored(sandbox: Start) -> None:
    client = await sandbox()
    good = {"a": list(range(50)), "n": [1, 2.5], "s": ["x" * 512], "e": []}
    await accepted(client, customer("u1", **good))
    assert (await user(client, "u1"))["attributes"] == good
    assert (await losses(client))["total"] == 0


async def test_objects_are_rejected_unless_the_account_has_the_object_data_type(
    sandbox: Start,
) -> None:
    plain = await sandbox()
    platforms = [{"platform": "ANDROID", "active": "true"}]
    geo = {"lat": 12.11, "lon": 123.122}
    await accepted(
        plain, customer("u1", address={"city": "Pune"}, platforms=platforms, moe_geo_location=geo)
    )
    assert (await user(plain, "u1"))["attributes"] == {
        "platforms": platforms,
        "moe_geo_location": geo,
    }
    assert rules(await losses(plain)) == [("policy.object", "rejected", "address")]

    with_objects = await sandbox(limits=PolicyLimits(object_data_type=True))
    await accepted(with_objects, customer("u1", address={"city": "Pune"}))
    assert (await user(with_objects, "u1"))["attributes"] == {"address": {"city": "Pune"}}
    assert (await losses(with_objects))["total"] == 0


async def test_custom_user_attributes_past_the_cap_are_rejected(sandbox: Start) -> None:
    client = await sandbox(limits=PolicyLimits(max_user_attributes=2))
    await accepted(client, customer("u1", a=1, b=2, c=3, email="x@example.com"))
    await accepted(client, customer("u2", b=5, d=4, moe_mobile="1"))
    assert (await user(client, "u1"))["attributes"] == {"a": 1, "b": 2, "email": "x@example.com"}
    assert (await user(client, "u2"))["attributes"] == {"b": 5, "moe_mobile": "1"}
    report = await losses(client)
    assert rules(report) == [
        ("policy.user_attribute_cap", "rejected", "c"),
        ("policy.user_attribute_cap", "rejected", "d"),
    ]
    assert report["catalogue"]["user_attributes"] == 2


async def test_events_past_the_cap_are_blacklisted_now_and_later(sandbox: Start) -> None:
    client = await sandbox(limits=PolicyLimits(max_events=2))
    await accepted(client, events("u1", action("A"), action("B"), action("C")))
    await accepted(client, events("u1", action("C"), action("A")))
    stored = await user(client, "u1")
    assert [e["action"] for e in stored["events"]] == ["A", "B", "A"]
    report = await losses(client)
    assert rules(report) == [("policy.event_cap", "blacklisted", "C")] * 2
    assert report["catalogue"]["events"] == 2
    assert report["catalogue"]["blacklisted_events"] == ["C"]


async def test_only_the_first_attributes_of_an_event_up_to_the_cap_are_ingested(
    sandbox: Start,
) -> None:
    client = await sandbox(limits=PolicyLimits(max_event_attributes=2))
    await accepted(client, events("u1", action("Buy", a=1, b=2, c=3)))
    await accepted(client, events("u1", action("Buy", b=5, d=4), action("View", d=1)))
    stored = await user(client, "u1")
    assert [e["attributes"] for e in stored["events"]] == [{"a": 1, "b": 2}, {"b": 5}, {"d": 1}]
    assert [r[:3] for r in rules(await losses(client))] == [
        ("policy.event_attribute_cap", "rejected", "c"),
        ("policy.event_attribute_cap", "rejected", "d"),
    ]


async def test_event_names_with_a_period_are_stored_as_moengage_renames_them(
    sandbox: Start,
) -> None:
    client = await sandbox()
    await accepted(client, events("u1", action("order.placed")))
    assert (await user(client, "u1"))["events"][0]["action"] == "order. Placed"
    assert rules(await losses(client)) == [("policy.event_name_period", "renamed", "order.placed")]
    assert period_name("a.b.c") == "a. B. C"


async def test_a_request_without_moe_appkey_is_answered_and_flagged(sandbox: Start) -> None:
    client = await sandbox()
    without = {k: v for k, v in HEADERS.items() if k != "MOE-APPKEY"}
    await accepted(client, customer("u1", a=1), headers=without)
    await accepted(client, customer("u1", a=1), headers={**HEADERS, "MOE-APPKEY": "OTHER"})
    await accepted(client, customer("u1", a=1))
    report = (await losses(client))["appkey"]
    assert (report["missing"], report["wrong"]) == (1, 1)
    assert [r["problem"] for r in report["requests"]] == ["missing", "not the workspace id"]
    assert all(r["path"] == f"/v1/transition/{WS}" for r in report["requests"])


async def test_reset_forgets_losses_and_the_catalogue(sandbox: Start) -> None:
    client = await sandbox(limits=PolicyLimits(max_events=1))
    await accepted(client, events("u1", action("A"), action("B")))
    assert (await losses(client))["total"] == 1
    async with client.post("/_sandbox/reset") as r:
        assert r.status == 200
    report = await losses(client)
    assert (report["total"], report["catalogue"]["events"], report["losses"]) == (0, 0, [])
    await accepted(client, events("u1", action("B")))
    assert (await losses(client))["total"] == 0  # B is the account's first event now


async def test_the_stop_summary_lists_losses_by_rule(sandbox: Start) -> None:
    client = await sandbox()
    await accepted(client, customer("u1", bio="b" * 600, address={"c": 1}))
    text = losses_summary(client.server.app[STATE])
    assert text.splitlines()[:3] == [
        "sandbox policy losses: 2",
        f"  {'policy.object:rejected':<40} 1",
        f"  {'policy.value_length:truncated':<40} 1",
    ]


def test_the_caps_are_sandbox_options() -> None:
    args = _parser().parse_args(
        ["sandbox", "--max-user-attributes", "3", "--max-events", "4", "--max-event-attributes",
         "5", "--object-data-type"]
    )  # fmt: skip
    assert (
        args.max_user_attributes,
        args.max_events,
        args.max_event_attributes,
        args.object_data_type,
    ) == (3, 4, 5, True)
    defaults = _parser().parse_args(["sandbox"])
    assert (defaults.max_user_attributes, defaults.max_events, defaults.max_event_attributes) == (
        256,
        512,
        100,
    )


def test_losses_are_bounded_but_totals_are_not() -> None:
    policy = AccountPolicy(keep=2)
    for i in range(5):
        policy.customer("r", f"u{i}", {"bio": "b" * 600})
    assert len(policy.losses) == 2
    assert policy.totals == {"policy.value_length:truncated": 5}


async def test_names_already_stored_still_have_their_values_judged(sandbox: Start) -> None:
    client = await sandbox()
    await accepted(client, customer("u1", bio="short"), events("u1", action("Buy", note="n")))
    assert (await losses(client))["total"] == 0
    await accepted(
        client, customer("u1", bio="b" * 513), events("u1", action("Buy", note={"x": 1}))
    )
    stored = await user(client, "u1")
    assert stored["attributes"]["bio"] == "b" * 512
    assert stored["events"][1]["attributes"] == {}
    assert [r[:2] for r in rules(await losses(client))] == [
        ("policy.value_length", "truncated"),
        ("policy.object", "rejected"),
    ]
