"""The smallest valid configuration, for unit tests that build settings or a connector."""

from __future__ import annotations

from typing import Any


def minimal_raw(**over: Any) -> dict[str, Any]:
    """One JSON topic ``users`` mapped to customers; no broker or MoEngage is reached.

    Top-level keys given in ``over`` replace the defaults whole.
    """
    raw: dict[str, Any] = {
        "moengage": {"base_url": "http://127.0.0.1:9"},
        "kafka": {"bootstrap.servers": "127.0.0.1:1", "group.id": "g"},
        "topics": [
            {
                "name": "users",
                "format": "json",
                "transform": {"mapping": {"type": "customer", "customer_id": "user_id"}},
            }
        ],
    }
    raw.update(over)
    return raw
