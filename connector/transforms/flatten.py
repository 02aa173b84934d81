"""``flatten``: the leaves of a nested record or map as attributes, named like ``prefs_lang``.

Names join the keys of each level with the separator after the prefix (default: the path's names
and the separator); an object below ``max_depth`` levels is kept as one value; nulls are skipped
with the attributes' ``skip_nulls``. A missing or null object adds nothing; anything else that is
not an object is bad input (``mapping.type``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector.errors import TransformError
from connector.mappingspec import FlattenSpec
from connector.transforms.paths import Getter, compile_path, parse_path

if TYPE_CHECKING:
    from connector.transforms import Record


def _flatten(
    obj: dict[Any, Any], prefix: str, sep: str, depth: int, *, skip: bool, out: dict[str, Any]
) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if type(value) is dict and depth > 1:
            _flatten(value, name + sep, sep, depth - 1, skip=skip, out=out)
        elif value is not None or not skip:
            out[name] = value


class Flattener:
    """One ``flatten`` entry: the object at its path, its leaves under prefixed names."""

    __slots__ = ("_depth", "_get", "_path", "_prefix", "_sep")

    def __init__(self, spec: FlattenSpec, key_path: str) -> None:
        self._get: Getter = compile_path(spec.path, f"{key_path}.path")
        steps = parse_path(spec.path, f"{key_path}.path")
        self._sep, self._depth, self._path = spec.separator, spec.max_depth, spec.path
        default = spec.separator.join(str(s) for s in steps) + spec.separator
        self._prefix = default if spec.prefix is None else spec.prefix

    def into(self, record: Record, skip: bool, out: dict[str, Any]) -> None:
        found = self._get(record)
        if found is None:
            return
        if type(found) is not dict:
            raise TransformError(
                f"mapping: 'flatten' path {self._path!r} is a {type(found).__name__} in the "
                "record, not a record or map",
                rule="mapping.type",
            )
        _flatten(found, self._prefix, self._sep, self._depth, skip=skip, out=out)
