"""Code transforms for the bad-record cases in ``bad_records.py``.

``from_json`` builds an event from a JSON record and, when the record names a ``bad`` kind, puts
a value JSON cannot carry into ``attributes.v`` (what a buggy transform would return).
``from_measure`` builds an event from a ``schemas/measure.avsc`` record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from connector.transforms import Record

# What a transform may wrongly return, by the record's "bad" field.
BAD_OUTPUTS: dict[str, Callable[[], object]] = {
    "decimal": lambda: Decimal("1.5"),
    "bytes": lambda: b"\x00\x01",
    "set": lambda: {1, 2},
    "surrogate": lambda: "caf\udce9",
    "int_key": lambda: {1: "one"},
    "int_2_64": lambda: 2**64,
    "nan": lambda: math.nan,
    "infinity": lambda: math.inf,
}


def from_json(record: Record) -> dict[str, Any]:
    v = record.value
    action: dict[str, Any] = {"action": v.get("event_name", "Bought")}
    for key in ("current_time", "user_time"):
        if key in v:
            action[key] = v[key]
    attributes = dict(v.get("attributes") or {})
    if "bad" in v:
        attributes["v"] = BAD_OUTPUTS[v["bad"]]()
    if attributes:
        action["attributes"] = attributes
    return {"type": "event", "customer_id": v["user_id"], "actions": [action]}


def from_measure(record: Record) -> dict[str, Any]:
    """The local timestamp goes to ``current_time`` when the event is named "local_as_current"
    (bad: current_time is UTC), else to ``user_time`` (a local time)."""
    v = record.value
    time_key = "current_time" if v["event_name"] == "local_as_current" else "user_time"
    action = {
        "action": v["event_name"],
        time_key: v["local_at"],
        "attributes": {"amount": v["amount"], "score": v["score"]},
    }
    return {"type": "event", "customer_id": v["user_id"], "actions": [action]}


def from_node(record: Record) -> dict[str, Any]:
    """An event for a ``node.avsc`` record, as customer ``node-<v>`` (the good records around a
    record nested too deep to decode)."""
    return {
        "type": "event",
        "customer_id": f"node-{record.value['v']}",
        "actions": [{"action": "Node seen"}],
    }
