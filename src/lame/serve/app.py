"""The FastAPI app: OpenAI-compatible ``/v1/embeddings``, ``/v1/search``, ``/health``, ``/metrics``."""

from __future__ import annotations

import hmac
import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .batcher import DynamicBatcher, ItemRejected, QueueFull
from .engine import Engine
from .errors import APIError, install_handlers
from .images import ImageLoader
from .metrics import Metrics, MetricsMiddleware
from .protocol import embedding_response, parse_embedding_request, parse_json, parse_search_request, search_response
from .settings import ServeSettings

log = logging.getLogger(__name__)


def create_app(model, settings: ServeSettings | None = None, index=None) -> FastAPI:
    """A server for ``model`` (a :class:`~lame.LaMEModel`); ``index`` (a
    :class:`~lame.index.VectorIndex`) enables ``/v1/search`` and must come from the same model
    (:meth:`~lame.index.VectorIndex.check_model`). ``app.state.batcher`` counts batches."""
    settings = settings or ServeSettings()
    if index is not None:
        note = index.check_model(model)  # another model or dimension: refused before serving anything
        if note:
            log.warning("%s", note)
    engine = Engine(model, settings.max_batch_size)
    metrics = Metrics(settings.max_batch_size)
    batcher = DynamicBatcher(engine, settings.max_batch_size, settings.max_wait_ms, settings.max_queue, metrics)
    images = ImageLoader(settings)
    search_lock = threading.Lock()  # search parameters live on the FAISS index objects

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()
        images.close()

    app = FastAPI(title="LaME embeddings", lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings
    install_handlers(app)

    app.add_middleware(MetricsMiddleware, metrics=metrics)

    async def read_request(request: Request) -> dict:
        _authorize(request, settings.api_key)
        if batcher.queue_depth >= settings.max_queue:  # refuse before decoding anything
            raise _busy(settings)
        return parse_json(await _read_body(request, settings.max_body_bytes))

    async def embed(items: list):
        try:
            return await batcher.submit(items)
        except QueueFull:
            raise _busy(settings) from None
        except ItemRejected as exc:
            raise APIError(400, f"input {exc.index} cannot be embedded: {exc.reason}", "input", "invalid_item") from exc
        except Exception as exc:
            log.exception("embedding failed")
            raise APIError(500, f"embedding failed ({type(exc).__name__})", code="internal_error") from exc

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        data = await read_request(request)
        parsed = await _off_loop("messages" in data, parse_embedding_request, data, settings, images, engine.dim)
        vectors, tokens = await embed(parsed.items)

        def respond() -> Response:
            return JSONResponse(embedding_response(vectors, parsed, settings.model_name, sum(tokens)))

        return await _off_loop(vectors.size > 65536, respond)

    @app.post("/v1/search")
    async def search(request: Request) -> Response:
        if index is None:
            raise APIError(404, "no index is loaded: start the server with --index DIR", None, "no_index")
        data = await read_request(request)
        parsed = await _off_loop("messages" in data, parse_search_request, data, settings, images)
        vectors, tokens = await embed(parsed.items)

        def run_search():
            with search_lock:
                return index.search(vectors, parsed.k)

        scores, ids = await run_in_threadpool(run_search)
        return JSONResponse(search_response(scores, ids, parsed, settings.model_name, sum(tokens)))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": settings.model_name, "dim": engine.dim,
                "index": None if index is None else {"kind": index.kind, "count": len(index)},
                "queue_depth": batcher.queue_depth, "batches": batcher.batches, "items": batcher.items}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


async def _off_loop(heavy: bool, fn, *args):
    """Image decoding and big responses run in the thread pool, so they never stall the event loop;
    small text-only work runs inline, where a thread hop would cost more than the work."""
    return await run_in_threadpool(fn, *args) if heavy else fn(*args)


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
    too_large = APIError(413, f"the request body is larger than {limit} bytes (--max-body-bytes)", None,
                         "request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _busy(settings: ServeSettings) -> APIError:
    return APIError(503, f"the server is busy: {settings.max_queue} requests are waiting (--max-queue); retry later",
                    None, "queue_full", headers={"Retry-After": str(settings.retry_after_s)})
