"""The two-stage recipe runner: one plain process, or several under ``accelerate launch``/torchrun.

Every process draws its slice of one global batch and negatives are gathered across processes
(:mod:`lame.losses`); how gradients and parameters are shared (replicated with one all-reduce,
FSDP, DeepSpeed ZeRO) is the strategy's job (:mod:`lame.training.parallel`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator

from ..config import LaMEConfig
from ..data.items import ItemError
from ..errors import InvalidInput, UserError
from ..extras import optional
from ..modeling import LaMEModel, build_tiny_model
from ..modeling.lora import add_lora, has_lora
from . import checkpoint as ckpt
from .collectives import global_sum
from .data import DataError, JsonlSource, MixtureSampler, TrainingExample
from .objective import loss_weights
from .parallel import make_strategy, quiet_deepspeed_import
from .params import describe_groups, master_patterns, master_weights, select_trainable
from .recipe import Recipe, RecipeError, StageSpec
from .schedules import make_scheduler
from .steps import TrainBatch, compute_gradients


@dataclass
class _PendingBatch:
    sampler_state: dict  # the sampler before this batch was drawn
    samples: list  # (source, line, example, draw index, Future of the features | the read error)


class _Inline:
    """The executor of ``featurize_workers: 0``: featurises when asked, in the calling thread."""

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass

    def submit(self, fn, *args):
        future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001  (re-raised by result(), like a pool's future)
            future.set_exception(exc)
        return future


class TrainingDiverged(UserError, RuntimeError):
    """The loss, the gradient norm or the weights became NaN or infinite. Raised on every process
    together (``every_process``); nothing non-finite was saved, and the message names the last good
    checkpoint."""

    every_process = True


SKIP_EXAMPLES = 3  # reasons of skipped samples kept for the printed summaries


@dataclass
class Progress:
    stage_index: int = 0
    step_in_stage: int = 0  # completed steps of the current stage
    global_step: int = 0
    skipped: int = 0  # samples skipped so far, over all processes


def model_config(recipe: Recipe) -> LaMEConfig:
    """The recipe's LaME config; a decoder head exists exactly when ``model.decoder`` is set."""
    return LaMEConfig.from_dict(recipe.model.lame).replace(use_decoder=recipe.model.decoder is not None)


def build_model(recipe: Recipe) -> LaMEModel:
    spec = recipe.model
    config = model_config(recipe)
    dtype = getattr(torch, spec.dtype)
    if spec.backbone.startswith("shape:"):  # built where it will train (a 2B model in fp32 is 9 GB)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return build_shaped(recipe, torch.device("cuda", local) if torch.cuda.is_available() else "cpu")
    if spec.backbone.startswith("tiny:"):
        model = build_tiny_model(spec.backbone.split(":", 1)[1], seed=spec.seed, config=config)
        # as from_backbone loads them: the weights of backbone and decoder in model.dtype, their buffers (the
        # rotary frequencies) in float32, which is also what a resumed run loads (a cast module would differ)
        parts = [model.backbone] + ([model.decoder_head.decoder] if model.decoder_head is not None else [])
        for p in (p for part in parts for p in part.parameters()):
            p.data = p.data.to(dtype)
        return model
    return LaMEModel.from_backbone(spec.backbone, config, decoder=spec.decoder, dtype=dtype)


def build_shaped(recipe: Recipe, device) -> LaMEModel:
    """A ``shape:NAME[/BLOCKS]`` backbone: random weights of a real architecture (``device="meta"``: none)."""
    from ..modeling.shapes import build_shaped_model, parse_shape_spec

    spec = recipe.model
    name, layers = parse_shape_spec(spec.backbone)
    decoder_layers = None
    if layers is not None and spec.decoder == "shape":  # the decoder truncated in the same proportion
        from ..modeling.shapes import architecture, depths

        full = depths(name)["layers"]
        decoder_layers = max(1, round(layers * architecture("Qwen3-0.6B")["num_hidden_layers"] / full))
    return build_shaped_model(name, layers, config=model_config(recipe), dtype=getattr(torch, spec.dtype),
                              device=device, seed=spec.seed, decoder=spec.decoder or "shape",
                              decoder_layers=decoder_layers)


def lora_parameter_names(model, target_modules: list[str]) -> set[str]:
    """The parameter names the model will have once LoRA is added (for validating stage patterns early)."""
    names = set(dict(model.named_parameters()))
    host = model.adapter.lora_host
    for name, module in model.get_submodule(host).named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in target_modules:
            full = f"{host}.{name}"
            for kind in ("weight", "bias"):
                if f"{full}.{kind}" in names:
                    names.discard(f"{full}.{kind}")
                    names.add(f"{full}.base_layer.{kind}")
            names.update({f"{full}.lora_A.default.weight", f"{full}.lora_B.default.weight"})
    return names


def check_stage_patterns(model, recipe: Recipe) -> None:
    """Raises :class:`RecipeError` for a trainable pattern that matches no parameter, for every stage."""
    from fnmatch import fnmatchcase

    lora_added = has_lora(model)
    names = set(dict(model.named_parameters()))
    for i, stage in enumerate(recipe.stages):
        if stage.lora and not lora_added:
            names = lora_parameter_names(model, stage.lora.target_modules)
            lora_added = True
        for j, group in enumerate(stage.trainable):
            if not any(fnmatchcase(n, group.pattern) for n in names):
                tops = ", ".join(sorted({n.split(".")[0] for n in names}))
                raise RecipeError(f"stages[{i}].trainable[{j}].pattern {group.pattern!r} matches no parameter "
                                  f"(top-level names: {tops})")


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


def label_id(label, fallback: int) -> int:
    """Labels of any JSON type -> comparable ints (equal on every process); no label -> a unique id."""
    if label is None:
        return -1 - fallback
    if isinstance(label, bool) or not isinstance(label, int):
        return zlib.crc32(json.dumps(label, sort_keys=True).encode()) & 0x7FFFFFFF
    return label


class Trainer:
    def __init__(self, recipe: Recipe, resume: bool = False, show_progress: bool = True, evaluator=None):
        """``evaluator(model) -> {name: float}`` is called every ``train.eval_every`` steps and at the
        end of training, on the main process (on every process when the weights are sharded: FSDP,
        ZeRO-3); the main process's results go to metrics.jsonl as ``eval/<name>``. Without one, the
        recipe's ``eval`` section (a benchmark, :mod:`lame.training.evaluation`) is the evaluator."""
        self.recipe = recipe
        if evaluator is None and recipe.eval is not None:
            from .evaluation import BenchmarkEvaluator

            evaluator = BenchmarkEvaluator(recipe.eval)
        self.evaluator = evaluator
        self.final_scores: tuple[int, dict] | None = None  # (step, scores) of the last evaluation
        # accelerate gives the processes and the device. Precision is the recipe's own autocast: accelerate's
        # is a process-wide singleton that refuses a second run with another precision in one process.
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recipe.train.mixed_precision)
        self.autocast = partial(torch.autocast, self.accelerator.device.type, dtype=dtype, enabled=dtype is not None)
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        self.output = Path(recipe.train.output_dir)
        self.checkpoints = self.output / "checkpoints"
        self.show_progress = show_progress and self.accelerator.is_main_process
        self.progress = Progress()
        self._noted_fields: dict[str, set[str]] = {}
        self.skip_examples: list[str] = []  # the first skipped samples' reasons (all processes)
        self._skips_reported = 0  # progress.skipped at the last printed summary
        self.featurize_pool = None  # set while run() runs
        torch.manual_seed(recipe.train.seed)

        sources = [JsonlSource(s.path, s.name) for s in recipe.data.sources]
        self.sampler = MixtureSampler(sources, [s.weight for s in recipe.data.sources], seed=recipe.train.seed)
        self.resume_from = ckpt.latest_checkpoint(self.checkpoints) if resume else None
        self.last_checkpoint = self.resume_from  # the last good checkpoint of this run
        self.resumed_from, self.resumed_step = self.resume_from, None  # what this run started from
        if resume and self.resume_from is None:
            self._log_line(f"--resume: no checkpoint in {self.checkpoints}; starting from the beginning")
        if self.resume_from is not None:
            with quiet_saving():  # in float32: the checkpoint holds float32 master weights beside model.dtype ones
                self.model = LaMEModel.from_pretrained(self.resume_from / "model", dtype=torch.float32)
            bad = nonfinite_weights(self.model, trainable_only=False)
            if bad:  # written before checkpoints were checked, or by something else
                raise InvalidInput(f"--resume: {self.resume_from} holds non-finite weights ({len(bad)} tensors, "
                                   f"e.g. {bad[0]}); delete it to resume from an earlier checkpoint, or start over")
            state = json.loads((self.resume_from / "trainer_state.json").read_text())
            self.progress = Progress(**state["progress"])
            self.sampler.load_state_dict(state["sampler"])
            self._scheduler_state = state["scheduler"]
            self._skips_reported = self.progress.skipped
            self.resumed_step = self.progress.global_step
            stage = recipe.stages[min(self.progress.stage_index, len(recipe.stages) - 1)]
            self._log_line(f"resuming from {self.resume_from}: stage {stage.name!r} at step "
                           f"{self.progress.step_in_stage} of {stage.steps} (global step {self.progress.global_step})")
        else:
            self.model = build_model(recipe)
            self._scheduler_state = None
        check_stage_patterns(self.model, recipe)
        self.model.packing, self.model.packing_capacity = recipe.train.packing, recipe.train.packing_capacity
        if recipe.train.gradient_checkpointing:
            self.model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.strategy = make_strategy(recipe.train.strategy, self.accelerator, recipe.train.deepspeed_config)
        if getattr(self.strategy, "zero_stage", 0) == 3 and recipe.train.grad_cache_chunk:
            # Under DeepSpeed's stage 3 the root module's own parameters (the latent embeddings) do not get
            # the gradient of all of a step's backward passes: on 2 CPU processes they ended 6e-3 away from
            # the 1-process run while every other weight matched to 1e-4. FSDP has no such limit.
            raise RecipeError("train.grad_cache_chunk is not supported with DeepSpeed ZeRO-3; "
                              "use train.strategy: fsdp (or ZeRO-2) for GradCache")
        if self.strategy.name != "ddp":  # sharded modules cannot take new LoRA layers later: add them now
            lora = next((stage.lora for stage in recipe.stages if stage.lora), None)
            if lora and not has_lora(self.model):
                add_lora(self.model, lora.r, lora.alpha, lora.dropout, lora.target_modules)
        dtype = getattr(torch, recipe.model.dtype)
        master_weights(self.model, self.master_patterns(self.progress.stage_index), dtype)
        self.model = self.strategy.prepare_model(self.model)
        self.output.mkdir(parents=True, exist_ok=True)
        self.metrics_file = self.output / "metrics.jsonl"
        self.skipped_file = self.output / f"skipped-{self.rank}.jsonl"
        self.tensorboard = self._tensorboard() if recipe.train.tensorboard and self.accelerator.is_main_process else None
        if self.evaluator is None and recipe.train.eval_every:
            self._log_line("note: train.eval_every is set but nothing is evaluated: add an eval section "
                           "(eval: {benchmark: ...}) to the recipe")
        elif hasattr(self.evaluator, "describe"):
            every = f"every {recipe.train.eval_every} steps and " if recipe.train.eval_every else ""
            self._log_line(f"evaluating {every}at the end on {self.evaluator.describe()}")

    def master_patterns(self, stage_index: int) -> list[str]:
        """The patterns whose parameters hold float32 master weights during stage ``stage_index``: what that
        stage and the earlier ones train, cast at each stage's start; every stage's from the start under
        the sharded strategies, whose parameters cannot change dtype once placed (:func:`master_patterns`)."""
        return master_patterns(self.recipe.stages, stage_index, every_stage=self.strategy.name != "ddp")

    # --------------------------------------------------------------------------------- running
    def run(self, stop_after: int | None = None) -> Path | None:
        """Trains every remaining stage; returns the final model folder (None if stopped early)."""
        # Featurising (image decoding and resizing, tokenising) releases the GIL: threads overlap it with
        # the training step. Processes would need the model's featurizer pickled to every worker.
        workers = self.recipe.train.featurize_workers
        self.featurize_pool = ThreadPoolExecutor(workers, thread_name_prefix="featurize") if workers else _Inline()
        try:
            return self._run(stop_after)
        finally:
            self.featurize_pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, stop_after: int | None) -> Path | None:
        stages, final = self.recipe.stages, self.output / "model"
        if (self.resumed_from is not None and self.progress.stage_index == len(stages) - 1
                and self.progress.step_in_stage >= stages[-1].steps and final.is_dir()):
            self._log_line(f"the run already finished at step {self.progress.global_step}; nothing to do")
            return final
        if self.accelerator.is_main_process:
            (self.output / "recipe.yaml").write_text(yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        for stage_index in range(self.progress.stage_index, len(self.recipe.stages)):
            stage = self.recipe.stages[stage_index]
            if self.progress.stage_index != stage_index:
                self.progress.stage_index, self.progress.step_in_stage = stage_index, 0
            if not self._run_stage(stage, stop_after):
                return None
        return self._finish()

    def _run_stage(self, stage: StageSpec, stop_after: int | None) -> bool:
        if stage.lora and not has_lora(self.model):
            add_lora(self.model, stage.lora.r, stage.lora.alpha, stage.lora.dropout, stage.lora.target_modules)
            self.model.to(self.accelerator.device)
        if self.strategy.name == "ddp":  # float32 masters for what this stage trains (the optimizer is built below)
            master_weights(self.model, self.master_patterns(self.progress.stage_index),
                           getattr(torch, self.recipe.model.dtype))
        lora_begun = any(s.lora for s in self.recipe.stages[: self.progress.stage_index + 1])
        groups = select_trainable(self.model, stage.trainable, where=f"stages[{self.progress.stage_index}].trainable",
                                  without_lora=not lora_begun)  # adapters added early for sharding stay frozen
        optimizer = self.strategy.make_optimizer(self.model, groups, stage, self.recipe.train.mixed_precision)
        scheduler = make_scheduler(stage.schedule, optimizer, stage.warmup_steps, stage.steps)
        if self.resume_from is not None and self.progress.step_in_stage > 0:
            self.strategy.load_optimizer(self.model, optimizer, self.resume_from)
            scheduler.load_state_dict(self._scheduler_state)
            self._use_recipe_rates(stage, optimizer, scheduler)
            ckpt.load_rng(self.resume_from, self.rank)
        self.resume_from = None
        weights = loss_weights(self.model.config, stage)
        self._log_line(self._describe_stage(stage, groups))
        self.model.train()
        bar = self._bar(stage)
        try:  # the bar is closed before an error is printed
            return self._steps(stage, weights, optimizer, scheduler, bar, stop_after)
        finally:
            bar.close()

    def _steps(self, stage: StageSpec, weights, optimizer, scheduler, bar, stop_after: int | None) -> bool:
        pending = None  # the next batch, featurised while the current step computes
        while self.progress.step_in_stage < stage.steps:
            if stop_after is not None and self.progress.global_step >= stop_after:
                return False
            started = time.perf_counter()
            batch = self._collect_batch(pending or self._draw_batch(stage))
            pending = None
            if self.progress.step_in_stage + 1 < stage.steps and self.recipe.train.featurize_workers:
                pending = self._draw_batch(stage)
            losses = compute_gradients(self.model, batch, weights, self.recipe.train.grad_cache_chunk,
                                       autocast=self.autocast, backward=self.strategy.backward,
                                       lockstep=self.strategy.lockstep)
            self._check_finite(losses, stage)
            # a non-finite gradient norm updates nothing (lame.training.parallel); then every process stops
            norm = self.strategy.step(optimizer, scheduler, stage.max_grad_norm)
            self._check_gradient_norm(norm, losses, stage)
            self.progress.step_in_stage += 1
            self.progress.global_step += 1
            seconds = time.perf_counter() - started
            self._log_step(stage, losses, scheduler.get_last_lr()[0], len(batch) * self.world / seconds, norm, bar)
            at_end = self.progress.step_in_stage == stage.steps
            self._maybe_evaluate(stage, final=at_end and self.progress.stage_index == len(self.recipe.stages) - 1)
            if self.progress.global_step % self.recipe.train.save_every == 0 or at_end:
                # a prefetched batch is not part of the checkpoint: a resumed run draws it again
                self._save_checkpoint(optimizer, scheduler, pending.sampler_state if pending else None)
        return True

    def _use_recipe_rates(self, stage: StageSpec, optimizer, scheduler) -> None:
        """A resumed stage trains at the recipe's learning rates, weight decays and AdamW epsilons, not
        the checkpoint's: lowering the learning rate and resuming is how a diverged run continues."""
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
            return
        scheduler.base_lrs = [spec.lr for spec in stage.trainable]
        lambdas = getattr(scheduler, "lr_lambdas", None)
        for i, (group, spec) in enumerate(zip(optimizer.param_groups, stage.trainable)):
            group["initial_lr"], group["weight_decay"], group["eps"] = spec.lr, spec.weight_decay, spec.eps
            group["lr"] = spec.lr * (lambdas[i](scheduler.last_epoch) if lambdas else 1.0)
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
        self._log_line(f"resumed stage {stage.name!r} with the recipe's values: {', '.join(changed)}")

    def _draw_batch(self, stage: StageSpec) -> "_PendingBatch":
        """Draws this process's slice of the next global batch and starts featurising it (in the
        background with ``train.featurize_workers`` threads). Records are read here, in order."""
        data = self.recipe.data
        sampler_state = self.sampler.state_dict()  # what a checkpoint taken before this batch must hold
        draws_before = self.sampler.draws
        positions = self.sampler.next_positions(stage.batch_size * self.world)
        mine = positions[self.rank * stage.batch_size: (self.rank + 1) * stage.batch_size]
        samples = []
        for offset, (source, line) in enumerate(mine):
            label = draws_before + self.rank * stage.batch_size + offset
            try:
                example = self.sampler.read(source, line)
            except DataError as exc:
                samples.append((source, line, None, label, exc))
                continue
            work = (self._featurize, example, data.positives_per_query, data.negatives_per_query)
            samples.append((source, line, example, label, self.featurize_pool.submit(*work)))
        return _PendingBatch(sampler_state, samples)

    def _collect_batch(self, pending: "_PendingBatch") -> TrainBatch:
        """Waits for a drawn batch's features; unusable samples are skipped and counted, in draw order."""
        data = self.recipe.data
        queries, positives, negatives, targets, labels = [], [], [], [], []
        skipped = []  # this process's reasons, in draw order
        for source, line, example, draw, work in pending.samples:
            try:
                if isinstance(work, Exception):
                    raise work
                features = work.result()
            except (ItemError, DataError) as exc:
                skipped.append(self._skip(source, line, exc))
                continue
            queries.append(features[0])
            positives += features[1: 1 + data.positives_per_query]
            negatives += features[1 + data.positives_per_query:]
            targets.append(example.decoder_target(self.model.config.decoder_target))
            labels.append(label_id(example.label, draw))
        self._note_extra_fields()
        # one collective for both: every process stops together (none hangs in a collective) and
        # every process knows the global number of skipped samples
        empty, new_skips = global_sum([0 if queries else 1, len(skipped)])
        if new_skips:
            self._count_skips(int(new_skips), skipped)
        if empty:
            error = DataError(f"every sample of a batch at step {self.progress.global_step + 1} was unusable: "
                              f"{self._skip_summary()}")
            error.every_process = True
            raise error
        return TrainBatch(queries, positives, negatives, targets, torch.tensor(labels))

    def _count_skips(self, count: int, mine: list[str]) -> None:
        """Adds a batch's skipped samples (``count`` over all processes, ``mine`` this process's
        reasons) to the count and, while fewer than SKIP_EXAMPLES are known, to the examples."""
        self.progress.skipped += count
        if len(self.skip_examples) >= SKIP_EXAMPLES:
            return
        if self.world > 1:  # every process takes this branch alike: the count is global
            gathered = [None] * self.world
            torch.distributed.all_gather_object(gathered, mine)
            mine = [reason for reasons in gathered for reason in reasons]
        self.skip_examples += mine[: SKIP_EXAMPLES - len(self.skip_examples)]

    def _skip_summary(self, final: bool = False) -> str:
        """One line: how many samples were skipped, the first reasons, and where the list is."""
        count, drawn = self.progress.skipped, self.sampler.draws
        listing = self.skipped_file if self.world == 1 else self.output / "skipped-<rank>.jsonl"
        share = f" ({100 * count / drawn:.1f}%)" if drawn else ""
        reasons = "; ".join(self.skip_examples)
        more = f"; +{count - len(self.skip_examples)} more" if count > len(self.skip_examples) else ""
        return (f"skipped {count} of {drawn} samples drawn{share}{'' if final else ' so far'}: {reasons}{more}. "
                f"Every skipped sample is listed in {listing}")

    def _note_extra_fields(self) -> None:
        for source in self.sampler.sources:
            new = sorted(source.extra_fields - self._noted_fields.get(source.name, set()))
            if new:
                self._log_line(f"note: {source.path} has fields outside the record schema, kept as metadata "
                               f"and not used for training: {new}")
                self._noted_fields.setdefault(source.name, set()).update(new)

    def _featurize(self, example: TrainingExample, num_pos: int, num_neg: int) -> list:
        """A sample's query, positives and negatives in one batched featurizer call; its first bad
        item (in that order) makes the whole sample an ItemError, which skips it."""
        if len(example.positives) < num_pos:
            raise DataError(f"{example.where}: {len(example.positives)} positives, the recipe asks for {num_pos}")
        if len(example.negatives) < num_neg:
            raise DataError(f"{example.where}: {len(example.negatives)} hard negatives, the recipe asks for {num_neg}")
        items = [example.query, *example.positives[:num_pos], *example.negatives[:num_neg]]
        roles = ["query"] + ["positive"] * num_pos + ["negative"] * num_neg
        out = self.model.featurizer.many(items)
        for role, features in zip(roles, out):
            try:
                if isinstance(features, ItemError):
                    raise features
                if role == "query":  # the model's hook: the explicit-CoT baseline adds the example's rationale
                    out[0] = self.model.training_query_features(example, features)
            except ItemError as exc:
                raise ItemError(None, f"{example.where}: {role}: {exc.reason}") from exc
        return out

    def _skip(self, source: int, index: int, exc: Exception) -> str:
        """Lists a skipped sample in ``skipped-<rank>.jsonl``: the step that drew it, its source, file and
        1-based line number, and why; returns the reason with paths relative to the file's folder."""
        data = self.sampler.sources[source]
        line = int(data.line_numbers[index])
        reason = exc.reason if isinstance(exc, ItemError) else str(exc)
        with self.skipped_file.open("a") as f:
            f.write(json.dumps({"step": self.progress.global_step + 1, "source": data.name, "file": str(data.path),
                                "line": line, "reason": reason}) + "\n")
        return reason.replace(str(data.path.parent) + os.sep, "")

    def _maybe_evaluate(self, stage: StageSpec, final: bool) -> None:
        every = self.recipe.train.eval_every
        step = self.progress.global_step
        if self.evaluator is None or not (final or (every and step % every == 0)):
            return
        # sharded weights: every process runs the evaluation (each forward is a collective)
        if self.accelerator.is_main_process or self.strategy.forward_needs_every_rank:
            scores = self.evaluator(self.model)
            self.model.train()
        if self.accelerator.is_main_process:
            self.final_scores = (step, scores)
            row = {"step": step, "stage": stage.name, **{f"eval/{k}": float(v) for k, v in scores.items()}}
            with self.metrics_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if self.tensorboard is not None:
                for key, value in scores.items():
                    self.tensorboard.add_scalar(f"eval/{key}", value, step)
        self.accelerator.wait_for_everyone()

    def _check_finite(self, losses, stage: StageSpec) -> None:
        """Before the optimizer step: a NaN/inf loss on any process stops every process."""
        if global_sum([0 if math.isfinite(losses.total) else 1])[0]:
            self._diverged(stage, f"the loss is {_loss_text(losses)}", applied=False)

    def _check_gradient_norm(self, norm: float | None, losses, stage: StageSpec) -> None:
        """After ``strategy.step``: a non-finite global gradient norm was not applied; stop everywhere.
        (Under fp16 loss scaling an overflow is a skipped step, not divergence.)"""
        bad = norm is not None and not math.isfinite(norm) and not self.strategy.loss_scaled
        if global_sum([1 if bad else 0])[0]:  # the norm is global already; this keeps the stop lockstep
            self._diverged(stage, f"the gradient norm is {norm:g} (loss {_loss_text(losses)})", applied=False)

    def _check_weights(self, stage: StageSpec, before: str) -> None:
        """Before anything is written: NaN/inf weights on any process stop every process, unsaved."""
        bad = nonfinite_weights(self.model)
        if global_sum([len(bad)])[0]:
            names = f" ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})" if bad else ""
            self._diverged(stage, f"weights are not finite{names} after the step, before {before}", applied=True)

    def _diverged(self, stage: StageSpec, what: str, applied: bool) -> None:
        """Raises :class:`TrainingDiverged`: one line with the step, what was not finite, and how to go on."""
        step = self.progress.global_step + (0 if applied else 1)
        last = self.last_checkpoint
        rates = ", ".join(f"{g.lr:g}" for g in stage.trainable)
        lower = ("use bf16 instead of fp16 or lower the learning rate" if self.recipe.train.mixed_precision == "fp16"
                 else "lower the learning rate") + f" (now {rates})"
        kept = f"{'' if applied else 'the step was not applied and '}nothing was saved"
        text = f"training diverged at step {step} (stage {stage.name!r})"
        if last is not None and last == self.resumed_from and step == self.resumed_step + 1:
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

    # ----------------------------------------------------------------------------- saving
    def _save_checkpoint(self, optimizer, scheduler, sampler_state: dict | None = None) -> None:
        name = f"{ckpt.PREFIX}{self.progress.global_step:06d}"
        self._check_weights(self.recipe.stages[self.progress.stage_index], f"writing checkpoint {name}")
        tmp = self.checkpoints / f".tmp-{name}"
        if self.accelerator.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        with quiet_saving():
            self.strategy.save_model(self.model, tmp / "model")  # collective under FSDP / ZeRO-3
            self.strategy.save_optimizer(self.model, optimizer, tmp)
        if self.accelerator.is_main_process:
            state = {"progress": self.progress.__dict__, "sampler": sampler_state or self.sampler.state_dict(),
                     "scheduler": scheduler.state_dict()}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        ckpt.save_rng(tmp, self.rank)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            ckpt.commit(tmp, self.checkpoints / name, self.recipe.train.keep_last)
        self.last_checkpoint = self.checkpoints / name
        self.accelerator.wait_for_everyone()

    def _finish(self) -> Path:
        final = self.output / "model"
        self._check_weights(self.recipe.stages[-1], "saving the trained model")
        with quiet_saving():
            self.strategy.save_model(self.model, final)
        if self.accelerator.is_main_process:
            from .report import plot_losses, write_model_card

            plot_losses(self.metrics_file, self.output / "loss_curves.png")
            evaluation = self._final_evaluation(final)
            write_model_card(final, self.model, self.recipe, self.metrics_file, self.progress.skipped,
                             evaluation=evaluation)
            if self.progress.skipped:
                self._log_line(self._skip_summary(final=True))
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.accelerator.wait_for_everyone()
        return final

    def _final_evaluation(self, model_dir: Path) -> dict | None:
        """The last evaluation for the model card; a benchmark's full report is also written next to
        the model as ``scores-<benchmark>-step-<N>.json``."""
        if self.final_scores is None:
            return None
        step, scores = self.final_scores
        evaluation = {"step": step, "scores": scores}
        report = getattr(self.evaluator, "last_report", None)
        if report is not None:
            from ..eval.runner import format_table, save_report

            spec = self.recipe.eval
            path = model_dir / f"scores-{self.evaluator.name}-{ckpt.PREFIX}{step:06d}.json"  # not lame eval's file
            save_report({**report, "model": str(model_dir), "benchmark": spec.benchmark, "step": step,
                         "max_queries": spec.max_queries}, path)
            evaluation.update(benchmark=spec.benchmark, max_queries=spec.max_queries, table=format_table(report),
                              file=path.name)
            self._log_line(f"scores after step {step}: overall {report['overall']:.4f} (all of them in {path})")
        return evaluation

    # ----------------------------------------------------------------------------- logging
    def _tensorboard(self):
        tensorboard = optional("torch.utils.tensorboard", extra="plots", feature="TensorBoard logging")
        return None if tensorboard is None else tensorboard.SummaryWriter(str(self.output / "tensorboard"))

    def _bar(self, stage: StageSpec):
        from tqdm.auto import tqdm

        return tqdm(total=stage.steps, initial=self.progress.step_in_stage, desc=f"stage {stage.name}",
                    disable=not self.show_progress, dynamic_ncols=True)

    def _log_step(self, stage: StageSpec, losses, lr: float, samples_per_s: float, grad_norm: float | None,
                  bar) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{losses.total:.3f}", con=f"{losses.contrastive:.3f}",
                        rec=f"{losses.reconstruction:.3f}", div=f"{losses.diversity:.3f}", lr=f"{lr:.1e}",
                        sps=f"{samples_per_s:.1f}", refresh=False)
        step = self.progress.global_step
        if not self.accelerator.is_main_process or (step % self.recipe.train.log_every and
                                                    self.progress.step_in_stage != stage.steps):
            return
        row = {"step": step, "stage": stage.name, "loss": losses.total, "contrastive": losses.contrastive,
               "reconstruction": losses.reconstruction, "diversity": losses.diversity, "lr": lr,
               "grad_norm": grad_norm, "samples_per_s": samples_per_s, "skipped": self.progress.skipped}
        if self.progress.skipped > self._skips_reported:
            self._skips_reported = self.progress.skipped
            self._log_line(self._skip_summary())
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tensorboard is not None:
            for key in ("loss", "contrastive", "reconstruction", "diversity", "lr", "grad_norm", "samples_per_s"):
                if row[key] is not None:
                    self.tensorboard.add_scalar(f"train/{key}", row[key], step)

    def _describe_stage(self, stage: StageSpec, groups) -> str:
        rows = describe_groups(groups, self.model)
        lines = [f"stage {stage.name!r}: {stage.steps} steps, batch {stage.batch_size} x {self.world} processes "
                 f"({self.strategy.describe()})"]
        lines += [f"  {r['pattern']:<50} {r['parameters']:>14,d} params" + (f"  lr {r['lr']:.1e}" if r["lr"] else "")
                  for r in rows]
        return "\n".join(lines)

    def _log_line(self, text: str) -> None:
        if self.accelerator.is_main_process and self.show_progress:
            from tqdm.auto import tqdm

            tqdm.write(text)  # above a running progress bar, not through it


def _loss_text(losses) -> str:
    return (f"{losses.total:.4g} (contrastive {losses.contrastive:.4g}, reconstruction {losses.reconstruction:.4g}, "
            f"diversity {losses.diversity:.4g})")


def train(recipe: Recipe, resume: bool = False, show_progress: bool = True, evaluator=None) -> Path:
    """Runs a recipe to the end and returns the folder of the trained model."""
    return Trainer(recipe, resume=resume, show_progress=show_progress, evaluator=evaluator).run()


def dry_run(recipe: Recipe, memory=None) -> list[dict]:
    """Builds the model and lists, per stage, its trainable groups and their sizes (nothing is trained),
    and the memory plan of one process (:mod:`lame.training.memory`; ``memory``: its
    :class:`~lame.training.memory.PlanSettings`, default ones when None).

    A backbone or decoder folder that is not on this machine is built without weights on the meta
    device from its shipped architecture (:mod:`lame.modeling.meta`), so real recipes check here too.
    """
    from .memory import PlanSettings, plan_stage, strategy_name

    memory = memory or PlanSettings()
    spec = recipe.model
    folders = [f for f in (spec.backbone, spec.decoder) if f and not f.startswith(("tiny", "shape"))]
    if spec.backbone.startswith("shape:"):
        model = build_shaped(recipe, "meta")
    elif any(not Path(f).is_dir() for f in folders):
        from ..modeling.meta import build_on_meta

        model = build_on_meta(spec.backbone, spec.decoder, model_config(recipe))
    else:
        model = build_model(recipe)
    check_stage_patterns(model, recipe)
    every_stage = strategy_name(recipe, memory.world) != "ddp"  # as Trainer.master_patterns
    report = []
    for index, stage in enumerate(recipe.stages):
        if stage.lora and not has_lora(model):
            with torch.device(model.device):
                add_lora(model, stage.lora.r, stage.lora.alpha, stage.lora.dropout, stage.lora.target_modules)
        # the dtypes the trainer holds during this stage: what the plan counts
        master_weights(model, master_patterns(recipe.stages, index, every_stage), getattr(torch, spec.dtype))
        groups = select_trainable(model, stage.trainable)
        report.append({"stage": stage.name, "steps": stage.steps, "groups": describe_groups(groups, model),
                       "memory": plan_stage(recipe, model, stage, memory)})
    return report
