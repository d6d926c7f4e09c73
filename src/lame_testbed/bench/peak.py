"""Measured peak memory of training steps on the CPU: what ``lame bench memory`` checks the memory
planner (:mod:`lame.training.memory`) against.

:class:`PeakTracker` counts every tensor storage an operation returns, through a dispatch mode, from
its allocation until the storage is freed (a ``weakref`` finalizer): the quantity a GPU's
``torch.cuda.max_memory_allocated`` reports, not an allocator's cache or the process's resident memory.
"""

from __future__ import annotations

import weakref
from functools import partial

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from lame.training.memory import Setup


class PeakTracker(TorchDispatchMode):
    """Bytes of tensor storage alive while the mode is on, and their peak: every storage an operation
    returns is counted until it is freed. ``baseline`` counts storages alive before (the weights)."""

    def __init__(self, baseline: list[torch.Tensor] | None = None):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        for t in baseline or []:
            self._add(t)
        self.baseline = self.current

    def _add(self, t) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # e.g. a sparse or wrapper tensor
            return
        key, size = storage.data_ptr(), storage.nbytes()
        if not size or key in self.live:
            return
        self.live[key] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def reset_peak(self) -> None:
        self.peak = self.current

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            self._add(t)
        return out


def measure_training_peak(model, batch, weights, setup: Setup, steps: int = 2) -> dict:
    """Peak tensor bytes of a training step on this (CPU) process, measured with :class:`PeakTracker`:
    ``steps`` steps of AdamW over the trainable parameters, the last one measured (its optimizer states
    exist by then), and the bytes of the weights and buffers alive before it."""
    from lame.training.steps import compute_gradients

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(setup.mixed_precision)
    autocast = partial(torch.autocast, "cpu", dtype=dtype, enabled=dtype is not None)
    if setup.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    with PeakTracker(list(model.parameters()) + list(model.buffers())) as tracker:
        for _ in range(steps):
            tracker.reset_peak()
            compute_gradients(model, batch, weights, setup.grad_cache_chunk, autocast=autocast)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    if setup.gradient_checkpointing:
        model.backbone.gradient_checkpointing_disable()
    return {"peak": tracker.peak, "weights": tracker.baseline}
