"""Lazy exports of a package (PEP 562): its public names imported from their modules on first use.

Why: a package ``__init__`` that imports its modules eagerly makes importing any one of them cost
all of them; ``attnmap.wsi``'s pulled OpenCV, torch and timm into ``attnmap wsi run --help``, which
only needs the configuration's dataclasses. `attnmap` itself exports its API this way.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: a name of ``exports`` (name → module) is imported
    from its module on first use and kept in the package; another public name is tried as a
    submodule (``attnmap.wsi.tissue`` as an attribute, as the eager package had it imported)."""

    def module_getattr(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            setattr(sys.modules[package], name, value)  # found directly from now on
            return value
        if not name.startswith("_"):
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as error:
                if error.name != f"{package}.{name}":
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def module_dir() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return module_getattr, module_dir
