"""User-style transforms that tests load by path (``tests.unit.sample_transforms:<name>``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from connector.errors import TransformError
from connector.transforms import Record

NOT_CALLABLE = 42


def to_customer(record: Record) -> dict[str, Any]:
    return {"type": "customer", "customer_id": record.value["id"], "attributes": {}}


def make_customer(*, id_field: str, tag: str = "none") -> Callable[[Record], dict[str, Any]]:
    """A factory: called once with the topic's ``options``."""

    def transform(record: Record) -> dict[str, Any]:
        return {
            "type": "customer",
            "customer_id": record.value[id_field],
            "attributes": {"tag": tag},
        }

    return transform


def make_nothing(**_options: Any) -> int:
    return 0


def returns_value(record: Record) -> Any:
    return record.value


def two_events(record: Record) -> Iterator[dict[str, Any]]:
    for name in ("a", "b"):
        yield {"type": "event", "customer_id": "c1", "actions": [{"action": name}]}


def breaks_midway(record: Record) -> Iterator[dict[str, Any]]:
    yield {"type": "event", "customer_id": "c1", "actions": [{"action": "a"}]}
    raise KeyError("missing")


def boom(record: Record) -> None:
    raise ValueError("bad input")


def rejects(record: Record) -> None:
    raise TransformError("not for MoEngage", rule="custom.skip")
