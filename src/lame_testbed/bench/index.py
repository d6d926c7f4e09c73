"""`lame bench index`: build time, queries/s and recall@k of FAISS (flat, HNSW) and Milvus Lite (FLAT, HNSW).

Every method indexes the same random unit vectors (by default 100,000 of Qwen2-VL-2B's embedding width,
1536) through the project's own builders (:class:`lame.index.VectorIndex`,
:func:`lame.index.build_milvus_index`: batched inserts, a flush that builds Milvus Lite's segment
indexes), then answers the same random unit queries one at a time, as a server sees them. Recall@k is
the share of the exact top k (numpy, float64) each method returns. Random vectors in high dimension are
the hard case for graph indexes: real embeddings cluster, and HNSW finds their neighbours more easily.
"""

from __future__ import annotations

import importlib.metadata
import json
import tempfile
import time
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


def measure(index, queries: np.ndarray, exact: np.ndarray, k: int) -> dict:
    """Queries/s (one query per call) and recall@k against ``exact``."""
    index.search(queries[:1], k)  # warm-up: the first call loads what it needs
    found = []
    start = time.perf_counter()
    for query in queries:
        found.append(index.search(query[None], k)[1][0])
    seconds = time.perf_counter() - start
    recall = np.mean([len(set(hits) & set(truth.tolist())) / k for hits, truth in zip(found, exact)])
    return {"queries_per_s": len(queries) / seconds, "recall_at_k": float(recall)}


def run_index_bench(settings: IndexBenchSettings, output: Path | None = None, log=print) -> dict:
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
    with tempfile.TemporaryDirectory(prefix="lame-bench-index-") as scratch:
        for backend, kind in METHODS:
            params = {"kind": kind, "m": settings.m, "ef_construction": settings.ef_construction,
                      "ef_search": settings.ef_search}
            start = time.perf_counter()
            if backend == "faiss":
                index = VectorIndex.build((corpus, ids), **params)
            else:
                index = build_milvus_index((corpus, ids), Path(scratch) / f"{kind}.db", batch_size=settings.batch_size,
                                           show_progress=False, **params)
            build_s = time.perf_counter() - start
            row = {"backend": backend, "kind": kind, "build_s": build_s,
                   **measure(index, queries, exact, settings.k)}
            log(f"  {backend:<12} {kind:<5} build {build_s:8.1f} s  {row['queries_per_s']:8.1f} queries/s  "
                f"recall@{settings.k} {row['recall_at_k']:.3f}")
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
    k = report["settings"]["k"]
    lines = [f"{report['settings']['vectors']} random unit vectors of dim {report['settings']['dim']}, "
             f"{report['settings']['queries']} queries one at a time, k={k}",
             f"{'backend':<12} {'kind':<5} {'build s':>8} {'queries/s':>10} {f'recall@{k}':>10}"]
    lines += [f"{r['backend']:<12} {r['kind']:<5} {r['build_s']:>8.1f} {r['queries_per_s']:>10.1f} "
              f"{r['recall_at_k']:>10.3f}" for r in report["rows"]]
    return "\n".join(lines)
