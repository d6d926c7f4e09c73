"""Elastic LaME: the number of reason tokens k and the embedding size d, chosen per call.

A model trained with ``elastic_k`` (each training step reads the first k of its K reason tokens, the
embedding token(s) right after them: :mod:`lame.training.elastic`) embeds with any of those k; one
trained with ``matryoshka_dims`` (the contrastive loss on nested prefixes of the embedding,
:class:`lame.losses.MatryoshkaLoss`) gives embeddings whose first d values, re-normalised, are an
embedding of their own. Both lists are in the saved config; a fixed-K model is trained for its K and
its full size only, and any other value is refused (:func:`check_choice`).

Fewer reason tokens are taken out of an item's features (:func:`trim_reason_tokens`), before
batching: positions, attention and packing are then exactly those of a model with k reason tokens.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ..data.featurize import Features
from ..errors import InvalidInput


def check_choice(value: int | None, trained: list[int], default: int, name: str, what: str) -> int:
    """``value``, or ``default`` when None; refused (one line) when the model was not trained for it.
    ``name`` is the argument's name; ``what`` says what the model does, ``{}`` standing for the values."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) not in trained:
        listed = ", ".join(map(str, trained[:-1])) + " or " + str(trained[-1]) if len(trained) > 1 else str(trained[0])
        raise InvalidInput(f"{name}={value!r}: this model {what.format(listed)}")
    return int(value)


def trim_reason_tokens(features: Features, num_reason_tokens: int, num_embed_tokens: int, k: int) -> Features:
    """``features`` (ending with the K reason tokens and the embedding tokens) with only the first ``k``
    reason tokens kept, the embedding tokens right after them."""
    if k == num_reason_tokens:
        return features
    ids = features.input_ids
    block = len(ids) - num_reason_tokens - num_embed_tokens  # where the latent block starts
    return dataclasses.replace(features, input_ids=torch.cat([ids[: block + k], ids[len(ids) - num_embed_tokens:]]))


def truncate(embeddings, dimensions: int, normalize: bool):
    """The first ``dimensions`` values of each row (torch or numpy), re-normalised when ``normalize``."""
    if dimensions == embeddings.shape[-1]:
        return embeddings
    prefix = embeddings[..., :dimensions]
    if not normalize:
        return prefix
    if isinstance(prefix, np.ndarray):
        return prefix / np.maximum(np.linalg.norm(prefix, axis=-1, keepdims=True), 1e-12)
    return F.normalize(prefix, dim=-1)
