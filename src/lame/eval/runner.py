"""Embed, rank and score retrieval tasks; cache embeddings on disk; write JSON and a table."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .metrics import METRIC_NAMES, all_metrics
from .tasks import RetrievalTask

Embed = Callable[[Sequence[Any]], np.ndarray]  # items -> (len(items), dim) embeddings


class Encoder(Protocol):
    """What :func:`evaluate` needs of a model (a :class:`lame.LaMEModel`, or any embedder). One that also
    has ``encode_query`` and ``encode_document`` (LaME's models, a ``SentenceTransformer``) embeds queries
    and documents through them (:func:`lame.modeling.roles.encode_as`)."""

    def encode(self, items: list, batch_size: int = ..., show_progress_bar: bool = ...) -> np.ndarray: ...


def _fingerprint(items: Sequence[Any]) -> str:
    """A content hash of a list of items (text, paths with their size and mtime, image pixels)."""
    digest = hashlib.sha256()

    def feed(obj):
        if isinstance(obj, Path):
            stat = obj.stat() if obj.exists() else None
            digest.update(f"P{obj}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}".encode())
        elif isinstance(obj, dict):
            for key in sorted(obj):
                digest.update(f"K{key}".encode())
                feed(obj[key])
        elif isinstance(obj, (list, tuple)):
            digest.update(b"[")
            for x in obj:
                feed(x)
            digest.update(b"]")
        elif hasattr(obj, "tobytes"):  # PIL image
            digest.update(obj.tobytes())
        else:
            digest.update(f"V{obj!r}".encode())

    feed(list(items))
    return digest.hexdigest()[:20]


class EmbeddingCache:
    """Embeddings on disk under ``root/<model key>/<content hash>.npy``, reused across runs."""

    def __init__(self, root: str | Path | None, model_key: str | None):
        self.root = Path(root) / model_key if root and model_key else None

    def get_or_compute(self, items: Sequence[Any], compute: Embed, role: str = "") -> np.ndarray:
        if self.root is None:
            return compute(items)
        path = self.root / f"{role + '-' if role else ''}{_fingerprint(items)}.npy"
        if path.is_file():
            return np.load(path)
        embeddings = compute(items)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, embeddings)
        tmp.replace(path)
        return embeddings


def model_cache_key(model_dir: str | Path | None) -> str | None:
    """Identifies a saved model folder by its config and weight files (name, size, mtime)."""
    if model_dir is None:
        return None
    model_dir = Path(model_dir)
    digest = hashlib.sha256(str(model_dir.resolve()).encode())
    for f in sorted(model_dir.rglob("*")):
        if f.is_file() and f.suffix in (".json", ".safetensors"):
            stat = f.stat()
            digest.update(f"{f.relative_to(model_dir)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def rank(scores: np.ndarray, ids: Sequence[str], id_order: np.ndarray | None = None) -> list[str]:
    """``ids`` best first: by score, highest first; equal scores by document id in decreasing order (the
    rule of trec_eval, which MRMR's pytrec_eval evaluation follows). The order of ids never depends on
    where a document stands in a candidate list, so a positive listed first gains nothing from a tie.
    ``id_order``: each id's position in ascending id order (computed when not given)."""
    if id_order is None:
        id_order = np.argsort(np.argsort(np.asarray(ids, dtype=object)))
    order = np.lexsort((-np.asarray(id_order), -np.asarray(scores, dtype=np.float64)))
    return [ids[i] for i in order]


def score_task(task: RetrievalTask, query_emb: np.ndarray, doc_emb: np.ndarray,
               doc_ids: Sequence[str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Ranks every query's pool (:func:`rank`) and averages the metrics (overall and per
    ``task.group_by`` value).

    Returns the scores and each query's top 10 document ids (query id -> ranking).
    """
    position = {d: i for i, d in enumerate(doc_ids)}
    id_rank = np.empty(len(doc_ids), dtype=np.int64)  # each document's position in ascending id order
    id_rank[sorted(range(len(doc_ids)), key=lambda i: doc_ids[i])] = np.arange(len(doc_ids))
    sums: dict[str, float] = defaultdict(float)
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    rankings = {}
    for qi, query in enumerate(task.queries):
        pool = query.candidates if query.candidates is not None else doc_ids
        index = [position[d] for d in pool]
        ranking = rank(doc_emb[index] @ query_emb[qi], pool, id_rank[index])
        rankings[query.id] = ranking[:10]
        metrics = all_metrics(ranking, query.relevant)
        for name, value in metrics.items():
            sums[name] += value
        if task.group_by is not None:
            key = str(query.meta.get(task.group_by))
            counts[key] += 1
            for name, value in metrics.items():
                groups[key][name] += value
    n = len(task.queries)
    result = {name: sums[name] / n for name in METRIC_NAMES}
    result.update(score=result[task.metric], metric=task.metric, category=task.category, num_queries=n,
                  num_docs=len(doc_ids))
    if task.group_by is not None:
        result["groups"] = {k: {name: v / counts[k] for name, v in g.items()} for k, g in sorted(groups.items())}
    return result, rankings


def evaluate(model: Encoder, tasks: Sequence[RetrievalTask], batch_size: int = 32,
             cache_dir: str | Path | None = None, model_dir: str | Path | None = None,
             show_progress_bar: bool = True) -> dict[str, Any]:
    """Scores ``model`` (anything with ``encode(items, batch_size=..., show_progress_bar=...)``, see
    :class:`Encoder`) on tasks.

    Returns ``{"tasks": {name: scores}, "categories": {category: mean score}, "overall": mean}``.
    """
    from ..modeling.roles import encode_as

    cache = EmbeddingCache(cache_dir, model_cache_key(model_dir))

    def encoder(role: str):
        def encode(items: Sequence[Any]) -> np.ndarray:
            return np.asarray(encode_as(model, list(items), role, batch_size=batch_size,
                                        show_progress_bar=show_progress_bar), dtype=np.float32)
        return encode

    results = {}
    for task in tasks:
        doc_ids = list(task.corpus)
        doc_emb = cache.get_or_compute([task.corpus[d] for d in doc_ids], encoder("document"), "document")
        query_emb = cache.get_or_compute([q.item for q in task.queries], encoder("query"), "query")
        results[task.name], _ = score_task(task, query_emb, doc_emb, doc_ids)
    categories: dict[str, list[float]] = defaultdict(list)
    for scores in results.values():
        categories[scores["category"]].append(scores["score"])
    return {
        "tasks": results,
        "categories": {c: float(np.mean(v)) for c, v in sorted(categories.items())},
        "overall": float(np.mean([s["score"] for s in results.values()])) if results else float("nan"),
    }


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: one row per task (and per group), main metric plus the common ones."""
    cols = ("score", "hit@1", "recall@5", "mrr", "ndcg@5", "ndcg@10")
    lines = [f"{'task':<32} {'metric':<8} " + " ".join(f"{c:>9}" for c in cols) + f" {'queries':>8}"]
    for name, s in report["tasks"].items():
        lines.append(f"{name[:32]:<32} {s['metric']:<8} " + " ".join(f"{s[c]:>9.4f}" for c in cols)
                     + f" {s['num_queries']:>8}")
        for group, g in s.get("groups", {}).items():
            lines.append(f"  {('= ' + group)[:30]:<30} {'':<8} " + " ".join(
                f"{g.get(c, g[s['metric']] if c == 'score' else float('nan')):>9.4f}" for c in cols))
    for category, value in report["categories"].items():
        lines.append(f"category {category}: {value:.4f}")
    lines.append(f"overall: {report['overall']:.4f}")
    return "\n".join(lines)


def save_report(report: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
