"""Random-weight models of the real backbones' shapes, for speed and memory measurements without checkpoints.

A *shape* is one of the shipped architectures (:mod:`lame.modeling.meta`): ``qwen2-vl-2b``,
``qwen2.5-vl-3b``, ``qwen3-vl-8b``. :func:`build_shaped_model` builds that architecture with random
weights: the real widths, head counts, vocabulary size (the output layer a generated token pays for)
and vision tower, with the project's tiny tokenizer (the token ids of the special tokens are set to
its ids; the embedding table keeps the real vocabulary) and the family's image processor at the
real patch and merge sizes. ``layers`` / ``vision_layers`` keep only the first N blocks of the
language model / vision tower, to make CPU runs short: every block of one tower has the same shape
and cost, so a truncated model's time is the full model's minus whole blocks, which is how
``lame bench speed`` extrapolates to the full depth (see ``docs/speed.md``). The decoder head, when
asked for, has the shape of Qwen3-0.6B (``decoder_layers`` truncates it the same way).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ..config import LaMEConfig
from ..errors import InvalidInput
from .adapters import get_adapter
from .meta import known_architectures
from .tiny import QWEN_SPECIAL_TOKENS, build_tiny_tokenizer

# The image processors of the real checkpoints read at most this many pixels per image by default;
# recipes usually lower it (configs/qwen2-vl-2b.yaml: 1,003,520 = 1280 visual tokens).
DEFAULT_MAX_PIXELS = 1003520


@dataclass(frozen=True)
class Shape:
    name: str  # the CLI name, e.g. qwen2-vl-2b
    architecture: str  # the shipped config.json copy (lame/modeling/architectures/<name>.json)
    patch_size: int
    merge_size: int = 2
    decoder: str = "Qwen3-0.6B"


SHAPES: dict[str, Shape] = {s.name: s for s in (
    Shape("qwen2-vl-2b", "Qwen2-VL-2B-Instruct", patch_size=14),
    Shape("qwen2.5-vl-3b", "Qwen2.5-VL-3B-Instruct", patch_size=14),
    Shape("qwen3-vl-8b", "Qwen3-VL-8B-Instruct", patch_size=16),
)}


def parse_shape_spec(value: str) -> tuple[str, int | None]:
    """``shape:NAME`` or ``shape:NAME/N`` (a recipe's backbone: N language-model blocks, the vision tower
    in proportion) -> (NAME, N or None)."""
    body = value.split(":", 1)[1] if value.startswith("shape:") else value
    name, _, layers = body.partition("/")
    get_shape(name)
    if layers and not layers.isdigit():
        raise InvalidInput(f"{value}: expected shape:NAME or shape:NAME/BLOCKS, e.g. shape:qwen2-vl-2b/2")
    return name, int(layers) if layers else None


def get_shape(name: str) -> Shape:
    try:
        return SHAPES[name]
    except KeyError:
        raise InvalidInput(f"unknown shape {name!r}; known: {', '.join(SHAPES)}") from None


def architecture(name: str) -> dict:
    """The shipped config.json of an architecture (a folder name such as ``Qwen2-VL-2B-Instruct``)."""
    return json.loads(known_architectures()[name].read_text())


def depths(shape: str | Shape) -> dict[str, int]:
    """The full depths of a shape: ``{"layers": language-model blocks, "vision_layers": vision blocks}``."""
    shape = get_shape(shape) if isinstance(shape, str) else shape
    raw = architecture(shape.architecture)
    return {"layers": raw["text_config"]["num_hidden_layers"], "vision_layers": raw["vision_config"]["depth"]}


def resolve_depths(shape: str | Shape, layers: int | None = None, vision_layers: int | None = None) -> dict:
    """The blocks kept of each tower, and the full depths. Without ``vision_layers``, the vision tower
    keeps the same fraction of its blocks as the language model (at least one), so the prompt pass
    shrinks evenly and the cost balance between the towers stays the full model's."""
    full = depths(shape)
    layers = full["layers"] if layers is None else layers
    if vision_layers is None:
        vision_layers = max(1, round(layers * full["vision_layers"] / full["layers"]))
    return {"layers": layers, "vision_layers": min(vision_layers, full["vision_layers"]),
            "full_layers": full["layers"], "full_vision_layers": full["vision_layers"]}


def _squeeze(indexes: list[int], full: int, depth: int) -> list[int]:
    """Block indexes of a ``full``-deep tower mapped onto the first ``depth`` blocks, order and spacing kept."""
    if depth >= full:
        return list(indexes)
    return sorted({min(depth - 1, (i * depth) // full) for i in indexes})


def shaped_backbone_config(shape: str | Shape, layers: int | None = None, vision_layers: int | None = None,
                           token_ids: dict[str, int] | None = None):
    """The transformers config of ``shape``, optionally truncated, with ``token_ids`` (special token ->
    id) in place of the real tokenizer's ids."""
    shape = get_shape(shape) if isinstance(shape, str) else shape
    raw = architecture(shape.architecture)
    text, vision = dict(raw["text_config"]), dict(raw["vision_config"])
    full_text, full_vision = text["num_hidden_layers"], vision["depth"]
    for value, full, what in ((layers, full_text, "layers"), (vision_layers, full_vision, "vision_layers")):
        if value is not None and not 1 <= value <= full:
            raise InvalidInput(f"{what}: {shape.name} has {full} blocks; give 1 to {full}, got {value}")
    if layers is not None:
        text["num_hidden_layers"] = layers
    if vision_layers is not None:
        vision["depth"] = vision_layers
        for key in ("fullatt_block_indexes", "deepstack_visual_indexes"):
            if key in vision:
                vision[key] = _squeeze(vision[key], full_vision, vision_layers)
    ids = {}
    if token_ids is not None:
        ids = dict(bos_token_id=None, eos_token_id=token_ids["<|im_end|>"], pad_token_id=token_ids["<|endoftext|>"])
        text.update(ids)
        ids.update(image_token_id=token_ids["<|image_pad|>"], video_token_id=token_ids["<|video_pad|>"],
                   vision_start_token_id=token_ids["<|vision_start|>"], vision_end_token_id=token_ids["<|vision_end|>"])
    top = {k: v for k, v in raw.items() if k not in ("text_config", "vision_config")}
    return AutoConfig.for_model(**top, **ids, text_config=text, vision_config=vision)


def shaped_image_processor(shape: str | Shape, min_pixels: int | None = None, max_pixels: int | None = None):
    """The family's image processor at the real patch and merge sizes (an image of W x H pixels becomes
    about W*H / (patch * merge)^2 visual tokens, at most ``max_pixels`` pixels)."""
    shape = get_shape(shape) if isinstance(shape, str) else shape
    from transformers import Qwen2VLImageProcessorPil

    factor = shape.patch_size * shape.merge_size
    return Qwen2VLImageProcessorPil(patch_size=shape.patch_size, merge_size=shape.merge_size, temporal_patch_size=2,
                                    min_pixels=min_pixels or 4 * factor**2, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)


def build_shaped_model(shape: str, layers: int | None = None, vision_layers: int | None = None,
                       config: LaMEConfig | None = None, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu", seed: int = 0, decoder_layers: int | None = None,
                       attn_implementation: str | None = None, decoder: str = "shape", **overrides):
    """A LaME model of ``shape`` with random weights, built directly on ``device`` in ``dtype``: the first
    ``layers`` language-model blocks and ``vision_layers`` vision blocks (default: all; with ``layers`` only,
    the same fraction of the vision tower, see :func:`resolve_depths`).

    ``config.use_decoder`` adds a decoder head of Qwen3-0.6B's shape (``decoder_layers`` of its 28 blocks,
    default all), or (``decoder="tiny"``) the tiny decoder of the tests. ``attn_implementation``: transformers' name (``sdpa`` by default, ``flash_attention_2``
    on a GPU with flash-attn installed).
    """
    from .lame import LaMEModel

    spec = get_shape(shape)
    config = (config or LaMEConfig(max_length=8192)).replace(**overrides)
    tokenizer = build_tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    if layers is not None and vision_layers is None:  # the vision tower truncated in the same proportion
        vision_layers = resolve_depths(spec, layers)["vision_layers"]
    backbone_config = shaped_backbone_config(spec, layers, vision_layers, ids)
    adapter = get_adapter(backbone_config.model_type)
    torch.manual_seed(seed)
    kwargs = {"dtype": dtype} | ({"attn_implementation": attn_implementation} if attn_implementation else {})
    with torch.device(device):
        backbone = adapter.model_class._from_config(backbone_config, **kwargs).eval()
        decoder_tokenizer = None
        if config.use_decoder and config.num_reason_tokens > 0 and decoder == "tiny":
            from .tiny import tiny_decoder

            decoder_tokenizer = build_tiny_tokenizer()
            decoder = tiny_decoder(decoder_tokenizer).to(dtype)
        elif config.use_decoder and config.num_reason_tokens > 0:
            decoder_tokenizer = build_tiny_tokenizer()
            raw = architecture(spec.decoder)
            if decoder_layers is not None:
                raw["num_hidden_layers"] = decoder_layers
            raw.update(eos_token_id=decoder_tokenizer.eos_token_id, pad_token_id=decoder_tokenizer.pad_token_id,
                       bos_token_id=None)
            decoder = AutoModelForCausalLM.from_config(AutoConfig.for_model(**raw), **kwargs).eval()
        else:
            decoder = None
    processor = shaped_image_processor(spec, config.min_pixels, config.max_pixels)
    model = LaMEModel.from_components(config, backbone, tokenizer, processor, decoder, decoder_tokenizer)
    return model.to(device=device, dtype=dtype).eval()
