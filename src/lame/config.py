"""The one configuration object of a LaME model, saved next to its weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidInput, MissingPath

CONFIG_NAME = "lame_config.json"
# The closed sets of the config's string fields, checked here and used by the code that reads them.
VARIANTS = ("lame", "sequential", "cot")  # their model classes: lame.modeling.variants
POOLINGS = ("last", "mean", "attention")
# What the decoder reconstructs from a training record (lame.training.data.TrainingExample.decoder_target):
# "answer": the record's answer, else its positive's text, else its caption; "positive": the positive's text
# (else the caption), never the answer; "rationale+answer": the rationale followed by the "answer" target.
DECODER_TARGETS = ("answer", "positive", "rationale+answer")
DECODER_TARGET_ALIASES = {"full": "rationale+answer"}  # the earlier name, still accepted
DECODER_READS = ("reason", "embed")
DECODER_PROJECTORS = ("linear", "mlp")
DTYPES = ("float32", "bfloat16", "float16")  # torch dtype names a checkpoint can be loaded in


class ConfigError(InvalidInput):
    """A bad :class:`LaMEConfig` value; ``key`` names the field."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


def _check_ints(key: str, values, low: int, ascending: bool) -> None:
    """``values`` is a non-empty list of distinct ints >= ``low``, in ``ascending`` (else descending) order."""
    if not isinstance(values, list) or not values:
        raise ConfigError(key, f"must be a non-empty list of integers or null, got {values!r}")
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}[{i}]", f"must be an integer, got {value!r}")
        if value < low:
            raise ConfigError(f"{key}[{i}]", f"must be >= {low}, got {value}")
    order = sorted(set(values), reverse=not ascending)
    if values != order:
        raise ConfigError(key, f"must be {'ascending' if ascending else 'descending'} without repeats, "
                          f"e.g. {order}; got {values}")


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
    # InfoNCE in both directions: query -> candidates (always) and positive -> queries, averaged (lame.losses).
    symmetric_contrastive: bool = False
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
    # Most pixels of one video frame (None: the family's default, 768 merged patches a frame as Qwen's
    # reference video sampling uses); an item over max_length has its frames downscaled further.
    video_max_pixels: int | None = None

    # LoRA adapters on the backbone's language model ({"r", "alpha", "dropout", "target_modules"}), if any.
    lora: dict | None = None

    # Elastic LaME (lame.modeling.elastic): the numbers of reason tokens k the model trains (and embeds) with,
    # each step using the first k of the K, ascending and ending with K; and the embedding sizes its
    # contrastive loss is applied to (Matryoshka), descending and starting with the full size. Filled in when
    # the model is built ([K] and [full size] when not given), so a saved config lists what its model is for.
    elastic_k: list[int] | None = None
    matryoshka_dims: list[int] | None = None

    # Filled in when the model is built; saved so a reloaded model finds its tokens again.
    backbone_type: str | None = None
    reason_token_ids: list[int] = field(default_factory=list)
    embed_token_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.decoder_target = DECODER_TARGET_ALIASES.get(self.decoder_target, self.decoder_target)
        for key, allowed in (("variant", VARIANTS), ("pooling", POOLINGS), ("decoder_target", DECODER_TARGETS),
                             ("decoder_reads", DECODER_READS), ("decoder_projector", DECODER_PROJECTORS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(key, f"must be one of {', '.join(allowed)}; got {getattr(self, key)!r}")
        for key, low in (("num_reason_tokens", 0), ("num_embed_tokens", 1), ("latent_steps", 0),
                         ("cot_max_new_tokens", 0), ("max_length", 1), ("decoder_max_length", 2),
                         ("reconstruction_weight", 0), ("diversity_weight", 0)):
            if getattr(self, key) < low:
                raise ConfigError(key, f"must be >= {low}, got {getattr(self, key)}")
        for key in ("projection_dim", "min_pixels", "max_pixels", "video_max_pixels"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(key, f"must be >= 1 or null, got {getattr(self, key)}")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ConfigError("min_pixels", f"{self.min_pixels} is more than max_pixels {self.max_pixels}")
        if self.temperature <= 0:
            raise ConfigError("temperature", f"must be > 0, got {self.temperature}")
        self._check_elastic()

    def _check_elastic(self) -> None:
        for key in ("elastic_k", "matryoshka_dims"):
            if isinstance(getattr(self, key), tuple):
                setattr(self, key, list(getattr(self, key)))
        k = self.num_reason_tokens
        if self.elastic_k is not None:
            _check_ints("elastic_k", self.elastic_k, low=0, ascending=True)
            for i, value in enumerate(self.elastic_k):
                if value > k:
                    raise ConfigError(f"elastic_k[{i}]", f"{value} is more than num_reason_tokens ({k})")
            if self.elastic_k[-1] != k:
                raise ConfigError("elastic_k", f"must end with num_reason_tokens ({k}), the number the model embeds "
                                  f"with by default; got {self.elastic_k}")
            if self.variant != "lame" and self.elastic_k != [k]:
                raise ConfigError("elastic_k", f"only the 'lame' variant trains with fewer reason tokens; the "
                                  f"{self.variant!r} variant takes [{k}] or null")
        if self.matryoshka_dims is not None:
            _check_ints("matryoshka_dims", self.matryoshka_dims, low=1, ascending=False)
            if self.projection_dim is not None and self.matryoshka_dims[0] != self.projection_dim:
                raise ConfigError("matryoshka_dims[0]", f"must be the embedding size, projection_dim "
                                  f"({self.projection_dim}); got {self.matryoshka_dims[0]}")

    @property
    def reason_token_choices(self) -> list[int]:
        """The numbers of reason tokens the model is trained for (``elastic_k``; a fixed-K model: [K])."""
        return list(self.elastic_k) if self.elastic_k is not None else [self.num_reason_tokens]

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
            raise InvalidInput(f"unknown LaME config key(s): {', '.join(unknown)}")
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
            raise MissingPath(f"{path} not found: {directory} is not a saved LaME model folder")
        return cls.from_dict(json.loads(path.read_text()))
