"""Lazy package exports (PEP 562): a package names its public objects without importing their modules.

``import lame.serve.settings`` or ``lame --help`` then does not load torch, transformers or FastAPI
through the package's ``__init__``; ``from lame.serve import create_app`` imports the module on first use.
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a public name to its submodule."""

    def __getattr__(name: str):
        submodule = exports.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        setattr(importlib.import_module(package), name, value)  # later lookups do not come back here
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return __getattr__, __dir__
