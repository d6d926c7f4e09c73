"""The one shape every benchmark is loaded into: a retrieval task with queries and a corpus."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from .metrics import METRIC_NAMES


@dataclass
class Query:
    id: str
    item: Any  # anything lame.data.items accepts
    relevant: dict[str, float]  # doc id -> graded relevance (> 0 is relevant)
    candidates: list[str] | None = None  # "local" task: rank only these docs; None: the whole corpus
    meta: dict = field(default_factory=dict)  # e.g. {"level": 2}, used to break scores down


@dataclass
class RetrievalTask:
    name: str
    queries: list[Query]
    corpus: dict[str, Any]  # doc id -> item
    metric: str = "hit@1"  # the task's main score
    category: str = "default"
    group_by: str | None = None  # a meta key to report per group, e.g. "level"

    def __post_init__(self) -> None:
        if self.metric not in METRIC_NAMES:
            raise InvalidInput(f"task {self.name}: unknown metric {self.metric!r}; choose from {METRIC_NAMES}")
        for q in self.queries:
            pool = q.candidates if q.candidates is not None else self.corpus
            missing = [d for d in (q.candidates or []) if d not in self.corpus]
            if missing:
                raise InvalidInput(f"task {self.name}, query {q.id}: candidate ids not in the corpus: {missing[:5]}")
            if not any(d in pool for d, g in q.relevant.items() if g > 0):
                raise InvalidInput(f"task {self.name}, query {q.id}: no relevant document among its candidates")
