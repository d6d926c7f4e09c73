"""The memory planner (lame.training.memory): estimates against measured peaks on tiny configs (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lame import build_tiny_model
from lame.cli import main
from lame.experiments.bench.memory import CASES, measure_case, training_batch
from lame.training.memory import PeakTracker, Setup, architecture_of, estimate, largest_chunk, trains_of, workload_of


def test_peak_tracker_counts_storages_until_freed():
    with PeakTracker() as tracker:
        x = torch.zeros(1000, 250)  # 1 MB
        y = x + 1
        assert tracker.current == 2 * 1000 * 250 * 4
        del x, y
        assert tracker.current == 0 and tracker.peak == 2 * 1000 * 250 * 4


@pytest.mark.parametrize("mode, precision, checkpointing, chunk", CASES)
def test_estimate_is_within_20_percent_of_the_measured_peak(mode, precision, checkpointing, chunk):
    row = measure_case(mode, precision, checkpointing, chunk)
    assert abs(row["error"]) <= 0.2, row


def test_strategies_and_chunks_order_the_estimates():
    model = build_tiny_model("qwen2_vl", seed=0, num_reason_tokens=4)
    arch, trains = architecture_of(model), trains_of(model)
    work = workload_of(model, training_batch(model, 8, 40))
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


def test_bench_memory_quick_writes_the_table(tmp_path, capsys):
    assert main(["bench", "memory", "--quick", "--threads", "1", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "memory.json").read_text())
    assert len(report["rows"]) == 2 and report["max_abs_error"] <= 0.2
    assert all(r["measured_bytes"] > r["weights_bytes"] > 0 for r in report["rows"])
    assert "largest |error|" in capsys.readouterr().out
