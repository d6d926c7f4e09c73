"""The prepared GPU check (``scripts/gpu-check.sh``): one JSON with what a GPU can tell that a CPU cannot.

On one GPU, in about six minutes (each part has a time budget and the JSON is rewritten after each):

1. ``speed``: ``lame bench speed`` at Qwen2-VL-2B's full shape in bf16, batch 1 and 32: discriminative,
   LaME K = 8, sequential K = 8, explicit CoT N = 256, with the cost model's prediction of each row.
2. ``train``: 20 steps of the 2B-shaped recipe (configs/qwen2-vl-2b.yaml: bf16, gradient checkpointing,
   Qwen3-0.6B-shaped decoder head; random weights, a synthetic MMEB-like corpus) in four variants:
   LoRA or full fine-tuning, GradCache chunk 8 or the whole batch; samples/s, the measured peak
   memory (``torch.cuda.max_memory_allocated``) and the memory planner's estimate for the same
   batches (:mod:`lame.training.memory`).
3. ``encode``: ``lame bench encode`` throughput on the realistic corpus (naive loop, ``encode``, and
   ``encode`` with packed batches).

``--tiny`` runs the same code on the tiny config with small counts (CPU; the test suite does this).
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import torch

SHAPE = "qwen2-vl-2b"


def _write(report: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "gpu-check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


def part_speed(tiny: bool, device: str, log) -> dict:
    from .speed import SpeedSettings, run_speed

    if tiny:
        settings = SpeedSettings(device=device, quick=True, lame_k=(8,), cot_tokens=(4,), cot_goal_tokens=4)
    else:
        settings = SpeedSettings(shape=SHAPE, device=device, dtype="bfloat16", query_tokens=320, image_size=448,
                                 batch_sizes=(1, 32), lame_k=(8,), sequential_steps=(8,), cot_tokens=(256,),
                                 repeats=3, warmup=1)
    report = run_speed(settings, None, log=log)
    return {"rows": report["rows"], "goals": report["goals"], "cost_model": report.get("cost_model"),
            "model": report["model"], "environment": report["environment"]}


def _corpus(folder: Path, pairs: int) -> Path:
    from .train import write_corpus

    return write_corpus(folder, pairs)


def train_recipe(variant: str, grad_cache: int | None, data: Path, output: Path, tiny: bool, steps: int,
                 batch: int) -> dict:
    """The 2B-shaped recipe (or the tiny one) with one stage: LoRA or full fine-tuning."""
    full = variant == "full"
    trainable = ([{"pattern": "backbone.model.language_model.*", "lr": 1e-5}] if full
                 else [{"pattern": "*lora_*", "lr": 1e-4}])
    trainable += [{"pattern": "latent_embeddings", "lr": 5e-4}, {"pattern": "decoder_head.*", "lr": 2e-5}]
    stage = {"name": variant, "steps": steps + 1, "batch_size": batch, "schedule": "constant", "trainable": trainable}
    if not full:
        stage["lora"] = {"r": 16, "alpha": 32, "dropout": 0.05,
                         "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    return {
        "model": {"backbone": "tiny:qwen2_vl" if tiny else f"shape:{SHAPE}", "decoder": "tiny" if tiny else "shape",
                  "dtype": "float32" if tiny else "bfloat16",
                  "lame": {"num_reason_tokens": 8, "temperature": 0.02, "decoder_target": "answer",
                           "max_length": 8192, "max_pixels": 1003520}},
        "data": {"sources": [{"path": str(data)}]},
        "train": {"output_dir": str(output), "mixed_precision": "no" if tiny else "bf16",
                  "gradient_checkpointing": True, "grad_cache_chunk": grad_cache, "packing": True,
                  "save_every": 10**9, "log_every": 1, "tensorboard": False, "featurize_workers": 4},
        "stages": [stage],
    }


def part_train(tiny: bool, device: str, log, work: Path) -> dict:
    from lame.training.memory import PlanSettings, Workload, architecture_of, estimate, setup_of, trains_of
    from lame.training.recipe import recipe_from_dict
    from lame.training.trainer import Trainer

    steps, batch = (3, 4) if tiny else (20, 32)
    data = _corpus(work / "data", 24 if tiny else 400)
    out = {}
    for variant in ("lora", "full"):
        for chunk in (2 if tiny else 8, None):
            name = f"{variant}, " + (f"GradCache chunk {chunk}" if chunk else "whole batch")
            run_dir = work / f"train-{variant}-{chunk}"
            recipe = recipe_from_dict(train_recipe(variant, chunk, data, run_dir, tiny, steps, batch))
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            try:
                trainer = Trainer(recipe, show_progress=False)
                seen = []
                collate = trainer.model.collate

                def recording(features, _collate=collate, **kwargs):  # sizes, for the planner
                    seen.append([(len(f), 0 if f.pixel_values is None else f.pixel_values.shape[0]) for f in features])
                    return _collate(features, **kwargs)

                trainer.model.collate = recording
                trainer.run(stop_after=steps)  # stops before the stage's last step: nothing is saved
            except torch.OutOfMemoryError as exc:
                out[name] = {"error": f"out of memory: {exc}"}
                log(f"  train {name}: out of memory")
                continue
            peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            rates = [r["samples_per_s"] for r in rows if r.get("samples_per_s")][1:]
            model = trainer.model
            model.collate = collate
            # the planner on the batches this run made: positions per item as computed (packed: the mean
            # length; the largest pass), patches per item on average
            per_item = max(sum(n for n, _ in call) / len(call) for call in seen)
            patches = sum(p for call in seen for _, p in call) / max(1, sum(len(call) for call in seen))
            work_ = Workload(queries=batch, positives=batch, negatives=0, tokens=int(per_item), patches=int(patches),
                             decoder_tokens=8, num_reason_tokens=model.config.num_reason_tokens)
            arch = architecture_of(model)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            planned = estimate(arch, trainable, trains_of(model), work_, setup_of(recipe, 1))
            out[name] = {"samples_per_s": sorted(rates)[len(rates) // 2] if rates else None,
                         "seconds": time.perf_counter() - started, "peak_gib": None if peak is None else peak / 2**30,
                         "planned_gib": planned.gib(), "workload": work_.__dict__,
                         "planned_over_measured": None if peak is None else planned.peak / peak}
            log(f"  train {name}: {out[name]['samples_per_s']} samples/s, peak {out[name]['peak_gib']} GiB, "
                f"planned {planned.peak / 2**30:.2f} GiB")
            del trainer, model
    out["plan_settings"] = PlanSettings().__dict__
    return out


def part_encode(tiny: bool, device: str, log) -> dict:
    from .encode import EncodeSettings, run_encode_bench

    rows = {}
    for packing in (False, True):
        settings = EncodeSettings(device=device, packing=packing, corpus="realistic",
                                  items=48 if tiny else 1000, batch_size=8 if tiny else 32, repeats=1 if tiny else 2,
                                  shape=None if tiny else SHAPE, dtype="float32" if tiny else "bfloat16")
        report = run_encode_bench(settings, None, log=log)
        rows["packed" if packing else "padded"] = {k: report[k] for k in ("rows", "speedup", "allclose",
                                                                           "max_abs_difference", "items")}
    return rows


def run_gpu_check(output: Path, tiny: bool = False, parts: tuple[str, ...] = ("speed", "train", "encode"),
                  log=print) -> dict:
    from .common import environment

    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = {"check": "gpu", "tiny": tiny, "environment": environment(torch.device(device)), "parts": {}}
    work = output / "work"
    for name in parts:
        started = time.perf_counter()
        log(f"gpu check: {name}")
        try:
            if name == "speed":
                result = part_speed(tiny, device, log)
            elif name == "train":
                result = part_train(tiny, device, log, work)
            else:
                result = part_encode(tiny, device, log)
        except Exception as exc:  # noqa: BLE001  (one part's failure is recorded; the others still run)
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        result["seconds"] = time.perf_counter() - started
        report["parts"][name] = result
        _write(report, output)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="runs/gpu-check")
    parser.add_argument("--tiny", action="store_true", help="the tiny config, small counts (CPU)")
    parser.add_argument("--parts", nargs="+", default=["speed", "train", "encode"], choices=["speed", "train", "encode"])
    args = parser.parse_args(argv)
    report = run_gpu_check(Path(args.output), args.tiny, tuple(args.parts))
    failed = [name for name, part in report["parts"].items() if "error" in part]
    print(f"written: {args.output}/gpu-check.json" + (f"; failed parts: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
