"""The FastAPI app: OpenAI-compatible ``/v1/embeddings`` and ``/v1/models``, ``/v1/search``,
``/health``, ``/metrics``."""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from .batcher import DynamicBatcher, ItemRejected, QueueFull
from .budget import Budget
from .engine import Engine
from .errors import APIError, install_handlers
from .images import ImageLoader
from .metrics import Metrics, MetricsMiddleware
from .protocol import embedding_response, parse_embedding_request, parse_json, parse_search_request, search_response
from .settings import ServeSettings, default_image_pixels
from .ui import install_ui

log = logging.getLogger(__name__)


def create_app(model, settings: ServeSettings | None = None, index=None, ui: bool = False, corpus=None) -> FastAPI:
    """A server for ``model`` (a :class:`~lame.LaMEModel`); ``index`` (a
    :class:`~lame.index.VectorIndex`) enables ``/v1/search`` and must come from the same model
    (:meth:`~lame.index.VectorIndex.check_model`). ``app.state.batcher`` counts batches.
    ``/v1/decode`` and ``/v1/items`` come from :mod:`lame.serve.ui`; ``ui=True`` adds the search page at
    ``/``; ``corpus`` (a :class:`~lame.index.CorpusItems`) replaces the index's own corpus."""
    settings = settings or ServeSettings()
    if index is not None:
        note = index.check_model(model)  # another model or dimension: refused before serving anything
        if note:
            log.warning("%s", note)
    engine = Engine(model, settings.max_batch_size)
    metrics = Metrics(settings.max_batch_size)
    batcher = DynamicBatcher(engine, settings.max_batch_size, settings.max_wait_ms, settings.max_queue, metrics)
    max_pixels = settings.max_image_pixels or default_image_pixels(model.image_max_pixels)
    images = ImageLoader(settings, max_pixels=max_pixels, target=model.image_target_size,
                         resample=getattr(model.image_processor, "resample", None) or Image.Resampling.BICUBIC)
    budget = Budget(settings.max_inflight_bytes)
    search_lock = threading.Lock()  # search parameters live on the FAISS index objects
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()
        images.close()

    app = FastAPI(title="LaME embeddings", lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings
    app.state.budget, app.state.max_image_pixels = budget, max_pixels
    install_handlers(app)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:  # added last: outermost, so preflights are answered before the API key is asked for
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["Authorization", "Content-Type"],
                           max_age=600)

    async def admitted(request: Request, parse, *args):
        """Authorises, reserves memory, reads and parses the request: ``(parsed, reservation)``. The
        body is let go once parsed; the reservation then holds the decoded images' bytes."""
        _authorize(request, settings.api_key)
        if batcher.queue_depth >= settings.max_queue:  # refuse before decoding anything
            raise _busy(settings)
        declared = request.headers.get("content-length")
        declared = int(declared) if declared is not None and declared.isdigit() else settings.max_body_bytes
        if declared > settings.max_body_bytes:
            raise _too_large(settings.max_body_bytes)
        held = budget.hold()
        try:
            if not held.set(declared):
                raise _no_memory(settings)
            body = await _read_body(request, settings.max_body_bytes)
            held.set(len(body))
            data = parse_json(body)
            del body
            parsed = await _off_loop("messages" in data, parse, data, settings, images, *args)
            del data
            if not held.set(parsed.image_bytes):
                raise _no_memory(settings)
        except BaseException:
            held.release()
            raise
        return parsed, held

    async def read_request(request: Request) -> dict:
        """Authorises and reads a small JSON request (``/v1/decode``): key, queue and body-size checks."""
        _authorize(request, settings.api_key)
        if batcher.queue_depth >= settings.max_queue:  # refuse before decoding anything
            raise _busy(settings)
        return parse_json(await _read_body(request, settings.max_body_bytes))

    async def embed(request: Request, items: list):
        """The batcher's answer for ``items``; given up (and its queued work cancelled) when the client
        disconnects first."""
        job = asyncio.ensure_future(batcher.submit(items))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not job.done():
            job.cancel()  # cancels the queued request: the batcher skips it
            raise APIError(499, "the client closed the connection", None, "client_disconnected")
        try:
            return job.result()
        except QueueFull:
            raise _busy(settings) from None
        except ItemRejected as exc:
            raise APIError(400, f"input {exc.index} cannot be embedded: {exc.reason}", "input", "invalid_item") from exc
        except Exception as exc:
            log.exception("embedding failed")
            raise APIError(500, f"embedding failed ({type(exc).__name__})", code="internal_error") from exc

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        parsed, held = await admitted(request, parse_embedding_request, engine.dim)
        try:
            vectors, tokens = await embed(request, parsed.items)
        finally:
            held.release()

        def respond() -> Response:
            return JSONResponse(embedding_response(vectors, parsed, settings.model_name, sum(tokens)))

        return await _off_loop(vectors.size > 65536, respond)

    @app.post("/v1/search")
    async def search(request: Request) -> Response:
        if index is None:
            raise APIError(404, "no index is loaded: start the server with --index DIR", None, "no_index")
        parsed, held = await admitted(request, parse_search_request)
        try:
            vectors, tokens = await embed(request, parsed.items)
        finally:
            held.release()

        def run_search():
            with search_lock:
                return index.search(vectors, parsed.k)

        scores, ids = await run_in_threadpool(run_search)
        return JSONResponse(search_response(scores, ids, parsed, settings.model_name, sum(tokens)))

    def model_card() -> dict:
        return {"id": settings.model_name, "object": "model", "created": created, "owned_by": "lame"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        _authorize(request, settings.api_key)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model_info(request: Request, name: str) -> dict:
        _authorize(request, settings.api_key)
        if name != settings.model_name:
            raise APIError(404, f"the model {name!r} does not exist: this server serves {settings.model_name!r}",
                           "model", "model_not_found")
        return model_card()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": settings.model_name, "dim": engine.dim,
                "index": None if index is None else {"kind": index.kind, "count": len(index)},
                "queue_depth": batcher.queue_depth, "batches": batcher.batches, "items": batcher.items,
                "cancelled": batcher.cancelled, "inflight_bytes": budget.used}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    app.state.read_request, app.state.images = read_request, images
    app.state.authorize = lambda request: _authorize(request, settings.api_key)
    install_ui(app, model, index, corpus, ui=ui)
    return app


async def _off_loop(heavy: bool, fn, *args):
    """Image decoding and big responses run in the thread pool, so they never stall the event loop;
    small text-only work runs inline, where a thread hop would cost more than the work."""
    return await run_in_threadpool(fn, *args) if heavy else fn(*args)


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read by then: what ASGI still sends is the
    disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _authorize(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    headers = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "missing API key: send the header 'Authorization: Bearer KEY'", None, "invalid_api_key",
                       headers=headers)
    if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "incorrect API key", None, "invalid_api_key", headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (never read whole first)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than {limit} bytes (--max-body-bytes)", None,
                    "request_too_large")


def _busy(settings: ServeSettings) -> APIError:
    return APIError(503, f"the server is busy: {settings.max_queue} requests are waiting (--max-queue); retry later",
                    None, "queue_full", headers={"Retry-After": str(settings.retry_after_s)})


def _no_memory(settings: ServeSettings) -> APIError:
    return APIError(503, f"the server is busy: the requests it holds use its memory budget of "
                    f"{settings.max_inflight_bytes} bytes (--max-inflight-bytes); retry later", None, "queue_full",
                    headers={"Retry-After": str(settings.retry_after_s)})
