"""The LaME training objective in one place: its weights, its terms and their weighted total.

::

    L = w_c * L_contrastive + w_r * L_reconstruction + w_d * L_diversity

* ``L_contrastive``: InfoNCE over the global batch (:func:`lame.losses.info_nce`, gathered); with the
  config's ``symmetric_contrastive``, the mean of the query-to-target and target-to-query directions;
  with ``matryoshka_dims``, its mean over those embedding sizes (:class:`lame.losses.MatryoshkaLoss`).
* ``L_reconstruction``: the decoder head's token cross-entropy, averaged over every decoder target
  token of the global batch; for the explicit-CoT baseline, plus the cross-entropy of its rationale
  tokens averaged over every rationale token of the global batch (teacher forcing).
* ``L_diversity``: :func:`lame.losses.diversity_loss` averaged over the global batch's queries.

The weights come from :func:`loss_weights` (a stage's own values, else the model config's).

**Shares.** A training step may see only part of the global batch: W processes each hold a slice,
and GradCache runs the queries in chunks. Every piece adds its SHARE, scaled so that the mean of
the W processes' gradients is the gradient of ``L``: the contrastive loss (already global) times W,
and a side term as this piece's sum times W over the global count (:class:`Normalizers`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import LaMEConfig
from ..losses import MatryoshkaLoss, diversity_loss, info_nce, world_size
from .collectives import global_sum


@dataclass(frozen=True)
class LossWeights:
    """The weights of the three terms (a stage's: :func:`loss_weights`)."""

    contrastive: float = 1.0
    reconstruction: float = 1.0
    diversity: float = 0.0

    def combine(self, contrastive, reconstruction, diversity):
        """The weighted total (tensors or floats)."""
        return self.contrastive * contrastive + self.reconstruction * reconstruction + self.diversity * diversity


def loss_weights(config: LaMEConfig, stage=None) -> LossWeights:
    """The weights a stage trains with: the stage's own ``contrastive_weight``,
    ``reconstruction_weight`` and ``diversity_weight`` where it sets them (not None), otherwise the
    model config's ``reconstruction_weight`` and ``diversity_weight`` (contrastive: 1)."""
    defaults = {"contrastive": 1.0, "reconstruction": config.reconstruction_weight,
                "diversity": config.diversity_weight}
    chosen = {}
    for name, default in defaults.items():
        value = getattr(stage, f"{name}_weight", None)
        chosen[name] = default if value is None else float(value)
    return LossWeights(**chosen)


@dataclass
class StepLosses:
    """One step's global loss values, for logging."""

    contrastive: float
    reconstruction: float
    diversity: float
    total: float


@dataclass
class Normalizers:
    """Global (all-process) counts that turn this process's sums into shares of the global means.

    Each process's term is ``sum_local * world / count_global``; averaging gradients over the
    processes then gives the gradient of ``sum_global / count_global``, the single-process loss.
    """

    decoder_tokens: int
    lm_tokens: int
    queries: int
    world: int


class LaMELoss:
    """The objective of one model under fixed weights; both step paths (whole batch, GradCache) use it.

    ``lockstep``: every process must run the same passes through the same modules (sharded
    parameters); a piece without decoder targets then still runs the decoder, with weight zero.
    """

    def __init__(self, model, weights: LossWeights, lockstep: bool = False):
        self.model = model
        self.weights = weights
        self.lockstep = lockstep

    def normalizers(self, batch) -> Normalizers:
        """The global counts of ``batch`` (a :class:`lame.training.steps.TrainBatch`); one collective."""
        decoder_tokens = 0
        if self.model.decoder_head is not None:
            decoder_tokens = self.model.decoder_head.count_target_tokens([t for t in batch.targets if t])
        lm_tokens = sum(getattr(f, "lm_tokens", 0) for f in batch.queries)
        counts = global_sum([decoder_tokens, lm_tokens, len(batch.queries)])
        return Normalizers(int(counts[0]), int(counts[1]), int(counts[2]), world_size())

    def contrastive(self, queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None,
                    labels: torch.Tensor | None) -> torch.Tensor:
        """InfoNCE of the global batch from this process's (B, D) queries and flat positives and
        negatives (query i's j-th at ``i * P + j``)."""
        size = queries.shape[0]
        positives = positives.reshape(size, -1, positives.shape[-1])
        if negatives is not None and negatives.shape[0]:
            negatives = negatives.reshape(size, -1, negatives.shape[-1])
        else:
            negatives = None
        config = self.model.config
        loss = MatryoshkaLoss(info_nce, config.matryoshka_dims or [queries.shape[-1]], normalize=config.normalize)
        return loss(queries, positives, negatives, temperature=config.temperature, labels=labels,
                    symmetric=config.symmetric_contrastive)

    def side_terms(self, out, targets: list[str | None], norm: Normalizers) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and diversity shares of the queries of ``out`` (the model's output on
        them), whose decoder targets are ``targets`` (None: no reconstruction for that query)."""
        zero = out.embeddings.new_zeros(())
        reconstruction = diversity = zero
        head = self.model.decoder_head
        states = out.decoder_states(self.model.config.decoder_reads)
        # with no reason token (an elastic model's k = 0, the same on every process) the decoder has nothing to read
        if self.weights.reconstruction and head is not None and norm.decoder_tokens and states.shape[1]:
            rows = [i for i, target in enumerate(targets) if target]
            if rows:
                total, _ = head.loss_terms(states[rows], [targets[i] for i in rows])
                reconstruction = total * norm.world / norm.decoder_tokens
            elif self.lockstep:  # the other processes run the decoder now: join with weight zero
                reconstruction = head.loss_terms(states[:1], [""])[0] * 0.0
        if self.weights.reconstruction and out.lm_loss is not None and norm.lm_tokens:
            # the explicit-CoT baseline: its summed rationale cross-entropy
            reconstruction = reconstruction + out.lm_loss * norm.world / norm.lm_tokens
        if self.weights.diversity and out.reason_states.shape[1] > 1:
            diversity = diversity_loss(out.reason_states) * out.embeddings.shape[0] * norm.world / norm.queries
        return reconstruction, diversity

    def share(self, contrastive=0.0, reconstruction=0.0, diversity=0.0):
        """What this process backpropagates: the weighted total with the (global) contrastive loss
        times the number of processes and the side terms as the shares :meth:`side_terms` gives."""
        return self.weights.combine(contrastive * world_size(), reconstruction, diversity)

    def report(self, contrastive, reconstruction, diversity) -> StepLosses:
        """The global loss values from the contrastive loss and this process's summed side shares."""
        c, r, d = (float(x.detach()) if torch.is_tensor(x) else float(x)
                   for x in (contrastive, reconstruction, diversity))
        r, d = (v / world_size() for v in global_sum([r, d]))
        return StepLosses(c, r, d, self.weights.combine(c, r, d))
