"""`lame bench elastic`'s summary over seeds, its targets, the printed tables and the figure.

Hit@1 is on the summarised split, over the queries of the bench's tasks (each task weighs by its number
of queries; the digits benchmark has as many of each). Gaps are paired: per seed, then their mean and
sample standard deviation, so a seed that is hard for every model does not count as noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lame.extras import pyplot

from .elastic import ELASTIC, ELASTIC_ONLY, fixed_name, matryoshka_name
from .seeds import seed_stats
from .settings import ElasticSettings

KEY = "hit@1"
POINT = 0.01  # one point of Hit@1


def _by_seed(runs: list[dict], method: str, pick) -> dict[int, dict]:
    return {r["seed"]: pick(r) for r in runs if r["method"] == method}


def _paired(a: dict[int, dict], b: dict[int, dict]) -> dict:
    seeds = sorted(set(a) & set(b))
    return seed_stats([a[s][KEY] - b[s][KEY] for s in seeds]) if seeds else {}


def summarize(runs: list[dict], settings: ElasticSettings) -> dict:
    """``per_k``: the elastic model at k (queries and documents) against the fixed model of k;
    ``grid``: the elastic model's (query k, document k) Hit@1 and its gap to (K, K); ``sizes``: at K,
    Hit@1 at each size d of the elastic (Matryoshka) model and of the fixed-K model cut to d, and each
    one's loss against its own full size."""
    split, ks, dims = settings.split, list(settings.ks), list(settings.dims)
    top, full = ks[-1], dims[0]
    grid = {f"{kq},{kd}": _by_seed(runs, ELASTIC, lambda r, c=f"{kq},{kd}": r[split]["grid"][c])
            for kq in ks for kd in ks}
    per_k = {}
    for k in ks:
        fixed = _by_seed(runs, fixed_name(k), lambda r: r[split]["full"])
        elastic = grid[f"{k},{k}"]
        per_k[str(k)] = {"elastic": _table(elastic), "fixed": _table(fixed), "gap": _paired(elastic, fixed)}
        only = _by_seed(runs, ELASTIC_ONLY, lambda r, c=f"{k},{k}": r[split]["grid"][c])
        if only:  # the ablation: elastic_k without Matryoshka sizes
            per_k[str(k)] |= {"elastic_no_matryoshka": _table(only), "gap_no_matryoshka": _paired(only, fixed)}
    corner = grid[f"{top},{top}"]
    cells = {cell: {KEY: seed_stats([v[KEY] for v in by_seed.values()]), "gap_to_top": _paired(by_seed, corner)}
             for cell, by_seed in grid.items() if by_seed}
    sizes = {}
    fixed_top = _by_seed(runs, fixed_name(top), lambda r: r[split]["full"])
    for d in dims:
        matryoshka = _by_seed(runs, ELASTIC, lambda r, d=d: r[split]["sizes"][f"{top},{d}"])
        truncated = _by_seed(runs, fixed_name(top), lambda r, d=d: r[split]["truncated"][str(d)])
        sizes[str(d)] = {"matryoshka": _table(matryoshka), "truncated": _table(truncated),
                         "matryoshka_loss": _paired(matryoshka, grid[f"{top},{top}"]),
                         "truncated_loss": _paired(truncated, fixed_top)}
        alone = _by_seed(runs, matryoshka_name(top), lambda r, d=d: r[split]["truncated"][str(d)])
        if alone:  # the ablation: a fixed-K model with Matryoshka sizes
            full_alone = _by_seed(runs, matryoshka_name(top), lambda r: r[split]["full"])
            sizes[str(d)] |= {"matryoshka_fixed": _table(alone), "matryoshka_fixed_loss": _paired(alone, full_alone),
                              "matryoshka_fixed_gap_to_fixed": _paired(alone, fixed_top)}
    sizes_by_k = {f"{k},{d}": _table(_by_seed(runs, ELASTIC, lambda r, c=f"{k},{d}": r[split]["sizes"][c]))
                  for k in ks for d in dims}
    train = {m: seed_stats([r["train_seconds"] for r in runs if r["method"] == m])
             for m in dict.fromkeys(r["method"] for r in runs)}
    return {"split": split, "top_k": top, "full_dim": full, "per_k": per_k, "grid": cells, "sizes": sizes,
            "sizes_by_k": sizes_by_k, "train_seconds": train}


def _table(by_seed: dict[int, dict]) -> dict:
    """Mean and std over seeds of every Hit@1 key."""
    if not by_seed:
        return {}
    keys = next(iter(by_seed.values())).keys()
    return {key: seed_stats([v[key] for v in by_seed.values()]) for key in keys}


def quarter(dims: list[int]) -> int | None:
    """The size a quarter of the full one, when it is among ``dims``."""
    return dims[0] // 4 if dims[0] % 4 == 0 and dims[0] // 4 in dims else None


def check_targets(summary: dict, settings: ElasticSettings) -> dict:
    """The goals of the comparison, each with its measured values and whether it is met."""
    top = summary["top_k"]
    targets = {}
    gaps = {k: row["gap"]["mean"] for k, row in summary["per_k"].items() if row["gap"]}
    if gaps:
        targets["elastic_within_1_point_of_fixed_at_every_k"] = {
            "values": gaps, "met": all(g >= -POINT for g in gaps.values())}
    cross = {cell: row["gap_to_top"]["mean"] for cell, row in summary["grid"].items()
             if row["gap_to_top"] and str(top) in cell.split(",") and cell != f"{top},{top}"}
    if cross:
        targets["k_top_queries_or_documents_against_any_k_within_1_point_of_top"] = {
            "values": cross, "met": all(g >= -POINT for g in cross.values())}
    d = quarter(list(settings.dims))
    row = summary["sizes"].get(str(d)) if d else None
    if row and row["matryoshka_loss"] and row["truncated_loss"]:
        lost, cut = 0.0 - row["matryoshka_loss"]["mean"], 0.0 - row["truncated_loss"]["mean"]  # no -0.0
        targets[f"quarter_size_{d}_matryoshka_loses_at_most_2_points_and_less_than_truncation"] = {
            "values": {"matryoshka_loss": lost, "truncation_loss": cut}, "met": lost <= 2 * POINT and cut > lost}
    return targets


# ----------------------------------------------------------------------------------------------- text
def _cell(stats: dict) -> str:
    return f"{stats['mean']:.3f}±{stats['std']:.3f}" if stats else "-"


def _points(stats: dict) -> str:
    return f"{100 * stats['mean']:+.1f}±{100 * stats['std']:.1f}" if stats else "-"


def format_elastic(report: dict) -> str:
    """The elastic bench report as the command prints it: Hit@1 per k, the k grid, sizes and targets."""
    s, settings = report["summary"], report["settings"]
    tasks = [f"hit@1/{t}" for t in settings["tasks"]]
    timing = report.get("timing", {}).get("rows", {})
    lines = [f"Hit@1 on {s['split']} ({', '.join(settings['tasks'])}), mean ± sample std over seeds "
             f"{settings['seeds']}; gaps in points, paired by seed",
             f"{'k':>3} {'elastic':>13} {'fixed':>13} {'gap':>10}" + "".join(f" {t[6:]:>21}" for t in tasks)
             + f" {'ms/query e/f':>14} {'corpus items/s e/f':>20}"]
    for k, row in s["per_k"].items():
        per_task = "".join(f" {_cell(row['elastic'].get(t, {})):>10} {_cell(row['fixed'].get(t, {})):>10}"
                           for t in tasks)
        e, f = timing.get(f"elastic k={k}", {}), timing.get(f"fixed k={k}", {})
        ms = f"{e.get('ms_per_query', {}).get('median', float('nan')):.2f}/" \
             f"{f.get('ms_per_query', {}).get('median', float('nan')):.2f}"
        items = f"{e.get('corpus_items_per_s', {}).get('median', float('nan')):.0f}/" \
                f"{f.get('corpus_items_per_s', {}).get('median', float('nan')):.0f}"
        lines.append(f"{k:>3} {_cell(row['elastic'].get(KEY, {})):>13} {_cell(row['fixed'].get(KEY, {})):>13} "
                     f"{_points(row['gap']):>10}{per_task} {ms:>14} {items:>20}")
    ks = list(s["per_k"])
    lines.append("elastic model, query k (rows) x document k (columns):")
    lines.append("     " + "".join(f"{kd:>13}" for kd in ks))
    for kq in ks:
        lines.append(f"{kq:>5}" + "".join(f"{_cell(s['grid'][f'{kq},{kd}'][KEY]):>13}" for kd in ks))
    lines.append(f"at k = {s['top_k']}, Hit@1 by size (loss against the model's own full size, points):")
    for d, row in s["sizes"].items():
        alone = (f"; fixed-k{s['top_k']} with Matryoshka {_cell(row['matryoshka_fixed'].get(KEY, {}))} "
                 f"({_points(row['matryoshka_fixed_loss'])})") if "matryoshka_fixed" in row else ""
        lines.append(f"  d={d:>4}: Matryoshka {_cell(row['matryoshka'].get(KEY, {}))} "
                     f"({_points(row['matryoshka_loss'])}), plain truncation of fixed-k{s['top_k']} "
                     f"{_cell(row['truncated'].get(KEY, {}))} ({_points(row['truncated_loss'])}){alone}")
    ablation = {k: row for k, row in s["per_k"].items() if "elastic_no_matryoshka" in row}
    if ablation:
        lines.append("ablation, elastic_k without Matryoshka sizes, at each k: " + ", ".join(
            f"k={k} {_cell(row['elastic_no_matryoshka'].get(KEY, {}))} ({_points(row['gap_no_matryoshka'])} "
            "to fixed)" for k, row in ablation.items()))
    for name, target in report.get("targets", {}).items():
        lines.append(f"target {name}: {'met' if target['met'] else 'NOT met'}")
    return "\n".join(lines)


def markdown_tables(report: dict) -> str:
    """The report's tables in Markdown (docs/elastic.md quotes them): Hit@1 and cost by k, the (query k,
    document k) grid, Hit@1 by size."""
    s, settings = report["summary"], report["settings"]
    tasks = [f"hit@1/{t}" for t in settings["tasks"]]
    timing = report.get("timing", {}).get("rows", {})
    top = s["top_k"]
    ablation = any("elastic_no_matryoshka" in row for row in s["per_k"].values())
    head = ["k", "elastic", "fixed k", "gap (points)"] + [f"{t[6:]}: elastic / fixed" for t in tasks]
    head += ["elastic, no Matryoshka (gap)"] if ablation else []
    head += ["ms/query, elastic / fixed", "corpus items/s, elastic / fixed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, row in s["per_k"].items():
        e, f = timing.get(f"elastic k={k}", {}), timing.get(f"fixed k={k}", {})
        cells = [k, _cell(row["elastic"].get(KEY, {})), _cell(row["fixed"].get(KEY, {})), _points(row["gap"])]
        cells += [f"{_cell(row['elastic'].get(t, {}))} / {_cell(row['fixed'].get(t, {}))}" for t in tasks]
        if ablation:
            cells.append(f"{_cell(row.get('elastic_no_matryoshka', {}).get(KEY, {}))} "
                         f"({_points(row.get('gap_no_matryoshka', {}))})")
        cells.append(" / ".join(f"{x.get('ms_per_query', {}).get('median', float('nan')):.2f}" for x in (e, f)))
        cells.append(" / ".join(f"{x.get('corpus_items_per_s', {}).get('median', float('nan')):.0f}" for x in (e, f)))
        lines.append("| " + " | ".join(cells) + " |")
    ks = list(s["per_k"])
    lines += ["", "| query k \\ document k | " + " | ".join(ks) + " |", "|" + "---|" * (len(ks) + 1)]
    for kq in ks:
        cells = [f"{_cell(s['grid'][f'{kq},{kd}'][KEY])} ({_points(s['grid'][f'{kq},{kd}']['gap_to_top'])})"
                 if f"{kq},{kd}" != f"{top},{top}" else f"**{_cell(s['grid'][f'{kq},{kd}'][KEY])}**" for kd in ks]
        lines.append(f"| {kq} | " + " | ".join(cells) + " |")
    alone = any("matryoshka_fixed" in row for row in s["sizes"].values())
    head = ["d", f"elastic, k = {top} (loss)", f"fixed k = {top}, plain truncation (loss)"]
    head += [f"fixed k = {top} with Matryoshka (loss)"] if alone else []
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d, row in s["sizes"].items():
        cells = [d, f"{_cell(row['matryoshka'].get(KEY, {}))} ({_points(row['matryoshka_loss'])})",
                 f"{_cell(row['truncated'].get(KEY, {}))} ({_points(row['truncated_loss'])})"]
        if alone:
            cells.append(f"{_cell(row.get('matryoshka_fixed', {}).get(KEY, {}))} "
                         f"({_points(row.get('matryoshka_fixed_loss', {}))})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- figure
def plot_elastic(report: dict, png: Path) -> list[Path | None]:
    """Hit@1 by k (elastic and fixed) with ms per query; the (query k, document k) grid; Hit@1 by size."""
    plt = pyplot(png.name)
    if plt is None:
        return [None]
    s = report["summary"]
    ks = [int(k) for k in s["per_k"]]
    fig, (by_k, grid, by_d) = plt.subplots(1, 3, figsize=(15, 4.3))
    _errorbars(by_k, ks, s["per_k"], (("one elastic model", "elastic", "o"), ("a model per fixed k", "fixed", "s"),
                                      ("elastic, no Matryoshka sizes (ablation)", "elastic_no_matryoshka", "^")))
    by_k.set_xscale("symlog", linthresh=1)
    by_k.set_xticks(ks, [str(k) for k in ks])
    by_k.set_xlabel("reason tokens k (queries and documents)")
    by_k.set_ylabel(f"Hit@1 ({s['split']}, mean ± std over seeds)")
    timing = report.get("timing", {}).get("rows", {})
    ms = [timing.get(f"elastic k={k}", {}).get("ms_per_query", {}).get("median") for k in ks]
    if all(m is not None for m in ms):
        twin = by_k.twinx()
        twin.plot(ks, ms, color="grey", linestyle=":", marker=".", label="ms per query (elastic, batch 1)")
        twin.set_ylabel("ms per query at batch 1", color="grey")
        twin.set_ylim(0, 1.3 * max(ms))  # from zero: differences of a few percent read as what they are
        twin.legend(fontsize=8, loc="lower right")
    by_k.legend(fontsize=8, loc="upper left")
    by_k.set_title("One model for every k")
    values = np.array([[s["grid"][f"{kq},{kd}"][KEY]["mean"] for kd in ks] for kq in ks])
    image = grid.imshow(values, cmap="viridis")
    for i in range(len(ks)):
        for j in range(len(ks)):
            grid.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", fontsize=7,
                      color="white" if values[i, j] < values.mean() else "black")
    grid.set_xticks(range(len(ks)), [str(k) for k in ks])
    grid.set_yticks(range(len(ks)), [str(k) for k in ks])
    grid.set_xlabel("document k")
    grid.set_ylabel("query k")
    grid.set_title("Elastic model: query k x document k")
    fig.colorbar(image, ax=grid, fraction=0.046)
    dims = [int(d) for d in s["sizes"]]
    _errorbars(by_d, dims, s["sizes"], (("elastic (Matryoshka)", "matryoshka", "o"),
                                        (f"fixed k={s['top_k']}, plain truncation", "truncated", "s"),
                                        (f"fixed k={s['top_k']} with Matryoshka (ablation)", "matryoshka_fixed", "^")))
    by_d.set_xscale("log", base=2)
    by_d.set_xticks(dims, [str(d) for d in dims])
    by_d.set_xlabel(f"embedding size d (k = {s['top_k']})")
    by_d.set_ylabel("Hit@1")
    by_d.legend(fontsize=8)
    by_d.set_title("Nested embedding sizes")
    for ax in (by_k, by_d):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return [png]


def _errorbars(ax, xs: list[int], table: dict, series: tuple) -> None:
    """One line with mean ± std error bars per ``(label, key, marker)`` of ``series`` that ``table`` (x as
    text -> key -> {KEY: stats}) holds; an x without the key is left as a gap."""
    for label, key, marker in series:
        if key not in table[str(xs[0])]:
            continue
        rows = [table[str(x)][key].get(KEY) for x in xs]
        ax.errorbar(xs, [r["mean"] if r else np.nan for r in rows], yerr=[r["std"] if r else 0 for r in rows],
                    marker=marker, capsize=3, label=label)
