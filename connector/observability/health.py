"""Liveness and readiness, and the small HTTP server that shows them next to ``/metrics``.

``HealthState`` is pure (the caller passes the time): the run loop ticks it every turn and tells it
about assignments, the API's state and fatal errors; the server only reads it.

- live: the run loop turned within ``max_silence_s``. A wedged loop cannot answer at all, so a
  probe's timeout also catches a blocked event loop.
- ready: no fatal error, the Kafka brokers in reach ("Kafka brokers unreachable: <bootstrap>"
  otherwise), partitions assigned, and MoEngage taking requests: unready once requests
  have been retried (timeouts, 5xx, answers not from MoEngage) or held back by 429s for
  ``moengage.unready_after_seconds`` without one being accepted. Delivery words the reason
  ("throttled by MoEngage (429) for 75 s", "MoEngage unreachable: retrying for 40 s: HTTP 503 ...");
  the run loop hands it over every turn, and the next accepted request clears it.
  ``GET /readyz?exclude=partitions&exclude=api`` leaves those checks out
  (kube-apiserver's ``/readyz?exclude=`` convention): a sidecar whose Pod must stay in its Service
  while the connector idles or MoEngage is down uses it.

The server runs on the connector's own event loop (no thread). Reasons shown are redacted of every
registered secret, so a fatal error's message can be served as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connector.config import ObservabilitySettings
from connector.errors import BadRecordError, ConfigError
from connector.observability.logging import redact
from connector.observability.metrics import Metrics

log = structlog.get_logger(__name__)

EXCLUDABLE = frozenset({"partitions", "api"})
Clock = Callable[[], float]


def fatal_reason(error: Exception) -> str:
    """What ``/readyz`` says about the error that stops the connector. Bad input is named by its
    coordinates and rule only: its message may quote record contents, which stay in the log."""
    if isinstance(error, BadRecordError):
        where = f"record {error.ref}" if error.ref else "a record"
        return f"bad input: {where} failed at {error.stage} ({error.rule}); see the log"
    return str(error)


class HealthState:
    """What the probes report; updated by the run loop, read by the HTTP handlers."""

    def __init__(self, now: float) -> None:
        self._last_tick = now
        self._assigned = 0
        self._fatal: str | None = None
        self._api_ok = True
        self._api_detail: str | None = None
        self._api_reason: str | None = None
        self._kafka: str | None = None

    def alive_tick(self, now: float) -> None:
        """The run loop completed a turn."""
        self._last_tick = max(self._last_tick, now)

    def set_assigned(self, n: int) -> None:
        self._assigned = n

    def set_fatal(self, reason: str) -> None:
        """The connector is stopping for good; the first reason is kept (later ones follow it)."""
        if self._fatal is None:
            self._fatal = redact(reason)

    def set_kafka_problem(self, reason: str | None) -> None:
        """Why the Kafka cluster is out of reach (None: it is not), shown before the partitions
        check: with no broker answering, "no partitions assigned" would hide the cause."""
        self._kafka = None if reason is None else redact(reason)

    def set_api_ok(self, ok: bool, detail: str | None = None) -> None:
        """Whether the last request got an answer that was not a 5xx (``detail``: what it was)."""
        self._api_ok = ok
        self._api_detail = None if ok or detail is None else redact(detail)
        self._api_reason = None

    def set_api_problem(self, reason: str | None) -> None:
        """Why MoEngage is not taking requests (None: it is), shown as the API check's reason."""
        self._api_ok = reason is None
        self._api_detail = None
        self._api_reason = None if reason is None else redact(reason)

    def live(self, now: float, max_silence_s: float) -> tuple[bool, str]:
        silent = now - self._last_tick
        if silent > max_silence_s:
            return False, f"run loop silent for {silent:.1f}s (limit {max_silence_s:g}s)"
        return True, "ok"

    def checks(self) -> dict[str, tuple[bool, str]]:
        """Each readiness check by name, in the order a reason is chosen."""
        api = "MoEngage API not answering; requests are being retried"
        if self._api_detail:
            api = f"{api} (last answer: {self._api_detail})"
        if self._api_reason:
            api = self._api_reason
        return {
            "fatal": (self._fatal is None, "ok" if self._fatal is None else self._fatal),
            "kafka": (self._kafka is None, self._kafka or "ok"),
            "partitions": (
                self._assigned > 0,
                f"{self._assigned} partition(s) assigned"
                if self._assigned
                else "no partitions assigned",
            ),
            "api": (self._api_ok, "ok" if self._api_ok else api),
        }

    def ready(self, exclude: Collection[str] = ()) -> tuple[bool, str]:
        for name, (ok, reason) in self.checks().items():
            if not ok and name not in exclude:
                return False, reason
        return True, "ok"


def create_observability_app(
    metrics: Metrics,
    health: HealthState,
    *,
    max_silence_s: float = 60.0,
    clock: Clock | None = None,
) -> web.Application:
    """``/metrics``, ``/healthz`` and ``/readyz``; ``clock`` defaults to the running loop's."""

    def now() -> float:
        return clock() if clock is not None else asyncio.get_running_loop().time()

    async def metrics_handler(_: web.Request) -> web.Response:
        metrics.set_ready(health.ready()[0])
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, reason = health.live(now(), max_silence_s)
        return web.Response(text=reason, status=200 if ok else 503)

    async def readyz(request: web.Request) -> web.Response:
        exclude = request.query.getall("exclude", [])
        unknown = sorted(set(exclude) - EXCLUDABLE)
        if unknown:
            body = {"error": f"cannot exclude {unknown}", "excludable": sorted(EXCLUDABLE)}
            return _json(body, 400)
        ok, reason = health.ready(exclude)
        checks = {name: r for name, (_, r) in health.checks().items() if name not in exclude}
        return _json({"ready": ok, "reason": reason, "checks": checks}, 200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def _json(payload: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


async def start_observability_server(
    metrics: Metrics,
    health: HealthState,
    host: str,
    port: int,
    *,
    max_silence_s: float = 60.0,
    clock: Clock | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve on ``host:port`` (0 picks a free port) in the running loop; return the runner (call
    ``await runner.cleanup()`` to stop) and the port actually bound."""
    app = create_observability_app(metrics, health, max_silence_s=max_silence_s, clock=clock)
    runner = web.AppRunner(app, access_log=None)  # probes every few seconds would flood the log
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


async def serve_observability(
    metrics: Metrics, health: HealthState, settings: ObservabilitySettings
) -> tuple[web.AppRunner, int]:
    """/metrics, /healthz, /readyz as the settings say, in the running loop; a port that cannot
    be bound is a configuration error."""
    try:
        runner, port = await start_observability_server(
            metrics,
            health,
            settings.host,
            settings.port,
            max_silence_s=settings.liveness_max_silence_seconds,
        )
    except OSError as e:
        problem = f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}"
        raise ConfigError([("observability.port", problem)]) from None
    log.info("observability_listening", host=settings.host, port=port)
    return runner, port
