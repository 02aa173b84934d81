"""A seeded, realistic workload of users, devices and events (demo, tests, benchmark)."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

EVENT_NAMES = ["Viewed Product", "Added to Cart", "Purchase", "Searched", "Opened App"]
PLATFORMS = ["ANDROID", "iOS", "web"]
FIRST = ["Asha", "John", "Mei", "Carlos", "Fatima", "Igor", "Nia", "Ravi", "Sofia", "Tom"]
LAST = ["Rao", "Smith", "Chen", "Garcia", "Khan", "Petrov", "Okafor", "Iyer", "Rossi", "Brown"]
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def user_id(i: int) -> str:
    return f"user-{i:06d}"


def users(n: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        yield {
            "user_id": user_id(i),
            "email": f"{first.lower()}.{last.lower()}{i}@example.com",
            "first_name": first,
            "last_name": last,
            "name": f"{first} {last}",
            "plan": rng.choice(["free", "pro", "enterprise", None]),
            "points": rng.randint(0, 5000),
            "signup_time": dt.datetime.fromtimestamp(
                (BASE_MS - rng.randint(0, 10**10)) / 1000, tz=dt.UTC
            ).replace(microsecond=0),
            "birthday": dt.date(1970, 1, 1) + dt.timedelta(days=rng.randint(3000, 15000)),
            "ltv": Decimal(rng.randint(0, 10**6)) / 100,
            "super_user": rng.random() < 0.1,
            "tags": rng.sample(["vip", "beta", "churn-risk", "newsletter"], k=rng.randint(0, 2)),
            "mobile": f"9198{rng.randint(10**7, 10**8 - 1)}",
        }


def devices(n_users: int, seed: int = 2) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n_users):
        yield {
            "user_id": user_id(i),
            "device_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "platform": rng.choice(PLATFORMS),
            "push_id": f"push-{rng.getrandbits(64):016x}",
            "model": rng.choice(["Pixel 9", "iPhone 17", "Galaxy S26", None]),
            "os_version": rng.choice(["15", "26.1", "14"]),
            "app_version": "4.2.0",
            "push_preference": rng.random() < 0.8,
        }


def events(n: int, n_users: int, seed: int = 3, props: int = 6) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n):
        uid = user_id(rng.randrange(n_users))
        properties: dict[str, Any] = {
            "product_id": f"sku-{rng.randint(1, 99999)}",
            "price": round(rng.uniform(1, 500), 2),
            "quantity": rng.randint(1, 5),
            "in_stock": rng.random() < 0.9,
            "category": rng.choice(["shoes", "phones", "books", "garden"]),
            "campaign": rng.choice(["spring", "retarget", None]),
        }
        for k in range(max(0, props - len(properties))):
            properties[f"extra_{k}"] = f"value-{rng.getrandbits(32):08x}"
        yield {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "user_id": uid,
            "device_id": None,
            "event_name": rng.choice(EVENT_NAMES),
            "event_time": dt.datetime.fromtimestamp((BASE_MS + i * 1000) / 1000, tz=dt.UTC),
            "platform": rng.choice(PLATFORMS),
            "app_version": "4.2.0",
            "tz_offset_seconds": rng.choice([19800, 0, -18000, 3600]),
            "properties": properties,
        }
