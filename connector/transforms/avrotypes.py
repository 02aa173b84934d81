"""Avro schema types as the decoder reads them: unions, named types, logical types.

Works on parsed schema JSON, raw (short names, namespaces) or as fastavro parsed it (full names,
``__named_schemas``). ``branches`` gives the non-null types a value may have; ``satisfies`` says
whether one of them is what a ``Want`` needs, knowing what the decoder turns each logical type
into (timestamps and dates become ISO 8601 text, decimals numbers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from connector.transforms.pathuse import Want

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_KINDS = _PRIMITIVES | {"record", "error", "enum", "fixed", "array", "map"}
NAMED = frozenset({"record", "error", "enum", "fixed"})
_OBJECTS = frozenset({"record", "error", "map"})
_CONTAINERS = _OBJECTS | {"array"}
# Logical types the decoder turns into text (ISO 8601, HH:MM:SS): not numbers any more.
_DATE_TIME = frozenset(
    {
        "date",
        "time-millis",
        "time-micros",
        "timestamp-millis",
        "timestamp-micros",
        "timestamp-nanos",
        "local-timestamp-millis",
        "local-timestamp-micros",
        "local-timestamp-nanos",
    }
)
_POINTS_IN_TIME = _DATE_TIME - {"time-millis", "time-micros"}
UNKNOWN: dict[str, Any] = {"type": "?"}  # a name the schema does not define: anything goes


class Names:
    """Named types of a schema by full name, and by short name when that is unambiguous."""

    def __init__(self, schema: Any) -> None:
        self._full: dict[str, Any] = {}
        self._short: dict[str, list[Any]] = {}
        if isinstance(schema, dict):
            for name, named in (schema.get("__named_schemas") or {}).items():
                self._add(name, named)
        self._walk(schema, "")

    def _add(self, full: str, node: Any) -> None:
        if full not in self._full:
            self._full[full] = node
            self._short.setdefault(full.rsplit(".", 1)[-1], []).append(node)

    def _walk(self, t: Any, namespace: str) -> None:
        stack = [(t, namespace)]
        while stack:
            t, ns = stack.pop()
            if isinstance(t, list):
                stack.extend((b, ns) for b in t)
            elif isinstance(t, dict):
                kind = t.get("type")
                if kind in NAMED and isinstance(t.get("name"), str):
                    name = t["name"]
                    ns = t.get("namespace", ns) if "." not in name else name.rsplit(".", 1)[0]
                    full = name if "." in name or not ns else f"{ns}.{name}"
                    if full in self._full:
                        continue  # a second definition (or a recursive type): walked already
                    self._add(full, t)
                if isinstance(kind, (dict, list)):
                    stack.append((kind, ns))
                if kind in ("record", "error"):
                    fields = t.get("fields") or ()
                    stack.extend((f.get("type"), ns) for f in fields if isinstance(f, dict))
                for key in ("items", "values"):
                    if key in t:
                        stack.append((t[key], ns))

    def get(self, name: str) -> Any:
        found = self._full.get(name)
        if found is None:
            short = self._short.get(name.rsplit(".", 1)[-1], [])
            found = short[0] if len(short) == 1 else None
        return found


def branches(t: Any, names: Names) -> list[Any]:
    """The non-null types a value of type ``t`` may have: unions flattened, names dereferenced."""
    out: list[Any] = []
    stack, seen = [t], 0
    while stack and seen < 1000:  # a malformed, self-referencing name cannot loop forever
        seen += 1
        t = stack.pop(0)
        if isinstance(t, list):
            stack[:0] = t
        elif isinstance(t, str):
            if t in _PRIMITIVES:
                if t != "null":
                    out.append(t)
            else:
                found = names.get(t)
                if found is None:
                    out.append(UNKNOWN)
                else:
                    stack.insert(0, found)
        elif isinstance(t, dict):
            kind = t.get("type")
            if kind in _KINDS:
                if kind != "null":
                    out.append(t)
            elif isinstance(kind, (str, list, dict)):
                stack.insert(0, kind)
            else:
                out.append(UNKNOWN)
    return out


def kind_of(node: Any) -> str:
    return node if isinstance(node, str) else str(node.get("type"))


def logical_of(node: Any) -> str | None:
    return node.get("logicalType") if isinstance(node, dict) else None


def satisfies(node: Any, want: Want) -> bool:
    kind, logical = kind_of(node), logical_of(node)
    if kind == "?" or want == "any":
        return True
    if want == "object":
        return kind in _OBJECTS
    if want == "array":
        return kind == "array"
    if want == "scalar":
        return kind not in _CONTAINERS
    if want == "string":
        return kind in ("string", "enum")
    if want == "number":
        if kind in ("bytes", "fixed"):
            return logical == "decimal"
        return kind in ("int", "long", "float", "double") and logical not in _DATE_TIME
    # timestamp
    if kind in ("int", "long"):
        return logical is None or logical in _POINTS_IN_TIME
    return kind == "string" or (kind == "double" and logical is None)


def describe(nodes: Sequence[Any]) -> str:
    """``an enum 'Status'``, ``a long (timestamp-millis)``, ``an array of record 'Item'``,
    ``a string or an int``: the non-null types given, for messages."""
    parts: list[str] = []
    for node in nodes:
        text = _name(node)
        if kind_of(node) in ("array", "map"):
            inner = node.get("items" if kind_of(node) == "array" else "values")
            inner_types = [
                t for t in (inner if isinstance(inner, list) else [inner]) if t != "null"
            ]
            text += " of " + " or ".join(_name(t) for t in inner_types)
        text = ("an " if text[0] in "aeiou" else "a ") + text
        if text not in parts:
            parts.append(text)
    return " or ".join(parts) if parts else "always null"


def _name(node: Any) -> str:
    """One type in a word or two: ``record 'Item'``, ``long (timestamp-millis)``, ``string``."""
    if isinstance(node, str):
        return node if node in _PRIMITIVES else f"'{node.rsplit('.', 1)[-1]}'"
    if not isinstance(node, dict):
        return "unknown type"
    kind, logical = kind_of(node), logical_of(node)
    if kind in NAMED:
        return f"{kind} '{str(node.get('name', '')).rsplit('.', 1)[-1]}'"
    if kind not in _KINDS:
        return _name(node.get("type")) if isinstance(node.get("type"), dict) else "unknown type"
    return f"{kind} ({logical})" if logical else kind


def field_names(node: Any) -> list[str]:
    return [f["name"] for f in node.get("fields") or () if isinstance(f, dict) and "name" in f]


def is_array(nodes: Iterable[Any]) -> bool:
    return any(kind_of(n) == "array" for n in nodes)


def read_as_text(node: Any) -> bool:
    """An int or long whose logical type (a date, time or timestamp) the decoder turns into text."""
    return kind_of(node) in ("int", "long") and logical_of(node) in _DATE_TIME
