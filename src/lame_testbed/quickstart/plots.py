"""The quickstart figure: test Hit@1 per task (with decoded accuracy), and the validation curve on the
families, for each method."""

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
    from .run import REPORT_COLUMNS

    columns = [(label, key) for label, key in REPORT_COLUMNS if key != "hit@1/families"]
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(methods)
    for i, (name, run) in enumerate(methods.items()):
        label = METHODS[name].label or name
        xs = [j + i * width for j in range(len(columns))]
        bars.bar(xs, [run["test"].get(key, 0.0) for _, key in columns], width, label=label)
        decoded = run.get("decoded_test") or {}
        shown = [(x, decoded[key.split("/")[1]]) for x, (_, key) in zip(xs, columns) if key.split("/")[1] in decoded]
        if shown:
            bars.scatter(*zip(*shown), marker="_", s=120, color="black", zorder=3,
                         label=f"{name}: decoded latents name the answer")
        steps = [p["step"] for p in run["curve"]]
        curves.plot(steps, [p.get("hit@1/families", p["hit@1"]) for p in run["curve"]], marker="o", label=label)
    bars.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(columns))])
    bars.set_xticklabels([label for label, _ in columns])
    bars.set_ylabel("Hit@1 (test split)")
    bars.set_ylim(0, 1)
    bars.legend(fontsize=7)
    bars.set_title("Hit@1 per task (L1-3: arithmetic, one pass saturates)")
    curves.set_xlabel("training step")
    curves.set_ylabel("Hit@1, task families (validation)")
    curves.set_ylim(0, 1)
    curves.legend(fontsize=8)
    curves.set_title("Training curve")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return [png]
