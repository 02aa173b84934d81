"""The MoEngage sandbox answers as seeds 000-003 say, through aiohttp's in-process test server."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from connector.sandbox import SandboxSettings, create_app, run, serve

WS = "DEMO_WORKSPACE"
KEY = "demo-api-key"
URL = f"/v1/transition/{WS}"
Client = TestClient[web.Request, web.Application]
Json = dict[str, Any]


def basic(user: str = WS, password: str = KEY) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


HEADERS = {"Authorization": basic(), "Content-Type": "application/json", "MOE-APPKEY": WS}


def customer(cid: str, **attributes: Any) -> Json:
    return {"type": "customer", "customer_id": cid, "attributes": attributes}


def event(cid: str, *names: str) -> Json:
    return {"type": "event", "customer_id": cid, "actions": [{"action": n} for n in names]}


def bulk(*elements: Json) -> Json:
    return {"type": "transition", "elements": list(elements)}


class FakeClock:
    """Monotonic time the test moves by hand, so windows and outages need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Start = Callable[..., Awaitable[Client]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sandbox(clock: FakeClock) -> AsyncIterator[Start]:
    clients: list[Client] = []

    async def start(**settings: Any) -> Client:
        client: Client = TestClient(
            TestServer(create_app(SandboxSettings(**settings), clock=clock))
        )
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def send(
    client: Client,
    body: Any = None,
    *,
    path: str = URL,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Json, Any]:
    data = raw if raw is not None else orjson.dumps(body)
    async with client.post(path, data=data, headers=HEADERS if headers is None else headers) as r:
        return r.status, orjson.loads(await r.read()), r.headers


def assert_fail(body: Json, message: str, error_type: str, attribute: str | None = None) -> None:
    error = dict(body["error"])
    assert body["status"] == "fail"
    assert re.fullmatch(r"[A-Za-z]{8}", error.pop("request_id"))
    expected = {"message": message, "type": error_type}
    if attribute is not None:
        expected["attribute"] = attribute
    assert error == expected


async def test_valid_bulk_request_is_accepted_with_the_seed_success_body(sandbox: Start) -> None:
    client = await sandbox()
    status, body, _ = await send(client, bulk(customer("u1", name="John"), event("u1", "Buy")))
    assert (status, body) == (
        200,
        {
            "status": "success",
            "message": "Your request has been accepted and will be processed soon.",
        },
    )


async def test_app_id_may_be_given_as_query_parameter(sandbox: Start) -> None:
    client = await sandbox()
    status, _, _ = await send(client, bulk(customer("u1")), path=f"/v1/transition?app_id={WS}")
    assert status == 200


async def test_healthz_answers_ok(sandbox: Start) -> None:
    client = await sandbox()
    async with client.get("/healthz") as response:
        assert response.status == 200


AUTH_CASES = [
    (None, "Authentication Header Required"),
    ("", "No identity information found"),
    ("Bearer abc", "Invalid identity information found"),
    ("Basic %%%notbase64", "Invalid identity information found"),
    ("Basic " + base64.b64encode(b"no-colon").decode(), "Invalid identity information found"),
    (basic(user="OTHER"), "Invalid APP_ID used in Authentication Header"),
    (
        basic(password="wrong"),
        "App Secret key mismatch. Please login to the dashboard to verify key",
    ),
    (basic(password=""), "APP_SECRET missing in the authentication header"),
]


@pytest.mark.parametrize(("authorization", "message"), AUTH_CASES)
async def test_bad_credentials_are_401(
    sandbox: Start, authorization: str | None, message: str
) -> None:
    client = await sandbox()
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    status, body, _ = await send(client, bulk(customer("u1")), headers=headers)
    assert status == 401
    assert_fail(body, message, "Authentication required")


@pytest.mark.parametrize("path", ["/v1/transition/OTHER", f"{URL}?app_id=OTHER"])
async def test_app_id_differing_from_credentials_is_409(sandbox: Start, path: str) -> None:
    client = await sandbox()
    status, body, _ = await send(client, bulk(customer("u1")), path=path)
    assert status == 409
    assert_fail(body, "App key mismatch in params and authentication", "Authentication Mismatch")


async def test_missing_app_id_is_400_params_required(sandbox: Start) -> None:
    client = await sandbox()
    status, body, _ = await send(client, bulk(customer("u1")), path="/v1/transition")
    assert status == 400
    assert_fail(body, "app_id is required in path/query params.", "ParamsRequired")


async def test_suspended_account_is_403(sandbox: Start) -> None:
    client = await sandbox(suspended=True)
    status, body, _ = await send(client, bulk(customer("u1")))
    assert status == 403
    assert_fail(
        body, "Your account is suspended. Please contact MoEngage team.", "Account Suspended"
    )


@pytest.mark.parametrize("content_type", ["text/plain", None])
async def test_non_json_content_type_is_415(sandbox: Start, content_type: str | None) -> None:
    client = await sandbox()
    headers = {"Authorization": basic()}
    if content_type:
        headers["Content-Type"] = content_type
    status, body, _ = await send(client, bulk(customer("u1")), headers=headers)
    assert status == 415
    assert_fail(body, "Content type is not supported", "Unsupported media type")


async def test_checks_run_in_documented_order_auth_before_content_type(sandbox: Start) -> None:
    client = await sandbox()
    status, _, _ = await send(client, raw=b"x", headers={"Content-Type": "text/plain"})
    assert status == 401


async def test_body_over_the_limit_is_413_and_counted_as_seen(sandbox: Start) -> None:
    client = await sandbox(max_body_bytes=1000)
    status, body, _ = await send(client, bulk(customer("u1", blob="x" * 2000)))
    assert status == 413
    assert_fail(body, "Payload can not exceed 128KB", "Payload too large")
    async with client.get("/_sandbox/stats") as response:
        assert (await response.json())["max_body_bytes_seen"] > 2000


MALFORMED = "Could not decode the request body. The JSON was incorrect or not encoded as UTF-8"
ELEMENT_MALFORMED = (
    "Could not decode the request body. The JSON was incorrect or not decoded as UTF-8."
)


@pytest.mark.parametrize("raw", [b"{not json", b'{"type": "\xff"}', b"[1, 2]", b'"transition"'])
async def test_undecodable_body_is_400_malformed_json(sandbox: Start, raw: bytes) -> None:
    client = await sandbox()
    status, body, _ = await send(client, raw=raw)
    assert status == 400
    assert_fail(body, MALFORMED, "Malformed JSON")


async def test_empty_body_is_400_empty_request_body(sandbox: Start) -> None:
    client = await sandbox()
    status, body, _ = await send(client, raw=b"")
    assert status == 400
    assert_fail(body, "A valid JSON document is required", "Empty request body")


NO_ACTION = ("action cannot be empty Unicode string", "MissingAttributeError", "action")
NO_ID = ("customer_id not found in the payload", "MissingAttributeError", "customer_id")
BAD_BODIES: list[tuple[Json, tuple[str, str, str | None]]] = [
    (
        {"elements": [customer("u1")]},
        ("type is expected to be transition", "AttributeError", "type"),
    ),
    (
        {"type": "transition"},
        ("elements cannot be empty array", "MissingAttributeError", "elements"),
    ),
    (bulk(), ("elements cannot be empty array", "MissingAttributeError", "elements")),
    ({"type": "transition", "elements": ["u1"]}, (ELEMENT_MALFORMED, "Malformed JSON", None)),
    (
        bulk({"type": "user", "customer_id": "u1"}),
        ("type in elements should be customer/event/device", "AttributeError", "type"),
    ),
    (bulk({"type": "customer", "attributes": {"name": "x"}}), NO_ID),
    (bulk({"type": "device", "device_id": "d1"}), NO_ID),
    (bulk({"type": "event", "actions": [{"action": "Buy"}]}), NO_ID),
    (
        bulk(customer("")),
        ("customer_id can not be empty Unicode String", "MissingAttributeError", "customer_id"),
    ),
    (bulk({"type": "event", "customer_id": "u1"}), NO_ACTION),
    (bulk({"type": "event", "customer_id": "u1", "actions": []}), NO_ACTION),
    (bulk(event("u1", "")), NO_ACTION),
    (bulk({"type": "event", "customer_id": "u1", "actions": [{"platform": "iOS"}]}), NO_ACTION),
]


@pytest.mark.parametrize(("payload", "expected"), BAD_BODIES)
async def test_body_breaking_a_seed_rule_is_400_with_its_error(
    sandbox: Start, payload: Json, expected: tuple[str, str, str | None]
) -> None:
    client = await sandbox()
    status, body, _ = await send(client, payload)
    assert status == 400
    assert_fail(body, *expected)


async def test_invalid_request_applies_nothing(sandbox: Start) -> None:
    client = await sandbox()
    await send(client, bulk(customer("u1"), event("u1", "")))
    async with client.get("/_sandbox/users") as response:
        assert await response.json() == {}


async def users(client: Client) -> Json:
    async with client.get("/_sandbox/users") as response:
        result: Json = await response.json()
        return result


async def test_customer_attributes_merge_across_requests(sandbox: Start) -> None:
    client = await sandbox()
    await send(client, bulk(customer("u1", name="John", plan="free")))
    await send(client, bulk(customer("u1", plan="pro", age=30)))
    assert (await users(client))["u1"]["attributes"] == {"name": "John", "plan": "pro", "age": 30}


@pytest.mark.parametrize("flag", [True, "true"])
async def test_update_existing_only_ignores_unknown_users(sandbox: Start, flag: object) -> None:
    client = await sandbox()
    status, _, _ = await send(client, bulk({**customer("new", a=1), "update_existing_only": flag}))
    assert status == 200
    assert await users(client) == {}


async def test_update_existing_only_updates_known_users(sandbox: Start) -> None:
    client = await sandbox()
    await send(client, bulk(customer("u1", a=1)))
    await send(client, bulk({**customer("u1", b=2), "update_existing_only": "true"}))
    assert (await users(client))["u1"]["attributes"] == {"a": 1, "b": 2}


async def test_events_and_devices_are_stored_and_create_the_user(sandbox: Start) -> None:
    client = await sandbox()
    device = {"type": "device", "customer_id": "u2", "device_id": "d1", "attributes": {"os": "x"}}
    action = {"action": "Buy", "attributes": {"sku": 7}, "current_time": 1590404615}
    evt = {"type": "event", "customer_id": "u2", "device_id": "d1", "actions": [action]}
    await send(client, bulk(device, evt))
    user = (await users(client))["u2"]
    assert user["devices"] == {"d1": {"os": "x"}}
    assert user["events"] == [{**action, "device_id": "d1"}]
    assert user["attributes"] == {}


async def test_identity_resolution_keys_users_by_their_first_moe_identifier(sandbox: Start) -> None:
    client = await sandbox()
    person = {"type": "customer", "attributes": {"moe_mobile": "+911", "first_name": "J"}}
    evt = {
        "type": "event",
        "user_identifiers": {"moe_mobile": "+911"},
        "actions": [{"action": "A"}],
    }
    status, _, _ = await send(client, bulk(person, evt))
    assert status == 200
    user = (await users(client))["moe_mobile:+911"]
    assert (user["attributes"]["first_name"], len(user["events"])) == ("J", 1)


async def test_users_over_budget_get_429_with_retry_after(sandbox: Start, clock: FakeClock) -> None:
    client = await sandbox(users_per_minute=3)
    assert (await send(client, bulk(customer("a"), customer("b"), customer("c"))))[0] == 200
    clock.advance(10)
    status, body, headers = await send(client, bulk(customer("d")))
    assert status == 429
    assert_fail(
        body,
        "Rate limits for customers exceeded. Please Try After Some Time",
        "Rate Limits Exceeded",
    )
    assert headers["Retry-After"] == "50"


async def test_events_over_budget_get_429_in_event_words(sandbox: Start) -> None:
    client = await sandbox(events_per_minute=2)
    status, body, _ = await send(client, bulk(event("u1", "A", "B", "C")))
    assert status == 429
    assert body["error"]["message"] == "Rate limits for events exceeded. Please Try After Some Time"


async def test_devices_count_as_users(sandbox: Start) -> None:
    client = await sandbox(users_per_minute=1)
    device = {"type": "device", "customer_id": "u1", "device_id": "d1"}
    assert (await send(client, bulk(customer("u1"), device)))[0] == 429


async def test_rejected_request_consumes_no_budget(sandbox: Start) -> None:
    client = await sandbox(users_per_minute=3)
    assert (await send(client, bulk(customer("a"), customer("b"))))[0] == 200
    assert (await send(client, bulk(customer("c"), customer("d"))))[0] == 429
    assert (await send(client, bulk(customer("c"))))[0] == 200


async def test_retry_after_waits_only_for_enough_of_the_window(
    sandbox: Start, clock: FakeClock
) -> None:
    client = await sandbox(users_per_minute=3)
    await send(client, bulk(customer("a"), customer("b")))
    clock.advance(30)
    await send(client, bulk(customer("c")))
    clock.advance(10)
    _, _, headers = await send(client, bulk(customer("d"), customer("e")))
    assert headers["Retry-After"] == "20"


async def test_budget_frees_up_when_the_window_passes(sandbox: Start, clock: FakeClock) -> None:
    client = await sandbox(users_per_minute=1, window_seconds=0.5)
    await send(client, bulk(customer("a")))
    assert (await send(client, bulk(customer("b"))))[0] == 429
    clock.advance(0.5)
    assert (await send(client, bulk(customer("b"))))[0] == 200


async def test_retry_after_header_can_be_turned_off(sandbox: Start) -> None:
    client = await sandbox(users_per_minute=1, retry_after=False)
    status, _, headers = await send(client, bulk(customer("a"), customer("b")))
    assert status == 429
    assert "Retry-After" not in headers


EXPORT = "/v1/customers/export"


def lookup(*ids: str, **extra: Any) -> Json:
    identifiers = [{"identifier_type": "customer_id", "identifier": i} for i in ids]
    return {"data": {"identifiers": identifiers}, **extra}


async def test_export_returns_found_users_in_the_seed_shape(sandbox: Start) -> None:
    client = await sandbox()
    await send(client, bulk(customer("john", name="John", last_name="Doe")))
    status, body, _ = await send(client, lookup("john", "ghost"), path=EXPORT)
    assert status == 200
    assert (body["status"], body["type"]) == ("success", "export_users")
    assert body["data"]["users_not_found"] == [
        {"identifier_type": "customer_id", "identifier": "ghost"}
    ]
    [found] = body["data"]["users"]
    attributes = found["user_attributes"]
    assert re.fullmatch(r"[0-9a-f]{24}", attributes.pop("id"))
    assert attributes == {"name": "John", "last_name": "Doe", "customer_id": "john"}


async def test_export_moengage_id_is_stable_and_usable_as_identifier(sandbox: Start) -> None:
    client = await sandbox()
    await send(client, bulk(customer("john", name="John")))
    first = (await send(client, lookup("john"), path=EXPORT))[1]
    moe_id = first["data"]["users"][0]["user_attributes"]["id"]
    by_id = {"identifiers": [{"identifier_type": "id", "identifier": moe_id}]}
    second = (await send(client, by_id, path=EXPORT))[1]
    assert second["data"]["users"] == first["data"]["users"]


async def test_export_honours_user_fields_to_export(sandbox: Start) -> None:
    client = await sandbox()
    await send(client, bulk(customer("john", name="John", plan="pro")))
    body = (await send(client, lookup("john", user_fields_to_export=["plan"]), path=EXPORT))[1]
    assert set(body["data"]["users"][0]["user_attributes"]) == {"plan", "customer_id", "id"}


EXPORT_ERRORS: list[tuple[Json, tuple[str, str, str]]] = [
    ({}, ("data is not found in the payload", "MissingAttributeError", "data")),
    (
        {"data": {}},
        ("identifiers is not found in the payload", "MissingAttributeError", "identifiers"),
    ),
    (
        lookup(*[f"u{i}" for i in range(21)]),
        ("max limit allowed is 20", "LimitBreached", "payload.users"),
    ),
]


@pytest.mark.parametrize(("payload", "expected"), EXPORT_ERRORS)
async def test_bad_export_request_is_400(
    sandbox: Start, payload: Json, expected: tuple[str, str, str]
) -> None:
    client = await sandbox()
    status, body, _ = await send(client, payload, path=EXPORT)
    assert status == 400
    assert_fail(body, *expected)


async def test_export_over_budget_is_429(sandbox: Start) -> None:
    client = await sandbox(export_users_per_minute=2)
    status, body, _ = await send(client, lookup("a", "b", "c"), path=EXPORT)
    assert status == 429
    assert body["error"]["type"] == "Rate Limits Exceeded"


async def test_export_needs_credentials(sandbox: Start) -> None:
    client = await sandbox()
    headers = {"Content-Type": "application/json"}
    assert (await send(client, lookup("a"), path=EXPORT, headers=headers))[0] == 401


async def test_export_with_a_wrong_key_is_401_as_the_get_user_page_shows(sandbox: Start) -> None:
    client = await sandbox()
    wrong = base64.b64encode(f"{WS}:not-the-key".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {wrong}"}
    status, body, _ = await send(client, lookup("nobody"), path=EXPORT, headers=headers)
    assert status == 401
    assert_fail(
        body,
        "App Secret key mismatch. Please login to the dashboard to verify key",
        "Authentication required",
    )
    status, body, _ = await send(client, lookup("nobody"), path=EXPORT)
    assert (status, body["data"]["users_not_found"]) == (
        200,
        [{"identifier_type": "customer_id", "identifier": "nobody"}],
    )
    async with client.get("/_sandbox/stats") as response:
        stats = await response.json()
    # Counted apart from Bulk Import requests, which the connector's metrics compare with.
    assert (stats["requests_total"], stats["export_requests_by_status"]) == (
        0,
        {"401": 1, "200": 1},
    )


async def test_accepted_requests_are_recorded_as_json_lines(sandbox: Start, tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    client = await sandbox(record_path=str(record))
    await send(client, bulk(customer("a")))
    await send(client, bulk(customer("")))
    await send(client, bulk(customer("b")))
    lines = [orjson.loads(line) for line in record.read_bytes().splitlines()]
    assert [line["body"] for line in lines] == [bulk(customer("a")), bulk(customer("b"))]
    assert all(re.fullmatch(r"[A-Za-z]{8}", line["request_id"]) for line in lines)
    assert all(isinstance(line["ts"], float) for line in lines)


async def test_stats_count_requests_elements_and_bytes(sandbox: Start) -> None:
    client = await sandbox()
    payload = bulk(customer("a"), event("a", "X", "Y"))
    await send(client, payload)
    await send(client, bulk())
    async with client.get("/_sandbox/stats") as response:
        stats = await response.json()
    size = len(orjson.dumps(payload))
    assert stats == {
        "requests_total": 2,
        "requests_by_status": {"200": 1, "400": 1},
        "export_requests_by_status": {},
        "accepted_requests": 1,
        "elements_by_type": {"customer": 1, "event": 1},
        "actions_total": 2,
        "bytes_accepted": size,
        "users": 1,
        "max_body_bytes_seen": size,
        "policy_losses": 0,
        "missing_appkey": 0,
        "wrong_appkey": 0,
    }


async def test_requests_endpoint_lists_accepted_bodies_in_order_bounded(sandbox: Start) -> None:
    client = await sandbox(keep_requests=2)
    for name in ("a", "b", "c"):
        await send(client, bulk(customer(name)))
    async with client.get("/_sandbox/requests") as response:
        assert await response.json() == [bulk(customer("b")), bulk(customer("c"))]


async def test_requests_endpoint_returns_bodies_as_sent_whitespace_and_escapes_included(
    sandbox: Start,
) -> None:
    client = await sandbox()
    raw = (
        b' \n{"type": "transition",\n "elements": [{"type": "customer", "customer_id": "a",'
        b' "attributes": {"name": "\\u00e9t\xc3\xa9 \\"q\\"", "n": 1.5e3}}]} \n'
    )
    status, _, _ = await send(client, raw=raw)
    assert status == 200
    async with client.get("/_sandbox/requests") as response:
        assert response.content_type == "application/json"
        assert await response.json() == [orjson.loads(raw)]


async def test_user_can_be_read_and_deleted(sandbox: Start) -> None:
    client = await sandbox()
    await send(client, bulk(customer("a", x=1)))
    async with client.get("/_sandbox/users/a") as response:
        assert (await response.json())["attributes"] == {"x": 1}
    async with client.delete("/_sandbox/users/a") as response:
        assert response.status == 204
    async with client.get("/_sandbox/users/a") as response:
        assert response.status == 404


async def test_reset_clears_users_stats_and_budgets(sandbox: Start) -> None:
    client = await sandbox(users_per_minute=1)
    await send(client, bulk(customer("a")))
    async with client.post("/_sandbox/reset") as response:
        assert response.status == 200
    assert (await users(client)) == {}
    assert (await send(client, bulk(customer("b"))))[0] == 200


SERVER_ERROR = (
    "An unexpected error was encountered while processing this request. "
    "Please contact MoEngage Team"
)


@pytest.mark.parametrize("fail_status", [500, 503])
async def test_injected_failure_answers_server_error_before_anything_else(
    sandbox: Start, fail_status: int
) -> None:
    client = await sandbox(fail_rate=1.0, fail_status=fail_status)
    status, body, _ = await send(client, bulk(customer("a")), headers={})
    assert status == fail_status
    assert_fail(body, SERVER_ERROR, "Server Error")
    assert await users(client) == {}


async def test_seeded_failures_repeat_exactly(sandbox: Start) -> None:
    runs = []
    for _ in range(2):
        client = await sandbox(fail_rate=0.5, seed=7)
        runs.append([(await send(client, bulk(customer("a"))))[0] for _ in range(20)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 503}


async def test_configured_outage_fails_requests_only_during_it(
    sandbox: Start, clock: FakeClock
) -> None:
    client = await sandbox(outage=(10.0, 5.0))
    statuses = []
    for step in (0, 10, 4.9, 0.1):
        clock.advance(step)
        statuses.append((await send(client, bulk(customer("a"))))[0])
    assert statuses == [200, 503, 503, 200]


async def test_faults_endpoint_switches_an_outage_on_and_off(sandbox: Start) -> None:
    client = await sandbox()
    async with client.post("/_sandbox/faults", json={"outage": True, "fail_status": 500}):
        pass
    assert (await send(client, bulk(customer("a"))))[0] == 500
    async with client.post("/_sandbox/faults", json={"outage": False}) as response:
        assert (await response.json())["outage"] is False
    assert (await send(client, bulk(customer("a"))))[0] == 200


async def test_faults_endpoint_refuses_bad_values_and_changes_nothing(sandbox: Start) -> None:
    client = await sandbox()
    async with client.post("/_sandbox/faults", json={"outage": True, "fail_rate": 2}) as response:
        assert response.status == 400
    async with client.get("/_sandbox/faults") as response:
        assert (await response.json())["outage"] is False


async def test_latency_is_added_to_every_data_request(
    sandbox: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await sandbox()
    async with client.post("/_sandbox/faults", json={"latency_ms": 250}):
        pass
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any, **kwargs: Any) -> Any:
        delays.append(delay)
        return await real_sleep(0, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    await send(client, bulk(customer("a")))
    assert 0.25 in delays


async def test_logs_never_carry_the_api_key_or_authorization(sandbox: Start) -> None:
    client = await sandbox()
    with capture_logs() as logs:
        await send(client, bulk(customer("a")))
        await send(client, bulk(customer("a")), headers={**HEADERS, "Authorization": basic("x")})
    assert logs
    text = repr(logs)
    assert KEY not in text
    assert basic() not in text
    assert basic()[6:] not in text


async def test_serve_listens_on_the_port_it_returns() -> None:
    runner, port = await serve(SandboxSettings())
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status == 200
    finally:
        await runner.cleanup()


class _StopOnAnnouncement:
    """A stdout that sends this process SIGTERM once the sandbox announces itself."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        if "sandbox listening on" in text:
            os.kill(os.getpid(), signal.SIGTERM)
        return len(text)

    def flush(self) -> None:
        pass


def test_run_announces_its_address_and_stops_on_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = _StopOnAnnouncement()
    monkeypatch.setattr(sys, "stdout", stdout)
    run(SandboxSettings(), host="127.0.0.1", port=0)
    assert re.search(r"^sandbox listening on http://127\.0\.0\.1:[1-9]\d*$", stdout.text, re.M)


def test_settings_repr_leaves_the_api_key_out() -> None:
    assert "s3cret-key" not in repr(SandboxSettings(api_key="s3cret-key"))


# ----- faults added for the fault-injection suite -------------------------------------------------


async def admin(client: Client, body: Json) -> Json:
    async with client.post("/_sandbox/faults", json=body) as r:
        assert r.status == 200
        result: Json = await r.json()
        return result


async def get(client: Client, path: str) -> Any:
    async with client.get(path) as r:
        return await r.json()


async def test_fail_customers_fails_only_requests_holding_those_customers(sandbox: Start) -> None:
    client = await sandbox()
    await admin(client, {"fail_customers": ["blocked"], "fail_status": 503})
    blocked, _, _ = await send(client, bulk(customer("blocked"), customer("fine")))
    fine, _, _ = await send(client, bulk(customer("fine")))
    assert (blocked, fine) == (503, 200)
    assert set(await get(client, "/_sandbox/users")) == {"fine"}


async def test_a_poison_customer_from_the_settings_fails_every_request_holding_it(
    sandbox: Start,
) -> None:
    client = await sandbox(fail_customers=("poison",), fail_status=500)
    for _ in range(3):  # every time, not at random
        status, body, _ = await send(client, bulk(customer("fine"), customer("poison")))
        assert status == 500
        assert body["error"]["type"] == "Server Error"
    assert (await send(client, bulk(customer("fine"))))[0] == 200
    assert (await get(client, "/_sandbox/faults"))["fail_customers"] == ["poison"]


def test_the_command_line_names_poison_customers() -> None:
    from connector.cli import _parser  # noqa: PLC0415

    args = _parser().parse_args(
        ["sandbox", "--fail-customer", "a", "--fail-customer", "b", "--fail-status", "500"]
    )
    assert (args.fail_customer, args.fail_status) == (["a", "b"], 500)


async def test_ack_delay_accepts_first_then_answers(sandbox: Start) -> None:
    client = await sandbox()
    await admin(client, {"ack_delay_ms": 1, "ack_delay_count": 1})
    status, _, _ = await send(client, bulk(customer("late")))
    assert status == 200
    assert (await get(client, "/_sandbox/faults"))["ack_delay_count"] == 0
    assert "late" in await get(client, "/_sandbox/users")


async def test_attempts_lists_every_answer_with_its_retry_after(sandbox: Start) -> None:
    client = await sandbox(users_per_minute=1)
    await send(client, bulk(customer("a")))
    await send(client, bulk(customer("b")))
    attempts = await get(client, "/_sandbox/attempts")
    assert [a[1] for a in attempts] == [200, 429]
    assert attempts[0][2] is None
    assert attempts[1][2] >= 1
