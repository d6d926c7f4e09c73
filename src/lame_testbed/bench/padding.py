"""`lame bench padding`: how much of a batch is padding, on a realistic mixed corpus, and what packing saves.

The corpus imitates MMEB-V2's training mix at the real image processor's sizes (Qwen2-VL: patch 14,
merge 2, at most 1,003,520 pixels per image as in configs/qwen2-vl-2b.yaml): classification, VQA,
retrieval both ways, grounding, visual documents and multi-image queries, as (query, positive) pairs
(:func:`realistic_pairs`). Only lengths matter for the statistics, so images are blank PIL images
of the sampled sizes and the featurizer is built without a model (:func:`shape_featurizer`).

Measured for the batches ``encode`` makes (length-sorted within windows) and for training batches
(random, as drawn; queries, positives each collated on their own; GradCache chunks in draw order or
sorted by length), padded against packed (:mod:`lame.data.packing`). With ``--time``, the packed
and padded forward passes of a random model of the shape (``--layers`` blocks) are timed side by
side on the same items (interleaved rounds) and their embeddings compared.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from lame.data.packing import plan_rows
from .settings import PaddingSettings
from .common import environment, median, timed, torch_threads, words, write_report

PHOTO_SIZES = [(640, 480), (480, 640), (500, 375), (640, 427), (1024, 768), (800, 600), (375, 500)]
INSTRUCTIONS = {
    "classification": "Represent the given image for classification",
    "vqa": "Represent the given image with the following question:",
    "t2i": "Find me an everyday image that matches the given caption:",
    "i2t": "Find an image caption describing the given everyday image.",
    "grounding": "Select the portion of the image that isolates the object labeled as",
    "visdoc": "Find a document image that matches the given query:",
    "multi": "Represent the given images and question:",
}
TASKS = {"classification": 0.2, "vqa": 0.2, "t2i": 0.15, "i2t": 0.15, "grounding": 0.1, "visdoc": 0.1, "multi": 0.1}


def realistic_pairs(count: int, seed: int = 0) -> list[tuple[object, object, str]]:
    """``count`` (query, positive, task) pairs in MMEB-V2's mix of tasks and typical sizes."""
    rng = np.random.default_rng(seed)
    names, weights = list(TASKS), np.array(list(TASKS.values()))
    out = []
    photo = lambda: Image.new("RGB", PHOTO_SIZES[int(rng.integers(len(PHOTO_SIZES)))])  # noqa: E731
    text = lambda lo, hi: words(int(rng.integers(1 << 30)), int(rng.integers(lo, hi)))  # noqa: E731
    for _ in range(count):
        task = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        instruction = INSTRUCTIONS[task]
        if task == "classification":
            query, positive = {"image": photo(), "instruction": instruction}, text(1, 4)
        elif task == "vqa":
            query, positive = {"image": photo(), "text": text(6, 20), "instruction": instruction}, text(1, 6)
        elif task == "t2i":
            query, positive = {"text": text(8, 30), "instruction": instruction}, {"image": photo()}
        elif task == "i2t":
            query, positive = {"image": photo(), "instruction": instruction}, text(8, 30)
        elif task == "grounding":
            crop = Image.new("RGB", (int(rng.integers(80, 400)), int(rng.integers(80, 400))))
            query, positive = {"image": photo(), "text": text(1, 3), "instruction": instruction}, {"image": crop}
        elif task == "visdoc":
            page = Image.new("RGB", (850, 1100) if rng.random() < 0.5 else (1700, 2200))
            query, positive = {"text": text(8, 24), "instruction": instruction}, {"image": page}
        else:
            parts = [text(4, 16)]
            for j in range(int(rng.integers(2, 4))):
                parts += [Image.new("RGB", (int(rng.integers(200, 640)), int(rng.integers(200, 640)))), f"image {j + 1}"]
            query, positive = {"parts": parts, "instruction": instruction}, text(2, 12)
        out.append((query, positive, task))
    return out


def shape_featurizer(shape: str, num_latent: int = 9, max_pixels: int | None = None):
    """The featurizer a model of ``shape`` uses (tiny tokenizer, the real image processor), without a model."""
    from lame.config import LaMEConfig
    from lame.data.featurize import Featurizer
    from lame.modeling.adapters import get_adapter
    from lame.modeling.shapes import architecture, get_shape, shaped_image_processor
    from lame.modeling.tiny import build_tiny_tokenizer

    spec = get_shape(shape)
    config = LaMEConfig(num_reason_tokens=num_latent - 1, max_length=16384)
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens(config.latent_token_strings(), special_tokens=True)
    processor = shaped_image_processor(spec, max_pixels=max_pixels)
    adapter = get_adapter(architecture(spec.architecture)["model_type"])
    return Featurizer(tokenizer, processor, config.latent_token_strings(), config.max_length,
                      adapter.image_layout(processor))


def lengths_of(featurizer, items: list, window: int = 32) -> list[int]:
    """Sequence lengths, featurising a window at a time (the pixel values of thousands of images would not fit)."""
    out = []
    for start in range(0, len(items), window):
        for f in featurizer.many(items, range(start, min(start + window, len(items)))):
            if isinstance(f, Exception):
                raise f
            out.append(len(f))
    return out


def padding_stats(lengths: Sequence[int], batches: Sequence[Sequence[int]], capacity: int | None = None) -> dict:
    """Positions computed by padded and by packed batches, for items of ``lengths`` grouped into
    ``batches`` (lists of item indices): the padded fraction of each way, and its row count."""
    real = padded = packed = rows = 0
    attention_padded = attention_packed = 0
    for batch in batches:
        sizes = [lengths[i] for i in batch]
        real += sum(sizes)
        padded += len(sizes) * max(sizes)
        attention_padded += len(sizes) * max(sizes) ** 2
        plan = plan_rows(sizes, capacity)
        width = max(sum(sizes[i] for i in row) for row in plan)
        packed += len(plan) * width
        rows += len(plan)
        attention_packed += len(plan) * width**2
    return {"items": len(lengths), "batches": len(batches), "real_positions": real,
            "padded_positions": padded, "padded_fraction": 1 - real / padded if padded else 0.0,
            "packed_positions": packed, "packed_fraction": 1 - real / packed if packed else 0.0,
            "packed_rows": rows, "attention_padded": attention_padded, "attention_packed": attention_packed}


def encode_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """The batches ``LaMEModel.encode`` makes: windows of max(8 x batch, 64) items, sorted by length."""
    window = max(batch_size * 8, 64)
    out = []
    for start in range(0, len(lengths), window):
        order = sorted(range(start, min(start + window, len(lengths))), key=lambda i: -lengths[i])
        out += [order[b: b + batch_size] for b in range(0, len(order), batch_size)]
    return out


def training_batches(count: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    order = list(range(count))
    rng.shuffle(order)
    return [order[b: b + batch_size] for b in range(0, count - batch_size + 1, batch_size)]


def chunked(batches: list[list[int]], lengths: list[int], chunk: int, by_length: bool) -> list[list[int]]:
    """GradCache chunks of each batch: in draw order, or after sorting the batch by length."""
    out = []
    for batch in batches:
        order = sorted(batch, key=lambda i: -lengths[i]) if by_length else batch
        out += [order[c: c + chunk] for c in range(0, len(order), chunk)]
    return out


def run_padding(settings: PaddingSettings, output: Path | None = None, log=print) -> dict:
    if settings.quick:
        settings = settings.quick_version()
    with torch_threads(settings.threads):
        return _run_padding(settings, output, log)


def _run_padding(settings: PaddingSettings, output: Path | None, log) -> dict:
    featurizer = shape_featurizer(settings.shape)
    pairs = realistic_pairs(settings.pairs, settings.seed)
    queries = lengths_of(featurizer, [q for q, _, _ in pairs])
    positives = lengths_of(featurizer, [p for _, p, _ in pairs])
    corpus = queries + positives  # what an embedding job over both sides reads
    log(f"bench padding: {len(pairs)} pairs, item lengths {min(corpus)} to {max(corpus)} "
        f"(median {int(np.median(corpus))}), batch {settings.batch_size}, chunk {settings.chunk}")
    rows = {}
    shuffled = list(range(len(corpus)))
    random.Random(settings.seed).shuffle(shuffled)
    mixed = [corpus[i] for i in shuffled]  # the corpus in an arbitrary order, as a file would give it
    rows["encode"] = padding_stats(mixed, encode_batches(mixed, settings.batch_size), settings.capacity)
    rows["encode, no sorting"] = padding_stats(mixed, training_batches(len(mixed), settings.batch_size),
                                               settings.capacity)
    train = training_batches(len(pairs), settings.batch_size, settings.seed)
    for side, lengths in (("queries", queries), ("positives", positives)):
        rows[f"training {side}"] = padding_stats(lengths, train, settings.capacity)
        rows[f"training {side}, GradCache chunks"] = padding_stats(
            lengths, chunked(train, lengths, settings.chunk, False), settings.capacity)
        rows[f"training {side}, GradCache chunks by length"] = padding_stats(
            lengths, chunked(train, lengths, settings.chunk, True), settings.capacity)
    report = {"benchmark": "padding", "settings": asdict(settings), "rows": rows,
              "tasks": {t: sum(task == t for _, _, task in pairs) for t in TASKS},
              "lengths": {"queries": _summary(queries), "positives": _summary(positives)}}
    if settings.time:
        report["timing"] = time_packing(settings, [p[0] for p in pairs] + [p[1] for p in pairs], shuffled, log)
    report["environment"] = environment(_device(settings))
    write_report(report, output, "padding")
    return report


def _device(settings: PaddingSettings):
    from .common import resolve_device

    return resolve_device(settings.device)


def _summary(lengths: list[int]) -> dict:
    return {"min": int(min(lengths)), "median": float(np.median(lengths)), "mean": float(np.mean(lengths)),
            "max": int(max(lengths))}


def time_packing(settings: PaddingSettings, items: list, order: list[int], log) -> dict:
    """Padded and packed forward passes of a random model of the shape over the same random batches
    (``time_items`` items in training order), interleaved; embeddings compared."""
    import torch

    from lame.data.packing import collate_packed
    from lame.modeling.shapes import build_shaped_model

    device = _device(settings)
    model = build_shaped_model(settings.shape, settings.layers, device=device, use_decoder=False,
                               num_reason_tokens=8, max_length=16384)
    chosen = [items[i] for i in order[: settings.time_items]]
    features = model.featurize(chosen)
    batches = [features[b: b + settings.batch_size] for b in range(0, len(features), settings.batch_size)]
    ways = {
        "padded": lambda fs: model.collate(fs),
        "packed": lambda fs: collate_packed(fs, model.tokenizer.pad_token_id, model.featurizer.image_token_id,
                                            settings.capacity),
    }
    out = {name: None for name in ways}
    times = {name: [] for name in ways}
    clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"

    def run(name):
        with torch.inference_mode():
            out[name] = torch.cat([model(ways[name](fs)).embeddings.float().cpu() for fs in batches])

    for name in ways:  # warm-up
        run(name)
    for r in range(settings.repeats):
        names = list(ways) if r % 2 == 0 else list(ways)[::-1]
        for name in names:
            times[name].append(timed(lambda: run(name), device, clock))
        log(f"  round {r + 1}/{settings.repeats}: padded {times['padded'][-1]:.1f} s, packed {times['packed'][-1]:.1f} s")
    difference = float((out["padded"] - out["packed"]).abs().max())
    return {"layers": settings.layers, "items": len(chosen), "clock": clock,
            "seconds": {k: median(v) for k, v in times.items()}, "seconds_all": times,
            "speedup": median([p / q for p, q in zip(times["padded"], times["packed"])]),
            "max_abs_difference": difference,
            "allclose": bool(torch.allclose(out["padded"], out["packed"], atol=1e-4, rtol=1e-3))}


def format_padding(report: dict) -> str:
    lines = [f"{'batches':<46} {'padded %':>9} {'packed %':>9} {'rows/batch':>10}"]
    for name, r in report["rows"].items():
        lines.append(f"{name:<46} {100 * r['padded_fraction']:>9.1f} {100 * r['packed_fraction']:>9.1f} "
                     f"{r['packed_rows'] / r['batches']:>10.1f}")
    timing = report.get("timing")
    if timing:
        lines.append(f"\nforward passes ({timing['items']} items, {timing['layers']} blocks, {timing['clock']} clock): "
                     f"padded {timing['seconds']['padded']:.2f} s, packed {timing['seconds']['packed']:.2f} s, "
                     f"speed-up {timing['speedup']:.2f}x; allclose {timing['allclose']} "
                     f"(max |difference| {timing['max_abs_difference']:.1e})")
    return "\n".join(lines)
