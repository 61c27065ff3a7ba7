"""Optional dependencies live behind extras; asking for one that is missing names the extra."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from .errors import UsageError


def _missing(module: str, extra: str) -> UsageError:
    return UsageError(f"this needs the {module!r} package: pip install 'safeset[{extra}]'")


def import_optional(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise _missing(module, extra) from None


def package_dir(module: str, extra: str) -> Path:
    """The installed directory of a package, without importing it (for data files it ships)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(module, extra)
    return Path(next(iter(spec.submodule_search_locations)))
