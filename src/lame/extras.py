"""Optional extras: the features that need more than the core install, and the error naming the extra.

The core install (``pip install lame``) builds, trains, evaluates and embeds. The rest is in extras:

* ``serve``: ``lame serve`` and ``lame bench serve`` (fastapi, uvicorn, httpx, prometheus-client);
* ``index``: ``lame index``, ``lame search`` and ``lame serve --index`` (faiss-cpu);
* ``plots``: the loss-curve PNG, the quickstart and speed figures, TensorBoard logs (matplotlib,
  tensorboard);
* ``deepspeed``: ``train.strategy: deepspeed`` (ZeRO-2/3);
* ``st``: loading a saved folder with ``sentence_transformers.SentenceTransformer`` (sentence-transformers);
* ``mteb``: :mod:`lame.integrations.mteb`, evaluation with the ``mteb`` package (MTEB, MIEB, MMEB);
* ``all``: every extra above (``dev`` adds the test tools).

:func:`require` is for features that cannot run without their extra (an :class:`ImportError` naming
it); :func:`optional` for by-products that are skipped with a one-line note (plots, TensorBoard).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from .errors import UserError


class MissingExtra(UserError, ImportError):
    """A feature's optional dependency is not installed; ``extra`` names the pip extra that brings it."""

    def __init__(self, message: str, *, extra: str, name: str | None = None):
        super().__init__(message, name=name)
        self.extra = extra


def install_hint(extra: str) -> str:
    return f"pip install 'lame[{extra}]'"


def require(*modules: str, extra: str, feature: str) -> ModuleType:
    """Imports ``modules`` in order and returns the last; a missing one raises :class:`MissingExtra`.

    ``require("faiss", extra="index", feature="lame index")`` fails with
    ``lame index needs the 'index' extra: pip install 'lame[index]' (No module named 'faiss')``.
    """
    module = None
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise MissingExtra(f"{feature} needs the {extra!r} extra: {install_hint(extra)} ({exc})",
                               extra=extra, name=name) from exc
    return module


def optional(module: str, *, extra: str, feature: str) -> ModuleType | None:
    """The module, or None after a one-line note on stderr that ``feature`` is skipped without ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        print(f"lame: {feature} skipped: it needs the {extra!r} extra ({install_hint(extra)})", file=sys.stderr)
        return None


def pyplot(feature: str) -> ModuleType | None:
    """``matplotlib.pyplot`` on the file-only Agg backend, or None (with a note) without the ``plots`` extra."""
    matplotlib = optional("matplotlib", extra="plots", feature=feature)
    if matplotlib is None:
        return None
    matplotlib.use("Agg")
    return optional("matplotlib.pyplot", extra="plots", feature=feature)
