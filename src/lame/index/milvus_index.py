"""MilvusIndex: an embedded corpus in a Milvus collection (Milvus Lite file, server or cluster), with its ids.

The collection has two fields: ``id``, the record's id as JSON text (so ``1`` and ``"1"`` stay apart and
come back as they were), the primary key; and ``vector``, the unit-length embedding. Its index is FLAT,
IVF_FLAT or HNSW on inner product (cosine on unit vectors), as the FAISS kinds. What the FAISS
``index.json`` records (kind, dim, count, model and fingerprint, the documents' reason tokens, embeddings,
corpus, search defaults)
is the collection property ``lame.index``, as JSON; ``complete`` is true once every vector is in.
Build with :func:`lame.index.milvus_build.build_milvus_index`; open with :meth:`MilvusIndex.open` or
:func:`lame.index.open_index`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput, MissingPath
from .base import check_model, padded, query_dimensions, query_matrix
from .location import MilvusLocation, milvus_location
from .milvus_client import DEFAULT_TIMEOUT_S, MilvusClient, connect, milvus_call

PROPERTY = "lame.index"
FORMAT_VERSION = 1
ID_FIELD, VECTOR_FIELD = "id", "vector"
MAX_ID_CHARS = 65_535  # Milvus's longest VARCHAR: the JSON text of an id
MAX_K = 16_384  # Milvus's largest top-k
QUERY_BATCH = 1024  # queries per search call
INDEX_TYPES = {"flat": "FLAT", "ivf": "IVF_FLAT", "hnsw": "HNSW"}


def index_params(manifest: dict) -> dict:
    """The Milvus index of a kind: type, metric and build parameters."""
    params = {"ivf": {"nlist": manifest.get("nlist")},
              "hnsw": {"M": manifest.get("m"), "efConstruction": manifest.get("ef_construction")}}
    kind = manifest["kind"]
    return {"index_type": INDEX_TYPES[kind], "metric_type": "IP", "params": params.get(kind, {})}


def search_params(manifest: dict, k: int, nprobe: int | None = None, ef_search: int | None = None) -> dict:
    """What a search asks for: nprobe lists (IVF) or ef candidates, at least k (HNSW), as FAISS does."""
    kind = manifest["kind"]
    if kind == "ivf":
        return {"metric_type": "IP", "params": {"nprobe": min(nprobe or manifest["nprobe"], manifest["nlist"])}}
    if kind == "hnsw":
        return {"metric_type": "IP", "params": {"ef": max(ef_search or manifest["ef_search"], k)}}
    return {"metric_type": "IP", "params": {}}


def read_collection(client: MilvusClient, location: MilvusLocation,
                    timeout: float = DEFAULT_TIMEOUT_S) -> tuple[dict | None, int | None]:
    """``(the lame manifest or None, the dimension of the collection's vector field or None)``."""
    with milvus_call(location, f"reading {location}"):
        described = client.describe_collection(location.collection, timeout=timeout)
    dims = [int(f["params"]["dim"]) for f in described.get("fields", []) if "dim" in (f.get("params") or {})]
    raw = (described.get("properties") or {}).get(PROPERTY)
    if raw is None:
        return None, dims[0] if dims else None
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{location}: its {PROPERTY!r} property is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or "dim" not in manifest or "kind" not in manifest:
        raise InvalidInput(f"{location}: its {PROPERTY!r} property does not record a lame index (kind, dim)")
    return manifest, dims[0] if dims else None


def count_rows(client: MilvusClient, location: MilvusLocation, timeout: float = DEFAULT_TIMEOUT_S) -> int:
    """The vectors the collection holds now (strong consistency: every write so far is counted); loads
    the collection first (a restarted server holds it released; loading has no time limit)."""
    with milvus_call(location, f"counting the vectors of {location}"):
        client.load_collection(location.collection)
        rows = client.query(location.collection, filter="", output_fields=["count(*)"], consistency_level="Strong",
                            timeout=timeout)
    return int(rows[0]["count(*)"])


def _checked_manifest(client, location: MilvusLocation, timeout: float) -> dict:
    """The build record of a collection that exists, was built by lame, is unchanged since and complete."""
    with milvus_call(location, f"opening {location}"):
        exists = client.has_collection(location.collection, timeout=timeout)
        names = [] if exists else client.list_collections(timeout=timeout)
    if not exists:
        there = f" (it has: {', '.join(sorted(names))})" if names else " (it has none)"
        raise MissingPath(f"there is no collection {location.collection!r} at {location.uri}{there}: build it "
                          f"with `lame index build --backend milvus --uri {location.uri} --collection "
                          f"{location.collection}`, or name another as URI#COLLECTION")
    manifest, dim = read_collection(client, location, timeout)
    if manifest is None:
        raise InvalidInput(f"{location} was not built by `lame index build`: it records no model fingerprint, "
                           "dimension or corpus, so it cannot be checked against a model; build a collection from "
                           "`lame encode` output with `lame index build --backend milvus`")
    if dim is not None and dim != manifest["dim"]:
        raise InvalidInput(f"{location} holds {dim}-dimensional vectors but records {manifest['dim']}: it was "
                           "changed after `lame index build`; rebuild it")
    if not manifest.get("complete"):
        raise InvalidInput(f"{location} is an unfinished build ({count_rows(client, location, timeout)} of "
                           f"{manifest['count']} vectors): run the same `lame index build` again to finish it")
    return manifest


class MilvusIndex:
    """A Milvus collection built by ``lame index build --backend milvus``: search it like a
    :class:`~lame.index.VectorIndex` (same scores, ids and padding)."""

    def __init__(self, client: MilvusClient, location: MilvusLocation, manifest: dict,
                 timeout: float = DEFAULT_TIMEOUT_S):
        self.client, self.location, self.manifest, self.timeout = client, location, manifest, timeout
        self.kind: str = manifest["kind"]
        self.dim: int = manifest["dim"]
        self.model: str | None = manifest.get("model")
        self.model_fingerprint: str | None = manifest.get("model_fingerprint")
        self.num_reason_tokens: int | None = manifest.get("num_reason_tokens")  # the documents' k (None: unknown)
        self.corpus: str | None = manifest.get("corpus")

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def __repr__(self) -> str:
        return f"MilvusIndex({self.kind}, {len(self)} vectors of dim {self.dim}, {self.location})"

    @classmethod
    def open(cls, location: str | Path | MilvusLocation, collection: str | None = None,
             timeout: float = DEFAULT_TIMEOUT_S) -> "MilvusIndex":
        """Opens a collection built by ``lame index build --backend milvus`` (``location``: ``URI[#NAME]``).
        Refuses a collection that is missing, was not built by lame, or is an unfinished build. ``timeout``:
        seconds one call may take, retries included (loading the collection has no limit)."""
        if not isinstance(location, MilvusLocation):
            found = milvus_location(location, collection)
            if found is None:
                raise InvalidInput(f"{location} is not a Milvus URI (a .db file or http(s)://host:19530)")
            location = found
        client = connect(location, timeout)
        try:
            manifest = _checked_manifest(client, location, timeout)
            with milvus_call(location, f"loading {location}"):
                client.load_collection(location.collection)
        except BaseException:
            client.close()  # a refused collection leaves no connection open
            raise
        return cls(client, location, manifest, timeout)

    def check_model(self, model) -> str | None:
        """Refuses (:class:`~lame.errors.InvalidInput`) another dimension or another model than the one
        recorded, and a collection that records no model fingerprint (it could not be checked)."""
        return check_model(self, model, what=str(self.location), require_fingerprint=True)

    def query_dimensions(self, dimensions: int | None = None) -> int:
        """The size queries are embedded at: the collection's own; another ``dimensions`` is refused."""
        return query_dimensions(self, dimensions)

    def search(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None,
               ef_search: int | None = None) -> tuple[np.ndarray, list[list[Any]]]:
        """Top ``k``: ``scores`` (n, k) float32, best first, and ``ids`` (n lists), as
        :meth:`VectorIndex.search <lame.index.VectorIndex.search>` (-inf / None past the last hit)."""
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}")  # FAISS's words: --k fails alike on both backends
        if k > MAX_K:
            raise InvalidInput(f"k must be at most {MAX_K} (Milvus's largest top-k), got {k}")
        queries = query_matrix(queries, self.dim)
        params = search_params(self.manifest, k, nprobe, ef_search)
        scores: list[list[float]] = []
        ids: list[list[Any]] = []
        for start in range(0, len(queries), QUERY_BATCH):
            with milvus_call(self.location, f"searching {self.location}"):
                rows = self.client.search(self.location.collection, data=queries[start:start + QUERY_BATCH],
                                          limit=k, anns_field=VECTOR_FIELD, search_params=params,
                                          output_fields=[ID_FIELD], timeout=self.timeout)
            for hits in rows:
                scores.append([hit["distance"] for hit in hits])
                ids.append([json.loads(hit["id"]) for hit in hits])
        return padded(scores, ids, k)

    def close(self) -> None:
        """Closes the connection to Milvus; the index cannot search afterwards."""
        self.client.close()
