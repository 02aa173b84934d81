"""Every record path an element spec reads, with what it needs there: ``path_uses``.

For checking a mapping against the topic's schema before anything runs. A value's ``want`` is
what its first operation needs (``trim``/``lower``/``upper`` text, ``map`` a scalar, ``scale`` a
number, ``to`` a time for ``epoch_seconds``/``epoch_millis``/``iso8601`` and a scalar for
``string``/``number``), else what the element key needs (``customer_id`` a scalar, the event
times a timestamp, ``user_timezone_offset`` a number, an attribute anything). Aggregates want an
array and, per item, ``sum``/``min``/``max`` a number, ``join`` a scalar (``item_of`` set).
"""

from __future__ import annotations

from connector.mappingspec import ElementSpec, ValueSpec, WhenSpec
from connector.transforms.pathuse import PathUse, Want

# Element keys holding a value, and what each needs of it.
_ELEMENT_VALUES: tuple[tuple[str, Want], ...] = (
    ("customer_id", "scalar"),
    ("device_id", "scalar"),
    ("action", "scalar"),
    ("current_time", "timestamp"),
    ("user_time", "timestamp"),
    ("platform", "scalar"),
    ("app_version", "scalar"),
    ("user_timezone_offset", "number"),
)
_ITEM_WANTS: dict[str, Want] = {
    "count": "any",
    "sum": "number",
    "min": "number",
    "max": "number",
    "join": "scalar",
}


def _first_need(spec: ValueSpec, otherwise: Want) -> Want:
    """What the first operation of ``spec`` needs of its source value."""
    if spec.trim or spec.lower or spec.upper:
        return "string"
    if spec.map is not None:
        return "scalar"
    if spec.scale is not None:
        return "number"
    if spec.to in ("epoch_seconds", "epoch_millis", "iso8601"):
        return "timestamp"
    if spec.to is not None:
        return "scalar"
    return otherwise


def value_uses(spec: ValueSpec, where: str, want: Want) -> list[PathUse]:
    """The paths one value reads; ``want`` is what its place needs when no operation says."""
    need = _first_need(spec, want)
    if spec.field is not None:
        return [PathUse(where, spec.field, need)]
    if spec.coalesce is not None:
        return [
            use
            for i, part in enumerate(spec.coalesce)
            for use in value_uses(part, f"{where}.coalesce[{i}]", need)
        ]
    if spec.concat is not None:
        return [
            use
            for i, part in enumerate(spec.concat)
            for use in value_uses(part, f"{where}.concat[{i}]", "scalar")
        ]
    for op in ("count", "sum", "min", "max", "first", "join"):
        array = getattr(spec, op)
        if array is not None:
            uses = [PathUse(f"{where}.{op}", array, "array")]
            of = [] if spec.of is None else [spec.of] if isinstance(spec.of, str) else spec.of
            item_want = _ITEM_WANTS.get(op, need)
            for i, inner in enumerate(of):
                at = f"{where}.of" if isinstance(spec.of, str) else f"{where}.of[{i}]"
                uses.append(PathUse(at, inner, item_want, array))
            return uses
    return []  # a constant


def _when_uses(spec: WhenSpec, where: str) -> list[PathUse]:
    if spec.not_ is not None:
        return _when_uses(spec.not_, f"{where}.not")
    parts = spec.all if spec.all is not None else spec.any
    if parts is not None:
        name = "all" if spec.all is not None else "any"
        return [u for i, p in enumerate(parts) for u in _when_uses(p, f"{where}.{name}[{i}]")]
    assert spec.path is not None
    return [PathUse(f"{where}.path", spec.path, "any" if spec.exists is not None else "scalar")]


def path_uses(spec: ElementSpec, where: str) -> list[PathUse]:
    """Every path ``spec`` reads: its values (with their operations' inputs), ``when``, the
    ``from`` object with the ``include``/``drop``/``rename`` keys read from it (as paths below
    ``from``), ``fields`` and ``flatten`` sources. ``where`` locates the spec, e.g.
    ``topics[0].transform.mapping[1]``."""
    uses: list[PathUse] = []
    if spec.when is not None:
        uses += _when_uses(spec.when, f"{where}.when")
    for key, want in _ELEMENT_VALUES:
        value: ValueSpec | None = getattr(spec, key)
        if value is not None:
            uses += value_uses(value, f"{where}.{key}", want)
    for name, value in spec.user_identifiers.items():
        uses += value_uses(value, f"{where}.user_identifiers.{name}", "scalar")
    attrs, at = spec.attributes, f"{where}.attributes"
    base = "" if attrs.source is None else attrs.source + "."
    if attrs.source is not None:
        uses.append(PathUse(f"{at}.from", attrs.source, "object"))
    for i, key in enumerate(attrs.include or ()):
        uses.append(PathUse(f"{at}.include[{i}]", base + key, "any"))
    for i, key in enumerate(attrs.drop):
        uses.append(PathUse(f"{at}.drop[{i}]", base + key, "any"))
    for key in attrs.rename:
        uses.append(PathUse(f"{at}.rename.{key}", base + key, "any"))
    for i, flat in enumerate(attrs.flatten):
        uses.append(PathUse(f"{at}.flatten[{i}].path", flat.path, "object"))
    for name, value in attrs.fields.items():
        uses += value_uses(value, f"{at}.fields.{name}", "any")
    return uses
