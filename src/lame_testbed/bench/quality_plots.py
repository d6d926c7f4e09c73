"""`lame bench quality` figures: every method against both controls, the quality-speed picture and the
sample-efficiency sweep."""

from __future__ import annotations

from pathlib import Path

from lame_testbed.bench.timing import ms_per_query
from lame_testbed.quickstart.settings import METHODS
from lame.extras import pyplot

from .quality import FAMILY_NAMES

KEY = "hit@1/families"  # the tasks one pass can learn (levels 1-3 saturate at the one-pass ceiling)


def plot_quality(report: dict, folder: Path) -> list[Path | None]:
    plt = pyplot("quality figures")
    if plt is None:
        return [None]
    return [_methods(plt, report, folder / "methods.png"), _quality_speed(plt, report, folder / "quality_speed.png"),
            _sweep(plt, report, folder / "sweep.png")]


def _methods(plt, report: dict, png: Path) -> Path | None:
    """Hit@1 on the task families per method (mean ± std over seeds) with the latents' decoded accuracy,
    and both discriminative controls drawn across, so every ablation reads against them."""
    summary = report["summary"]
    names = [name for name, row in summary.items() if KEY in row][::-1]  # the first method on top
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.2))
    rows = [summary[name][KEY] for name in names]
    ax.barh(range(len(names)), [r["mean"] for r in rows], xerr=[r["std"] for r in rows], capsize=3,
            color="tab:blue", alpha=0.75, label="Hit@1 (embedding)")
    decoded = [(i, sum(summary[n][f"decoded/{f}"]["mean"] for f in FAMILY_NAMES) / len(FAMILY_NAMES))
               for i, n in enumerate(names) if all(f"decoded/{f}" in summary[n] for f in FAMILY_NAMES)]
    if decoded:
        ax.plot([d for _, d in decoded], [i for i, _ in decoded], "kx", markersize=8,
                label="decoded accuracy (the latents name the answer)")
    for control, style in (("discriminative", ":"), ("discriminative-matched", "--")):
        if control in summary and KEY in summary[control]:
            ax.axvline(summary[control][KEY]["mean"], color="grey", linestyle=style,
                       label=METHODS[control].label or control)
    ax.set_yticks(range(len(names)), [METHODS[n].label or n if n in METHODS else n for n in names], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"Hit@1 on the task families ({report.get('split', 'test')}, mean ± std over seeds)")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)  # above: never on a bar
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return png


def _quality_speed(plt, report: dict, png: Path) -> Path | None:
    """Hit@1 on the task families against ms per query at batch 1 (log scale), one point per method."""
    summary, ms = report["summary"], ms_per_query(report["timing"])
    points = [(name, ms[name]["batch1"], row[KEY]) for name, row in summary.items() if name in ms and KEY in row]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, speed, quality in points:  # a legend, not labels: the one-pass methods sit on one spot
        ax.errorbar(speed, quality["mean"], yerr=quality["std"], fmt="o", capsize=3,
                    label=METHODS[name].label or name)
    ax.set_xscale("log")
    _plain_ticks(ax.xaxis)
    ax.legend(fontsize=8, loc="center right")
    ax.set_xlabel("ms per query at batch 1 (log scale, same process, interleaved)")
    ax.set_ylabel("Hit@1 on the task families (test, mean ± std)")
    ax.set_title("Quality against speed on the reference digit VLM")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def _sweep(plt, report: dict, png: Path) -> Path | None:
    """Hit@1 on the task families against the number of training pairs, per method."""
    sweep = report.get("sweep") or {}
    if not sweep:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, row in sweep.items():
        pairs = sorted(zip(_pair_counts(row, report), (v[KEY] for v in row.values())))
        xs = [p for p, _ in pairs]
        means = [v["mean"] for _, v in pairs]
        stds = [v["std"] for _, v in pairs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=METHODS[name].label or name)
    ax.set_xscale("log")
    _plain_ticks(ax.xaxis)
    ax.set_xticks(sorted({x for row in sweep.values() for x in _pair_counts(row, report)}))
    ax.set_xlabel("training pairs (log scale)")
    ax.set_ylabel("Hit@1 on the task families (test, mean ± std)")
    ax.set_title("Sample efficiency")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def _pair_counts(row: dict, report: dict) -> list[int]:
    total = report.get("train_records_total") or 14000  # "all": the benchmark's 2,000 per task
    return [int(p) if p != "all" else total for p in row]


def _plain_ticks(axis) -> None:
    """Log-scale ticks as plain numbers, without the crowded minor labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())
