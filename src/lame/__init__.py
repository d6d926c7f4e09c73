"""LaME: latent-reasoning multimodal embeddings in one forward pass."""

import os as _os

import torch as _torch

if "DS_ACCELERATOR" not in _os.environ and not _torch.cuda.is_available():
    # DeepSpeed (optional; accelerate imports it when installed) otherwise logs a warning at every
    # start on a machine without a GPU while it guesses its accelerator.
    _os.environ["DS_ACCELERATOR"] = "cpu"

from .config import LaMEConfig
from .data.items import ItemError
from .modeling import LaMEModel, build_tiny_model

__version__ = "0.1.0"
__all__ = ["ItemError", "LaMEConfig", "LaMEModel", "build_tiny_model"]
