"""The trainer's checkpoints: what ``train.save_every`` writes (the model, the optimizer, the run's
progress, data position and schedule, every process's RNG; files in :mod:`lame.training.checkpoint`)
and what ``--resume`` reads back."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import InvalidInput
from ..modeling import LaMEModel
from . import checkpoint as ckpt
from .divergence import nonfinite_weights
from .parallel import quiet_deepspeed_import
from .recipe import StageSpec

STATE_FILE = "trainer_state.json"


@dataclass
class Progress:
    stage_index: int = 0
    step_in_stage: int = 0  # completed steps of the current stage
    global_step: int = 0
    skipped: int = 0  # samples skipped so far, over all processes


@dataclass
class ResumePoint:
    """A checkpoint to resume from and the trainer state it holds."""

    directory: Path
    progress: Progress
    sampler: dict  # MixtureSampler.state_dict()
    scheduler: dict  # the learning-rate scheduler's state_dict()

    @classmethod
    def latest(cls, checkpoints: Path) -> "ResumePoint | None":
        """The newest checkpoint under ``checkpoints``, or None when there is none."""
        directory = ckpt.latest_checkpoint(checkpoints)
        if directory is None:
            return None
        state = json.loads((directory / STATE_FILE).read_text())
        return cls(directory, Progress(**state["progress"]), state["sampler"], state["scheduler"])

    def load_model(self) -> LaMEModel:
        """The checkpoint's model in float32 (it holds float32 master weights beside ``model.dtype`` ones);
        InvalidInput when a weight is not finite (written before checkpoints were checked, or by something else)."""
        with quiet_saving():
            model = LaMEModel.from_pretrained(self.directory / "model", dtype=torch.float32)
        bad = nonfinite_weights(model, trainable_only=False)
        if bad:
            raise InvalidInput(f"--resume: {self.directory} holds non-finite weights ({len(bad)} tensors, "
                               f"e.g. {bad[0]}); delete it to resume from an earlier checkpoint, or start over")
        return model

    def restore_stage(self, strategy, model, optimizer, scheduler, rank: int) -> None:
        """The optimizer state, schedule and this process's RNG of the stage the checkpoint is in."""
        strategy.load_optimizer(model, optimizer, self.directory)
        scheduler.load_state_dict(self.scheduler)
        ckpt.load_rng(self.directory, rank)


@dataclass
class History:
    """This run's checkpoints, for the advice of :class:`~lame.training.divergence.TrainingDiverged`."""

    resumed_from: Path | None = None  # the checkpoint this run started from
    resumed_step: int | None = None  # ... and its global step
    last: Path | None = None  # the last good checkpoint (written or resumed from)


def use_recipe_rates(stage: StageSpec, optimizer, scheduler) -> list[str]:
    """Gives a resumed stage the recipe's learning rates, weight decays and AdamW epsilons, not the
    checkpoint's (lowering the learning rate and resuming is how a diverged run continues); returns
    what changed, e.g. ``["trainable[0].lr 0.001 -> 0.0001"]``."""
    base_lrs = list(getattr(scheduler, "base_lrs", []))
    changed = []
    for i, (group, spec) in enumerate(zip(optimizer.param_groups, stage.trainable)):
        old_lr = base_lrs[i] if i < len(base_lrs) else group.get("initial_lr", spec.lr)
        if old_lr != spec.lr:
            changed.append(f"trainable[{i}].lr {old_lr:g} -> {spec.lr:g}")
        for key in ("weight_decay", "eps"):
            if group.get(key) != getattr(spec, key):
                changed.append(f"trainable[{i}].{key} {group.get(key):g} -> {getattr(spec, key):g}")
    if not changed:
        return changed
    scheduler.base_lrs = [spec.lr for spec in stage.trainable]
    lambdas = getattr(scheduler, "lr_lambdas", None)
    for i, (group, spec) in enumerate(zip(optimizer.param_groups, stage.trainable)):
        group["initial_lr"], group["weight_decay"], group["eps"] = spec.lr, spec.weight_decay, spec.eps
        group["lr"] = spec.lr * (lambdas[i](scheduler.last_epoch) if lambdas else 1.0)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return changed


class CheckpointWriter:
    """Writes ``checkpoints/step-NNNNNN/`` atomically (every process takes part; the main process
    writes the shared files) and keeps the last ``keep_last``."""

    def __init__(self, root: Path, accelerator, strategy, keep_last: int):
        self.root, self.accelerator, self.strategy, self.keep_last = root, accelerator, strategy, keep_last

    def write(self, model, optimizer, scheduler, progress: Progress, sampler_state: dict) -> Path:
        name = f"{ckpt.PREFIX}{progress.global_step:06d}"
        main = self.accelerator.is_main_process
        tmp = self.root / f".tmp-{name}"
        if main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        with quiet_saving():
            self.strategy.save_model(model, tmp / "model")  # collective under FSDP / ZeRO-3
            self.strategy.save_optimizer(model, optimizer, tmp)
        if main:
            state = {"progress": asdict(progress), "sampler": sampler_state, "scheduler": scheduler.state_dict()}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        ckpt.save_rng(tmp, self.accelerator.process_index)
        self.accelerator.wait_for_everyone()
        if main:
            ckpt.commit(tmp, self.root / name, self.keep_last)
        self.accelerator.wait_for_everyone()
        return self.root / name


@contextmanager
def quiet_saving():
    """Without transformers' per-file progress bars ("Writing model shards", "Loading weights") and
    DeepSpeed's CPU-fallback warning, which would interleave with the training progress bar."""
    from transformers.utils import logging as hf_logging

    quiet_deepspeed_import()
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
