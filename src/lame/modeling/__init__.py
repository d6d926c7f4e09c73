from .adapters import ADAPTERS, BackboneAdapter, QwenVLAdapter, get_adapter, register_adapter, tiny_families
from .heads import EmbeddingHead, LatentDecoderHead
from .lame import LaMEModel, LaMEOutput, SkippedItem
from .tiny import build_tiny_model, build_tiny_tokenizer
from .variants import VARIANTS, variant_class

__all__ = [
    "ADAPTERS", "BackboneAdapter", "EmbeddingHead", "LaMEModel", "LaMEOutput", "LatentDecoderHead", "QwenVLAdapter",
    "SkippedItem", "VARIANTS", "build_tiny_model", "build_tiny_tokenizer", "get_adapter", "register_adapter",
    "tiny_families", "variant_class",
]
