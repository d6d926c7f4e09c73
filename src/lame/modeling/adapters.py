"""One small adapter per backbone family: which upstream transformers class, and its tiny config.

The three Qwen VL families share the forward interface LaME needs (``model.model`` takes
``inputs_embeds`` + ``position_ids`` and returns ``last_hidden_state``; ``get_rope_index`` gives
padding-aware multimodal RoPE positions), so an adapter is mostly data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

TINY_HIDDEN = 64


@dataclass(frozen=True)
class BackboneAdapter:
    model_type: str
    model_class: type[PreTrainedModel]
    patch_size: int
    tiny_config: Callable[..., PretrainedConfig]  # (vocab_size, token ids, hidden_size=64, num_layers=2)

    def hidden_size(self, backbone: PreTrainedModel) -> int:
        return backbone.config.text_config.hidden_size

    def positions(self, backbone: PreTrainedModel, batch: dict) -> torch.Tensor:
        """(3, B, L) multimodal RoPE positions, computed for every batch (text-only too), so left padding
        never shifts them and an item's embedding does not depend on what else is in its batch."""
        position_ids, _ = backbone.model.get_rope_index(
            batch["input_ids"],
            mm_token_type_ids=batch["mm_token_type_ids"],
            image_grid_thw=batch.get("image_grid_thw"),
            attention_mask=batch["attention_mask"],
        )
        return position_ids

    def run(self, backbone: PreTrainedModel, batch: dict, inputs_embeds: torch.Tensor, use_cache: bool = False):
        """The backbone without its LM head over a collated batch; returns the upstream model output."""
        return backbone.model(
            inputs_embeds=inputs_embeds,
            attention_mask=batch["attention_mask"],
            position_ids=self.positions(backbone, batch),
            pixel_values=batch.get("pixel_values"),
            image_grid_thw=batch.get("image_grid_thw"),
            mm_token_type_ids=batch["mm_token_type_ids"],
            use_cache=use_cache,
        )

    def last_hidden_state(self, backbone: PreTrainedModel, batch: dict, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Runs the backbone without its LM head and returns the last hidden states (B, L, H)."""
        return self.run(backbone, batch, inputs_embeds).last_hidden_state


def _tiny_text(vocab_size: int, ids: dict[str, int], hidden: int, layers: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )


def _mrope_section(hidden: int) -> list[int]:
    """Temporal/height/width split of the rotary half-dimension (4 heads): [2, 3, 3] at hidden 64."""
    half = hidden // 4 // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def _token_ids(ids: dict[str, int]) -> dict:
    return dict(
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _tiny_qwen2_vl(vocab_size: int, ids: dict[str, int], hidden: int = TINY_HIDDEN,
                   layers: int = 2) -> PretrainedConfig:
    text = _tiny_text(vocab_size, ids, hidden, layers) | dict(
        rope_scaling={"type": "mrope", "mrope_section": _mrope_section(hidden)})
    vision = dict(depth=2, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=14)
    return Qwen2VLConfig(text_config=text, vision_config=vision, **_token_ids(ids))


def _tiny_qwen2_5_vl(vocab_size: int, ids: dict[str, int], hidden: int = TINY_HIDDEN,
                     layers: int = 2) -> PretrainedConfig:
    text = _tiny_text(vocab_size, ids, hidden, layers) | dict(
        rope_scaling={"type": "mrope", "mrope_section": _mrope_section(hidden)})
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
        fullatt_block_indexes=[1], window_size=56, patch_size=14,
    )
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_token_ids(ids))


def _tiny_qwen3_vl(vocab_size: int, ids: dict[str, int], hidden: int = TINY_HIDDEN,
                   layers: int = 2) -> PretrainedConfig:
    text = _tiny_text(vocab_size, ids, hidden, layers) | dict(
        head_dim=hidden // 4, rope_scaling={"rope_type": "default", "mrope_section": _mrope_section(hidden),
                                                "mrope_interleaved": True}
    )
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden, patch_size=16,
        deepstack_visual_indexes=[0, 1], num_position_embeddings=64,
    )
    return Qwen3VLConfig(text_config=text, vision_config=vision, **_token_ids(ids))


ADAPTERS: dict[str, BackboneAdapter] = {
    a.model_type: a
    for a in (
        BackboneAdapter("qwen2_vl", Qwen2VLForConditionalGeneration, 14, _tiny_qwen2_vl),
        BackboneAdapter("qwen2_5_vl", Qwen2_5_VLForConditionalGeneration, 14, _tiny_qwen2_5_vl),
        BackboneAdapter("qwen3_vl", Qwen3VLForConditionalGeneration, 16, _tiny_qwen3_vl),
    )
}


def get_adapter(model_type: str) -> BackboneAdapter:
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise ValueError(
            f"unsupported backbone type {model_type!r}; supported: {', '.join(sorted(ADAPTERS))}"
        ) from None
