"""The memory planner (lame.training.memory): estimates against measured peaks on tiny configs (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import sum_record, write_jsonl

from lame import build_tiny_model
from lame.cli import main
from lame_testbed.bench.memory import CASES, measure_case, training_batch, workload_of
from lame_testbed.bench.peak import PeakTracker
from lame.training.memory import GIB, Setup, architecture_of, estimate, held_bytes, largest_chunk, trains_of
from lame.training.recipe import recipe_from_dict
from lame.training.trainer import Trainer, dry_run


def test_peak_tracker_counts_storages_until_freed():
    with PeakTracker() as tracker:
        x = torch.zeros(1000, 250)  # 1 MB
        y = x + 1
        assert tracker.current == 2 * 1000 * 250 * 4
        del x, y
        assert tracker.current == 0 and tracker.peak == 2 * 1000 * 250 * 4


@pytest.mark.parametrize("mode, precision, checkpointing, chunk, dtype", CASES)
def test_estimate_is_within_20_percent_of_the_measured_peak(mode, precision, checkpointing, chunk, dtype):
    row = measure_case(mode, precision, checkpointing, chunk, dtype)
    assert abs(row["error"]) <= 0.2, row


def test_the_plan_counts_what_the_trainer_holds_in_each_stage(tmp_path):
    """A bfloat16 K = 8 recipe (the shipped recipes' setup, tiny): in each stage the planned weights,
    gradients and AdamW moments are, byte for byte, what the trainer holds at that stage's step: float32
    master weights for what the stage and the earlier ones train, bfloat16 for the rest (the language
    model is still bfloat16 in the warm-up)."""
    write_jsonl(tmp_path / "train.jsonl", [sum_record(i) for i in range(8)])
    warmup = [{"pattern": "latent_embeddings", "lr": 1e-3}, {"pattern": "decoder_head.*", "lr": 1e-3}]
    raw = {"model": {"backbone": "tiny:qwen2_vl", "decoder": "tiny", "dtype": "bfloat16",
                     "lame": {"num_reason_tokens": 8}},
           "data": {"sources": [{"path": "train.jsonl"}]},
           "train": {"output_dir": str(tmp_path / "out"), "mixed_precision": "bf16", "tensorboard": False},
           "stages": [{"name": "warmup", "steps": 1, "batch_size": 2, "trainable": warmup},
                      {"name": "joint", "steps": 2, "batch_size": 2, "trainable": [
                          {"pattern": "backbone.model.language_model.*", "lr": 1e-5}, *warmup]}]}
    recipe = recipe_from_dict(raw, tmp_path)
    trainer = Trainer(recipe, show_progress=False)
    held = []  # per stage: the bytes of the weights, of the gradients and of AdamW's two moments
    real_step = trainer.strategy.step

    def step(optimizer, *args):
        params = list(trainer.model.parameters())
        grads = held_bytes(p.grad for p in params if p.grad is not None)
        norm = real_step(optimizer, *args)
        moments = held_bytes(s[k] for s in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq"))
        held.append((held_bytes(params), grads, moments))
        return norm

    trainer.strategy.step = step
    trainer.run(stop_after=2)  # one step of each stage
    plans = [stage["memory"] for stage in dry_run(recipe)]
    language = [p for n, p in trainer.model.named_parameters() if n.startswith("backbone.model.language_model.")]
    assert {p.dtype for p in language} == {torch.float32}  # the joint stage's masters
    assert plans[0]["parameters_by_dtype"]["bfloat16"] > sum(p.numel() for p in language)  # still bf16 then
    for plan, (weights, grads, moments) in zip(plans, held):
        planned = plan["recipe"]
        assert (planned["weights"] * GIB, planned["gradients"] * GIB, planned["optimizer"] * GIB) == (
            weights, grads, moments), plan["stage"]


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


def test_the_2b_recipe_plans_float32_masters_for_what_has_trained():
    """configs/qwen2-vl-2b.yaml (meta device, replicated): the float32 parameters of each stage are exactly
    those trained so far, every other one is bfloat16 (the language model through the warm-up), and the
    gradients and each AdamW moment take 4 bytes per trainable parameter."""
    from lame.training.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "configs" / "qwen2-vl-2b.yaml", check_paths=False)
    report = dry_run(recipe)
    warmup, joint = (stage["memory"] for stage in report)
    language = next(g["parameters"] for g in report[1]["groups"] if g["pattern"] == "backbone.model.language_model.*")
    for plan in (warmup, joint):
        assert set(plan["parameters_by_dtype"]) == {"float32", "bfloat16"}
        assert plan["parameters_by_dtype"]["float32"] == plan["trainable"], plan["stage"]
        assert plan["recipe"]["gradients"] * GIB == 4 * plan["trainable"]
        assert plan["recipe"]["optimizer"] == 2 * plan["recipe"]["gradients"]
    assert joint["trainable"] - warmup["trainable"] == language
    total = sum(warmup["parameters_by_dtype"].values())
    assert warmup["recipe"]["weights"] * GIB == 4 * warmup["trainable"] + 2 * (total - warmup["trainable"])
    assert joint["recipe"]["weights"] - warmup["recipe"]["weights"] == pytest.approx(2 * language / GIB)


def test_bench_memory_quick_writes_the_table(tmp_path, capsys):
    assert main(["bench", "memory", "--quick", "--threads", "1", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "memory.json").read_text())
    assert len(report["rows"]) == 2 and report["max_abs_error"] <= 0.2
    assert all(r["measured_bytes"] > r["weights_bytes"] > 0 for r in report["rows"])
    assert "largest |error|" in capsys.readouterr().out
