"""What MoEngage does, after its 200, to data that breaks its data-tracking policy; and a record.

The Bulk Import API accepts a valid request with a 200 and only then applies the policy of the
help-centre articles "Data Tracking Policies" and "Understand the MoEngage Data Tracking Policy":

- a string value over 512 characters keeps its first 512; a URL over 512 is rejected;
- an event name or attribute name over 200 characters keeps its first 200;
- an array of more than 50 elements, with a string element over 512 characters, or whose elements
  are not of one type (numbers are one type) is rejected;
- an object value is rejected unless the account has the Object data type;
- past 256 distinct custom user attributes, new ones are rejected; past 512 distinct events, new
  events are blacklisted (dropped, now and later); past 100 distinct attributes of one event, new
  ones are not ingested;
- an event name with a period is stored with ``". "`` and the next letter capitalised (``a.b`` →
  ``a. B``).

:class:`AccountPolicy` applies that to each accepted element and keeps every loss (what, why,
whose) in a bounded list with totals, for ``GET /_sandbox/policy-losses``. Rule ids are the
connector's (``policy.value_length``, ...), so a loss names the setting that would have avoided it.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]
_Ctx = tuple[str, str, str, str | None]  # request id, customer, element type, event name

# Standard user attributes (Data API overview, Track User API): not custom, never counted.
STANDARD_USER_ATTRIBUTES = frozenset(
    {
        "name", "first_name", "last_name", "email", "age", "gender", "mobile", "birthday",
        "moe_geo_location", "source", "created_time", "last_seen", "transactions", "revenue",
        "moe_unsubscribe", "platforms", "publisher_name", "campaign_name", "u_l_a", "cr_t",
        "u_mb", "uid", "u_bd", "u_em", "u_n", "u_ln", "u_gd", "u_fn",
    }
)  # fmt: skip
STRUCTURED = frozenset({"platforms", "moe_geo_location"})  # documented list / object shapes


@dataclass(frozen=True)
class PolicyLimits:
    """The account's limits (accounts can have them raised; tests make them small)."""

    max_value_length: int = 512
    max_name_length: int = 200
    max_array_length: int = 50
    max_user_attributes: int = 256
    max_events: int = 512
    max_event_attributes: int = 100
    object_data_type: bool = False

    def __post_init__(self) -> None:
        if min(self.max_value_length, self.max_name_length, self.max_array_length) < 1:
            raise ValueError("policy lengths must be at least 1")
        if min(self.max_user_attributes, self.max_events, self.max_event_attributes) < 0:
            raise ValueError("catalogue caps must not be negative")


@dataclass(frozen=True, slots=True)
class Loss:
    """One thing the account did not store as sent."""

    request_id: str
    customer: str
    element: str  # customer | event
    rule: str
    action: str  # truncated | rejected | blacklisted | renamed
    name: str  # the attribute or event name as sent (at most 256 characters)
    event: str | None = None

    def as_json(self) -> JsonDict:
        out: JsonDict = {
            "request_id": self.request_id,
            "customer": self.customer,
            "element": self.element,
            "rule": self.rule,
            "action": self.action,
            "name": self.name,
        }
        if self.event is not None:
            out["event"] = self.event
        return out


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else "null"


def period_name(name: str) -> str:
    """How MoEngage stores an event name with periods: ``a.b`` → ``a. B``."""
    head, *rest = name.split(".")
    return ". ".join([head, *(part[:1].upper() + part[1:] for part in rest)])


@dataclass
class AccountPolicy:
    """The account's catalogue (custom user attributes, events, each event's attributes) and the
    policy applied to what it stores."""

    limits: PolicyLimits = field(default_factory=PolicyLimits)
    keep: int = 10_000
    user_attributes: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)
    blacklisted: set[str] = field(default_factory=set)
    event_attributes: dict[str, set[str]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)  # "rule:action" -> count
    losses: deque[Loss] = field(init=False)
    # Names stored as sent: an element holding only these (and plain values) needs no walk.
    _user_names: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.losses = deque(maxlen=self.keep)

    def _lose(self, ctx: _Ctx, name: str, rule: str, action: str) -> None:
        request_id, customer, element, event = ctx
        key = f"{rule}:{action}"
        self.totals[key] = self.totals.get(key, 0) + 1
        shown = None if event is None else event[:256]
        self.losses.append(Loss(request_id, customer, element, rule, action, name[:256], shown))

    def customer(self, request_id: str, customer: str, attrs: JsonDict) -> JsonDict:
        """The attributes the account stores of ``attrs`` (``attrs`` itself when nothing is
        lost: every name already stored as it is, every value plain and short)."""
        if attrs.keys() <= self._user_names and self._clean(attrs):
            return attrs
        out: JsonDict = {}
        ctx: _Ctx = (request_id, customer, "customer", None)
        for name, value in attrs.items():
            key = self._name(name, ctx)
            custom = key not in STANDARD_USER_ATTRIBUTES and not key.startswith("moe_")
            full = len(self.user_attributes) >= self.limits.max_user_attributes
            if custom and full and key not in self.user_attributes:
                self._lose(ctx, name, "policy.user_attribute_cap", "rejected")
                continue
            kept = self._value(value, ctx, name, structured=key in STRUCTURED)
            if kept is _REJECTED:
                continue
            if custom:
                self.user_attributes.add(key)
            if key == name:
                self._user_names.add(key)
            out[key] = kept
        return out

    def event(self, request_id: str, customer: str, action: JsonDict) -> JsonDict | None:
        """The event as the account stores it, or None when its name is blacklisted."""
        sent = action.get("action", "")
        attributes = action.get("attributes") or {}
        known = self.event_attributes.get(sent)
        if (
            known is not None
            and attributes.keys() <= known
            and "." not in sent
            and self._clean(attributes)
        ):
            return dict(action)  # a catalogued event with catalogued attributes: nothing lost
        sent = str(sent)
        ctx: _Ctx = (request_id, customer, "event", sent)
        name = self._name(sent, ctx)
        if "." in name:
            name = period_name(name)
            self._lose(ctx, sent, "policy.event_name_period", "renamed")
        if name in self.blacklisted:
            self._lose(ctx, sent, "policy.event_cap", "blacklisted")
            return None
        if name not in self.events:
            if len(self.events) >= self.limits.max_events:
                self.blacklisted.add(name)
                self._lose(ctx, sent, "policy.event_cap", "blacklisted")
                return None
            self.events.add(name)
        known = self.event_attributes.setdefault(name, set())
        attrs: JsonDict = {}
        for attr, value in attributes.items():
            key = self._name(attr, ctx)
            if key not in known and len(known) >= self.limits.max_event_attributes:
                self._lose(ctx, attr, "policy.event_attribute_cap", "rejected")
                continue
            kept = self._value(value, ctx, attr, structured=False)
            if kept is _REJECTED:
                continue
            known.add(key)
            attrs[key] = kept
        event = {**action, "action": name}
        if "attributes" in action:
            event["attributes"] = attrs
        return event

    def _clean(self, attrs: JsonDict) -> bool:
        """Whether no length, type or object rule can apply to any value of ``attrs``."""
        longest = self.limits.max_value_length
        for value in attrs.values():
            t = type(value)
            if t is str:
                if len(value) > longest:
                    return False
            elif t is not int and t is not float and t is not bool and value is not None:
                return False
        return True

    def _name(self, name: str, ctx: _Ctx) -> str:
        if len(name) > self.limits.max_name_length:
            self._lose(ctx, name, "policy.name_length", "truncated")
            return name[: self.limits.max_name_length]
        return name

    def _value(self, value: Any, ctx: _Ctx, name: str, *, structured: bool) -> Any:
        limits = self.limits

        if isinstance(value, str) and len(value) > limits.max_value_length:
            if value[:8].lower().startswith(("http://", "https://")):
                self._lose(ctx, name, "policy.url_length", "rejected")
                return _REJECTED
            self._lose(ctx, name, "policy.value_length", "truncated")
            return value[: limits.max_value_length]
        if isinstance(value, float) and not math.isfinite(value):
            self._lose(
                ctx, name, "value.non_finite", "rejected"
            )  # never from JSON; a guard for in-process use
            return _REJECTED
        if structured:
            return value
        if isinstance(value, dict) and not limits.object_data_type:
            self._lose(ctx, name, "policy.object", "rejected")
            return _REJECTED
        if isinstance(value, list):
            kinds = {_kind(v) for v in value}
            rule = None
            if len(value) > limits.max_array_length:
                rule = "policy.array_length"
            elif kinds & {"object", "array"} and not limits.object_data_type:
                rule = "policy.object"
            elif any(isinstance(v, str) and len(v) > limits.max_value_length for v in value):
                rule = "policy.array_item_length"
            elif len(kinds) > 1:
                rule = "policy.array_mixed_types"
            if rule is not None:
                self._lose(ctx, name, rule, "rejected")
                return _REJECTED
        return value

    def as_json(self) -> JsonDict:
        """``GET /_sandbox/policy-losses``: totals, the catalogue's size, the kept losses."""
        limits = self.limits
        return {
            "total": sum(self.totals.values()),
            "by_rule": dict(sorted(self.totals.items())),
            "catalogue": {
                "user_attributes": len(self.user_attributes),
                "events": len(self.events),
                "blacklisted_events": sorted(self.blacklisted),
                "max_event_attributes_used": max(
                    map(len, self.event_attributes.values()), default=0
                ),
            },
            "limits": {
                "max_value_length": limits.max_value_length,
                "max_name_length": limits.max_name_length,
                "max_array_length": limits.max_array_length,
                "max_user_attributes": limits.max_user_attributes,
                "max_events": limits.max_events,
                "max_event_attributes": limits.max_event_attributes,
                "object_data_type": limits.object_data_type,
            },
            "losses": [loss.as_json() for loss in self.losses],
        }

    def reset(self) -> None:
        self.user_attributes.clear()
        self.events.clear()
        self.blacklisted.clear()
        self.event_attributes.clear()
        self._user_names.clear()
        self.totals.clear()
        self.losses.clear()


_REJECTED: Any = object()
