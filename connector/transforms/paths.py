"""Record paths: parsed once into steps, read per record without parsing.

Grammar: dot-separated names; ``name[N]`` is item N (N >= 0) of the array ``name`` (``a[0][1]``
nests); a name is any text without ``.``, ``[`` or ``]`` (so a segment into an Avro map may be any
such key). ``$key`` (the record key as UTF-8 text), ``$timestamp`` (the record timestamp in ms) and
``$topic`` are pseudo-fields, valid only as a whole path. A step that finds no object (or no
array, or no such item) reads as ``None``: a missing value, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from connector.errors import ConfigError, TransformError

if TYPE_CHECKING:
    from connector.transforms import Record

Getter = Callable[["Record"], Any]
Step = str | int
PSEUDO_FIELDS = ("$key", "$timestamp", "$topic")

_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[[0-9]+\])*)")
_INDEX = re.compile(r"\[([0-9]+)\]")


def parse_path(text: str, key_path: str) -> tuple[Step, ...]:
    """The steps of a record path (not a pseudo-field): names and item indexes, in order."""
    if text.startswith("$"):
        if text in PSEUDO_FIELDS:
            problem = f"{text!r} is a whole path on its own; it cannot be part of one"
        else:
            problem = f"unknown pseudo-field {text!r}; use $key, $timestamp or $topic"
        raise ConfigError([(key_path, problem)])
    steps: list[Step] = []
    for segment in text.split("."):
        if not segment:
            raise ConfigError([(key_path, f"{text!r} has an empty segment; write 'a.b.c'")])
        m = _SEGMENT.fullmatch(segment)
        if m is None:
            problem = f"{text!r}: segment {segment!r} is not 'name' or 'name[N]' (N = 0, 1, ...)"
            raise ConfigError([(key_path, problem)])
        steps.append(m.group(1))
        steps.extend(int(i) for i in _INDEX.findall(m.group(2)))
    return tuple(steps)


def walk(value: Any, steps: tuple[Step, ...]) -> Any:
    """The value ``steps`` lead to from ``value``; ``None`` when any step finds nothing."""
    for step in steps:
        if type(step) is int:
            if not isinstance(value, list) or step >= len(value):
                return None
            value = value[step]
        elif isinstance(value, dict):
            value = value.get(step)
        else:
            return None
    return value


def decode_key(key: bytes) -> str:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise TransformError(
            "mapping: the record key is not UTF-8 text, so '$key' cannot be used",
            rule="mapping.key_encoding",
        ) from None


def compile_path(text: str, key_path: str) -> Getter:
    """A getter ``(record) -> value or None`` for a path or pseudo-field; a null is ``None``."""
    if text == "$key":
        return lambda r: None if r.key is None else decode_key(r.key)
    if text == "$timestamp":
        return lambda r: r.timestamp_ms
    if text == "$topic":
        return lambda r: r.topic
    steps = parse_path(text, key_path)
    if len(steps) == 1:
        (name,) = steps

        def get_top(r: Record) -> Any:
            value = r.value
            return value.get(name) if isinstance(value, dict) else None

        return get_top
    if all(type(s) is str for s in steps):

        def get_nested(r: Record) -> Any:
            value = r.value
            for part in steps:
                if not isinstance(value, dict):
                    return None
                value = value.get(part)
            return value

        return get_nested
    return lambda r: walk(r.value, steps)


def is_top_level(text: str) -> bool:
    """Whether ``text`` is one plain top-level field name (read inline, without a getter)."""
    return not text.startswith("$") and _SEGMENT.fullmatch(text) is not None and "[" not in text


def first_name(text: str) -> str | None:
    """The top-level field a path starts at (``None`` for a pseudo-field)."""
    if text.startswith("$"):
        return None
    return re.split(r"[.\[]", text, maxsplit=1)[0]
