"""The reason tokens and embedding size to embed with, as command-line options (``lame encode``, ``lame
search``, ``lame serve``), declared once; the values are checked against the model's config
(:mod:`lame.modeling.elastic`). Imports neither torch nor transformers."""

from __future__ import annotations

from dataclasses import dataclass, field

from .cli_options import option


@dataclass(frozen=True)
class ElasticOptions:
    """k and d for a model trained with ``elastic_k`` / ``matryoshka_dims`` (a fixed model: its K, full size);
    None: the model's K and full size (a verb shows its own default)."""

    DEFAULTS = {"num_reason_tokens": "the model's K", "dimensions": "the full size"}  # shown in --help

    num_reason_tokens: int | None = field(default=None, metadata=option(
        "reason tokens k to embed with, one the model was trained for (its config's elastic_k)"))
    dimensions: int | None = field(default=None, metadata=option(
        "embedding size d, one the model was trained for (its config's matryoshka_dims)"))
