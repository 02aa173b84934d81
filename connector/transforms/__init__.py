"""How decoded Kafka records become MoEngage elements.

A topic's ``transform`` is one of: a declarative ``mapping`` (``MappingTransform``), a Python
``function`` given as ``package.module:function``, or an ``entry_point`` name in the
``moengage_connector.transforms`` group (see ``registry``). ``load_transform`` turns any of them
into a ``CompiledTransform``: a callable that always returns a list of element dicts, and that
turns whatever user code raises into a ``TransformError`` the pipeline can route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from connector.config import TransformSpec
from connector.elements import Element
from connector.errors import BadRecordError, TransformError, unexpected
from connector.transforms.mapping import MappingTransform
from connector.transforms.registry import resolve

__all__ = [
    "CompiledTransform",
    "Element",
    "MappingCompiled",
    "MappingTransform",
    "Record",
    "Transform",
    "identifier_keys",
    "load_transform",
]


class Record(NamedTuple):
    """One decoded Kafka record, as a transform sees it (immutable; built once per record, so a
    tuple: a frozen dataclass cost three times as much to build).

    ``value`` holds only JSON-like data (dict, list, str, int, float, bool, None): the decoder has
    already turned Avro logical types into ISO 8601 strings and numbers.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int | None


class Transform(Protocol):
    """User code: one record in, zero, one or many elements out."""

    def __call__(self, record: Record, /) -> Iterable[Element] | Element | None: ...


class CompiledTransform:
    """A transform with a uniform contract: ``(record) -> list[Element]``.

    The output is normalised (``None`` -> ``[]``, one dict -> ``[dict]``, any other iterable ->
    list) and checked: every item must be a dict with a string ``type``, else ``TransformError``
    rule ``transform.output``. An exception from user code becomes ``TransformError`` rule
    ``transform.raised`` with the original as ``__cause__``; a ``BadRecordError`` the code raises
    on purpose (e.g. ``TransformError`` with its own rule) passes through unchanged.
    """

    __slots__ = ("_fn", "name")

    def __init__(self, name: str, fn: Callable[[Record], object]) -> None:
        self.name = name
        self._fn = fn

    def __call__(self, record: Record) -> list[Element]:
        try:
            out = self._fn(record)
            if out is None:
                return []
            if isinstance(out, dict):
                items: list[Any] = [out]
            elif isinstance(out, list):
                items = out
            elif isinstance(out, Iterable) and not isinstance(out, str | bytes | bytearray):
                items = list(out)  # a generator runs user code here, hence inside the try
            else:
                raise TransformError(
                    f"transform {self.name} returned {type(out).__name__}; expected an element "
                    "dict, a list of them or None",
                    rule="transform.output",
                )
        except BadRecordError:
            raise
        except Exception as e:
            raise self._raised(e) from e
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                what = "a dict without a string 'type'" if isinstance(item, dict) else None
                raise TransformError(
                    f"transform {self.name} returned item {i} as "
                    f"{what or type(item).__name__}; every element must be a dict with a "
                    "string 'type' (customer, device or event)",
                    rule="transform.output",
                )
        return items

    def _raised(self, e: Exception) -> BadRecordError:
        """What user code (or a mapping) raised, as bad input: the exception's class and the
        start of its text (it can quote record contents)."""
        return unexpected(TransformError, "transform.raised", f"transform {self.name}", e)

    def __repr__(self) -> str:
        return f"CompiledTransform({self.name!r})"


class MappingCompiled(CompiledTransform):
    """A declarative mapping: its output is a list of element dicts with a string ``type`` by
    construction, so it is returned as it is (the checks above are for user code); what the
    mapping raises is still a ``TransformError``."""

    __slots__ = ("_single", "plain_event", "single_kind")

    def __init__(self, name: str, fn: MappingTransform) -> None:
        super().__init__(name, fn)
        self._single = fn.single
        self.plain_event = fn.plain_event  # see PlainEvent
        # The type of the one element every record makes (a mapping of one element without
        # 'when' or 'then'), else None: then :meth:`one` is the transform.
        self.single_kind = fn.single_kind

    def one(self, record: Record) -> Element:
        """The one element of ``record`` (only when ``single_kind`` is set): ``self(record)[0]``
        without the list."""
        try:
            return self._single(record)  # type: ignore[misc,no-any-return]
        except BadRecordError:
            raise
        except Exception as e:
            raise self._raised(e) from e

    def __call__(self, record: Record) -> list[Element]:
        try:
            single = self._single
            if single is not None:
                return [single(record)]
            out: list[Element] = self._fn(record)  # type: ignore[assignment]
        except BadRecordError:
            raise
        except Exception as e:
            raise self._raised(e) from e
        return out


def load_transform(
    spec: TransformSpec, *, key_path: str = "transform", search_dir: Path | None = None
) -> CompiledTransform:
    """Build the topic's transform once, at start-up.

    ``key_path`` is where ``spec`` sits in the configuration (e.g. ``topics[0].transform``), so a
    ``ConfigError`` raised while importing or compiling names the key to fix. ``search_dir`` (the
    configuration's directory) is where a ``function`` is looked up first.
    """
    if spec.mapping is not None:
        mapping = MappingTransform(spec.mapping, key_path=f"{key_path}.mapping")
        return MappingCompiled("mapping", mapping)
    name, fn = resolve(spec, key_path=key_path, search_dir=search_dir)
    return CompiledTransform(name, fn)


def identifier_keys(spec: TransformSpec) -> frozenset[str]:
    """Identity-resolution identifiers a mapping produces (``user_identifiers`` keys).

    The element validator exempts them from the ``moe_`` prefix rule and accepts them in place
    of ``customer_id``. Code transforms declare none.
    """
    return frozenset(key for element in spec.mapping or () for key in element.user_identifiers)
