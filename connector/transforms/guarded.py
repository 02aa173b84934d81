"""A mapping element's ``when`` and ``then``: the builder behind its filter, followed by its
Python last step, whose output is checked to be element dicts."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from connector.errors import BadRecordError, ConfigError, TransformError, unexpected
from connector.mappingspec import ElementSpec
from connector.transforms.filters import compile_when
from connector.transforms.registry import import_string

if TYPE_CHECKING:
    from connector.elements import Element
    from connector.transforms import Record


def guarded(build: Callable[[Record], Any], spec: ElementSpec, key_path: str) -> Any:
    """``build`` behind the spec's ``when`` and followed by its ``then``, when it has them."""
    if spec.when is not None:
        test = compile_when(spec.when, f"{key_path}.when")
        unguarded = build

        def build(record: Record) -> Any:
            return unguarded(record) if test(record) else None

    if spec.then is not None:
        name, where = spec.then, f"{key_path}.then"
        fn = import_string(name, key_path=where)
        if not callable(fn):
            raise ConfigError([(where, f"{name} is a {type(fn).__name__}, not a function")])
        made = build

        def build(record: Record) -> Any:
            element = made(record)
            if element is None:
                return None
            try:
                out = fn(element, record)
            except BadRecordError:
                raise
            except Exception as e:
                raise unexpected(TransformError, "transform.raised", f"'then' {name}", e) from e
            return _checked(out, name)

    return build


def _checked(out: Any, name: str) -> Element | list[Element] | None:
    """What a ``then`` function returned: an element, a list of them, or None (no element)."""
    if out is None:
        return None
    items = out if isinstance(out, list) else [out]
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise TransformError(
                f"'then' {name} returned {type(item).__name__} (item {i}); it must return an "
                "element dict with a string 'type', a list of them or None",
                rule="transform.output",
            )
    return out  # type: ignore[no-any-return]
