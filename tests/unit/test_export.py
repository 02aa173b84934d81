"""The Get User API client against the in-process sandbox: chunks, pacing, retries, refusals."""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from connector.errors import FatalApiError
from connector.proof.export import ExportError, ExportResult, export_users, make_bucket
from connector.ratelimit import TokenBucket
from connector.sandbox import SandboxSettings, create_app
from connector.sink.delivery import RetryPolicy

WS = "DEMO_WORKSPACE"
KEY = "demo-api-key"
AUTH = "Basic " + base64.b64encode(f"{WS}:{KEY}".encode()).decode()


class FakeTime:
    """One clock for the sandbox's windows and the client's pacing; sleeping advances it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], Awaitable[None]] | None = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            await self.on_sleep()


class Sandbox:
    def __init__(self, server: TestServer, session: aiohttp.ClientSession, time: FakeTime) -> None:
        self.server = server
        self.session = session
        self.time = time
        self.url = str(server.make_url("")).rstrip("/")

    async def seed(self, *users: tuple[str, dict[str, Any]]) -> None:
        elements = [
            {"type": "customer", "customer_id": cid, "attributes": attrs} for cid, attrs in users
        ]
        body = orjson.dumps({"type": "transition", "elements": elements})
        headers = {"Authorization": AUTH, "Content-Type": "application/json"}
        async with self.session.post(
            f"{self.url}/v1/transition/{WS}", data=body, headers=headers
        ) as r:
            assert r.status == 200

    async def faults(self, **changes: Any) -> None:
        async with self.session.post(f"{self.url}/_sandbox/faults", json=changes) as r:
            assert r.status == 200

    async def statuses(self) -> list[int]:
        async with self.session.get(f"{self.url}/_sandbox/attempts") as r:
            return [status for _, status, _ in await r.json()]

    async def export(self, ids: list[str], **kwargs: Any) -> ExportResult:
        kwargs.setdefault("clock", self.time)
        kwargs.setdefault("sleep", self.time.sleep)
        kwargs.setdefault("api_key", SecretStr(KEY))
        return await export_users(self.session, self.url, WS, customer_ids=ids, **kwargs)


Start = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def sandbox() -> AsyncIterator[Start]:
    servers: list[TestServer] = []
    time = FakeTime()
    session = aiohttp.ClientSession()

    async def start(**settings: Any) -> Sandbox:
        server = TestServer(create_app(SandboxSettings(**settings), clock=time))
        await server.start_server()
        servers.append(server)
        return Sandbox(server, session, time)

    yield start
    await session.close()
    for server in servers:
        await server.close()


async def test_found_users_come_back_with_their_attributes(sandbox: Start) -> None:
    sb = await sandbox()
    await sb.seed(("u1", {"name": "Ann"}), ("u2", {"plan": "pro"}))
    result = await sb.export(["u1", "u2"])
    assert set(result.found) == {"u1", "u2"}
    assert result.found["u1"]["name"] == "Ann"
    assert result.not_found == []


async def test_unknown_users_are_reported_not_found(sandbox: Start) -> None:
    sb = await sandbox()
    await sb.seed(("u1", {"name": "Ann"}))
    result = await sb.export(["u1", "ghost"])
    assert result.not_found == ["ghost"]


async def test_ids_are_sent_in_chunks_of_at_most_twenty(sandbox: Start) -> None:
    sb = await sandbox()
    result = await sb.export([f"u{i}" for i in range(45)])
    assert len(result.not_found) == 45  # the sandbox answers 400 LimitBreached past 20
    assert await sb.statuses() == [200, 200, 200]


async def test_duplicate_ids_are_looked_up_once(sandbox: Start) -> None:
    sb = await sandbox()
    result = await sb.export(["a1", "a1", "b2"])
    assert result.not_found == ["a1", "b2"]


async def test_fields_limit_the_attributes_returned(sandbox: Start) -> None:
    sb = await sandbox()
    await sb.seed(("u1", {"name": "Ann", "plan": "pro"}))
    result = await sb.export(["u1"], fields=["plan"])
    assert result.found["u1"]["plan"] == "pro"
    assert "name" not in result.found["u1"]


async def test_pacing_keeps_within_the_per_minute_budget(sandbox: Start) -> None:
    sb = await sandbox(export_users_per_minute=40)
    await sb.export([f"u{i}" for i in range(100)], users_per_minute=40)
    assert await sb.statuses() == [200] * 5  # never a 429 from the sandbox's 60 s window
    assert sum(sb.time.sleeps) == pytest.approx(240, abs=1)  # 20 now, then 20 a minute


def test_bucket_never_lets_a_minute_hold_more_than_the_budget() -> None:
    now, spent = 0.0, []
    bucket: TokenBucket = make_bucket(1000, 20, now)
    while now < 600:
        now += bucket.wait_time(20, now)
        bucket.take(20, now)
        spent.append(now)
    assert max(sum(1 for t in spent if start <= t < start + 60) for start in spent) * 20 <= 1000


async def test_throttled_request_waits_for_retry_after_and_is_resent(sandbox: Start) -> None:
    sb = await sandbox(export_users_per_minute=20)
    result = await sb.export([f"u{i}" for i in range(40)])
    assert await sb.statuses() == [200, 429, 200]
    assert max(sb.time.sleeps) >= 58  # Retry-After for the rest of the sandbox's window
    assert len(result.not_found) == 40


async def test_server_error_is_retried_with_backoff(sandbox: Start) -> None:
    sb = await sandbox()
    await sb.seed(("u1", {}))
    await sb.faults(outage=True)

    async def recover() -> None:
        await sb.faults(outage=False)

    sb.time.on_sleep = recover
    result = await sb.export(["u1"])
    assert set(result.found) == {"u1"}
    assert (await sb.statuses())[-2:] == [503, 200]


async def test_gives_up_after_max_attempts(sandbox: Start) -> None:
    sb = await sandbox()
    await sb.faults(outage=True)
    with pytest.raises(ExportError, match=r"in 3 attempts \(last: HTTP 503 Server Error"):
        await sb.export(["u1"], max_attempts=3, retry=RetryPolicy(0.1, 1.0))
    assert await sb.statuses() == [503, 503, 503]


async def test_connection_error_is_retried_then_reported(sandbox: Start) -> None:
    sb = await sandbox()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ExportError, match="connection error"):
        await export_users(
            sb.session,
            f"http://127.0.0.1:{port}",
            WS,
            SecretStr(KEY),
            ["u1"],
            max_attempts=2,
            sleep=sb.time.sleep,
        )
    assert len(sb.time.sleeps) == 1


async def test_bad_credentials_are_fatal_with_a_hint_and_no_key(sandbox: Start) -> None:
    sb = await sandbox()
    with pytest.raises(FatalApiError) as raised:
        await sb.export(["u1"], api_key=SecretStr("wrong-key-value"))
    assert raised.value.status == 401
    assert "MOENGAGE_API_KEY" in raised.value.hint
    assert "wrong-key-value" not in str(raised.value)


async def test_suspended_account_is_fatal(sandbox: Start) -> None:
    sb = await sandbox(suspended=True)
    with pytest.raises(FatalApiError) as raised:
        await sb.export(["u1"])
    assert (raised.value.status, raised.value.error_type) == (403, "Account Suspended")


async def test_a_redirect_is_fatal_naming_where_it_points_and_is_not_followed() -> None:
    """verify must not follow a redirect either: the POST would arrive as a body-less GET at
    whatever the Location names (a landing page answering 200)."""
    landed: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(location="/landing")

    async def landing(request: web.Request) -> web.Response:
        landed.append(request.method)
        return web.Response(text="<html>welcome</html>")

    app = web.Application()
    app.router.add_post("/v1/customers/export", moved)
    app.router.add_route("*", "/landing", landing)
    server = TestServer(app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(FatalApiError) as raised:
                await export_users(
                    session, str(server.make_url("")).rstrip("/"), WS, SecretStr(KEY), ["u1"]
                )
    finally:
        await server.close()
    assert landed == []
    assert raised.value.status == 301
    assert "/landing" in str(raised.value)
