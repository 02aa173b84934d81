"""Finding user transforms: by ``package.module:attr`` path or by entry-point name.

Everything here runs once at start-up and fails with a ``ConfigError`` that names the key to fix
and says what exactly went wrong: the module is missing, the module itself failed to import, the
attribute is missing, or (for entry points) which names are installed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from connector.errors import ConfigError

if TYPE_CHECKING:
    from connector.config import TransformSpec
    from connector.transforms import Record

GROUP: Final = "moengage_connector.transforms"


def add_search_dir(directory: Path) -> None:
    """Put ``directory`` first on ``sys.path`` (once), as ``PYTHONPATH=directory`` would.

    The configuration file's directory goes there, so a transform package kept next to the
    configuration imports without installing it or setting ``PYTHONPATH``. It stays for the
    process's life: a transform may import its siblings lazily, while records are processed.
    """
    entry = str(directory.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)


def import_string(path: str, *, key_path: str, search_dir: Path | None = None) -> Any:
    """Import ``package.module:attr`` (``attr`` may be dotted) and return the attribute.

    ``search_dir`` (the configuration's directory) is searched first, then the installed packages.
    """
    module_name, _, attr_path = path.partition(":")
    if not module_name or not attr_path:
        raise ConfigError([(key_path, f"{path!r} must look like 'package.module:function'")])
    if search_dir is not None:
        add_search_dir(search_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            problem = f"module {module_name!r} not found (is it installed and importable?)"
            if search_dir is not None:
                problem = (
                    f"module {module_name!r} not found next to the configuration "
                    f"({search_dir.resolve()}) nor among the installed packages"
                )
            raise ConfigError([(key_path, problem)]) from None
        problem = f"importing module {module_name!r} failed: {e}"
        raise ConfigError([(key_path, problem)]) from e
    except Exception as e:
        problem = f"importing module {module_name!r} raised {type(e).__name__}: {e}"
        raise ConfigError([(key_path, problem)]) from e
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            problem = f"module {module_name!r} has no attribute {attr_path!r}"
            raise ConfigError([(key_path, problem)]) from None
    return obj


def available_entry_points(group: str = GROUP) -> list[str]:
    """Names installed in the entry-point ``group``, sorted."""
    return sorted(entry_points(group=group).names)


def load_entry_point(name: str, *, key_path: str, group: str = GROUP) -> Any:
    """Load the object registered as ``name`` in ``group``; a miss lists the installed names."""
    matches = list(entry_points(group=group, name=name))
    if not matches:
        names = ", ".join(available_entry_points(group)) or "none are installed"
        problem = f"no transform named {name!r} in entry point group {group!r}; available: {names}"
        raise ConfigError([(key_path, problem)])
    ep = matches[0]
    try:
        return ep.load()
    except Exception as e:
        problem = f"entry point {name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}"
        raise ConfigError([(key_path, problem)]) from e


def resolve(
    spec: TransformSpec, *, key_path: str, search_dir: Path | None = None
) -> tuple[str, Callable[[Record], object]]:
    """The display name and the callable for a ``function`` or ``entry_point`` spec.

    A ``function`` is looked up in ``search_dir`` (the configuration's directory) first.

    With ``options`` the resolved object is a factory, called once here with ``**options``; it
    must return the transform. Without, the resolved object is the transform itself.
    """
    if spec.function is not None:
        name, where = spec.function, f"{key_path}.function"
        obj = import_string(spec.function, key_path=where, search_dir=search_dir)
    elif spec.entry_point is not None:
        name, where = spec.entry_point, f"{key_path}.entry_point"
        obj = load_entry_point(spec.entry_point, key_path=where)
    else:
        raise ValueError("resolve() takes a 'function' or 'entry_point' spec, not a mapping")
    if spec.options is not None:
        if not callable(obj):
            problem = f"{name} is a {type(obj).__name__}, not a factory that takes options"
            raise ConfigError([(where, problem)])
        try:
            obj = obj(**spec.options)
        except Exception as e:
            problem = f"factory {name} raised {type(e).__name__}: {e}"
            raise ConfigError([(f"{key_path}.options", problem)]) from e
        if not callable(obj):
            problem = f"factory {name} returned a {type(obj).__name__}, not a callable transform"
            raise ConfigError([(f"{key_path}.options", problem)])
    elif not callable(obj):
        problem = f"{name} is a {type(obj).__name__}, not a callable transform"
        raise ConfigError([(where, problem)])
    return name, obj
