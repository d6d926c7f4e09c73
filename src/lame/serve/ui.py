"""The search page (``lame serve --ui``) and the endpoints it reads besides ``/v1/search``:

* ``POST /v1/decode``: what the reason tokens of a query hold, in words (the decoder head run on the
  K reason states; ``input`` or ``messages`` as in ``/v1/embeddings``, ``max_new_tokens`` 1 to 64);
* ``GET /v1/items/{id}``: a hit's text and image count, from the corpus JSONL the index was built from;
* ``GET /v1/items/{id}/images/{n}``: that item's image ``n`` as a PNG thumbnail.

They take the same API key, body limit, item and image limits as the other ``/v1/*`` endpoints. The
items endpoints read only the records of the index's own corpus, by id: no request names a path.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..data.items import ItemError
from .auth import require_api_key
from .errors import APIError
from .intake import read_json
from .protocol import parse_embedding_request
from .state import ServerState, StateDep

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 64

router = APIRouter(dependencies=[Depends(require_api_key)])  # /v1/decode and /v1/items: the page's data
page_router = APIRouter()  # the page itself, with ``ui=True``


@cache
def page_html() -> str:
    return (resources.files(__package__) / "static" / "index.html").read_text(encoding="utf-8")


@page_router.get("/", include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(page_html())


@router.post("/v1/decode")
async def decode(request: Request, state: StateDep) -> Response:
    data = await read_json(request, state)
    if getattr(state.model, "decoder_head", None) is None:
        raise APIError(404, "this model has no decoder head (K = 0 or use_decoder false): nothing to decode",
                       None, "no_decoder")
    max_new = _max_new_tokens(data)
    data = {k: data[k] for k in ("input", "messages", "model") if k in data}
    parsed = await run_in_threadpool(parse_embedding_request, data, state.settings, state.images, state.model)
    texts = await run_in_threadpool(_decode_latents, state, parsed.items, max_new)
    return JSONResponse({"object": "list", "model": parsed.model or state.settings.model_name,
                         "data": [{"object": "decoded_latents", "index": i, "text": t} for i, t in enumerate(texts)]})


def _max_new_tokens(data: dict) -> int:
    max_new = data.get("max_new_tokens", 32)
    if isinstance(max_new, bool) or not isinstance(max_new, int) or not 1 <= max_new <= MAX_NEW_TOKENS:
        raise APIError(400, f"'max_new_tokens' must be an integer from 1 to {MAX_NEW_TOKENS}, got {max_new!r}",
                       "max_new_tokens", "invalid_value")
    return max_new


def _decode_latents(state: ServerState, items: list, max_new: int) -> list[str]:
    """The decoder head's words for ``items`` (in the thread pool, one run at a time)."""
    try:
        with state.decode_lock:
            return state.model.decode_latents(items, max_new_tokens=max_new)
    except ItemError as exc:
        raise APIError(400, f"input {exc.index} cannot be read: {exc.reason}", "input", "invalid_item") from exc
    except Exception as exc:
        log.exception("decoding failed")
        raise APIError(500, f"decoding failed ({type(exc).__name__})", code="internal_error") from exc


@router.get("/v1/items/{item_id}")
async def item(item_id: str, state: StateDep) -> Response:
    corpus = _corpus(state)
    try:
        return JSONResponse({"object": "item", **await run_in_threadpool(corpus.preview, item_id)})
    except KeyError:
        raise _unknown(item_id) from None


@router.get("/v1/items/{item_id}/images/{number}")
async def image(item_id: str, number: int, state: StateDep) -> Response:
    corpus = _corpus(state)
    try:
        png = await run_in_threadpool(corpus.thumbnail, item_id, number)
    except KeyError:
        raise _unknown(item_id) from None
    except IndexError:
        raise APIError(404, f"item {item_id!r} has no image {number}", "number", "unknown_image") from None
    except ValueError as exc:
        raise APIError(404, f"item {item_id!r}: image {number} cannot be read ({exc})", "number",
                       "unreadable_image") from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


def _corpus(state: ServerState):
    if state.corpus is None:
        raise APIError(404, "the index records no corpus file: hits can show ids only", None, "no_corpus")
    return state.corpus


def _unknown(item_id: str) -> APIError:
    return APIError(404, f"no item with id {item_id!r} in the index's corpus", "id", "unknown_id")
