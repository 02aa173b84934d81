"""The start-up credentials check against the in-process sandbox's Get User API."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from structlog.testing import capture_logs

from connector.config import Credentials, Settings, parse_settings
from connector.credcheck import CheckResult, check_credentials
from connector.errors import FatalApiError
from connector.sandbox import SandboxSettings, create_app
from tests.unit.configs import minimal_raw

WS = "DEMO_WORKSPACE"
KEY = "demo-api-key"


class FakeTime:
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


def settings(url: str, **moengage: Any) -> Settings:
    raw = minimal_raw(moengage={"base_url": url, "retry_initial_ms": 100, **moengage})
    return parse_settings(raw, base_dir=Path("."), environ={})


Check = Callable[..., Awaitable[CheckResult]]


def ours(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The check's events, without the sandbox's own."""
    return [e for e in logs if not e["event"].startswith("sandbox.")]


@pytest.fixture
async def run() -> AsyncIterator[tuple[Callable[..., Awaitable[str]], Check, FakeTime]]:
    """Start a sandbox (``start(**sandbox_settings)`` -> its URL) and run checks against it."""
    servers: list[TestServer] = []
    time = FakeTime()
    session = aiohttp.ClientSession()

    async def start(**sandbox: Any) -> str:
        server = TestServer(create_app(SandboxSettings(**sandbox), clock=time))
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    async def check(url: str, key: str = KEY, **moengage: Any) -> CheckResult:
        creds = Credentials(workspace_id=WS, api_key=SecretStr(key))
        return await check_credentials(
            session, settings(url, **moengage), creds, clock=time, sleep=time.sleep
        )

    yield start, check, time
    await session.close()
    for server in servers:
        await server.close()


async def test_the_right_key_is_confirmed_in_one_request(run: Any) -> None:
    start, check, time = run
    url = await start()
    with capture_logs() as logs:
        result = await check(url)
    assert result.confirmed
    assert time.sleeps == []
    assert [e["event"] for e in ours(logs)] == ["moengage_credentials_accepted"]


async def test_a_wrong_key_is_refused_at_once_and_the_log_never_shows_it(run: Any) -> None:
    start, check, time = run
    url = await start()
    wrong = "wrong-key-4f1c9a"
    with capture_logs() as logs, pytest.raises(FatalApiError) as refused:
        await check(url, key=wrong)
    assert refused.value.status == 401
    assert time.sleeps == []  # a refusal is not retried
    [event] = ours(logs)
    assert event["event"] == "moengage_credentials_refused"
    assert "refused the connector's credentials" in event["message"]
    assert "App Secret key mismatch" in event["message"]
    assert wrong not in repr(logs)
    assert wrong not in str(refused.value)


async def test_a_suspended_account_is_refused_too(run: Any) -> None:
    start, check, _ = run
    url = await start(suspended=True)
    with pytest.raises(FatalApiError) as refused:
        await check(url)
    assert refused.value.status == 403


async def test_server_errors_are_retried_with_backoff_until_an_answer(run: Any) -> None:
    start, check, time = run
    url = await start(fail_rate=1.0, fail_status=503)
    calls = 0

    async def recover() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            async with (
                aiohttp.ClientSession() as s,
                s.post(f"{url}/_sandbox/faults", json={"fail_rate": 0.0}) as r,
            ):
                assert r.status == 200

    time.on_sleep = recover
    with capture_logs() as logs:
        result = await check(url)
    assert result.confirmed
    assert len(time.sleeps) == 3
    retries = [e for e in logs if e["event"] == "moengage_credentials_check_retry"]
    assert [e["attempt"] for e in retries] == [1, 2, 3]
    assert "503" in retries[0]["last"]


async def test_no_answer_is_retried_for_the_bound_then_start_up_goes_on(run: Any) -> None:
    _, check, time = run
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with capture_logs() as logs:
        result = await check(closed, startup_check_seconds=10, retry_max_ms=2000)
    assert not result.confirmed
    assert "connection error" in result.detail
    assert len(time.sleeps) >= 3  # retried, with backoff
    assert sum(time.sleeps) <= 10  # within the bound
    assert ours(logs)[-1]["event"] == "moengage_credentials_unconfirmed"
