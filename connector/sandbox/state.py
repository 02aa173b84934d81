"""The sandbox's account in memory: settings, users, budgets, faults and stats.

Pure on purpose: no aiohttp and no clock of its own (one is passed in), so the account's behaviour
is testable without a server; ``server.py`` only moves bytes in and out and ``rules.py`` says what
a valid request is. A refused request raises ``ApiError`` with the seed's status and error body.
"""

from __future__ import annotations

import hashlib
import random
import string
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from connector.sandbox.datapolicy import AccountPolicy, PolicyLimits
from connector.sandbox.rules import (
    MALFORMED_BULK,
    MALFORMED_EXPORT,
    SERVER_ERROR,
    ApiError,
    SlidingWindow,
    check_credentials,
    decode_object,
    element_user_key,
    export_identifiers,
    transition_cost,
    truthy,
    validate_transition,
)

JsonDict = dict[str, Any]
Clock = Callable[[], float]


@dataclass(frozen=True)
class SandboxSettings:
    """How the sandbox account behaves; ``None`` budgets are unlimited."""

    workspace_id: str = "DEMO_WORKSPACE"
    api_key: str = field(default="demo-api-key", repr=False)
    users_per_minute: int | None = None
    events_per_minute: int | None = None
    export_users_per_minute: int | None = 1000
    window_seconds: float = 60.0
    retry_after: bool = True
    max_body_bytes: int = 128 * 1024
    device_cost: int = 1
    fail_rate: float = 0.0
    fail_status: int = 503
    # Answer ``fail_status`` to any Bulk request holding one of these customer ids (a poison).
    fail_customers: tuple[str, ...] = ()
    latency_ms: float = 0.0
    outage: tuple[float, float] | None = None
    record_path: str | None = None
    suspended: bool = False
    seed: int | None = None
    keep_requests: int = 100_000
    # MoEngage's data-tracking policy: lengths, the Object data type and the catalogue caps.
    limits: PolicyLimits = field(default_factory=PolicyLimits)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if not 400 <= self.fail_status <= 599:
            raise ValueError("fail_status must be an HTTP error status (400-599)")
        if self.latency_ms < 0 or self.max_body_bytes <= 0 or self.keep_requests <= 0:
            raise ValueError("latency_ms, max_body_bytes and keep_requests must not be negative")


@dataclass
class UserRecord:
    """One user profile: merged attributes, events in arrival order, devices by id."""

    moengage_id: str
    attributes: JsonDict = field(default_factory=dict)
    events: list[JsonDict] = field(default_factory=list)
    devices: dict[str, JsonDict] = field(default_factory=dict)

    def as_json(self) -> JsonDict:
        return {
            "id": self.moengage_id,
            "attributes": self.attributes,
            "events": self.events,
            "devices": self.devices,
        }


@dataclass
class Faults:
    """Failures injected before any processing; changeable at runtime."""

    fail_rate: float
    fail_status: int
    latency_ms: float
    outage: bool = False
    suspended: bool = False
    # Accept the next ``ack_delay_count`` requests, then hold the 200 back for ``ack_delay_ms``:
    # a client that times out meanwhile resends data the account already has (a duplicate).
    ack_delay_ms: float = 0.0
    ack_delay_count: int = 0
    # Answer ``fail_status`` to any Bulk request holding one of these customer ids.
    fail_customers: list[str] = field(default_factory=list)


@dataclass
class Stats:
    """Counters for ``/_sandbox/stats``; admin requests are not counted. ``requests_*`` count
    Bulk Import requests (what the connector's own request metrics count); Get User API
    requests (the connector's start-up check, ``verify``) are counted apart."""

    requests_total: int = 0
    requests_by_status: dict[str, int] = field(default_factory=dict)
    export_requests_by_status: dict[str, int] = field(default_factory=dict)
    accepted_requests: int = 0
    elements_by_type: dict[str, int] = field(default_factory=dict)
    actions_total: int = 0
    bytes_accepted: int = 0
    max_body_bytes_seen: int = 0
    # Data requests that came without the MOE-APPKEY header (Data API overview asks for it), or
    # with another app id than the workspace's.
    missing_appkey: int = 0
    wrong_appkey: int = 0


class SandboxState:
    """The account: authenticates, validates, budgets and applies requests, and keeps score."""

    def __init__(self, settings: SandboxSettings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.started = clock()
        self.faults = Faults(
            settings.fail_rate,
            settings.fail_status,
            settings.latency_ms,
            False,
            settings.suspended,
            fail_customers=list(settings.fail_customers),
        )
        # Deterministic under a seed; nothing here is security-sensitive.
        self._rng = random.Random(settings.seed)  # noqa: S311
        self._ids = random.Random(None if settings.seed is None else settings.seed + 1)  # noqa: S311
        self.users: dict[str, UserRecord] = {}
        self.stats = Stats()
        self.window = SlidingWindow(settings.window_seconds)
        self.export_window = SlidingWindow(settings.window_seconds)
        # Accepted bodies as sent, for /_sandbox/requests: bytes, not parsed JSON, so that the
        # garbage collector does not walk them (parsed, a benchmark's worth of bodies made
        # each full collection 2-3 times longer and stalled every request meanwhile).
        self.requests: deque[bytes] = deque(maxlen=settings.keep_requests)
        # Every answered data request: (unix time, status, Retry-After sent or None).
        self.attempts: deque[tuple[float, int, float | None]] = deque(maxlen=settings.keep_requests)
        self._record: IO[bytes] | None = None
        self.policy = AccountPolicy(settings.limits)
        # Request ids of data requests without a (matching) MOE-APPKEY, newest last.
        self.appkey_flags: deque[JsonDict] = deque(maxlen=1000)

    def mark_started(self) -> None:
        """Start the configured outage's clock now (the server calls this when it starts)."""
        self.started = self.clock()

    def request_id(self) -> str:
        return "".join(self._ids.choice(string.ascii_letters) for _ in range(8))

    def check_faults(self) -> None:
        """Raise the configured failure if an outage is on or the dice say so."""
        outage = self.faults.outage
        if self.settings.outage is not None:
            start, duration = self.settings.outage
            elapsed = self.clock() - self.started
            outage = outage or start <= elapsed < start + duration
        if outage or (self.faults.fail_rate > 0 and self._rng.random() < self.faults.fail_rate):
            raise ApiError(self.faults.fail_status, SERVER_ERROR, "Server Error")

    def authenticate(self, header: str | None, app_ids: list[str], *, need_app_id: bool) -> None:
        """Credentials and app id (see ``check_credentials``), then the account's status."""
        settings = self.settings
        check_credentials(
            header, settings.workspace_id, settings.api_key, app_ids, need_app_id=need_app_id
        )
        if self.faults.suspended:
            message = "Your account is suspended. Please contact MoEngage team."
            raise ApiError(403, message, "Account Suspended")

    def check_appkey(self, value: str | None, request_id: str, path: str) -> None:
        """Flag a data request without ``MOE-APPKEY`` (or with another id): the Data API overview
        asks for the header on every request but does not say how MoEngage answers without it,
        so the sandbox answers as usual, counts it and keeps the request id."""
        if value is not None and value.strip() == self.settings.workspace_id:
            return
        problem = "missing" if value is None else "not the workspace id"
        if value is None:
            self.stats.missing_appkey += 1
        else:
            self.stats.wrong_appkey += 1
        self.appkey_flags.append({"request_id": request_id, "path": path, "problem": problem})

    def observe_body(self, size: int) -> None:
        self.stats.max_body_bytes_seen = max(self.stats.max_body_bytes_seen, size)

    def count(self, status: int, *, export: bool = False) -> None:
        key = str(status)
        if export:
            by_status = self.stats.export_requests_by_status
        else:
            self.stats.requests_total += 1
            by_status = self.stats.requests_by_status
        by_status[key] = by_status.get(key, 0) + 1

    def transition(self, raw: bytes, request_id: str) -> None:
        """Validate, budget and apply one Bulk Import body (seed 000), or raise why not."""
        body = decode_object(raw, MALFORMED_BULK)
        elements = validate_transition(body)
        if self.faults.fail_customers:
            blocked = set(self.faults.fail_customers)
            if any(e.get("customer_id") in blocked for e in elements):
                raise ApiError(self.faults.fail_status, SERVER_ERROR, "Server Error")
        cost = transition_cost(elements, self.settings.device_cost)
        limits = (self.settings.users_per_minute, self.settings.events_per_minute)
        now = self.clock()
        self.window.check(cost, limits, now)
        self.window.record(cost, now)
        for element in elements:
            self._apply(element, request_id)
        stats = self.stats
        stats.accepted_requests += 1
        stats.bytes_accepted += len(raw)
        stats.actions_total += cost[1]
        for element in elements:
            kind = element["type"]
            stats.elements_by_type[kind] = stats.elements_by_type.get(kind, 0) + 1
        self.requests.append(raw)
        self._write_record(request_id, body)

    def _user(self, key: str) -> UserRecord:
        user = self.users.get(key)
        if user is None:
            digest = hashlib.blake2b(f"{self.settings.workspace_id}:{key}".encode(), digest_size=12)
            user = self.users[key] = UserRecord(digest.hexdigest())
        return user

    def _apply(self, element: JsonDict, request_id: str) -> None:
        key = element_user_key(element)
        attributes = element.get("attributes") or {}
        if element["type"] == "customer":
            if key not in self.users and truthy(element.get("update_existing_only")):
                return
            kept = self.policy.customer(request_id, key, attributes)
            self._user(key).attributes.update(kept)
        elif element["type"] == "device":
            user = self._user(key)
            device_id = element.get("device_id")
            if device_id is None:  # seed 001: without a device_id a new device is created
                device_id = f"{key}:device-{len(user.devices) + 1}"
            user.devices.setdefault(str(device_id), {}).update(attributes)
        else:
            user = self._user(key)
            for action in element["actions"]:
                stored = self.policy.event(request_id, key, action)
                if stored is None:  # blacklisted
                    continue
                event = stored
                if "device_id" in element:
                    event.setdefault("device_id", element["device_id"])
                user.events.append(event)

    def export(self, raw: bytes) -> JsonDict:
        """Answer a Get User API body (seed 003): found users' attributes and the rest."""
        body = decode_object(raw, MALFORMED_EXPORT)
        identifiers = export_identifiers(body)
        now = self.clock()
        cost = (len(identifiers), 0)
        self.export_window.check(cost, (self.settings.export_users_per_minute, None), now)
        self.export_window.record(cost, now)
        fields = body.get("user_fields_to_export")
        wanted = {f for f in fields if isinstance(f, str)} if isinstance(fields, list) else None
        found: list[JsonDict] = []
        not_found: list[JsonDict] = []
        for item in identifiers:
            match = self._find(str(item.get("identifier_type", "customer_id")), item["identifier"])
            if match is None:
                not_found.append(item)
                continue
            key, user = match
            attributes = {
                name: value
                for name, value in user.attributes.items()
                if wanted is None or name in wanted
            }
            attributes.update(customer_id=key, id=user.moengage_id)
            found.append({"user_attributes": attributes})
        data = {"users_not_found": not_found, "users": found}
        return {"status": "success", "type": "export_users", "data": data}

    def _find(self, identifier_type: str, identifier: str) -> tuple[str, UserRecord] | None:
        if identifier_type == "id":
            return next(
                ((k, u) for k, u in self.users.items() if u.moengage_id == identifier), None
            )
        key = identifier if identifier_type == "customer_id" else f"{identifier_type}:{identifier}"
        user = self.users.get(key)
        return None if user is None else (key, user)

    def _write_record(self, request_id: str, body: JsonDict) -> None:
        if self.settings.record_path is None:
            return
        if self._record is None:
            # Held open across requests and closed in close(); a context manager cannot span that.
            self._record = Path(self.settings.record_path).open("ab")  # noqa: SIM115
        line = {"ts": time.time(), "request_id": request_id, "body": body}
        self._record.write(orjson.dumps(line) + b"\n")
        self._record.flush()

    def stats_json(self) -> JsonDict:
        stats = self.stats
        return {
            "requests_total": stats.requests_total,
            "requests_by_status": dict(stats.requests_by_status),
            "export_requests_by_status": dict(stats.export_requests_by_status),
            "accepted_requests": stats.accepted_requests,
            "elements_by_type": dict(stats.elements_by_type),
            "actions_total": stats.actions_total,
            "bytes_accepted": stats.bytes_accepted,
            "users": len(self.users),
            "max_body_bytes_seen": stats.max_body_bytes_seen,
            "policy_losses": sum(self.policy.totals.values()),
            "missing_appkey": stats.missing_appkey,
            "wrong_appkey": stats.wrong_appkey,
        }

    def reset(self) -> None:
        """Forget users, counters, budgets and kept requests; faults stay as they are."""
        self.users.clear()
        self.stats = Stats()
        self.window.entries.clear()
        self.export_window.entries.clear()
        self.requests.clear()
        self.attempts.clear()
        self.policy.reset()
        self.appkey_flags.clear()

    def close(self) -> None:
        if self._record is not None:
            self._record.close()
            self._record = None
