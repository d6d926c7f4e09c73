"""A recipe's ``eval`` section: a benchmark scored while training.

The tasks are loaded once, through the same loaders as ``lame eval``
(:func:`lame.eval.loaders.load_benchmark`), and scored with :func:`lame.eval.runner.evaluate`
every ``train.eval_every`` steps and at the end. The scores go to metrics.jsonl as
``eval/overall`` and ``eval/<task>/<metric>``, to TensorBoard and the loss-curves plot; the final
report goes into the model card and ``scores-<benchmark>-step-<N>.json`` next to the
trained model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..eval.tasks import RetrievalTask
from .recipe import EvalSpec


def first_queries(task: RetrievalTask, count: int | None) -> RetrievalTask:
    """The task with its first ``count`` queries. When each of them ranks its own candidates (a
    local task), the corpus keeps only those candidates: the scores are the same, with less to embed.
    A global task keeps its whole corpus."""
    if count is None or count >= len(task.queries):
        return task
    queries = task.queries[:count]
    corpus = task.corpus
    if all(q.candidates is not None for q in queries):
        keep = {d for q in queries for d in q.candidates}
        corpus = {d: item for d, item in task.corpus.items() if d in keep}
    return dataclasses.replace(task, queries=queries, corpus=corpus)


def flat_scores(report: dict) -> dict[str, float]:
    """``{"overall": ..., "<task>/<metric>": ...}`` of an :func:`lame.eval.runner.evaluate` report."""
    scores = {"overall": float(report["overall"])}
    scores.update({f"{name}/{s['metric']}": float(s["score"]) for name, s in report["tasks"].items()})
    return scores


class BenchmarkEvaluator:
    """``evaluator(model) -> {name: score}`` for :class:`lame.training.trainer.Trainer`; keeps the
    last full report (per task, per group) for the model card."""

    def __init__(self, spec: EvalSpec):
        from ..eval.loaders import load_benchmark

        self.spec = spec
        self.tasks = [first_queries(t, spec.max_queries) for t in load_benchmark(spec.benchmark, spec.data_root,
                                                                                spec.tasks)]
        self.last_report: dict | None = None

    @property
    def name(self) -> str:
        """The benchmark's short name: a registered name, or the JSONL folder's name."""
        return Path(self.spec.benchmark).name

    def describe(self) -> str:
        queries = sum(len(t.queries) for t in self.tasks)
        limit = f", at most {self.spec.max_queries} per task" if self.spec.max_queries else ""
        return f"{self.spec.benchmark}: {len(self.tasks)} task(s), {queries} queries{limit}"

    def __call__(self, model) -> dict[str, float]:
        from ..eval.runner import evaluate

        self.last_report = evaluate(model, self.tasks, batch_size=self.spec.batch_size, show_progress_bar=False)
        return flat_scores(self.last_report)
