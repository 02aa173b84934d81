"""Liveness and readiness: the pure state, and the HTTP server that exposes it with /metrics."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CONTENT_TYPE_LATEST

from connector.errors import FatalApiError, RecordRef, ValidationError
from connector.observability.health import (
    HealthState,
    create_observability_app,
    fatal_reason,
    start_observability_server,
)
from connector.observability.logging import register_secret
from connector.observability.metrics import Metrics

Client = TestClient[web.Request, web.Application]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ready_state() -> HealthState:
    health = HealthState(now=100.0)
    health.set_assigned(3)
    return health


# ----- HealthState --------------------------------------------------------------------------------


def test_live_while_the_loop_ticks_within_the_limit() -> None:
    health = HealthState(now=0.0)
    health.alive_tick(50.0)
    assert health.live(now=100.0, max_silence_s=60) == (True, "ok")


def test_not_live_when_the_loop_is_silent_too_long() -> None:
    health = HealthState(now=0.0)
    ok, reason = health.live(now=61.0, max_silence_s=60)
    assert not ok
    assert reason == "run loop silent for 61.0s (limit 60s)"


def test_an_older_tick_does_not_move_liveness_back() -> None:
    health = HealthState(now=100.0)
    health.alive_tick(10.0)
    assert health.live(now=150.0, max_silence_s=60)[0]


def test_not_ready_without_partitions() -> None:
    assert HealthState(now=0.0).ready() == (False, "no partitions assigned")


def test_ready_with_partitions_no_fatal_error_and_the_api_answering() -> None:
    assert ready_state().ready() == (True, "ok")


def test_not_ready_while_the_api_is_failing() -> None:
    health = ready_state()
    health.set_api_ok(False, "HTTP 503 Server Error: An unexpected error")
    ok, reason = health.ready()
    assert not ok
    assert "MoEngage API not answering" in reason
    assert "HTTP 503" in reason


def test_ready_again_once_the_api_answers() -> None:
    health = ready_state()
    health.set_api_ok(False, "timeout")
    health.set_api_ok(True)
    assert health.ready() == (True, "ok")


def test_not_ready_with_delivery_s_reason_while_throttled() -> None:
    health = ready_state()
    health.set_api_problem("throttled by MoEngage (429) for 75 s")
    assert health.ready() == (False, "throttled by MoEngage (429) for 75 s")
    assert health.checks()["api"] == (False, "throttled by MoEngage (429) for 75 s")


def test_ready_again_once_delivery_reports_no_problem() -> None:
    health = ready_state()
    health.set_api_problem("MoEngage unreachable: retrying for 40 s: HTTP 503 Server Error")
    health.set_api_problem(None)
    assert health.ready() == (True, "ok")


def test_an_api_problem_never_shows_a_registered_secret() -> None:
    register_secret("health-test-problem-secret")
    health = ready_state()
    health.set_api_problem("answers not from MoEngage: HTTP 200: echo health-test-problem-secret")
    reason = health.ready()[1]
    assert "health-test-problem-secret" not in reason
    assert "[redacted]" in reason


def test_fatal_error_is_the_reason_before_anything_else() -> None:
    health = HealthState(now=0.0)
    health.set_api_ok(False)
    health.set_fatal("MoEngage answered 401 Authentication required: check MOENGAGE_API_KEY")
    assert health.ready() == (
        False,
        "MoEngage answered 401 Authentication required: check MOENGAGE_API_KEY",
    )


def test_first_fatal_reason_is_kept() -> None:
    health = ready_state()
    health.set_fatal("first")
    health.set_fatal("second")
    assert health.ready() == (False, "first")


def test_fatal_reason_never_shows_a_registered_secret() -> None:
    register_secret("health-test-secret-key")
    health = ready_state()
    health.set_fatal("refused with health-test-secret-key in it")
    reason = health.ready()[1]
    assert "health-test-secret-key" not in reason
    assert "[redacted]" in reason


def test_excluded_checks_do_not_make_it_unready() -> None:
    health = HealthState(now=0.0)
    health.set_api_ok(False)
    assert health.ready(exclude={"partitions", "api"}) == (True, "ok")


def test_fatal_error_cannot_be_excluded_away() -> None:
    health = HealthState(now=0.0)
    health.set_fatal("bad credentials")
    assert health.ready(exclude={"partitions", "api"}) == (False, "bad credentials")


def test_fatal_reason_of_bad_input_names_the_record_not_its_contents() -> None:
    error = ValidationError("customer_id 'secret-ish-value' is disallowed", rule="customer_id.x")
    reason = fatal_reason(error.at(RecordRef("users", 2, 1041)))
    assert reason == (
        "bad input: record users[2]@1041 failed at validate (customer_id.x); see the log"
    )


def test_fatal_reason_of_an_api_refusal_carries_its_hint() -> None:
    error = FatalApiError(401, "Authentication required", "App Secret key mismatch", "Check it.")
    assert fatal_reason(error) == (
        "MoEngage answered 401 Authentication required: App Secret key mismatch. Check it."
    )


# ----- HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health() -> HealthState:
    return HealthState(now=100.0)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(process_metrics=False)


@pytest.fixture
async def client(health: HealthState, metrics: Metrics, clock: FakeClock) -> AsyncIterator[Client]:
    app = create_observability_app(metrics, health, max_silence_s=30, clock=clock)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_metrics_endpoint_serves_the_registry_as_prometheus_text(
    client: Client, metrics: Metrics
) -> None:
    metrics.record_consumed("users", 0)
    async with client.get("/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await r.text()
    assert 'moengage_connector_records_consumed_total{partition="0",topic="users"} 1.0' in text


async def test_metrics_endpoint_reports_current_readiness(
    client: Client, health: HealthState
) -> None:
    health.set_assigned(1)
    async with client.get("/metrics") as r:
        text = await r.text()
    assert "moengage_connector_ready 1.0" in text


async def test_healthz_is_ok_while_the_loop_ticks(client: Client, clock: FakeClock) -> None:
    clock.now = 120.0
    async with client.get("/healthz") as r:
        assert (r.status, await r.text()) == (200, "ok")


async def test_healthz_is_503_with_the_reason_when_the_loop_stalls(
    client: Client, clock: FakeClock
) -> None:
    clock.now = 131.0
    async with client.get("/healthz") as r:
        assert (r.status, await r.text()) == (503, "run loop silent for 31.0s (limit 30s)")


async def test_readyz_is_503_with_a_json_reason_when_not_ready(client: Client) -> None:
    async with client.get("/readyz") as r:
        assert r.status == 503
        body = await r.json()
    assert body["ready"] is False
    assert body["reason"] == "no partitions assigned"


async def test_readyz_shows_a_fatal_error(client: Client, health: HealthState) -> None:
    health.set_assigned(2)
    health.set_fatal("MoEngage answered 401 Authentication required. Check MOENGAGE_API_KEY")
    async with client.get("/readyz") as r:
        body = await r.json()
    assert (r.status, body["reason"]) == (
        503,
        "MoEngage answered 401 Authentication required. Check MOENGAGE_API_KEY",
    )


async def test_readyz_is_200_when_ready(client: Client, health: HealthState) -> None:
    health.set_assigned(2)
    async with client.get("/readyz") as r:
        assert r.status == 200
        body = await r.json()
    assert body == {
        "ready": True,
        "reason": "ok",
        "checks": {
            "fatal": "ok",
            "kafka": "ok",
            "partitions": "2 partition(s) assigned",
            "api": "ok",
        },
    }


async def test_readyz_says_kafka_brokers_unreachable_rather_than_no_partitions(
    client: Client, health: HealthState
) -> None:
    health.set_kafka_problem("Kafka brokers unreachable: 127.0.0.1:1,127.0.0.1:2")
    async with client.get("/readyz?exclude=partitions") as r:
        assert r.status == 503
        body = await r.json()
    assert body["reason"] == "Kafka brokers unreachable: 127.0.0.1:1,127.0.0.1:2"
    health.set_kafka_problem(None)
    health.set_assigned(1)
    async with client.get("/readyz") as r:
        assert r.status == 200


async def test_readyz_says_why_while_throttled(client: Client, health: HealthState) -> None:
    health.set_assigned(2)
    health.set_api_problem("throttled by MoEngage (429) for 75 s")
    async with client.get("/readyz") as r:
        assert r.status == 503
        body = await r.json()
    assert body["reason"] == "throttled by MoEngage (429) for 75 s"
    assert body["checks"]["api"] == "throttled by MoEngage (429) for 75 s"
    async with client.get("/healthz") as r:
        assert r.status == 200  # throttled is not dead: no restart for it


async def test_readyz_exclude_leaves_checks_out(client: Client, health: HealthState) -> None:
    health.set_api_ok(False)
    async with client.get("/readyz?exclude=partitions&exclude=api") as r:
        assert r.status == 200
        assert set((await r.json())["checks"]) == {"fatal", "kafka"}


async def test_readyz_refuses_an_unknown_exclusion(client: Client) -> None:
    async with client.get("/readyz?exclude=fatal") as r:
        assert r.status == 400
        assert (await r.json())["excludable"] == ["api", "partitions"]


async def test_server_binds_a_free_port_and_serves(metrics: Metrics) -> None:
    health = HealthState(now=asyncio.get_running_loop().time())
    runner, port = await start_observability_server(metrics, health, "127.0.0.1", 0)
    try:
        assert port > 0
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as r,
        ):
            assert r.status == 200
    finally:
        await runner.cleanup()


async def test_server_start_fails_loudly_on_a_taken_port(
    health: HealthState, metrics: Metrics
) -> None:
    runner, port = await start_observability_server(metrics, health, "127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match=r"(?i)address already in use") as raised:
            await start_observability_server(metrics, health, "127.0.0.1", port)
        assert raised.value.errno == errno.EADDRINUSE
    finally:
        await runner.cleanup()
