"""Functions a mapping's ``then`` hands its element to (``tests.unit.then_steps:<name>``)."""

from __future__ import annotations

from typing import Any

from connector.transforms import Record

NOT_CALLABLE = 7


def add_offset(element: dict[str, Any], record: Record) -> dict[str, Any]:
    element["attributes"]["kafka_offset"] = record.offset
    return element


def drop_it(element: dict[str, Any], record: Record) -> None:
    return None


def split(element: dict[str, Any], record: Record) -> list[dict[str, Any]]:
    return [element, {**element, "customer_id": "other-1"}]


def junk(element: dict[str, Any], record: Record) -> str:
    return "junk"


def boom(element: dict[str, Any], record: Record) -> dict[str, Any]:
    raise KeyError("lost")
