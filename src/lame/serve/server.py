"""Running the app with uvicorn: in the foreground (``lame serve``) or in a background thread."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch
import uvicorn

from .app import create_app
from .settings import ServeSettings


def load_app(model_dir: str | Path, settings: ServeSettings, index_dir: str | Path | None = None,
             device: str | None = None, ui: bool = False):
    """The app for a saved model folder (and an index folder); ``ui`` serves the search page at ``/``."""
    from ..index import open_index
    from ..modeling import LaMEModel

    model = LaMEModel.from_pretrained(model_dir, device=device)
    index = open_index(index_dir) if index_dir else None
    return create_app(model, settings, index, ui=ui)


def serve(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", threads: int | None = None) -> None:
    """Serves until interrupted (Ctrl-C / SIGTERM). ``threads``: torch's CPU threads, by default one
    per core but one: the event loop keeps a core, and OpenMP workers waiting on a core that the HTTP
    side holds would stall every forward (on a busy 2-core machine, 20x slower)."""
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) - 1))
    uvicorn.run(app, host=host, port=port, log_level=log_level)


class ServerThread:
    """``with ServerThread(app) as server: server.url`` -- uvicorn on a free loopback port, for tests
    and benchmarks."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
        self.thread = threading.Thread(target=self.server.run, name="lame-uvicorn", daemon=True)
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread stopped while starting (is the port free?)")
            self.thread.join(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
