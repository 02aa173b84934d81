"""The mapping reference's two topics, YAML only, on the real broker and sandbox: ``orders`` (a
nested customer, items with ``decimal(10,2)`` prices, an enum, minutes of offset) and ``profiles``
(a long id, a map, a date, a string array, a nullable double), each produced as raw Avro with the
local schema and as Confluent-framed Avro through the registry. One connector reads all four
topics; every offset is committed, cancelled orders (no element) included."""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import orjson
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.devtools.broker import LocalBroker
from connector.devtools.kafkautil import produce
from connector.devtools.servers import BackgroundApp, SandboxProcess
from connector.source.decoding import encode_confluent, encode_raw
from tests.integration.conftest import (
    ConnectorProcess,
    all_committed,
    base_config,
    fresh_topic,
    wait_until,
)

SCHEMAS = Path(__file__).parent / "schemas"
ORDER_MAPPING: list[dict[str, Any]] = [
    {
        "type": "customer",
        "when": {"not": {"path": "status", "equals": "CANCELLED"}},
        "customer_id": "customer.id",
        "attributes": {
            "fields": {
                "email": "customer.email",
                "city": "customer.address.city",
                "country": "customer.address.country",
            }
        },
    },
    {
        "type": "event",
        "when": {"path": "status", "in": ["PLACED", "PAID"]},
        "customer_id": "customer.id",
        "action": {"const": "Order Placed"},
        "current_time": "placed_at",
        "user_timezone_offset": {"path": "tz_minutes", "scale": 60},
        "attributes": {
            "fields": {
                "order_id": "order_id",
                "status": {"path": "status", "map": {"PLACED": "placed"}, "default": "other"},
                "item_count": {"count": "items"},
                "total": {"sum": "items", "of": ["qty", "price.amount"]},
                "total_text": {"sum": "items", "of": ["qty", "price.amount"], "decimals": "string"},
                "currency": {"first": "items", "of": "price.currency"},
                "first_sku": "items[0].sku",
            }
        },
    },
]
PROFILE_MAPPING: dict[str, Any] = {
    "type": "customer",
    "customer_id": "user_id",
    "attributes": {
        "flatten": {"path": "prefs"},
        "fields": {
            "birthday": "birthday",
            "tags": {"join": "tags", "separator": "|"},
            "tag_count": {"count": "tags"},
            "score": "score",
        },
    },
}
PLACED_AT = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)
STATUSES = ("PLACED", "PAID", "CANCELLED")


def _schema(name: str) -> tuple[str, Any]:
    text = (SCHEMAS / f"{name}.avsc").read_text()
    return text, fastavro.parse_schema(orjson.loads(text))


def _orders(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "order_id": f"{prefix}-o{i}",
            "customer": {
                "id": f"{prefix}-c{i}",
                "email": f"c{i}@example.com",
                "address": {"city": f"City {i}", "country": "FR"},
            },
            "items": [
                {"sku": f"S{i}-{j}", "qty": j + 1, "price": {"amount": amount, "currency": "EUR"}}
                for j, amount in enumerate(
                    [Decimal("19.99"), Decimal("0.10"), Decimal("10.10")][: 1 + i % 3]
                )
            ],
            "status": STATUSES[(i // 3) % 3],
            "tz_minutes": -330 + 30 * i,
            "placed_at": PLACED_AT + dt.timedelta(minutes=i),
        }
        for i in range(n)
    ]


def _profiles(first_id: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "user_id": first_id + i,
            "prefs": {"lang": "fr", "theme": f"t{i}"},
            "birthday": dt.date(1990, 1, 1) + dt.timedelta(days=i),
            "tags": [f"tag{k}" for k in range(i % 3)],
            "score": None if i % 2 else i + 0.5,
        }
        for i in range(n)
    ]


def _expected_order(o: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The mapping above, written out independently: (customer attributes, event action)."""
    if o["status"] == "CANCELLED":
        return None, None
    c = o["customer"]
    customer = {"email": c["email"], "city": c["address"]["city"], "country": "FR"}
    total = sum((it["qty"] * it["price"]["amount"] for it in o["items"]), Decimal(0))
    placed = o["placed_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    action = {
        "action": "Order Placed",
        "attributes": {
            "order_id": o["order_id"],
            "status": "placed" if o["status"] == "PLACED" else "other",
            "item_count": len(o["items"]),
            "total": int(total) if total == total.to_integral_value() else float(total),
            "total_text": str(total),
            "currency": "EUR",
            "first_sku": o["items"][0]["sku"],
        },
        "current_time": placed,
        "user_timezone_offset": o["tz_minutes"] * 60,
    }
    return customer, action


def _expected_profile(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prefs_lang": "fr",
        "prefs_theme": p["prefs"]["theme"],
        "birthday": f"{p['birthday'].isoformat()}T00:00:00Z",
        "tags": "|".join(p["tags"]),
        "tag_count": len(p["tags"]),
    }
    if p["score"] is not None:
        out["score"] = p["score"]
    return out


def test_orders_and_profiles_arrive_as_the_yaml_mapping_says(
    broker: LocalBroker,
    registry: BackgroundApp,
    sandbox: SandboxProcess,
    connector: Callable[..., ConnectorProcess],
    names: Callable[[str], str],
) -> None:
    order_text, order_schema = _schema("order")
    profile_text, profile_schema = _schema("profile")
    topics = {
        k: fresh_topic(broker, names(k), 2) for k in ("ord-raw", "ord-cf", "prof-raw", "prof-cf")
    }
    with SchemaRegistryClient({"url": registry.url}) as client:
        order_id = client.register_schema(f"{topics['ord-cf']}-value", Schema(order_text, "AVRO"))
        profile_id = client.register_schema(
            f"{topics['prof-cf']}-value", Schema(profile_text, "AVRO")
        )
    orders = {"ord-raw": _orders("r", 12), "ord-cf": _orders("f", 12)}
    profiles = {"prof-raw": _profiles(10_000, 8), "prof-cf": _profiles(20_000, 8)}
    ends = {
        topics["ord-raw"]: produce(
            broker.bootstrap,
            topics["ord-raw"],
            [(o["order_id"].encode(), encode_raw(order_schema, o)) for o in orders["ord-raw"]],
        ),
        topics["ord-cf"]: produce(
            broker.bootstrap,
            topics["ord-cf"],
            [
                (o["order_id"].encode(), encode_confluent(order_id, order_schema, o))
                for o in orders["ord-cf"]
            ],
        ),
        topics["prof-raw"]: produce(
            broker.bootstrap,
            topics["prof-raw"],
            [(None, encode_raw(profile_schema, p)) for p in profiles["prof-raw"]],
        ),
        topics["prof-cf"]: produce(
            broker.bootstrap,
            topics["prof-cf"],
            [(None, encode_confluent(profile_id, profile_schema, p)) for p in profiles["prof-cf"]],
        ),
    }
    group = names("group")
    cfg = base_config(
        broker,
        sandbox.url,
        group,
        [
            {
                "name": topics["ord-raw"],
                "format": "avro",
                "schema": str(SCHEMAS / "order.avsc"),
                "transform": {"mapping": ORDER_MAPPING},
            },
            {
                "name": topics["ord-cf"],
                "format": "confluent",
                "transform": {"mapping": ORDER_MAPPING},
            },
            {
                "name": topics["prof-raw"],
                "format": "avro",
                "schema": str(SCHEMAS / "profile.avsc"),
                "transform": {"mapping": PROFILE_MAPPING},
            },
            {
                "name": topics["prof-cf"],
                "format": "confluent",
                "transform": {"mapping": PROFILE_MAPPING},
            },
        ],
        registry_url=registry.url,
    )
    proc = connector(cfg)
    wait_until(
        lambda: all(all_committed(broker.bootstrap, group, t, e) for t, e in ends.items()),
        60,
        "every offset committed, cancelled orders (filtered) included",
    )
    assert proc.stop(signal.SIGTERM) == 0

    store = sandbox.admin("GET", "users")
    expected_users: dict[str, dict[str, Any]] = {}
    expected_events: dict[str, list[dict[str, Any]]] = {}
    for rows in orders.values():
        for o in rows:
            customer, action = _expected_order(o)
            if customer is not None and action is not None:
                expected_users[o["customer"]["id"]] = customer
                expected_events[o["customer"]["id"]] = [action]
    for rows in profiles.values():
        for p in rows:
            expected_users[str(p["user_id"])] = _expected_profile(p)
    assert set(store) == set(expected_users)
    for uid, attrs in expected_users.items():
        assert store[uid]["attributes"] == attrs, uid
        assert store[uid].get("events", []) == expected_events.get(uid, []), uid
    # The exact decimals: 3 x 10.10 + 2 x 0.10 + 19.99 is 50.49, not 50.489999999999995.
    three_items = expected_events["r-c2"][0]["attributes"]
    assert (three_items["total"], three_items["total_text"]) == (50.49, "50.49")
