"""An OpenAI-compatible embeddings server with dynamic batching, search and Prometheus metrics."""

from ..extras import require

# before the submodules import them: a missing one is an error naming the extra
require("fastapi", "uvicorn", "prometheus_client", "httpx", extra="serve", feature="lame serve")

from .app import create_app
from .server import ServerThread, load_app, serve
from .settings import ServeSettings

__all__ = ["ServeSettings", "ServerThread", "create_app", "load_app", "serve"]
