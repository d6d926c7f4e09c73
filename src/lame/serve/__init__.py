"""An OpenAI-compatible embeddings server with dynamic batching, search and Prometheus metrics."""

from .app import create_app
from .server import ServerThread, load_app, serve
from .settings import ServeSettings

__all__ = ["ServeSettings", "ServerThread", "create_app", "load_app", "serve"]
