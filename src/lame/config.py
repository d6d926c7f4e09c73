"""The one configuration object of a LaME model, saved next to its weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_NAME = "lame_config.json"
POOLINGS = ("last", "mean", "attention")
DECODER_TARGETS = ("answer", "full")


@dataclass
class LaMEConfig:
    """Everything that defines a LaME model besides the weights of its backbone and decoder.

    The latent block appended after the query is ``K`` reason tokens followed by
    ``num_embed_tokens`` embedding tokens, the last of which is ``[EMBED]``. ``K = 0`` is the
    plain discriminative embedder (embedding at the last token) through the same code.
    """

    # "lame": K reason tokens in the one forward pass. Baselines on the same backbone (lame.modeling.baselines):
    # "sequential" (K latent steps fed back one by one), "cot" (generate a rationale, then embed).
    variant: str = "lame"
    latent_steps: int = 8  # sequential variant: number of latent steps
    cot_max_new_tokens: int = 64  # cot variant: rationale length limit
    num_reason_tokens: int = 8
    num_embed_tokens: int = 1
    pooling: str = "last"
    projection_dim: int | None = None
    normalize: bool = True
    latent_init_std: float = 0.02

    temperature: float = 0.02
    reconstruction_weight: float = 1.0
    diversity_weight: float = 0.1

    use_decoder: bool = True
    decoder_target: str = "answer"
    decoder_reads: str = "reason"  # "reason": the K reason states (LaME); "embed": the [EMBED] states (a control)
    decoder_projector: str = "mlp"
    decoder_max_length: int = 64

    max_length: int = 2048
    min_pixels: int | None = None
    max_pixels: int | None = None

    # LoRA adapters on the backbone's language model ({"r", "alpha", "dropout", "target_modules"}), if any.
    lora: dict | None = None

    # Filled in when the model is built; saved so a reloaded model finds its tokens again.
    backbone_type: str | None = None
    reason_token_ids: list[int] = field(default_factory=list)
    embed_token_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.variant not in ("lame", "sequential", "cot"):
            raise ValueError(f"variant must be 'lame', 'sequential' or 'cot', got {self.variant!r}")
        if self.num_reason_tokens < 0:
            raise ValueError(f"num_reason_tokens must be >= 0, got {self.num_reason_tokens}")
        if self.num_embed_tokens < 1:
            raise ValueError(f"num_embed_tokens must be >= 1, got {self.num_embed_tokens}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.decoder_target not in DECODER_TARGETS:
            raise ValueError(f"decoder_target must be one of {DECODER_TARGETS}, got {self.decoder_target!r}")
        if self.decoder_reads not in ("reason", "embed"):
            raise ValueError(f"decoder_reads must be 'reason' or 'embed', got {self.decoder_reads!r}")
        if self.decoder_projector not in ("linear", "mlp"):
            raise ValueError(f"decoder_projector must be 'linear' or 'mlp', got {self.decoder_projector!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def num_latent_tokens(self) -> int:
        return self.num_reason_tokens + self.num_embed_tokens

    def reason_token_strings(self) -> list[str]:
        return [f"<|reason_{i}|>" for i in range(self.num_reason_tokens)]

    def embed_token_strings(self) -> list[str]:
        if self.num_embed_tokens == 1:
            return ["<|embed|>"]
        return [f"<|embed_{i}|>" for i in range(self.num_embed_tokens - 1)] + ["<|embed|>"]

    def latent_token_strings(self) -> list[str]:
        return self.reason_token_strings() + self.embed_token_strings()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LaMEConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LaME config key(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes) -> "LaMEConfig":
        return self.from_dict({**self.to_dict(), **changes})

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "LaMEConfig":
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {directory} is not a saved LaME model folder")
        return cls.from_dict(json.loads(path.read_text()))
