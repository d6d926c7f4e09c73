"""Tiny, randomly initialised LaME models of the real backbone classes, for tests and CPU demos.

The tokenizer is a byte-level BPE built here from a small embedded corpus (deterministic, no
download), wrapped in the upstream ``Qwen2Tokenizer`` class with the Qwen special tokens and a
Qwen-style chat template, so the tiny models go through exactly the code paths of real ones.
"""

from __future__ import annotations

import json

import torch
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN_PRETOKENIZE_REGEX

from ..config import LaMEConfig
from .adapters import get_adapter

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]

# The same structure as the Qwen2-VL template, without the default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = """
zero one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9
find another image of this digit. add subtract multiply divide plus minus times modulo mod 10
what is the sum product difference of the two digits in these images? then the answer is
the digit in the image is a handwritten number. retrieve a picture that shows the result.
first second third reason step rationale because so therefore result equals question answer
user assistant system you are a helpful assistant. describe the image. a photo of a cat dog
represent the given image for retrieval. represent the document. which picture matches the text
""".split("\n")


def build_tiny_tokenizer(vocab_size: int = 512) -> Qwen2Tokenizer:
    """A deterministic byte-level BPE tokenizer with Qwen's special tokens and chat template.

    The BPE is trained with the same normaliser and pre-tokeniser that ``Qwen2Tokenizer`` installs
    when it loads a folder, and the result is built through that class's own constructor, so a
    saved and reloaded tokenizer splits every text exactly as the freshly built one.
    """
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([line for line in _CORPUS if line] * 8, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", unk_token=None, bos_token=None)
    # Registered as added special tokens (ids unchanged), so "<|im_start|>" in a text is one token.
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS],
                         special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_decoder(tokenizer, hidden_size: int = 32) -> Qwen3ForCausalLM:
    """A tiny Qwen3 causal LM, the class of the Qwen3-0.6B decoder head used at scale."""
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return Qwen3ForCausalLM(config)


def build_tiny_model(backbone_type: str = "qwen2_vl", seed: int = 0, config: LaMEConfig | None = None, **overrides):
    """A randomly initialised tiny LaME model of a real backbone family (``qwen2_vl``,
    ``qwen2_5_vl``, ``qwen3_vl``: :func:`lame.modeling.adapters.tiny_families`), with a tiny Qwen3
    decoder head when ``config.use_decoder``."""
    from .lame import LaMEModel

    config = (config or LaMEConfig(max_length=512)).replace(**overrides)
    adapter = get_adapter(backbone_type)
    if adapter.tiny_config is None:
        raise ValueError(f"backbone type {backbone_type!r} has no tiny config")
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    backbone = adapter.model_class(adapter.tiny_config(len(tokenizer), ids)).eval()
    image_processor = adapter.tiny_image_processor()
    decoder = decoder_tokenizer = None
    if config.use_decoder:
        decoder_tokenizer = build_tiny_tokenizer()
        decoder = tiny_decoder(decoder_tokenizer).eval()
    return LaMEModel.from_components(
        config, backbone, tokenizer, image_processor, decoder=decoder, decoder_tokenizer=decoder_tokenizer
    )
