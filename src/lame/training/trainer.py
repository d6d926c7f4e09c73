"""The two-stage recipe runner: one plain process, or several under ``accelerate launch``/torchrun.

Every process draws its slice of one global batch and negatives are gathered across processes
(:mod:`lame.losses`); how gradients and parameters are shared (replicated with one all-reduce,
FSDP, DeepSpeed ZeRO) is the strategy's job (:mod:`lame.training.parallel`).

:class:`Trainer` runs the steps; its parts live beside it: building the model and each stage's
optimizer (:mod:`~lame.training.build`), batches and skipped samples (:mod:`~lame.training.batches`,
:mod:`~lame.training.skips`), one step's gradients (:mod:`~lame.training.steps`), divergence
(:mod:`~lame.training.divergence`), checkpoints and resuming (:mod:`~lame.training.resume`), evaluation
(:mod:`~lame.training.evaluation`), logs (:mod:`~lame.training.run_log`) and the model card
(:mod:`~lame.training.report`).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator

from .batches import BatchDrawer, label_id
from .build import build_model, build_shaped, check_stage_patterns, dry_run, model_config, prepare_model, start_stage
from .checkpoint import PREFIX
from .data import JsonlSource, MixtureSampler
from .divergence import DivergenceGuard, TrainingDiverged, nonfinite_weights
from .elastic import draw_reason_tokens
from .evaluation import PeriodicEvaluation, recipe_evaluator
from .objective import loss_weights
from .parallel import make_strategy
from .recipe import Recipe, StageSpec
from .resume import CheckpointWriter, History, Progress, ResumePoint, quiet_saving, use_recipe_rates
from .run_log import TRAIN_SCALARS, Console, MetricsLog, show_step, stage_description
from .skips import SkipLog
from .steps import compute_gradients

__all__ = ["Progress", "Trainer", "TrainingDiverged", "build_model", "build_shaped", "check_stage_patterns",
           "dry_run", "label_id", "model_config", "nonfinite_weights", "train"]


class Trainer:
    """Runs a recipe's stages step by step on this process (one of ``world``, ``rank``), with the parts of
    the modules named in this module's docstring; ``model`` is the model it trains."""

    def __init__(self, recipe: Recipe, resume: bool = False, show_progress: bool = True, evaluator=None):
        """``evaluator(model) -> {name: float}`` is called every ``train.eval_every`` steps and at the
        end of training (:class:`~lame.training.evaluation.PeriodicEvaluation`). Without one, the
        recipe's ``eval`` section (a benchmark, :mod:`lame.training.evaluation`) is the evaluator."""
        self.recipe, train = recipe, recipe.train
        evaluator = recipe_evaluator(recipe, evaluator)
        self._start_processes(show_progress)
        torch.manual_seed(train.seed)
        self.sampler = MixtureSampler([JsonlSource(s.path, s.name) for s in recipe.data.sources],
                                      [s.weight for s in recipe.data.sources], seed=train.seed)
        self.resume_point = self._resume_point() if resume else None
        self.progress = self.resume_point.progress if self.resume_point else Progress()
        model = self._starting_model()
        check_stage_patterns(model, recipe)
        self.strategy = make_strategy(train.strategy, self.accelerator, train.deepspeed_config)
        self.model = prepare_model(model, recipe, self.strategy, self.progress.stage_index)
        self.output.mkdir(parents=True, exist_ok=True)
        self._make_parts(evaluator)

    def _start_processes(self, show_progress: bool) -> None:
        """The processes, the device and the autocast of the run, its output folder and console."""
        # accelerate gives the processes and the device. Precision is the recipe's own autocast: accelerate's
        # is a process-wide singleton that refuses a second run with another precision in one process.
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.recipe.train.mixed_precision)
        self.autocast = partial(torch.autocast, self.accelerator.device.type, dtype=dtype, enabled=dtype is not None)
        self.output = Path(self.recipe.train.output_dir)
        self.console = Console(self.accelerator.is_main_process, show_progress)

    def _resume_point(self) -> ResumePoint | None:
        point = ResumePoint.latest(self.output / "checkpoints")
        if point is None:
            self.console.line(f"--resume: no checkpoint in {self.output / 'checkpoints'}; starting from the beginning")
        return point

    def _make_parts(self, evaluator) -> None:
        """The parts that run beside the step loop: logs, batches, divergence checks, checkpoints, evaluation."""
        train, main = self.recipe.train, self.accelerator.is_main_process
        self.metrics = MetricsLog(self.output, main, train.tensorboard)
        self.skips = SkipLog(self.output, self.rank, self.world, self.progress, self.sampler)
        self.batches = BatchDrawer(self.recipe.data, self.sampler, self.model, self.rank, self.world, self.skips,
                                   self.console.line)
        start = self.resume_point.directory if self.resume_point else None
        self.history = History(resumed_from=start, resumed_step=self.progress.global_step if start else None,
                               last=start)
        self.guard = DivergenceGuard(self.history, train.mixed_precision)
        self.writer = CheckpointWriter(self.output / "checkpoints", self.accelerator, self.strategy, train.keep_last)
        self.evaluation = PeriodicEvaluation(evaluator, self.recipe, self.accelerator, self.strategy, self.metrics,
                                             self.console)

    def _starting_model(self):
        """The resume point's model (announced; the sampler taken back to its position), or a new one."""
        point = self.resume_point
        if point is None:
            return build_model(self.recipe)
        model = point.load_model()
        self.sampler.load_state_dict(point.sampler)
        done = point.progress
        stage = self.recipe.stages[min(done.stage_index, len(self.recipe.stages) - 1)]
        self.console.line(f"resuming from {point.directory}: stage {stage.name!r} at step {done.step_in_stage} "
                          f"of {stage.steps} (global step {done.global_step})")
        return model

    # --------------------------------------------------------------------------------- running
    def run(self, stop_after: int | None = None) -> Path | None:
        """Trains every remaining stage; returns the final model folder (None if stopped early, once
        ``stop_after`` global steps are done)."""
        stages, final = self.recipe.stages, self.output / "model"
        if (self.history.resumed_from is not None and self.progress.stage_index == len(stages) - 1
                and self.progress.step_in_stage >= stages[-1].steps and final.is_dir()):
            self.console.line(f"the run already finished at step {self.progress.global_step}; nothing to do")
            return final
        if self.accelerator.is_main_process:
            (self.output / "recipe.yaml").write_text(yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        with self.batches.featurizing(self.recipe.train.featurize_workers):
            for stage_index in range(self.progress.stage_index, len(stages)):
                if self.progress.stage_index != stage_index:
                    self.progress.stage_index, self.progress.step_in_stage = stage_index, 0
                if not self._run_stage(stages[stage_index], stop_after):
                    return None
        return self._finish()

    def _run_stage(self, stage: StageSpec, stop_after: int | None) -> bool:
        """Runs ``stage`` from where the run is; False when stopped by ``stop_after``."""
        index = self.progress.stage_index
        groups, optimizer, scheduler = start_stage(self.model, self.recipe, self.strategy, index,
                                                   self.accelerator.device)
        if self.resume_point is not None and self.progress.step_in_stage > 0:
            self.resume_point.restore_stage(self.strategy, self.model, optimizer, scheduler, self.rank)
            changed = use_recipe_rates(stage, optimizer, scheduler)
            if changed:
                self.console.line(f"resumed stage {stage.name!r} with the recipe's values: {', '.join(changed)}")
        self.resume_point = None
        self.console.line(stage_description(stage, groups, self.model, self.world, self.strategy))
        self.model.train()
        bar = self.console.bar(stage, self.progress.step_in_stage)
        try:  # the bar is closed before an error is printed
            return self._steps(stage, optimizer, scheduler, bar, stop_after)
        finally:
            bar.close()

    def _steps(self, stage: StageSpec, optimizer, scheduler, bar, stop_after: int | None) -> bool:
        weights = loss_weights(self.model.config, stage)
        train, progress = self.recipe.train, self.progress
        pending = None  # the next batch, featurised while the current step computes
        while progress.step_in_stage < stage.steps:
            if stop_after is not None and progress.global_step >= stop_after:
                return False
            started = time.perf_counter()
            batch = self.batches.collect(pending or self.batches.draw(stage), progress.global_step + 1)
            pending = None
            if progress.step_in_stage + 1 < stage.steps and train.featurize_workers:
                pending = self.batches.draw(stage)
            reason_tokens = draw_reason_tokens(self.model.config.reason_token_choices, train.seed,
                                               progress.global_step + 1)
            losses = compute_gradients(self.model, batch, weights, train.grad_cache_chunk, autocast=self.autocast,
                                       backward=self.strategy.backward, lockstep=self.strategy.lockstep,
                                       packing=train.packing, packing_capacity=train.packing_capacity,
                                       reason_tokens=reason_tokens)
            self.guard.check_loss(losses, stage, progress.global_step + 1)
            # a non-finite gradient norm updates nothing (lame.training.parallel); then every process stops
            norm = self.strategy.step(optimizer, scheduler, stage.max_grad_norm)
            self.guard.check_gradient_norm(norm, losses, stage, progress.global_step + 1, self.strategy.loss_scaled)
            progress.step_in_stage += 1
            progress.global_step += 1
            seconds = time.perf_counter() - started
            self._log_step(stage, losses, scheduler.get_last_lr()[0], len(batch) * self.world / seconds, norm, bar)
            at_end = progress.step_in_stage == stage.steps
            last_stage = progress.stage_index == len(self.recipe.stages) - 1
            self.evaluation.after_step(self.model, stage, progress.global_step, final=at_end and last_stage)
            if progress.global_step % train.save_every == 0 or at_end:
                # a prefetched batch is not part of the checkpoint: a resumed run draws it again
                self._save_checkpoint(stage, optimizer, scheduler, pending.sampler_state if pending else None)
        return True

    def _log_step(self, stage: StageSpec, losses, lr: float, samples_per_s: float, grad_norm: float | None,
                  bar) -> None:
        show_step(bar, losses, lr, samples_per_s)
        step = self.progress.global_step
        if step % self.recipe.train.log_every and self.progress.step_in_stage != stage.steps:
            return
        summary = self.skips.new_summary()
        if summary:
            self.console.line(summary)
        row = {"step": step, "stage": stage.name, "loss": losses.total, "contrastive": losses.contrastive,
               "reconstruction": losses.reconstruction, "diversity": losses.diversity, "lr": lr,
               "grad_norm": grad_norm, "samples_per_s": samples_per_s, "skipped": self.progress.skipped}
        self.metrics.write(row, {key: row[key] for key in TRAIN_SCALARS}, prefix="train")

    # ----------------------------------------------------------------------------- saving
    def _save_checkpoint(self, stage: StageSpec, optimizer, scheduler, sampler_state: dict | None) -> None:
        name = f"{PREFIX}{self.progress.global_step:06d}"
        self.guard.check_weights(self.model, stage, self.progress.global_step, f"writing checkpoint {name}")
        self.history.last = self.writer.write(self.model, optimizer, scheduler, self.progress,
                                              sampler_state or self.sampler.state_dict())

    def _finish(self) -> Path:
        """Saves the trained model with its model card and loss curves; returns its folder."""
        final = self.output / "model"
        self.guard.check_weights(self.model, self.recipe.stages[-1], self.progress.global_step,
                                 "saving the trained model")
        with quiet_saving():
            self.strategy.save_model(self.model, final)
        if self.accelerator.is_main_process:
            from .report import plot_losses, write_model_card

            plot_losses(self.metrics.file, self.output / "loss_curves.png")
            write_model_card(final, self.model, self.recipe, self.metrics.file, self.progress.skipped,
                             evaluation=self.evaluation.final_report(final))
            if self.progress.skipped:
                self.console.line(self.skips.summary(final=True))
        self.metrics.close()
        self.accelerator.wait_for_everyone()
        return final


def train(recipe: Recipe, resume: bool = False, show_progress: bool = True, evaluator=None) -> Path:
    """Runs a recipe to the end and returns the folder of the trained model."""
    return Trainer(recipe, resume=resume, show_progress=show_progress, evaluator=evaluator).run()
