"""The sandbox's HTTP face: the MoEngage Data API routes, admin routes, and how to run it.

Data routes answer as the real API does (seeds 000-003), in the same order of checks: injected
faults, credentials and app id, account status, content type, size, then the body's rules and the
per-minute budgets. ``/_sandbox/*`` routes (no auth) let tests and the demo look inside and break
things on purpose. Nothing is logged with the API key or the Authorization header in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypeGuard

import orjson
import structlog
from aiohttp import web

from connector.sandbox.rules import ACCEPTED_MESSAGE, ApiError, retry_after_seconds
from connector.sandbox.state import Clock, SandboxSettings, SandboxState

__all__ = ["STATE", "SandboxSettings", "create_app", "run", "serve"]

STATE = web.AppKey("sandbox_state", SandboxState)
# Bodies are streamed and counted by hand; past this many bytes the rest is not even read.
DRAIN_LIMIT = 64 * 1024 * 1024

log = structlog.get_logger(__name__)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


# What ``POST /_sandbox/faults`` may change, and the values each accepts.
FAULT_CHECKS: dict[str, Callable[[object], bool]] = {
    "fail_rate": lambda v: _is_number(v) and 0 <= v <= 1,
    "fail_status": lambda v: _is_number(v) and isinstance(v, int) and 400 <= v < 600,
    "latency_ms": lambda v: _is_number(v) and v >= 0,
    "outage": lambda v: isinstance(v, bool),
    "suspended": lambda v: isinstance(v, bool),
    "ack_delay_ms": lambda v: _is_number(v) and v >= 0,
    "ack_delay_count": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "fail_customers": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


def _error(err: ApiError, request_id: str, send_retry_after: bool) -> web.Response:
    headers = None
    if err.retry_after is not None and send_retry_after:
        headers = {"Retry-After": str(retry_after_seconds(err.retry_after))}
    return _json(err.body(request_id), err.status, headers)


async def _read_body(request: web.Request, state: SandboxState) -> bytes:
    """The whole body, or a 413 once it passes ``max_body_bytes`` (Content-Length or counted)."""
    limit = state.settings.max_body_bytes
    too_large = ApiError(413, "Payload can not exceed 128KB", "Payload too large")
    declared = request.content_length
    if declared is not None and declared > limit:
        state.observe_body(declared)
        raise too_large
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        elif size > DRAIN_LIMIT:
            break
    state.observe_body(size)
    if size > limit:
        raise too_large
    return b"".join(parts)


def _app_ids(request: web.Request) -> list[str]:
    """App ids named in the path and in ``?app_id=`` (either may be absent)."""
    ids = request.query.getall("app_id", [])
    if "workspace_id" in request.match_info:
        ids = [request.match_info["workspace_id"], *ids]
    return ids


async def _data_request(request: web.Request, *, export: bool) -> web.Response:
    state = request.app[STATE]
    request_id = state.request_id()
    try:
        if state.faults.latency_ms > 0:
            await asyncio.sleep(state.faults.latency_ms / 1000)
        state.check_faults()
        state.authenticate(
            request.headers.get("Authorization"), _app_ids(request), need_app_id=not export
        )
        state.check_appkey(request.headers.get("MOE-APPKEY"), request_id, request.path)
        if request.content_type != "application/json":
            raise ApiError(415, "Content type is not supported", "Unsupported media type")
        raw = await _read_body(request, state)
        if export:
            response = _json(state.export(raw))
        else:
            state.transition(raw, request_id)
            response = _json({"status": "success", "message": ACCEPTED_MESSAGE})
            if state.faults.ack_delay_count > 0:
                state.faults.ack_delay_count -= 1
                await asyncio.sleep(state.faults.ack_delay_ms / 1000)
        error_type = None
    except ApiError as err:
        response = _error(err, request_id, state.settings.retry_after)
        error_type = err.error_type
    state.count(response.status, export=export)
    retry_after = response.headers.get("Retry-After")
    state.attempts.append(
        (time.time(), response.status, float(retry_after) if retry_after else None)
    )
    # Accepted requests only at debug: a benchmark sends thousands a second.
    emit = log.debug if error_type is None else log.info
    emit(
        "sandbox.request",
        path=request.path,
        status=response.status,
        request_id=request_id,
        error_type=error_type,
    )
    return response


async def _transition(request: web.Request) -> web.Response:
    """Bulk Import (seed 000): ``POST /v1/transition/{workspace_id}`` or ``?app_id=``."""
    return await _data_request(request, export=False)


async def _export(request: web.Request) -> web.Response:
    """Get User API (seed 003): ``POST /v1/customers/export``."""
    return await _data_request(request, export=True)


async def _healthz(_: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE].stats_json())


async def _users(request: web.Request) -> web.Response:
    users = request.app[STATE].users
    return _json({key: user.as_json() for key, user in users.items()})


async def _user(request: web.Request) -> web.Response:
    user = request.app[STATE].users.get(request.match_info["customer_id"])
    if user is None:
        return _json({"error": "user not found"}, 404)
    return _json(user.as_json())


async def _delete_user(request: web.Request) -> web.Response:
    users = request.app[STATE].users
    if users.pop(request.match_info["customer_id"], None) is None:
        return _json({"error": "user not found"}, 404)
    return web.Response(status=204)


async def _requests(request: web.Request) -> web.Response:
    """The accepted Bulk bodies kept, oldest first, each as it was sent (valid JSON: it parsed)."""
    body = b"[" + b",".join(request.app[STATE].requests) + b"]"
    return web.Response(body=body, content_type="application/json")


async def _attempts(request: web.Request) -> web.Response:
    """Every answered data request in order: ``[unix_time, status, retry_after_or_null]``."""
    return _json(list(request.app[STATE].attempts))


async def _policy_losses(request: web.Request) -> web.Response:
    """What the account truncated, rejected, renamed or blacklisted after its 200 (MoEngage's
    data-tracking policy), the catalogue's size, and requests without ``MOE-APPKEY``."""
    state = request.app[STATE]
    body = state.policy.as_json()
    body["appkey"] = {
        "missing": state.stats.missing_appkey,
        "wrong": state.stats.wrong_appkey,
        "requests": list(state.appkey_flags),
    }
    return _json(body)


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return _json({"status": "reset"})


def _faults_json(state: SandboxState) -> dict[str, Any]:
    faults = state.faults
    return {
        "fail_rate": faults.fail_rate,
        "fail_status": faults.fail_status,
        "latency_ms": faults.latency_ms,
        "outage": faults.outage,
        "suspended": faults.suspended,
        "ack_delay_ms": faults.ack_delay_ms,
        "ack_delay_count": faults.ack_delay_count,
        "fail_customers": faults.fail_customers,
    }


async def _get_faults(request: web.Request) -> web.Response:
    return _json(_faults_json(request.app[STATE]))


async def _set_faults(request: web.Request) -> web.Response:
    """Change injected faults at runtime; unknown keys or bad values are a 400, nothing applied."""
    state = request.app[STATE]
    try:
        changes = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _json({"error": "body must be a JSON object"}, 400)
    if not isinstance(changes, dict):
        return _json({"error": "body must be a JSON object"}, 400)
    for key, value in changes.items():
        check = FAULT_CHECKS.get(key)
        if check is None or not check(value):
            allowed = sorted(FAULT_CHECKS)
            return _json({"error": f"invalid fault setting {key!r}", "allowed": allowed}, 400)
    for key, value in changes.items():
        setattr(state.faults, key, value)
    log.info("sandbox.faults", **_faults_json(state))
    return _json(_faults_json(state))


def create_app(settings: SandboxSettings, *, clock: Clock = time.monotonic) -> web.Application:
    """The sandbox as an aiohttp application; ``clock`` drives budgets and the outage window."""
    state = SandboxState(settings, clock)
    app = web.Application()
    app[STATE] = state
    app.router.add_post("/v1/transition/{workspace_id}", _transition)
    app.router.add_post("/v1/transition", _transition)
    app.router.add_post("/v1/customers/export", _export)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_sandbox/stats", _stats)
    app.router.add_get("/_sandbox/users", _users)
    app.router.add_get("/_sandbox/users/{customer_id}", _user)
    app.router.add_delete("/_sandbox/users/{customer_id}", _delete_user)
    app.router.add_get("/_sandbox/requests", _requests)
    app.router.add_get("/_sandbox/attempts", _attempts)
    app.router.add_get("/_sandbox/faults", _get_faults)
    app.router.add_post("/_sandbox/faults", _set_faults)
    app.router.add_post("/_sandbox/reset", _reset)
    app.router.add_get("/_sandbox/policy-losses", _policy_losses)

    async def on_startup(_: web.Application) -> None:
        state.mark_started()

    async def on_cleanup(_: web.Application) -> None:
        state.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def serve(
    settings: SandboxSettings, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Start the sandbox on ``host:port`` (0 picks a free port); return the runner and the port."""
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def _serve_until_signalled(settings: SandboxSettings, host: str, port: int) -> None:
    runner, actual_port = await serve(settings, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        # Announced only once a signal can stop us: whoever reads this line may send one.
        shown = f"[{host}]" if ":" in host else host  # an IPv6 literal needs brackets in a URL
        sys.stdout.write(f"sandbox listening on http://{shown}:{actual_port}\n")
        sys.stdout.flush()
        log.info(
            "sandbox.started",
            host=host,
            port=actual_port,
            workspace_id=settings.workspace_id,
            users_per_minute=settings.users_per_minute,
            events_per_minute=settings.events_per_minute,
            settings=repr(settings),  # the dataclass repr leaves the API key out
        )
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        state = runner.app[STATE]
        await runner.cleanup()
        with contextlib.suppress(OSError):  # nobody reading stdout any more is no error
            sys.stdout.write(losses_summary(state))
            sys.stdout.flush()
        log.info("sandbox.stopped")


def losses_summary(state: SandboxState) -> str:
    """What the account lost to MoEngage's data-tracking policy, for the terminal at stop."""
    totals = state.policy.totals
    lines = [f"sandbox policy losses: {sum(totals.values())}"]
    lines.extend(f"  {key:<40} {n}" for key, n in sorted(totals.items()))
    stats = state.stats
    if stats.missing_appkey or stats.wrong_appkey:
        lines.append(
            f"  requests without MOE-APPKEY: {stats.missing_appkey}, with another id: "
            f"{stats.wrong_appkey}"
        )
    lines.append("  (details: GET /_sandbox/policy-losses while the sandbox runs)")
    return "\n".join(lines) + "\n"


def run(settings: SandboxSettings, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until SIGTERM or SIGINT; first print ``sandbox listening on http://HOST:PORT``."""
    asyncio.run(_serve_until_signalled(settings, host, port))
