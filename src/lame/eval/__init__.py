from .loaders import load_benchmark
from .jsonl import load_jsonl_benchmark, load_jsonl_task
from .metrics import all_metrics, hit_at_1, mrr, ndcg_at_k, recall_at_k
from .runner import evaluate, format_table, save_report, score_task
from .tasks import Query, RetrievalTask

__all__ = ["Query", "RetrievalTask", "all_metrics", "evaluate", "load_benchmark", "format_table", "hit_at_1", "load_jsonl_benchmark",
           "load_jsonl_task", "mrr", "ndcg_at_k", "recall_at_k", "save_report", "score_task"]
