"""``GET /health`` and ``GET /metrics`` (Prometheus): no API key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from .state import StateDep

router = APIRouter()


@router.get("/health")
async def health(state: StateDep) -> dict:
    index, batcher = state.index, state.batcher
    return {"status": "ok", "model": state.settings.model_name, "dim": state.engine.dim,
            "index": None if index is None else {"kind": index.kind, "count": len(index)},
            "queue_depth": batcher.queue_depth, "batches": batcher.batches, "items": batcher.items,
            "cancelled": batcher.cancelled, "inflight_bytes": state.budget.used}


@router.get("/metrics")
async def prometheus(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
