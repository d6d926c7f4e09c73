"""The LaME training objective on one batch: encode queries and candidates, then combine the losses."""

from __future__ import annotations

import torch

from .losses import LossParts, combine, diversity_loss, info_nce


def lame_loss(
    model,
    queries: dict[str, torch.Tensor],
    positives: dict[str, torch.Tensor],
    negatives: dict[str, torch.Tensor] | None = None,
    decoder_targets: list[str] | None = None,
    labels: torch.Tensor | None = None,
    gather: bool = True,
) -> LossParts:
    """Contrastive + reconstruction + diversity for collated batches of B queries, B*P positives and
    B*N hard negatives (item j of query i at row i*P + j). ``decoder_targets`` holds one text per
    query (the answer, or the full target text); the decoder reads the queries' reason states only."""
    config = model.config
    q = model(queries)
    batch = q.embeddings.shape[0]
    pos = model(positives).embeddings.reshape(batch, -1, q.embeddings.shape[-1])
    neg = None
    if negatives is not None:
        neg = model(negatives).embeddings.reshape(batch, -1, q.embeddings.shape[-1])
    contrastive = info_nce(q.embeddings, pos, neg, temperature=config.temperature, labels=labels, gather=gather)
    reconstruction = None
    if model.decoder_head is not None and decoder_targets is not None and config.reconstruction_weight:
        reconstruction = model.reconstruction_loss(q.decoder_states(config.decoder_reads), decoder_targets)
    diversity = diversity_loss(q.reason_states) if config.diversity_weight else None
    return combine(contrastive, reconstruction, diversity, config.reconstruction_weight, config.diversity_weight)
