# connector/transforms/pathuse.py
"""What a mapping reads from a record: one entry per path, for checking it against a schema."""

from __future__ import annotations

from typing import Literal, NamedTuple

Want = Literal["any", "scalar", "number", "string", "array", "object", "timestamp"]


class PathUse(NamedTuple):
    where: str  # the configuration key path, e.g. "topics[0].mapping[1].attributes.fields.email"
    path: str  # the record path as written: "customer.address.city", "items[0].sku", "$key"
    want: Want  # what the use needs of the value found there
    item_of: str | None = None  # set when `path` is relative to each item of this array path
