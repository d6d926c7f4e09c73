"""``POST /v1/search``: embed the query, search the index (404 ``no_index`` without one)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .auth import require_api_key
from .errors import APIError
from .intake import embed_request
from .protocol import parse_search_request, search_response
from .state import StateDep


async def require_index(state: StateDep) -> None:
    if state.index is None:
        raise APIError(404, "no index is loaded: start the server with --index DIR or URI", None, "no_index")


# in this order: a server without an index answers 404 before it asks for the key
router = APIRouter(dependencies=[Depends(require_index), Depends(require_api_key)])


@router.post("/v1/search")
async def search(request: Request, state: StateDep) -> Response:
    parsed, vectors, tokens = await embed_request(request, state, parse_search_request, state.model, state.index.dim)

    def run_search():
        with state.search_lock:
            return state.index.search(vectors, parsed.k)

    scores, ids = await run_in_threadpool(run_search)
    return JSONResponse(search_response(scores, ids, parsed, state.settings.model_name, sum(tokens)))
