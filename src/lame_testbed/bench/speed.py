"""`lame bench speed`: LaME against its peers on ONE backbone, the same inputs, in one run.

Every method is built on the same backbone weights (:func:`lame.modeling.baselines.variant_of`), reads
the same queries (``query_tokens`` prompt tokens each, an image included, the latent block not counted)
and is timed end to end through ``model.encode`` (featurisation, collation, the forward pass(es), copy to
numpy) at each batch size. One warm-up call per cell, then ``repeats`` rounds that visit every cell once
(interleaved, so a noisy neighbour on a shared machine hurts every method alike). Within a round a fast
cell is called again until ``min_round_seconds`` are spent and the median call is its sample (see
:func:`sample`); the reported latency is the median of the rounds' samples (``latency_ms_all``).

Methods: discriminative (K=0), LaME with K reason tokens, sequential latent reasoning with K steps,
explicit CoT with N generated tokens (forced length: exactly N per query, EOS suppressed).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lame.errors import InvalidInput
from lame.extras import pyplot
from lame.modeling.baselines import variant_of
from .settings import SpeedSettings
from .common import (environment, load_base_model, median, random_image, resolve_device, timed, torch_threads,
                     words)

REFERENCE = "lame-K8"


@dataclass
class Method:
    name: str
    family: str  # discriminative | lame | sequential | cot
    k: int  # reason tokens, latent steps or generated tokens
    overrides: dict


def methods(settings: SpeedSettings) -> list[Method]:
    out = [Method("discriminative", "discriminative", 0, {})]
    out += [Method(f"lame-K{k}", "lame", k, {"num_reason_tokens": k}) for k in settings.lame_k]
    out += [Method(f"sequential-K{k}", "sequential", k, {"latent_steps": k}) for k in settings.sequential_steps]
    out += [Method(f"cot-N{n}", "cot", n, {"cot_max_new_tokens": n}) for n in settings.cot_tokens]
    return out


def build_models(base, settings: SpeedSettings) -> dict:
    """One model per method, all on ``base``'s backbone weights."""
    models = {}
    for m in methods(settings):
        model = variant_of(base, m.family, **m.overrides).eval()
        if m.family == "cot":
            model.force_length = True
        models[m.name] = model
    return models


def make_queries(model, count: int, tokens: int, image_size: int) -> tuple[list, list[int]]:
    """``count`` distinct queries of exactly ``tokens`` prompt tokens (as close as the tokenizer allows)."""
    n_latent = model.config.num_latent_tokens
    queries, lengths = [], []
    for i in range(count):
        image = random_image(i, image_size) if image_size else None

        def build(n: int, tail: str = ""):
            text = words(i, n) + tail
            return {"text": text, "image": image} if image is not None else text

        def length(query) -> int:
            return len(model.featurizer(query)) - n_latent

        n = max(1, tokens // 2)  # the most words that stay within `tokens`, then single-token fillers
        for _ in range(200):
            if length(build(n)) > tokens and n > 1:
                n -= 1
            elif length(build(n + 1)) <= tokens:
                n += max(1, (tokens - length(build(n + 1))) // 2)
            else:
                break
        tail, current = "", length(build(n))
        if current > tokens:
            raise InvalidInput(f"a query cannot be as short as {tokens} tokens (the template and image take "
                               f"{current}); raise --query-tokens or lower --image-size")
        while current < tokens:
            for filler in (" 1", " a", ".", " x"):
                longer = length(build(n, tail + filler))
                if current < longer <= tokens:
                    tail, current = tail + filler, longer
                    break
            else:
                break
        queries.append(build(n, tail))
        lengths.append(current)
    return queries, lengths


def run_speed(settings: SpeedSettings, output: Path | None = None, log=print, base=None) -> dict:
    """Times every method at every batch size; writes ``speed.json`` and ``speed.png`` under ``output``.

    ``base``: a LaME model already in memory (on its device) to take the backbone from, instead of
    ``settings.model`` or the tiny config.
    """
    settings = settings.quick_version() if settings.quick else settings.resolved()
    with torch_threads(settings.threads):
        return _run_speed(settings, output, log, base)


def _run_speed(settings: SpeedSettings, output: Path | None, log, base) -> dict:
    torch.manual_seed(0)
    _check_clock(settings, resolve_device(settings.device) if base is None else base.device)
    depth = None
    if base is None:
        base, depth = _load_base(settings)
    models = build_models(base, settings)
    queries, lengths = make_queries(models["discriminative"], max(settings.batch_sizes), settings.query_tokens,
                                    settings.image_size)
    log(f"bench speed: {len(models)} methods x batch sizes {list(settings.batch_sizes)}, "
        f"{settings.warmup} warm-up + {settings.repeats} rounds, device {base.device}")
    latency, preprocess = time_cells(models, queries, settings, base.device, log)
    rows = speed_rows(latency, preprocess, settings)
    reference = REFERENCE if REFERENCE in models else next(n for n in models if n.startswith("lame-"))
    add_ratios(rows, latency, reference)
    report = {
        "benchmark": "speed",
        "reference": reference,
        "settings": asdict(settings) | {"query_tokens_actual": sorted(set(lengths))},
        "backbone": base.config.backbone_type,
        "model": settings.model or model_label(settings, depth),
        "depth": depth,
        "environment": environment(base.device),
        "rows": rows,
        "goals": goals(rows, settings, reference),
    }
    if depth is not None and settings.cost_model:
        report["cost_model"] = cost_model(report, settings, depth, models["discriminative"], queries[0], log)
    if output is not None:
        write_speed(report, Path(output))
    return report


def _check_clock(settings: SpeedSettings, device: torch.device) -> None:
    if settings.clock not in ("wall", "cpu"):
        raise InvalidInput(f"clock must be 'wall' or 'cpu', got {settings.clock!r}")
    if settings.clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise InvalidInput("the cpu clock measures latency only on the CPU with one torch thread (--threads 1)")


def _load_base(settings: SpeedSettings) -> tuple:
    """The backbone every method shares, and the depths it was cut to (None unless a random ``shape``)."""
    depth = None
    if settings.shape and not settings.model:
        from lame.modeling.shapes import resolve_depths

        depth = resolve_depths(settings.shape, settings.layers, settings.vision_layers)
    base = load_base_model(settings.model, settings.backbone, resolve_device(settings.device), settings.dtype,
                           num_reason_tokens=max(settings.lame_k), shape=settings.shape,
                           layers=depth and depth["layers"], vision_layers=depth and depth["vision_layers"])
    return base, depth


def time_cells(models: dict, queries: list, settings: SpeedSettings, device, log) -> tuple[dict, dict]:
    """Per (method, batch size) cell: each round's sample of the end-to-end ``encode`` time and of the
    featurise + collate time alone, after the warm-up calls."""
    cells = [(name, bs) for bs in settings.batch_sizes for name in models]
    latency = {cell: [] for cell in cells}
    preprocess = {cell: [] for cell in cells}

    def call(name: str, bs: int):
        return models[name].encode(queries[:bs], batch_size=bs)

    warm_sizes = settings.batch_sizes if settings.warmup_all_batch_sizes else (min(settings.batch_sizes),)
    for name, bs in cells:
        for _ in range(settings.warmup if bs in warm_sizes else 0):
            call(name, bs)
    order = random.Random(0)
    for r in range(settings.repeats):
        for name, bs in order.sample(cells, len(cells)):  # a new order each round: no cell always runs first
            model = models[name]
            latency[(name, bs)].append(sample(lambda: call(name, bs), device, settings.min_round_seconds,
                                              settings.clock))
            prepare = lambda: model.collate(model.featurizer.many(queries, range(bs)))  # noqa: E731
            preprocess[(name, bs)].append(sample(prepare, device, settings.min_round_seconds, settings.clock))
        log(f"  round {r + 1}/{settings.repeats} done")
    return latency, preprocess


def speed_rows(latency: dict, preprocess: dict, settings: SpeedSettings) -> list[dict]:
    """One report row per cell, in the cells' order, from the medians over the rounds."""
    rows = []
    by_method = {m.name: m for m in methods(settings)}
    for (name, bs), times in latency.items():
        seconds = median(times)
        m = by_method[name]
        rows.append({
            "name": name, "family": m.family, "k": m.k, "batch_size": bs,
            "latency_ms": 1000 * seconds, "per_query_ms": 1000 * seconds / bs, "throughput_qps": bs / seconds,
            "preprocess_ms": 1000 * median(preprocess[(name, bs)]),
            "latency_ms_all": [1000 * t for t in times],
        })
    return rows


def add_ratios(rows: list[dict], latency: dict, reference: str) -> None:
    """Sets every row's ``ratio_vs_reference``, paired: each round's time over the reference's time in the
    same round, then the median over rounds, so that a round slowed down by another tenant cancels out."""
    for row in rows:
        own, ref = latency[(row["name"], row["batch_size"])], latency[(reference, row["batch_size"])]
        row["ratio_vs_reference"] = median([t / t_ref for t, t_ref in zip(own, ref)])


def write_speed(report: dict, output: Path) -> None:
    """``speed.json``, ``speed.png`` and, with a cost model, ``speed-model.png`` under ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "speed.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_speed(report, output / "speed.png")
    if report.get("cost_model"):
        from .costmodel import plot_model

        plot_model(report, output / "speed-model.png")


def cost_model(report: dict, settings: SpeedSettings, depth: dict, model, query, log) -> dict:
    """The cost model's prediction of every row, at this depth and at the full depth (see
    :mod:`lame_testbed.bench.costmodel`), with this machine's constants timed now."""
    from .costmodel import Query, calibrate, dims_of, model_report

    features = model.featurizer(query)
    patches = int(features.image_grid_thw.prod(-1).sum()) if features.image_grid_thw is not None else 0
    dims = dims_of(settings.shape)
    machine = calibrate(dims, tuple(settings.batch_sizes), getattr(torch, settings.dtype), model.config.backbone_type,
                        device=model.device, log=log)
    return model_report(report["rows"], settings.shape, depth,
                        Query(tokens=len(features) - model.config.num_latent_tokens, patches=patches), machine,
                        report["reference"], settings.cot_goal_tokens)


def model_label(settings: SpeedSettings, depth: dict | None) -> str:
    if depth is None:
        return f"tiny:{settings.backbone} (random weights)"
    return (f"shape:{settings.shape} (random weights; {depth['layers']}/{depth['full_layers']} language-model "
            f"blocks, {depth['vision_layers']}/{depth['full_vision_layers']} vision blocks)")


def sample(fn, device, min_seconds: float, clock: str = "wall") -> float:
    """One round's time of a cell: a call that takes longer than ``min_seconds`` is timed once; a faster one
    is called again (the first call re-warms caches another cell may have evicted) until ``min_seconds``
    have been spent, and the median of those calls is taken."""
    first = timed(fn, device, clock)
    if first >= min_seconds:
        return first
    times = [timed(fn, device, clock)]
    while sum(times) < min_seconds:
        times.append(timed(fn, device, clock))
    return median(times)


def goals(rows: list[dict], settings: SpeedSettings, reference: str) -> list[dict]:
    """The three speed goals at every batch size, from the paired ratios (see ``ratio_vs_reference``)."""
    g = settings.goals
    checks = [
        (f"{reference}/discriminative", "discriminative", lambda ratio: 1 / ratio, "<=",
         g["lame_over_discriminative_max"]),
        (f"cot-N{settings.cot_goal_tokens}/{reference}", f"cot-N{settings.cot_goal_tokens}", lambda ratio: ratio,
         ">=", g["cot_over_lame_min"]),
        (f"sequential-K8/{reference}", "sequential-K8", lambda ratio: ratio, ">=", g["sequential_over_lame_min"]),
    ]
    out = []
    for bs in settings.batch_sizes:
        ratios = {r["name"]: r["ratio_vs_reference"] for r in rows if r["batch_size"] == bs}
        extrapolated = extrapolate_cot(rows, bs, settings.cot_goal_tokens)
        for label, name, value_of, op, bound in checks:
            from_rows = None
            if name not in ratios and name.startswith("cot-") and extrapolated:
                ratios[name], from_rows = extrapolated
            if name not in ratios:
                continue
            value = value_of(ratios[name])
            met = value <= bound if op == "<=" else value >= bound
            goal = {"goal": f"{label} {op} {bound:g}", "batch_size": bs, "value": value, "met": met}
            if from_rows:
                goal["extrapolated_from"] = from_rows
            out.append(goal)
    return out


def extrapolate_cot(rows: list[dict], batch_size: int, tokens: int) -> tuple[float, list[str]] | None:
    """The ratio of CoT with ``tokens`` generated tokens, linear in N through the two longest CoT rows
    measured at this batch size, when that row itself was not run (a generated token costs the same
    whatever its position, up to the KV cache's reads: see the cost model). None with fewer than two rows."""
    cot = sorted((r for r in rows if r["family"] == "cot" and r["batch_size"] == batch_size), key=lambda r: r["k"])
    if len(cot) < 2 or any(r["k"] == tokens for r in cot):
        return None
    a, b = cot[-2], cot[-1]
    slope = (b["ratio_vs_reference"] - a["ratio_vs_reference"]) / (b["k"] - a["k"])
    return b["ratio_vs_reference"] + slope * (tokens - b["k"]), [a["name"], b["name"]]


def format_speed(report: dict) -> str:
    ref = report["reference"]
    lines = [f"{'method':<16} {'batch':>5} {'latency ms':>11} {'ms/query':>9} {'queries/s':>10} "
             f"{'prep ms':>8} {'x ' + ref:>12}"]
    for r in report["rows"]:
        lines.append(f"{r['name']:<16} {r['batch_size']:>5} {r['latency_ms']:>11.1f} {r['per_query_ms']:>9.2f} "
                     f"{r['throughput_qps']:>10.1f} {r['preprocess_ms']:>8.1f} {r['ratio_vs_reference']:>12.2f}")
    lines.append("")
    for g in report["goals"]:
        note = f"  (extrapolated from {' and '.join(g['extrapolated_from'])})" if "extrapolated_from" in g else ""
        lines.append(f"goal {g['goal']:<40} batch {g['batch_size']:>3}: {g['value']:8.2f}  "
                     f"{'met' if g['met'] else 'MISSED'}{note}")
    env = report["environment"]
    if report.get("cost_model"):
        from .costmodel import format_model

        lines += ["", format_model(report["cost_model"])]
    lines.append(f"\n{report['model']} on {env.get('gpu') or env['cpu']} ({env['device']}, "
                 f"{env['torch_threads']} torch threads, {report['settings']['clock']} clock), "
                 f"torch {env['versions']['torch']}, transformers {env['versions']['transformers']}")
    return "\n".join(lines)


def plot_speed(report: dict, png: Path) -> Path | None:
    """Writes the figure; None (with a one-line note) without the 'plots' extra."""
    plt = pyplot(png.name)
    if plt is None:
        return None
    rows = report["rows"]
    sizes = sorted({r["batch_size"] for r in rows})
    fig, (curve, bars) = plt.subplots(1, 2, figsize=(13, 4.8))
    for bs in sizes:
        at = [r for r in rows if r["batch_size"] == bs]
        lame = sorted([r for r in at if r["family"] in ("lame", "discriminative")], key=lambda r: r["k"])
        line, = curve.plot([r["k"] for r in lame], [r["per_query_ms"] for r in lame], marker="o",
                           label=f"LaME (K=0: discriminative), batch {bs}")
        seq = [r for r in at if r["family"] == "sequential"]
        curve.plot([r["k"] for r in seq], [r["per_query_ms"] for r in seq], marker="s", linestyle="--",
                   color=line.get_color(), label=f"sequential latent, batch {bs}")
        for r in (r for r in at if r["family"] == "cot"):
            curve.axhline(r["per_query_ms"], color=line.get_color(), linestyle=":", linewidth=0.8)
            curve.annotate(f"CoT N={r['k']} (b{bs})", (0, r["per_query_ms"]), fontsize=7, va="bottom")
    curve.set_xlabel("K (reason tokens / latent steps)")
    curve.set_ylabel("ms per query (median)")
    curve.set_yscale("log")
    curve.set_title("Time against K (dotted: explicit CoT)")
    curve.legend(fontsize=7)
    names = list(dict.fromkeys(r["name"] for r in rows))
    width = 0.8 / len(sizes)
    for i, bs in enumerate(sizes):
        ratio = {r["name"]: r["ratio_vs_reference"] for r in rows if r["batch_size"] == bs}
        bars.bar([j + i * width for j in range(len(names))], [ratio[n] for n in names], width, label=f"batch {bs}")
    bars.set_xticks([j + width * (len(sizes) - 1) / 2 for j in range(len(names))])
    bars.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    bars.axhline(1.0, color="black", linewidth=0.8)
    bars.set_yscale("log")
    bars.set_ylabel(f"latency / {report['reference']}")
    bars.set_title("Latency relative to LaME K=8")
    bars.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
