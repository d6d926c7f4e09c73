"""``config.variant`` -> model class.

Classes are named by module path and imported on first lookup, so this registry imports no model
module: ``lame.py`` looks variants up here without importing the baselines, which import ``lame.py``.
"""

from __future__ import annotations

from importlib import import_module

VARIANTS: dict[str, str] = {
    "lame": ".lame:LaMEModel",
    "sequential": ".baselines:SequentialLatentModel",
    "cot": ".baselines:ExplicitCoTModel",
}


def variant_class(variant: str) -> type:
    """The model class of a variant (``lame``, ``sequential``, ``cot``)."""
    try:
        target = VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(sorted(VARIANTS))}") from None
    module, _, name = target.partition(":")
    return getattr(import_module(module, __package__), name)
