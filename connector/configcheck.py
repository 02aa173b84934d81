"""Configuration problems worded as what to write instead.

pydantic's messages ("Input should be a valid string") say what is wrong with a value, not what
the user meant. :func:`describe` rewords the common cases, each from the error's type and place:

- a mapping value that is not a field path: a bare string is a field path, ``{field: ...}`` adds a
  default, ``{const: ...}`` is a constant;
- a data centre YAML read as a number (``data_center: 01`` is the integer 1): quote it;
- an unknown key: the closest valid key at that place (difflib), else the valid keys.

Nothing here imports the settings models: the root model is passed in (``connector.config``
calls this module).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

Problem = tuple[str, str]

VALUE_HINT = (
    "a value here is a field path string (e.g. 'user.id'), {field: 'user.id', default: ...} "
    "for a default, or {const: ...} for a constant"
)


def describe(err: Mapping[str, Any], data: Any, root: type[BaseModel], path: str) -> str:
    """The message for one pydantic error (``err`` from ``errors(include_input=False)``) found
    while validating ``data`` against ``root``; ``path`` is its key path as printed."""
    loc: tuple[int | str, ...] = tuple(err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        return _unknown_key(loc, root)
    if kind == "model_type" and (err.get("ctx") or {}).get("class_name") == "ValueSpec":
        value = _at(data, loc)
        if isinstance(value, bool | int | float) or value is None:
            return (
                f"{VALUE_HINT}: to send the constant {_yaml(value)} write {{const: {_yaml(value)}}}"
            )
        return f"{VALUE_HINT}; got {type(value).__name__}"
    if loc[-1:] == ("data_center",) and kind == "string_type":
        value = _at(data, loc)
        if isinstance(value, int) and not isinstance(value, bool):
            return (
                f"YAML read this as the number {value}: quote the data centre, "
                f'data_center: "{value:02d}"'
            )
    return msg


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _at(data: Any, loc: tuple[int | str, ...]) -> Any:
    """The raw value at ``loc`` (None where the path does not lead anywhere)."""
    for part in loc:
        if isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data):
            data = data[part]
        elif part == 0 and isinstance(data, Mapping):
            continue  # a single item where a list is expected (``mapping: {...}``)
        elif isinstance(part, str) and isinstance(data, Mapping):
            data = data.get(part)
        else:
            return None
    return data


def _unknown_key(loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    key = str(loc[-1])
    model = _model_at(root, loc[:-1])
    if model is None:
        return "unknown key (check the spelling against the README's configuration reference)"
    valid = valid_keys(model)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}: did you mean {close[0]!r}?"
    return f"unknown key {key!r}: the keys here are {', '.join(valid)}"


def valid_keys(model: type[BaseModel]) -> list[str]:
    """The keys a user writes for ``model``: each field's alias where it has one."""
    return [f.alias or name for name, f in model.model_fields.items() if not f.exclude]


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The settings model that validates the mapping at ``loc`` (None if it cannot be told)."""
    annotation: Any = root
    for part in loc:
        model = _model_in(annotation)
        if isinstance(part, int) or model is None:  # a list item, or a value of a dict
            annotation = _item_type(annotation)
            if annotation is None:
                return None
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        annotation = field.annotation
    return _model_in(annotation)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds directly (``X``, ``X | None``, ``Annotated[X, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _item_type(annotation: Any) -> Any:
    """What a list holds, or a dict's values, through ``| None`` and ``Annotated``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in args:
            item = _item_type(arg)
            if item is not None:
                return item
        return None
    if origin in (list, tuple, set, frozenset) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None
