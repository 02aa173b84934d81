"""YAML for configuration files: safe tags only, no duplicate keys, aliases within a budget.

PyYAML's ``safe_load`` keeps the last of two equal keys without a word, and it shares one object
between the uses of an alias, so a few hundred bytes of nested aliases ("billion laughs") load at
once and only blow up later, when interpolation and validation copy every shared value. Here the
document's node graph is checked before anything is built from it: each mapping's keys must be
distinct, nesting must stay shallow, and the document counted with every alias expanded must stay
under ``MAX_VALUES``. Counting is memoised per node, so it costs the size of the text, not of the
expansion.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from connector.errors import ConfigError

# Values (scalars, lists and mappings, keys included) in the document with every alias expanded.
# A large configuration has a few thousand; the 756-byte "billion laughs" has 9**9.
MAX_VALUES = 100_000
MAX_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_yaml(text: str, name: str = "the configuration") -> Any:
    """Parse one YAML document with the safe loader; ``ConfigError`` on a duplicate key, an alias
    cycle, excessive nesting or an expansion past ``MAX_VALUES``. ``name`` goes in messages."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError([("", f"{name} is nested too deeply")]) from None
        if node is None:
            return None
        _Budget(name).count(node, "", 0)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Budget:
    """One walk over the node graph: duplicate keys, cycles, depth and expanded size."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sizes: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
        self.open: set[int] = set()  # nodes being counted: meeting one again is a cycle

    def count(self, node: Node, path: str, depth: int) -> int:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            raise ConfigError([(path, "a YAML alias refers to a value that contains it")])
        if depth > MAX_DEPTH:
            raise ConfigError([(path, f"nested more than {MAX_DEPTH} levels deep")])
        self.open.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            for i, child in enumerate(node.value):
                total += self.count(child, f"{path}[{i}]", depth + 1)
        elif isinstance(node, MappingNode):
            total += self._mapping(node, path, depth)
        self.open.discard(key)
        if total > MAX_VALUES:
            raise ConfigError(
                [
                    (
                        path,
                        f"{self.name} expands to more than {MAX_VALUES:,} values through YAML "
                        "aliases ('*name'); refusing to load it (write the values out, or use "
                        "fewer nested aliases)",
                    )
                ]
            )
        self.sizes[key] = total
        return total

    def _mapping(self, node: MappingNode, path: str, depth: int) -> int:
        total = 0
        seen: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            child_path = path
            if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG:
                child_path = _join(path, key_node.value)
                line = key_node.start_mark.line + 1
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    first = seen[ident]
                    problem = (
                        f"duplicate key at line {line} (first at line {first}); YAML would keep "
                        "only the last one: remove one of them"
                    )
                    raise ConfigError([(child_path, problem)])
                seen[ident] = line
            total += self.count(key_node, child_path, depth + 1)
            total += self.count(value_node, child_path, depth + 1)
        return total
