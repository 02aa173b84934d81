"""Check the record paths a mapping reads against the topic's Avro schema, before anything runs.

``check_paths(schema, uses)`` is the contract: ``schema`` is an Avro schema as parsed JSON (a
``.avsc`` file's or a registered schema's, raw or as fastavro parsed it), or ``None`` when the
topic has none (JSON); ``uses`` are ``PathUse`` entries. It returns one ``Problem`` per mistake,
in the order of ``uses``, each at its configuration key path (``where``) with the bad name and the
closest valid names at that level. Without a schema only the form of each path is checked.

Resolution follows what the decoder produces: nested records, unions (a path is valid when it is
valid in any branch; ``null`` is skipped), ``name[N]`` into arrays, any key into a map, named types
referenced by name, logical types. A type is checked against ``want`` in any non-null branch, so
the check never refuses a value the record can carry; a name the schema does not define is taken
as unknown, and anything goes below it.

What a mapping reads comes from the mapping language itself (``transforms.uses.path_uses``).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from connector.config import TopicSpec
from connector.transforms.avrotypes import (
    Names,
    branches,
    describe,
    field_names,
    is_array,
    kind_of,
    read_as_text,
    satisfies,
)
from connector.transforms.pathuse import PathUse
from connector.transforms.uses import path_uses

__all__ = ["PSEUDO_FIELDS", "Problem", "check_paths", "check_topic", "parse_path", "path_uses"]

# The record's own fields: what each gives, and what it serves as.
PSEUDO_FIELDS: dict[str, tuple[str, frozenset[str]]] = {
    "$key": ("the record key as text", frozenset({"any", "scalar", "string", "timestamp"})),
    "$timestamp": (
        "the record timestamp (epoch milliseconds)",
        frozenset({"any", "scalar", "number", "timestamp"}),
    ),
    "$topic": ("the topic name", frozenset({"any", "scalar", "string"})),
}
_SEGMENT = re.compile(r"([^\s.\[\]$][^\s.\[\]]*)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")
_ELEMENT = re.compile(r"^.*?mapping\[\d+\]")  # the mapping element a key path is in
_WANTED = {
    "number": "a number (int, long, float, double or decimal)",
    "string": "a string (or an enum)",
    "timestamp": "a timestamp (timestamp or date logical type, epoch int/long/double, string)",
    "array": "an array",
    "object": "a record or a map",
    "scalar": "a single value (not a record, map or array)",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake: the configuration key path, what is wrong and how to fix it.

    ``name`` is the bad name (a path segment, or the whole path when its form is wrong) and
    ``closest`` the valid names at that level that resemble it, best first.
    """

    where: str
    message: str
    name: str | None = None
    closest: tuple[str, ...] = ()

    def as_pair(self) -> tuple[str, str]:
        """``(key path, message)``, the form ``ConfigError`` carries."""
        return self.where, self.message


# ----- paths -------------------------------------------------------------------------------------


def parse_path(path: str) -> list[tuple[str, tuple[int, ...]]] | None:
    """``"a.b[0][1].c"`` -> ``[("a", ()), ("b", (0, 1)), ("c", ())]``; ``None`` when the text is
    not a path (spaces, empty segments, a misplaced ``$`` or bracket). Pseudo-fields are not
    parsed here."""
    out: list[tuple[str, tuple[int, ...]]] = []
    for segment in path.split("."):
        m = _SEGMENT.fullmatch(segment)
        if m is None:
            return None
        out.append((m.group(1), tuple(int(i) for i in _INDEX.findall(m.group(2)))))
    return out


def _closest(name: str, valid: list[str]) -> tuple[str, ...]:
    """The valid names that resemble ``name`` (difflib, ratio 0.6 or more), best first, and only
    those about as close as the best: 'event_time' for 'event_tme', not 'event_name' too."""
    found = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    if not found:
        return ()
    scores = [difflib.SequenceMatcher(None, name, f).ratio() for f in found]
    return tuple(f for f, score in zip(found, scores, strict=True) if score >= scores[0] - 0.08)


def _const_hint(path: str) -> str:
    return f"for a fixed value write {{const: {json.dumps(path)}}}"


@dataclass(frozen=True, slots=True)
class _Miss:
    """Where resolving a path stopped: the prefix that failed, the bad name, and the message."""

    prefix: str
    name: str
    message: str
    closest: tuple[str, ...] = ()


def _resolve(
    start: list[Any], segments: list[tuple[str, tuple[int, ...]]], names: Names, base: str
) -> list[Any] | _Miss:
    """The types found at ``segments`` from the types ``start``, or where resolution failed."""
    current, done = start, base
    for name, indexes in segments:
        found: list[Any] = []
        valid: list[str] = []
        for node in current:
            kind = kind_of(node)
            if kind in ("map", "?"):
                found.extend(branches(node.get("values"), names) if kind == "map" else [node])
            elif kind in ("record", "error"):
                fields = field_names(node)
                valid.extend(f for f in fields if f not in valid)
                for field in node.get("fields") or ():
                    if isinstance(field, dict) and field.get("name") == name:
                        found.extend(branches(field.get("type"), names))
        here = f"{done}.{name}" if done else name
        if not found:
            if not valid:
                at = (
                    f"'{done}' is {describe(current)}"
                    if done
                    else "the record value is not a record"
                )
                hint = f"; to read an item write '{done}[0].{name}'" if is_array(current) else ""
                return _Miss(here, name, f"{at}, with no field '{name}'{hint}")
            closest = _closest(name, valid)
            level = f"in '{done}'" if done else "at the top level of the record"
            if closest:
                fix = "did you mean " + " or ".join(f"'{c}'" for c in closest) + "?"
            else:
                shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
                fix = f"fields there: {shown}"
            return _Miss(here, name, f"no field '{name}' {level}; {fix}", closest)
        current, done = found, here
        for index in indexes:
            items = [n for n in current if kind_of(n) in ("array", "?")]
            if not items:
                return _Miss(
                    f"{done}[{index}]",
                    f"{name}[{index}]",
                    f"'{done}' is {describe(current)}, not an array",
                )
            current = [
                b
                for n in items
                for b in (branches(n["items"], names) if kind_of(n) == "array" else [n])
            ]
            done = f"{done}[{index}]"
    return current


def check_paths(schema: Any | None, uses: Iterable[PathUse]) -> list[Problem]:
    """Every problem of ``uses`` against ``schema`` (``None``: the form of each path only).

    A use that names a bad source itself (``from: custmer``) is reported; the uses of the same
    mapping element below it (the ``include`` keys under that ``from``) are not reported again.
    """
    names = Names(schema) if schema is not None else None
    root = branches(schema, names) if names is not None else []
    problems: list[Problem] = []
    failed: set[tuple[str, str]] = set()  # (mapping element, path) of bad sources
    for use in uses:
        problem = _check_one(use, root, names, failed)
        if problem is not None and problem not in problems:
            problems.append(problem)
    return problems


def _check_one(
    use: PathUse, root: list[Any], names: Names | None, failed: set[tuple[str, str]]
) -> Problem | None:
    where, path, want = use.where, use.path, use.want
    if path in PSEUDO_FIELDS:  # of the record itself, wherever it is used
        have, serves = PSEUDO_FIELDS[path]
        if want in serves:
            return None
        return Problem(where, f"'{path}' is {have}, but {_role(where)} needs {_WANTED[want]}", path)
    segments = parse_path(path)
    if segments is None:
        what = (
            "an unknown pseudo-field (use $key, $timestamp or $topic)"
            if path.startswith("$")
            else ("not a field path (dot-separated names; 'name[N]' for an array item)")
        )
        return Problem(where, f"{json.dumps(path)} is {what}; {_const_hint(path)}", path)
    start, base = root, ""
    if use.item_of is not None:
        outer = parse_path(use.item_of)
        if outer is None:
            return Problem(
                where, f"{json.dumps(use.item_of)} is not a path to an array", use.item_of
            )
        if names is None:
            return None
        found = _resolve(root, outer, names, "")
        if isinstance(found, _Miss):
            return _miss_problem(use, found, failed)
        arrays = [n for n in found if kind_of(n) in ("array", "?")]
        if not arrays:
            return Problem(
                where,
                f"'{use.item_of}' is {describe(found)}, not an array; its items cannot be read",
                use.item_of,
            )
        start = [
            b
            for n in arrays
            for b in (branches(n["items"], names) if kind_of(n) == "array" else [n])
        ]
        base = f"{use.item_of}[]"
    if names is None:
        return None
    found = _resolve(start, segments, names, base)
    if isinstance(found, _Miss):
        return _miss_problem(use, found, failed)
    if found and not any(satisfies(n, want) for n in found):
        shown = f"{base}.{path}" if base else path
        have = describe(found)
        if want == "number" and any(read_as_text(n) for n in found):
            have += ", which the connector reads as ISO 8601 text"
        return Problem(
            where, f"'{shown}' is {have}, but {_role(where)} needs {_WANTED[want]}", path
        )
    return None


def _role(where: str) -> str:
    """The key a use sits at, for messages: ``...fields.total.sum`` -> ``sum``."""
    return re.sub(r"\[\d+\]$", "", where.rsplit(".", 1)[-1])


def _miss_problem(use: PathUse, miss: _Miss, failed: set[tuple[str, str]]) -> Problem | None:
    """The problem for a path that does not resolve; a word where a value was meant (one
    segment, a value wanted) may have been meant as text, so the hint says how to write that."""
    element = _ELEMENT.match(use.where)
    key = (element.group(0) if element else "", miss.prefix)
    if key in failed:
        return None  # below a bad source of the same element, reported at the source
    if use.item_of is None and use.path == miss.prefix:
        failed.add(key)
    message = miss.message
    if (
        use.item_of is None
        and not miss.closest
        and _SEGMENT.fullmatch(use.path)
        and (use.want in ("string", "scalar"))
    ):
        message += f" ({_const_hint(use.path)})"
    return Problem(use.where, message, miss.name, miss.closest)


def check_topic(topic: TopicSpec, index: int, schema: Any | None) -> list[Problem]:
    """Every problem of topic number ``index``'s mapping against ``schema`` (``None``: forms only).
    A topic transformed by code reads what it likes: nothing to check."""
    mapping = topic.transform.mapping
    if mapping is None:
        return []
    uses = [
        use
        for j, spec in enumerate(mapping)
        for use in path_uses(spec, f"topics[{index}].transform.mapping[{j}]")
    ]
    return check_paths(schema, uses)
