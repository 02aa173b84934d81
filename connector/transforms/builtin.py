"""Transforms that ship with the connector (registered as entry points in pyproject.toml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connector.errors import TransformError

if TYPE_CHECKING:
    from connector.elements import Element
    from connector.transforms import Record


def passthrough(record: Record) -> list[Element]:
    """The record value already is an element dict, or a list of them (typical of JSON topics).

    The elements are validated downstream like any others; this only checks the outer shape.
    """
    value = record.value
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise TransformError(
                    f"passthrough: item {i} of the record value is {type(item).__name__}; "
                    "expected an element object",
                    rule="passthrough.shape",
                )
        return value
    raise TransformError(
        f"passthrough: the record value is {type(value).__name__}; expected an element object "
        "or a list of them",
        rule="passthrough.shape",
    )
