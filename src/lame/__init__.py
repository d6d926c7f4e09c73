"""LaME: latent-reasoning multimodal embeddings in one forward pass."""

from .config import LaMEConfig
from .data.items import ItemError
from .modeling import LaMEModel, build_tiny_model

__version__ = "0.1.0"
__all__ = ["ItemError", "LaMEConfig", "LaMEModel", "build_tiny_model"]
