"""The FastAPI app: OpenAI-compatible ``/v1/embeddings`` and ``/v1/models``, ``/v1/search``,
``/health``, ``/metrics``, and the search page's endpoints; one router per concern, sharing one
:class:`~lame.serve.state.ServerState`."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from . import openai_routes, search_routes, status_routes, ui as ui_routes
from .errors import install_handlers
from .metrics import MetricsMiddleware
from .settings import ServeSettings
from .state import ServerState, attach, lifespan


def create_app(model, settings: ServeSettings | None = None, index=None, ui: bool = False, corpus=None) -> FastAPI:
    """A server for ``model`` (a :class:`~lame.LaMEModel`); ``index`` (a
    :class:`~lame.index.SearchIndex`: FAISS or Milvus) enables ``/v1/search`` and must come from the same
    model (its ``check_model``). ``app.state.batcher`` counts batches.
    ``/v1/decode`` and ``/v1/items`` come from :mod:`lame.serve.ui`; ``ui=True`` adds the search page at
    ``/``; ``corpus`` (a :class:`~lame.index.CorpusItems`) replaces the index's own corpus."""
    state = ServerState.create(model, settings or ServeSettings(), index, corpus)
    app = FastAPI(title="LaME embeddings", lifespan=lifespan)
    attach(app, state)
    install_handlers(app)
    _add_middleware(app, state)
    for router in (openai_routes.router, search_routes.router, status_routes.router, ui_routes.router):
        app.include_router(router)
    if ui:
        app.include_router(ui_routes.page_router)
    return app


def _add_middleware(app: FastAPI, state: ServerState) -> None:
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    if state.settings.cors_origins:  # added last: outermost, so preflights are answered before the key is asked for
        app.add_middleware(CORSMiddleware, allow_origins=list(state.settings.cors_origins),
                           allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["Authorization", "Content-Type"],
                           max_age=600)
