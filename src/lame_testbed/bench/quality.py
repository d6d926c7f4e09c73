"""`lame bench quality`: LaME against its peers on the digits benchmark, over seeds, with a data sweep.

Every method trains from the same shipped reference VLM with the same budget (steps, batch, learning
rates); only what the method names changes. Each (method, seed, training pairs) run is its own process
(``jobs`` at a time) and writes ``runs/<method>-<pairs>-seed<seed>.json``, so an interrupted grid
resumes. Times per query are measured afterwards in ONE process, the methods interleaved, so their
ratios are comparable on a shared machine.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from lame.errors import InvalidInput
from lame_testbed.families import FAMILIES
from lame_testbed.quickstart.settings import METHODS, QuickstartSettings

from .jobs import run_jobs
from .seeds import seed_stats
from .timing import ms_per_query

ALL = "all"
FAMILY_NAMES = tuple(FAMILIES)
SWEEP_KEYS = ("hit@1/families", "hit@1/reasoning", "hit@1", "hit@1/level0")


def run_name(method: str, seed: int, pairs: int | None) -> str:
    return f"{method}-{pairs or ALL}-seed{seed}"


def run_job(method: str, seed: int, pairs: int | None, output: Path, base: QuickstartSettings) -> dict:
    """One (method, seed, pairs) run; its result goes to ``output/runs/<name>.json``."""
    from lame_testbed.quickstart.run import run_method

    name = run_name(method, seed, pairs)
    settings = replace(base, seed=seed, train_pairs=pairs)
    run = run_method(method, settings, output / "work" / name, show_progress=False)
    result = {"method": method, "seed": seed, "pairs": pairs, "settings": asdict(settings),
              "model": model_definition(method, settings), **run}
    path = output / "runs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def model_definition(method: str, settings: QuickstartSettings) -> dict:
    """What ``method`` trains (its recipe's ``lame`` section, and whether it has a decoder), recorded with
    each run: a method redefined since (another embedding head, say) makes its old runs stale."""
    from lame_testbed.quickstart.run import method_recipe

    recipe = method_recipe(method, settings, Path("backbone"), Path("train.jsonl"), Path("output"))
    return json.loads(json.dumps({"lame": recipe["model"]["lame"], "decoder": recipe["model"]["decoder"] is not None}))


def run_quality(output: Path, methods: list[str], seeds: list[int], jobs: int = 1,
                base: QuickstartSettings = QuickstartSettings(), sweep_methods: list[str] = (),
                sweep_pairs: list[int] = (), timing_threads: int = 1, split: str = "test") -> dict:
    """Runs every missing (method, seed, pairs) job, times the methods side by side, summarises on
    ``split`` (every run is scored on both: choose on "val", report "test")."""
    unknown = sorted((set(methods) | set(sweep_methods)) - set(METHODS))
    if unknown:
        raise InvalidInput(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    from lame_testbed.digit_vlm import reference_backbone
    from lame_testbed.quickstart.run import ensure_data

    output.mkdir(parents=True, exist_ok=True)
    data_dir = ensure_data()
    reference_backbone()  # checksums verified once, before the workers start
    (output / "base_settings.json").write_text(json.dumps(asdict(base)))
    grid = [(m, s, None) for m in methods for s in seeds]
    grid += [(m, s, p) for m in sweep_methods for p in sweep_pairs for s in seeds]
    _check_finished_runs(output, grid, base)
    todo = [job for job in dict.fromkeys(grid) if not (output / "runs" / f"{run_name(*job)}.json").is_file()]
    _run_jobs(output, todo, jobs)
    runs = [json.loads((output / "runs" / f"{run_name(*job)}.json").read_text()) for job in dict.fromkeys(grid)
            if (output / "runs" / f"{run_name(*job)}.json").is_file()]
    timing = time_methods({m: _model_dir(runs, m, seeds[0]) for m in methods}, threads=timing_threads)
    train_records = sum(1 for line in (data_dir / "train.jsonl").read_text().splitlines() if line.strip())
    report = {"settings": asdict(base), "seeds": seeds, "runs": runs, "timing": timing,
              "train_records_total": train_records,
              "split": split, "summary": summarize([r for r in runs if r["pairs"] is None], split),
              "sweep": summarize_sweep([r for r in runs if r["method"] in sweep_methods], split)}
    report["targets"] = check_targets(report)
    (output / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    from .quality_report import markdown_tables

    (output / "quality.md").write_text(markdown_tables(report))
    from .quality_plots import plot_quality

    report["plots"] = [str(p) for p in plot_quality(report, output) if p]
    return report


def _check_finished_runs(output: Path, grid: list[tuple], base: QuickstartSettings) -> None:
    """Finished runs are reused only when they were trained with the settings asked for now (a setting a
    run does not record did not exist yet: the run had its default)."""
    defaults = json.loads(json.dumps(asdict(QuickstartSettings())))
    for method, seed, pairs in dict.fromkeys(grid):
        path = output / "runs" / f"{run_name(method, seed, pairs)}.json"
        if not path.is_file():
            continue
        run = json.loads(path.read_text())
        recorded, settings = run.get("settings"), replace(base, seed=seed, train_pairs=pairs)
        wanted = json.loads(json.dumps(asdict(settings)))  # as recorded
        differing = sorted(k for k in wanted if recorded is not None and recorded.get(k, defaults[k]) != wanted[k])
        if "model" in run:  # runs before this record was kept: their settings above are all there is
            model = model_definition(method, settings)
            differing += [f"model.{k}" for k in sorted(model) if run["model"].get(k) != model[k]]
        if differing:
            raise InvalidInput(f"{path} was trained with other settings ({', '.join(differing)}); "
                               "choose another --output, or delete the run to train it again")


def _run_jobs(output: Path, todo: list[tuple], jobs: int) -> None:
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    commands = [(run_name(method, seed, pairs), [sys.executable, "-m", "lame_testbed.bench.quality", str(output),
                                                 method, str(seed), str(pairs or ALL)])
                for method, seed, pairs in todo]
    for failure in run_jobs(commands, output, jobs, threads):
        # the report is written from the runs that finished; a failed one can be run again later
        print(f"quality job {failure} failed; see its .log", file=sys.stderr)


def _model_dir(runs: list[dict], method: str, seed: int) -> str | None:
    return next((r["model_dir"] for r in runs if r["method"] == method and r["seed"] == seed
                 and r["pairs"] is None), None)


def time_methods(model_dirs: dict[str, str | None], threads: int = 1, repeats: int = 5) -> dict:
    """ms per query of ``encode`` at batch 1 and 32 for each trained method, side by side in this process
    (see :func:`lame_testbed.quickstart.run.time_models`)."""
    from lame_testbed.quickstart.run import ensure_data, time_models

    return time_models({m: d for m, d in model_dirs.items() if d}, ensure_data(), repeats=repeats, threads=threads)


def summarize(runs: list[dict], split: str = "test") -> dict:
    """Mean and standard deviation over seeds per method: Hit@1 per task on ``split`` and decoded accuracy."""
    by_method: dict[str, list[dict]] = {}
    for run in runs:
        by_method.setdefault(run["method"], []).append(run)
    summary = {}
    for name, group in by_method.items():
        row = {key: seed_stats([r[split][key] for r in group]) for key in sorted(group[0][split])}
        if all(f"decoded_{split}" in r for r in group):
            row |= {f"decoded/{key}": seed_stats([r[f"decoded_{split}"][key] for r in group])
                    for key in sorted(group[0][f"decoded_{split}"])}
        row["train_seconds"] = seed_stats([r["train_seconds"] for r in group])
        summary[name] = row
    return summary


def summarize_sweep(runs: list[dict], split: str = "test") -> dict:
    """Per method and number of training pairs: mean/std of Hit@1 on ``split``."""
    table: dict[str, dict[str, dict]] = {}
    for method in sorted({r["method"] for r in runs}):
        for pairs in sorted({r["pairs"] or 10**9 for r in runs if r["method"] == method}):
            group = [r for r in runs if r["method"] == method and (r["pairs"] or 10**9) == pairs]
            table.setdefault(method, {})[str(pairs if pairs < 10**9 else ALL)] = {
                key: seed_stats([r[split][key] for r in group]) for key in SWEEP_KEYS if key in group[0][split]}
    return table


def check_targets(report: dict) -> dict:
    """The goals of the comparison on the task families, each with the measured numbers and whether it
    is met: a gap counts when its paired per-seed mean exceeds twice the paired differences' std."""
    s, runs, split, targets = report["summary"], report.get("runs", []), report.get("split", "test"), {}
    families = "hit@1/families"
    if "lame" in s and "discriminative" in s:
        gap = paired_gaps(runs, "lame", "discriminative", families, split)
        targets["lame_ahead_of_discriminative_by_5_points_on_the_families"] = {
            "values": gap, "met": _ahead(gap, 0.05)}
    regimes = {}
    for pairs in [None, *sorted({r["pairs"] for r in runs if r["pairs"] is not None})]:
        gap = paired_gaps(runs, "lame", "discriminative-matched", families, split, pairs)
        if gap:
            regimes[str(pairs or ALL)] = {**gap, "met": _ahead(gap, 0.02)}
    if regimes:
        targets["lame_ahead_of_the_position_matched_control_by_2_points_in_a_regime"] = {
            "values": regimes, "met": any(r["met"] for r in regimes.values())}
    decoded = [s["lame"][f"decoded/{f}"]["mean"] for f in FAMILY_NAMES if f"decoded/{f}" in s.get("lame", {})]
    if decoded and families in s["lame"]:
        values = {"decoded": float(np.mean(decoded)), "hit@1": s["lame"][families]["mean"]}
        targets["lame_hit1_within_5_points_of_its_decoded_accuracy_and_decoded_at_least_0.90"] = {
            "values": values, "met": values["decoded"] >= 0.90 and values["decoded"] - values["hit@1"] <= 0.05}
    if "discriminative" in s:
        behind = {m: row["hit@1/level0"]["mean"] - s["discriminative"]["hit@1/level0"]["mean"]
                  for m, row in s.items() if "hit@1/level0" in row}
        targets["no_method_more_than_2_points_behind_discriminative_on_level0"] = {
            "values": behind, "met": all(v >= -0.02 for v in behind.values())}
    ms = ms_per_query(report.get("timing", {}))
    if "lame" in s and "cot" in s and "lame" in ms and "cot" in ms:
        ratio = s["lame"]["hit@1/reasoning"]["mean"] / max(s["cot"]["hit@1/reasoning"]["mean"], 1e-9)
        speedup = ms["cot"]["batch1"] / ms["lame"]["batch1"]
        targets["lame_within_10_percent_of_cot_on_levels_1_3_and_10x_faster"] = {
            "values": {"quality_ratio": ratio, "speedup_batch1": speedup,
                       "speedup_batch32": ms["cot"]["batch32"] / ms["lame"]["batch32"]},
            "met": ratio >= 0.9 and speedup >= 10}
    return targets


def _ahead(gap: dict | None, margin: float) -> bool:
    """A paired gap of at least ``margin`` and beyond twice its spread, over two seeds or more."""
    return bool(gap and gap["n"] >= 2 and gap["mean"] >= margin and gap["mean"] > 2 * gap["std"])


def paired_gaps(runs: list[dict], method: str, control: str, key: str, split: str = "test",
                pairs: int | None = None) -> dict | None:
    """Per-seed differences ``method - control`` of ``key`` (runs on ``pairs`` training pairs, None: all;
    the seeds both have): their mean, sample std and count; None without a common seed."""
    def by_seed(name):
        return {r["seed"]: r[split][key] for r in runs if r["method"] == name and r["pairs"] == pairs
                and key in r.get(split, {})}

    mine, theirs = by_seed(method), by_seed(control)
    differences = [mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))]
    return seed_stats(differences) if differences else None


if __name__ == "__main__":  # one job: python -m lame_testbed.bench.quality OUTPUT METHOD SEED PAIRS
    folder, job_method, job_seed, job_pairs = sys.argv[1:5]
    settings_file = Path(folder) / "base_settings.json"
    base_settings = QuickstartSettings()
    if settings_file.is_file():
        base_settings = replace(base_settings, **json.loads(settings_file.read_text()))
    run_job(job_method, int(job_seed), None if job_pairs == ALL else int(job_pairs), Path(folder), base_settings)
