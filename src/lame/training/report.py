"""End-of-training artefacts: the loss-curve PNG and the model card of the saved model."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..extras import pyplot

LOSS_KEYS = ("loss", "contrastive", "reconstruction", "diversity")


def read_metrics(path: Path, kind: str = "train") -> list[dict]:
    """Rows of metrics.jsonl: ``train`` rows (losses) or ``eval`` rows (evaluator scores)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    is_eval = [any(k.startswith("eval/") for k in r) for r in rows]
    return [r for r, e in zip(rows, is_eval) if e == (kind == "eval")]


def plot_losses(metrics_file: Path, png: Path) -> Path | None:
    """The loss parts per step; with evaluation rows, a second panel with the scores per step."""
    rows = read_metrics(metrics_file)
    if not rows:
        return None
    plt = pyplot(png.name)  # the 'plots' extra; training does not need it
    if plt is None:
        return None
    evals = read_metrics(metrics_file, "eval")
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(12 if evals else 7, 4), squeeze=False)
    ax = axes[0][0]
    steps = [r["step"] for r in rows]
    for key in LOSS_KEYS:
        ax.plot(steps, [r[key] for r in rows], label=key)
    for stage_start in _stage_starts(rows):
        ax.axvline(stage_start, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.legend()
    ax.set_title("LaME training losses (dotted: stage boundaries)")
    if evals:
        ax = axes[0][1]
        keys = sorted({k for r in evals for k in r if k.startswith("eval/")}, key=lambda k: (k != "eval/overall", k))
        for key in keys[:12]:
            points = [(r["step"], r[key]) for r in evals if key in r]
            ax.plot(*zip(*points), marker="o", label=key.removeprefix("eval/"),
                    linewidth=2 if key == "eval/overall" else 1)
        ax.set_xlabel("step")
        ax.set_ylabel("score")
        ax.legend(fontsize="small")
        ax.set_title("evaluation")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def _stage_starts(rows: list[dict]) -> list[int]:
    return [b["step"] for a, b in zip(rows, rows[1:]) if a["stage"] != b["stage"]]


def _scores_text(evaluation: dict | None) -> str:
    if not evaluation:
        return "Not evaluated yet (`lame eval`)."
    if "table" in evaluation:
        limit = f", first {evaluation['max_queries']} queries per task" if evaluation.get("max_queries") else ""
        return (f"Benchmark `{evaluation['benchmark']}` after step {evaluation['step']}{limit} "
                f"(`{evaluation['file']}`):\n\n```\n{evaluation['table']}\n```")
    lines = "\n".join(f"- {k}: {v:.4f}" for k, v in evaluation["scores"].items())
    return f"After step {evaluation['step']}:\n\n{lines}"


def write_model_card(model_dir: Path, model, recipe, metrics_file: Path, skipped: int,
                     evaluation: dict | None = None) -> None:
    """``evaluation``: the last evaluation during training, ``{"step", "scores"}`` and, for a recipe's
    benchmark, ``"benchmark"``, ``"max_queries"``, ``"table"`` (the printed table) and ``"file"``."""
    rows = read_metrics(metrics_file)
    last = rows[-1] if rows else {}
    sources = "\n".join(f"- `{s.path}` (weight {s.weight})" for s in recipe.data.sources)
    final = ", ".join(f"{k} {last[k]:.4f}" for k in LOSS_KEYS if k in last) or "n/a"
    card = (
        model.model_card()
        + f"\n## Training\n\nData:\n\n{sources}\n\nSteps: {last.get('step', 0)}; skipped samples: {skipped}; "
        f"final losses: {final}.\n\nRecipe:\n\n```yaml\n{yaml.safe_dump(recipe.to_dict(), sort_keys=False)}```\n"
        f"\n## Scores\n\n{_scores_text(evaluation)}\n"
    )
    (Path(model_dir) / "README.md").write_text(card)
