"""The transform of ``test_data_policy.py``: a JSON record ``{"id", "kind", "name", "attrs"}``
becomes a customer element (``kind: customer``) or an event with one action named ``name``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from connector.transforms import Record


def to_element(record: Record) -> dict[str, Any]:
    v = record.value
    if v["kind"] == "customer":
        return {"type": "customer", "customer_id": v["id"], "attributes": v["attrs"]}
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    action = {"action": v["name"], "current_time": now, "attributes": v["attrs"]}
    return {"type": "event", "customer_id": v["id"], "actions": [action]}
