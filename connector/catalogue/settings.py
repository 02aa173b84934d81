"""The ``catalogue`` section of the configuration (see the README, "The catalogue guard")."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_TOPIC_PREFIX = "moengage-connector.catalogue."


class CatalogueSettings(BaseModel):
    """MoEngage's account caps (Data Tracking Policies) and where their claims are kept."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=True, description="guard the account's caps; false sends every new name through"
    )
    max_user_attributes: int = Field(
        default=256, ge=1, description="distinct custom user attributes the account may hold"
    )
    max_events: int = Field(default=512, ge=1, description="distinct events the account may hold")
    max_event_attributes: int = Field(
        default=100, ge=1, description="distinct attributes one event may carry"
    )
    topic: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="the claims topic; default moengage-connector.catalogue.<workspace id>",
    )
    replication_factor: int = Field(
        default=-1,
        ge=-1,
        description="of the claims topic when the connector creates it; -1: the broker's default",
    )
    claim_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="how long a claim may take to be written and read back before the "
        "connector stops (exit 6); the record is not committed",
    )
    seed_file: Path | None = Field(
        default=None,
        description="YAML of names the account already has (user_attributes: [..], events: "
        "{name: [attributes]}), written as claims at start-up when not yet claimed",
    )
