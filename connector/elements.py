"""MoEngage elements and the validation rules the seed documents state for them.

An element is a plain ``dict`` in the exact JSON shape of one entry of a Bulk Import ``elements``
list (seed 000): ``customer``, ``device`` or ``event``. Plain dicts keep the hot path cheap: the
transform builds them, ``ElementValidator.validate`` checks and normalises them in place, and the
batcher serialises them with orjson as they are.

The validator rejects, before anything is sent, what the Bulk API would otherwise accept with a
200 and then silently drop (seed 000: "All bulk API requests return a 200 response code"). Every
rejection is a ``ValidationError`` whose ``rule`` is a short stable id (see ``RULES``).

Event times are read as epoch seconds, milliseconds or microseconds by magnitude (see
``normalise_time``) and must fall inside a window: from ``validation.event_time_earliest``
(default 2000-01-01T00:00:00Z) to ``validation.event_time_max_future_seconds`` (default one day)
after now. Ids and names (customer_id, device_id, action names, attribute names) must not hold
control characters.

This module is pure: no Kafka, no HTTP, and the clock is the validator's ``clock`` argument.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import UTC
from itertools import product
from typing import Any, Final, NamedTuple

from connector.config import ValidationSettings
from connector.errors import ValidationError
from connector.eventtime import describe_seconds as _describe_seconds
from connector.eventtime import parse_time as _parse_time
from connector.eventtime import utc_seconds as _utc_seconds

Element = dict[str, Any]

# Seed 001, "Allowed values of customer_id"; compared after strip() and lower().
DISALLOWED_CUSTOMER_IDS: Final = frozenset(
    {
        "unknown", "guest", "null", "0", "1", "true", "false", "user_attribute_unique_id",
        "(empty)", "na", "n/a", "", "dummy_seller_code", "user_id", "id", "customer_id", "uid",
        "userid", "none", "-2", "-1", "2",
    }
)  # fmt: skip

# Seed 002 "Reserved Keywords for User Attributes" plus seed 001 ("id", "_id", "").
# "source" is a standard attribute in the older seed 001 but reserved in the newer seed 002; the
# newer document wins and validation.allowed_reserved_attributes lets it through when wanted.
RESERVED_USER_ATTRIBUTES: Final = frozenset(
    {
        "USER_ATTRIBUTE_UNIQUE_ID", "USER_ATTRIBUTE_USER_EMAIL", "USER_ATTRIBUTE_USER_MOBILE",
        "USER_ATTRIBUTE_USER_NAME", "USER_ATTRIBUTE_USER_GENDER", "USER_ATTRIBUTE_USER_FIRST_NAME",
        "USER_ATTRIBUTE_USER_LAST_NAME", "USER_ATTRIBUTE_USER_BDAY",
        "USER_ATTRIBUTE_NOTIFICATION_PREF", "USER_ATTRIBUTE_OLD_ID", "MOE_TIME_FORMAT",
        "MOE_TIME_TIMEZONE", "USER_ATTRIBUTE_DND_START_TIME", "USER_ATTRIBUTE_DND_END_TIME",
        "MOE_GAID", "MOE_ISLATINSTALL", "statusUPDATE", "MOE_ISLAT", "user_idstatus", "user_id",
        "source", "id", "_id", "",
    }
)  # fmt: skip
RESERVED_DEVICE_ATTRIBUTES: Final = frozenset({"id", "_id", ""})  # seed 001, Device API
RESERVED_EVENT_ATTRIBUTES: Final = frozenset({"id", "_id", "userId", ""})  # seed 001, Event API

# Standard user attributes documented with the system prefix (seed 001), so the moe_ rule of
# seed 002 cannot apply to them.
MOE_PREFIX_EXEMPT: Final = frozenset({"moe_geo_location", "moe_unsubscribe"})
# The prefix in every letter case: str.startswith with a tuple stays in C.
_MOE_PREFIXES: Final = tuple("".join(p) + "_" for p in product("mM", "oO", "eE"))

PLATFORMS: Final = frozenset({"ANDROID", "iOS", "web"})  # users and devices (seed 001)
EVENT_PLATFORMS: Final = PLATFORMS | {"unknown"}  # events (seed 001, Event API)
_PLATFORM_LOOKUP: Final = {**{p: p for p in PLATFORMS}, **{p.lower(): p for p in PLATFORMS}}
_EVENT_PLATFORM_LOOKUP: Final = {**_PLATFORM_LOOKUP, "unknown": "unknown"}

TIMEZONE_OFFSET_RANGE: Final = (-54000, 54000)  # seconds, seed 001
# C0, DEL and C1 control characters: never part of an id or a name.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
_MAX_SHOWN: Final = 64

# Every rule id a ValidationError can carry, with its message (prefixed "<type> element: ").
_MESSAGES: Final = {
    "element.shape": "{where} must be {what}",
    "element.type": "element type {value} is not one of customer, device, event (Bulk Import API)",
    "field.type": "{where} {value} must be {what}",
    "customer_id.type": "customer_id must be a string, got {what}; map it to a string in the "
    "transform (Data API overview)",
    "customer_id.length": "customer_id {value} is shorter than {what} characters "
    "(Data API overview)",
    "customer_id.disallowed": "customer_id {value} is a value MoEngage disallows "
    "(Data API overview)",
    "customer_id.missing": "customer_id is missing; {what}",
    "attribute.key_type": "{where} key {value} is not a string",
    "attribute.reserved": "{where} key {value} is reserved by MoEngage ({what}); rename "
    "it or list it in validation.allowed_reserved_attributes",
    "attribute.moe_prefix": "{where} key {value} uses the system prefix 'moe_' (Track User API)",
    "platform.unknown": "{where} {value} is not a known platform; expected one of {what} "
    "(Data API overview)",
    "device.missing_field": "{where} is mandatory for devices (Data API overview)",
    "actions.empty": "actions must be a non-empty list (Data API overview)",
    "action.empty": "{where}.action (the event name) is empty (Bulk Import API)",
    "action.reserved": "{where}.action {value} is a reserved event name (Data API overview)",
    "action.moe_prefix": "{where}.action {value} uses the system prefix 'moe_' (Track User API)",
    "user_timezone_offset.range": "{where}.user_timezone_offset {value} is outside "
    "-54000..54000 seconds (Data API overview)",
    "time.format": "{where} {value} is neither an epoch time (seconds, milliseconds or "
    "microseconds) nor ISO 8601 (Data API overview)",
    "time.range": "{where} {value} is {what}",
    "time.no_zone": "{where} {value} is ISO 8601 without a zone offset, but current_time is UTC "
    "(Data API overview): add the offset, send a local time as user_time, or set "
    "validation.local_timezone for Avro local-timestamp values",
    "customer_id.control_character": "customer_id {value} contains the control character {what}",
    "device_id.control_character": "{where} {value} contains the control character {what}",
    "action.control_character": "{where}.action {value} contains the control character {what}",
    "attribute.control_character": "{where} key {value} contains the control character {what}",
    "element.invalid": "{where} could not be checked: {what}",
}
RULES: Final = frozenset(_MESSAGES)


def _short(value: object) -> str:
    """Render an offending value for a message, at most 64 characters."""
    if isinstance(value, str):
        s = value if len(value) <= _MAX_SHOWN else value[: _MAX_SHOWN - 3] + "..."
        return repr(s)
    if isinstance(value, int) and not -(10**_MAX_SHOWN) < value < 10**_MAX_SHOWN:
        return f"<int of {value.bit_length()} bits>"  # repr() refuses ints past 4,300 digits
    try:
        r = repr(value)
    except Exception:  # noqa: BLE001 -- user objects: a message must never fail
        return f"<{type(value).__name__}>"
    return r if len(r) <= _MAX_SHOWN else r[: _MAX_SHOWN - 3] + "..."


def _time_or_none(value: object) -> int | str | None:
    """The normalised time, or None when ``value`` is not a time MoEngage accepts."""
    parsed = _parse_time(value)
    return None if parsed is None else parsed[0]


def normalise_time(value: object) -> int | str:
    """Normalise an event time: epoch seconds as ``int``, or an ISO 8601 string unchanged.

    Numbers and numeric strings are epoch times read by magnitude: below 1e11 seconds, from 1e11
    milliseconds (the seed 000 samples send those), from 1e14 microseconds; they become whole
    seconds, rounded down. Booleans are not numbers; digit strings longer than 30 are no time.
    The event-time window is the validator's business, not this function's.
    """
    result = _time_or_none(value)
    if result is None:
        raise _fail("time.format", "", "time", value)
    return result


def _control_character(text: str) -> str | None:
    """The first control character in ``text`` as ``U+XXXX``, or None (fast for printable text)."""
    if text.isprintable():
        return None
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def customer_key(element: Element, identifier_keys: frozenset[str] = frozenset()) -> str:
    """The identity that orders a customer's elements: ``customer_id``, else its identifiers.

    Identifiers come from an event's ``user_identifiers`` or, for a customer element under identity
    resolution, from the attributes named in ``identifier_keys`` (without them: its ``moe_``
    attributes, which is how seed 000 names identifiers). They are rendered ``key=value`` sorted by
    key and joined with ``&``, so the same identifiers always give the same key.
    """
    cid = element.get("customer_id")
    if isinstance(cid, str):
        return cid
    ids = element.get("user_identifiers")
    if not isinstance(ids, dict):
        attrs = element.get("attributes")
        if not isinstance(attrs, dict):
            return ""
        if identifier_keys:
            ids = {k: attrs[k] for k in identifier_keys if attrs.get(k) is not None}
        else:
            ids = {
                k: v
                for k, v in attrs.items()
                if isinstance(k, str)
                and k.startswith("moe_")
                and k not in MOE_PREFIX_EXEMPT
                and v is not None
            }
    return "&".join(f"{k}={ids[k]}" for k in sorted(ids))


def _to_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return None


def _drop_nones(obj: dict[str, Any]) -> None:
    """Drop keys whose value is null: MoEngage treats an absent optional field as unset."""
    if None in obj.values():
        for k in [k for k, v in obj.items() if v is None]:
            del obj[k]


def _fail(
    rule: str, kind: str, where: str = "", value: object = None, what: object = ""
) -> ValidationError:
    """The ``ValidationError`` for ``rule``: one sentence naming the element type and the key."""
    text = _MESSAGES[rule].format(where=where, value=_short(value), what=what)
    return ValidationError(f"{kind} element: {text}" if kind else text, rule=rule)


class Passed(NamedTuple):
    """See :meth:`ElementValidator.passed`."""

    min_len: int  # a customer id, stripped, is at least this long
    disallowed: frozenset[str]  # and, lower-cased, not one of these
    actions: set[str]  # event names that passed their rules
    event_keys: set[str]  # event attribute names that passed theirs
    platforms: dict[str, str]  # an event's platform, as written -> as sent
    earliest: float  # event times lie in [earliest, clock() + max_future]
    max_future: float
    clock: Callable[[], float]


class ElementValidator:
    """Checks elements against the seed documents' rules and normalises them in place.

    Built once per connector from ``validation`` settings and the identity-resolution identifiers
    the transforms use (``identifier_keys``, e.g. ``moe_mobile``): those may carry the ``moe_``
    prefix in customer attributes and stand in for ``customer_id``. Null optional fields are
    dropped rather than sent.
    """

    def __init__(
        self,
        settings: ValidationSettings,
        identifier_keys: frozenset[str] = frozenset(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        allowed = frozenset(settings.allowed_reserved_attributes)
        extra = {s.strip().lower() for s in settings.extra_disallowed_customer_ids}
        self._min_len = settings.customer_id_min_length
        self._disallowed = DISALLOWED_CUSTOMER_IDS | extra
        self._reserved_user = RESERVED_USER_ATTRIBUTES - allowed
        self._reserved_device = RESERVED_DEVICE_ATTRIBUTES - allowed
        self._reserved_event = RESERVED_EVENT_ATTRIBUTES - allowed
        self.identifier_keys = frozenset(identifier_keys)
        self._user_moe_exempt = MOE_PREFIX_EXEMPT | self.identifier_keys
        self._clock = clock
        # Names that passed a rule set once, per rule set (see _KnownKeys): most streams use a
        # small vocabulary of attribute and event names, checked in full only the first time.
        self._user_keys = _KnownKeys("customer", self._reserved_user, self._user_moe_exempt)
        self._device_keys = _KnownKeys("device", self._reserved_device, None)
        self._event_keys = _KnownKeys("event", self._reserved_event, MOE_PREFIX_EXEMPT)
        self._identifier_keys = _KnownKeys("event", frozenset(), None)
        self._good_actions: set[str] = set()
        self._earliest = settings.event_time_earliest.timestamp()
        self._max_future = settings.event_time_max_future_seconds
        self._checks: dict[str, Callable[[Element], None]] = {
            "customer": self._customer,
            "device": self._device,
            "event": self._event,
        }

    def validate(self, element: Element) -> Element:
        """Return ``element`` normalised (the same dict), or raise ``ValidationError``."""
        if not isinstance(element, dict):
            raise _fail("element.shape", "", "element", what="a JSON object")
        kind = element.get("type")
        check = self._checks.get(kind) if isinstance(kind, str) else None
        if check is None:
            raise _fail("element.type", "", value=kind)
        try:
            if None in element.values():
                _drop_nones(element)
            check(element)
        except ValidationError:
            raise
        except Exception as e:  # e.g. a value whose comparison raises: still only this record
            what = f"{type(e).__name__}: {_short(str(e))}"
            raise _fail("element.invalid", str(kind), "element", what=what) from e
        return element

    def validate_mapped_event(self, el: Element) -> Element:
        """:meth:`validate` for an event that a mapping of one element (no ``when``, no
        ``then``) built: by construction a dict of type ``event`` with no null at its top level
        or in its one action, ``user_identifiers`` (if any) a dict, ``actions`` a list of one
        dict whose ``action`` is set and whose ``attributes`` is a dict. So the shape checks
        are decided already; the checks of values run in :meth:`validate`'s order, with the
        same errors."""
        try:
            ids = el.get("user_identifiers")
            if ids is not None:
                self._identifier_keys.check("user_identifiers", ids)
            if "customer_id" in el:
                cid = el["customer_id"]
                # _customer_id's checks; any doubt and it decides (and names the problem).
                if not (
                    type(cid) is str
                    and cid.isprintable()
                    and len(stripped := cid.strip()) >= self._min_len
                    and stripped.lower() not in self._disallowed
                ):
                    self._customer_id("event", cid)
            elif not ids or all(v in (None, "") for v in ids.values()):
                hint = "give customer_id or a non-empty user_identifiers object (Bulk Import API)"
                raise _fail("customer_id.missing", "event", what=hint)
            if "device_id" in el:
                _check_device_id("event", el)
            a = el["actions"][0]
            name = a["action"]
            if not isinstance(name, str):
                raise _fail("field.type", "event", "actions[0].action", name, "a string")
            if name not in self._good_actions:
                self._action_name("actions[0]", name)
            attrs = a["attributes"]
            if not attrs.keys() <= self._event_keys._known:  # _KnownKeys.check, inline
                self._event_keys.check("actions[0].attributes", attrs)
            if not _plain_action_fields(a):
                _action_fields(0, a)
            if "current_time" in a:
                value = a["current_time"]
                seconds = _utc_seconds(value) if type(value) is str else None
                if seconds is None or not (
                    self._earliest <= seconds <= self._clock() + self._max_future
                ):
                    self._event_time(0, "current_time", a)
            if "user_time" in a:
                self._event_time(0, "user_time", a)
        except ValidationError:
            raise
        except Exception as e:  # e.g. a value whose comparison raises: still only this record
            what = f"{type(e).__name__}: {_short(str(e))}"
            raise _fail("element.invalid", "event", "element", what=what) from e
        return el

    def passed(self) -> Passed:
        """What an event must match to pass :meth:`validate_mapped_event` with nothing to say:
        the sets are the validator's own, growing as names pass (read, never written)."""
        return Passed(
            min_len=self._min_len,
            disallowed=self._disallowed,
            actions=self._good_actions,
            event_keys=self._event_keys._known,
            platforms=_EVENT_PLATFORM_LOOKUP,
            earliest=self._earliest,
            max_future=self._max_future,
            clock=self._clock,
        )

    def customer_key(self, element: Element) -> str:
        """``customer_key`` with this validator's identifier keys."""
        return customer_key(element, self.identifier_keys)

    # ----- per type ---------------------------------------------------------------------------

    def _customer(self, el: Element) -> None:
        attrs = el.get("attributes")
        if attrs is not None and not isinstance(attrs, dict):
            raise _fail("element.shape", "customer", "attributes", what="a JSON object")
        if "customer_id" in el:
            self._customer_id("customer", el["customer_id"])
        elif not attrs or all(attrs.get(k) in (None, "") for k in self.identifier_keys):
            ids = sorted(self.identifier_keys)
            hint = f"give customer_id or one of {ids} in attributes" if ids else "give customer_id"
            raise _fail("customer_id.missing", "customer", what=f"{hint} (Bulk Import API)")
        if attrs:
            self._user_keys.check("attributes", attrs)
            if "platforms" in attrs:
                _check_platforms(attrs["platforms"])
        if "update_existing_only" in el:
            raw = el["update_existing_only"]
            flag = _to_bool(raw)
            if flag is None:
                raise _fail(
                    "field.type",
                    "customer",
                    "update_existing_only",
                    raw,
                    "true or false (Track User API)",
                )
            el["update_existing_only"] = flag

    def _device(self, el: Element) -> None:
        if "customer_id" not in el:
            raise _fail("customer_id.missing", "device", what="devices need it (Data API overview)")
        self._customer_id("device", el["customer_id"])
        _check_device_id("device", el)
        attrs = el.get("attributes", {})
        if not isinstance(attrs, dict):
            raise _fail("element.shape", "device", "attributes", what="a JSON object")
        self._device_keys.check("attributes", attrs)
        for key in ("platform", "push_id"):
            if attrs.get(key) in (None, ""):
                raise _fail("device.missing_field", "device", f"attributes.{key}")
        platform = attrs["platform"]
        canon = _canonical(platform, _PLATFORM_LOOKUP)
        if canon is None:
            raise _fail("platform.unknown", "device", "attributes.platform", platform, _USER_P)
        if canon is not platform:
            attrs["platform"] = canon
        if not isinstance(attrs["push_id"], str):
            raise _fail("field.type", "device", "attributes.push_id", attrs["push_id"], "a string")

    def _event(self, el: Element) -> None:
        ids = el.get("user_identifiers")
        if ids is not None:
            if not isinstance(ids, dict):
                raise _fail("element.shape", "event", "user_identifiers", what="a JSON object")
            self._identifier_keys.check("user_identifiers", ids)
        if "customer_id" in el:
            self._customer_id("event", el["customer_id"])
        elif not ids or all(v in (None, "") for v in ids.values()):
            hint = "give customer_id or a non-empty user_identifiers object (Bulk Import API)"
            raise _fail("customer_id.missing", "event", what=hint)
        if el.get("device_id") is not None:
            _check_device_id("event", el)
        actions = el.get("actions")
        if actions is not None and not isinstance(actions, list):
            raise _fail("element.shape", "event", "actions", what="a list")
        if not actions:
            raise _fail("actions.empty", "event")
        for i, action in enumerate(actions):
            self._action(i, action)

    def _action(self, i: int, a: object) -> None:
        """``actions[i]``; its place in messages is only rendered for a failure."""
        if not isinstance(a, dict):
            raise _fail("element.shape", "event", f"actions[{i}]", what="a JSON object")
        if None in a.values():
            _drop_nones(a)
        name = a.get("action", "")
        if not isinstance(name, str):
            raise _fail("field.type", "event", f"actions[{i}].action", name, "a string")
        if name not in self._good_actions:
            self._action_name(f"actions[{i}]", name)
        attrs = a.get("attributes")
        if attrs is not None:
            if not isinstance(attrs, dict):
                where = f"actions[{i}].attributes"
                raise _fail("element.shape", "event", where, what="a JSON object")
            if not self._event_keys.known(attrs):
                self._event_keys.check(f"actions[{i}].attributes", attrs)
        _action_fields(i, a)
        for key in ("current_time", "user_time"):
            if key in a:
                self._event_time(i, key, a)

    def _action_name(self, where: str, name: str) -> None:
        """The rules for an event name not seen before; a name that passes is remembered."""
        if not name.strip():
            raise _fail("action.empty", "event", where)
        if name in self._reserved_event:
            raise _fail("action.reserved", "event", where, name)
        if name.startswith(_MOE_PREFIXES):
            raise _fail("action.moe_prefix", "event", where, name)
        bad = _control_character(name)
        if bad is not None:
            raise _fail("action.control_character", "event", where, name, bad)
        _remember(self._good_actions, (name,))

    def _event_time(self, i: int, key: str, action: dict[str, Any]) -> None:
        """Normalise one event time in place and check it lies inside the window."""
        value = action[key]
        # What an Avro timestamp became is read without a datetime (the same seconds).
        fast = _utc_seconds(value) if type(value) is str else None
        result: int | str = value  # a str whenever fast is not None
        epoch = False  # a number read by magnitude: a failure shows how it was read
        if fast is not None:
            seconds: float = fast
        else:
            parsed = _parse_time(value)
            if parsed is None:
                raise _fail("time.format", "event", f"actions[{i}].{key}", value)
            result, moment = parsed
            if moment is None:
                epoch = True
                seconds = result if isinstance(result, int) else math.inf  # ints compare exactly
            else:
                if moment.tzinfo is None:
                    if key == "current_time":
                        raise _fail("time.no_zone", "event", f"actions[{i}].{key}", value)
                    moment = moment.replace(tzinfo=UTC)  # a local time: the window is a day wide
                try:
                    seconds = moment.timestamp()
                except (OverflowError, ValueError):  # year 1 or 9999 moved across a zone offset
                    seconds = math.inf
        latest = self._clock() + self._max_future
        if not self._earliest <= seconds <= latest:
            shown = f"read as {_describe_seconds(seconds)}, " if epoch else ""
            earliest = _describe_seconds(self._earliest)
            what = (
                f"{shown}outside the accepted event times {earliest} .. now + "
                f"{self._max_future} s (validation.event_time_earliest, "
                "validation.event_time_max_future_seconds)"
            )
            raise _fail("time.range", "event", f"actions[{i}].{key}", value, what)
        if result is not value:
            action[key] = result

    def _customer_id(self, kind: str, cid: object) -> None:
        if not isinstance(cid, str):
            raise _fail("customer_id.type", kind, what=type(cid).__name__)
        if not cid.isprintable():
            bad = _control_character(cid)
            if bad is not None:
                raise _fail("customer_id.control_character", kind, value=cid, what=bad)
        stripped = cid.strip()
        if stripped.lower() in self._disallowed:
            raise _fail("customer_id.disallowed", kind, value=cid)
        if len(stripped) < self._min_len:
            raise _fail("customer_id.length", kind, value=cid, what=self._min_len)


# ----- shared checks ------------------------------------------------------------------------------

_USER_P: Final = "ANDROID, iOS, web"
_EVENT_P: Final = "ANDROID, iOS, web, unknown"


_MAX_KNOWN: Final = 4096  # names remembered per rule set; past it the set starts afresh


def _remember(known: set[str], names: Any) -> None:
    """Add names that passed their rules to ``known``, which never grows past ``_MAX_KNOWN``
    (a stream of ever-new names, e.g. ids used as keys, only costs the full checks it had)."""
    if len(known) >= _MAX_KNOWN:
        known.clear()
    known.update(names)


class _KnownKeys:
    """``_check_keys`` for one rule set (element type, reserved names, ``moe_`` exemptions), with
    the names that already passed it remembered: an element whose keys are all known is done in
    one C-level subset test. Only strings that passed are remembered, and keys of other types
    (int, bytes, tuple, None, ...) never equal a string, so a key the full check would refuse is
    never taken for a known one."""

    __slots__ = ("_kind", "_known", "_moe_exempt", "_reserved")

    def __init__(
        self, kind: str, reserved: frozenset[str], moe_exempt: frozenset[str] | None
    ) -> None:
        self._kind = kind
        self._reserved = reserved
        self._moe_exempt = moe_exempt
        self._known: set[str] = set()

    def known(self, attrs: dict[Any, Any]) -> bool:
        """Whether every key of ``attrs`` already passed (then ``check`` has nothing to do)."""
        return attrs.keys() <= self._known

    def check(self, where: str, attrs: dict[Any, Any]) -> None:
        """``_check_keys`` unless every key is known; ``where`` names ``attrs`` in a failure."""
        if not attrs.keys() <= self._known:
            _check_keys(self._kind, where, attrs, self._reserved, self._moe_exempt)
            _remember(self._known, attrs)


def _check_keys(
    kind: str,
    where: str,
    attrs: dict[Any, Any],
    reserved: frozenset[str],
    moe_exempt: frozenset[str] | None,
) -> None:
    """Attribute names: strings, not reserved, and (unless ``moe_exempt`` is None) no ``moe_``."""
    if not reserved.isdisjoint(attrs):
        bad = next(k for k in attrs if k in reserved)
        raise _fail(
            "attribute.reserved",
            kind,
            where,
            bad,
            "Track User API" if kind == "customer" else "Data API overview",
        )
    if moe_exempt is None:
        for k in attrs:
            if not isinstance(k, str):
                raise _fail("attribute.key_type", kind, where, k)
    else:
        try:
            for k in attrs:
                if k.startswith(_MOE_PREFIXES) and k not in moe_exempt:
                    raise _fail("attribute.moe_prefix", kind, where, k)
        except (AttributeError, TypeError):  # a key without str.startswith, or bytes
            bad = next(k for k in attrs if not isinstance(k, str))
            raise _fail("attribute.key_type", kind, where, bad) from None
    if attrs and not "".join(attrs).isprintable():  # keys are all strings by now
        for k in attrs:
            char = _control_character(k)
            if char is not None:
                raise _fail("attribute.control_character", kind, where, k, char)


def _check_platforms(platforms: object) -> None:
    """``attributes.platforms``: a list of ``{"platform": ..., "active": ...}`` objects."""
    if not isinstance(platforms, list):
        raise _fail("element.shape", "customer", "attributes.platforms", what="a list")
    for i, entry in enumerate(platforms):
        where = f"attributes.platforms[{i}]"
        if not isinstance(entry, dict):
            raise _fail("element.shape", "customer", where, what="a JSON object")
        p = entry.get("platform")
        canon = _canonical(p, _PLATFORM_LOOKUP)
        if canon is None:
            raise _fail("platform.unknown", "customer", f"{where}.platform", p, _USER_P)
        if canon is not p:
            entry["platform"] = canon


def _canonical(platform: object, lookup: dict[str, str]) -> str | None:
    """The canonical spelling of a platform name matched case-insensitively, or None."""
    if not isinstance(platform, str):
        return None
    canon = lookup.get(platform)
    return canon if canon is not None else lookup.get(platform.strip().lower())


def _check_device_id(kind: str, el: Element) -> None:
    device_id = el.get("device_id")
    if device_id is not None and (not isinstance(device_id, str) or not device_id):
        raise _fail("field.type", kind, "device_id", device_id, "a non-empty string")
    if device_id is not None:
        bad = _control_character(device_id)
        if bad is not None:
            raise _fail("device_id.control_character", kind, "device_id", device_id, bad)


def _plain_action_fields(a: dict[str, Any]) -> bool:
    """Whether ``_action_fields`` has nothing to say about ``a`` but a platform's spelling
    (set here): a known platform, a string ``app_version``, an int offset in range."""
    if "platform" in a:
        platform = a["platform"]
        canon = _EVENT_PLATFORM_LOOKUP.get(platform) if type(platform) is str else None
        if canon is None:
            return False
        if canon is not platform:
            a["platform"] = canon
    if "app_version" in a and type(a["app_version"]) is not str:
        return False
    if "user_timezone_offset" in a:
        offset = a["user_timezone_offset"]
        if type(offset) is not int or not -54000 <= offset <= 54000:
            return False
    return True


def _action_fields(i: int, a: dict[str, Any]) -> None:
    """The optional fields of ``actions[i]`` (nulls already dropped)."""
    if "platform" in a:
        platform = a["platform"]
        canon = _canonical(platform, _EVENT_PLATFORM_LOOKUP)
        if canon is None:
            raise _fail("platform.unknown", "event", f"actions[{i}].platform", platform, _EVENT_P)
        if canon is not platform:
            a["platform"] = canon
    if "app_version" in a:
        version = a["app_version"]
        t = type(version)
        if t is int or t is float:
            a["app_version"] = str(version)
        elif t is not str:
            raise _fail("field.type", "event", f"actions[{i}].app_version", version, "a string")
    if "user_timezone_offset" in a:
        offset = a["user_timezone_offset"]
        n = _integral(offset) if type(offset) is not int else offset
        if n is None:
            key = f"actions[{i}].user_timezone_offset"
            raise _fail("field.type", "event", key, offset, "whole seconds (Data API overview)")
        low, high = TIMEZONE_OFFSET_RANGE
        if not low <= n <= high:
            raise _fail("user_timezone_offset.range", "event", f"actions[{i}]", n)
        if n is not offset:
            a["user_timezone_offset"] = n


def _integral(value: object) -> int | None:
    """An integer from an int, an integral float or a numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
