"""What the routes share: one :class:`ServerState` per app, made by :func:`~lame.serve.create_app`,
kept on ``app.state.server`` and reached in a route with ``state: StateDep`` (``Depends(get_state)``)."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request
from PIL import Image

from .batcher import DynamicBatcher
from .budget import Budget
from .engine import Engine
from .images import ImageLoader
from .metrics import Metrics
from .settings import ServeSettings, default_image_pixels

if TYPE_CHECKING:
    from ..index import SearchIndex
    from ..index.items import CorpusItems

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    """The model, its batching engine, the index and everything else one server's requests share."""

    model: Any  # a LaMEModel
    settings: ServeSettings
    engine: Engine
    metrics: Metrics
    batcher: DynamicBatcher
    images: ImageLoader
    budget: Budget  # the bytes held by requests in flight (--max-inflight-bytes)
    max_image_pixels: int
    index: SearchIndex | None = None  # enables /v1/search
    corpus: CorpusItems | None = None  # what /v1/items reads; None: hits show ids only
    created: int = field(default_factory=lambda: int(time.time()))  # /v1/models' "created"
    search_lock: threading.Lock = field(default_factory=threading.Lock)  # search parameters live on FAISS objects
    decode_lock: threading.Lock = field(default_factory=threading.Lock)  # one decoder run at a time

    @classmethod
    def create(cls, model, settings: ServeSettings, index: SearchIndex | None = None,
               corpus: CorpusItems | None = None) -> "ServerState":
        """Checks that ``index`` comes from ``model`` (refused before serving anything), then builds
        the engine, batcher, metrics, image loader and budget; ``corpus`` defaults to the index's own."""
        model.check_reason_tokens(settings.num_reason_tokens)  # defaults the model was not trained for: refused
        model.check_dimensions(settings.dimensions)
        if index is not None:
            note = index.check_model(model)  # another model or dimension raises; no fingerprint: a note
            if note:
                log.warning("%s", note)
            index.query_dimensions(settings.dimensions)
        engine = Engine(model, settings.max_batch_size)
        metrics = Metrics(settings.max_batch_size)
        batcher = DynamicBatcher(engine, settings.max_batch_size, settings.max_wait_ms, settings.max_queue, metrics)
        max_pixels = settings.max_image_pixels or default_image_pixels(model.image_max_pixels)
        images = ImageLoader(settings, max_pixels=max_pixels, target=model.image_target_size,
                             resample=getattr(model.image_processor, "resample", None) or Image.Resampling.BICUBIC)
        if corpus is None and index is not None:
            corpus = _index_corpus(index)
        return cls(model, settings, engine, metrics, batcher, images, Budget(settings.max_inflight_bytes),
                   max_pixels, index, corpus)

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self.images.close()


def _index_corpus(index: SearchIndex) -> CorpusItems | None:
    from ..index.items import CorpusItems

    try:
        return CorpusItems.for_index(index)
    except Exception as exc:  # the page still searches; hits show ids only
        log.warning("hits will show ids only: %s", exc)
        return None


def attach(app: FastAPI, state: ServerState) -> None:
    """Puts ``state`` on ``app.state.server``; the parts tests and benchmarks read (``batcher``,
    ``metrics``, ``settings``, ``budget``, ``images``, ``max_image_pixels``) also under their own names."""
    app.state.server = state
    for name in ("batcher", "metrics", "settings", "budget", "images", "max_image_pixels"):
        setattr(app.state, name, getattr(state, name))


async def get_state(request: Request) -> ServerState:
    """The dependency every route takes its shared state from (async: no thread hop per request)."""
    return request.app.state.server


StateDep = Annotated[ServerState, Depends(get_state)]


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Starts the batcher when the server starts; stops it and the image fetcher at shutdown."""
    state: ServerState = app.state.server
    await state.start()
    yield
    await state.stop()
