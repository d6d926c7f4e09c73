from .adapters import ADAPTERS, BackboneAdapter, get_adapter
from .heads import EmbeddingHead, LatentDecoderHead
from .lame import LaMEModel, LaMEOutput, SkippedItem
from .tiny import build_tiny_model, build_tiny_tokenizer

__all__ = [
    "ADAPTERS", "BackboneAdapter", "EmbeddingHead", "LaMEModel", "LaMEOutput", "LatentDecoderHead", "SkippedItem",
    "build_tiny_model", "build_tiny_tokenizer", "get_adapter",
]
