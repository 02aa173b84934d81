"""The declarative mapping: record fields -> MoEngage elements, with no user code.

Each ``ElementSpec`` of a topic yields one element per record. All paths are split and every
value reference is compiled once, in ``__init__``: a top-level field into a ``Slot`` read inline
with the record value's own ``dict.get`` (most mappings name only top-level fields), anything else
into a small getter. Per record the work is a few dict lookups and one copy or comprehension for
the attributes.

Value paths are dotted paths into ``record.value`` (nested dicts), or one of the pseudo-fields
``$key`` (the record key as UTF-8 text), ``$timestamp`` (the record timestamp in ms) and ``$topic``.
A path that is missing or null gives the ``default`` of its ``ValueSpec``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from connector.config import ElementSpec, ValueSpec
from connector.errors import ConfigError, TransformError

if TYPE_CHECKING:
    from connector.elements import Element
    from connector.transforms import Record

Getter = Callable[["Record"], Any]
# (top-level field name, default, None) or (None, None, getter): how one value is read. A plain
# field is read inline, no call per value; a getter keeps its place in the order of evaluation, so
# the first error a record raises ('$key' not UTF-8, a missing identity) is the one it always did.
Slot = tuple[str | None, Any, Getter | None]
_NOTHING: dict[str, Any] = {}  # read, never written: the fields of a value that is no object

# ElementSpec fields whose values are taken from the record; their first path segment is left out
# of the attributes when these come from the record's top level.
_VALUE_FIELDS = (
    "customer_id",
    "device_id",
    "action",
    "current_time",
    "user_time",
    "platform",
    "app_version",
    "user_timezone_offset",
)
# Optional event-action keys, in the order the seed documents show them.
_ACTION_FIELDS = ("platform", "app_version", "current_time", "user_time", "user_timezone_offset")


def _decode_key(key: bytes) -> str:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise TransformError(
            "mapping: the record key is not UTF-8 text, so '$key' cannot be used",
            rule="mapping.key_encoding",
        ) from None


def compile_value(spec: ValueSpec, key_path: str) -> Getter:
    """A getter ``(record) -> value`` for one ``ValueSpec``; missing or null -> its default."""
    if spec.field is None:
        const = spec.const
        return lambda _record: const
    field, default = spec.field, spec.default
    if field == "$key":
        return lambda r: default if r.key is None else _decode_key(r.key)
    if field == "$timestamp":
        return lambda r: default if r.timestamp_ms is None else r.timestamp_ms
    if field == "$topic":
        return lambda r: r.topic
    if field.startswith("$"):
        problem = f"unknown pseudo-field {field!r}; use $key, $timestamp or $topic"
        raise ConfigError([(key_path, problem)])
    parts = tuple(field.split("."))
    if not all(parts):
        raise ConfigError([(key_path, f"{field!r} has an empty segment; write 'a.b.c'")])
    if len(parts) == 1:
        (name,) = parts

        def get_top(r: Record) -> Any:
            value = r.value
            if isinstance(value, dict):
                found = value.get(name)
                if found is not None:
                    return found
            return default

        return get_top

    def get_nested(r: Record) -> Any:
        value = r.value
        for part in parts:
            if not isinstance(value, dict):
                return default
            value = value.get(part)
        return default if value is None else value

    return get_nested


def compile_slot(spec: ValueSpec, key_path: str) -> Slot:
    """The ``Slot`` for one ``ValueSpec`` (checked by ``compile_value`` either way)."""
    getter = compile_value(spec, key_path)
    field = spec.field
    if field is not None and not field.startswith("$") and "." not in field:
        return field, spec.default, None
    return None, None, getter


def _read(slot: Slot, record: Record, get: Callable[[str], Any]) -> Any:
    """One slot's value; ``get`` is the record value's ``dict.get`` (or ``_NOTHING.get``)."""
    name, default, getter = slot
    if getter is not None:
        return getter(record)
    found = get(name)  # type: ignore[arg-type]
    return default if found is None else found


def _first_segment(spec: ValueSpec | None) -> str | None:
    if spec is None or spec.field is None or spec.field.startswith("$"):
        return None
    return spec.field.split(".", 1)[0]


def _as_id(value: Any) -> Any:
    """IDs are strings in MoEngage: ints (not bools, not floats) are converted."""
    return str(value) if type(value) is int else value


class _Builder:
    """Builds one element per record from one ``ElementSpec``; subclassed per element type."""

    kind: ClassVar[str]

    def __init__(self, spec: ElementSpec, key_path: str) -> None:
        def slot(name: str) -> Slot | None:
            vs: ValueSpec | None = getattr(spec, name)
            return None if vs is None else compile_slot(vs, f"{key_path}.{name}")

        self._customer_id = slot("customer_id")
        self._device_id = slot("device_id")
        self._platform = slot("platform")
        self._identifiers = tuple(
            (key, compile_slot(vs, f"{key_path}.user_identifiers.{key}"))
            for key, vs in spec.user_identifiers.items()
        )
        self._identity_fields = ", ".join(
            repr(vs.field)
            for vs in [spec.customer_id, *spec.user_identifiers.values()]
            if vs is not None and vs.field is not None
        )

        attrs = spec.attributes
        self._source = None if attrs.source is None else tuple(attrs.source.split("."))
        self._source_path = attrs.source
        drop = frozenset(attrs.drop)
        self._include = (
            None if attrs.include is None else tuple(k for k in attrs.include if k not in drop)
        )
        consumed: set[str] = set()
        if attrs.source is None and attrs.include is None:
            specs = [getattr(spec, n) for n in _VALUE_FIELDS]
            specs += spec.user_identifiers.values()
            consumed = {s for s in map(_first_segment, specs) if s is not None}
        self._excluded = drop | consumed
        self._rename = dict(attrs.rename)
        self._constants = dict(attrs.constants)
        self._skip_nulls = attrs.skip_nulls

    def build(self, record: Record) -> Element:
        raise NotImplementedError

    def _identity(
        self, record: Record, get: Callable[[str], Any]
    ) -> tuple[Any, dict[str, Any] | None]:
        """``customer_id`` and the identity-resolution identifiers; at least one must be found."""
        cid = None
        slot = self._customer_id
        if slot is not None:
            cid = _read(slot, record, get)
            if type(cid) is int:  # IDs are strings in MoEngage: ints (not bools) are converted
                cid = str(cid)
        ids = None
        if self._identifiers:
            ids = {}
            for key, id_slot in self._identifiers:
                found = _read(id_slot, record, get)
                if found is not None:
                    ids[key] = _as_id(found)
        if cid is None and not ids:
            raise TransformError(
                f"{self.kind} mapping: no customer identity in the record; the field(s) "
                f"{self._identity_fields} are missing or null",
                rule="mapping.missing_field",
            )
        return cid, ids

    def _attributes(self, value: Any) -> dict[str, Any]:
        """The element's attributes from the record value: always a new dict of its own."""
        src = value
        if self._source is not None:
            for part in self._source:
                src = src.get(part) if isinstance(src, dict) else None
            if src is None:
                src = {}
            elif not isinstance(src, dict):
                raise TransformError(
                    f"{self.kind} mapping: attributes 'from' path {self._source_path!r} is a "
                    f"{type(src).__name__} in the record, not an object",
                    rule="mapping.type",
                )
        elif not isinstance(src, dict):
            src = {}
        skip = self._skip_nulls
        rename = self._rename
        if self._include is not None:
            attrs = {k: src[k] for k in self._include if k in src}
            if skip:
                attrs = {k: v for k, v in attrs.items() if v is not None}
            if rename:
                attrs = {rename.get(k, k): v for k, v in attrs.items()}
        elif rename:  # filter and rename in one pass: the same keys, order and values as two
            excl = self._excluded
            if skip:
                attrs = {
                    rename.get(k, k): v for k, v in src.items() if v is not None and k not in excl
                }
            else:
                attrs = {rename.get(k, k): v for k, v in src.items() if k not in excl}
        elif type(src) is dict and not (skip and None in src.values()):
            # Nothing to filter by value: a C-level copy, then the few excluded keys removed
            # (deleting keeps the order of the rest). A dict subclass takes the general way.
            attrs = src.copy()
            for k in self._excluded:
                attrs.pop(k, None)
        else:
            excl = self._excluded
            if skip:
                attrs = {k: v for k, v in src.items() if v is not None and k not in excl}
            else:
                attrs = {k: v for k, v in src.items() if k not in excl}
        if self._constants:
            attrs.update(self._constants)
        return attrs


class _CustomerBuilder(_Builder):
    kind = "customer"

    def __init__(self, spec: ElementSpec, key_path: str) -> None:
        super().__init__(spec, key_path)
        self._update_existing_only = spec.update_existing_only

    def build(self, record: Record) -> Element:
        value = record.value
        get = value.get if isinstance(value, dict) else _NOTHING.get
        cid, ids = self._identity(record, get)
        attrs = self._attributes(value)
        if ids:
            attrs.update(ids)  # identity resolution: identifiers travel as attributes (seed 000)
        if self._platform is not None:
            platform = _read(self._platform, record, get)
            if platform is not None:
                attrs["platforms"] = [{"platform": platform, "active": "true"}]
        element: Element = {"type": "customer"}
        if cid is not None:
            element["customer_id"] = cid
        element["attributes"] = attrs
        if self._update_existing_only is not None:
            element["update_existing_only"] = self._update_existing_only
        return element


class _DeviceBuilder(_Builder):
    kind = "device"

    def __init__(self, spec: ElementSpec, key_path: str) -> None:
        if spec.customer_id is None or spec.user_identifiers:
            problem = (
                "a device element needs 'customer_id' (Data API overview); identity resolution "
                "('user_identifiers') applies to customer and event elements only"
            )
            raise ConfigError([(key_path, problem)])
        super().__init__(spec, key_path)

    def build(self, record: Record) -> Element:
        value = record.value
        get = value.get if isinstance(value, dict) else _NOTHING.get
        cid, _ = self._identity(record, get)
        element: Element = {"type": "device", "customer_id": cid}
        if self._device_id is not None:
            device_id = _read(self._device_id, record, get)
            if device_id is not None:
                element["device_id"] = _as_id(device_id)
        attrs = self._attributes(value)
        if self._platform is not None:
            platform = _read(self._platform, record, get)
            if platform is not None:
                attrs["platform"] = platform
        element["attributes"] = attrs
        return element


class _EventBuilder(_Builder):
    kind = "event"

    def __init__(self, spec: ElementSpec, key_path: str) -> None:
        super().__init__(spec, key_path)
        assert spec.action is not None  # ElementSpec guarantees it for events
        self._action = compile_slot(spec.action, f"{key_path}.action")
        self._action_path = spec.action.field
        self._optional = tuple(
            (name, compile_slot(vs, f"{key_path}.{name}"))
            for name in _ACTION_FIELDS
            if (vs := getattr(spec, name)) is not None
        )

    def build(self, record: Record) -> Element:
        value = record.value
        get = value.get if isinstance(value, dict) else _NOTHING.get
        cid, ids = self._identity(record, get)
        element: Element = {"type": "event"}
        if cid is not None:
            element["customer_id"] = cid
        if ids:
            element["user_identifiers"] = ids
        if self._device_id is not None:
            device_id = _read(self._device_id, record, get)
            if device_id is not None:
                element["device_id"] = _as_id(device_id)
        name = _read(self._action, record, get)
        if name is None:
            raise TransformError(
                f"event mapping: action field {self._action_path!r} is missing or null",
                rule="mapping.missing_field",
            )
        action: dict[str, Any] = {"action": name, "attributes": self._attributes(value)}
        for key, slot in self._optional:
            found = _read(slot, record, get)
            if found is not None:
                action[key] = found
        element["actions"] = [action]
        return element


_BUILDERS: dict[str, type[_Builder]] = {
    "customer": _CustomerBuilder,
    "device": _DeviceBuilder,
    "event": _EventBuilder,
}


class MappingTransform:
    """One element per ``ElementSpec`` for every record, in the exact MoEngage JSON shape.

    ``key_path`` locates the mapping in the configuration for ``ConfigError`` (all problems of
    all element specs are reported together).
    """

    __slots__ = ("_builds",)

    def __init__(self, specs: Sequence[ElementSpec], *, key_path: str = "mapping") -> None:
        if not specs:
            raise ConfigError([(key_path, "a mapping needs at least one element")])
        builds: list[Callable[[Record], Element]] = []
        problems: list[tuple[str, str]] = []
        for i, spec in enumerate(specs):
            try:
                builds.append(_BUILDERS[spec.type](spec, f"{key_path}[{i}]").build)
            except ConfigError as e:
                problems.extend(e.problems)
        if problems:
            raise ConfigError(problems)
        self._builds = tuple(builds)

    def __call__(self, record: Record) -> list[Element]:
        if len(self._builds) == 1:
            return [self._builds[0](record)]
        return [build(record) for build in self._builds]
