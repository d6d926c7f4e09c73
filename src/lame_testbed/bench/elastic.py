"""`lame bench elastic`: one elastic LaME model against models trained at each fixed k, on the digits benchmark.

The elastic model trains with ``elastic_k = ks`` (every step draws the queries' k and the documents' k,
:mod:`lame.training.elastic`) and ``matryoshka_dims = dims`` (the contrastive loss on nested prefixes of
the embedding); each fixed model trains with K = k (k = 0: the discriminative embedder, no decoder head),
all from the shipped reference VLM with the quickstart's two-stage recipe and one budget, on the training
records of ``tasks`` only. Every (model, seed) run is its own process (``jobs`` at a time, ``threads``
torch threads each) and writes ``runs/<model>-seed<seed>.json``, so an interrupted bench resumes. Each
run is scored on one split, the test split by default (:func:`score_elastic`, :func:`score_fixed`): no
choice is made on it, so no validation split is needed.

Times are taken afterwards in ONE process, interleaved (:func:`lame_testbed.bench.timing.time_interleaved`):
ms per query encoded one at a time and corpus items per second in batches of 32, at every k, for the
elastic model and for the fixed ones. The summary, targets, table and plot: :mod:`.elastic_report`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lame.errors import InvalidInput

from .jobs import run_jobs
from .settings import ElasticSettings

ELASTIC = "elastic"
ELASTIC_ONLY = "elastic-no-matryoshka"  # ablation: elastic_k without matryoshka_dims
REUSE_KEYS = ("ks", "dims", "tasks", "warmup_steps", "joint_steps", "batch_size", "queries_per_task", "split")
CORPUS_BATCH = 32


def fixed_name(k: int) -> str:
    """The model trained with k reason tokens only (k = 0: the discriminative embedder)."""
    return f"fixed-k{k}"


def matryoshka_name(k: int) -> str:
    """Ablation: a fixed-K model trained with matryoshka_dims."""
    return f"matryoshka-k{k}"


def trains_with(name: str) -> tuple[bool, bool]:
    """Whether the model ``name`` trains with elastic_k, and with matryoshka_dims."""
    return name in (ELASTIC, ELASTIC_ONLY), name == ELASTIC or name.startswith("matryoshka-k")


def run_names(settings: ElasticSettings) -> list[tuple[str, int]]:
    """Every (model, seed), the costliest (most reason tokens) first within a seed; the ablations last."""
    names = [(name, seed) for seed in settings.seeds for name in [ELASTIC, *map(fixed_name, reversed(settings.ks))]]
    if settings.ablations:
        names += [(name, seed) for seed in settings.seeds
                  for name in (ELASTIC_ONLY, matryoshka_name(max(settings.ks)))]
    return names


def check_settings(settings: ElasticSettings) -> None:
    """Refuses (naming the option) ks and dims that are not ascending / descending without repeats."""
    ks, dims = list(settings.ks), list(settings.dims)
    if ks != sorted(set(ks)) or ks[0] < 0:
        raise InvalidInput(f"--ks: ascending numbers of reason tokens >= 0 without repeats, got {ks}")
    if dims != sorted(set(dims), reverse=True) or dims[-1] < 1:
        raise InvalidInput(f"--dims: descending sizes >= 1 without repeats, got {dims}")


# ------------------------------------------------------------------------------------------ training
def training_records(data_dir: Path, tasks: tuple[str, ...], folder: Path) -> Path:
    """Writes the benchmark's training records of ``tasks`` into ``folder``, image paths made absolute."""
    from lame.data.items import resolve_paths

    rows = [json.loads(line) for line in (data_dir / "train.jsonl").read_text().splitlines() if line.strip()]
    rows = [{**r, "query": resolve_paths(r["query"], data_dir), "positive": resolve_paths(r["positive"], data_dir)}
            for r in rows if r["task"] in tasks]
    if not rows:
        raise InvalidInput(f"--tasks {' '.join(tasks)}: no training record of {data_dir / 'train.jsonl'} has them")
    path = records_file(folder, tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows))
    return path


def records_file(folder: Path, tasks: tuple[str, ...]) -> Path:
    """Where the training records of ``tasks`` are written once for every job."""
    return folder / f"train-{'-'.join(tasks)}.jsonl"


def method_recipe(name: str, settings: ElasticSettings, seed: int, backbone: Path, train_file: Path,
                  output: Path) -> dict:
    """The quickstart's two-stage recipe at this bench's budget: K = k for ``fixed-k<k>``; for ``elastic``
    K = the largest k, with elastic_k and matryoshka_dims (the ablations: one of the two)."""
    from lame_testbed.quickstart.run import method_recipe as quickstart_recipe
    from lame_testbed.quickstart.settings import QuickstartSettings

    base = QuickstartSettings(seed=seed, warmup_steps=settings.warmup_steps, joint_steps=settings.joint_steps,
                              batch_size=settings.batch_size)
    elastic, matryoshka = trains_with(name)
    k = max(settings.ks) if elastic else int(name.rsplit("-k", 1)[1])
    recipe = quickstart_recipe("lame" if k else "discriminative", base, backbone, train_file, output)
    lame = recipe["model"]["lame"]
    # One head for every model, the one-[EMBED] state docs/elastic.md was measured with: elastic k and
    # Matryoshka sizes are about the reason tokens and the vector, and k = 0 must not change the head.
    lame |= {"num_reason_tokens": k, "diversity_weight": base.diversity_weight if k > 1 else 0.0,
             "num_embed_tokens": 1, "pooling": "last"}
    if elastic:
        lame["elastic_k"] = list(settings.ks)
    if matryoshka:
        lame["matryoshka_dims"] = list(settings.dims)
    recipe["train"] |= {"eval_every": None, "log_every": 50}
    return recipe


def run_job(name: str, seed: int, settings: ElasticSettings, data_dir: Path, output: Path) -> dict:
    """Trains one model, scores it on ``settings.split`` and writes ``output/runs/<name>-seed<seed>.json``."""
    from lame.modeling import LaMEModel
    from lame.training.recipe import recipe_from_dict
    from lame.training.trainer import Trainer
    from lame_testbed.digit_vlm import reference_backbone

    work = output / "work" / f"{name}-seed{seed}"
    train_file = records_file(output / "data", settings.tasks)  # written by run_elastic
    recipe = recipe_from_dict(method_recipe(name, settings, seed, reference_backbone(), train_file, work))
    started = time.perf_counter()
    model_dir = Trainer(recipe, show_progress=False).run()
    train_seconds = time.perf_counter() - started
    model = LaMEModel.from_pretrained(model_dir)
    result = {"method": name, "seed": seed, "settings": asdict(settings), "model": _model_definition(name, settings),
              "model_dir": str(model_dir), "train_seconds": train_seconds}
    score = score_elastic if trains_with(name)[0] else score_fixed
    result[settings.split] = score(model, split_task(data_dir, settings.split, settings), settings)
    path = _run_file(output, name, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


# ------------------------------------------------------------------------------------------- scoring
def split_task(data_dir: Path, split: str, settings: ElasticSettings):
    """A held-out split's queries of ``settings.tasks`` against the split's whole corpus."""
    from lame_testbed.quickstart.run import digits_task

    task = digits_task(data_dir / split, per_task=settings.queries_per_task)
    task.queries = [q for q in task.queries if q.meta["task"] in settings.tasks]
    return task


def hits(task, queries: np.ndarray, docs: np.ndarray) -> dict[str, float]:
    """Hit@1 over the task's queries and per task (``hit@1/<task>``)."""
    from lame.eval.runner import score_task

    result, _ = score_task(task, queries, docs, list(task.corpus))
    return {"hit@1": result["hit@1"], **{f"hit@1/{name}": v["hit@1"] for name, v in result["groups"].items()}}


def _encode(model, task, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    docs = model.encode([task.corpus[d] for d in task.corpus], batch_size=64, role="document", **kwargs)
    queries = model.encode([q.item for q in task.queries], batch_size=64, role="query", **kwargs)
    return queries, docs


def score_elastic(model, task, settings: ElasticSettings) -> dict:
    """``grid["kq,kd"]``: queries with kq reason tokens against documents with kd; ``sizes["k,d"]``: both
    with k, at size d (``encode(..., dimensions=d)``, the renormalised prefix)."""
    from lame.modeling.elastic import truncate

    embedded = {k: _encode(model, task, num_reason_tokens=k) for k in settings.ks}
    grid = {f"{kq},{kd}": hits(task, embedded[kq][0], embedded[kd][1]) for kq in settings.ks for kd in settings.ks}
    sizes = {f"{k},{d}": hits(task, *(truncate(e, d, normalize=True) for e in embedded[k]))
             for k in settings.ks for d in settings.dims}
    return {"grid": grid, "sizes": sizes}


def score_fixed(model, task, settings: ElasticSettings) -> dict:
    """``full``: the model as trained; ``truncated[d]``: its embeddings cut to their first d values and
    renormalised (plain truncation: the model never trained for it)."""
    from lame.modeling.elastic import truncate

    queries, docs = _encode(model, task)
    return {"full": hits(task, queries, docs),
            "truncated": {str(d): hits(task, truncate(queries, d, True), truncate(docs, d, True))
                          for d in settings.dims}}


# --------------------------------------------------------------------------------------------- timing
def time_models(settings: ElasticSettings, model_dirs: dict[str, str], data_dir: Path) -> dict:
    """Per k: ms per query (one at a time) and corpus items per second (batches of 32) of the elastic model
    at k and of the fixed model of k, all calls interleaved in this process."""
    import torch

    from lame.modeling import LaMEModel
    from lame_testbed.bench.common import torch_threads
    from lame_testbed.bench.timing import Timing, time_interleaved

    task = split_task(data_dir, "test", settings)
    queries = [q.item for q in task.queries[:: max(1, len(task.queries) // settings.timing_queries)]]
    queries = queries[: settings.timing_queries]
    corpus = [task.corpus[d] for d in list(task.corpus)[: settings.timing_corpus]]
    calls = {}
    with torch_threads(settings.threads):
        models = {name: LaMEModel.from_pretrained(folder) for name, folder in model_dirs.items()}
        for k in settings.ks:
            for label, model, kwargs in (("elastic", models.get(ELASTIC), {"num_reason_tokens": k}),
                                         ("fixed", models.get(fixed_name(k)), {})):
                if model is not None:
                    calls[f"{label} k={k} query"] = lambda m=model, kw=kwargs: m.encode(queries, batch_size=1,
                                                                                        role="query", **kw)
                    calls[f"{label} k={k} corpus"] = lambda m=model, kw=kwargs: m.encode(
                        corpus, batch_size=CORPUS_BATCH, role="document", **kw)
        seconds = time_interleaved(calls, repeats=settings.timing_repeats, warmup=1)
        threads = torch.get_num_threads()
    report: dict = {"threads": threads, "repeats": settings.timing_repeats, "queries": len(queries),
                    "corpus_items": len(corpus), "corpus_batch": CORPUS_BATCH, "rows": {}}
    for name, timing in seconds.items():
        label, k, kind = name.split()
        row = report["rows"].setdefault(f"{label} {k}", {})
        if kind == "query":
            row["ms_per_query"] = Timing([1000 * s / len(queries) for s in timing.rounds]).to_dict()
        else:
            row["corpus_items_per_s"] = Timing([len(corpus) / s for s in timing.rounds]).to_dict()
    return report


# ----------------------------------------------------------------------------------------------- running
def run_elastic(settings: ElasticSettings, data_dir: Path | None = None) -> dict:
    """Runs every missing job, times the models side by side, summarises; writes ``elastic.json``, its
    tables (``elastic.md``) and the plot into ``settings.output``. ``data_dir``: the digits benchmark
    (default: the cached one)."""
    from lame_testbed.digit_vlm import reference_backbone
    from lame_testbed.quickstart.run import ensure_data

    from .common import environment, resolve_device
    from .elastic_report import check_targets, markdown_tables, plot_elastic, summarize

    check_settings(settings)
    output = Path(settings.output)
    output.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir or ensure_data())
    reference_backbone()  # checksums verified once, before the workers start
    (output / "settings.json").write_text(json.dumps(asdict(settings)))
    _check_finished_runs(output, settings)
    train_file = training_records(data_dir, settings.tasks, output / "data")
    started = time.perf_counter()
    todo = [job for job in run_names(settings) if not _run_file(output, *job).is_file()]
    _run_jobs(output, todo, settings, data_dir)
    runs = [json.loads(_run_file(output, *job).read_text()) for job in run_names(settings)
            if _run_file(output, *job).is_file()]
    first_seed = {r["method"]: r["model_dir"] for r in runs if r["seed"] == settings.seeds[0]}
    report = {"settings": asdict(settings), "environment": environment(resolve_device("cpu")),
              "training_records": len(train_file.read_text().splitlines()),
              "jobs_seconds": time.perf_counter() - started, "runs": runs,
              "timing": time_models(settings, first_seed, data_dir)}
    report["summary"] = summarize(runs, settings)
    report["targets"] = check_targets(report["summary"], settings)
    (output / "elastic.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / "elastic.md").write_text(markdown_tables(report) + "\n")
    report["plots"] = [str(p) for p in plot_elastic(report, output / "elastic.png") if p]
    return report


def _run_file(output: Path, name: str, seed: int) -> Path:
    return output / "runs" / f"{name}-seed{seed}.json"


def _check_finished_runs(output: Path, settings: ElasticSettings) -> None:
    """Finished runs are reused only when they were trained and scored with the settings asked for now."""
    for job in run_names(settings):
        path = _run_file(output, *job)
        if path.is_file():
            run = json.loads(path.read_text())
            recorded, wanted = run.get("settings", {}), asdict(settings)
            differing = [k for k in REUSE_KEYS if _plain(recorded.get(k)) != _plain(wanted[k])]
            if "model" in run and run["model"] != _model_definition(job[0], settings):
                differing.append("model")  # the method was redefined since (another embedding head, say)
            if differing:
                raise InvalidInput(f"{path} was made with other settings ({', '.join(differing)}); choose another "
                                   "--output, or delete the run to train it again")


def _model_definition(name: str, settings: ElasticSettings) -> dict:
    """The recipe's ``lame`` section of ``name``, as recorded with each run (JSON types)."""
    recipe = method_recipe(name, settings, 0, Path("backbone"), Path("train.jsonl"), Path("output"))
    return json.loads(json.dumps(recipe["model"]["lame"]))


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _run_jobs(output: Path, todo: list[tuple[str, int]], settings: ElasticSettings, data_dir: Path) -> None:
    commands = [(f"{name}-seed{seed}", [sys.executable, "-m", "lame_testbed.bench.elastic", str(output), name,
                                        str(seed), str(data_dir)]) for name, seed in todo]
    failed = run_jobs(commands, output, settings.jobs, settings.threads)
    if failed:
        raise RuntimeError(f"elastic bench job(s) failed: {', '.join(failed)}; see {output}/<job>.log")


if __name__ == "__main__":  # one job: python -m lame_testbed.bench.elastic OUTPUT NAME SEED DATA_DIR
    folder, job_name, job_seed, job_data = sys.argv[1:5]
    job_settings = ElasticSettings(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in json.loads((Path(folder) / "settings.json").read_text()).items()})
    run_job(job_name, int(job_seed), job_settings, Path(job_data), Path(folder))
