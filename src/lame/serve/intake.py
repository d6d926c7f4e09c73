"""A request's way in, once its key is checked: queue and body-size checks, the memory budget, parsing
off the event loop, and the batcher's answer (given up when the client disconnects)."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from .batcher import ItemRejected, QueueFull
from .budget import Reservation
from .engine import ReasonTokens
from .errors import APIError
from .protocol import ParsedRequest, parse_json
from .settings import ServeSettings
from .state import ServerState

log = logging.getLogger(__name__)

Parse = Callable[..., ParsedRequest]  # parse(data, settings, images, *args), from .protocol


async def embed_request(request: Request, state: ServerState, parse: Parse,
                        *args) -> tuple[ParsedRequest, np.ndarray, list[int]]:
    """Admits and parses the request, embeds its items (with the request's number of reason tokens, at
    its size): ``(parsed, vectors, tokens per item)``. Its memory reservation is given back once the
    batcher has answered."""
    from ..modeling.elastic import truncate

    parsed, held = await admit(request, state, parse, *args)
    items = parsed.items
    if parsed.num_reason_tokens is not None:
        items = [ReasonTokens(item, parsed.num_reason_tokens) for item in items]
    try:
        vectors, tokens = await embed(request, state, items)
    finally:
        held.release()
    if parsed.dimensions is not None:
        vectors = truncate(vectors, parsed.dimensions, normalize=bool(state.model.config.normalize))
    return parsed, vectors, tokens


async def admit(request: Request, state: ServerState, parse: Parse, *args) -> tuple[ParsedRequest, Reservation]:
    """Reserves memory, reads and parses the request: ``(parsed, reservation)``. The body is let go
    once parsed; the reservation then holds the decoded images' bytes."""
    settings = state.settings
    refuse_when_queue_full(state)
    declared = request.headers.get("content-length")
    declared = int(declared) if declared is not None and declared.isdigit() else settings.max_body_bytes
    if declared > settings.max_body_bytes:
        raise too_large(settings.max_body_bytes)
    held = state.budget.hold()
    try:
        if not held.set(declared):
            raise no_memory(settings)
        body = await read_body(request, settings.max_body_bytes)
        held.set(len(body))
        data = parse_json(body)
        del body
        parsed = await off_loop("messages" in data, parse, data, settings, state.images, *args)
        del data
        if not held.set(parsed.image_bytes):
            raise no_memory(settings)
    except BaseException:
        held.release()
        raise
    return parsed, held


async def read_json(request: Request, state: ServerState) -> dict:
    """A small JSON request (``/v1/decode``): the queue and body-size checks, then its parsed body."""
    refuse_when_queue_full(state)
    return parse_json(await read_body(request, state.settings.max_body_bytes))


def refuse_when_queue_full(state: ServerState) -> None:
    """503 before anything is decoded when ``--max-queue`` requests wait already."""
    if state.batcher.queue_depth >= state.settings.max_queue:
        raise busy(state.settings)


async def embed(request: Request, state: ServerState, items: list) -> tuple[np.ndarray, list[int]]:
    """The batcher's answer for ``items``; given up (and its queued work cancelled) when the client
    disconnects first."""
    job = asyncio.ensure_future(state.batcher.submit(items))
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
        raise busy(state.settings) from None
    except ItemRejected as exc:
        raise APIError(400, f"input {exc.index} cannot be embedded: {exc.reason}", "input", "invalid_item") from exc
    except Exception as exc:
        log.exception("embedding failed")
        raise APIError(500, f"embedding failed ({type(exc).__name__})", code="internal_error") from exc


async def off_loop(heavy: bool, fn, *args):
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


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (never read whole first)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


def too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than {limit} bytes (--max-body-bytes)", None,
                    "request_too_large")


def busy(settings: ServeSettings) -> APIError:
    return APIError(503, f"the server is busy: {settings.max_queue} requests are waiting (--max-queue); retry later",
                    None, "queue_full", headers={"Retry-After": str(settings.retry_after_s)})


def no_memory(settings: ServeSettings) -> APIError:
    return APIError(503, f"the server is busy: the requests it holds use its memory budget of "
                    f"{settings.max_inflight_bytes} bytes (--max-inflight-bytes); retry later", None, "queue_full",
                    headers={"Retry-After": str(settings.retry_after_s)})
