"""The memory planner (lame.training.memory): estimates against measured peaks on tiny configs (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import noise
from lame import build_tiny_model
from lame.cli import main
from lame.modeling.lora import add_lora
from lame.training.memory import (PeakTracker, Setup, architecture_of, estimate, largest_chunk,
                                  measure_training_peak, trains_of, workload_of)
from lame.training.objective import LossWeights
from lame.training.steps import TrainBatch

WORDS = "zero one two three four five six seven eight nine plus minus".split()


def tiny(mode: str):
    model = build_tiny_model("qwen2_vl", seed=0, num_reason_tokens=4, max_length=2048)
    if mode == "lora":
        add_lora(model, 8, 16, 0.1, ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"])
    for name, p in model.named_parameters():
        train = {"latent": name == "latent_embeddings" or name.startswith("decoder_head."),
                 "lora": "lora_" in name or name == "latent_embeddings", "full": True}[mode]
        p.requires_grad_(train)
    return model


def batch_of(model, n: int = 12, words: int = 100) -> TrainBatch:
    text = lambda i: " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(words))  # noqa: E731
    queries = model.featurize([{"text": text(i), "image": noise((56, 56), i)} for i in range(n)])
    positives = model.featurize([text(100 + i) for i in range(n)])
    return TrainBatch(queries, positives, [], ["seven plus three is ten"] * n, torch.arange(n))


def test_peak_tracker_counts_storages_until_freed():
    with PeakTracker() as tracker:
        x = torch.zeros(1000, 250)  # 1 MB
        y = x + 1
        assert tracker.current == 2 * 1000 * 250 * 4
        del x, y
        assert tracker.current == 0 and tracker.peak == 2 * 1000 * 250 * 4


@pytest.mark.parametrize("mode, precision, checkpointing, chunk", [
    ("latent", "no", False, None), ("latent", "bf16", False, 4), ("lora", "no", True, None),
    ("lora", "no", False, 4), ("full", "no", False, None), ("full", "bf16", True, 4), ("full", "no", True, None),
])
def test_estimate_is_within_20_percent_of_the_measured_peak(mode, precision, checkpointing, chunk):
    model = tiny(mode)
    batch = batch_of(model)
    setup = Setup(strategy="ddp", param_bytes=4, mixed_precision=precision, gradient_checkpointing=checkpointing,
                  grad_cache_chunk=chunk)
    measured = measure_training_peak(model, batch, LossWeights(1.0, 1.0, 0.1), setup)["peak"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    planned = estimate(architecture_of(model), trainable, trains_of(model), workload_of(model, batch), setup).peak
    assert 0.8 <= planned / measured <= 1.2, (planned, measured)


def test_strategies_and_chunks_order_the_estimates():
    model = build_tiny_model("qwen2_vl", seed=0, num_reason_tokens=4)
    arch, trains = architecture_of(model), trains_of(model)
    work = workload_of(model, batch_of(model, 8, 40))
    trainable = sum(p.numel() for p in model.parameters())
    peaks = {s: estimate(arch, trainable, trains, work, Setup(strategy=s, world=4)).peak
             for s in ("ddp", "zero2", "fsdp", "zero3")}
    assert peaks["ddp"] > peaks["zero2"] > peaks["zero3"] and peaks["ddp"] > peaks["fsdp"]
    whole = estimate(arch, trainable, trains, work, Setup()).peak
    assert estimate(arch, trainable, trains, work, Setup(grad_cache_chunk=2)).peak < whole
    assert largest_chunk(arch, trainable, trains, work, Setup(), whole * 2) == 8  # everything fits
    small = estimate(arch, trainable, trains, work, Setup(grad_cache_chunk=3)).peak
    assert largest_chunk(arch, trainable, trains, work, Setup(), small / 0.9) == 3
    assert largest_chunk(arch, trainable, trains, work, Setup(), 1.0) is None


def test_dry_run_prints_the_memory_plan(capsys):
    recipe = Path(__file__).resolve().parents[1] / "configs" / "qwen2-vl-2b.yaml"
    assert main(["train", str(recipe), "--dry-run", "--gpu-memory", "80", "--processes", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("memory per process (ddp, 8 process(es)") == 2
    assert "checkpointing, GradCache chunk 16" in out and "no checkpointing, whole batch" in out
    assert "--gpu-memory 80 GiB: largest GradCache chunk that fits" in out
