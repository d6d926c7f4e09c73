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
import threading
from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..data.items import ItemError
from .errors import APIError
from .protocol import parse_embedding_request

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 64


def page_html() -> str:
    return (resources.files(__package__) / "static" / "index.html").read_text(encoding="utf-8")


def install_ui(app: FastAPI, model, index=None, corpus=None, ui: bool = False) -> None:
    """Adds ``/v1/decode`` and the ``/v1/items`` endpoints to ``app`` (made by :func:`create_app`, whose
    ``app.state.read_request`` checks the key, queue and body size); ``ui=True`` also serves the page
    at ``/``. ``corpus`` (a :class:`~lame.index.CorpusItems`) defaults to the index's own."""
    if corpus is None and index is not None:
        from ..index.items import CorpusItems

        try:
            corpus = CorpusItems.for_index(index)
        except Exception as exc:  # the page still searches; hits show ids only
            log.warning("hits will show ids only: %s", exc)
    decode_lock = threading.Lock()  # one decoder run at a time
    router = APIRouter()
    settings = app.state.settings

    @router.post("/v1/decode")
    async def decode(request: Request) -> Response:
        data = await app.state.read_request(request)
        if getattr(model, "decoder_head", None) is None:
            raise APIError(404, "this model has no decoder head (K = 0 or use_decoder false): nothing to decode",
                           None, "no_decoder")
        max_new = data.get("max_new_tokens", 32)
        if isinstance(max_new, bool) or not isinstance(max_new, int) or not 1 <= max_new <= MAX_NEW_TOKENS:
            raise APIError(400, f"'max_new_tokens' must be an integer from 1 to {MAX_NEW_TOKENS}, got {max_new!r}",
                           "max_new_tokens", "invalid_value")
        data = {k: data[k] for k in ("input", "messages", "model") if k in data}
        parsed = await run_in_threadpool(parse_embedding_request, data, settings, app.state.images, 1)

        def run() -> list[str]:
            with decode_lock:
                return model.decode_latents(parsed.items, max_new_tokens=max_new)

        try:
            texts = await run_in_threadpool(run)
        except ItemError as exc:
            raise APIError(400, f"input {exc.index} cannot be read: {exc.reason}", "input", "invalid_item") from exc
        except Exception as exc:
            log.exception("decoding failed")
            raise APIError(500, f"decoding failed ({type(exc).__name__})", code="internal_error") from exc
        return JSONResponse({"object": "list", "model": parsed.model or settings.model_name,
                             "data": [{"object": "decoded_latents", "index": i, "text": t} for i, t in enumerate(texts)]})

    def lookup(request: Request):
        app.state.authorize(request)
        if corpus is None:
            raise APIError(404, "the index records no corpus file: hits can show ids only", None, "no_corpus")
        return corpus

    def unknown(item_id: str) -> APIError:
        return APIError(404, f"no item with id {item_id!r} in the index's corpus", "id", "unknown_id")

    @router.get("/v1/items/{item_id}")
    async def item(item_id: str, request: Request) -> Response:
        items = lookup(request)
        try:
            return JSONResponse({"object": "item", **await run_in_threadpool(items.preview, item_id)})
        except KeyError:
            raise unknown(item_id) from None

    @router.get("/v1/items/{item_id}/images/{number}")
    async def image(item_id: str, number: int, request: Request) -> Response:
        items = lookup(request)
        try:
            png = await run_in_threadpool(items.thumbnail, item_id, number)
        except KeyError:
            raise unknown(item_id) from None
        except IndexError:
            raise APIError(404, f"item {item_id!r} has no image {number}", "number", "unknown_image") from None
        except ValueError as exc:
            raise APIError(404, f"item {item_id!r}: image {number} cannot be read ({exc})", "number",
                           "unreadable_image") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    if ui:
        html = page_html()

        @router.get("/", include_in_schema=False)
        async def page() -> HTMLResponse:
            return HTMLResponse(html)

    app.include_router(router)
