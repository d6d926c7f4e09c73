"""`lame eval` as one library call: score a saved model folder on a benchmark and record the scores."""

from __future__ import annotations

import sys
from pathlib import Path


def evaluate_saved_model(model_dir: str | Path, benchmark: str, data_root: str | Path | None = None,
                         tasks: list[str] | None = None, options: dict | None = None, batch_size: int = 32,
                         cache_dir: str | None = ".lame-cache/embeddings", device: str | None = None,
                         output: str | Path | None = None, update_card: bool = True) -> tuple[dict, Path]:
    """Scores ``model_dir`` on ``benchmark`` (``options``: :class:`lame.eval.options.BenchmarkOptions`'s
    loader arguments); writes the scores JSON (default: ``MODEL/scores-<benchmark>.json``) and, with
    ``update_card``, the model card's results. Returns the report and the scores file."""
    from ..modeling import LaMEModel
    from .loaders import load_benchmark
    from .runner import evaluate, save_report

    loaded = load_benchmark(benchmark, data_root, tasks, **(options or {}))
    model = LaMEModel.from_pretrained(model_dir, device=device)
    report = evaluate(model, loaded, batch_size=batch_size, cache_dir=cache_dir, model_dir=model_dir)
    report["model"], report["benchmark"] = str(model_dir), benchmark
    path = Path(output or Path(model_dir) / f"scores-{Path(benchmark).name}.json")
    save_report(report, path)
    if update_card:
        _add_to_card(model_dir, report, Path(benchmark).name)
    return report, path


def _add_to_card(model_dir, report: dict, benchmark: str) -> None:
    from ..integrations.card import add_eval_results

    try:
        card = add_eval_results(model_dir, report, benchmark)
    except OSError as exc:  # a read-only model folder: the scores file is written, the card is not
        print(f"lame eval: the model card was not updated ({exc}); --no-card skips it", file=sys.stderr)
    else:
        print(f"model card updated: {card} (model-index and table for {benchmark})")
