"""MoEngage's data-tracking policy: its documented limits, and what the connector does about each.

MoEngage answers the Bulk Import API with a 200 and then truncates or drops what breaks its policy
(help-centre articles "Data Tracking Policies" and "Understand the MoEngage Data Tracking
Policy"). Each per-record row of that policy is a rule here, with an action chosen per rule
(``policy.<setting>``) and per topic (``policy.topics.<name>.<setting>``):

=====================  ========================  ==============================================
setting (rule id)      default                   other actions
=====================  ========================  ==============================================
value_length           truncate                  bad_input, allow
url_length             bad_input                 allow
name_length            truncate                  bad_input, allow
array_length           bad_input                 stringify, allow
array_item_length      bad_input                 stringify, allow
array_mixed_types      bad_input                 stringify, allow
object                 bad_input                 flatten, stringify, allow
event_name_period      bad_input                 replace, allow
non_finite             bad_input                 stringify
=====================  ========================  ==============================================

Rule ids are ``policy.<setting>`` except ``value.non_finite`` (the id the encoder already uses).
``truncate`` only where MoEngage itself truncates, so the result is what MoEngage would have
stored, but counted and logged. ``bad_input`` is the topic's ``on_error`` (fail / skip / dlq).
``allow`` sends the value as it is (for an account whose limits or Object data type were raised);
it is still counted. This module holds the settings model and the limits and imports nothing of
the connector's, so ``config`` can import it; ``policycheck`` applies it.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

# The documented limits ("Data Tracking Policies").
MAX_VALUE_LENGTH: Final = 512
MAX_NAME_LENGTH: Final = 200
MAX_ARRAY_LENGTH: Final = 50
MAX_USER_ATTRIBUTES: Final = 256
MAX_EVENTS: Final = 512
MAX_EVENT_ATTRIBUTES: Final = 100

# Standard user attributes whose documented shape is a list or an object (Data API overview):
# never judged by the array and object rules.
STRUCTURED_STANDARD_ATTRIBUTES: Final = frozenset({"platforms", "moe_geo_location"})

Action = Literal["truncate", "flatten", "stringify", "replace", "bad_input", "allow"]
ACTIONS: Final = ("truncate", "flatten", "stringify", "replace", "bad_input", "allow")

# setting -> rule id
RULE_IDS: Final = {
    "value_length": "policy.value_length",
    "url_length": "policy.url_length",
    "name_length": "policy.name_length",
    "array_length": "policy.array_length",
    "array_item_length": "policy.array_item_length",
    "array_mixed_types": "policy.array_mixed_types",
    "object": "policy.object",
    "event_name_period": "policy.event_name_period",
    "non_finite": "value.non_finite",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


_ARRAY = Literal["bad_input", "stringify", "allow"]


class PolicyRules(_Frozen):
    """One action per rule. In ``policy.topics.<name>`` only the rules given override."""

    value_length: Literal["truncate", "bad_input", "allow"] = Field(
        default="truncate",
        description="a string attribute value over 512 characters: MoEngage keeps the first 512",
    )
    url_length: Literal["bad_input", "allow"] = Field(
        default="bad_input",
        description="a URL (http:// or https://) value over 512 characters: MoEngage rejects it",
    )
    name_length: Literal["truncate", "bad_input", "allow"] = Field(
        default="truncate",
        description="an event name or attribute name over 200 characters: MoEngage keeps 200",
    )
    array_length: _ARRAY = Field(
        default="bad_input", description="an array of more than 50 elements: MoEngage rejects it"
    )
    array_item_length: _ARRAY = Field(
        default="bad_input",
        description="an array with a string element over 512 characters: MoEngage rejects it",
    )
    array_mixed_types: _ARRAY = Field(
        default="bad_input",
        description="an array whose elements are not all of one type (numbers are one type): "
        "MoEngage rejects it",
    )
    object: Literal["bad_input", "flatten", "stringify", "allow"] = Field(
        default="bad_input",
        description="an object (dictionary) value or array element: MoEngage rejects it unless "
        "the account has the Object data type",
    )
    event_name_period: Literal["bad_input", "replace", "allow"] = Field(
        default="bad_input",
        description="an event name with a period: MoEngage stores 'a.b' as 'a. B'",
    )
    non_finite: Literal["bad_input", "stringify"] = Field(
        default="bad_input",
        description="NaN or ±Infinity: JSON cannot carry them (they would arrive as null)",
    )


class PolicyOverrides(_Frozen):
    """Per-topic overrides: any rule of :class:`PolicyRules`, the others as ``policy`` says."""

    value_length: Literal["truncate", "bad_input", "allow"] | None = None
    url_length: Literal["bad_input", "allow"] | None = None
    name_length: Literal["truncate", "bad_input", "allow"] | None = None
    array_length: _ARRAY | None = None
    array_item_length: _ARRAY | None = None
    array_mixed_types: _ARRAY | None = None
    object: Literal["bad_input", "flatten", "stringify", "allow"] | None = None
    event_name_period: Literal["bad_input", "replace", "allow"] | None = None
    non_finite: Literal["bad_input", "stringify"] | None = None


class PolicySettings(PolicyRules):
    """``policy``: MoEngage's data-tracking policy, checked before anything is sent."""

    flatten_separator: str = Field(
        default="_",
        min_length=1,
        description="joins a parent and a child key when an object is flattened (parent_child)",
    )
    period_replacement: str = Field(
        default="_",
        description="what replaces each period of an event name under event_name_period: replace",
    )
    log_interval_seconds: float = Field(
        default=60.0,
        ge=0,
        description="a rule applied to the same attribute name is logged at most once this often",
    )
    topics: dict[str, PolicyOverrides] = Field(
        default_factory=dict, description="per-topic actions, by topic name"
    )

    def rules_for(self, topic: str) -> PolicyRules:
        """The actions for ``topic``: its overrides over the defaults."""
        base = {name: getattr(self, name) for name in RULE_IDS}
        override = self.topics.get(topic)
        if override is not None:
            base.update({k: v for k, v in override.model_dump().items() if v is not None})
        return PolicyRules(**base)


def is_url(value: str) -> bool:
    """Whether a string value reads as a URL (what MoEngage rejects past 512 characters)."""
    head = value[:8].lower()
    return head.startswith(("http://", "https://"))
