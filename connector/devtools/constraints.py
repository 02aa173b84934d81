"""``make constraints``: pin every runtime and dev dependency to the version this environment has.

Reads the requirements (with the ``dev`` extra) from ``pyproject.toml``, follows them through the
installed distributions' metadata, and prints ``name==version`` lines for the whole closure,
sorted: the ``constraints.txt`` that ``make setup`` and the Dockerfile pass to pip with ``-c`` (a
constraint pins a package's version; it installs nothing by itself). Environment markers are
evaluated for this interpreter, so a dependency needed only on another Python version is left
unpinned (pip then picks it freely).
"""

from __future__ import annotations

import sys
import tomllib
from collections import deque
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADER = """\
# Every runtime and dev dependency of moengage-kafka-connector, pinned to the versions tested,
# for pip's -c (make setup, the Dockerfile): a constraint pins, it installs nothing by itself.
# Regenerate after upgrading .venv: `make constraints` (python -m connector.devtools.constraints).
"""


def _applies(req: Requirement, extras: frozenset[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras | {""})


def pins(pyproject: Path, extras: frozenset[str] = frozenset({"dev"})) -> dict[str, str]:
    """{distribution name: installed version} for the requirements' whole closure."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    roots = list(project["dependencies"])
    for extra in extras:
        roots += project.get("optional-dependencies", {}).get(extra, [])
    queue = deque(Requirement(r) for r in roots)
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    missing: list[str] = []
    while queue:
        req = queue.popleft()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            missing.append(req.name)
            continue
        found[dist.metadata["Name"]] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            if _applies(sub, frozenset(req.extras)):
                queue.append(Requirement(str(sub).split(";")[0]))
    if missing:
        raise SystemExit(f"not installed here: {', '.join(sorted(missing))} (run make setup)")
    return found


def render(found: dict[str, str]) -> str:
    lines = [f"{name}=={version}" for name, version in sorted(found.items(), key=_sort_key)]
    return HEADER + "\n".join(lines) + "\n"


def _sort_key(item: tuple[str, str]) -> str:
    return canonicalize_name(item[0])


def main() -> int:
    root = Path(__file__).resolve().parents[2]
    sys.stdout.write(render(pins(root / "pyproject.toml")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
