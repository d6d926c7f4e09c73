"""`lame bench index`: build time, queries/s and recall@k of FAISS (flat, HNSW) and Milvus Lite (FLAT, HNSW).

Every method indexes the same random unit vectors (by default 100,000 of Qwen2-VL-2B's embedding width,
1536) through the project's own builders (:class:`lame.index.VectorIndex`,
:func:`lame.index.build_milvus_index`: batched inserts, a flush that builds Milvus Lite's segment
indexes), then answers the same random unit queries one at a time, as a server sees them, and all of them in one
call (a bulk search; Milvus Lite's cost per call grows with the collection, so this differs most there). Recall@k is
the share of the exact top k (numpy, float64) each method returns; the score error is the largest
difference between a returned score and the float64 inner product. Times are wall-clock and process CPU
seconds (``--threads 1`` on a shared CPU). Random vectors in high dimension are
the hard case for graph indexes: real embeddings cluster, and HNSW finds their neighbours more easily.
"""

from __future__ import annotations

import importlib.metadata
import json
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from milvus_lite.server_manager import server_manager_instance

from lame.index import VectorIndex, build_milvus_index
from lame.modeling.meta import known_architectures
from lame.modeling.shapes import SHAPES

from .common import environment, write_report
from .settings import IndexBenchSettings

METHODS = (("faiss", "flat"), ("faiss", "hnsw"), ("milvus-lite", "flat"), ("milvus-lite", "hnsw"))


def embedding_width(shape: str) -> int:
    """The hidden size of a shipped architecture's language model: its LaME embedding width."""
    config = json.loads(known_architectures()[SHAPES[shape].architecture].read_text())
    return int(config.get("text_config", config)["hidden_size"])


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    """``count`` random float32 unit vectors of size ``dim`` (seeded), the synthetic corpus and queries."""
    vectors = np.random.default_rng(seed).standard_normal((count, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top_k(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of each query's k best inner products, computed in float64 in blocks of the corpus."""
    best_scores = np.full((len(queries), 0), -np.inf)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    q = queries.astype(np.float64)
    for start in range(0, len(corpus), 20_000):
        scores = q @ corpus[start:start + 20_000].astype(np.float64).T
        rows = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        scores, rows = np.concatenate([best_scores, scores], 1), np.concatenate([best_rows, rows], 1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_rows = np.take_along_axis(scores, top, 1), np.take_along_axis(rows, top, 1)
    return best_rows


class Clock:
    """Wall-clock and process CPU seconds (all threads, Milvus Lite's in-process server included) of a block;
    on a CPU shared with other jobs the CPU seconds of a one-thread run are the steadier number."""

    def __enter__(self) -> "Clock":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s, self.cpu_s = time.perf_counter() - self._wall, time.process_time() - self._cpu


def measure(index, corpus: np.ndarray, queries: np.ndarray, exact: np.ndarray, k: int) -> dict:
    """Queries/s (one query per call; wall and CPU), recall@k against ``exact``, and the largest
    difference between a returned score and the float64 inner product of the query with that hit."""
    index.search(queries[:1], k)  # warm-up: the first call loads what it needs
    answers = []
    with Clock() as clock:
        for query in queries:
            scores, ids = index.search(query[None], k)
            answers.append((scores[0], [i for i in ids[0] if i is not None]))  # the ids are corpus rows
    with Clock() as batched:  # every query in one call, as a bulk search or a batch of /v1/search inputs
        index.search(queries, k)
    recall = np.mean([len(set(hits) & set(truth.tolist())) / k for (_, hits), truth in zip(answers, exact)])
    score_error = max(float(np.max(np.abs(scores[:len(hits)] - corpus[hits].astype(np.float64) @ query)))
                      for (scores, hits), query in zip(answers, queries.astype(np.float64)))
    return {"queries_per_s": len(queries) / clock.wall_s, "queries_per_cpu_s": len(queries) / clock.cpu_s,
            "batched_queries_per_s": len(queries) / batched.wall_s, "recall_at_k": float(recall),
            "max_score_error": score_error}


@contextmanager
def cpu_threads(threads: int | None):
    """FAISS's OpenMP threads and the BLAS threads numpy uses (Milvus Lite's FLAT search) for the run
    (None: leave the libraries' own settings)."""
    if not threads:
        yield
        return
    import faiss
    from threadpoolctl import threadpool_limits  # with scikit-learn, a core dependency

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        faiss.omp_set_num_threads(before)


def run_index_bench(settings: IndexBenchSettings, output: Path | None = None, log=print) -> dict:
    """Builds every backend and kind over synthetic unit vectors and measures build time, queries per
    second and recall@k against exact search; the report is also written to ``output`` when given."""
    if settings.quick:
        settings = settings.quick_version()
    dim = settings.dim or embedding_width(settings.shape)
    corpus = unit_vectors(settings.vectors, dim, settings.seed)
    queries = unit_vectors(settings.queries, dim, settings.seed + 1)
    ids = list(range(settings.vectors))  # an id is its row, so hits compare with the exact rows directly
    exact = exact_top_k(corpus, queries, settings.k)
    log(f"bench index: {settings.vectors} random unit vectors of dim {dim}, {settings.queries} queries, "
        f"k={settings.k}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lame-bench-index-") as scratch, cpu_threads(settings.threads):
        for backend, kind in METHODS:
            params = {"kind": kind, "m": settings.m, "ef_construction": settings.ef_construction,
                      "ef_search": settings.ef_search}
            with Clock() as clock:
                if backend == "faiss":
                    index = VectorIndex.build((corpus, ids), **params)
                else:
                    index = build_milvus_index((corpus, ids), Path(scratch) / f"{kind}.db", show_progress=False,
                                               batch_size=settings.batch_size, **params)
            row = {"backend": backend, "kind": kind, "build_s": clock.wall_s, "build_cpu_s": clock.cpu_s,
                   **measure(index, corpus, queries, exact, settings.k)}
            log(f"  {backend:<12} {kind:<5} build {clock.wall_s:8.1f} s ({clock.cpu_s:.1f} s CPU)  "
                f"{row['queries_per_s']:8.1f} queries/s  recall@{settings.k} {row['recall_at_k']:.3f}")
            rows.append(row)
            if backend == "milvus-lite":  # stop its in-process server before the folder is removed
                index.close()
                server_manager_instance.release_server(str(Path(scratch) / f"{kind}.db"))
    report = {"benchmark": "index", "settings": {**asdict(settings), "dim": dim}, "rows": rows,
              "environment": {**environment(torch.device("cpu")), "index_versions": _versions()}}
    write_report(report, output, "index")
    return report


def _versions() -> dict:
    found = {}
    for name in ("faiss-cpu", "pymilvus", "milvus-lite"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def format_index(report: dict) -> str:
    """The index bench report as the command prints it."""
    settings = report["settings"]
    k = settings["k"]
    threads = f", {settings['threads']} thread(s)" if settings.get("threads") else ""
    lines = [f"{settings['vectors']} random unit vectors of dim {settings['dim']}, {settings['queries']} queries "
             f"one per call (and all in one call), k={k}{threads}",
             f"{'backend':<12} {'kind':<5} {'build s':>8} {'CPU s':>8} {'queries/s':>10} {'per CPU s':>10} "
             f"{'in 1 call':>10} {f'recall@{k}':>10} {'max score error':>16}"]
    lines += [f"{r['backend']:<12} {r['kind']:<5} {r['build_s']:>8.1f} {r['build_cpu_s']:>8.1f} "
              f"{r['queries_per_s']:>10.1f} {r['queries_per_cpu_s']:>10.1f} {r['batched_queries_per_s']:>10.1f} "
              f"{r['recall_at_k']:>10.3f} {r['max_score_error']:>16.1e}" for r in report["rows"]]
    return "\n".join(lines)
