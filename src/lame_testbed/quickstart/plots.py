"""The quickstart figure: test Hit@1 per level, and the validation curve, for each method."""

from __future__ import annotations

from pathlib import Path

from lame.extras import pyplot

from .settings import METHODS


def plot_quickstart(report: dict, folder: Path) -> list[Path | None]:
    """Writes ``quickstart.png``; nothing (a one-line note) without the 'plots' extra."""
    png = folder / "quickstart.png"
    plt = pyplot(png.name)
    if plt is None:
        return [None]
    methods = report["methods"]
    levels = [f"hit@1/level{lv}" for lv in range(4)]
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(methods)
    for i, (name, run) in enumerate(methods.items()):
        label = METHODS[name].label or name
        xs = [j + i * width for j in range(len(levels))]
        bars.bar(xs, [run["test"].get(lv, 0.0) for lv in levels], width, label=label)
        steps = [p["step"] for p in run["curve"]]
        curves.plot(steps, [p.get("hit@1/reasoning", p["hit@1"]) for p in run["curve"]], marker="o", label=label)
    bars.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(levels))])
    bars.set_xticklabels([f"level {lv[-1]}" for lv in levels])
    bars.set_ylabel("Hit@1 (test split)")
    bars.set_ylim(0, 1)
    bars.legend(fontsize=8)
    bars.set_title("Hit@1 per difficulty level")
    curves.set_xlabel("training step")
    curves.set_ylabel("Hit@1, reasoning levels 1-3 (validation)")
    curves.set_ylim(0, 1)
    curves.legend(fontsize=8)
    curves.set_title("Training curve")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return [png]
