"""Where an index lives: a FAISS folder, or a Milvus collection named by ``URI[#COLLECTION]``.

A Milvus URI is a local ``.db`` file (Milvus Lite, embedded in this process) or a server / cluster
address (``http://host:19530``, ``https://...``, ``tcp://...``; a database as its path,
``http://host:19530/mydb``). Anything else is an index folder. The collection is ``--collection``, or
the ``#NAME`` after the URI, else ``lame``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import InvalidInput
from .settings import DEFAULT_COLLECTION, TOKEN_ENV

FAISS_MANIFEST = "index.json"  # what makes a folder a FAISS index
SCHEMES = ("http", "https", "tcp")
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


@dataclass(frozen=True)
class MilvusLocation:
    """A Milvus collection: ``uri`` (a ``.db`` file or a server address) and ``collection``."""

    uri: str
    collection: str

    @property
    def lite(self) -> bool:
        """A local Milvus Lite file rather than a server."""
        return self.uri.endswith(".db")

    def __str__(self) -> str:
        return f"collection {self.collection!r} at {self.uri}"


def is_milvus_uri(text: str) -> bool:
    """Whether ``text`` names a Milvus collection (a server URL or a Milvus Lite ``.db`` file) rather than a
    FAISS index folder."""
    return "://" in text or text.endswith(".db")


def milvus_location(index: str | Path, collection: str | None = None) -> MilvusLocation | None:
    """The Milvus collection ``index`` names, or None for an index folder (FAISS). Refuses a bad
    collection name, a URI scheme pymilvus cannot use and credentials written into the URI."""
    text = str(index)
    uri, _, fragment = text.partition("#")
    if not is_milvus_uri(uri) or (Path(text) / FAISS_MANIFEST).is_file():
        return None
    if collection and fragment and collection != fragment:
        raise InvalidInput(f"two collections named: {fragment!r} in {text} and --collection {collection!r}")
    name = collection or fragment or DEFAULT_COLLECTION
    if not _COLLECTION_NAME.fullmatch(name):
        raise InvalidInput(f"{name!r} is not a Milvus collection name: letters, digits and underscores, not "
                           "starting with a digit, at most 255")
    if "://" in uri:
        parts = urlsplit(uri)
        if parts.scheme not in SCHEMES:
            raise InvalidInput(f"{uri}: a Milvus URI is a local .db file or {', '.join(s + '://' for s in SCHEMES)}"
                               "host:port")
        if parts.username or parts.password:
            raise InvalidInput(f"{parts.scheme}://{parts.hostname}...: do not write credentials into the URI (they "
                               f"would show in the process list and shell history); set ${TOKEN_ENV} instead")
    return MilvusLocation(uri, name)
