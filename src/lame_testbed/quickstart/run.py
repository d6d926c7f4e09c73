"""`lame quickstart`: LaME against the discriminative embedder on the offline digits benchmark, on a CPU.

1. the shipped reference VLM (a tiny Qwen2-VL that reads digits and reasons step by step when it
   generates, :mod:`lame_testbed.digit_vlm`) is the backbone of every method;
2. each method trains on the benchmark's training records with the same budget (steps, batch,
   learning rates), its curve measured on the validation split;
3. each is scored on the test split: Hit@1 per task, what its latents decode to, ms per query;
4. a report folder gets the scores, the models, plots and a few queries with what was retrieved.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from lame.errors import InvalidInput
from lame.eval.jsonl import load_jsonl_task
from lame.eval.runner import score_task
from lame.eval.tasks import RetrievalTask
from lame_testbed.digit_vlm import reference_backbone
from lame_testbed.digit_vlm.probe import answer_of
from lame_testbed.digits import NUMBER_WORDS, generate_digits_benchmark
from lame_testbed.families import FAMILIES
from lame.modeling import LaMEModel
from lame.training.recipe import recipe_from_dict
from lame.training.report import read_metrics
from lame.training.trainer import Trainer

from .settings import METHODS, QUICKSTART_METHODS, QuickstartSettings

CACHE = Path(os.environ.get("LAME_CACHE", Path.home() / ".cache" / "lame"))  # the generated benchmark
REASONING_LEVELS = ("1", "2", "3")
REASONING_TASKS = tuple(f"level{level}" for level in REASONING_LEVELS)
FAMILY_TASKS = tuple(FAMILIES)


def ensure_data(seed: int = 0) -> Path:
    """The digits benchmark (current version) generated once into the cache."""
    from lame_testbed.digits import BENCHMARK_VERSION

    folder = CACHE / f"digits-v{BENCHMARK_VERSION}-seed{seed}"
    if not (folder / "summary.json").is_file():
        generate_digits_benchmark(folder, seed=seed)
    return folder


def digits_task(split_dir: Path, per_task: int | None = None) -> RetrievalTask:
    """A held-out split as a retrieval task grouped by task (level or family); a query never ranks its
    own image(s). ``per_task``: only the first queries of each task."""
    task = load_jsonl_task(split_dir)
    task.group_by = "task"
    if per_task is not None:
        task.queries = first_per_task(task.queries, per_task)
    all_docs = list(task.corpus)
    for q in task.queries:
        own = set(q.meta.get("query_ids", []))
        q.candidates = [d for d in all_docs if d not in own]
    return task


def first_per_task(queries: list, count: int) -> list:
    """The first ``count`` queries of each task, in their order."""
    seen: dict[str, int] = {}
    kept = []
    for q in queries:
        name = q.meta["task"]
        if seen.get(name, 0) < count:
            kept.append(q)
            seen[name] = seen.get(name, 0) + 1
    return kept


def hit_at_1_by_task(model, task: RetrievalTask, batch_size: int = 64, return_ranking: bool = False):
    """Hit@1 overall, per task, on the mean of the reasoning levels (1-3) and on the mean of the families."""
    doc_ids = list(task.corpus)
    docs = model.encode([task.corpus[d] for d in doc_ids], batch_size=batch_size, role="document")
    queries = model.encode([q.item for q in task.queries], batch_size=batch_size, role="query")
    result, ranking = score_task(task, queries, docs, doc_ids)
    scores = {f"hit@1/{name}": v["hit@1"] for name, v in result["groups"].items()}
    scores["hit@1"] = result["hit@1"]
    for summary, members in (("reasoning", REASONING_TASKS), ("families", FAMILY_TASKS)):
        present = [scores[f"hit@1/{name}"] for name in members if f"hit@1/{name}" in scores]
        if present:
            scores[f"hit@1/{summary}"] = float(np.mean(present))
    return (scores, ranking) if return_ranking else scores


def training_file(data_dir: Path, pairs: int | None, seed: int, folder: Path,
                  tasks: tuple[str, ...] | None = None, noisy_positives: float = 0.0) -> Path:
    """The training records of ``tasks`` (None: all), or ``pairs`` of them (a seeded shuffle, the same
    number per task); with ``noisy_positives`` > 0, that fraction of each task's records carry a wrong
    positive (see :func:`swap_positives`)."""
    if not 0.0 <= noisy_positives < 1.0:
        raise InvalidInput(f"noisy_positives must be in [0, 1), got {noisy_positives}")
    source = data_dir / "train.jsonl"
    if pairs is None and tasks is None and not noisy_positives:
        return source
    by_task: dict[str, list[str]] = {}
    for line in source.read_text().splitlines():
        by_task.setdefault(json.loads(line)["task"], []).append(line)
    unknown = sorted(set(tasks or ()) - set(by_task))
    if unknown:
        raise InvalidInput(f"train_tasks {unknown} are not in {source}; it has {', '.join(sorted(by_task))}")
    by_task = {name: lines for name, lines in by_task.items() if tasks is None or name in tasks}
    rng = random.Random(seed)
    per_task = max(1, pairs // len(by_task)) if pairs is not None else None
    rows = []
    for name in sorted(by_task):
        lines = by_task[name][:]
        rng.shuffle(lines)
        # Relative image paths resolve against the file's folder: make them absolute.
        task_rows = [_absolute_paths(json.loads(line), data_dir) for line in lines[:per_task]]
        rows += swap_positives(task_rows, noisy_positives, rng) if noisy_positives else task_rows
    folder.mkdir(parents=True, exist_ok=True)
    subset = "-".join(sorted(by_task)) if tasks is not None else "all"
    noise = f"-noisy{noisy_positives:g}" if noisy_positives else ""
    path = folder / f"train-{pairs or 'all'}-{subset}{noise}-seed{seed}.jsonl"
    # Written whole, then renamed: workers training side by side may each write the same file.
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(partial, path)
    return path


def swap_positives(rows: list[dict], fraction: float, rng: random.Random) -> list[dict]:
    """A seeded ``fraction`` of the records get the positive of a record that shows something else (another
    label), with its label and target modality, as mined pairs go wrong: the contrastive loss then learns
    from a wrong pair. The query and its ``answer`` and ``rationale``, which the decoder reconstructs, stay
    right; so does the held-out data."""
    def shows(row: dict) -> str:
        return json.dumps(row.get("label", row["positive"]))

    if len({shows(row) for row in rows}) < 2:
        raise InvalidInput("noisy_positives needs records that show at least two different things")
    out = [dict(row) for row in rows]
    for record in sorted(rng.sample(range(len(rows)), round(fraction * len(rows)))):
        donor = rng.randrange(len(rows))
        while shows(rows[donor]) == shows(rows[record]):
            donor = rng.randrange(len(rows))
        for key in ("positive", "label", "target_modality"):
            if key in rows[donor]:
                out[record][key] = rows[donor][key]
    return out


def _absolute_paths(record: dict, base: Path) -> dict:
    def fix(item):
        if isinstance(item, dict):
            out = dict(item)
            if "image" in out:
                out["image"] = str(base / out["image"])
            if "images" in out:
                out["images"] = [str(base / p) for p in out["images"]]
            return out
        return item

    return {**record, "query": fix(record["query"]), "positive": fix(record["positive"])}


def method_recipe(name: str, settings: QuickstartSettings, backbone: Path, train_file: Path, output: Path) -> dict:
    """The two-stage recipe of a method; every method gets the same steps, batch and learning rates."""
    method = METHODS[name]
    settings = replace(settings, **method.changes)
    lame = {"num_reason_tokens": method.k, "num_embed_tokens": method.embed_tokens, "pooling": method.pooling,
            "temperature": settings.temperature, "max_length": 512,
            "decoder_target": settings.decoder_target, "decoder_reads": settings.decoder_reads,
            "reconstruction_weight": settings.reconstruction_weight,
            "diversity_weight": settings.diversity_weight if method.k > 1 else 0.0}
    if method.variant == "sequential":
        lame |= {"variant": "sequential", "latent_steps": 8}
    elif method.variant == "cot":
        lame |= {"variant": "cot", "cot_max_new_tokens": settings.cot_max_new_tokens}
    heads = [{"pattern": "latent_embeddings", "lr": settings.lr_heads}]
    if method.decoder:
        heads.append({"pattern": "decoder_head.*", "lr": settings.lr_heads})
    language_model = {"pattern": "backbone.model.language_model.*", "lr": settings.lr_backbone}
    return {
        "model": {"backbone": str(backbone), "decoder": str(backbone / "decoder") if method.decoder else None,
                  "seed": settings.seed, "lame": lame},
        "data": {"sources": [{"path": str(train_file)}]},
        "train": {"output_dir": str(output), "seed": settings.seed, "save_every": 10**9, "keep_last": 1,
                  "log_every": 10, "eval_every": settings.eval_every, "tensorboard": False},
        "stages": [stage for stage in (
            {"name": "warmup", "steps": settings.warmup_steps, "batch_size": settings.batch_size,
             "schedule": "constant", "trainable": heads},
            {"name": "joint", "steps": settings.joint_steps, "batch_size": settings.batch_size,
             "schedule": "cosine", "warmup_steps": min(10, settings.joint_steps),
             "trainable": [language_model, *heads]},
        ) if stage["steps"] > 0],  # warmup_steps 0: one stage (an ablation of the two-stage recipe)
    }


def train_method(name: str, settings: QuickstartSettings, output: Path, backbone: Path, data_dir: Path,
                 show_progress: bool = True) -> dict:
    """Trains one method; returns its model folder, training time and validation curve."""
    curve_task = digits_task(data_dir / "val", per_task=settings.eval_queries_per_task)
    train_file = training_file(data_dir, settings.train_pairs, settings.seed, output / "data", settings.train_tasks,
                               settings.noisy_positives)
    recipe = recipe_from_dict(method_recipe(name, settings, backbone, train_file, output / name))
    trainer = Trainer(recipe, show_progress=show_progress, evaluator=lambda m: hit_at_1_by_task(m, curve_task))
    started = time.perf_counter()
    model_dir = trainer.run()
    curve = [{"step": r["step"], **{k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("eval/")}}
             for r in read_metrics(output / name / "metrics.jsonl", kind="eval")]
    return {"model_dir": str(model_dir), "train_seconds": time.perf_counter() - started, "curve": curve}


def decoded_accuracy(model, task: RetrievalTask, per_task: int) -> dict[str, float]:
    """Per task: the fraction of queries whose decoded latents name the answer (see ``answer_of``)."""
    queries = first_per_task(task.queries, per_task)
    texts = model.decode_latents([q.item for q in queries], max_new_tokens=64)
    result = {}
    for name in sorted({q.meta["task"] for q in queries}):
        mine = [(q, t) for q, t in zip(queries, texts) if q.meta["task"] == name]
        result[name] = sum(answer_of(t) == q.meta["answer"] for q, t in mine) / len(mine)
    return result


def timing_items(data_dir: Path, count: int = 64) -> list:
    """The queries every method is timed on: ``count`` test queries spread over the tasks."""
    task = digits_task(data_dir / "test")
    return [q.item for q in task.queries[:: max(1, len(task.queries) // count)]][:count]


def time_models(model_dirs: dict[str, str], data_dir: Path, repeats: int = 5, threads: int | None = 1) -> dict:
    """ms per query at batch 1 and 32 of every trained model, timed side by side in this process (the
    models interleaved, ``repeats`` rounds, medians with their spread, ratios to the discriminative one).
    One torch thread by default: on a machine others share, several threads wait on each other and the
    times say more about the neighbours than about the models."""
    import torch

    from lame_testbed.bench.common import torch_threads
    from lame_testbed.bench.timing import encode_timing

    with torch_threads(threads):
        models = {name: LaMEModel.from_pretrained(folder) for name, folder in model_dirs.items()}
        reference = "discriminative" if "discriminative" in models else None
        report = encode_timing(models, timing_items(data_dir), repeats=repeats, reference=reference)
        report["threads"] = torch.get_num_threads()
    return report


def score_method(model, data_dir: Path, settings: QuickstartSettings, splits: tuple[str, ...] = ("val", "test")) -> dict:
    """Per split: Hit@1 per task (under the split's name) and, for models with a decoder, the fraction of
    queries whose decoded latents name the answer (under ``decoded_<split>``, e.g. ``decoded_test``).
    Choose on "val", report "test"."""
    scores: dict = {}
    for split in splits:
        task = digits_task(data_dir / split)
        scores[split] = hit_at_1_by_task(model, task)
        if model.decoder_head is not None and settings.decode_queries_per_task:
            scores[f"decoded_{split}"] = decoded_accuracy(model, task, settings.decode_queries_per_task)
    return scores


def run_method(name: str, settings: QuickstartSettings, output: Path, show_progress: bool = True,
               backbone: Path | None = None, splits: tuple[str, ...] = ("val", "test"),
               data_dir: Path | None = None) -> dict:
    """Trains one method on the digits data (default: the cached benchmark) and scores it on ``splits``."""
    data_dir = data_dir or ensure_data()
    run = train_method(name, settings, output, backbone or reference_backbone(), data_dir, show_progress)
    model = LaMEModel.from_pretrained(run["model_dir"])
    return {**run, **score_method(model, data_dir, replace(settings, **METHODS[name].changes), splits)}


def retrieval_samples(model, data_dir: Path, top: int = 3) -> list[dict]:
    """One test query per task (image targets, then a word target for a family): digits shown, answer,
    decoded latents, top hits."""
    task = digits_task(data_dir / "test")
    picked = []
    for name in dict.fromkeys(q.meta["task"] for q in task.queries):
        picked += [q for q in task.queries if q.meta["task"] == name and q.meta["target_modality"] == "image"][:1]
    picked += [q for q in task.queries if q.meta["target_modality"] == "text" and q.meta["task"] in FAMILY_TASKS][:1]
    task.queries = picked
    _, ranking = hit_at_1_by_task(model, task, return_ranking=True)
    labels = _labels()
    decoded = model.decode_latents([q.item for q in task.queries], max_new_tokens=64) if model.decoder_head else None
    samples = []
    for i, q in enumerate(task.queries):
        hits = [_describe(doc, labels) for doc in ranking[q.id][:top]]
        samples.append({"query": q.id, "task": q.meta["task"], "instruction": q.item.get("instruction"),
                        "digits_shown": q.meta["query_digits"], "answer": q.meta["answer"],
                        "decoded": decoded[i] if decoded else None, "top": hits,
                        "top1_correct": ranking[q.id][0] in q.relevant})
    return samples


def _labels() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target


def _describe(doc_id: str, labels: np.ndarray) -> str:
    if doc_id.startswith("word-"):
        return f"word {NUMBER_WORDS[int(doc_id[5:])]!r}"
    return f"image of a {labels[int(doc_id[4:])]}"


def run_quickstart(output: Path, settings: QuickstartSettings = QuickstartSettings(),
                   methods: tuple[str, ...] = QUICKSTART_METHODS, show_progress: bool = True,
                   jobs: int | None = None) -> dict:
    """Trains and scores ``methods`` on the shipped backbone (``jobs`` at a time, each in its own
    process; default: one per CPU core); writes scores.json, the plots and a search index of the test
    corpus embedded by LaME."""
    output.mkdir(parents=True, exist_ok=True)
    data_dir = ensure_data()
    reference_backbone()  # checksums verified once, before any worker starts
    report: dict = {"settings": asdict(settings),
                    "methods": train_methods(methods, settings, output, data_dir, jobs, show_progress)}
    report["timing"] = time_models({n: run["model_dir"] for n, run in report["methods"].items()}, data_dir)
    lame_name = next((n for n in methods if METHODS[n].decoder), methods[-1])
    lame_dir = report["methods"][lame_name]["model_dir"]
    report["samples"] = {"method": lame_name,
                         "queries": retrieval_samples(LaMEModel.from_pretrained(lame_dir), data_dir)}
    report["search"] = search_index(lame_dir, data_dir, output / "test-index")
    (output / "scores.json").write_text(json.dumps(report, indent=2) + "\n")
    from .plots import plot_quickstart

    report["plots"] = [str(p) for p in plot_quickstart(report, output) if p]
    return report


def train_methods(methods: tuple[str, ...], settings: QuickstartSettings, output: Path, data_dir: Path,
                  jobs: int | None = None, show_progress: bool = True) -> dict[str, dict]:
    """Every method trained and scored on the test split; with ``jobs`` > 1 in worker processes of
    ``cores // jobs`` torch threads (at least one). The default on two cores or more runs every method at
    once (one thread each on a 2-core machine): one-thread runs side by side finish sooner than one after
    the other on two threads, three on two cores sooner than two then one, and a busy machine slows them
    less."""
    cores = os.cpu_count() or 1
    jobs = min(len(methods), jobs or (len(methods) if cores > 1 else 1))
    if jobs <= 1:
        return {name: run_method(name, settings, output, show_progress, splits=("test",), data_dir=data_dir)
                for name in methods}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, cores // jobs)
    runs = {}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_set_threads, initargs=(threads,)) as pool:
        futures = {name: pool.submit(run_method, name, settings, output, False, splits=("test",), data_dir=data_dir)
                   for name in methods}
        for name, future in futures.items():
            runs[name] = future.result()
            if show_progress:
                print(f"{name}: trained in {runs[name]['train_seconds']:.0f} s", flush=True)
    return runs


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def search_index(model_dir: str, data_dir: Path, folder: Path) -> dict:
    """The test corpus embedded by ``model_dir`` into an index for ``lame serve --ui``; the command that
    opens the search page (or why there is none: the index needs the 'index' extra)."""
    import importlib.util

    if importlib.util.find_spec("faiss") is None:
        return {"command": None, "note": "no search page: the index needs the 'index' extra "
                "(pip install 'lame[index]')"}
    from lame.embed.encode import encode_corpus
    from lame.index.vector_index import VectorIndex

    corpus = data_dir / "test" / "corpus.jsonl"
    started = time.perf_counter()
    # The quickstart's own folder: a rerun (another seed or model) embeds afresh, which encode_corpus
    # would refuse over shards of another model.
    shutil.rmtree(folder, ignore_errors=True)
    encode_corpus(model_dir, corpus, folder / "embeddings", show_progress=False)
    VectorIndex.build(folder / "embeddings", folder / "index", corpus=corpus)
    return {"command": f"lame serve --model {model_dir} --index {folder / 'index'} --ui",
            "seconds": round(time.perf_counter() - started, 1)}


REPORT_COLUMNS = (("L0", "hit@1/level0"), ("L1-3", "hit@1/reasoning"), *((name, f"hit@1/{name}") for name in FAMILY_TASKS),
                  ("families", "hit@1/families"))


def format_report(report: dict) -> str:
    methods = report["methods"]
    timing = report.get("timing", {})
    header = "".join(f"{label:>9}" for label, _ in REPORT_COLUMNS)
    width = max(len(name) for name in methods) + 2
    lines = [f"{'method':<{width}}{header}{'decoded':>9}{'ms/q b1':>9}{'ms/q b32':>9}{'train s':>9}"]
    for name, run in methods.items():
        test = run["test"]
        decoded = run.get("decoded_test")
        families_decoded = [decoded[f] for f in FAMILY_TASKS if decoded and f in decoded]
        decoded_text = f"{np.mean(families_decoded):.3f}" if families_decoded else "-"
        lines.append(f"{name:<{width}}" + "".join(f"{test.get(key, float('nan')):>9.3f}" for _, key in REPORT_COLUMNS)
                     + f"{decoded_text:>9}"
                     + "".join(f"{timing.get(f'batch{b}', {}).get(name, {}).get('median', float('nan')):>9.2f}"
                               for b in (1, 32))
                     + f"{run['train_seconds']:>9.0f}")
    lines.append("Hit@1 on the test split (L1-3: mean of the arithmetic levels 1-3, where one pass saturates; families: "
                 "mean of the task families one pass can learn); decoded: the fraction of family test queries whose "
                 "latents decode to the answer")
    if timing:
        from lame_testbed.bench.timing import format_encode_timing

        lines += format_encode_timing(timing)
    samples = report.get("samples")
    if samples:
        lines.append(f"\nSome test queries and what {samples['method']} retrieved:")
        for s in samples["queries"]:
            shown = " and ".join(str(d) for d in s["digits_shown"])
            lines.append(f"  {s['task']}: image(s) of {shown}, {s['instruction']!r} -> answer {s['answer']}")
            if s["decoded"] is not None:
                lines.append(f"    latents decode to: {s['decoded']!r}")
            lines.append(f"    top {len(s['top'])}: {', '.join(s['top'])}" + ("" if s["top1_correct"] else "  (wrong)"))
    search = report.get("search")
    if search:
        lines.append(f"\nSearch the test corpus with {samples['method'] if samples else 'LaME'} in a browser "
                     f"(http://127.0.0.1:8000/): {search['command']}" if search["command"] else f"\n{search['note']}")
    return "\n".join(lines)
