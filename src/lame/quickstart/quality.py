"""`lame bench quality`: the quickstart's ablation grid over several seeds, mean and spread.

Every variant trains from the same pretrained tiny VLM with the same budget (steps, batch, learning
rates); only what the variant names changes. Jobs run in parallel processes.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from .run import QuickstartSettings, ensure_backbone, ensure_data, run_variant

# name -> (K, decoder on?, settings changes)
GRID: dict[str, tuple[int, bool, dict]] = {
    "baseline": (0, False, {}),
    "lame": (8, True, {}),
    "lame-no-decoder": (8, False, {}),
    "lame-K4": (4, True, {}),
    "lame-K16": (16, True, {}),
    "lame-rationale-target": (8, True, {"decoder_target": "full"}),
    "lame-no-diversity": (8, True, {"diversity_weight": 0.0}),
    "lame-short-warmup": (8, True, {"warmup_steps": 10, "joint_steps": 290}),
    "control-decoder-reads-embed": (8, True, {"decoder_reads": "embed"}),
}


def _job(args) -> dict:
    name, seed, base, output, threads = args
    import torch

    torch.set_num_threads(threads)
    k, use_decoder, changes = GRID[name]
    settings = replace(base, seed=seed, **changes)
    run = run_variant(name, settings, k, use_decoder, output / f"seed{seed}", show_progress=False, timing=False,
                      decode_samples=0)
    return {"variant": name, "seed": seed, "test": run["test"], "curve": run["curve"],
            "train_seconds": run["train_seconds"]}


def run_quality(output: Path, variants: list[str], seeds: list[int], jobs: int = 1,
                base: QuickstartSettings = QuickstartSettings()) -> dict:
    unknown = sorted(set(variants) - set(GRID))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(GRID)}")
    output.mkdir(parents=True, exist_ok=True)
    ensure_backbone(ensure_data(), base.pretrain)  # once, before the workers start
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    work = [(name, seed, base, output, threads) for name in variants for seed in seeds]
    if jobs > 1:
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(_job, work))
    else:
        runs = [_job(w) for w in work]
    report = {"settings": json.loads(json.dumps(base, default=lambda o: o.__dict__)), "seeds": seeds,
              "runs": runs, "summary": summarize(runs)}
    (output / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def summarize(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds per variant and level; steps to the baseline's final Hit@1."""
    by_variant: dict[str, list[dict]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)
    summary = {}
    baseline_final = None
    if "baseline" in by_variant:
        baseline_final = float(np.mean([r["curve"][-1]["hit@1"] for r in by_variant["baseline"]]))
    for name, group in by_variant.items():
        keys = sorted(group[0]["test"])
        row = {key: {"mean": float(np.mean([r["test"][key] for r in group])),
                     "std": float(np.std([r["test"][key] for r in group]))} for key in keys}
        if baseline_final is not None:
            reached = [_first_step_reaching(r["curve"], baseline_final) for r in group]
            row["steps_to_baseline_final"] = reached
        row["seeds"] = len(group)
        summary[name] = row
    return summary


def _first_step_reaching(curve: list[dict], target: float) -> int | None:
    for point in curve:
        if point["hit@1"] >= target:
            return point["step"]
    return None


def format_quality(report: dict) -> str:
    summary = report["summary"]
    levels = sorted(k for k in next(iter(summary.values())) if k.startswith("hit@1/level"))
    lines = [f"{'variant':<30}" + "".join(f"{'L' + lv[-1]:>14}" for lv in levels) + f"{'all':>14}  steps to baseline"]
    for name, row in summary.items():
        cells = "".join(f"{row[lv]['mean']:>8.3f}±{row[lv]['std']:.3f}" for lv in levels + ["hit@1"])
        lines.append(f"{name:<30}{cells}  {row.get('steps_to_baseline_final', '')}")
    lines.append(f"(mean ± std over seeds {report['seeds']}; Hit@1 on the held-out split)")
    return "\n".join(lines)
