"""Orders become "Order Placed" events; drafts are filtered out (their offsets still commit)."""

from connector.transforms import Record
from my_transforms.money import units


def order_to_event(record: Record) -> dict[str, object] | None:
    order = record.value
    if order["status"] == "draft":
        return None
    return {
        "type": "event",
        "customer_id": order["customer_id"],
        "actions": [
            {
                "action": "Order Placed",
                "current_time": order["placed_at"],  # ISO 8601 after decoding
                "attributes": {
                    "order_id": order["order_id"],
                    "amount": units(order["amount_cents"]),
                    "currency": order["currency"],
                    "items": len(order["items"]),
                },
            }
        ],
    }
