"""Ranking metrics on one query: ``ranking`` is doc ids best first, ``relevant`` maps doc id -> grade.

Definitions (the ones MMEB-V2 and MRMR report):

* Hit@1 (precision@1): 1 if the top document has grade > 0.
* Recall@k: relevant documents in the top k / all relevant documents.
* MRR: 1 / rank of the first relevant document (0 if none is ranked).
* nDCG@k, linear gain: DCG@k = sum_{i=1..k} grade_i / log2(i + 1), divided by the DCG@k of the
  ideal order of the grades (0 when nothing is relevant).

A grade <= 0 (or a document without a grade) is not relevant and gains nothing: negative grades count as
0, as trec_eval (and pytrec_eval, which MRMR's evaluation uses) treats them. Ties in the ranking itself
are broken in :func:`lame.eval.runner.rank`.
"""

from __future__ import annotations

import math
from typing import Sequence


def hit_at_1(ranking: Sequence[str], relevant: dict[str, float]) -> float:
    return float(bool(ranking) and relevant.get(ranking[0], 0) > 0)


def recall_at_k(ranking: Sequence[str], relevant: dict[str, float], k: int) -> float:
    positives = {d for d, g in relevant.items() if g > 0}
    if not positives:
        return 0.0
    return len(positives.intersection(ranking[:k])) / len(positives)


def mrr(ranking: Sequence[str], relevant: dict[str, float]) -> float:
    for rank, doc in enumerate(ranking, start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranking: Sequence[str], relevant: dict[str, float], k: int) -> float:
    dcg = sum(max(relevant.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(ranking[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def all_metrics(ranking: Sequence[str], relevant: dict[str, float]) -> dict[str, float]:
    return {
        "hit@1": hit_at_1(ranking, relevant),
        "recall@1": recall_at_k(ranking, relevant, 1),
        "recall@5": recall_at_k(ranking, relevant, 5),
        "recall@10": recall_at_k(ranking, relevant, 10),
        "mrr": mrr(ranking, relevant),
        "ndcg@5": ndcg_at_k(ranking, relevant, 5),
        "ndcg@10": ndcg_at_k(ranking, relevant, 10),
    }


METRIC_NAMES = ("hit@1", "recall@1", "recall@5", "recall@10", "mrr", "ndcg@5", "ndcg@10")
