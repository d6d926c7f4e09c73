"""Offline benchmarks built from data that ships with the installed packages (no download).

* :func:`generate_digits_benchmark`: reasoning-over-images retrieval on scikit-learn's handwritten digits
  (see :mod:`lame.benchmarks.digits`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["generate_digits_benchmark"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m lame.benchmarks.digits` does not import the module twice (runpy warning).
    if name == "generate_digits_benchmark":
        from .digits import generate_digits_benchmark

        return generate_digits_benchmark
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
