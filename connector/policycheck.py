"""Pre-flight checks of MoEngage's data-tracking policy on validated elements (see ``policy``).

:meth:`Preflight.check` looks at a customer's attributes and at each event action's name and
attributes, and applies the topic's action to whatever MoEngage would truncate or reject:
``truncate`` / ``replace`` / ``flatten`` / ``stringify`` change the element in place, ``allow``
leaves it, ``bad_input`` raises ``PolicyError`` with the rule id. Every application is counted
through ``on_count(rule, action)``; data-changing ones are also logged, once per rule and
attribute name per ``log_interval_seconds``, and at most 100 lines in all per interval.

Cost: an attribute dictionary whose values are all strings, numbers, booleans or nulls, within the
lengths, is cleared by one pass of exact type tests (nothing allocated, nothing copied); only a
dictionary holding a list, an object, a long string or name, or a non-finite number is walked by
the exact (slower) code that applies the actions. Device elements are not judged (the policy
speaks of user and event attributes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
import structlog

from connector.errors import ConfigError, PolicyError, ValidationError
from connector.policy import (
    MAX_ARRAY_LENGTH,
    MAX_NAME_LENGTH,
    MAX_VALUE_LENGTH,
    RULE_IDS,
    STRUCTURED_STANDARD_ATTRIBUTES,
    PolicyRules,
    PolicySettings,
    is_url,
)

log = structlog.get_logger(__name__)

Element = dict[str, Any]
Counter = Callable[[str, str], None]

_MAX_LOGGED_NAMES: Final = 4096
_MAX_LINES: Final = 100
_SHOWN: Final = 64


def _no_count(rule: str, action: str) -> None:
    """The counter when nobody counts (``preview``, ``validate``)."""


def _short(name: str) -> str:
    return name if len(name) <= _SHOWN else name[: _SHOWN - 3] + "..."


def _non_finite_text(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _kind(value: object) -> str:
    """An array element's type, as the policy counts types (numbers are one type)."""
    t = type(value)
    if t is str:
        return "string"
    if t is bool:
        return "boolean"
    if t is int or t is float:
        return "number"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list | tuple) else t.__name__


class Preflight:
    """The policy of every topic, built once from ``policy`` settings."""

    def __init__(
        self,
        settings: PolicySettings,
        topics: list[str],
        *,
        on_count: Counter | None = None,
        revalidate: Callable[[Element], Element] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = sorted(set(settings.topics) - set(topics))
        if unknown:
            problems = [(f"policy.topics.{t}", "not one of the configured topics") for t in unknown]
            raise ConfigError(problems)
        self._count = on_count or _no_count
        self._revalidate = revalidate
        self._clock = clock
        self._interval = settings.log_interval_seconds
        self._logged: dict[tuple[str, str], float] = {}
        # All names together: at most _MAX_LINES lines per interval (data-dependent names, such
        # as a map's keys flattened, must not flood the log); the rest are counted and reported.
        self._window_start = clock()
        self._lines = 0
        self._suppressed = 0
        self._settings = settings
        self.short_names = _ShortNames()  # shared by every topic: a name's length is the same
        self._checks = {
            t: _TopicCheck(t, settings.rules_for(t), settings, self).check for t in topics
        }

    def checker(self, topic: str) -> Callable[[Element], None]:
        """The check for ``topic``'s elements: changes in place or raises ``PolicyError``
        (a topic not named at construction gets the default actions)."""
        check = self._checks.get(topic)
        if check is None:
            rules = self._settings.rules_for(topic)
            check = self._checks[topic] = _TopicCheck(topic, rules, self._settings, self).check
        return check

    def applied(self, rule: str, action: str, topic: str, kind: str, name: str) -> None:
        """Count one application; log it unless the same rule and name was logged lately."""
        self._count(rule, action)
        if action in ("bad_input", "allow"):
            return  # bad input has its own line (bad_record); allow changes nothing
        key = (rule, name)
        now = self._clock()
        last = self._logged.get(key)
        if last is not None and now - last < self._interval:
            return
        if len(self._logged) >= _MAX_LOGGED_NAMES:
            self._logged.clear()
        self._logged[key] = now
        if now - self._window_start >= self._interval:
            if self._suppressed:
                log.warning(
                    "policy_applied_suppressed",
                    lines=self._suppressed,
                    note=f"more than {_MAX_LINES} policy_applied lines in {self._interval:g} s",
                )
            self._window_start, self._lines, self._suppressed = now, 0, 0
        if self._lines >= _MAX_LINES:
            self._suppressed += 1
            return
        self._lines += 1
        log.warning(
            "policy_applied",
            rule=rule,
            action=action,
            topic=topic,
            element_type=kind,
            attribute=_short(name),
            note=f"logged at most once per {self._interval:g} s for this rule and name",
        )

    def revalidate(self, element: Element) -> None:
        if self._revalidate is not None:
            self._revalidate(element)


class _TopicCheck:
    """One topic's actions, and the walk over an element's names and values."""

    def __init__(
        self, topic: str, rules: PolicyRules, settings: PolicySettings, owner: Preflight
    ) -> None:
        self.topic = topic
        self.rules = rules
        self.sep = settings.flatten_separator
        self.period_to = settings.period_replacement
        self.owner = owner
        self.short_names = owner.short_names

    # ----- the hot path -------------------------------------------------------------------------

    def check(self, element: Element) -> None:
        kind = element["type"]
        renamed = False
        clean = self.short_names.clean
        if kind == "customer":
            attrs = element.get("attributes")
            if attrs and not clean(attrs):
                renamed = self._attributes(attrs, "customer", "attributes")
        elif kind == "event":
            actions = element["actions"]
            for action in actions:  # its index is only worked out for a message
                name = action["action"]
                if len(name) > MAX_NAME_LENGTH or "." in name:
                    renamed |= self._event_name(action, _index(actions, action))
                attrs = action.get("attributes")
                if attrs and not clean(attrs):
                    where = f"actions[{_index(actions, action)}].attributes"
                    renamed |= self._attributes(attrs, "event", where)
        if renamed:  # new names (flattened, truncated) must pass validation's name rules too
            self.owner.revalidate(element)

    # ----- what happens when something is wrong --------------------------------------------------

    def _act(self, setting: str, kind: str, name: str, message: str) -> str:
        """The action for ``setting``; raises for ``bad_input``, counts and logs otherwise."""
        action: str = getattr(self.rules, setting)
        rule = RULE_IDS[setting]
        self.owner.applied(rule, action, self.topic, kind, name)
        if action == "bad_input":
            # A number JSON cannot carry is the element's own fault (stage "validate"), as it
            # always was; the rest is what MoEngage's policy would drop (stage "policy").
            error = ValidationError if setting == "non_finite" else PolicyError
            raise error(
                f"{kind} element: {message} (MoEngage's Data Tracking Policies); set "
                f"policy.{setting} to choose another action",
                rule=rule,
            )
        return action

    def _event_name(self, action: dict[str, Any], i: int) -> bool:
        name: str = action["action"]
        where = f"actions[{i}].action {_short(name)!r}"
        if "." in name:
            how = self._act(
                "event_name_period", "event", name, f"{where} has a period (stored as 'a. B')"
            )
            if how == "replace":
                name = name.replace(".", self.period_to)
        if len(name) > MAX_NAME_LENGTH:
            what = f"{where} is {len(name)} characters, over {MAX_NAME_LENGTH}"
            if self._act("name_length", "event", name, what) == "truncate":
                name = name[:MAX_NAME_LENGTH]
        if name != action["action"]:
            action["action"] = name
            return True
        return False

    def _attributes(self, attrs: dict[str, Any], kind: str, where: str) -> bool:
        """Walk ``attrs`` in Python, changing it in place; whether a name changed."""
        out: list[tuple[str, Any]] = []
        todo = list(attrs.items())
        todo.reverse()
        renamed = False
        made: set[str] = set()  # names flattening made (a clash with one would lose a value)
        while todo:
            key, value = todo.pop()
            if len(key) > MAX_NAME_LENGTH:
                what = f"{where} name {_short(key)!r} is {len(key)} characters, over 200"
                if self._act("name_length", kind, key, what) == "truncate":
                    if key in made:
                        made.add(key[:MAX_NAME_LENGTH])
                    key = key[:MAX_NAME_LENGTH]
                    renamed = True
            if type(value) is dict and key in STRUCTURED_STANDARD_ATTRIBUTES and kind == "customer":
                out.append((key, value))
                continue
            if isinstance(value, dict):
                how = self._act("object", kind, key, f"{where}.{_short(key)} is an object")
                if how == "flatten":
                    pairs = [(f"{key}{self.sep}{k}", v) for k, v in value.items()]
                    made.update(name for name, _ in pairs)
                    todo.extend(reversed(pairs))
                    renamed = True
                    continue
                if how == "stringify":
                    value = self._stringify(value, kind, key, where)
            elif isinstance(value, list | tuple):
                if not (kind == "customer" and key in STRUCTURED_STANDARD_ATTRIBUTES):
                    value = self._array(value, kind, key, where)
            elif isinstance(value, float) and not math.isfinite(value):
                text = _non_finite_text(value)
                self._act("non_finite", kind, key, f"{where}.{_short(key)} is {text}")
                value = text  # stringify: the only other action
            if isinstance(value, str) and len(value) > MAX_VALUE_LENGTH:
                value = self._long_string(value, kind, key, where)
            out.append((key, value))
        if made:
            self._no_clash(out, made, kind, where)
        if renamed or len(out) != len(attrs):
            attrs.clear()
            attrs.update(out)
        else:
            for key, value in out:
                if attrs[key] is not value:
                    attrs[key] = value
        return renamed

    def _no_clash(self, out: list[tuple[str, Any]], made: set[str], kind: str, where: str) -> None:
        """Flattening must not make a name twice (``{"a_b": 1, "a": {"b": 2}}``): one of the
        values would be dropped without a word. Bad input under the object rule."""
        seen: set[str] = set()
        for key, _ in out:
            if key in seen and key in made:
                raise PolicyError(
                    f"{kind} element: flattening {where} makes the attribute {_short(key)!r}, "
                    "which the element has already: one of the two values would be lost; "
                    "rename one in the transform, or set policy.flatten_separator",
                    rule=RULE_IDS["object"],
                )
            seen.add(key)

    def _long_string(self, value: str, kind: str, key: str, where: str) -> str:
        what = f"{where}.{_short(key)} is {len(value)} characters, over {MAX_VALUE_LENGTH}"
        if is_url(value):
            self._act("url_length", kind, key, f"{what}, and a URL that long is rejected")
            return value  # allow
        if self._act("value_length", kind, key, what) == "truncate":
            return value[:MAX_VALUE_LENGTH]
        return value

    def _stringify(self, value: Any, kind: str, key: str, where: str) -> Any:
        """``value`` as a JSON string; a non-finite number inside is judged first."""
        bad = _first_non_finite(value)
        if bad is not None:
            text = _non_finite_text(bad)
            self._act("non_finite", kind, key, f"{where}.{_short(key)} holds {text}")
            value = _replace_non_finite(value)
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        except orjson.JSONEncodeError:
            return value  # the encoder names what JSON cannot carry (element.unencodable)

    def _array(self, value: list[Any] | tuple[Any, ...], kind: str, key: str, where: str) -> Any:
        """The array rules in order (length, objects, element length, types, non-finite); the
        first ``stringify`` ends the walk with the array as a JSON string."""
        name = f"{where}.{_short(key)}"
        checks: list[tuple[str, str]] = []
        if len(value) > MAX_ARRAY_LENGTH:
            checks.append(("array_length", f"{name} has {len(value)} elements, over 50"))
        kinds = {_kind(v) for v in value}
        if "object" in kinds or "array" in kinds:
            checks.append(("object", f"{name} holds objects or arrays"))
        longest = max((len(v) for v in value if isinstance(v, str)), default=0)
        if longest > MAX_VALUE_LENGTH:
            what = f"{name} has an element of {longest} characters, over {MAX_VALUE_LENGTH}"
            checks.append(("array_item_length", what))
        if len(kinds) > 1:
            shown = ", ".join(sorted(kinds))
            checks.append(("array_mixed_types", f"{name} mixes element types ({shown})"))
        for setting, what in checks:
            how = self._act(setting, kind, key, what)
            if how in ("stringify", "flatten"):  # an array has no keys to flatten into
                return self._stringify(list(value), kind, key, where)
        bad = _first_non_finite(value)
        if bad is not None:
            text = _non_finite_text(bad)
            self._act("non_finite", kind, key, f"{name} holds {text}")
            return _replace_non_finite(list(value))
        return value


def _index(items: list[Any], item: object) -> int:
    return next(i for i, x in enumerate(items) if x is item)


_MAX_SHORT_NAMES: Final = 4096


class _ShortNames:
    """Names known to be within ``MAX_NAME_LENGTH`` (they passed once), so a dictionary whose
    names are all known needs only its values looked at. Bounded like the validator's known
    names: past ``_MAX_SHORT_NAMES`` the set starts afresh."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: set[str] = set()

    @property
    def known(self) -> set[str]:
        """The names known to be short (read, never written, by the one-pass event path)."""
        return self._known

    def clean(self, attrs: dict[str, Any], text: bytes | None = None) -> bool:
        """``_clean(attrs)``; ``text``: see :func:`clean_values`."""
        known = self._known
        if attrs.keys() <= known:
            return clean_values(attrs, text)
        if not _clean(attrs):
            return False
        if len(known) >= _MAX_SHORT_NAMES:
            known.clear()
        known.update(attrs)
        return True


def clean_values(attrs: dict[str, Any], text: bytes | None = None) -> bool:
    """``_clean`` for a dictionary whose names are all short: its values only. ``text`` is a
    JSON text that holds ``attrs`` (the element's encoding), when there is one: no string
    longer than ``MAX_VALUE_LENGTH`` fits in a text that short, so then string lengths are not
    measured. Two loops on purpose: one loop with a "measure" flag costs about 500
    instructions a record more on the benchmark's events (callgrind), and on Python 3.11 both
    cost less than C-level passes such as ``set(map(type, ...))`` or ``filter``."""
    if text is not None and len(text) <= MAX_VALUE_LENGTH:
        for value in attrs.values():
            t = type(value)
            if t is str or t is int or t is bool or value is None:
                continue
            if t is not float or value - value != 0.0:  # not plain, or NaN or ±Infinity
                return False
        return True
    for value in attrs.values():
        t = type(value)
        if t is str:
            if len(value) > MAX_VALUE_LENGTH:
                return False
        elif t is float:
            if value - value != 0.0:  # NaN or ±Infinity
                return False
        elif t is not int and t is not bool and value is not None:
            return False
    return True


def _clean(attrs: dict[str, Any]) -> bool:
    """Whether no rule can apply to ``attrs``: plain values, short names and strings, finite
    floats. One pass with exact type tests and no allocation (measured: a third of the time of
    C-level ``map``/``filter`` passes over the same dictionary, whose calls cost more than the
    loop they replace)."""
    for key, value in attrs.items():
        t = type(value)
        if t is str:
            if len(value) > MAX_VALUE_LENGTH:
                return False
        elif t is float:
            if value - value != 0.0:  # NaN or ±Infinity
                return False
        elif t is not int and t is not bool and value is not None:
            return False  # a list, an object, or a subclass: the exact walk decides
        if len(key) > MAX_NAME_LENGTH:
            return False
    return True


def _first_non_finite(value: Any) -> float | None:
    stack = [value]
    while stack:
        x = stack.pop()
        if isinstance(x, float):
            if not math.isfinite(x):
                return x
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list | tuple):
            stack.extend(x)
    return None


def _replace_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return _non_finite_text(value)
    if isinstance(value, dict):
        return {k: _replace_non_finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_non_finite(v) for v in value]
    return value
