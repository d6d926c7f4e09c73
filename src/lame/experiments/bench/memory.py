"""`lame bench memory`: the memory planner's estimate against the measured peak of real training steps.

Each case trains a tiny random Qwen2-VL LaME model (CPU, fp32 weights) on one batch of image+text
queries and text positives, with one setup: what trains (the latent block and decoder head, LoRA, or
everything), autocast precision, gradient checkpointing and GradCache chunking. The peak is measured
by :class:`lame.training.memory.PeakTracker` (every tensor storage an operation allocates, counted
until it is freed, weights and buffers included) over the second of two AdamW steps (the optimizer's
states exist by then); the estimate is :func:`lame.training.memory.estimate` for the same workload.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .common import environment, random_image, torch_threads, words, write_report

# (what trains, autocast precision, gradient checkpointing, GradCache chunk)
CASES = [
    ("latent", "no", False, None), ("latent", "bf16", False, 4), ("lora", "no", True, None),
    ("lora", "no", False, 4), ("full", "no", False, None), ("full", "bf16", True, 4), ("full", "no", True, None),
]


@dataclass
class MemoryBenchSettings:
    items: int = 12  # queries (and as many positives) per batch
    words: int = 100  # words per text
    image_size: int = 56  # query images' side in pixels
    steps: int = 2  # AdamW steps; the last one is measured
    shape: str | None = None  # a real architecture's first block (lame.modeling.shapes) instead of the tiny config
    threads: int | None = None
    quick: bool = False


def tiny_model(mode: str, seed: int = 0, shape: str | None = None):
    """A tiny Qwen2-VL LaME model (K = 4, decoder head; ``shape``: one language, vision and decoder block
    of that real architecture) whose trainable parameters are ``mode``'s: ``latent`` (latent block and
    decoder head), ``lora`` (LoRA adapters and the latent block) or ``full``."""
    from lame import build_tiny_model
    from lame.config import LaMEConfig
    from lame.modeling.lora import add_lora
    from lame.modeling.shapes import build_shaped_model

    if shape:
        model = build_shaped_model(shape, 1, 1, config=LaMEConfig(num_reason_tokens=4, max_length=2048), seed=seed,
                                   decoder_layers=1)
    else:
        model = build_tiny_model("qwen2_vl", seed=seed, num_reason_tokens=4, max_length=2048)
    if mode == "lora":
        add_lora(model, 8, 16, 0.1, ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"])
    for name, p in model.named_parameters():
        train = {"latent": name == "latent_embeddings" or name.startswith("decoder_head."),
                 "lora": "lora_" in name or name == "latent_embeddings", "full": True}[mode]
        p.requires_grad_(train)
    return model


def training_batch(model, n: int = 12, length: int = 100, image_size: int = 56):
    """``n`` image+text queries and ``n`` text positives of ``length`` words, with decoder targets."""
    from lame.training.steps import TrainBatch

    queries = model.featurize([{"text": words(i, length), "image": random_image(i, image_size)} for i in range(n)])
    positives = model.featurize([words(100 + i, length) for i in range(n)])
    return TrainBatch(queries, positives, [], ["seven plus three is ten"] * n, torch.arange(n))


def measure_case(mode: str, precision: str, checkpointing: bool, chunk: int | None,
                 settings: MemoryBenchSettings | None = None) -> dict:
    """Planned and measured peak bytes of one case."""
    settings = settings or MemoryBenchSettings()
    from lame.training.memory import Setup, architecture_of, estimate, measure_training_peak, trains_of, workload_of
    from lame.training.objective import LossWeights

    model = tiny_model(mode, shape=settings.shape)
    batch = training_batch(model, settings.items, settings.words, settings.image_size)
    setup = Setup(strategy="ddp", param_bytes=4, mixed_precision=precision, gradient_checkpointing=checkpointing,
                  grad_cache_chunk=chunk)
    measured = measure_training_peak(model, batch, LossWeights(1.0, 1.0, 0.1), setup, settings.steps)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    planned = estimate(architecture_of(model), trainable, trains_of(model), workload_of(model, batch), setup)
    return {"trains": mode, "precision": precision, "gradient_checkpointing": checkpointing, "grad_cache_chunk": chunk,
            "planned_bytes": planned.peak, "measured_bytes": measured["peak"], "weights_bytes": measured["weights"],
            "planned_parts_bytes": {k: v for k, v in asdict(planned).items() if k != "parts"},
            "error": planned.peak / measured["peak"] - 1}


def run_memory_bench(settings: MemoryBenchSettings, output: Path | None = None, log=print) -> dict:
    cases = CASES[:2] if settings.quick else CASES
    if settings.shape:  # fp32 AdamW states of a real vocabulary: the cases that train few parameters
        cases = [c for c in cases if c[0] != "full"]
    with torch_threads(settings.threads):
        rows = []
        for case in cases:
            rows.append(measure_case(*case, settings))
            log(f"  {format_row(rows[-1])}")
    model = (f"shape:{settings.shape}/1 (one language, vision and decoder block; K=4)" if settings.shape
             else "tiny:qwen2_vl (K=4, decoder head)")
    report = {"benchmark": "memory", "settings": asdict(settings), "model": model,
              "rows": rows, "max_abs_error": max(abs(r["error"]) for r in rows),
              "environment": environment(torch.device("cpu"))}
    write_report(report, output, "memory")
    return report


def format_row(r: dict) -> str:
    chunk = f"chunk {r['grad_cache_chunk']}" if r["grad_cache_chunk"] else "whole batch"
    setup = f"{r['trains']}, {r['precision']}, {'checkpointing' if r['gradient_checkpointing'] else 'no ckpt'}, {chunk}"
    return (f"{setup:<36} planned {r['planned_bytes'] / 2**20:8.1f} MiB  measured {r['measured_bytes'] / 2**20:8.1f} MiB"
            f"  error {100 * r['error']:+6.1f} %")


def format_memory(report: dict) -> str:
    lines = [format_row(r) for r in report["rows"]]
    lines.append(f"largest |error|: {100 * report['max_abs_error']:.1f} % ({report['model']}, "
                 f"{report['settings']['items']} queries + {report['settings']['items']} positives)")
    return "\n".join(lines)
