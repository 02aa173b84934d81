"""Why MoEngage may hold an attribute otherwise than sent: its data-tracking policy.

``verify`` compares what was sent with what the Get User API returns. A difference that MoEngage's
policy explains (help-centre articles "Data Tracking Policies" / "Understand the MoEngage Data
Tracking Policy") is a policy loss, reported with its rule id, not an unexplained mismatch: a value
over 512 characters returned as its first 512, a name over 200 returned under its first 200, and
an attribute absent because MoEngage rejects its value (a URL over 512 characters, an object, an
array of more than 50 elements, with an element over 512 characters, or of mixed types). Values
the connector sends have passed its own pre-flight checks, so these show only where a rule was
set to ``allow``, or for data that reached the account otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.policy import (
    MAX_ARRAY_LENGTH,
    MAX_NAME_LENGTH,
    MAX_VALUE_LENGTH,
    STRUCTURED_STANDARD_ATTRIBUTES,
    is_url,
)

# (rule id, what MoEngage did) for a difference the policy explains.
Explanation = tuple[str, str]


def _rejected_value_rule(name: str, value: Any) -> str | None:
    """The rule under which MoEngage rejects ``value`` (it is then absent), or None."""
    if isinstance(value, str):
        return "policy.url_length" if len(value) > MAX_VALUE_LENGTH and is_url(value) else None
    if name in STRUCTURED_STANDARD_ATTRIBUTES:
        return None
    if isinstance(value, dict):
        return "policy.object"
    if isinstance(value, list):
        if len(value) > MAX_ARRAY_LENGTH:
            return "policy.array_length"
        kinds = set()
        for item in value:
            if isinstance(item, dict | list):
                return "policy.object"
            if isinstance(item, str) and len(item) > MAX_VALUE_LENGTH:
                return "policy.array_item_length"
            kinds.add("number" if type(item) in (int, float) else type(item).__name__)
        if len(kinds) > 1:
            return "policy.array_mixed_types"
    return None


def explain(name: str, sent: Any, returned: Mapping[str, Any]) -> Explanation | None:
    """Why attribute ``name``, sent as ``sent``, is absent from or differs in ``returned``,
    when MoEngage's data-tracking policy says; None when the policy does not explain it."""
    rule = _rejected_value_rule(name, sent)
    if rule is not None and name not in returned:
        return rule, "rejected"
    key = name
    if len(name) > MAX_NAME_LENGTH:
        key = name[:MAX_NAME_LENGTH]
        if key not in returned:
            return None
        if returned[key] == sent or _truncated(sent, returned[key]):
            return "policy.name_length", "name truncated"
    if key in returned and _truncated(sent, returned[key]):
        return "policy.value_length", "truncated"
    return None


def _truncated(sent: Any, got: Any) -> bool:
    return isinstance(sent, str) and len(sent) > MAX_VALUE_LENGTH and got == sent[:MAX_VALUE_LENGTH]
