"""Value operations of the declarative mapping, compiled once per ``ValueSpec``.

``compile_value`` turns a spec into one getter ``(record) -> value``: its source (a path, a
constant, ``coalesce``/``concat`` of other values, or an aggregate over an array), then the
operations it gives, in a fixed order (``trim``, ``lower``/``upper``, ``map``, ``scale``, ``to``).
A missing or null value skips the operations and is the spec's ``default``; so is a value ``map``
turns into null or does not list (when a ``default`` is given; without one it is kept as it is).
A value of the wrong type for an operation is bad input (``mapping.type``) naming the key path.
A spec that is a plain top-level field adds no cost: ``compile_slot`` reads it inline.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from connector.mappingspec import ValueSpec
from connector.transforms.convert import (
    EXACT,
    Decimals,
    bad_type,
    epoch_us,
    exact,
    iso8601,
    number_out,
    to_decimal,
    to_number,
    to_text,
)
from connector.transforms.paths import Getter, compile_path, first_name, is_top_level, parse_path
from connector.transforms.paths import walk as _walk

if TYPE_CHECKING:
    from connector.transforms import Record

Step = Callable[[Any], Any]
# (top-level field name, default, None) or (None, None, getter): how one value is read. A plain
# field is read inline, no call per value; a getter keeps its place in the order of evaluation, so
# the first error a record raises ('$key' not UTF-8, a missing identity) is the one it always did.
Slot = tuple[str | None, Any, Getter | None]


def has_operations(spec: ValueSpec) -> bool:
    return bool(
        spec.trim or spec.lower or spec.upper or spec.map is not None or spec.scale is not None
    ) or (spec.to is not None)


def compile_slot(spec: ValueSpec, key_path: str) -> Slot:
    """The ``Slot`` for one ``ValueSpec`` (checked by ``compile_value`` either way)."""
    getter = compile_value(spec, key_path)
    field = spec.field
    if field is not None and is_top_level(field) and not has_operations(spec):
        return field, spec.default, None
    return None, None, getter


def compile_value(spec: ValueSpec, key_path: str) -> Getter:
    """A getter ``(record) -> value`` for one ``ValueSpec``; raises ``ConfigError`` for a path
    that is not in the grammar, ``TransformError`` per record for a value of the wrong type."""
    source = _source(spec, key_path)
    steps = _steps(spec, key_path)
    default = spec.default
    if not steps:
        if default is None:
            return source

        def or_default(r: Record) -> Any:
            value = source(r)
            return default if value is None else value

        return or_default

    def run(r: Record) -> Any:
        value = source(r)
        if value is None:
            return default
        for step in steps:
            value = step(value)
            if value is None:
                return default
        return value

    return run


def source_paths(spec: ValueSpec) -> list[str]:
    """Every record path a spec reads from (not those inside array items)."""
    if spec.field is not None:
        return [spec.field]
    for name in ("count", "sum", "min", "max", "first", "join"):
        array = getattr(spec, name)
        if array is not None:
            return [array]
    parts = spec.coalesce or spec.concat or []
    return [p for part in parts for p in source_paths(part)]


def source_names(spec: ValueSpec | None) -> set[str]:
    """The top-level fields a spec reads (left out of attributes copied from the top level)."""
    if spec is None:
        return set()
    return {n for n in map(first_name, source_paths(spec)) if n is not None}


# ----- sources ------------------------------------------------------------------------------------


def _source(spec: ValueSpec, key_path: str) -> Getter:
    if spec.field is not None:
        return compile_path(spec.field, key_path)
    if spec.coalesce is not None:
        return _coalesce(spec.coalesce, f"{key_path}.coalesce")
    if spec.concat is not None:
        return _concat(spec.concat, f"{key_path}.concat")
    for name in ("count", "sum", "min", "max", "first", "join"):
        array_path = getattr(spec, name)
        if array_path is not None:
            return _aggregate(spec, name, array_path, key_path)
    const = spec.const
    return lambda _record: const


def _coalesce(parts: list[ValueSpec], key_path: str) -> Getter:
    getters = tuple(compile_value(p, f"{key_path}[{i}]") for i, p in enumerate(parts))

    def first_found(r: Record) -> Any:
        for get in getters:
            value = get(r)
            if value is not None:
                return value
        return None

    return first_found


def _concat(parts: list[ValueSpec], key_path: str) -> Getter:
    getters = tuple(compile_value(p, f"{key_path}[{i}]") for i, p in enumerate(parts))

    def joined(r: Record) -> Any:
        values = [value for get in getters if (value := get(r)) is not None]
        if not values:
            return None
        return "".join(to_text(v, key_path, "concat") for v in values)

    return joined


def _aggregate(spec: ValueSpec, op: str, array_path: str, key_path: str) -> Getter:
    where = f"{key_path}.{op}"
    array = compile_path(array_path, where)
    of = [] if spec.of is None else [spec.of] if isinstance(spec.of, str) else spec.of
    inner = tuple(parse_path(p, f"{key_path}.of") for p in of)
    reduce = _REDUCERS[op](inner, spec, where)

    def aggregate(r: Record) -> Any:
        items = array(r)
        if items is None:
            return None
        if type(items) is not list:
            raise bad_type(where, op, items, f"an array at {array_path!r}")
        return reduce(items)

    return aggregate


Reducer = Callable[[list[Any]], Any]
Inner = tuple[tuple[str | int, ...], ...]


def _values(items: list[Any], inner: Inner) -> list[Any]:
    """The non-null ``of`` value of every item (the item itself without ``of``)."""
    if not inner:
        return [item for item in items if item is not None]
    steps = inner[0]
    return [v for item in items if (v := _walk(item, steps)) is not None]


def _count(inner: Inner, spec: ValueSpec, where: str) -> Reducer:
    if not inner:
        return len
    return lambda items: len(_values(items, inner))


def _sum(inner: Inner, spec: ValueSpec, where: str) -> Reducer:
    decimals: Decimals = spec.decimals

    def products(items: list[Any]) -> Any:
        left, right = inner
        for item in items:
            a, b = _walk(item, left), _walk(item, right)
            if a is None or b is None:
                continue
            x, y = to_decimal(a, where, "sum"), to_decimal(b, where, "sum")
            if type(x) is int and type(y) is int:
                yield x * y
            else:
                yield exact(where, "sum", EXACT.multiply, x, y)

    def total(items: list[Any]) -> Any:
        acc: int | Decimal = 0
        if len(inner) == 1:
            terms = (to_decimal(v, where, "sum") for v in _values(items, inner))
        else:
            terms = products(items)
        for term in terms:
            if type(acc) is int and type(term) is int:
                acc += term
            else:
                acc = exact(where, "sum", EXACT.add, acc, term)
        return number_out(acc, decimals, where)

    return total


def _extreme(pick: Callable[..., Any]) -> Callable[[Inner, ValueSpec, str], Reducer]:
    def make(inner: Inner, spec: ValueSpec, where: str) -> Reducer:
        decimals: Decimals = spec.decimals
        op = pick.__name__

        def extreme(items: list[Any]) -> Any:
            values = [to_decimal(v, where, op) for v in _values(items, inner)]
            if not values:
                return None
            return number_out(pick(values), decimals, where)

        return extreme

    return make


def _first(inner: Inner, spec: ValueSpec, where: str) -> Reducer:
    def first(items: list[Any]) -> Any:
        values = _values(items, inner)
        return values[0] if values else None

    return first


def _join(inner: Inner, spec: ValueSpec, where: str) -> Reducer:
    separator = spec.separator
    return lambda items: separator.join(to_text(v, where, "join") for v in _values(items, inner))


_REDUCERS: dict[str, Callable[[Inner, ValueSpec, str], Reducer]] = {
    "count": _count,
    "sum": _sum,
    "min": _extreme(min),
    "max": _extreme(max),
    "first": _first,
    "join": _join,
}


# ----- operations ---------------------------------------------------------------------------------


def _steps(spec: ValueSpec, where: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    if spec.trim:
        steps.append(_text_op(str.strip, "trim", where))
    if spec.lower:
        steps.append(_text_op(str.lower, "lower", where))
    if spec.upper:
        steps.append(_text_op(str.upper, "upper", where))
    if spec.map is not None:
        steps.append(_map(spec.map, spec.default is not None, where))
    if spec.scale is not None:
        steps.append(_scale(spec.scale, spec.decimals, where))
    if spec.to is not None:
        steps.append(_to(spec.to, spec.unit, spec.decimals, where))
    return tuple(steps)


def _text_op(fn: Callable[[str], str], op: str, where: str) -> Step:
    def text_op(value: Any) -> Any:
        if type(value) is not str:
            raise bad_type(where, op, value, "text")
        return fn(value)

    return text_op


def _map(table: dict[Any, Any], has_default: bool, where: str) -> Step:
    def mapped(value: Any) -> Any:
        try:
            if type(value) is bool:  # True == 1: a boolean only matches a boolean key
                found = next((v for k, v in table.items() if k is value), table)
            else:
                found = table.get(value, table)
        except TypeError:  # unhashable: a list or an object
            raise bad_type(where, "map", value, "a scalar") from None
        if found is table:
            return None if has_default else value
        return found

    return mapped


def _scale(factor: int | float, decimals: Decimals, where: str) -> Step:
    exact_factor = factor if type(factor) is int else Decimal(repr(factor))
    integral = type(factor) is int and decimals == "number"

    def scaled(value: Any) -> Any:
        if integral and type(value) is int:
            return value * exact_factor
        number = to_decimal(value, where, "scale")
        product = exact(where, "scale", EXACT.multiply, number, exact_factor)
        return number_out(product, decimals, where)

    return scaled


def _to(kind: str, unit: str, decimals: Decimals, where: str) -> Step:
    if kind == "string":
        return lambda value: to_text(value, where, "to: string")
    if kind == "number":
        return lambda value: to_number(value, decimals, where)
    if kind == "epoch_seconds":
        return lambda value: epoch_us(value, unit, where) // 1_000_000
    if kind == "epoch_millis":
        return lambda value: epoch_us(value, unit, where) // 1000
    return lambda value: iso8601(epoch_us(value, unit, where))
