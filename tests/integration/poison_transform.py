"""A code transform for the poison-record scenario: raises on a marker event name."""

from __future__ import annotations

from typing import Any

from connector.transforms import Record


def to_event(record: Record) -> dict[str, Any]:
    v = record.value
    if v["event_name"] == "RAISE":
        raise RuntimeError("the transform refused this record on purpose")
    return {
        "type": "event",
        "customer_id": v["user_id"],
        "actions": [
            {
                "action": v["event_name"],
                "current_time": v["event_time"],
                "attributes": v["properties"],
            }
        ],
    }
