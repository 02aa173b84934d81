"""End to end on the real broker and sandbox: what is produced arrives exactly as mapped, bodies
stay under the limit, and offsets are committed only after MoEngage accepted the records."""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import committed_offsets, produce
from connector.devtools.servers import BackgroundApp, SandboxProcess
from connector.devtools.workload import devices, events, users
from connector.source.decoding import encode_confluent, encode_raw
from tests.integration.conftest import (
    ConnectorProcess,
    all_committed,
    base_config,
    fresh_topic,
    load_schema,
    short_session,
    wait_until,
)

USER_MAPPING = {
    "type": "customer",
    "customer_id": "user_id",
    "attributes": {
        "rename": {"signup_time": "created_time"},
        "drop": ["tags"],
        "constants": {"source_system": "kafka"},
    },
}
EVENT_MAPPING = {
    "type": "event",
    "customer_id": "user_id",
    "device_id": "device_id",
    "action": "event_name",
    "current_time": "event_time",
    "platform": "platform",
    "app_version": "app_version",
    "user_timezone_offset": "tz_offset_seconds",
    "attributes": {"from": "properties"},
}
DEVICE_MAPPING = {"type": "device", "customer_id": "user_id", "device_id": "device_id"}


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_user_attributes(u: dict[str, Any]) -> dict[str, Any]:
    """The mapping above, written out independently of the transform code."""
    out: dict[str, Any] = {}
    for k, v in u.items():
        if k in ("user_id", "tags") or v is None:
            continue
        if k == "signup_time":
            out["created_time"] = iso(v)
        elif k == "birthday":
            out[k] = f"{v.isoformat()}T00:00:00Z"
        elif isinstance(v, Decimal):
            out[k] = int(v) if v == v.to_integral_value() else float(v)
        else:
            out[k] = v
    out["source_system"] = "kafka"
    return out


def test_users_devices_and_events_arrive_exactly_as_the_mapping_says(
    broker: LocalBroker,
    registry: BackgroundApp,
    register: Callable[[str, str], int],
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    n_users, n_events = 60, 600
    t_users = fresh_topic(broker, names("users"), 3)
    t_devices = fresh_topic(broker, names("devices"), 2)
    t_events = fresh_topic(broker, names("events"), 4)
    group = names("group")
    schema_id = register(f"{t_users}-value", "user")
    _, user_schema = load_schema("user")
    _, device_schema = load_schema("device")
    _, event_schema = load_schema("event")
    user_rows = list(users(n_users))
    device_rows = list(devices(n_users))
    event_rows = list(events(n_events, n_users))
    ends = {
        t_users: produce(
            broker.bootstrap,
            t_users,
            [
                (u["user_id"].encode(), encode_confluent(schema_id, user_schema, u))
                for u in user_rows
            ],
        ),
        t_devices: produce(
            broker.bootstrap,
            t_devices,
            [(d["user_id"].encode(), encode_raw(device_schema, d)) for d in device_rows],
        ),
        t_events: produce(
            broker.bootstrap,
            t_events,
            [(e["user_id"].encode(), encode_raw(event_schema, e)) for e in event_rows],
        ),
    }
    schemas = str(broker.bootstrap and (load_schema.__globals__["ROOT"] / "schemas"))
    cfg = base_config(
        broker,
        sandbox.url,
        group,
        [
            {"name": t_users, "format": "confluent", "transform": {"mapping": USER_MAPPING}},
            {
                "name": t_devices,
                "format": "avro",
                "schema": f"{schemas}/device.avsc",
                "transform": {"mapping": DEVICE_MAPPING},
            },
            {
                "name": t_events,
                "format": "avro",
                "schema": f"{schemas}/event.avsc",
                "transform": {"mapping": EVENT_MAPPING},
            },
        ],
        registry_url=registry.url,
    )
    proc = connector(cfg)
    wait_until(
        lambda: all(all_committed(broker.bootstrap, group, t, e) for t, e in ends.items()),
        90,
        "every offset committed",
    )
    # SIGINT (Ctrl-C in a terminal) is a clean stop like SIGTERM (test_faults drains in-flight
    # requests on SIGTERM; both signals run the same stop).
    assert proc.stop(signal.SIGINT) == 0
    stopped = [e for e in proc.log_events() if e.get("event") == "connector_stopped"]
    assert [e["exit_code"] for e in stopped] == [0]

    store = sandbox.admin("GET", "users")
    assert set(store) == {u["user_id"] for u in user_rows}
    for u in user_rows:
        attrs = store[u["user_id"]]["attributes"]
        assert attrs == expected_user_attributes(u), u["user_id"]
    for d in device_rows:
        stored = store[d["user_id"]]["devices"][d["device_id"]]
        expected = {
            k: v for k, v in d.items() if k not in ("user_id", "device_id") and v is not None
        }
        assert stored == expected
    by_user: dict[str, list[dict[str, Any]]] = {}
    for e in event_rows:
        action = {
            "action": e["event_name"],
            "attributes": {k: v for k, v in e["properties"].items() if v is not None},
            "platform": e["platform"],
            "app_version": e["app_version"],
            "current_time": iso(e["event_time"]),
            "user_timezone_offset": e["tz_offset_seconds"],
        }
        by_user.setdefault(e["user_id"], []).append(action)
    for uid, actions in by_user.items():
        # Same key, same partition: each user's events arrive in produce order, exactly once.
        assert store[uid]["events"] == actions, uid


def test_no_request_body_exceeds_the_limit_with_large_records(
    broker: LocalBroker,
    sandbox_factory: Callable[..., SandboxProcess],
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
    tmp_path: Any,
) -> None:
    limit = 20_000
    record_file = tmp_path / "requests.jsonl"
    sandbox = sandbox_factory("--record", str(record_file))
    topic = fresh_topic(broker, names("big"), 2)
    group = names("group")
    _, event_schema = load_schema("event")
    rows = list(events(400, 40, props=120))  # ~3-4 kB per record: a handful fill a request
    ends = produce(
        broker.bootstrap,
        topic,
        [(e["user_id"].encode(), encode_raw(event_schema, e)) for e in rows],
    )
    schemas = load_schema.__globals__["ROOT"] / "schemas"
    cfg = base_config(
        broker,
        sandbox.url,
        group,
        [
            {
                "name": topic,
                "format": "avro",
                "schema": str(schemas / "event.avsc"),
                "transform": {"mapping": EVENT_MAPPING},
            },
        ],
        max_request_bytes=limit,
        linger_ms=2000,
    )
    # 120 attributes per event: an account whose per-event cap (100) was raised.
    cfg["catalogue"]["max_event_attributes"] = 200
    proc = connector(cfg)
    wait_until(lambda: all_committed(broker.bootstrap, group, topic, ends), 90, "all committed")
    assert proc.stop() == 0
    stats = sandbox.admin("GET", "stats")
    assert stats["max_body_bytes_seen"] <= limit
    assert stats["requests_by_status"] == {"200": stats["requests_total"]}
    assert stats["actions_total"] == 400
    # Requests were really packed, not one record each: a large backlog fills bodies.
    assert stats["requests_total"] <= 400 * 4000 // (limit // 2)


def test_nothing_is_committed_while_the_api_fails_and_everything_arrives_after(
    broker: LocalBroker,
    sandbox_factory: Callable[..., SandboxProcess],
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    sandbox = sandbox_factory("--fail-status", "500")
    sandbox.admin("POST", "faults", {"outage": True})
    topic = fresh_topic(broker, names("outage"), 3)
    group = names("group")
    _, event_schema = load_schema("event")
    rows = list(events(300, 30))
    ends = produce(
        broker.bootstrap,
        topic,
        [(e["user_id"].encode(), encode_raw(event_schema, e)) for e in rows],
    )
    schemas = load_schema.__globals__["ROOT"] / "schemas"
    cfg = base_config(
        broker,
        sandbox.url,
        group,
        [
            {
                "name": topic,
                "format": "avro",
                "schema": str(schemas / "event.avsc"),
                "transform": {"mapping": EVENT_MAPPING},
            },
        ],
    )
    proc = connector(cfg)
    # Let it fail for a while: many 500s, several commit intervals.
    wait_until(
        lambda: sandbox.admin("GET", "stats")["requests_by_status"].get("500", 0) >= 15,
        60,
        "fifteen failed requests",
    )
    assert proc.running()
    committed = committed_offsets(broker.bootstrap, group, topic)
    assert all(off < 0 for off in committed.values()), committed
    sandbox.admin("POST", "faults", {"outage": False})
    wait_until(lambda: all_committed(broker.bootstrap, group, topic, ends), 60, "all committed")
    assert proc.stop() == 0
    assert sandbox.admin("GET", "stats")["actions_total"] == 300


def test_sigkill_between_sending_and_committing_loses_nothing(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    topic = fresh_topic(broker, names("kill"), 3)
    group = names("group")
    _, event_schema = load_schema("event")
    rows = list(events(500, 50))
    ends = produce(
        broker.bootstrap,
        topic,
        [(e["user_id"].encode(), encode_raw(event_schema, e)) for e in rows],
    )
    schemas = load_schema.__globals__["ROOT"] / "schemas"
    topics = [
        {
            "name": topic,
            "format": "avro",
            "schema": str(schemas / "event.avsc"),
            "transform": {"mapping": EVENT_MAPPING},
        }
    ]
    cfg = short_session(base_config(broker, sandbox.url, group, topics))
    # Sends happen, commits do not: neither the periodic one nor the one after each 200.
    cfg["pipeline"]["commit_interval_ms"] = 600_000
    cfg["pipeline"]["commit_after_accept_ms"] = None
    first = connector(cfg)
    wait_until(
        lambda: sandbox.admin("GET", "stats")["actions_total"] >= 500,
        60,
        "every event accepted by the sandbox",
    )
    first.stop(signal.SIGKILL)
    assert all(off < 0 for off in committed_offsets(broker.bootstrap, group, topic).values())

    cfg["pipeline"]["commit_interval_ms"] = 200
    second = connector(cfg)
    wait_until(lambda: all_committed(broker.bootstrap, group, topic, ends), 60, "all committed")
    assert second.stop() == 0
    store = sandbox.admin("GET", "users")
    delivered = [a["current_time"] for u in store.values() for a in u["events"]]
    assert set(delivered) == {iso(e["event_time"]) for e in rows}  # nothing lost
    assert len(delivered) == 1000  # everything twice: the kill came after sending, before commit


def test_a_record_that_fails_validation_stops_the_connector_without_committing_past_it(
    broker: LocalBroker,
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    topic = fresh_topic(broker, names("bad"), 1)
    group = names("group")
    _, event_schema = load_schema("event")
    rows = list(events(20, 5))
    rows[7]["user_id"] = "null"  # a customer_id MoEngage disallows (seed 001)
    ends = produce(
        broker.bootstrap,
        topic,
        [(e["user_id"].encode(), encode_raw(event_schema, e)) for e in rows],
    )
    assert ends == {0: 20}
    schemas = load_schema.__globals__["ROOT"] / "schemas"
    cfg = base_config(
        broker,
        sandbox.url,
        group,
        [
            {
                "name": topic,
                "format": "avro",
                "schema": str(schemas / "event.avsc"),
                "transform": {"mapping": EVENT_MAPPING},
            },
        ],
    )
    proc = connector(cfg)
    assert proc.wait(60) == 4
    bad = [e for e in proc.log_events() if e.get("event") == "bad_record"]
    assert len(bad) == 1
    assert (bad[0]["topic"], bad[0]["partition"], bad[0]["offset"]) == (topic, 0, 7)
    assert bad[0]["rule"] == "customer_id.disallowed"
    stopped = [e for e in proc.log_events() if e.get("event") == "connector_stopped"]
    assert f"{topic}[0]@7" in stopped[0]["reason"]
    assert committed_offsets(broker.bootstrap, group, topic)[0] == 7
