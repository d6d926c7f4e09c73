"""`lame bench quality`: the quickstart's ablation grid over several seeds, mean and spread.

Every variant trains from the same pretrained tiny VLM with the same budget (steps, batch, learning
rates); only what the variant names changes. Jobs run in parallel processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from lame.errors import InvalidInput
from lame.experiments.quickstart.run import QuickstartSettings, ensure_backbone, ensure_data, run_variant

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


def run_job(name: str, seed: int, output: Path, base: QuickstartSettings = QuickstartSettings()) -> dict:
    """One (variant, seed) run; its result is written to ``output/runs/<variant>-seed<seed>.json``."""
    k, use_decoder, changes = GRID[name]
    settings = replace(base, seed=seed, **changes)
    run = run_variant(name, settings, k, use_decoder, output / f"seed{seed}", show_progress=False, timing=False,
                      decode_samples=0)
    result = {"variant": name, "seed": seed, "test": run["test"], "curve": run["curve"],
              "train_seconds": run["train_seconds"]}
    path = output / "runs" / f"{name}-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_quality(output: Path, variants: list[str], seeds: list[int], jobs: int = 1,
                base: QuickstartSettings = QuickstartSettings()) -> dict:
    """Runs every (variant, seed) not already in ``output/runs`` (so an interrupted grid resumes), each in
    its own process, ``jobs`` at a time, and summarises them all."""
    unknown = sorted(set(variants) - set(GRID))
    if unknown:
        raise InvalidInput(f"unknown variant(s) {unknown}; choose from {sorted(GRID)}")
    output.mkdir(parents=True, exist_ok=True)
    ensure_backbone(ensure_data(), base.pretrain)  # once, before the workers start
    (output / "base_settings.json").write_text(json.dumps(asdict(base)))
    todo = [(n, s) for n in variants for s in seeds if not (output / "runs" / f"{n}-seed{s}.json").is_file()]
    threads = str(max(1, (os.cpu_count() or 1) // max(jobs, 1)))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    running: list[tuple[subprocess.Popen, str]] = []
    for name, seed in todo:
        while len(running) >= jobs:
            running = _reap(running)
        command = [sys.executable, "-m", "lame.experiments.bench.quality", str(output), name, str(seed)]
        log = open(output / f"{name}-seed{seed}.log", "w")
        running.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), f"{name}-{seed}"))
    while running:
        running = _reap(running)
    runs = [json.loads(p.read_text()) for p in sorted((output / "runs").glob("*.json"))
            if p.stem.rsplit("-seed", 1)[0] in variants and int(p.stem.rsplit("-seed", 1)[1]) in seeds]
    report = {"settings": asdict(base), "seeds": seeds, "runs": runs, "summary": summarize(runs)}
    (output / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _reap(running):
    time.sleep(0.5)
    still = []
    for process, label in running:
        code = process.poll()
        if code is None:
            still.append((process, label))
        elif code != 0:
            print(f"quality job {label} failed with exit code {code}; see its .log", file=sys.stderr)
    return still


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


if __name__ == "__main__":  # one job: python -m lame.experiments.bench.quality OUTPUT VARIANT SEED
    folder, variant, job_seed = sys.argv[1:4]
    settings_file = Path(folder) / "base_settings.json"
    base_settings = QuickstartSettings()
    if settings_file.is_file():
        raw = json.loads(settings_file.read_text())
        raw["pretrain"] = replace(base_settings.pretrain, **raw["pretrain"])
        base_settings = replace(base_settings, **raw)
    run_job(variant, int(job_seed), Path(folder), base_settings)
