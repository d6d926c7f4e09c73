"""Evaluation while training: a recipe's ``eval`` section (a benchmark) or any evaluator, run by
:class:`PeriodicEvaluation` every ``train.eval_every`` steps and at the end.

A benchmark's tasks are loaded once, through the same loaders as ``lame eval``
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


def recipe_evaluator(recipe, evaluator=None):
    """``evaluator``, else the recipe's ``eval`` benchmark (a :class:`BenchmarkEvaluator`), else None."""
    if evaluator is None and recipe.eval is not None:
        return BenchmarkEvaluator(recipe.eval)
    return evaluator


class PeriodicEvaluation:
    """The trainer's evaluations: ``evaluator(model) -> {name: float}`` every ``train.eval_every`` steps
    and at the end of training, on the main process (on every process when the weights are sharded:
    each forward is then a collective), inside the strategy's ``evaluation_context``. The main
    process's scores go to metrics.jsonl as ``eval/<name>`` and to TensorBoard."""

    def __init__(self, evaluator, recipe, accelerator, strategy, metrics, console):
        self.evaluator, self.recipe = evaluator, recipe
        self.accelerator, self.strategy = accelerator, strategy
        self.metrics, self.console = metrics, console
        self.last: tuple[int, dict] | None = None  # (step, scores) of the last evaluation
        every = recipe.train.eval_every
        if evaluator is None and every:
            console.line("note: train.eval_every is set but nothing is evaluated: add an eval section "
                         "(eval: {benchmark: ...}) to the recipe")
        elif hasattr(evaluator, "describe"):
            console.line(f"evaluating {f'every {every} steps and ' if every else ''}at the end on "
                         f"{evaluator.describe()}")

    def after_step(self, model, stage, step: int, final: bool) -> None:
        """Evaluates when step ``step`` is due (``final``: the last step of training)."""
        every = self.recipe.train.eval_every
        if self.evaluator is None or not (final or (every and step % every == 0)):
            return
        main = self.accelerator.is_main_process
        if main or self.strategy.forward_needs_every_rank:
            with self.strategy.evaluation_context():
                scores = self.evaluator(model)
            model.train()
        if main:
            self.last = (step, scores)
            row = {"step": step, "stage": stage.name, **{f"eval/{k}": float(v) for k, v in scores.items()}}
            self.metrics.write(row, {k: float(v) for k, v in scores.items()}, prefix="eval")
        self.accelerator.wait_for_everyone()

    def final_report(self, model_dir: Path) -> dict | None:
        """The last evaluation for the model card; a benchmark's full report is also written next to
        the model as ``scores-<benchmark>-step-<N>.json``."""
        if self.last is None:
            return None
        step, scores = self.last
        evaluation = {"step": step, "scores": scores}
        report = getattr(self.evaluator, "last_report", None)
        if report is not None:
            from ..eval.runner import format_table, save_report
            from .checkpoint import PREFIX

            spec = self.recipe.eval
            path = model_dir / f"scores-{self.evaluator.name}-{PREFIX}{step:06d}.json"  # not lame eval's file
            save_report({**report, "model": str(model_dir), "benchmark": spec.benchmark, "step": step,
                         "max_queries": spec.max_queries}, path)
            evaluation.update(benchmark=spec.benchmark, max_queries=spec.max_queries, table=format_table(report),
                              file=path.name)
            self.console.line(f"scores after step {step}: overall {report['overall']:.4f} (all of them in {path})")
        return evaluation
