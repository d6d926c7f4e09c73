"""Evaluation: benchmark loaders (MMEB-V2, MRMR, JSONL), candidate pools, metrics, score files."""

from .._lazy import lazy_exports

_EXPORTS = {
    "load_benchmark": "loaders",
    "load_jsonl_benchmark": "jsonl", "load_jsonl_task": "jsonl",
    "all_metrics": "metrics", "hit_at_1": "metrics", "mrr": "metrics", "ndcg_at_k": "metrics",
    "recall_at_k": "metrics",
    "evaluate": "runner", "format_table": "runner", "save_report": "runner", "score_task": "runner",
    "Query": "tasks", "RetrievalTask": "tasks",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
