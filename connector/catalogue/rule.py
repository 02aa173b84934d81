"""The decision rule of the catalogue guard: which names a record brings, and whether a claim for
new names fits MoEngage's account caps (Data Tracking Policies: 256 distinct custom user
attributes, 512 distinct events, 100 distinct attributes per event).

Every instance of a consumer group reads the same claims log and applies :meth:`Catalogue.apply`
to each claim in log order, so every instance reaches the same verdict for every claim: two
instances racing for the last free name cannot both win, whichever's claim the log holds first
wins. A claim is all or nothing: either every new name it asks for fits, and all are added, or
none is (a refused record never spends a name). A seed claim states names the account already
has: it is always added, even past a cap (then every further new name of that kind is refused).

Names that are not custom do not count: MoEngage's standard user attributes (Data API overview,
"Standard User Attributes"; Track User API, "Standard User Attributes") and the ``moe_``
system prefix (Track User API), which the validator allows only for those and for the
identity-resolution identifiers. This module is pure (no Kafka, no clock).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from connector.errors import PolicyError

# Data API overview, "Standard User Attributes" (User API) and Track User API, "Standard User
# Attributes" (the dashboard's internal keys): MoEngage's own, never counted as custom.
STANDARD_USER_ATTRIBUTES: Final = frozenset(
    {
        "name", "first_name", "last_name", "email", "age", "gender", "mobile",
        "moe_geo_location", "source", "created_time", "last_seen", "transactions", "revenue",
        "moe_unsubscribe", "platforms",
        "publisher_name", "campaign_name", "u_l_a", "cr_t", "u_mb", "uid", "u_bd", "u_em",
        "u_n", "u_ln", "u_gd", "u_fn",
    }
)  # fmt: skip
_MOE_PREFIX: Final = "moe_"

USER_ATTRIBUTES = "user_attributes"
EVENTS = "events"
EVENT_ATTRIBUTES = "event_attributes"
RULES: Final = {
    USER_ATTRIBUTES: "policy.catalogue.user_attributes",
    EVENTS: "policy.catalogue.events",
    EVENT_ATTRIBUTES: "policy.catalogue.event_attributes",
}


def is_custom_user_attribute(name: str) -> bool:
    """Whether a user attribute name counts towards the account's custom attribute cap."""
    return name not in STANDARD_USER_ATTRIBUTES and not name.lower().startswith(_MOE_PREFIX)


class CatalogueError(PolicyError):
    """A record would bring a name past one of the account's caps (bad input, stage "policy")."""


@dataclass(frozen=True, slots=True)
class Limits:
    user_attributes: int = 256
    events: int = 512
    event_attributes: int = 100


@dataclass(slots=True)
class Names:
    """Names of a record, of a claim, or of the catalogue itself."""

    user_attributes: set[str] = field(default_factory=set)
    events: dict[str, set[str]] = field(default_factory=dict)  # event name -> its attributes

    def __bool__(self) -> bool:
        return bool(self.user_attributes or self.events)

    def add_event(self, event: str, attributes: Iterable[str] = ()) -> None:
        self.events.setdefault(event, set()).update(attributes)

    def as_json(self) -> dict[str, Any]:
        return {
            USER_ATTRIBUTES: sorted(self.user_attributes),
            EVENTS: {e: sorted(a) for e, a in sorted(self.events.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Names:
        """The inverse of :meth:`as_json`; raises ``ValueError`` on anything else."""
        users, events = data.get(USER_ATTRIBUTES, []), data.get(EVENTS, {})
        if not isinstance(users, list) or not isinstance(events, dict):
            raise ValueError(f"'{USER_ATTRIBUTES}' must be a list and '{EVENTS}' a mapping")
        out = cls({str(u) for u in users})
        for event, attrs in events.items():
            if not isinstance(attrs, list | None):
                raise ValueError(f"the attributes of event {event!r} must be a list")
            out.add_event(str(event), (str(a) for a in attrs or ()))
        return out


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a claim does not fit: the first name past a cap, the cap, and how many are in use."""

    kind: str
    name: str
    cap: int
    in_use: int
    event: str | None = None  # for an event attribute

    @property
    def rule(self) -> str:
        return RULES[self.kind]

    def message(self) -> str:
        if self.kind == USER_ATTRIBUTES:
            what = f"user attribute {self.name!r}"
            cap = f"the account's cap of {self.cap} distinct custom user attributes"
            key = "catalogue.max_user_attributes"
        elif self.kind == EVENTS:
            what = f"event {self.name!r}"
            cap = f"the account's cap of {self.cap} distinct events"
            key = "catalogue.max_events"
        else:
            what = f"attribute {self.name!r} of event {self.event!r}"
            cap = f"the cap of {self.cap} distinct attributes per event"
            key = "catalogue.max_event_attributes"
        return (
            f"{what} is new and would pass {cap} ({self.in_use} in use; Data Tracking "
            f"Policies): MoEngage would drop it; raise {key} if the account's cap was raised"
        )

    def error(self) -> CatalogueError:
        return CatalogueError(self.message(), rule=self.rule)


def names_of(elements: Iterable[dict[str, Any]]) -> Names:
    """The names validated elements bring: custom user attributes, events and their attributes
    (device attributes count towards no cap)."""
    out = Names()
    for el in elements:
        kind = el.get("type")
        if kind == "customer":
            attrs = el.get("attributes")
            if attrs:
                out.user_attributes.update(k for k in attrs if is_custom_user_attribute(k))
        elif kind == "event":
            for action in el.get("actions") or ():
                out.add_event(action["action"], action.get("attributes") or ())
    return out


class Catalogue:
    """The names the account holds, as the claims log says, and the caps."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.user_attributes: set[str] = set()
        self.events: dict[str, set[str]] = {}

    def sizes(self) -> dict[str, int]:
        """Per kind; for event attributes, the most any one event holds (what meets its cap)."""
        return {
            USER_ATTRIBUTES: len(self.user_attributes),
            EVENTS: len(self.events),
            EVENT_ATTRIBUTES: max(map(len, self.events.values()), default=0),
        }

    def unknown(self, names: Names) -> Names:
        """The part of ``names`` the catalogue does not hold yet (empty: nothing to claim)."""
        out = Names(names.user_attributes - self.user_attributes)
        events = self.events
        for event, attrs in names.events.items():
            held = events.get(event)
            if held is None:
                out.add_event(event, attrs)
            elif not held.issuperset(attrs):
                out.add_event(event, attrs - held)
        return out

    def refusal(self, new: Names) -> Refusal | None:
        """Whether adding every name of ``new`` (names the catalogue does not hold) would pass a
        cap: the first such name (in sorted order, so every instance names the same one)."""
        lim = self.limits
        users = len(self.user_attributes)
        if new.user_attributes and users + len(new.user_attributes) > lim.user_attributes:
            name = sorted(new.user_attributes)[max(0, lim.user_attributes - users)]
            return Refusal(USER_ATTRIBUTES, name, lim.user_attributes, users)
        fresh = sorted(e for e in new.events if e not in self.events)
        n_events = len(self.events)
        if fresh and n_events + len(fresh) > lim.events:
            name = fresh[max(0, lim.events - n_events)]
            return Refusal(EVENTS, name, lim.events, n_events)
        for event in sorted(new.events):
            attrs = new.events[event]
            held = len(self.events.get(event, ()))
            if attrs and held + len(attrs) > lim.event_attributes:
                name = sorted(attrs)[max(0, lim.event_attributes - held)]
                return Refusal(EVENT_ATTRIBUTES, name, lim.event_attributes, held, event)
        return None

    def full(self, new: Names) -> Refusal | None:
        """A refusal that no claim can change: ``new`` needs a name of a kind whose cap is
        reached already (the log only grows, so the verdict in log order would be the same)."""
        lim = self.limits
        if new.user_attributes and len(self.user_attributes) >= lim.user_attributes:
            name = min(new.user_attributes)
            return Refusal(USER_ATTRIBUTES, name, lim.user_attributes, len(self.user_attributes))
        fresh = [e for e in new.events if e not in self.events]
        if fresh and len(self.events) >= lim.events:
            return Refusal(EVENTS, min(fresh), lim.events, len(self.events))
        for event, attrs in new.events.items():
            held = len(self.events.get(event, ()))
            if attrs and held >= lim.event_attributes:
                return Refusal(EVENT_ATTRIBUTES, min(attrs), lim.event_attributes, held, event)
        return None

    def apply(self, names: Names, *, seed: bool = False) -> Refusal | None:
        """One claim, in log order: add its names if they all fit (a seed always fits); None
        when granted, else why not."""
        new = self.unknown(names)
        if not new:
            return None
        if not seed:
            refused = self.refusal(new)
            if refused is not None:
                return refused
        self.user_attributes |= new.user_attributes
        for event, attrs in new.events.items():
            self.events.setdefault(event, set()).update(attrs)
        return None
