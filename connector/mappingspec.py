"""The declarative mapping's YAML model: values, value operations, attributes, filters.

Validated once with the rest of the settings (``connector.config`` imports these models), so
``moengage-connector validate`` reports a malformed mapping with its key path. What the values
mean at run time is in ``connector.transforms.ops``; the README's "Mapping reference" is the
user's version of this module.

Path grammar (every place a path is taken): dot-separated names, ``name[N]`` for item N (N >= 0)
of an array, and the pseudo-fields ``$key``, ``$timestamp``, ``$topic`` as a whole path only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# Keys of a ValueSpec that say where its value comes from: exactly one is given.
SOURCES = ("field", "const", "coalesce", "concat", "count", "sum", "min", "max", "first", "join")
# Sources that read an array and, with ``of``, a path inside each of its items.
AGGREGATES = ("count", "sum", "min", "max", "first", "join")


class ValueSpec(_Frozen):
    """One output value: a source, then the operations given, in this fixed order: ``trim``,
    ``lower``/``upper``, ``map`` (with ``default``), ``scale``, ``to``. A missing or null result,
    or a value ``map`` does not list, is ``default`` (as given, no operation applied to it)."""

    field: str | None = Field(default=None, alias="path", description="a path in the record")
    const: Any = None
    default: Any = None
    coalesce: list[Value] | None = Field(default=None, description="the first non-null of these")
    concat: list[Value] | None = Field(default=None, description="text of these, nulls skipped")
    count: str | None = Field(default=None, description="array path: its items (with 'of': set)")
    sum: str | None = Field(default=None, description="array path: exact sum of 'of' per item")
    min: str | None = Field(default=None, description="array path: the least 'of' (numbers)")
    max: str | None = Field(default=None, description="array path: the greatest 'of' (numbers)")
    first: str | None = Field(default=None, description="array path: its first (non-null 'of')")
    join: str | None = Field(default=None, description="array path: its items as text")
    of: str | list[str] | None = Field(
        default=None, description="path inside each item; for 'sum' a list of two multiplies them"
    )
    separator: str = Field(default=",", description="between the items 'join' joins")
    trim: bool = False
    lower: bool = False
    upper: bool = False
    map: dict[Any, Any] | None = Field(default=None, description="value -> replacement")
    scale: int | float | None = Field(default=None, description="multiply a number by this")
    to: Literal["string", "number", "epoch_seconds", "epoch_millis", "iso8601"] | None = None
    unit: Literal["auto", "s", "ms", "us"] = Field(
        default="auto", description="unit of an epoch number read as a timestamp by 'to'"
    )
    decimals: Literal["number", "string"] = Field(
        default="number",
        description="the result of sum, min, max, scale and 'to: number': an exact JSON number "
        "(else bad input) or always its exact decimal text",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ValueSpec:
        given = [k for k in SOURCES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one source: 'path' (a field path), 'const', 'coalesce', 'concat' "
                "or one of 'count', 'sum', 'min', 'max', 'first', 'join' (an array path)"
                + (f"; got {', '.join(given)}" if given else "")
            )
        source = given[0]
        if self.of is not None and source not in AGGREGATES:
            raise ValueError("'of' only applies to count, sum, min, max, first and join")
        if isinstance(self.of, list) and (source != "sum" or len(self.of) != 2):
            raise ValueError("a list in 'of' is a product of two paths, for 'sum' only")
        if source in ("sum", "min", "max") and self.of is None:
            raise ValueError(f"'{source}' needs 'of': the number in each item ('of: qty')")
        if self.lower and self.upper:
            raise ValueError("give 'lower' or 'upper', not both")
        if source in ("coalesce", "concat") and not getattr(self, source):
            raise ValueError(f"'{source}' needs at least one value")
        return self


def _value_spec(v: Any) -> Any:
    # A bare string is the common case: a field path.
    if isinstance(v, str):
        return {"field": v}
    return v


Value = Annotated[ValueSpec, BeforeValidator(_value_spec)]
ValueSpec.model_rebuild()


class FlattenSpec(_Frozen):
    """A nested record or map whose leaves become attributes: ``prefs.lang`` -> ``prefs_lang``."""

    path: str = Field(description="the record or map to flatten")
    separator: str = "_"
    prefix: str | None = Field(
        default=None, description="before every name; default: the path's names and a separator"
    )
    max_depth: int = Field(
        default=5, ge=1, description="levels flattened; an object deeper than this stays one value"
    )


def _listed(v: Any) -> Any:
    return [v] if isinstance(v, dict) else v


def _dotted(names: list[str], key: str, fix: str) -> None:
    for i, name in enumerate(names):
        if "." in name or "[" in name:
            raise ValueError(
                f"item {i} {name!r} is a path, but '{key}' names keys of the 'from' object (the "
                f"record's top level without 'from'); {fix}"
            )


_FIELDS_FIX = "to set an attribute from a nested field use 'fields: {name: path}' (or 'flatten')"


class AttributesSpec(_Frozen):
    """Which record fields become the element's attributes, and how they are named."""

    source: str | None = Field(
        default=None,
        alias="from",
        description="path of a map in the record; default: the record's top-level fields",
    )
    include: list[str] | None = None
    drop: list[str] = []
    rename: dict[str, str] = {}
    fields: dict[str, Value] = Field(default={}, description="attribute name -> value")
    flatten: Annotated[list[FlattenSpec], BeforeValidator(_listed)] = []
    constants: dict[str, Any] = {}
    skip_nulls: bool = True

    @field_validator("include")
    @classmethod
    def _include_keys(cls, v: list[str] | None) -> list[str] | None:
        _dotted(v or [], "include", _FIELDS_FIX)
        return v

    @field_validator("drop")
    @classmethod
    def _drop_keys(cls, v: list[str]) -> list[str]:
        _dotted(v, "drop", "a nested field is never copied unless 'fields' names it")
        return v

    @field_validator("rename")
    @classmethod
    def _rename_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for old, new in v.items():
            if "." in old or "[" in old:
                raise ValueError(
                    f"key {old!r} is a path, but 'rename' renames keys of the 'from' object (the "
                    f"record's top level without 'from'); instead write 'fields: {{{new}: {old}}}' "
                    "(or use 'flatten')"
                )
        return v

    @property
    def copies(self) -> bool:
        """Whether keys of the ``from`` object (or the top level) are copied: always, unless only
        ``fields``/``flatten`` (and ``constants``) say what the attributes are."""
        if self.source is not None or self.include is not None or self.drop or self.rename:
            return True
        return not (self.fields or self.flatten)


class WhenSpec(_Frozen):
    """A predicate on the record: ``{path, equals | in | exists}``, or ``not``/``all``/``any``."""

    path: str | None = None
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    exists: bool | None = None
    not_: When | None = Field(default=None, alias="not")
    all: list[When] | None = None
    any: list[When] | None = None

    @model_validator(mode="after")
    def _one_test(self) -> WhenSpec:
        tests = [k for k in ("equals", "in_", "exists") if k in self.model_fields_set]
        logic = [k for k in ("not_", "all", "any") if getattr(self, k) is not None]
        if self.path is not None:
            if len(tests) != 1 or logic:
                raise ValueError("with 'path' give exactly one of 'equals', 'in' or 'exists'")
        elif tests or len(logic) != 1:
            raise ValueError(
                "give 'path' with one of 'equals', 'in', 'exists'; or one of 'not', 'all', 'any'"
            )
        return self


def _when(v: Any) -> Any:
    return {"all": v} if isinstance(v, list) else v


When = Annotated[WhenSpec, BeforeValidator(_when)]
WhenSpec.model_rebuild()


class ElementSpec(_Frozen):
    """One MoEngage element produced from every record of a topic (declarative mapping)."""

    type: Literal["customer", "device", "event"]
    when: When | None = Field(default=None, description="produce the element only when true")
    then: str | None = Field(
        default=None, description="'package.module:function' given (element, record) last"
    )
    customer_id: Value | None = None
    user_identifiers: dict[str, Value] = {}
    update_existing_only: bool | None = None
    attributes: AttributesSpec = AttributesSpec()
    device_id: Value | None = None
    # event actions
    action: Value | None = None
    current_time: Value | None = None
    user_time: Value | None = None
    platform: Value | None = None
    app_version: Value | None = None
    user_timezone_offset: Value | None = None

    @model_validator(mode="after")
    def _check_shape(self) -> ElementSpec:
        if self.customer_id is None and not self.user_identifiers:
            raise ValueError("give 'customer_id' or 'user_identifiers' (identity resolution)")
        event_only = ("action", "current_time", "user_time", "app_version", "user_timezone_offset")
        if self.type == "event":
            if self.action is None:
                raise ValueError("an event mapping needs 'action' (the event name)")
        else:
            misplaced = [k for k in event_only if getattr(self, k) is not None]
            if misplaced:
                raise ValueError(f"{', '.join(misplaced)} only apply to type 'event'")
        if self.type != "customer" and self.update_existing_only is not None:
            raise ValueError("'update_existing_only' only applies to type 'customer'")
        if self.then is not None and ":" not in self.then:
            raise ValueError("'then' must look like 'package.module:function'")
        return self
