"""How the processes of a training run share the work: data parallel, FSDP, or DeepSpeed ZeRO.

Every strategy sees the same step: ``compute_gradients`` runs one or several forward/backward
passes (several with GradCache), then the strategy makes the gradients global and steps the
optimizer. The losses are already scaled so that the MEAN of the per-process gradients is the
global gradient (:mod:`lame.training.steps`); every strategy averages.

* ``ddp`` — parameters replicated, one bucketed all-reduce per step done here. Not PyTorch's
  ``DistributedDataParallel``: a GradCache step runs several forwards per backward, which DDP's
  reducer only supports through ``no_sync`` bookkeeping that silently skips parameters unused in
  the last chunk.
* ``fsdp`` — PyTorch FSDP2 (``fully_shard``): every transformer block (the backbone's and the
  decoder's ``_no_split_modules``), the decoder head and the root are sharded; gradients are
  reduce-scattered by FSDP at every backward and accumulate in the sharded ``.grad``, which is what
  GradCache's several backwards need.
* ``deepspeed`` — a DeepSpeed engine per stage with the recipe's optimizer groups (ZeRO stage and
  offload from the DeepSpeed config). Every backward of a step is a DeepSpeed micro-step and only
  the last is a gradient-accumulation boundary, so GradCache's several backwards make one update.

``auto`` follows ``accelerate launch``: an FSDP or DeepSpeed accelerate config selects that strategy.

Every ``step`` returns the global gradient norm (the clipping norm, the same number on every
process) and applies nothing when it is not finite: weights, optimizer state and schedule stay as
they were, so the trainer can stop every process together with the last good state intact. With
fp16 loss scaling an infinite norm is the scaler's business instead (the step is skipped and the
scale shrinks), not divergence: ``loss_scaled`` tells the trainer which case it is in.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from ..extras import require
from . import checkpoint as ckpt
from .recipe import RecipeError


def resolve_strategy(name: str, accelerator) -> str:
    """The strategy to use: ``auto`` follows the distributed type ``accelerate launch`` set up."""
    if name != "auto":
        return name
    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    # On CPU accelerate reports MULTI_CPU whatever the launch config said; its launcher's flags still tell.
    if kind == "FSDP" or _env_flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    if kind == "DEEPSPEED" or _env_flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    return "ddp"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def make_strategy(name: str, accelerator, deepspeed_config: str | None = None) -> "DataParallel":
    name = resolve_strategy(name, accelerator)
    if name == "fsdp":
        return FullySharded(accelerator)
    if name == "deepspeed":
        return DeepSpeedZero(accelerator, deepspeed_config)
    return DataParallel(accelerator)


class DataParallel:
    """Replicated parameters, gradients averaged with one all-reduce (identity on one process)."""

    name = "ddp"
    forward_needs_every_rank = False  # must every process join each forward (evaluation included)?
    lockstep = False  # must every process run the same forward/backward passes (compute_gradients)?

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.world = accelerator.num_processes

    def describe(self) -> str:
        return "replicated, gradients all-reduced" if self.world > 1 else "one process"

    # --- setting up
    def prepare_model(self, model):
        """Places (and, for the sharded strategies, shards) the model; returns it."""
        return model.to(self.accelerator.device)

    def evaluation_context(self):
        """The context the trainer evaluates in (around its evaluator's ``encode`` calls)."""
        return nullcontext()

    def make_optimizer(self, model, groups: list[dict], stage, mixed_precision: str = "no"):
        """The stage's optimizer over ``groups`` (torch param-group dicts)."""
        self.trainable = [p for g in groups for p in g["params"]]
        # fp16 gradients underflow without loss scaling (bf16 has fp32's range and needs none)
        self.scaler = torch.amp.GradScaler(self.accelerator.device.type) if mixed_precision == "fp16" else None
        return torch.optim.AdamW(groups)

    @property
    def loss_scaled(self) -> bool:
        """fp16 loss scaling: an infinite gradient norm is an overflow the scaler skips, not divergence."""
        return getattr(self, "scaler", None) is not None

    # --- one step
    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """One of a step's backward passes; ``last`` marks the final one of the step."""
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer, scheduler, max_grad_norm: float | None) -> float | None:
        """Makes the gradients global, clips them and updates; returns the global gradient norm
        (before clipping). A non-finite norm updates nothing (see the module's docstring)."""
        self._all_reduce_gradients()
        if self.scaler:
            self.scaler.unscale_(optimizer)  # the averaged gradients: every process decides alike
        norm = self._clip(max_grad_norm)
        if self.scaler:
            self.scaler.step(optimizer)  # skipped when a gradient is inf/NaN; the scale then shrinks
            self.scaler.update()
        elif math.isfinite(norm):
            optimizer.step()
        else:
            optimizer.zero_grad(set_to_none=True)
            return norm
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def _clip(self, max_grad_norm: float | None) -> float:
        """Clips to ``max_grad_norm`` (0 or None: no clipping); returns the norm before clipping. On
        sharded (DTensor) gradients the norm is the global one; replicated gradients are already global."""
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_grad_norm or math.inf)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def _all_reduce_gradients(self) -> None:
        """A parameter without a gradient on any process keeps ``grad=None``, so the optimizer
        skips it exactly as in a single-process run."""
        if self.world == 1:
            return
        had_grad = torch.tensor([p.grad is not None for p in self.trainable], dtype=torch.int32,
                                device=self.trainable[0].device)
        dist.all_reduce(had_grad, op=dist.ReduceOp.MAX)
        grads = []
        for p, anywhere in zip(self.trainable, had_grad.tolist()):
            if not anywhere:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        if not grads:
            return
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.world
        for grad, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)

    # --- saving (every process calls these; only the main process writes model files)
    def save_model(self, model, directory: Path) -> None:
        if self.accelerator.is_main_process:
            model.save_pretrained(directory)

    def save_optimizer(self, model, optimizer, directory: Path) -> None:
        if self.accelerator.is_main_process:
            ckpt.save_optimizer_state(optimizer.state_dict(), directory)
            if self.scaler:
                (directory / "grad_scaler.json").write_text(json.dumps(self.scaler.state_dict()))

    def load_optimizer(self, model, optimizer, directory: Path) -> None:
        optimizer.load_state_dict(ckpt.load_optimizer_state(directory))
        if self.scaler and (directory / "grad_scaler.json").is_file():
            self.scaler.load_state_dict(json.loads((directory / "grad_scaler.json").read_text()))



class FullySharded(DataParallel):
    """PyTorch FSDP2. Checkpoints hold full (unsharded) weights and optimizer state keyed by
    parameter name, gathered to the main process (the per-process RNG states tie a resume to the
    same number of processes)."""

    name = "fsdp"
    forward_needs_every_rank = True  # the parameters are sharded: every process joins every forward
    lockstep = True

    def describe(self) -> str:
        return f"FSDP2 over {self.world} processes"

    def prepare_model(self, model):
        # no model.to(device) first: fully_shard moves each block to the device as it shards it
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        mesh = init_device_mesh(self.accelerator.device.type, (self.world,))
        reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower()  # from an accelerate FSDP config
        reshard = reshard not in ("false", "0", "no", "shard_grad_op", "2")  # SHARD_GRAD_OP: ZeRO-2-like
        blocks = set(getattr(model.backbone, "_no_split_modules", None) or [])
        if model.decoder_head is not None:
            blocks |= set(getattr(model.decoder_head.decoder, "_no_split_modules", None) or [])
        for module in model.modules():
            if type(module).__name__ in blocks:
                fully_shard(module, mesh=mesh, reshard_after_forward=reshard)
        if model.decoder_head is not None:
            fully_shard(model.decoder_head, mesh=mesh, reshard_after_forward=reshard)
            # the decoder head is called through these methods, not forward(): FSDP must gather for them
            for method in ("loss_terms", "generate"):
                register_fsdp_forward_method(model.decoder_head, method)
        fully_shard(model, mesh=mesh)
        for method in ("encode", "decode_latents"):
            register_fsdp_forward_method(model, method)
        return model

    def make_optimizer(self, model, groups: list[dict], stage, mixed_precision: str = "no"):
        if mixed_precision == "fp16":
            raise RecipeError("train.mixed_precision fp16 needs loss scaling, which the fsdp strategy does not do; "
                              "use bf16 (or the deepspeed strategy)")
        return super().make_optimizer(model, groups, stage, "no")

    def step(self, optimizer, scheduler, max_grad_norm: float | None) -> float | None:
        norm = self._clip(max_grad_norm)  # FSDP reduce-scattered the gradients in the backward
        if math.isfinite(norm):
            optimizer.step()
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def save_model(self, model, directory: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.accelerator.is_main_process:
            model.save_pretrained(directory, state_dict=full)

    def save_optimizer(self, model, optimizer, directory: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.accelerator.is_main_process:
            ckpt.save_optimizer_state(full, directory)

    def load_optimizer(self, model, optimizer, directory: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        # read on the main process only and broadcast: one full copy in host memory, not one per process
        state = ckpt.load_optimizer_state(directory) if self.accelerator.is_main_process else {}
        set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


@contextmanager
def _cpu_accelerator_hint():
    """DS_ACCELERATOR=cpu while DeepSpeed is first imported on a machine without a GPU, then unset again.

    DeepSpeed otherwise logs a warning as it falls back to the CPU after failing to detect an
    accelerator; it keeps the accelerator it chose for the rest of the process.
    """
    if "DS_ACCELERATOR" in os.environ or torch.cuda.is_available():
        yield
        return
    os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        yield
    finally:
        os.environ.pop("DS_ACCELERATOR", None)


def quiet_deepspeed_import() -> None:
    """Imports DeepSpeed, when it is installed, without its CPU-fallback warning: accelerate imports it
    whenever a model is saved (to unwrap engines), which would print the warning in every CPU run."""
    import importlib.util
    import sys

    if "deepspeed" not in sys.modules and importlib.util.find_spec("deepspeed") is not None:
        with _cpu_accelerator_hint():
            import deepspeed

            deepspeed.accelerator.get_accelerator()


def import_deepspeed():
    """The ``deepspeed`` module (the ``deepspeed`` extra), imported without its CPU-fallback warning."""
    with _cpu_accelerator_hint():
        deepspeed = require("deepspeed", extra="deepspeed", feature="train.strategy 'deepspeed'")
        deepspeed.accelerator.get_accelerator()  # chooses (and caches) the accelerator while the hint is set
    return deepspeed


class DeepSpeedZero(DataParallel):
    """DeepSpeed ZeRO (stage and offload from its JSON config); one engine per training stage."""

    name = "deepspeed"
    lockstep = True  # ZeRO reduces gradient buckets inside every backward

    def __init__(self, accelerator, config_path: str | None):
        super().__init__(accelerator)
        import_deepspeed()  # a missing extra fails here, before training
        self.config = self._read_config(accelerator, config_path)
        self.engine = None
        self.forward_needs_every_rank = self.zero_stage == 3

    @staticmethod
    def _read_config(accelerator, config_path: str | None) -> dict:
        if config_path:
            return json.loads(Path(config_path).read_text())
        plugin = getattr(accelerator.state, "deepspeed_plugin", None)
        if plugin is None and os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
            return json.loads(Path(os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"]).read_text())
        if plugin is None:
            raise RecipeError("train.strategy 'deepspeed' needs train.deepspeed_config (a DeepSpeed JSON file) "
                              "or an accelerate DeepSpeed config (accelerate launch --config_file ...)")
        return dict(plugin.deepspeed_config)

    def describe(self) -> str:
        return f"DeepSpeed ZeRO-{self.zero_stage} over {self.world} processes"

    @property
    def zero_stage(self) -> int:
        return int(self.config.get("zero_optimization", {}).get("stage", 2))

    def _engine_config(self, micro_batch: int, max_grad_norm: float | None, mixed_precision: str) -> dict:
        """The user's config with what the recipe owns filled in (where accelerate would put "auto")."""
        config = json.loads(json.dumps(self.config))
        for section in [config, *(v for v in config.values() if isinstance(v, dict))]:
            for key, value in list(section.items()):
                if value == "auto":
                    del section[key]
        config.pop("train_batch_size", None)
        config.pop("optimizer", None)  # the recipe's per-group AdamW
        config.pop("scheduler", None)  # the recipe's schedule
        config["train_micro_batch_size_per_gpu"] = micro_batch
        config["gradient_accumulation_steps"] = 1
        config["gradient_clipping"] = float(max_grad_norm or 0.0)
        config["zero_allow_untested_optimizer"] = True  # the recipe's AdamW with per-group learning rates
        config["zero_force_ds_cpu_optimizer"] = False  # ... also when the optimizer state is offloaded
        for key in ("bf16", "fp16"):
            config.setdefault(key, {})["enabled"] = mixed_precision == key
        config.setdefault("zero_optimization", {}).setdefault("stage", 2)
        return config

    def evaluation_context(self):
        # ZeRO-3 gathers the partitioned weights for each forward: gathered under inference_mode they
        # become inference tensors, which the next training backward cannot use. Evaluate under no_grad.
        if self.zero_stage == 3:
            from ..modeling.inference import no_inference_mode

            return no_inference_mode()
        return nullcontext()

    def make_optimizer(self, model, groups: list[dict], stage, mixed_precision: str = "no"):
        """Starts this stage's engine; returns the wrapped torch optimizer (the scheduler drives its lr)."""
        deepspeed = import_deepspeed()
        self._destroy_engine()  # the previous stage's: its hooks and partitions of the optimizer state
        config = self._engine_config(stage.batch_size, stage.max_grad_norm, mixed_precision)
        optimizer = torch.optim.AdamW(groups)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        return optimizer

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        # Each backward of a step is a micro-step; only the last is the accumulation boundary. (DeepSpeed's
        # unmanaged accumulation mode would fit better but breaks ZeRO-3 on a second backward of the
        # root module's own parameters: their .grad is left as an empty partition placeholder.)
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss, scale_wrt_gas=False)
        if not last:
            self.engine.step()  # not a boundary: micro-step bookkeeping only, no update

    @property
    def loss_scaled(self) -> bool:
        return bool(self.engine is not None and self.engine.fp16_enabled())

    def step(self, optimizer, scheduler, max_grad_norm: float | None) -> float | None:
        # DeepSpeed computes the global norm (clipping), skips the update when it is not finite (fp32,
        # fp16, and bf16 with its default check_grad_overflow) and zeroes the gradients. None: the
        # DeepSpeed config turned the norm off (zero_optimization.compute_grad_norm: false).
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        norm = None if norm is None else float(norm)
        if norm is None or math.isfinite(norm) or self.loss_scaled:
            scheduler.step()
        return norm

    def save_model(self, model, directory: Path) -> None:
        if self.zero_stage == 3:
            # DeepSpeed gathers the partitions module by module to the main process (what its
            # save_16bit_model does; the weights keep their training dtype)
            full = self.engine._zero3_consolidated_16bit_state_dict()
            if self.accelerator.is_main_process:
                model.save_pretrained(directory, state_dict=full)
            return
        super().save_model(model, directory)

    def save_optimizer(self, model, optimizer, directory: Path) -> None:
        # ZeRO partitions the optimizer state: DeepSpeed's own checkpoint of this engine, per rank
        # (torch.save files under deepspeed/, the only pickled files of a checkpoint)
        self.engine.save_checkpoint(str(directory / "deepspeed"), tag="state", save_latest=False)

    def load_optimizer(self, model, optimizer, directory: Path) -> None:
        self.engine.load_checkpoint(str(directory / "deepspeed"), tag="state", load_module_strict=False,
                                    load_optimizer_states=True, load_lr_scheduler_states=False,
                                    load_module_only=False)

    def _destroy_engine(self) -> None:
        if self.engine is not None:
            self.engine.destroy()
            self.engine = None
