"""The declarative mapping: record fields -> MoEngage elements, with no user code.

Each ``ElementSpec`` of a topic yields at most one element per record (none when its ``when`` is
false). Everything is compiled once, in ``__init__``: paths into steps (``paths``), values into
getters with their operations (``ops``), ``when`` into a predicate (``filters``), ``then`` into
the imported function (both wrapped by ``guarded``). A plain top-level field is a ``Slot`` read
inline with the record value's own ``dict.get`` (most mappings name only top-level fields). Per
record the work is a few dict lookups and one copy or comprehension for the attributes, plus
what the spec adds. A mapping of one element without ``when`` or ``then`` exposes that element's
builder (``single``), so the record processor can prepare its output in one pass.

Attributes, later keys winning: the keys copied from the ``from`` object (or the record's top
level, leaving out the fields used for identity, action, times, ...), then ``flatten``, then
``fields``, then ``constants``. Keys are copied unless only ``fields``/``flatten`` are given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import compress, repeat
from operator import is_
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from connector.errors import ConfigError, TransformError
from connector.mappingspec import ElementSpec, ValueSpec
from connector.transforms.flatten import Flattener
from connector.transforms.guarded import guarded
from connector.transforms.ops import Slot, compile_slot, source_names, source_paths
from connector.transforms.paths import parse_path, walk

if TYPE_CHECKING:
    from connector.elements import Element
    from connector.transforms import Record

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


class PlainEvent(NamedTuple):
    """An event mapping that reads only top-level fields of the record value and copies its
    attributes as they are: all a one-pass preparer needs to build the same element from the
    value alone (``connector.processing``). ``(field, default)`` pairs; ``source`` is the
    attributes' ``from`` key (None: the value's top level, less ``excluded``)."""

    customer: tuple[str, Any]
    device: tuple[str, Any] | None
    action: tuple[str, Any]
    copies: bool
    source: str | None
    excluded: frozenset[str]
    skip_nulls: bool
    optional: tuple[tuple[str, str], ...]  # (action key, field), in the element's key order


def _read(slot: Slot, record: Record, get: Callable[[str], Any]) -> Any:
    """One slot's value; ``get`` is the record value's ``dict.get`` (or ``_NOTHING.get``)."""
    name, default, getter = slot
    if getter is not None:
        return getter(record)
    found = get(name)  # type: ignore[arg-type]
    return default if found is None else found


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
            repr(path)
            for vs in [spec.customer_id, *spec.user_identifiers.values()]
            if vs is not None
            for path in source_paths(vs)
        )

        attrs = spec.attributes
        where = f"{key_path}.attributes"
        self._source = None if attrs.source is None else parse_path(attrs.source, f"{where}.from")
        self._source_path = attrs.source
        steps = self._source or ()
        self._source_key = steps[0] if len(steps) == 1 and type(steps[0]) is str else None
        self._copies = attrs.copies
        drop = frozenset(attrs.drop)
        self._include = (
            None if attrs.include is None else tuple(k for k in attrs.include if k not in drop)
        )
        consumed: set[str] = set()
        if attrs.source is None and attrs.include is None:
            for vs in [*(getattr(spec, n) for n in _VALUE_FIELDS), *spec.user_identifiers.values()]:
                consumed |= source_names(vs)
        self._excluded = drop | consumed
        self._rename = dict(attrs.rename)
        self._fields = tuple(
            (name, compile_slot(vs, f"{where}.fields.{name}")) for name, vs in attrs.fields.items()
        )
        self._flatten = tuple(
            Flattener(f, f"{where}.flatten[{i}]") for i, f in enumerate(attrs.flatten)
        )
        self._constants = dict(attrs.constants)
        self._skip_nulls = attrs.skip_nulls
        self._added = bool(self._fields or self._flatten)
        # Attributes that are the copied keys alone: _attributes is _copied (or {}).
        self._bare = not self._added and not self._constants

    def build(self, record: Record) -> Element:
        raise NotImplementedError

    def _identity(
        self, record: Record, get: Callable[[str], Any]
    ) -> tuple[Any, dict[str, Any] | None]:
        """``customer_id`` and the identity-resolution identifiers; at least one must be found."""
        cid = None
        slot = self._customer_id
        if slot is not None:
            name, default, getter = slot  # _read(slot, record, get), inline
            if getter is not None:
                cid = getter(record)
            else:
                cid = get(name)  # type: ignore[arg-type]
                if cid is None:
                    cid = default
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

    def _attributes(self, record: Record, value: Any) -> dict[str, Any]:
        """The element's attributes from the record: always a new dict of its own."""
        attrs = self._copied(value) if self._copies else {}
        if self._added:
            skip = self._skip_nulls
            for flattener in self._flatten:
                flattener.into(record, skip, attrs)
            get = value.get if isinstance(value, dict) else _NOTHING.get
            for name, slot in self._fields:
                found = _read(slot, record, get)
                if found is not None or not skip:
                    attrs[name] = found
        if self._constants:
            attrs.update(self._constants)
        return attrs

    def _copied(self, value: Any) -> dict[str, Any]:
        """The keys copied from the ``from`` object or the record's top level."""
        src = value
        if self._source is not None:
            key = self._source_key  # a one-key path: walk(src, self._source), inline
            if key is not None:
                src = src.get(key) if isinstance(src, dict) else None
            else:
                src = walk(src, self._source)
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
        elif type(src) is dict:
            # A C-level copy, then the few excluded keys (and, when skipping nulls, the keys of
            # nulls) removed: deleting keeps the order of the rest, so the result is the
            # comprehension's below. A dict subclass takes the general way.
            attrs = src.copy()
            if skip and None in src.values():
                # the keys of nulls, picked in C: only they reach the loop's body
                for k in compress(src, map(is_, src.values(), repeat(None))):
                    del attrs[k]
            for k in self._excluded:
                attrs.pop(k, None)
        else:
            excl = self._excluded
            if skip:
                attrs = {k: v for k, v in src.items() if v is not None and k not in excl}
            else:
                attrs = {k: v for k, v in src.items() if k not in excl}
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
        attrs = self._attributes(record, value)
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
        attrs = self._attributes(record, value)
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
        self._action_path = ", ".join(source_paths(spec.action)) or "(a constant)"
        self._optional = tuple(
            (name, *compile_slot(vs, f"{key_path}.{name}"))
            for name in _ACTION_FIELDS
            if (vs := getattr(spec, name)) is not None
        )
        # Every optional field a plain top-level field without a default: (key, field) pairs.
        plain = all(getter is None and default is None for _, _, default, getter in self._optional)
        self._plain_optional = (
            tuple((key, field) for key, field, _, _ in self._optional) if plain else None
        )

    def plain(self) -> PlainEvent | None:
        """This builder as a :class:`PlainEvent`, or None when it reads anything else (a
        path, the record's key or headers, identifiers, ``user_time``, renamed, listed or
        added attributes)."""
        slots = (self._customer_id, self._action, self._device_id)
        if any(s is not None and (s[2] is not None or type(s[0]) is not str) for s in slots):
            return None
        if (
            self._customer_id is None
            or self._identifiers
            or not self._bare
            or self._include is not None
            or self._rename
            or (self._source is not None and self._source_key is None)
            or self._plain_optional is None
            or any(key == "user_time" or type(f) is not str for key, f in self._plain_optional)
        ):
            return None
        device = self._device_id
        return PlainEvent(
            customer=self._customer_id[:2],  # type: ignore[arg-type]
            device=None if device is None else device[:2],  # type: ignore[arg-type]
            action=self._action[:2],  # type: ignore[arg-type]
            copies=self._copies,
            source=self._source_key,
            excluded=self._excluded,
            skip_nulls=self._skip_nulls,
            optional=tuple((key, str(f)) for key, f in self._plain_optional),
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
        attrs = (
            (self._copied(value) if self._copies else {})
            if self._bare
            else self._attributes(record, value)
        )
        action: dict[str, Any] = {"action": name, "attributes": attrs}
        if self._plain_optional is not None:
            for key, field in self._plain_optional:
                found = get(field)  # type: ignore[arg-type]
                if found is not None:
                    action[key] = found
        else:
            for key, field, default, getter in self._optional:  # _read, inline
                if getter is not None:
                    found = getter(record)
                else:
                    found = get(field)  # type: ignore[arg-type]
                    if found is None:
                        found = default
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
    """The elements of the ``ElementSpec``s for every record, in the exact MoEngage JSON shape:
    one per spec, none for a spec whose ``when`` is false, what its ``then`` returns.

    ``key_path`` locates the mapping in the configuration for ``ConfigError`` (all problems of
    all element specs are reported together).
    """

    __slots__ = ("_builds", "_plain", "plain_event", "single", "single_kind")

    def __init__(self, specs: Sequence[ElementSpec], *, key_path: str = "mapping") -> None:
        if not specs:
            raise ConfigError([(key_path, "a mapping needs at least one element")])
        builds: list[Callable[[Record], Any]] = []
        builders: list[_Builder] = []
        problems: list[tuple[str, str]] = []
        for i, spec in enumerate(specs):
            where = f"{key_path}[{i}]"
            try:
                builders.append(_BUILDERS[spec.type](spec, where))
                builds.append(guarded(builders[-1].build, spec, where))
            except ConfigError as e:
                problems.extend(e.problems)
        if problems:
            raise ConfigError(problems)
        self._builds = tuple(builds)
        # Without 'when' and 'then' every spec makes exactly one element.
        self._plain = all(spec.when is None and spec.then is None for spec in specs)
        # The one element's builder when that is all there is: ``[single(record)]`` is the call.
        self.single = builds[0] if self._plain and len(builds) == 1 else None
        self.single_kind = specs[0].type if self.single is not None else None
        # That one element's shape when it is a plain event (see PlainEvent), else None.
        only = builders[0] if self.single is not None else None
        self.plain_event = only.plain() if isinstance(only, _EventBuilder) else None

    def __call__(self, record: Record) -> list[Element]:
        builds = self._builds
        if self._plain:
            if len(builds) == 1:
                return [builds[0](record)]
            return [build(record) for build in builds]
        out: list[Element] = []
        for build in builds:
            made = build(record)
            if made is None:
                continue
            if type(made) is list:
                out.extend(made)
            else:
                out.append(made)
        return out
