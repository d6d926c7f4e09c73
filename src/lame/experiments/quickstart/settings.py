"""The quickstart's settings, apart from the code that runs it: ``lame --help`` shows these defaults
without importing torch or transformers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class PretrainSettings:
    version: int = 2  # bump when the tiny tokenizer or architecture changes, to refresh caches
    backbone_type: str = "qwen2_vl"
    hidden_size: int = 64
    num_layers: int = 2
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    min_pixels: int = 56 * 56
    max_pixels: int = 56 * 56
    with_queries: bool = False  # also learn the benchmark's training queries -> answer word (a generative reference)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class QuickstartSettings:
    seed: int = 0
    num_reason_tokens: int = 8
    warmup_steps: int = 60
    joint_steps: int = 240
    batch_size: int = 32
    temperature: float = 0.05
    decoder_target: str = "answer"
    reconstruction_weight: float = 1.0
    diversity_weight: float = 0.1
    decoder_reads: str = "reason"  # "reason" (LaME) or "embed" (control: the decoder reads [EMBED])
    lr_heads: float = 2e-3
    lr_backbone: float = 3e-4
    eval_every: int = 60
    eval_queries_per_level: int = 60
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
