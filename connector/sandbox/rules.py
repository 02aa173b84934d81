"""What the MoEngage Data API accepts, as the seed documents state it: pure functions and errors.

Authentication (seed 001's list of 401s), body decoding, Bulk Import element rules (seed 000),
Get User API identifiers (seed 003) and the per-minute budgets. A broken rule raises ``ApiError``,
carrying the HTTP status and the fields of the seed's error body. No I/O, no clock of its own.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

JsonDict = dict[str, Any]

ACCEPTED_MESSAGE = "Your request has been accepted and will be processed soon."
SERVER_ERROR = (
    "An unexpected error was encountered while processing this request. "
    "Please contact MoEngage Team"
)
# The seeds word "Malformed JSON" three ways; each endpoint answers as its own page shows.
MALFORMED_BULK = "Could not decode the request body. The JSON was incorrect or not encoded as UTF-8"
MALFORMED_ELEMENT = (
    "Could not decode the request body. The JSON was incorrect or not decoded as UTF-8."
)
MALFORMED_EXPORT = (
    "Could not decode the request body. The JSON was incorrect or not encoded as UTF-8."
)
ELEMENT_TYPES = ("customer", "device", "event")
EXPORT_MAX_IDENTIFIERS = 20
# Standard attributes with the system prefix that are not identity-resolution identifiers.
NOT_IDENTIFIERS = frozenset({"moe_unsubscribe", "moe_geo_location"})
AUTH_REQUIRED = "Authentication required"


class ApiError(Exception):
    """A request the MoEngage API would refuse: the status and the seed's ``error`` fields."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str,
        attribute: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.attribute = attribute
        self.retry_after = retry_after

    def body(self, request_id: str) -> JsonDict:
        """The response body, shaped like the seeds' samples (``attribute`` only when known)."""
        error: JsonDict = {"message": self.message, "type": self.error_type}
        if self.attribute is not None:
            error = {"attribute": self.attribute, **error}
        error["request_id"] = request_id
        return {"status": "fail", "error": error}


def _missing(attribute: str, message: str) -> ApiError:
    return ApiError(400, message, "MissingAttributeError", attribute)


def check_credentials(
    header: str | None, workspace_id: str, api_key: str, app_ids: list[str], *, need_app_id: bool
) -> None:
    """Basic auth, failing as seed 001 lists it, then the app id given in the path or query."""
    if header is None:
        raise ApiError(401, "Authentication Header Required", AUTH_REQUIRED)
    if not header.strip():
        raise ApiError(401, "No identity information found", AUTH_REQUIRED)
    scheme, _, encoded = header.strip().partition(" ")
    try:
        if scheme.lower() != "basic":
            raise ValueError(scheme)
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "Invalid identity information found", AUTH_REQUIRED) from None
    if ":" not in decoded:
        raise ApiError(401, "Invalid identity information found", AUTH_REQUIRED)
    username, _, password = decoded.partition(":")
    if not username:
        raise ApiError(401, "APP_KEY missing in the authentication header", AUTH_REQUIRED)
    if not password:
        raise ApiError(401, "APP_SECRET missing in the authentication header", AUTH_REQUIRED)
    if not hmac.compare_digest(username.encode(), workspace_id.encode()):
        raise ApiError(401, "Invalid APP_ID used in Authentication Header", AUTH_REQUIRED)
    if not hmac.compare_digest(password.encode(), api_key.encode()):
        message = "App Secret key mismatch. Please login to the dashboard to verify key"
        raise ApiError(401, message, AUTH_REQUIRED)
    if any(app_id != username for app_id in app_ids):
        raise ApiError(
            409, "App key mismatch in params and authentication", "Authentication Mismatch"
        )
    if need_app_id and not app_ids:
        raise ApiError(400, "app_id is required in path/query params.", "ParamsRequired")


def decode_object(raw: bytes, malformed: str) -> JsonDict:
    """The body as a JSON object, or the seeds' empty-body / Malformed JSON errors."""
    if not raw.strip():
        raise ApiError(400, "A valid JSON document is required", "Empty request body")
    try:
        body = orjson.loads(raw)  # also refuses bytes that are not UTF-8
    except orjson.JSONDecodeError:
        raise ApiError(400, malformed, "Malformed JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, malformed, "Malformed JSON")
    return body


def _identifiers(element: JsonDict) -> list[tuple[str, object]]:
    """Identity-resolution candidates (seed 000): ``moe_`` attributes or ``user_identifiers``."""
    if element.get("type") == "customer":
        attributes = element.get("attributes")
        if isinstance(attributes, dict):
            return [
                (key, value)
                for key, value in attributes.items()
                if key.startswith("moe_") and key not in NOT_IDENTIFIERS
            ]
    elif element.get("type") == "event":
        identifiers = element.get("user_identifiers")
        if isinstance(identifiers, dict):
            return list(identifiers.items())
    return []


def element_user_key(element: JsonDict) -> str:
    """The user an element is about: its ``customer_id``, else its first ``moe_`` identifier."""
    customer_id = element.get("customer_id")
    if customer_id is not None:
        if not isinstance(customer_id, str):
            raise _missing("customer_id", "customer_id is expected to be string")
        if not customer_id.strip():
            raise _missing("customer_id", "customer_id can not be empty Unicode String")
        return customer_id
    for key, value in _identifiers(element):
        if isinstance(value, str) and value.strip():
            return f"{key}:{value}"
    raise _missing("customer_id", "customer_id not found in the payload")


def _validate_element(element: object) -> None:
    if not isinstance(element, dict):
        raise ApiError(400, MALFORMED_ELEMENT, "Malformed JSON")
    if element.get("type") not in ELEMENT_TYPES:
        message = "type in elements should be customer/event/device"
        raise ApiError(400, message, "AttributeError", "type")
    if not isinstance(element.get("attributes", {}), dict):
        raise _missing("attributes", "attributes is expected to be dict")
    element_user_key(element)
    if element["type"] == "event":
        actions = element.get("actions")
        empty = _missing("action", "action cannot be empty Unicode string")
        if not isinstance(actions, list) or not actions:
            raise empty
        for action in actions:
            if not isinstance(action, dict):
                raise empty
            name = action.get("action")
            if not isinstance(name, str) or not name.strip():
                raise empty


def validate_transition(body: JsonDict) -> list[JsonDict]:
    """Check a Bulk Import body against seed 000's rules; return its elements."""
    if body.get("type") != "transition":
        raise ApiError(400, "type is expected to be transition", "AttributeError", "type")
    elements = body.get("elements")
    if not isinstance(elements, list) or not elements:
        raise _missing("elements", "elements cannot be empty array")
    for element in elements:
        _validate_element(element)
    return elements


def transition_cost(elements: list[JsonDict], device_cost: int) -> tuple[int, int]:
    """(users, events) a request spends: customers and devices are users, actions are events."""
    users = sum(1 for e in elements if e["type"] == "customer")
    users += device_cost * sum(1 for e in elements if e["type"] == "device")
    events = sum(len(e["actions"]) for e in elements if e["type"] == "event")
    return users, events


def export_identifiers(body: JsonDict) -> list[JsonDict]:
    """The Get User API's identifiers (seed 003), from ``data`` or, leniently, the top level."""
    data = body.get("data")
    if isinstance(data, dict) and "identifiers" in data:
        identifiers = data["identifiers"]
    elif "identifiers" in body:
        identifiers = body["identifiers"]
    elif not isinstance(data, dict):
        raise _missing("data", "data is not found in the payload")
    else:
        identifiers = None
    if not isinstance(identifiers, list) or not identifiers:
        raise _missing("identifiers", "identifiers is not found in the payload")
    if len(identifiers) > EXPORT_MAX_IDENTIFIERS:
        raise ApiError(400, "max limit allowed is 20", "LimitBreached", "payload.users")
    for item in identifiers:
        if not isinstance(item, dict) or not isinstance(item.get("identifier"), str):
            raise _missing("identifier", "identifier is not found in the payload")
    return identifiers


def truthy(value: object) -> bool:
    """``true`` or ``"true"``, as seed 002 allows for ``update_existing_only``."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


@dataclass
class SlidingWindow:
    """Users and events accepted in the last ``seconds``, as (time, (users, events)) entries."""

    seconds: float
    entries: deque[tuple[float, tuple[int, int]]] = field(default_factory=deque)

    def check(
        self, cost: tuple[int, int], limits: tuple[int | None, int | None], now: float
    ) -> None:
        """Raise a 429 naming the first exhausted budget if ``cost`` does not fit right now."""
        while self.entries and self.entries[0][0] <= now - self.seconds:
            self.entries.popleft()
        exceeded: list[str] = []
        wait = 0.0
        for index, (name, limit) in enumerate(zip(("customers", "events"), limits, strict=True)):
            used = sum(spent[index] for _, spent in self.entries)
            if limit is None or cost[index] == 0 or used + cost[index] <= limit:
                continue
            exceeded.append(name)
            wait = max(wait, self._wait(index, used + cost[index] - limit, now))
        if exceeded:
            message = f"Rate limits for {exceeded[0]} exceeded. Please Try After Some Time"
            raise ApiError(429, message, "Rate Limits Exceeded", retry_after=wait)

    def _wait(self, index: int, excess: int, now: float) -> float:
        freed = 0
        for at, spent in self.entries:
            freed += spent[index]
            if freed >= excess:
                return at + self.seconds - now
        return self.seconds  # larger than the whole budget: it never fits; say "a window"

    def record(self, cost: tuple[int, int], now: float) -> None:
        if cost != (0, 0):
            self.entries.append((now, cost))


def retry_after_seconds(wait: float) -> int:
    """Whole seconds for a ``Retry-After`` header: rounded up, at least one."""
    return max(1, math.ceil(wait - 1e-9))
