"""The quickstart's settings and the methods it compares, apart from the code that runs them: ``lame
--help`` shows these defaults without importing torch or transformers."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class QuickstartSettings:
    """One training run on the digits benchmark: the budget and recipe every method shares.

    Stage 1 (``warmup_steps``) trains the latent vectors and the heads (decoder head included) with the
    backbone frozen; stage 2 (``joint_steps``) also trains the language model. The vision tower stays
    frozen throughout. ``train_pairs`` limits the training records (the first ones of a seeded shuffle,
    the same number per task) for the sample-efficiency sweep; None uses them all. ``train_tasks`` keeps
    only those tasks' records (every task is still scored). ``noisy_positives`` gives that fraction of the
    training records a wrong positive while their answer stays right (the regime where a decoder reading
    the answer could help most); validation and test are untouched.
    """

    seed: int = 0
    num_reason_tokens: int = 8
    warmup_steps: int = 50
    joint_steps: int = 250
    batch_size: int = 32
    temperature: float = 0.05
    decoder_target: str = "answer"
    reconstruction_weight: float = 1.0
    diversity_weight: float = 0.1
    decoder_reads: str = "reason"  # "reason" (LaME) or "embed" (control: the decoder reads [EMBED])
    lr_heads: float = 2e-3
    lr_backbone: float = 3e-4
    train_pairs: int | None = None
    train_tasks: tuple[str, ...] | None = None  # the tasks trained on (e.g. level0 and the families); None: all
    noisy_positives: float = 0.0  # the fraction of training records given another record's positive
    eval_every: int = 50
    eval_queries_per_task: int = 50  # of the validation split, for the training curve
    decode_queries_per_task: int = 100  # of the test split, for decoded-latent accuracy
    cot_max_new_tokens: int = 64  # the longest worked answer (level 3) is 62 tokens


@dataclass(frozen=True)
class Method:
    """A method on the shared backbone: LaME with ``k`` reason tokens (0 = discriminative) with or without
    its decoder head and ``embed_tokens`` positions pooled by its embedding head, or a peer (``variant``
    "sequential" or "cot"); ``changes`` are settings it alters."""

    k: int = 0
    decoder: bool = False
    variant: str = "lame"
    changes: dict = field(default_factory=dict)
    label: str = ""
    embed_tokens: int = 1  # M: the latent positions after the K reason tokens the embedding head pools
    pooling: str = "last"


LAME = Method(k=8, decoder=True, embed_tokens=4, pooling="mean", label="LaME (K = 8, M = 4 mean-pooled)")
# the control with LaME's positions: K + M latent positions mean-pooled, no reason tokens, no decoder
MATCHED = Method(embed_tokens=LAME.k + LAME.embed_tokens, pooling="mean",
                 label=f"discriminative, {LAME.k + LAME.embed_tokens} positions mean-pooled")

METHODS: dict[str, Method] = {
    "discriminative": Method(label="discriminative (K = 0, last token)"),
    "discriminative-matched": MATCHED,
    "lame": LAME,
    "lame-M1": Method(k=8, decoder=True, label="LaME (K = 8, one [EMBED] state)"),
    **{f"lame-K{k}": replace(LAME, k=k, label=f"LaME (K = {k}, M = 4 mean-pooled)") for k in (1, 2, 4, 16)},
    "lame-no-decoder": replace(LAME, decoder=False, label="LaME without decoder"),
    "sequential": Method(variant="sequential", label="sequential latent (8 steps)"),
    "cot": Method(variant="cot", label="explicit CoT"),
    # ablations of LaME (K = 8, M = 4 mean-pooled)
    "lame-rationale-target": replace(LAME, changes={"decoder_target": "full"},
                                     label="LaME, decoder target = rationale + answer"),
    "lame-no-diversity": replace(LAME, changes={"diversity_weight": 0.0}, label="LaME, diversity weight 0"),
    "lame-short-warmup": replace(LAME, changes={"warmup_steps": 10, "joint_steps": 290},
                                 label="LaME, warm-up 10 + joint 290 steps"),
    "lame-one-stage": replace(LAME, changes={"warmup_steps": 0, "joint_steps": 300},
                              label="LaME, one stage (joint 300 steps)"),
    "discriminative-matched-one-stage": replace(MATCHED, changes={"warmup_steps": 0, "joint_steps": 300},
                                                label=f"{MATCHED.label}, one stage (joint 300 steps)"),
    "control-decoder-reads-embed": replace(LAME, changes={"decoder_reads": "embed"},
                                           label="control: decoder reads the embedding states"),
    # the embedding head: M positions after the K reason tokens, pooled
    "lame-M2-mean": replace(LAME, embed_tokens=2, label="LaME, M = 2 mean-pooled"),
    "lame-M4-attention": replace(LAME, pooling="attention", label="LaME, M = 4 attention-pooled"),
    "discriminative-M4-mean": Method(embed_tokens=4, pooling="mean", label="discriminative, 4 positions mean-pooled"),
}
QUICKSTART_METHODS = ("discriminative", "discriminative-matched", "lame")
# the paper's ablations, beside both discriminative controls
PEERS = ("discriminative", "discriminative-matched", "lame", "lame-K1", "lame-K2", "lame-K4", "lame-K16",
         "lame-no-decoder", "lame-no-diversity", "lame-one-stage", "sequential", "cot")
