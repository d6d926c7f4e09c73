"""`lame bench train`: samples/s of `lame train` against a plain training loop, same model, same batches.

The plain loop is what one writes first: each step draws the same examples as the trainer (the same
seeded sampler), featurises every item on its own (``featurizer(item)``: one image-processor and one
tokenizer call per item), pads each group to its longest item, runs the same objective
(:func:`lame.training.steps.compute_gradients`, whole batch) and the same AdamW update; nothing is
prefetched. ``lame train`` runs the recipe as written: batched featurisation of each sample, the next
batch featurised by ``train.featurize_workers`` threads during the step, and packed (padding-free)
batches with ``train.packing``. Both see the same corpus (:func:`lame_testbed.bench.padding.realistic_pairs`,
images saved as PNG files); rounds alternate the two, and each round's samples/s are the median over
its steps after the first (warm-up). The ratio is paired per round.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .settings import TrainBenchSettings
from .common import environment, median, torch_threads, write_report


def write_corpus(folder: Path, pairs: int, seed: int = 0) -> Path:
    """The realistic (query, positive) mix as a training JSONL, images as PNG files beside it."""
    from .padding import realistic_pairs

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    count = 0

    def item(obj, name):
        nonlocal count
        if isinstance(obj, str):
            return obj
        out = {}
        for key, value in obj.items():
            if key == "image":
                count += 1
                path = f"images/{name}-{count}.png"
                _noisy(value, count).save(folder / path)
                out["image"] = path
            elif key == "parts":
                parts = []
                for part in value:
                    if isinstance(part, str):
                        parts.append(part)
                    else:
                        count += 1
                        path = f"images/{name}-{count}.png"
                        _noisy(part, count).save(folder / path)
                        parts.append({"image": path})
                out["parts"] = parts
            else:
                out[key] = value
        return out

    lines = []
    for i, (query, positive, task) in enumerate(realistic_pairs(pairs, seed)):
        lines.append(json.dumps({"id": f"p{i}", "query": item(query, f"q{i}"), "positive": item(positive, f"p{i}"),
                                 "answer": positive if isinstance(positive, str) else task, "task": task}))
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _noisy(image, seed: int):
    """A noise image of the blank image's size (PNG decoding costs what a photo's would, roughly)."""
    from .common import random_image

    return random_image(seed, image.size)


def recipe_dict(settings: TrainBenchSettings, data: Path, output: Path) -> dict:
    if settings.shape:
        backbone = f"shape:{settings.shape}" + (f"/{settings.layers}" if settings.layers else "")
        decoder = "shape"
    else:
        backbone, decoder = f"tiny:{settings.backbone}", "tiny"
    return {
        "model": {"backbone": backbone, "decoder": decoder, "dtype": "float32", "seed": settings.seed,
                  "lame": {"num_reason_tokens": 8, "max_length": 8192}},
        "data": {"sources": [{"path": str(data)}]},
        "train": {"output_dir": str(output), "seed": settings.seed, "save_every": 10**9, "keep_last": 1,
                  "log_every": 1, "tensorboard": False, "featurize_workers": settings.featurize_workers,
                  "packing": settings.packing, "grad_cache_chunk": settings.grad_cache_chunk},
        # one step more than is run: the run stops before the stage's end, so nothing is saved (run_trainer)
        "stages": [{"name": "joint", "steps": settings.steps + 1, "batch_size": settings.batch_size,
                    "schedule": "constant", "lora": {"r": 16, "alpha": 32, "target_modules": ["q_proj", "v_proj"]},
                    "trainable": [{"pattern": "*lora_*", "lr": 1e-4}, {"pattern": "latent_embeddings", "lr": 1e-3},
                                  {"pattern": "decoder_head.projector.*", "lr": 1e-3}]}],
    }


def run_trainer(recipe) -> list[float]:
    """Seconds of each step of ``lame train`` (from its metrics: samples/s per logged step)."""
    from lame.training.trainer import Trainer

    trainer = Trainer(recipe, show_progress=False)
    trainer.run(stop_after=recipe.stages[0].steps - 1)
    rows = [json.loads(line) for line in (Path(recipe.train.output_dir) / "metrics.jsonl").read_text().splitlines()]
    batch = recipe.stages[0].batch_size
    return [batch / r["samples_per_s"] for r in rows if r.get("samples_per_s")]


def run_plain(recipe) -> list[float]:
    """Seconds of each step of the plain loop on the same model and examples."""
    from lame.modeling.lora import add_lora
    from lame.training.data import JsonlSource, MixtureSampler
    from lame.training.objective import loss_weights
    from lame.training.params import select_trainable
    from lame.training.steps import TrainBatch, compute_gradients
    from lame.training.trainer import build_model, label_id

    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe)
    stage = recipe.stages[0]
    if stage.lora:
        add_lora(model, stage.lora.r, stage.lora.alpha, stage.lora.dropout, stage.lora.target_modules)
    optimizer = torch.optim.AdamW(select_trainable(model, stage.trainable))
    weights = loss_weights(model.config, stage)
    sampler = MixtureSampler([JsonlSource(s.path, s.name) for s in recipe.data.sources],
                             [s.weight for s in recipe.data.sources], seed=recipe.train.seed)
    model.train()
    times = []
    for _ in range(stage.steps - 1):  # as many as run_trainer runs
        start = time.perf_counter()
        examples = [sampler.read(*position) for position in sampler.next_positions(stage.batch_size)]
        queries = [model.featurizer(e.query) for e in examples]
        positives = [model.featurizer(e.positives[0]) for e in examples]
        batch = TrainBatch(queries, positives, [], [e.decoder_target(model.config.decoder_target) for e in examples],
                           torch.tensor([label_id(e.label, i) for i, e in enumerate(examples)]))
        compute_gradients(model, batch, weights, None)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], stage.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def run_train_bench(settings: TrainBenchSettings, output: Path | None = None, log=print) -> dict:
    if settings.quick:
        settings = settings.quick_version()
    with torch_threads(settings.threads):
        return _run(settings, output, log)


def _run(settings: TrainBenchSettings, output: Path | None, log) -> dict:
    from lame.training.recipe import recipe_from_dict

    work = Path(tempfile.mkdtemp(prefix="lame-bench-train-"))
    try:
        data = write_corpus(work / "data", settings.pairs, settings.seed)
        log(f"bench train: {settings.pairs} pairs, {'shape ' + settings.shape if settings.shape else 'tiny'}, "
            f"batch {settings.batch_size}, {settings.steps} steps x {settings.rounds} rounds")
        samples = {"lame train": [], "plain loop": []}
        per_step = {"lame train": [], "plain loop": []}
        for r in range(settings.rounds):
            order = ["lame train", "plain loop"] if r % 2 == 0 else ["plain loop", "lame train"]
            for name in order:
                run_dir = work / f"run-{r}-{name.replace(' ', '-')}"
                recipe = recipe_from_dict(recipe_dict(settings, data, run_dir))
                steps = run_trainer(recipe) if name == "lame train" else run_plain(recipe)
                shutil.rmtree(run_dir, ignore_errors=True)
                timed = steps[1:] or steps  # the first step warms up
                per_step[name].append(steps)
                samples[name].append(settings.batch_size / median(timed))
            log(f"  round {r + 1}/{settings.rounds}: lame train {samples['lame train'][-1]:.2f} samples/s, "
                f"plain loop {samples['plain loop'][-1]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = {name: {"samples_per_s": median(v), "samples_per_s_all": v, "step_seconds_all": per_step[name]}
            for name, v in samples.items()}
    report = {
        "benchmark": "train",
        "settings": asdict(settings),
        "model": f"shape:{settings.shape}/{settings.layers} (random weights)" if settings.shape
        else f"tiny:{settings.backbone}",
        "environment": environment(torch.device("cpu")),
        "rows": rows,
        "speedup": median([a / b for a, b in zip(samples["lame train"], samples["plain loop"])]),
    }
    write_report(report, output, "train")
    return report


def format_train(report: dict) -> str:
    lines = [f"{'loop':<12} {'samples/s':>10}"]
    for name, row in report["rows"].items():
        lines.append(f"{name:<12} {row['samples_per_s']:>10.2f}")
    lines.append(f"lame train / plain loop: {report['speedup']:.2f}x ({report['model']}, "
                 f"batch {report['settings']['batch_size']}, packing {report['settings']['packing']})")
    return "\n".join(lines)
