"""Stopping a run whose loss, gradient norm or weights turn NaN or infinite: every process together,
before anything non-finite is applied or saved, with one line naming the last good checkpoint."""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from . import checkpoint as ckpt
from .collectives import global_sum
from .recipe import StageSpec


class TrainingDiverged(UserError, RuntimeError):
    """The loss, the gradient norm or the weights became NaN or infinite. Raised on every process
    together (``every_process``); nothing non-finite was saved, and the message names the last good
    checkpoint."""

    every_process = True


def nonfinite_weights(model, trainable_only: bool = True) -> list[str]:
    """Names of this process's parameters holding NaN or inf, looking at what the process holds: the
    whole tensor (replicated, ZeRO-2), its FSDP shard or its ZeRO-3 partition."""
    bad = []
    for name, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        local = getattr(p, "ds_tensor", None)  # ZeRO-3 partition
        if local is None:
            local = p.to_local() if hasattr(p, "to_local") else p  # FSDP2 DTensor shard
        if local.numel() and not bool(torch.isfinite(local.detach()).all()):
            bad.append(name)
    return bad


def loss_text(losses) -> str:
    return (f"{losses.total:.4g} (contrastive {losses.contrastive:.4g}, reconstruction {losses.reconstruction:.4g}, "
            f"diversity {losses.diversity:.4g})")


class DivergenceGuard:
    """The checks of one training step. Each is a collective: a problem on any process raises
    :class:`TrainingDiverged` on every process. ``history`` is the run's
    :class:`~lame.training.resume.History` (read when a check fails)."""

    def __init__(self, history, mixed_precision: str):
        self.history = history
        self.mixed_precision = mixed_precision

    def check_loss(self, losses, stage: StageSpec, step: int) -> None:
        """Before the optimizer step ``step``: a NaN/inf loss on any process stops every process."""
        if global_sum([0 if math.isfinite(losses.total) else 1])[0]:
            self.diverged(stage, step, f"the loss is {loss_text(losses)}", applied=False)

    def check_gradient_norm(self, norm: float | None, losses, stage: StageSpec, step: int,
                            loss_scaled: bool) -> None:
        """After the strategy's step ``step``: a non-finite global gradient norm was not applied; stop
        everywhere. (Under fp16 loss scaling, ``loss_scaled``, an overflow is a skipped step instead.)"""
        bad = norm is not None and not math.isfinite(norm) and not loss_scaled
        if global_sum([1 if bad else 0])[0]:  # the norm is global already; this keeps the stop lockstep
            self.diverged(stage, step, f"the gradient norm is {norm:g} (loss {loss_text(losses)})", applied=False)

    def check_weights(self, model, stage: StageSpec, step: int, before: str) -> None:
        """After step ``step``, before ``before`` writes anything: NaN/inf weights on any process stop
        every process, unsaved."""
        bad = nonfinite_weights(model)
        if global_sum([len(bad)])[0]:
            names = f" ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})" if bad else ""
            self.diverged(stage, step, f"weights are not finite{names} after the step, before {before}", applied=True)

    def diverged(self, stage: StageSpec, step: int, what: str, applied: bool) -> None:
        """Raises :class:`TrainingDiverged`: one line with the step, what was not finite, and how to go on."""
        last, history = self.history.last, self.history
        rates = ", ".join(f"{g.lr:g}" for g in stage.trainable)
        lower = ("use bf16 instead of fp16 or lower the learning rate" if self.mixed_precision == "fp16"
                 else "lower the learning rate") + f" (now {rates})"
        kept = f"{'' if applied else 'the step was not applied and '}nothing was saved"
        text = f"training diverged at step {step} (stage {stage.name!r})"
        if last is not None and last == history.resumed_from and step == history.resumed_step + 1:
            raise TrainingDiverged(
                f"{text}, the first step after resuming from {last}: {what}; {kept}. The weights of that "
                f"checkpoint are finite but already lead to non-finite values: delete it and resume from an "
                f"earlier checkpoint, or start again; and {lower}")
        if last is None:
            raise TrainingDiverged(f"{text}: {what}; {kept}, and no checkpoint was written before. "
                                   f"To go on, {lower} and start again")
        started = (f" (step {step} started from its weights: should the resumed run diverge at once, delete it and "
                   f"resume from an earlier one)" if last.name == f"{ckpt.PREFIX}{step - 1:06d}" else "")
        raise TrainingDiverged(f"{text}: {what}; {kept}. Last good checkpoint: {last}. To go on, {lower} and "
                               f"continue from it with --resume{started}")
