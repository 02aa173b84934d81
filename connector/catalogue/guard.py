"""What the run loop calls: :meth:`CatalogueGuard.admit` for each record's elements.

A record whose names the catalogue holds already (nearly every record: names are cached as the
claims log is read) passes at the cost of a few set lookups. A record that needs a name of a
kind whose cap is reached is refused at once (:class:`CatalogueError`, bad input). Otherwise
``admit`` returns the names to claim, one claim for the whole record, and the loop awaits
:meth:`CatalogueGuard.claim` before handing the record on, as it does for a Schema Registry
retry: records keep their order, and only records with new names pay a claim's round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from connector.catalogue.claims import CatalogueUnavailable, CatalogueUnreachable, ClaimsLog
from connector.catalogue.rule import (
    EVENT_ATTRIBUTES,
    EVENTS,
    STANDARD_USER_ATTRIBUTES,
    USER_ATTRIBUTES,
    Catalogue,
    Limits,
    Names,
    names_of,
)
from connector.catalogue.rule import is_custom_user_attribute as is_custom
from connector.catalogue.settings import DEFAULT_TOPIC_PREFIX, CatalogueSettings
from connector.config import Settings
from connector.errors import ConfigError
from connector.observability.metrics import Metrics
from connector.processing import Prepared
from connector.safeyaml import load_yaml

log = structlog.get_logger(__name__)

__all__ = [
    "CatalogueGuard",
    "CatalogueUnavailable",
    "CatalogueUnreachable",
    "DisabledGuard",
    "claims_topic",
    "load_seed",
    "make_guard",
]


def claims_topic(settings: CatalogueSettings, workspace_id: str) -> str:
    """The claims topic: configured, or ``moengage-connector.catalogue.<workspace id>`` (with any
    character Kafka refuses in a topic name replaced by ``_``)."""
    if settings.topic:
        return settings.topic
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in workspace_id)
    return f"{DEFAULT_TOPIC_PREFIX}{safe}"[:249]


def load_seed(path: Path) -> Names:
    """The names of a seed file (YAML: ``user_attributes: [..]``, ``events: {name: [..]}``);
    standard and system user attributes are dropped (they never count)."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
        if not isinstance(data, dict):
            raise ValueError("expected a mapping with user_attributes and events")
        unknown = set(data) - {"user_attributes", "events"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        names = Names.from_json(data)
    except (OSError, ValueError) as e:
        raise ConfigError([("catalogue.seed_file", f"{path}: {e}")]) from e
    names.user_attributes = {n for n in names.user_attributes if is_custom(n)}  # standard: free
    return names


class CatalogueGuard:
    """Holds the account's caps for this instance, through the shared claims log."""

    def __init__(
        self,
        settings: Settings,
        workspace_id: str,
        metrics: Metrics | None = None,
        client_props: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        c = settings.catalogue
        self.settings = c
        limits = Limits(c.max_user_attributes, c.max_events, c.max_event_attributes)
        self.catalogue = Catalogue(limits)
        self._seed_path = (
            None
            if c.seed_file is None
            else c.seed_file
            if c.seed_file.is_absolute()
            else settings.base_dir / c.seed_file
        )
        self._metrics = metrics
        self.log = ClaimsLog(
            settings.librdkafka_config(),
            claims_topic(c, workspace_id),
            self.catalogue,
            replication_factor=c.replication_factor,
            timeout=c.claim_timeout_seconds,
            on_change=self._publish,
            client_props=client_props,
        )
        self.claims = self.refused = 0
        # Custom names held plus names that never count (standard, system): the hot path's set.
        self._passable: set[str] = set(STANDARD_USER_ATTRIBUTES)

    async def start(self) -> None:
        """Read the claims log to its end, then write the seed file's names not yet claimed."""
        seed = load_seed(self._seed_path) if self._seed_path is not None else None
        await self.log.start()
        if seed is not None:
            await self.seed(seed)
        self._publish()
        log.info(
            "catalogue_ready",
            topic=self.log.topic,
            claims_read=self.log.claims_read,
            caps=self.caps(),
            **self.catalogue.sizes(),
        )

    async def seed(self, names: Names) -> Names:
        """Write ``names`` (ones the account already has) as a seed claim; returns those that
        were new to the log."""
        new = self.catalogue.unknown(names)
        if new:
            await self.log.claim(new, seed=True)
            log.info("catalogue_seeded", **_counts(new))
        return new

    def admit(self, prepared: list[Prepared]) -> Names | None:
        """None when the record's names are all known; the names to claim otherwise. Raises
        ``CatalogueError`` when a needed kind is full already."""
        # The common case, inline: one event whose name and attributes are all held.
        if len(prepared) == 1:
            el = prepared[0][3]
            if el["type"] == "event" and len(actions := el["actions"]) == 1:
                held = self.catalogue.events.get(actions[0]["action"])
                if held is not None:
                    attrs = actions[0].get("attributes")
                    if not attrs or held.issuperset(attrs):
                        return None
        catalogue = self.catalogue
        if self._all_known(prepared):
            return None
        new = catalogue.unknown(names_of(p[3] for p in prepared))
        if not new:
            return None
        refused = catalogue.full(new)
        if refused is not None:
            self.refused += 1
            raise refused.error()
        return new

    async def claim(self, new: Names) -> None:
        """Claim the names ``admit`` returned; raises ``CatalogueError`` if the log refuses them
        (another claim took the last free names first), ``CatalogueUnavailable`` if the log
        cannot be written or read back in time."""
        self.claims += 1
        refused = await self.log.claim(new)
        if refused is not None:
            self.refused += 1
            raise refused.error()

    def assume(self, names: Names) -> None:
        """Hold ``names`` in this instance only, without the claims log: for the benchmark,
        which measures the per-record lookups of names the catalogue holds."""
        self.catalogue.apply(names, seed=True)
        self._publish()

    async def close(self) -> None:
        await self.log.close()

    def _all_known(self, prepared: list[Prepared]) -> bool:
        """The hot path: every name of the record is held already."""
        users, events = self._passable, self.catalogue.events
        for _, _, _, el in prepared:
            kind = el["type"]
            if kind == "customer":
                attrs = el.get("attributes")
                if attrs and not users.issuperset(attrs):
                    if any(is_custom(k) for k in attrs if k not in users):
                        return False
                    users.update(attrs)  # standard or system names: never claimed
            elif kind == "event":
                for action in el["actions"]:
                    held = events.get(action["action"])
                    if held is None:
                        return False
                    attrs = action.get("attributes")
                    if attrs and not held.issuperset(attrs):
                        return False
        return True

    def _publish(self) -> None:
        """The catalogue changed: refresh the hot path's set and the metrics."""
        self._passable = self.catalogue.user_attributes | STANDARD_USER_ATTRIBUTES
        if self._metrics is not None:
            self._metrics.catalogue_size(self.catalogue.sizes(), self.caps())

    def caps(self) -> dict[str, int]:
        lim = self.catalogue.limits
        return {
            USER_ATTRIBUTES: lim.user_attributes,
            EVENTS: lim.events,
            EVENT_ATTRIBUTES: lim.event_attributes,
        }


def _counts(names: Names) -> dict[str, int]:
    return {
        "user_attributes": len(names.user_attributes),
        "events": len(names.events),
        "event_attributes": sum(map(len, names.events.values())),
    }


class DisabledGuard:
    """``catalogue.enabled: false``: every name passes, nothing is claimed or read."""

    async def start(self) -> None:
        return None

    def admit(self, prepared: list[Prepared]) -> Names | None:
        return None

    async def claim(self, new: Names) -> None:  # pragma: no cover - admit never asks for one
        return None

    def assume(self, names: Names) -> None:
        return None

    async def close(self) -> None:
        return None


def make_guard(
    settings: Settings,
    workspace_id: str,
    metrics: Metrics | None = None,
    client_props: Callable[[], dict[str, Any]] = dict,
) -> CatalogueGuard | DisabledGuard:
    """The guard, or one that admits everything when ``catalogue.enabled`` is false.
    ``client_props``: extra librdkafka properties for each Kafka client (logger, error_cb)."""
    if not settings.catalogue.enabled:
        return DisabledGuard()
    return CatalogueGuard(settings, workspace_id, metrics, client_props)
