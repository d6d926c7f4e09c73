"""Connecting to Milvus (a Milvus Lite file or a server) and turning its failures into one-line errors.

A ``.db`` URI runs Milvus Lite inside this process; any other URI is a server or cluster, whose token
(``user:password`` or an API key) is read from ``$LAME_MILVUS_TOKEN``, never from the command line.
pymilvus logs every failed call with a traceback; while :func:`milvus_call` handles a call that
log is dropped, since the failure comes back as one :class:`~lame.errors.UserError` line.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import InvalidInput, MissingPath, UserError
from ..extras import require
from .location import MilvusLocation
from .settings import TOKEN_ENV

pymilvus = require("pymilvus", extra="milvus", feature="a Milvus index (--backend milvus, a Milvus URI)")
import grpc  # noqa: E402  (pymilvus's transport)
from pymilvus import DataType, MilvusClient, MilvusException  # noqa: E402

DEFAULT_TIMEOUT_S = 60.0  # one call, retries included (a batch insert on a busy server takes seconds)
UNREACHABLE = {1, 2}  # pymilvus's codes for a URI it cannot open and a server it cannot reach
LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 2**31 - 1, "grpc.keepalive_permit_without_calls": 0}


class MilvusUnavailable(UserError, ConnectionError):
    """The Milvus server or Milvus Lite file cannot be reached, or stopped answering."""


class _Quiet(logging.Filter):
    """Drops pymilvus's own error logs in threads that are inside :func:`milvus_call`."""

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "depth", 0)


class _Unimplemented(logging.Filter):
    """Drops Milvus Lite's report of an RPC it does not implement: pymilvus asks for a timestamp when it
    creates a collection, does without when refused, and the in-process gRPC server logs a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], NotImplementedError))


_QUIET = _Quiet()
_UNIMPLEMENTED = _Unimplemented()


def _install_quiet() -> None:
    # pymilvus's loggers propagate to the handlers it configures; Milvus Lite's server manager logs
    # its own failure to start (another process holding the file) straight to Python's last resort
    filtered = [h for name in ("pymilvus", "pymilvus.milvus_client") for h in logging.getLogger(name).handlers]
    for item in [*filtered, logging.getLogger("milvus_lite.server_manager")]:
        if _QUIET not in item.filters:
            item.addFilter(_QUIET)
    server = logging.getLogger("grpc._server")
    if _UNIMPLEMENTED not in server.filters:
        server.addFilter(_UNIMPLEMENTED)


@contextmanager
def milvus_call(location: MilvusLocation, doing: str) -> Iterator[None]:
    """Runs a pymilvus call; its failure becomes :class:`MilvusUnavailable` (not reachable) or
    :class:`~lame.errors.InvalidInput` (refused), one line saying what was being done where."""
    _install_quiet()
    _QUIET.active.depth = getattr(_QUIET.active, "depth", 0) + 1
    try:
        yield
    except MilvusException as exc:
        reason = " ".join(str(exc.message or exc).split())
        if exc.code in UNREACHABLE or "unavailable" in reason.lower() or "deadline" in reason.lower():
            raise MilvusUnavailable(f"{doing}: Milvus at {location.uri} does not answer ({reason})") from exc
        raise InvalidInput(f"{doing}: Milvus at {location.uri} refused it ({reason})") from exc
    except grpc.RpcError as exc:  # pymilvus passes some transport errors on as they are
        reason = " ".join(f"{exc.code().name}: {exc.details()}".split())
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise MilvusUnavailable(f"{doing}: Milvus at {location.uri} does not answer ({reason})") from exc
        raise InvalidInput(f"{doing}: Milvus at {location.uri} refused it ({reason})") from exc
    finally:
        _QUIET.active.depth -= 1


def require_lite(location: MilvusLocation) -> None:
    """A ``.db`` URI needs Milvus Lite (pymilvus alone reaches servers only)."""
    if location.lite:
        require("milvus_lite", extra="milvus", feature="a Milvus Lite file (.db)")


def connect(location: MilvusLocation, timeout: float = DEFAULT_TIMEOUT_S, create: bool = False) -> MilvusClient:
    """A client for ``location``'s URI. A Milvus Lite file must exist unless ``create``; its folder must exist."""
    require_lite(location)
    if location.lite:
        path = Path(location.uri)
        if not path.parent.is_dir():
            raise MissingPath(f"the folder {path.parent} of the Milvus Lite file {path} does not exist")
        if path.exists() and not path.is_dir():
            raise InvalidInput(f"{path} is a file, not a Milvus Lite database (a folder since Milvus Lite 3; files of "
                               "earlier versions cannot be read by it)")
        if not create and not path.exists():
            raise MissingPath(f"the Milvus Lite file {path} does not exist (build it with `lame index build "
                              f"--backend milvus --uri {path}`)")
    token = "" if location.lite else os.environ.get(TOKEN_ENV, "")
    # Milvus Lite's in-process gRPC server keeps gRPC's default ping policy (a ping at most every 5
    # minutes) and answers pymilvus's 10 s keepalive with GOAWAY "too_many_pings" while a long call
    # (an index built at load) runs; on loopback no keepalive is needed
    options = {"grpc_options": LITE_GRPC_OPTIONS} if location.lite else {}
    try:
        with milvus_call(location, "connecting"):
            return MilvusClient(uri=location.uri, token=token, timeout=timeout, **options)
    except UserError as exc:
        if location.lite and _locked_elsewhere(Path(location.uri)):
            raise MilvusUnavailable(
                f"the Milvus Lite file {location.uri} is open in another process (Milvus Lite lets one process "
                f"use a file): stop that process, or run `milvus-lite server --data-dir {location.uri}` and use "
                "its http://127.0.0.1:19530 URI from every process") from exc
        raise


def _locked_elsewhere(path: Path) -> bool:
    """Whether another process holds Milvus Lite's lock on ``path`` (only asked after opening it failed)."""
    lock = path / "LOCK"
    try:
        import fcntl
    except ImportError:  # Windows: cannot tell
        return False
    if not lock.is_file():
        return False
    with open(lock, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False
