"""What may be merged into what when elements are coalesced: the rules, apart from where they apply.

``moengage.coalesce`` says where a customer's next element may be merged into its latest unsent one:

- ``off``: never; every element is sent as it came.
- ``request``: within the request being filled (the open batch).
- ``backlog``: also into a request that is closed and waits for the budget in its lane's queue,
  as long as that request has not been taken up for sending. Only profile elements (customer
  updates, devices) merge across requests: they cost a user each, and merging them is what
  makes a backlog cheaper; events cost one unit per action whatever their element, so they are
  appended only within the open request, where it saves bytes.

A merge only ever goes into the customer's *latest* element, so nothing of that customer stands
between the two: one customer's updates, devices and events are never reordered. What MoEngage
sees is the customer's state after the last merged update; the intermediate states are not sent
(a merged element carries every merged record's offset, acknowledged by its request's 200).

The rules, the same wherever a merge applies: a customer update merges into a customer update
with the same ``customer_id`` (or identifiers) and the same ``update_existing_only``, attribute by
attribute with the later value winning; a device into a device with the same ``customer_id`` and
``device_id``, the same way; neither when the element holds anything but those keys and
``attributes``, nor when either holds an array operation (``addValueToArrayField`` /
``removeValueFromArrayField``: MoEngage applies them in order, they must reach it as sent). An
event merges into an event of the same customer and device by appending its actions (spliced
into the bytes: equal prefixes up to ``"actions":[`` mean the same customer and device). Pure.
"""

from __future__ import annotations

from typing import Any, Final, Literal

Coalesce = Literal["off", "request", "backlog"]
COALESCE_MODES: Final = ("off", "request", "backlog")

ACTIONS_KEY: Final = b'"actions":['
# Array operations (Track User API) must reach MoEngage as sent: never merged.
ARRAY_OPERATIONS: Final = frozenset({"addValueToArrayField", "removeValueFromArrayField"})
EVENT_KEYS: Final = frozenset({"type", "customer_id", "device_id", "actions"})
# Profile elements that merge attribute-wise, and the keys (besides attributes) that must match.
PROFILE_SAME: Final = {
    "customer": ("customer_id", "update_existing_only"),
    "device": ("customer_id", "device_id"),
}
_PROFILE_KEYS: Final = {
    kind: frozenset({"type", "attributes", *same}) for kind, same in PROFILE_SAME.items()
}


def is_profile(element: dict[str, Any]) -> bool:
    """A customer update or a device: the elements that merge attribute-wise."""
    return element.get("type") in PROFILE_SAME


def merge_profile(
    previous: dict[str, Any] | None, element: dict[str, Any]
) -> dict[str, Any] | None:
    """``previous`` with ``element``'s attributes laid over it (later values win), or None when
    the two may not be merged (different kind, customer, device or ``update_existing_only``; a key
    besides the identity and ``attributes``; an array operation in either)."""
    if previous is None:
        return None
    kind = element.get("type")
    if not isinstance(kind, str) or kind not in PROFILE_SAME or previous.get("type") != kind:
        return None
    same = PROFILE_SAME[kind]
    for key in same:
        if previous.get(key) != element.get(key):
            return None
    allowed = _PROFILE_KEYS[kind]
    if not (element.keys() <= allowed and previous.keys() <= allowed):
        return None
    old_attrs = previous.get("attributes") or {}
    new_attrs = element.get("attributes") or {}
    if not (isinstance(old_attrs, dict) and isinstance(new_attrs, dict)):
        return None
    if ARRAY_OPERATIONS & (old_attrs.keys() | new_attrs.keys()):
        return None
    return {**previous, "attributes": {**old_attrs, **new_attrs}}


def merge_event(old: bytes, encoded: bytes, element: dict[str, Any]) -> bytes | None:
    """``old``'s bytes with ``encoded``'s actions appended, or None when they may not be merged.

    Only plain events (customer id, optional device id, actions last): their bytes before
    ``"actions":[`` hold no nested objects, so equal prefixes mean "same customer and device"."""
    if not (element.keys() <= EVENT_KEYS and next(reversed(element)) == "actions"):
        return None
    cut = encoded.find(ACTIONS_KEY)
    if cut < 0 or old[: cut + len(ACTIONS_KEY)] != encoded[: cut + len(ACTIONS_KEY)]:
        return None
    if not (old.endswith(b"]}") and encoded.endswith(b"]}")):
        return None
    return old[:-2] + b"," + encoded[cut + len(ACTIONS_KEY) : -2] + b"]}"
