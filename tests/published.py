"""Checkpoint folders laid out as the families' published Instruct checkpoints, with tiny random weights.

The file names are the released ones (``config.json``, ``generation_config.json``, ``model.safetensors``,
``tokenizer.json``, ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``, ``chat_template.json``,
``preprocessor_config.json``, ``video_preprocessor_config.json``), the vocabulary is the tiny tokenizer's,
the processor settings are the released defaults, and the chat templates have the released structure
(written here, not copied):

* Qwen2-VL-Instruct: the multimodal template in ``tokenizer_config.json`` and in ``chat_template.json``;
* Qwen2.5-VL-Instruct: ``tokenizer_config.json`` holds the text-only template of the Qwen2.5 language
  models (it concatenates ``message.content`` as a string: a list of parts fails with ``can only
  concatenate str (not "list") to str``); the multimodal one is in ``chat_template.json``;
* Qwen3-VL-Instruct: the multimodal template in ``chat_template.json``, a text-only one in
  ``tokenizer_config.json``.

Qwen2-VL and Qwen2.5-VL add the system prompt "You are a helpful assistant." when the conversation has
no system message; Qwen3-VL adds none.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SYSTEM_PROMPT = "You are a helpful assistant."

_VISION_PARTS = (
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}{% endfor %}"
)

# Qwen2-VL / Qwen2.5-VL processors: a default system turn, then the turns with their parts.
QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}" + _VISION_PARTS + "<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The Qwen2.5 language models' template: text only, the content joined with '+'.
QWEN25_TEXT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\n" + SYSTEM_PROMPT + "<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.role != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen3-VL: no default system prompt; a system message's text parts are joined.
QWEN3_VL_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}<|im_start|>system\n"
    "{%- if messages[0].content is string %}{{- messages[0].content }}"
    "{%- else %}{%- for part in messages[0].content %}{%- if 'text' in part %}{{- part.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}<|im_end|>\n{%- endif %}"
    "{%- for message in messages %}{%- if message.role != 'system' %}<|im_start|>{{ message.role }}\n"
    "{%- if message.content is string %}{{- message.content }}{%- else %}" + _VISION_PARTS + "{%- endif %}"
    "<|im_end|>\n{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)

QWEN3_TEXT_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
# Qwen2-VL and Qwen2.5-VL ship the same image-processor settings.
QWEN2_VL_IMAGE = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                  "merge_size": 2, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                  "image_processor_type": "Qwen2VLImageProcessor"}

LAYOUTS = {
    "qwen2_vl": {
        "name": "Qwen2-VL-2B-Instruct", "processor": "Qwen2VLProcessor",
        "tokenizer_template": QWEN2_VL_TEMPLATE, "chat_template": QWEN2_VL_TEMPLATE, "system_prompt": True,
        "image": QWEN2_VL_IMAGE,
        "video": None,
    },
    "qwen2_5_vl": {
        "name": "Qwen2.5-VL-3B-Instruct", "processor": "Qwen2_5_VLProcessor",
        "tokenizer_template": QWEN25_TEXT_TEMPLATE, "chat_template": QWEN2_VL_TEMPLATE, "system_prompt": True,
        "image": QWEN2_VL_IMAGE,
        "video": {"size": {"shortest_edge": 3136, "longest_edge": 12845056}, "patch_size": 14,
                  "temporal_patch_size": 2, "merge_size": 2, "video_processor_type": "Qwen2VLVideoProcessor"},
    },
    "qwen3_vl": {
        "name": "Qwen3-VL-8B-Instruct", "processor": "Qwen3VLProcessor",
        "tokenizer_template": QWEN3_TEXT_TEMPLATE, "chat_template": QWEN3_VL_TEMPLATE, "system_prompt": False,
        "image": {"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
                  "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
                  "image_processor_type": "Qwen2VLImageProcessorFast"},
        "video": {"size": {"longest_edge": 25165824, "shortest_edge": 4096}, "patch_size": 16,
                  "temporal_patch_size": 2, "merge_size": 2, "fps": 2, "video_processor_type": "Qwen3VLVideoProcessor"},
    },
}


def _json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def write_published_checkpoint(folder: Path, family: str, seed: int = 0) -> Path:
    """A tiny random backbone of ``family`` in a folder with the published checkpoint's files."""
    from lame.modeling.adapters import get_adapter
    from lame.modeling.tiny import QWEN_SPECIAL_TOKENS, build_tiny_tokenizer

    layout = LAYOUTS[family]
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    adapter = get_adapter(family)
    torch.manual_seed(seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    adapter.model_class(adapter.tiny_config(len(tokenizer), ids)).save_pretrained(folder)

    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink()  # released folders keep their templates as below
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(chat_template=layout["tokenizer_template"], padding_side="left",
                  processor_class=layout["processor"], errors="replace", model_max_length=32768)
    _json(folder / "tokenizer_config.json", config)
    model = json.loads((folder / "tokenizer.json").read_text())["model"]
    _json(folder / "vocab.json", model["vocab"])
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    _json(folder / "chat_template.json", {"chat_template": layout["chat_template"]})
    _json(folder / "preprocessor_config.json", {**layout["image"], "processor_class": layout["processor"]})
    if layout["video"]:
        _json(folder / "video_preprocessor_config.json", {**layout["video"], "processor_class": layout["processor"]})
    _json(folder / "generation_config.json", {"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
                                              "pad_token_id": ids["<|endoftext|>"], "do_sample": False})
    return folder
