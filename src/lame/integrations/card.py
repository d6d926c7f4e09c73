"""Evaluation results in a model folder's card (``README.md``), the way embedding models on the Hub show them.

``lame eval --model DIR`` calls :func:`add_eval_results`: the card's YAML metadata gets a
``model-index`` entry per task and metric (task, dataset, metric, value; written by
``huggingface_hub``'s ``ModelCard`` / ``EvalResult``) and its text a readable table between two
markers. Each benchmark's results are one block: evaluating the same benchmark again replaces that
block (entries whose ``dataset.args.harness`` is ``lame eval`` and whose dataset is that benchmark), and every other
entry, section and field of the card is kept. A folder without a card gets one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SOURCE = "lame eval"
# metrics recorded per task besides its main one
EXTRA_METRICS = ("hit@1", "ndcg@10")


def _markers(benchmark: str) -> tuple[str, str]:
    return f"<!-- lame-eval:{benchmark} start -->", f"<!-- lame-eval:{benchmark} end -->"


def eval_results(report: dict[str, Any], benchmark: str) -> list:
    """``huggingface_hub.EvalResult`` entries of a ``lame eval`` report: per task its main metric and
    :data:`EXTRA_METRICS`."""
    from huggingface_hub import EvalResult

    results = []
    for task, scores in report["tasks"].items():
        metrics = [scores["metric"], *[m for m in EXTRA_METRICS if m != scores["metric"]]]
        for metric in metrics:
            results.append(EvalResult(
                task_type="retrieval", task_name=f"Retrieval ({scores.get('category', 'default')})",
                dataset_type=benchmark, dataset_name=f"{benchmark} {task}", dataset_config=task,
                dataset_split="test", metric_type=metric, metric_name=metric,
                metric_value=round(float(scores[metric]), 6), dataset_args={"harness": SOURCE},
            ))
    return results


def results_table(report: dict[str, Any], benchmark: str) -> str:
    lines = [f"### `{benchmark}`", "", "| task | category | metric | score | hit@1 | nDCG@10 | queries |",
             "|---|---|---|---:|---:|---:|---:|"]
    for task, s in report["tasks"].items():
        lines.append(f"| {task} | {s.get('category', '')} | {s['metric']} | {s['score']:.4f} | {s['hit@1']:.4f} "
                     f"| {s['ndcg@10']:.4f} | {s['num_queries']} |")
    for category, value in report.get("categories", {}).items():
        lines.append(f"| *category {category}* | | | {value:.4f} | | | |")
    lines.append(f"| **overall** | | | **{report['overall']:.4f}** | | | |")
    return "\n".join(lines)


def add_eval_results(model_dir: str | Path, report: dict[str, Any], benchmark: str) -> Path:
    """Writes ``report`` (from :func:`lame.eval.runner.evaluate`) for ``benchmark`` into the folder's
    card; returns the card's path."""
    from huggingface_hub import ModelCard, ModelCardData

    path = Path(model_dir) / "README.md"
    if path.is_file():
        card = ModelCard(path.read_text(encoding="utf-8"), ignore_metadata_errors=True)
    else:
        card = ModelCard(f"---\n{ModelCardData(library_name='lame').to_yaml()}\n---\n# LaME embedding model\n")
    kept = [r for r in (card.data.eval_results or [])
            if not ((r.dataset_args or {}).get("harness") == SOURCE and r.dataset_type == benchmark)]
    card.data.eval_results = kept + eval_results(report, benchmark)
    card.data.model_name = card.data.model_name or Path(model_dir).resolve().name

    start, end = _markers(benchmark)
    block = f"{start}\n{results_table(report, benchmark)}\n{end}"
    text = card.text
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        heading = "## Evaluation results"
        text = text.rstrip("\n") + ("\n" if heading in text else f"\n\n{heading}\n\nScored with `lame eval`.\n") \
            + f"\n{block}\n"
    card.text = text
    card.save(path)
    return path
