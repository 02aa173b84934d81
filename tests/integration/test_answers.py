"""Only MoEngage's own answers count, on the real broker with small fakes on loopback.

A redirect, a 200 that is not MoEngage's success answer, and a 400 or 413 that does not carry
MoEngage's error body (a proxy's, a firewall's, a captive portal's) never acknowledge a record and
never blame one: nothing is committed, skipped or dead-lettered, and the connector stops with exit
3 (at once for a redirect, after ``moengage.unexpected_answer_max_seconds`` otherwise). MoEngage's
own 400 about one element is still bisected down to that element.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from confluent_kafka import Consumer, TopicPartition

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import committed_offsets, produce
from connector.devtools.servers import BackgroundApp
from connector.sandbox.server import STATE, create_app
from connector.sandbox.state import SandboxSettings
from tests.integration.conftest import (
    API_KEY,
    WORKSPACE,
    ConnectorProcess,
    all_committed,
    base_config,
    fresh_topic,
    wait_until,
)

RECORDS = 20
BOUND_S = 3.0  # moengage.unexpected_answer_max_seconds in these runs
FATAL_API = 3
MAPPING = {"type": "customer", "customer_id": "id", "attributes": {"drop": ["id"]}}
HTML = "<html><head><title>{status}</title></head><body>Request blocked by policy</body></html>"

Factory = Callable[..., ConnectorProcess]


def answers_config(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The integration config, without the start-up credential check: these fakes stand for a
    proxy in front of the Bulk Import API, and what is on trial is how delivery reads its
    answers (the check has tests of its own: tests/integration/test_startup.py)."""
    cfg: dict[str, Any] = base_config(*args, **kwargs)
    cfg["moengage"]["startup_check_seconds"] = 0
    return cfg


class Fake:
    """An aiohttp app on 127.0.0.1 in this process, counting what reaches each route."""

    def __init__(self, app: web.Application) -> None:
        self.hits: list[tuple[float, str, str, int]] = []  # time, method, path, body bytes
        self._lock = threading.Lock()
        app.middlewares.append(self._count)
        self.server = BackgroundApp(app).start()

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # Not read here: the sandbox streams the body itself to count its bytes.
        size = request.content_length or 0
        with self._lock:
            self.hits.append((time.monotonic(), request.method, request.path, size))
        response: web.StreamResponse = await handler(request)
        return response

    def posts(self) -> list[tuple[float, str, str, int]]:
        with self._lock:
            return [h for h in self.hits if h[1] == "POST"]

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def fakes() -> Iterator[Callable[[web.Application], Fake]]:
    started: list[Fake] = []

    def make(app: web.Application) -> Fake:
        fake = Fake(app)
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.server.stop()


def answering(status: int, body: str, content_type: str = "text/html") -> web.Application:
    """A stand-in that answers every Bulk Import POST the same way."""

    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type=content_type)

    app = web.Application()
    app.router.add_post("/v1/transition/{workspace}", handler)
    return app


def users_topic(broker: LocalBroker, names: Callable[[str], str]) -> tuple[str, dict[int, int]]:
    topic = fresh_topic(broker, names("users"), 2)
    rows = [{"id": f"user-{i:03d}", "plan": "pro"} for i in range(RECORDS)]
    ends = produce(
        broker.bootstrap, topic, [(r["id"].encode(), json.dumps(r).encode()) for r in rows]
    )
    return topic, ends


def nothing_committed(broker: LocalBroker, group: str, topic: str) -> None:
    committed = committed_offsets(broker.bootstrap, group, topic)
    assert all(offset < 0 for offset in committed.values()), committed


def dead_letters(broker: LocalBroker, topic: str, names: Callable[[str], str]) -> list[Any]:
    """Everything on the dead-letter topic (read to its end: poll until it has nothing more)."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": names("reader")})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    try:
        while (m := c.poll(2)) is not None:
            if m.error() is None:
                got.append(m)
    finally:
        c.close()
    return got


def exit_code(proc: ConnectorProcess, timeout: float) -> int:
    wait_until(lambda: not proc.running(), timeout, "the connector to stop on its own")
    return proc.wait(1)


def stopped_event(proc: ConnectorProcess) -> dict[str, Any]:
    stopped = [e for e in proc.log_events() if e.get("event") == "connector_stopped"]
    assert len(stopped) == 1, proc.log()[-3000:]
    return stopped[0]


def no_record_blamed(proc: ConnectorProcess) -> None:
    events = {e.get("event") for e in proc.log_events()}
    assert "bad_record" not in events
    assert "request_divided" not in events
    summary = stopped_event(proc)
    assert (summary["bad_records"], summary["skipped"], summary["dead_lettered"]) == (0, 0, 0)


def test_a_redirect_is_fatal_naming_the_location_and_commits_nothing(
    broker: LocalBroker, connector: Factory, names: Callable[[str], str], fakes: Any
) -> None:
    """An http:// base URL in front of an https:// endpoint, or a captive proxy: 301 -> /landing,
    whose 200 used to be taken for MoEngage's."""

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/landing")

    async def landing(_: web.Request) -> web.Response:
        return web.json_response({"status": "success"})

    app = web.Application()
    app.router.add_post("/v1/transition/{workspace}", moved)
    app.router.add_route("*", "/landing", landing)
    fake = fakes(app)
    topic, _ = users_topic(broker, names)
    group = names("group")
    cfg = answers_config(broker, fake.url, group, [_spec(topic, "skip")])
    proc = connector(cfg)

    assert exit_code(proc, 60) == FATAL_API
    assert fake.posts()  # it did ask
    assert [h for h in fake.hits if h[2] == "/landing"] == []  # and never followed
    nothing_committed(broker, group, topic)
    reason = stopped_event(proc)["reason"]
    assert f"{fake.url}/landing" in reason
    assert "redirect" in reason
    assert API_KEY not in proc.log()


def test_a_200_that_is_not_moengage_s_answer_commits_nothing_and_ends_fatal(
    broker: LocalBroker, connector: Factory, names: Callable[[str], str], fakes: Any
) -> None:
    fake = fakes(answering(200, "<html><body>Welcome to the guest network</body></html>"))
    topic, _ = users_topic(broker, names)
    group = names("group")
    cfg = answers_config(
        broker, fake.url, group, [_spec(topic, "skip")], unexpected_answer_max_seconds=BOUND_S
    )
    proc = connector(cfg)

    assert exit_code(proc, 60) == FATAL_API
    nothing_committed(broker, group, topic)
    assert len(fake.posts()) > 1  # resent meanwhile
    reason = stopped_event(proc)["reason"]
    assert "Welcome to the guest network" in reason
    assert "unexpected_answer_max_seconds" in reason
    no_record_blamed(proc)


@pytest.mark.parametrize("policy", ["skip", "dlq"])
@pytest.mark.parametrize("status", [400, 413])
def test_an_html_400_or_413_to_everything_blames_no_record(
    status: int,
    policy: str,
    broker: LocalBroker,
    connector: Factory,
    names: Callable[[str], str],
    fakes: Any,
) -> None:
    """A proxy or WAF refusing everything: nothing skipped or dead-lettered, nothing committed,
    and the connector stops (exit 3) once the bound has passed, not before."""
    fake = fakes(answering(status, HTML.format(status=status)))
    topic, _ = users_topic(broker, names)
    dlq = fresh_topic(broker, names("dlq"), 1)
    group = names("group")
    cfg = answers_config(
        broker, fake.url, group, [_spec(topic, policy, dlq)], unexpected_answer_max_seconds=BOUND_S
    )
    proc = connector(cfg)

    assert exit_code(proc, 60) == FATAL_API
    stopped_at = time.monotonic()
    posts = fake.posts()
    assert posts[-1][0] - posts[0][0] >= BOUND_S - 0.1  # it kept trying for the bound...
    assert stopped_at - posts[0][0] < BOUND_S + 30  # ...and then stopped
    nothing_committed(broker, group, topic)
    no_record_blamed(proc)
    assert dead_letters(broker, dlq, names) == []
    reason = stopped_event(proc)["reason"]
    assert f"{status}" in reason
    assert "Request blocked by policy" in reason


def test_a_413_for_a_small_body_is_not_the_element_s_fault(
    broker: LocalBroker, connector: Factory, names: Callable[[str], str], fakes: Any
) -> None:
    """The sandbox refusing a ~90-byte element with MoEngage's own 413 body: MoEngage's limit is
    128 KB, so this is not about the element, which must not be dead-lettered as too large."""
    settings = SandboxSettings(workspace_id=WORKSPACE, api_key=API_KEY, max_body_bytes=64)
    fake = fakes(create_app(settings))
    topic, _ = users_topic(broker, names)
    dlq = fresh_topic(broker, names("dlq"), 1)
    group = names("group")
    cfg = answers_config(
        broker, fake.url, group, [_spec(topic, "dlq", dlq)], unexpected_answer_max_seconds=BOUND_S
    )
    proc = connector(cfg)

    assert exit_code(proc, 60) == FATAL_API
    assert fake.posts()
    nothing_committed(broker, group, topic)
    no_record_blamed(proc)
    assert dead_letters(broker, dlq, names) == []
    assert "128 KB" in stopped_event(proc)["reason"]


def test_moengage_s_own_400_for_one_element_still_dead_letters_only_that_record(
    broker: LocalBroker, connector: Factory, names: Callable[[str], str], fakes: Any
) -> None:
    """The rule above must not swallow MoEngage's real element errors: its 400 (with its error
    body) is bisected to the one element, which is dead-lettered; the rest is delivered."""
    app = create_app(SandboxSettings(workspace_id=WORKSPACE, api_key=API_KEY))
    app[STATE].faults.fail_customers = ["user-007"]
    app[STATE].faults.fail_status = 400
    fake = fakes(app)
    topic, ends = users_topic(broker, names)
    dlq = fresh_topic(broker, names("dlq"), 1)
    group = names("group")
    proc = connector(answers_config(broker, fake.url, group, [_spec(topic, "dlq", dlq)]))

    wait_until(lambda: all_committed(broker.bootstrap, group, topic, ends), 60, "all committed")
    assert proc.stop() == 0
    letters = dead_letters(broker, dlq, names)
    assert [m.key() for m in letters] == [b"user-007"]
    assert dict(letters[0].headers())["moengage.error.rule"] == b"api.rejected"
    stored = app[STATE].users
    assert "user-007" not in stored
    assert len(stored) == RECORDS - 1


def readyz(proc: ConnectorProcess) -> tuple[int, dict[str, Any]]:
    listening = [e for e in proc.log_events() if e.get("event") == "observability_listening"]
    if not listening:
        return 0, {}
    url = f"http://127.0.0.1:{listening[0]['port']}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read())


def test_a_ten_day_retry_after_is_capped_shown_on_readyz_and_cut_short_by_sigterm(
    broker: LocalBroker, connector: Factory, names: Callable[[str], str], fakes: Any
) -> None:
    """429 with Retry-After: 864000 to everything: the wait is capped (and logged), /readyz says
    the connector is throttled, and SIGTERM ends the wait at once instead of sitting out the
    shutdown grace (20 s here); nothing is committed."""

    async def throttle(_: web.Request) -> web.Response:
        error = {"message": "Rate limit exceeded", "type": "Too Many Requests"}
        return web.json_response(
            {"status": "fail", "error": error}, status=429, headers={"Retry-After": "864000"}
        )

    app = web.Application()
    app.router.add_post("/v1/transition/{workspace}", throttle)
    fake = fakes(app)
    topic, _ = users_topic(broker, names)
    group = names("group")
    cfg = answers_config(
        broker,
        fake.url,
        group,
        [_spec(topic, "skip")],
        max_retry_after_seconds=100,
        unready_after_seconds=1,
    )
    proc = connector(cfg)

    def throttled() -> bool:
        status, body = readyz(proc)
        return status == 503 and str(body.get("reason", "")).startswith(
            "throttled by MoEngage (429) for "
        )

    wait_until(throttled, 30, "/readyz to say the connector is throttled")
    capped = [e for e in proc.log_events() if e.get("event") == "retry_after_capped"]
    assert capped
    assert capped[0]["retry_after_s"] == 864000
    assert capped[0]["cap_s"] == 100
    started = time.monotonic()
    assert proc.stop(timeout=15) == 0
    assert time.monotonic() - started < 10  # not the 20 s grace, let alone the 100 s cap
    assert "shutdown_grace_exceeded" not in {e.get("event") for e in proc.log_events()}
    nothing_committed(broker, group, topic)


def _spec(topic: str, policy: str, dlq: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": topic,
        "format": "json",
        "on_error": policy,
        "transform": {"mapping": MAPPING},
    }
    if dlq is not None:
        spec["dead_letter_topic"] = dlq
    return spec
