"""`lame bench encode`: ``LaMEModel.encode`` against a naive embedding loop, same model, same items.

The naive loop is what one writes first: batches in the given order, each padded to its longest item,
every image through the image processor on its own, the forward pass under ``torch.no_grad`` (not
inference mode), nothing overlapped. ``encode`` buckets by length, runs under ``torch.inference_mode``
and featurises the next window of items in a background thread while the model runs. Both must give
the same embeddings (allclose); the report gives items/s for each and the speed-up.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lame.data.featurize import Features
from lame.data.items import ItemError, to_item
from .settings import EncodeSettings
from .common import (environment, load_base_model, median, random_image, resolve_device, timed, torch_threads,
                     words, write_report)


def mixed_items(count: int, seed: int = 0) -> list:
    """Text (4-120 words), single-image (with or without text) and multi-image (2-3 images) items,
    in a shuffled order with varied lengths and image sizes."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        kind = rng.choice(["text", "image", "image+text", "multi"], p=[0.4, 0.2, 0.25, 0.15])
        text = words(seed * 100_003 + i, int(rng.integers(4, 120)))
        size = lambda: (int(rng.integers(24, 120)), int(rng.integers(24, 120)))  # noqa: E731
        if kind == "text":
            items.append(text)
        elif kind == "image":
            items.append(random_image(i, size()))
        elif kind == "image+text":
            items.append({"text": text, "image": random_image(i, size()), "instruction": "Represent the image."})
        else:
            n = int(rng.integers(2, 4))
            parts = [text[: len(text) // 2]]
            for j in range(n):
                parts += [random_image(i * 10 + j, size()), f"figure {j + 1}"]
            items.append(parts)
    return items


def naive_features(model, obj, index: int) -> Features:
    """The featurisation a naive loop does: the same prompt, but each image through the processor alone."""
    featurizer = model.featurizer
    item = to_item(obj, index)
    text = featurizer.prompt(item)
    pixel_values = grid = None
    if item.images:
        outs = [featurizer.image_processor(images=[image], return_tensors="pt") for image in item.images]
        vision = {key: torch.cat([o[key] for o in outs]) for key in outs[0]}
        pixel_values, grid = vision["pixel_values"], vision.get("image_grid_thw")
        text = featurizer.expand_image_tokens(text, vision, index)
    input_ids = model.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    if input_ids.shape[0] > featurizer.max_length:
        raise ItemError(index, "too long")
    return Features(input_ids, pixel_values, grid)


def naive_encode(model, items: list, batch_size: int) -> np.ndarray:
    """Fixed-order batches padded to their longest item, no inference mode, no overlap."""
    was_training = model.training
    model.eval()
    rows = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start: start + batch_size]
            features = [naive_features(model, item, start + i) for i, item in enumerate(chunk)]
            rows.append(model(model.collate(features, packed=False)).embeddings.float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(rows)


def run_encode_bench(settings: EncodeSettings, output: Path | None = None, log=print) -> dict:
    """Times the naive loop and ``encode`` on the same items; writes ``encode.json`` under ``output``."""
    if settings.quick:
        settings = settings.quick_version()
    with torch_threads(settings.threads):
        return _run_encode_bench(settings, output, log)


def _run_encode_bench(settings: EncodeSettings, output: Path | None, log) -> dict:
    device = resolve_device(settings.device)
    vision_layers = None
    if settings.shape and settings.layers:
        from lame.modeling.shapes import resolve_depths

        vision_layers = resolve_depths(settings.shape, settings.layers)["vision_layers"]
    model = load_base_model(settings.model, settings.backbone, device, settings.dtype,
                            num_reason_tokens=settings.num_reason_tokens, shape=settings.shape,
                            layers=settings.layers, vision_layers=vision_layers)
    if settings.corpus == "realistic":
        from .padding import realistic_pairs

        pairs = realistic_pairs((settings.items + 1) // 2, settings.seed)
        items = [x for q, p, _ in pairs for x in (q, p)][: settings.items]
    else:
        items = mixed_items(settings.items, settings.seed)
    images = [len(to_item(x).images) for x in items]
    kinds = {"text": sum(n == 0 for n in images), "single_image": sum(n == 1 for n in images),
             "multi_image": sum(n > 1 for n in images)}
    log(f"bench encode: {len(items)} items {kinds}, batch {settings.batch_size}, device {device}")
    results = {"naive": None, "encode": None}
    times: dict[str, list[float]] = {"naive": [], "encode": []}

    def ours():
        return model.encode(items, batch_size=settings.batch_size, packing=settings.packing)

    runners = {"naive": lambda: naive_encode(model, items, settings.batch_size), "encode": ours}
    for _ in range(settings.warmup):  # on a few batches: the first calls allocate and load lazily
        model.encode(items[: 2 * settings.batch_size], batch_size=settings.batch_size)
        naive_encode(model, items[: 2 * settings.batch_size], settings.batch_size)
    for r in range(settings.repeats):
        for name, fn in runners.items():
            box = {}
            times[name].append(timed(lambda: box.setdefault("out", fn()), device))
            results[name] = box["out"]
        log(f"  round {r + 1}/{settings.repeats}: naive {times['naive'][-1]:.1f} s, "
            f"encode {times['encode'][-1]:.1f} s")
    naive, ours = results["naive"], results["encode"]
    tolerance = 1e-5 if settings.dtype == "float32" else 3e-2  # bf16: rounding differs with the batch's shape
    difference = float(np.abs(naive - ours).max())
    rows = {name: {"seconds": median(t), "items_per_s": len(items) / median(t), "seconds_all": t}
            for name, t in times.items()}
    report = {
        "benchmark": "encode",
        "settings": asdict(settings),
        "model": settings.model or (f"shape:{settings.shape}" + (f"/{settings.layers}" if settings.layers else "")
                                    + " (random weights)" if settings.shape else f"tiny:{settings.backbone} (random weights)"),
        "attention": getattr(model.backbone.config, "_attn_implementation", None),
        "items": kinds,
        "environment": environment(device),
        "rows": rows,
        "speedup": rows["naive"]["seconds"] / rows["encode"]["seconds"],
        "max_abs_difference": difference,
        "allclose": bool(np.allclose(naive, ours, atol=tolerance, rtol=100 * tolerance)),
    }
    write_report(report, output, "encode")
    return report


def format_encode(report: dict) -> str:
    rows = report["rows"]
    lines = [f"{'loop':<8} {'seconds':>9} {'items/s':>9}"]
    for name, row in rows.items():
        lines.append(f"{name:<8} {row['seconds']:>9.2f} {row['items_per_s']:>9.1f}")
    lines.append(f"speed-up {report['speedup']:.2f}x; embeddings allclose: {report['allclose']} "
                 f"(max |difference| {report['max_abs_difference']:.2e}); attention: {report['attention']}")
    return "\n".join(lines)
