"""One small adapter per backbone family: everything LaME knows about a family lives here.

An adapter names the upstream transformers class, its image processor class, the image placeholder
and end-of-turn tokens, how many placeholder copies an image takes, where the language model sits
(LoRA goes there), the positions a batch gets, and how to run the backbone over a collated batch.
A family that reads videos also says how a video becomes the backbone's video inputs and tokens
(:meth:`BackboneAdapter.video_inputs`, :meth:`BackboneAdapter.video_text`).
The defaults of :class:`BackboneAdapter` fit a transformers VLM whose ``model`` (e.g. ``LlavaModel``)
takes ``inputs_embeds``, ``attention_mask``, ``position_ids`` and ``pixel_values`` and whose language
model takes 1-D positions; a new family is one subclass registered with :func:`register_adapter`::

    from lame.modeling import BackboneAdapter, register_adapter

    @dataclass(frozen=True, kw_only=True)
    class MyAdapter(BackboneAdapter):
        def image_slots(self, vision, image_processor, backbone_config):
            n = vision["pixel_values"].shape[0]
            return [backbone_config.image_seq_length] * n, [1] * n

    register_adapter(MyAdapter(model_type="my_vlm", model_class=MyVLMForConditionalGeneration,
                               image_processor_class=MyImageProcessor, image_token="<image>"))

The three Qwen VL families share one adapter class, :class:`QwenVLAdapter`: multimodal RoPE positions
from ``get_rope_index`` and a patch grid per image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import torch
from PIL import Image
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from ..data.featurize import ImageLayout
from ..data.video import Video
from ..errors import InvalidInput

TINY_HIDDEN = 64


@dataclass(frozen=True, kw_only=True)
class BackboneAdapter:
    """What LaME needs to know about one backbone family (see the module docstring)."""

    model_type: str  # the checkpoints' config.model_type
    model_class: type[PreTrainedModel]
    image_processor_class: type
    image_token: str  # the placeholder the chat template writes once per image
    end_of_turn_token: str | None = None  # ends a generated answer (explicit-CoT baseline); None: the EOS token
    language_model_path: str = "model.language_model"  # inside the backbone
    # Tiny random configs for tests and demos: (vocab_size, special token ids, hidden_size, num_layers) -> config.
    tiny_config: Callable[..., PretrainedConfig] | None = None

    # ------------------------------------------------------------------------------- parts
    def hidden_size(self, backbone: PreTrainedModel) -> int:
        return backbone.config.get_text_config().hidden_size

    def language_model(self, backbone: PreTrainedModel) -> torch.nn.Module:
        """The backbone's language model (decoder layers, no LM head)."""
        return backbone.get_submodule(self.language_model_path)

    @property
    def lora_host(self) -> str:
        """Where LoRA adapters go, as a submodule name of the LaME model."""
        return f"backbone.{self.language_model_path}"

    def load_image_processor(self, path, min_pixels: int | None = None, max_pixels: int | None = None):
        """The image processor saved in a local folder; pixel limits, when given, override the saved ones."""
        limits = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v}
        return self.image_processor_class.from_pretrained(path, local_files_only=True, **limits)

    # ------------------------------------------------------------------------------ images
    def image_slots(self, vision: Mapping[str, torch.Tensor], image_processor,
                    backbone_config: PretrainedConfig | None) -> tuple[list[int], list[int]]:
        """Per image of an image-processor output: placeholder copies, and its rows of ``pixel_values``."""
        raise NotImplementedError(f"{type(self).__name__} must define image_slots")

    def image_target_size(self, image_processor, width: int, height: int) -> tuple[int, int] | None:
        """The ``(width, height)`` the image processor resizes a ``width`` x ``height`` image to, when that is
        smaller (a server can then decode and shrink it at once); ``None``: keep the image as it is.

        The default reads the processor's ``size``: ``{"height", "width"}`` (a fixed size) or
        ``{"shortest_edge"}`` (the short side scaled to it, as CLIP's processor does)."""
        size = _size_dict(image_processor)
        if size.get("height") and size.get("width"):
            target = (int(size["width"]), int(size["height"]))
        elif size.get("shortest_edge") and not size.get("longest_edge"):
            short, edge = min(width, height), int(size["shortest_edge"])
            if short <= edge:
                return None
            long = int(edge * max(width, height) / short)
            target = (edge, long) if width <= height else (long, edge)
        else:
            return None
        return target if target[0] * target[1] < width * height else None

    def image_max_pixels(self, image_processor) -> int | None:
        """The most pixels of one image the model reads (after the processor's resize); None if unknown."""
        size = _size_dict(image_processor)
        if size.get("height") and size.get("width"):
            return int(size["height"]) * int(size["width"])
        crop = getattr(image_processor, "crop_size", None)
        crop = crop if isinstance(crop, dict) else getattr(crop, "__dict__", {}) if crop is not None else {}
        if size.get("shortest_edge") and crop.get("height") and crop.get("width"):
            return int(crop["height"]) * int(crop["width"])
        return None

    # ------------------------------------------------------------------------------ videos
    video_token: str | None = None  # the video placeholder; None: the family reads no video
    video_block: str | None = None  # what the chat template writes for one video

    def video_inputs(self, video: Video, image_processor, max_pixels: int | None = None) -> dict:
        """The backbone's video inputs for one video (``pixel_values_videos``, ``video_grid_thw``, ...)."""
        raise NotImplementedError(f"{type(self).__name__} reads no video")

    def video_text(self, inputs: dict, video: Video) -> str:
        """The text that replaces :attr:`video_block` for one video with these ``inputs``."""
        raise NotImplementedError(f"{type(self).__name__} reads no video")

    def image_layout(self, image_processor, backbone_config: PretrainedConfig | None = None,
                     video_max_pixels: int | None = None) -> ImageLayout:
        """The :class:`~lame.data.featurize.ImageLayout` a featurizer of this family uses."""
        slots = partial(self.image_slots, image_processor=image_processor, backbone_config=backbone_config)
        if self.video_token is None:
            return ImageLayout(self.image_token, slots)
        return ImageLayout(self.image_token, slots, video_token=self.video_token, video_block=self.video_block,
                           video=partial(self.video_inputs, image_processor=image_processor,
                                         max_pixels=video_max_pixels),
                           video_text=self.video_text)

    # ----------------------------------------------------------------------------- running
    def positions(self, backbone: PreTrainedModel, batch: dict) -> torch.Tensor:
        """(B, L) positions that count only real tokens, so left padding never shifts them and an
        item's embedding does not depend on what else is in its batch."""
        return (batch["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)

    def model_inputs(self, batch: dict) -> dict:
        """The backbone's inputs from a collated batch besides embeddings, mask and positions."""
        return {"pixel_values": batch["pixel_values"]} if "pixel_values" in batch else {}

    def run(self, backbone: PreTrainedModel, batch: dict, inputs_embeds: torch.Tensor, use_cache: bool = False,
            position_ids: torch.Tensor | None = None):
        """The backbone without its LM head over a collated batch; returns the upstream model output."""
        return backbone.model(
            inputs_embeds=inputs_embeds,
            attention_mask=batch["attention_mask"],
            position_ids=self.positions(backbone, batch) if position_ids is None else position_ids,
            use_cache=use_cache,
            **self.model_inputs(batch),
        )

    def last_hidden_state(self, backbone: PreTrainedModel, batch: dict, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Runs the backbone without its LM head and returns the last hidden states (B, L, H)."""
        return self.run(backbone, batch, inputs_embeds).last_hidden_state

    def cached_step(self, backbone: PreTrainedModel, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor, past_key_values) -> torch.Tensor:
        """New positions (text only) through the language model on top of a KV cache, which grows;
        returns their last hidden states."""
        return self.language_model(backbone)(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, use_cache=True,
        ).last_hidden_state

    def generate(self, backbone: PreTrainedModel, batch: dict, generation_config):
        """``backbone.generate`` after a collated prompt batch (no latent block)."""
        return backbone.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 **self.model_inputs(batch), generation_config=generation_config)

    def tiny_image_processor(self, min_pixels: int | None = None, max_pixels: int | None = None):
        raise NotImplementedError(f"{type(self).__name__} has no tiny image processor")


@dataclass(frozen=True, kw_only=True)
class QwenVLAdapter(BackboneAdapter):
    """Qwen2-VL, Qwen2.5-VL, Qwen3-VL: multimodal RoPE and a (t, h, w) patch grid per image."""

    image_processor_class: type = Qwen2VLImageProcessorPil
    image_token: str = "<|image_pad|>"
    end_of_turn_token: str | None = "<|im_end|>"
    patch_size: int = 14  # the tiny image processor's
    video_token: str | None = "<|video_pad|>"
    video_block: str | None = "<|vision_start|><|video_pad|><|vision_end|>"
    timed_video: bool = False  # Qwen2.5-VL: temporal positions spaced by seconds (second_per_grid_ts)
    timestamped_video: bool = False  # Qwen3-VL: each temporal patch after its time, "<t seconds>"

    def image_target_size(self, image_processor, width: int, height: int) -> tuple[int, int] | None:
        """The processor's own ``smart_resize``: a multiple of patch x merge per side, at most
        ``size["longest_edge"]`` pixels (None where that is not smaller than the image)."""
        size = _size_dict(image_processor)
        if not (size.get("shortest_edge") and size.get("longest_edge")):
            return None
        factor = image_processor.patch_size * image_processor.merge_size
        try:
            h, w = smart_resize(height, width, factor=factor, min_pixels=size["shortest_edge"],
                                max_pixels=size["longest_edge"])
        except ValueError:  # an aspect ratio the processor refuses: it says so when it gets the image
            return None
        return (w, h) if w * h < width * height else None

    def image_max_pixels(self, image_processor) -> int | None:
        return _size_dict(image_processor).get("longest_edge")

    def image_slots(self, vision, image_processor, backbone_config=None):
        patches = vision["image_grid_thw"].prod(-1)
        return (patches // image_processor.merge_size**2).tolist(), patches.tolist()

    def positions(self, backbone: PreTrainedModel, batch: dict) -> torch.Tensor:
        """(3, B, L) multimodal RoPE positions, computed for every batch (text-only too), so left padding
        never shifts them and an item's embedding does not depend on what else is in its batch."""
        timed = self.timed_video and "second_per_grid_ts" in batch
        extra = {"second_per_grid_ts": batch["second_per_grid_ts"]} if timed else {}
        position_ids, _ = backbone.model.get_rope_index(
            batch["input_ids"],
            mm_token_type_ids=batch["mm_token_type_ids"],
            image_grid_thw=batch.get("image_grid_thw"),
            video_grid_thw=batch.get("video_grid_thw"),
            attention_mask=batch["attention_mask"],
            **extra,
        )
        return position_ids

    def model_inputs(self, batch: dict) -> dict:
        keys = ["pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "mm_token_type_ids"]
        if self.timed_video:
            keys.append("second_per_grid_ts")
        return {key: batch[key] for key in keys if key in batch}

    # ------------------------------------------------------------------------------ videos
    def video_frame_max_pixels(self, image_processor, max_pixels: int | None = None) -> int:
        """Most pixels of one frame: ``max_pixels`` (the config's ``video_max_pixels``), else 768 merged
        patches (Qwen's reference video sampling), never more than the image processor allows."""
        factor = image_processor.patch_size * image_processor.merge_size
        limit = max_pixels or 768 * factor * factor
        image_limit = self.image_max_pixels(image_processor)
        return min(limit, image_limit) if image_limit else limit

    def video_inputs(self, video: Video, image_processor, max_pixels: int | None = None) -> dict:
        """A video as the upstream video processor lays it out: every frame resized to one size (a
        multiple of patch x merge per side, within the frame budget), normalised by the image
        processor, then patches of ``temporal_patch_size`` consecutive frames (the last frame repeated
        to fill the last group): ``pixel_values_videos`` rows ordered (t, h/merge, w/merge, merge,
        merge), columns (channel, frame of the group, patch row, patch column)."""
        size = _size_dict(image_processor)
        factor = image_processor.patch_size * image_processor.merge_size
        width, height = video.size
        h, w = smart_resize(height, width, factor=factor, min_pixels=size.get("shortest_edge", factor * factor),
                            max_pixels=self.video_frame_max_pixels(image_processor, max_pixels))
        frames = [f if f.size == (w, h) else f.resize((w, h), Image.Resampling.BICUBIC) for f in video.frames]
        tp = image_processor.temporal_patch_size
        frames += frames[-1:] * (-len(frames) % tp)
        out = image_processor(images=frames, return_tensors="pt")
        grid = out["image_grid_thw"]  # each frame is one image: (frames, 3) = (1, h/patch, w/patch)
        patch = image_processor.patch_size
        rows = int(grid[0, 1] * grid[0, 2])
        # each frame's rows hold the frame tp times over (an image is a still video): keep one copy
        per_frame = out["pixel_values"].reshape(len(frames), rows, 3, tp, patch, patch)[:, :, :, 0]
        groups = per_frame.reshape(len(frames) // tp, tp, rows, 3, patch, patch).permute(0, 2, 3, 1, 4, 5)
        pixel_values_videos = groups.reshape(len(frames) // tp * rows, 3 * tp * patch * patch)
        video_grid_thw = torch.tensor([[len(frames) // tp, int(grid[0, 1]), int(grid[0, 2])]])
        stamps = video.timestamps
        seconds = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 1.0  # between frames
        times = stamps + stamps[-1:] * (-len(stamps) % tp)
        inputs = {"pixel_values_videos": pixel_values_videos, "video_grid_thw": video_grid_thw,
                  "tokens_per_group": rows // image_processor.merge_size**2,
                  "timestamps": [(times[i] + times[i + tp - 1]) / 2 for i in range(0, len(times), tp)]}
        if self.timed_video:  # temporal positions spaced by time: seconds per temporal patch
            inputs["second_per_grid_ts"] = torch.tensor([tp * (seconds or 1.0)])
        return inputs

    def video_text(self, inputs: dict, video: Video) -> str:
        """Qwen2-VL / Qwen2.5-VL: one run of placeholders for the whole video, inside vision start/end.
        Qwen3-VL (``timestamped_video``): per temporal patch, its time and its own start/end, as the
        Qwen3-VL processor writes (``<0.5 seconds><|vision_start|>...<|vision_end|><1.5 seconds>...``)."""
        t, per_group = int(inputs["video_grid_thw"][0, 0]), inputs["tokens_per_group"]
        if not self.timestamped_video:
            return f"<|vision_start|>{self.video_token * (t * per_group)}<|vision_end|>"
        return "".join(f"<{time:.1f} seconds><|vision_start|>{self.video_token * per_group}<|vision_end|>"
                       for time in inputs["timestamps"])

    def tiny_image_processor(self, min_pixels: int | None = None, max_pixels: int | None = None):
        """Small images: by default between 2x2 and 4x4 patches (1 to 4 merged visual tokens)."""
        return Qwen2VLImageProcessorPil(
            patch_size=self.patch_size,
            min_pixels=min_pixels or (self.patch_size * 2) ** 2,
            max_pixels=max_pixels or (self.patch_size * 4) ** 2,
        )


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


ADAPTERS: dict[str, BackboneAdapter] = {}


def _size_dict(image_processor) -> dict:
    """The processor's ``size`` as a plain dict (transformers keeps a dict or a ``SizeDict``)."""
    size = getattr(image_processor, "size", None)
    if size is None:
        return {}
    if isinstance(size, Mapping):
        return {k: v for k, v in size.items() if v is not None}
    return {k: v for k, v in vars(size).items() if v is not None}


def register_adapter(adapter: BackboneAdapter, replace: bool = False) -> BackboneAdapter:
    """Makes a backbone family known to LaME (``from_backbone``, ``from_pretrained``, the CLI), keyed by
    ``adapter.model_type``. Registering a type twice is an error unless ``replace``."""
    if not isinstance(adapter, BackboneAdapter):
        raise TypeError(f"expected a BackboneAdapter, got {type(adapter).__name__}")
    if adapter.model_type in ADAPTERS and not replace:
        raise ValueError(f"an adapter for {adapter.model_type!r} is already registered (pass replace=True)")
    ADAPTERS[adapter.model_type] = adapter
    return adapter


def get_adapter(model_type: str) -> BackboneAdapter:
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise InvalidInput(
            f"unsupported backbone type {model_type!r}; supported: {', '.join(sorted(ADAPTERS))}"
        ) from None


def tiny_families() -> list[str]:
    """The registered families that have a tiny random config (``build_tiny_model``, ``lame demo``)."""
    return sorted(name for name, adapter in ADAPTERS.items() if adapter.tiny_config is not None)


register_adapter(QwenVLAdapter(model_type="qwen2_vl", model_class=Qwen2VLForConditionalGeneration,
                               patch_size=14, tiny_config=_tiny_qwen2_vl))
register_adapter(QwenVLAdapter(model_type="qwen2_5_vl", model_class=Qwen2_5_VLForConditionalGeneration,
                               patch_size=14, tiny_config=_tiny_qwen2_5_vl, timed_video=True))
register_adapter(QwenVLAdapter(model_type="qwen3_vl", model_class=Qwen3VLForConditionalGeneration,
                               patch_size=16, tiny_config=_tiny_qwen3_vl, timestamped_video=True))
