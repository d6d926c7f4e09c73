"""The quickstart figure: final Hit@1 per level, and Hit@1 against training step, for each model."""

from __future__ import annotations

from pathlib import Path

from lame.extras import pyplot


def plot_quickstart(report: dict, png: Path) -> Path | None:
    """Writes the figure; None (with a one-line note) without the 'plots' extra."""
    plt = pyplot(png.name)
    if plt is None:
        return None
    variants = report["variants"]
    levels = sorted(k for k in next(iter(variants.values()))["test"] if k.startswith("hit@1/level"))
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(variants)
    for i, (name, run) in enumerate(variants.items()):
        xs = [j + i * width for j in range(len(levels))]
        bars.bar(xs, [run["test"][lv] for lv in levels], width, label=name)
        steps = [p["step"] for p in run["curve"]]
        curves.plot(steps, [p["hit@1"] for p in run["curve"]], marker="o", label=name)
    bars.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(levels))])
    bars.set_xticklabels([f"level {lv[-1]}" for lv in levels])
    bars.set_ylabel("Hit@1 (held-out split)")
    bars.set_ylim(0, 1)
    bars.legend()
    bars.set_title("Final Hit@1 per difficulty level")
    curves.set_xlabel("training step")
    curves.set_ylabel("Hit@1 (evaluation subset, all levels)")
    curves.set_ylim(0, 1)
    curves.legend()
    curves.set_title("Convergence")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
