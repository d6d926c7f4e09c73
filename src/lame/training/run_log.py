"""What a run reports while it trains: lines and a progress bar on the terminal (main process), rows of
``metrics.jsonl`` and TensorBoard scalars. The end-of-run artefacts are :mod:`lame.training.report`."""

from __future__ import annotations

import json
from pathlib import Path

from ..extras import optional
from .params import describe_groups
from .recipe import StageSpec

TRAIN_SCALARS = ("loss", "contrastive", "reconstruction", "diversity", "lr", "grad_norm", "samples_per_s")


class Console:
    """Lines and progress bars of the main process (nothing elsewhere, nor with ``show=False``)."""

    def __init__(self, is_main: bool, show: bool):
        self.show = show and is_main

    def line(self, text: str) -> None:
        if self.show:
            from tqdm.auto import tqdm

            tqdm.write(text)  # above a running progress bar, not through it

    def bar(self, stage: StageSpec, done: int):
        """The progress bar of ``stage``, ``done`` steps in."""
        from tqdm.auto import tqdm

        return tqdm(total=stage.steps, initial=done, desc=f"stage {stage.name}", disable=not self.show,
                    dynamic_ncols=True)


def show_step(bar, losses, lr: float, samples_per_s: float) -> None:
    """Advances ``bar`` by one step, with the step's losses, learning rate and speed."""
    bar.update(1)
    bar.set_postfix(loss=f"{losses.total:.3f}", con=f"{losses.contrastive:.3f}", rec=f"{losses.reconstruction:.3f}",
                    div=f"{losses.diversity:.3f}", lr=f"{lr:.1e}", sps=f"{samples_per_s:.1f}", refresh=False)


class MetricsLog:
    """``metrics.jsonl`` (one JSON row per logged step or evaluation) and, with ``tensorboard``, the same
    numbers under ``tensorboard/``. Only the main process writes."""

    def __init__(self, output: Path, is_main: bool, tensorboard: bool):
        self.file = output / "metrics.jsonl"
        self.is_main = is_main
        self.tensorboard = _tensorboard(output) if tensorboard and is_main else None

    def write(self, row: dict, scalars: dict[str, float | None] | None = None, prefix: str = "") -> None:
        """Appends ``row``; ``scalars`` go to TensorBoard as ``prefix/name`` at ``row["step"]`` (None: skipped)."""
        if not self.is_main:
            return
        with self.file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tensorboard is not None:
            for key, value in (scalars or {}).items():
                if value is not None:
                    self.tensorboard.add_scalar(f"{prefix}/{key}", value, row["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard(output: Path):
    tensorboard = optional("torch.utils.tensorboard", extra="plots", feature="TensorBoard logging")
    return None if tensorboard is None else tensorboard.SummaryWriter(str(output / "tensorboard"))


def stage_description(stage: StageSpec, groups, model, world: int, strategy) -> str:
    """The lines printed when a stage starts: its steps, batch, strategy and trainable groups."""
    rows = describe_groups(groups, model)
    lines = [f"stage {stage.name!r}: {stage.steps} steps, batch {stage.batch_size} x {world} processes "
             f"({strategy.describe()})"]
    lines += [f"  {r['pattern']:<50} {r['parameters']:>14,d} params" + (f"  lr {r['lr']:.1e}" if r["lr"] else "")
              for r in rows]
    return "\n".join(lines)
