"""An OpenAI-compatible embeddings server with dynamic batching, search and Prometheus metrics.

:class:`ServeSettings` needs nothing beyond the core install (``lame --help`` lists its options); the
server itself needs the ``serve`` extra, and asking for it without that extra is an error naming it.
"""

from .._lazy import lazy_exports
from ..extras import require

_EXPORTS = {"create_app": "app", "ServerThread": "server", "load_app": "server", "serve": "server",
            "ServeSettings": "settings"}
__all__ = sorted(_EXPORTS)
_exported, __dir__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str):
    if _EXPORTS.get(name, "settings") != "settings":
        require("fastapi", "uvicorn", "prometheus_client", "httpx", extra="serve", feature="lame serve")
    return _exported(name)
