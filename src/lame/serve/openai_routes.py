"""OpenAI's embeddings API: ``POST /v1/embeddings``, ``GET /v1/models`` and ``GET /v1/models/{name}``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from .auth import require_api_key
from .errors import APIError
from .intake import embed_request, off_loop
from .protocol import embedding_response, parse_embedding_request
from .state import ServerState, StateDep

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/embeddings")
async def embeddings(request: Request, state: StateDep) -> Response:
    parsed, vectors, tokens = await embed_request(request, state, parse_embedding_request, state.model)

    def respond() -> Response:
        return JSONResponse(embedding_response(vectors, parsed, state.settings.model_name, sum(tokens)))

    return await off_loop(vectors.size > 65536, respond)


@router.get("/v1/models")
async def models(state: StateDep) -> dict:
    return {"object": "list", "data": [model_card(state)]}


@router.get("/v1/models/{name:path}")
async def model_info(name: str, state: StateDep) -> dict:
    served = state.settings.model_name
    if name != served:
        raise APIError(404, f"the model {name!r} does not exist: this server serves {served!r}", "model",
                       "model_not_found")
    return model_card(state)


def model_card(state: ServerState) -> dict:
    return {"id": state.settings.model_name, "object": "model", "created": state.created, "owned_by": "lame"}
