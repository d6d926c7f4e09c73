"""`lame bench memory`: the memory planner's estimate against the measured peak of real training steps.

Each case trains a tiny random Qwen2-VL LaME model (CPU) on one batch of image+text queries and text
positives, with one setup: what trains (the latent block and decoder head, LoRA, the language model
with the new parts, or everything), the weights' dtype (``model.dtype``; float32 master weights for
what trains, as the trainer holds them: :func:`lame.training.params.master_weights`), autocast
precision, gradient checkpointing and GradCache chunking. The peak is measured
by :class:`lame_testbed.bench.peak.PeakTracker` (every tensor storage an operation allocates, counted
until it is freed, weights and buffers included) over the second of two AdamW steps (the optimizer's
states exist by then); the estimate is :func:`lame.training.memory.estimate` for the same workload.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch

from .settings import MemoryBenchSettings
from .common import environment, random_image, torch_threads, words, write_report

# (what trains, autocast precision, gradient checkpointing, GradCache chunk, model.dtype)
CASES = [
    ("latent", "no", False, None, "float32"), ("latent", "bf16", False, 4, "float32"),
    ("lora", "no", True, None, "float32"), ("lora", "no", False, 4, "float32"),
    ("full", "no", False, None, "float32"), ("full", "bf16", True, 4, "float32"), ("full", "no", True, None, "float32"),
    # the shipped recipes' setup: bfloat16 weights, float32 masters for what trains, bf16 autocast; their
    # warm-up stage, their LoRA stage and their joint stage (the language model trains, the vision tower not)
    ("latent", "bf16", True, 4, "bfloat16"), ("lora", "bf16", True, 4, "bfloat16"),
    ("language", "bf16", True, 4, "bfloat16"),
]
# the trainable patterns of each mode
TRAINS = {"latent": ["latent_embeddings", "decoder_head.*"], "lora": ["*lora_*", "latent_embeddings"],
          "language": ["backbone.model.language_model.*", "latent_embeddings", "decoder_head.*"], "full": ["*"]}


def tiny_model(mode: str, seed: int = 0, shape: str | None = None, dtype: str = "float32"):
    """A tiny Qwen2-VL LaME model (K = 4, decoder head; ``shape``: one language, vision and decoder block
    of that real architecture) whose trainable parameters are ``mode``'s (:data:`TRAINS`): ``latent``
    (latent block and decoder head), ``lora`` (LoRA adapters and the latent block), ``language`` (the
    language model, latent block and decoder head) or ``full``. Backbone and decoder are held in
    ``dtype`` except what trains, which is float32, as the trainer holds them."""
    from lame import build_tiny_model
    from lame.config import LaMEConfig
    from lame.modeling.lora import add_lora
    from lame.modeling.shapes import build_shaped_model
    from lame.training.params import master_weights, select_trainable
    from lame.training.recipe import ParamGroupSpec

    if shape:
        model = build_shaped_model(shape, 1, 1, config=LaMEConfig(num_reason_tokens=4, max_length=2048), seed=seed,
                                   decoder_layers=1)
    else:
        model = build_tiny_model("qwen2_vl", seed=seed, num_reason_tokens=4, max_length=2048)
    if mode == "lora":
        add_lora(model, 8, 16, 0.1, ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"])
    select_trainable(model, [ParamGroupSpec(pattern=pattern, lr=1e-4) for pattern in TRAINS[mode]])
    master_weights(model, TRAINS[mode], getattr(torch, dtype))
    return model


def training_batch(model, n: int = 12, length: int = 100, image_size: int = 56):
    """``n`` image+text queries and ``n`` text positives of ``length`` words, with decoder targets."""
    from lame.training.steps import TrainBatch

    queries = model.featurize([{"text": words(i, length), "image": random_image(i, image_size)} for i in range(n)])
    positives = model.featurize([words(100 + i, length) for i in range(n)])
    return TrainBatch(queries, positives, [], ["seven plus three is ten"] * n, torch.arange(n))


def workload_of(model, batch, packed: bool = False) -> Workload:
    """The :class:`Workload` of a :class:`~lame.training.steps.TrainBatch`: positions per item as collated
    (the longest item of the largest group; ``packed`` batches: the mean length), patches per item on average."""
    from lame.training.memory import Workload

    groups = [g for g in (batch.queries, batch.positives, batch.negatives) if g]
    if packed:
        tokens = max(sum(len(f) for f in g) / len(g) for g in groups)
    else:
        tokens = max(max(len(f) for f in g) for g in groups)
    patches = [f.pixel_values.shape[0] if f.pixel_values is not None else 0 for g in groups for f in g]
    decoder = model.decoder_head
    targets = [t for t in batch.targets if t]
    decoder_tokens = 0
    if decoder is not None and targets:
        decoder_tokens = max(len(decoder.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets) + 1
    return Workload(queries=len(batch.queries), positives=len(batch.positives), negatives=len(batch.negatives),
                    tokens=int(math.ceil(tokens)), patches=int(math.ceil(sum(patches) / max(1, len(patches)))),
                    decoder_tokens=decoder_tokens, num_reason_tokens=model.config.num_reason_tokens)


def measure_case(mode: str, precision: str, checkpointing: bool, chunk: int | None, dtype: str = "float32",
                 settings: MemoryBenchSettings | None = None) -> dict:
    """Planned and measured peak bytes of one case."""
    settings = settings or MemoryBenchSettings()
    from lame.training.memory import Setup, architecture_of, estimate, trains_of
    from lame.training.objective import LossWeights

    from .peak import measure_training_peak

    model = tiny_model(mode, shape=settings.shape, dtype=dtype)
    batch = training_batch(model, settings.items, settings.words, settings.image_size)
    setup = Setup(strategy="ddp", mixed_precision=precision, gradient_checkpointing=checkpointing,
                  grad_cache_chunk=chunk)
    measured = measure_training_peak(model, batch, LossWeights(1.0, 1.0, 0.1), setup, settings.steps)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    planned = estimate(architecture_of(model), trainable, trains_of(model), workload_of(model, batch), setup)
    return {"trains": mode, "dtype": dtype, "precision": precision, "gradient_checkpointing": checkpointing,
            "grad_cache_chunk": chunk, "planned_bytes": planned.peak, "measured_bytes": measured["peak"],
            "weights_bytes": measured["weights"], "planned_weights_bytes": planned.weights,
            "planned_parts_bytes": {k: v for k, v in asdict(planned).items() if k != "parts"},
            "error": planned.peak / measured["peak"] - 1}


def run_memory_bench(settings: MemoryBenchSettings, output: Path | None = None, log=print) -> dict:
    cases = CASES[:2] if settings.quick else CASES
    if settings.shape:  # fp32 AdamW states of a real vocabulary: the cases that train few parameters
        cases = [c for c in cases if c[0] not in ("full", "language")]
    with torch_threads(settings.threads):
        rows = []
        for case in cases:
            rows.append(measure_case(*case, settings=settings))
            log(f"  {format_row(rows[-1])}")
        env = environment(torch.device("cpu"))  # the thread count the cases ran with
    model = (f"shape:{settings.shape}/1 (one language, vision and decoder block; K=4)" if settings.shape
             else "tiny:qwen2_vl (K=4, decoder head)")
    report = {"benchmark": "memory", "settings": asdict(settings), "model": model,
              "rows": rows, "max_abs_error": max(abs(r["error"]) for r in rows), "environment": env}
    write_report(report, output, "memory")
    return report


def format_row(r: dict) -> str:
    chunk = f"chunk {r['grad_cache_chunk']}" if r["grad_cache_chunk"] else "whole batch"
    ckpt = "checkpointing" if r["gradient_checkpointing"] else "no ckpt"
    setup = f"{r['trains']}, {r['dtype']}, {r['precision']}, {ckpt}, {chunk}"
    return (f"{setup:<50} planned {r['planned_bytes'] / 2**20:8.1f} MiB  measured {r['measured_bytes'] / 2**20:8.1f} MiB"
            f"  error {100 * r['error']:+6.1f} %")


def format_memory(report: dict) -> str:
    lines = [format_row(r) for r in report["rows"]]
    lines.append(f"largest |error|: {100 * report['max_abs_error']:.1f} % ({report['model']}, "
                 f"{report['settings']['items']} queries + {report['settings']['items']} positives)")
    return "\n".join(lines)
