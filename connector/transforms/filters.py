"""``when``: the predicate that decides whether a mapping element is produced for a record.

``{path, equals: v}`` holds when the value at ``path`` equals ``v`` (a boolean only equals a
boolean; ``equals: null`` holds for a missing or null value), ``{path, in: [...]}`` when it equals
one of them, ``{path, exists: true}`` when it is present and not null (``false``: the opposite);
``not``, ``all`` (also a plain list) and ``any`` combine them. A record for which no element of its
topic's mapping is produced is filtered: nothing is sent and its offset is committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from connector.mappingspec import WhenSpec
from connector.transforms.paths import compile_path

if TYPE_CHECKING:
    from connector.transforms import Record

Predicate = Callable[["Record"], bool]


def _same(found: Any, wanted: Any) -> bool:
    return bool(found == wanted) and (type(found) is bool) == (type(wanted) is bool)


def compile_when(spec: WhenSpec, key_path: str) -> Predicate:
    """The predicate for ``spec``; ``ConfigError`` for a path outside the grammar."""
    if spec.not_ is not None:
        inner = compile_when(spec.not_, f"{key_path}.not")
        return lambda r: not inner(r)
    if spec.all is not None or spec.any is not None:
        name = "all" if spec.all is not None else "any"
        parts = spec.all if spec.all is not None else spec.any
        assert parts is not None
        tests = tuple(compile_when(p, f"{key_path}.{name}[{i}]") for i, p in enumerate(parts))
        if name == "all":
            return lambda r: all(test(r) for test in tests)
        return lambda r: any(test(r) for test in tests)
    assert spec.path is not None
    get = compile_path(spec.path, f"{key_path}.path")
    if spec.exists is not None:
        exists = spec.exists
        return lambda r: (get(r) is not None) is exists
    if spec.in_ is not None:
        choices = tuple(spec.in_)

        def one_of(r: Record) -> bool:
            found = get(r)
            return any(_same(found, c) for c in choices)

        return one_of
    wanted = spec.equals
    if wanted is None:
        return lambda r: get(r) is None
    if type(wanted) is str:
        return lambda r: get(r) == wanted
    return lambda r: _same(get(r), wanted)
