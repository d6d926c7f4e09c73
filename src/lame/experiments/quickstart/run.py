"""`lame quickstart`: LaME vs the discriminative baseline on the offline digits benchmark, on a CPU.

1. a tiny VLM of a real backbone class learns to read digits (cached between runs);
2. LaME (K reason tokens + decoder head, two stages) and the baseline (K = 0, no decoder) train on
   the same data with the same budget (steps, batch, learning rates);
3. both are scored on the held-out split: Hit@1 per level, and encode time per query;
4. a report folder gets the scores, both models, a plot and a sample of decoded latents.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lame.experiments.digits import generate_digits_benchmark
from lame.eval.jsonl import load_jsonl_task
from lame.eval.runner import score_task
from lame.eval.tasks import RetrievalTask
from lame.modeling import LaMEModel
from lame.training.recipe import recipe_from_dict
from lame.training.report import read_metrics
from lame.training.trainer import Trainer
from .pretrain import pretrain_digit_vlm
from .settings import PretrainSettings, QuickstartSettings

CACHE = Path(os.environ.get("LAME_CACHE", Path.home() / ".cache" / "lame"))  # benchmark data, pretrained VLM


def digits_task(test_dir: Path, per_level: int | None = None) -> RetrievalTask:
    """The digits test split as a retrieval task; a query never ranks its own image(s)."""
    task = load_jsonl_task(test_dir)
    task.group_by = "level"
    if per_level is not None:
        kept, seen = [], {}
        for q in task.queries:
            level = q.meta["level"]
            if seen.get(level, 0) < per_level:
                kept.append(q)
                seen[level] = seen.get(level, 0) + 1
        task.queries = kept
    all_docs = list(task.corpus)
    for q in task.queries:
        own = set(q.meta.get("query_ids", []))
        q.candidates = [d for d in all_docs if d not in own]
    return task


def hit_at_1_by_level(model, task: RetrievalTask, batch_size: int = 64) -> dict[str, float]:
    doc_ids = list(task.corpus)
    docs = model.encode([task.corpus[d] for d in doc_ids], batch_size=batch_size)
    queries = model.encode([q.item for q in task.queries], batch_size=batch_size)
    result, _ = score_task(task, queries, docs, doc_ids)
    scores = {f"hit@1/level{k}": v["hit@1"] for k, v in result["groups"].items()}
    scores["hit@1"] = result["hit@1"]
    return scores


def ensure_data(seed: int = 0) -> Path:
    folder = CACHE / f"digits-benchmark-seed{seed}"
    if not (folder / "summary.json").is_file():
        generate_digits_benchmark(folder, seed=seed)
    return folder


def ensure_backbone(data_dir: Path, settings: PretrainSettings, show_progress: bool = True) -> Path:
    from lame.data.items import load_image

    split = json.loads((data_dir / "split.json").read_text())
    labels = _labels()
    train_ids = split["train"]
    images = [load_image(data_dir / "images" / f"{i:04d}.png") for i in train_ids]
    queries = answer_pairs(data_dir / "train.jsonl", data_dir) if settings.with_queries else []
    return pretrain_digit_vlm(images, labels[train_ids], CACHE / f"digit-vlm-{settings.key()}", settings,
                              show_progress=show_progress, queries=queries)


def answer_pairs(records: Path, base_dir: Path, per_level: int | None = None) -> list[tuple[dict, str, int]]:
    """(query item with its images loaded, answer word, level) for the records of a digits JSONL file."""
    from lame.data.items import load_image, resolve_paths

    images: dict[Path, object] = {}

    def loaded(path):
        if path not in images:
            images[path] = load_image(path)
        return images[path]

    pairs, seen = [], {}
    for line in records.read_text().splitlines():
        record = json.loads(line)
        level = record["level"]
        if per_level is not None and seen.get(level, 0) >= per_level:
            continue
        seen[level] = seen.get(level, 0) + 1
        item = resolve_paths(record["query"], base_dir)
        if "image" in item:
            item["image"] = loaded(item["image"])
        if "images" in item:
            item["images"] = [loaded(path) for path in item["images"]]
        pairs.append((item, record["answer"], level))
    return pairs


def _labels() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target


def lame_recipe(settings: QuickstartSettings, backbone: Path, data_dir: Path, output: Path, k: int,
                use_decoder: bool) -> dict:
    """Two stages with the same budget for every variant; K = 0 without decoder is the baseline."""
    pixels = settings.pretrain.min_pixels
    heads = [{"pattern": "latent_embeddings", "lr": settings.lr_heads}]
    if use_decoder:
        heads.append({"pattern": "decoder_head.*", "lr": settings.lr_heads})
    backbone_group = {"pattern": "backbone.model.language_model.*", "lr": settings.lr_backbone}
    return {
        "model": {
            "backbone": str(backbone),
            "decoder": str(backbone / "decoder") if use_decoder else None,
            "seed": settings.seed,
            "lame": {"num_reason_tokens": k, "temperature": settings.temperature, "max_length": 512,
                     "min_pixels": pixels, "max_pixels": pixels, "decoder_target": settings.decoder_target,
                     "decoder_reads": settings.decoder_reads,
                     "reconstruction_weight": settings.reconstruction_weight,
                     "diversity_weight": settings.diversity_weight if k > 1 else 0.0},
        },
        "data": {"sources": [{"path": str(data_dir / "train.jsonl")}]},
        "train": {"output_dir": str(output), "seed": settings.seed, "save_every": 10**9, "keep_last": 1,
                  "log_every": 10, "eval_every": settings.eval_every, "tensorboard": False},
        "stages": [
            {"name": "warmup", "steps": settings.warmup_steps, "batch_size": settings.batch_size,
             "schedule": "constant", "trainable": heads},
            {"name": "joint", "steps": settings.joint_steps, "batch_size": settings.batch_size,
             "schedule": "cosine", "warmup_steps": min(10, settings.joint_steps),
             "trainable": [backbone_group, *heads]},
        ],
    }


def train_variant(name: str, settings: QuickstartSettings, backbone: Path, data_dir: Path, output: Path,
                  k: int, use_decoder: bool, curve_task: RetrievalTask, show_progress: bool = True) -> dict:
    recipe = recipe_from_dict(lame_recipe(settings, backbone, data_dir, output / name, k, use_decoder))
    trainer = Trainer(recipe, show_progress=show_progress, evaluator=lambda m: hit_at_1_by_level(m, curve_task))
    started = time.perf_counter()
    model_dir = trainer.run()
    curve = [{"step": r["step"], **{k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("eval/")}}
             for r in read_metrics(output / name / "metrics.jsonl", kind="eval")]
    return {"model_dir": str(model_dir), "train_seconds": time.perf_counter() - started, "curve": curve}


def run_variant(name: str, settings: QuickstartSettings, k: int, use_decoder: bool, output: Path,
                show_progress: bool = True, timing: bool = True, decode_samples: int = 6) -> dict:
    """Trains one variant on the digits data (benchmark and backbone cached) and scores it on the test split."""
    data_dir = ensure_data()
    backbone = ensure_backbone(data_dir, settings.pretrain, show_progress)
    curve_task = digits_task(data_dir / "test", per_level=settings.eval_queries_per_level)
    test_task = digits_task(data_dir / "test")
    run = train_variant(name, settings, backbone, data_dir, output, k, use_decoder, curve_task, show_progress)
    model = LaMEModel.from_pretrained(run["model_dir"])
    run["test"] = hit_at_1_by_level(model, test_task)
    if timing:
        run["encode_ms_per_query"] = {f"batch{b}": encode_ms_per_query(model, test_task, b) for b in (1, 32)}
    if model.decoder_head is not None and decode_samples:
        sample = test_task.queries[::97][:decode_samples]
        decoded = model.decode_latents([q.item for q in sample], max_new_tokens=8)
        run["decoded_latents"] = [{"query": q.id, "instruction": q.item.get("instruction"),
                                   "answer": q.meta.get("answer"), "decoded": text}
                                  for q, text in zip(sample, decoded)]
    return run


def encode_ms_per_query(model, task: RetrievalTask, batch_size: int) -> float:
    items = [q.item for q in task.queries][:128]
    model.encode(items[:batch_size], batch_size=batch_size)  # warm-up
    started = time.perf_counter()
    model.encode(items, batch_size=batch_size)
    return 1000 * (time.perf_counter() - started) / len(items)


def run_quickstart(output: Path, settings: QuickstartSettings = QuickstartSettings(),
                   show_progress: bool = True) -> dict:
    output.mkdir(parents=True, exist_ok=True)
    variants = {"lame": (settings.num_reason_tokens, True), "baseline": (0, False)}
    report = {"settings": asdict(settings), "variants": {}}
    for name, (k, use_decoder) in variants.items():
        report["variants"][name] = run_variant(name, settings, k, use_decoder, output, show_progress)
    (output / "scores.json").write_text(json.dumps(report, indent=2) + "\n")
    from .plots import plot_quickstart

    plot_quickstart(report, output / "quickstart.png")
    return report


def format_report(report: dict) -> str:
    variants = report["variants"]
    levels = sorted({k for v in variants.values() for k in v["test"] if k.startswith("hit@1/level")})
    header = f"{'model':<10}" + "".join(f"{'L' + lv[-1] + ' Hit@1':>11}" for lv in levels) + \
        f"{'all':>8}{'ms/q b1':>9}{'ms/q b32':>9}{'train s':>9}"
    lines = [header]
    for name, v in variants.items():
        lines.append(f"{name:<10}" + "".join(f"{v['test'][lv]:>11.3f}" for lv in levels)
                     + f"{v['test']['hit@1']:>8.3f}{v['encode_ms_per_query']['batch1']:>9.2f}"
                     + f"{v['encode_ms_per_query']['batch32']:>9.2f}{v['train_seconds']:>9.0f}")
    for sample in variants.get("lame", {}).get("decoded_latents", [])[:3]:
        lines.append(f"latents of {sample['query']} ({sample['instruction']!r}, answer {sample['answer']}) "
                     f"decode to: {sample['decoded']!r}")
    return "\n".join(lines)
