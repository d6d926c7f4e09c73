"""The autograd mode of :meth:`LaMEModel.encode` and :meth:`LaMEModel.decode_latents`.

They run under ``torch.inference_mode`` (the fastest), except inside :func:`no_inference_mode`, where
they run under ``torch.no_grad``. Sharded training evaluates inside it (DeepSpeed ZeRO-3,
:meth:`lame.training.parallel.DeepSpeedZero.evaluation_context`): the weights ZeRO-3 gathers for a
forward under inference_mode become inference tensors, which the next training backward cannot use.

A context variable rather than an attribute of the model: nothing outside changes the model, and
other threads (each has its own context) keep inference_mode.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch

_NO_GRAD_ONLY: ContextVar[bool] = ContextVar("lame_no_inference_mode", default=False)


@contextmanager
def no_inference_mode():
    """While active in this thread, LaME models embed under ``torch.no_grad`` instead of
    ``torch.inference_mode`` (tensors made inside stay usable by autograd later)."""
    token = _NO_GRAD_ONLY.set(True)
    try:
        yield
    finally:
        _NO_GRAD_ONLY.reset(token)


def inference_context():
    """The context ``encode`` runs its forwards under: ``torch.inference_mode()``, or
    ``torch.no_grad()`` inside :func:`no_inference_mode`."""
    return torch.no_grad() if _NO_GRAD_ONLY.get() else torch.inference_mode()
