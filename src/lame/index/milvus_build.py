"""Building a Milvus collection from ``lame encode`` output: streamed in batches, resumable, refused
where it would mix builds.

Each batch of ``batch_size`` vectors is one insert; the corpus is never held whole. A killed build
is run again with the same arguments: the collection's rows are counted, the batch that may have been
cut short is written again with ``upsert`` (the id is the primary key, so a row already there is
replaced, never doubled) and the rest is inserted. ``complete`` is set in the collection's manifest
only after the final flush and a count that matches the embeddings.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import InvalidInput
from .base import default_nlist, normalized
from .location import MilvusLocation, milvus_location
from .milvus_client import (DEFAULT_TIMEOUT_S, DataType, MilvusClient, MilvusUnavailable, connect, milvus_call,
                            require_lite)
from .milvus_index import (FORMAT_VERSION, ID_FIELD, MAX_ID_CHARS, PROPERTY, VECTOR_FIELD, MilvusIndex, count_rows,
                           index_params, read_collection)
from .settings import KINDS
from .source import EmbeddingSource

# what must agree for a build to resume into an existing collection
SAME_BUILD = ("dim", "count", "kind", "model_fingerprint", "num_reason_tokens", "embeddings", "arrays", "nlist", "m",
              "ef_construction")


def build_milvus_index(embeddings, uri: str | Path | MilvusLocation, collection: str | None = None, kind: str = "flat",
                       nlist: int | None = None, m: int = 32, ef_construction: int = 80, nprobe: int = 16,
                       ef_search: int = 64, batch_size: int = 1000, overwrite: bool = False,
                       corpus: str | Path | None = None, model_fingerprint: str | None = None,
                       num_reason_tokens: int | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                       max_batches: int | None = None, show_progress: bool = True) -> MilvusIndex | None:
    """Indexes a ``lame encode`` folder (or an ``(embeddings, ids)`` pair) into a Milvus collection.

    ``uri``: a ``.db`` file (Milvus Lite) or a server address, ``#NAME`` or ``collection`` naming the
    collection (default ``lame``). An existing collection of the same build is resumed (or, complete,
    returned as it is); one of another build, another dimension or not built by lame is refused, or
    with ``overwrite`` dropped first. ``max_batches`` stops after that many new batches (returns None;
    run again to go on). ``timeout``: seconds one call may take, retries included (flushing and indexing
    have none). The other arguments are :meth:`VectorIndex.build <lame.index.VectorIndex.build>`'s.
    """
    location = uri if isinstance(uri, MilvusLocation) else milvus_location(uri, collection)
    if location is None:
        raise InvalidInput(f"{uri} is not a Milvus URI: a local .db file, or http(s)://host:19530")
    require_lite(location)
    if kind not in KINDS:
        raise InvalidInput(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
    source = EmbeddingSource.open(embeddings)
    if source.count == 0:
        raise InvalidInput("nothing to index: the embeddings hold no vectors")
    source.check_unique_ids()
    _check_id_lengths(source)
    manifest = {"format": FORMAT_VERSION, "backend": "milvus", "kind": kind, "metric": "cosine", "dim": source.dim,
                "count": source.count, **source.provenance(corpus, model_fingerprint, num_reason_tokens),
                "arrays": _digest(source) if source.name is None else None,
                "nlist": (nlist or default_nlist(source.count)) if kind == "ivf" else None,
                "m": m if kind == "hnsw" else None, "ef_construction": ef_construction if kind == "hnsw" else None,
                "nprobe": nprobe, "ef_search": ef_search, "batch_size": batch_size, "complete": False}
    client = connect(location, timeout, create=True)
    try:
        if not _build(client, location, source, manifest, overwrite, max_batches, show_progress, timeout):
            return None
    finally:
        client.close()  # the index returned below opens its own
    return MilvusIndex.open(location, timeout=timeout)


def _build(client, location: MilvusLocation, source: EmbeddingSource, manifest: dict, overwrite: bool,
           max_batches: int | None, show_progress: bool, timeout: float) -> bool:
    """Prepares, resumes or finishes the collection's build; False when ``max_batches`` stopped it early."""
    manifest = _prepare(client, location, manifest, overwrite, timeout)
    if manifest["complete"]:
        return True
    written = count_rows(client, location, timeout)
    if location.lite:  # released, Milvus Lite indexes no segment before the last flush (it merges them meanwhile)
        with milvus_call(location, f"releasing {location} while it is written"):
            client.release_collection(location.collection, timeout=timeout)
    if not _write(client, location, source, manifest, written, max_batches, show_progress, timeout):
        return False
    _flush_and_index(client, location, source.count, show_progress, timeout)
    found = count_rows(client, location, timeout)
    if found != source.count:
        raise InvalidInput(f"{location} holds {found} vectors after the build, not the {source.count} embedded: "
                           "something else writes to it; rebuild it with --overwrite")
    manifest["complete"] = True
    with milvus_call(location, f"recording the finished build in {location}"):
        client.alter_collection_properties(location.collection, properties={PROPERTY: json.dumps(manifest)},
                                           timeout=timeout)
    return True


def _digest(source: EmbeddingSource) -> str:
    """What tells in-memory arrays apart (they have no folder): a hash of their vectors and ids."""
    digest = hashlib.sha256()
    for vectors, ids in source:
        digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
        digest.update(json.dumps(ids).encode())
    return "sha256:" + digest.hexdigest()


def _check_id_lengths(source: EmbeddingSource) -> None:
    for _, ids in source:
        for record_id in ids:
            if len(json.dumps(record_id)) > MAX_ID_CHARS:
                raise InvalidInput(f"the id {str(record_id)[:40]!r}... is {len(json.dumps(record_id))} characters "
                                   f"as JSON; Milvus keeps ids of at most {MAX_ID_CHARS}")


def _prepare(client: MilvusClient, location: MilvusLocation, manifest: dict, overwrite: bool, timeout: float) -> dict:
    """The manifest the build goes on with: a new collection's, or an existing one's of the same build."""
    with milvus_call(location, f"looking for {location}"):
        exists = client.has_collection(location.collection, timeout=timeout)
    if exists and overwrite:
        with milvus_call(location, f"dropping {location} (--overwrite)"):
            client.drop_collection(location.collection, timeout=timeout)
    elif exists:
        found, dim = read_collection(client, location, timeout)
        dim = found["dim"] if found else dim
        if dim is not None and dim != manifest["dim"]:
            raise InvalidInput(f"{location} holds {dim}-dimensional vectors but the embeddings are "
                               f"{manifest['dim']}-dimensional: choose another --collection, or --overwrite to "
                               "replace it")
        if found is None:
            raise InvalidInput(f"{location} already exists and was not built by `lame index build` (it has no lame "
                               "build record): choose another --collection, or --overwrite to replace it")
        differs = [key for key in SAME_BUILD if found.get(key) != manifest[key]]
        if differs:
            shown = "; ".join(f"{key} {found.get(key)!r} there, {manifest[key]!r} now" for key in differs[:3])
            raise InvalidInput(f"{location} holds another build ({shown}): choose another --collection, or "
                               "--overwrite to replace it")
        return {**manifest, "batch_size": found["batch_size"], "complete": bool(found.get("complete"))}
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_CHARS)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=manifest["dim"])
    indexes = client.prepare_index_params()
    indexes.add_index(field_name=VECTOR_FIELD, index_name=VECTOR_FIELD, **index_params(manifest))
    with milvus_call(location, f"creating {location}"):
        client.create_collection(location.collection, schema=schema, index_params=indexes,
                                 properties={PROPERTY: json.dumps(manifest)}, timeout=timeout)
    return manifest


def _flush_and_index(client: MilvusClient, location: MilvusLocation, total: int, show_progress: bool,
                     timeout: float, poll_s: float = 2.0) -> None:
    """Seals every written vector into segments and returns once they are all indexed, so that the
    first search is as fast as the rest. Milvus Lite (released while written) builds its segments'
    indexes inside ``load``; a server builds them in the background, watched here through
    ``describe_index``. Flushing and indexing have no time limit (hours for a large corpus); each
    watching call has ``timeout``."""
    if location.lite:
        with milvus_call(location, f"flushing and indexing {location}"):
            client.flush(location.collection)
            client.load_collection(location.collection)
        return
    with milvus_call(location, f"flushing {location}"):
        client.flush(location.collection)
    with tqdm(total=total, unit="vector", desc=f"index {location.collection}", disable=not show_progress) as bar:
        while True:
            with milvus_call(location, f"watching the index of {location} being built"):
                info = client.describe_index(location.collection, VECTOR_FIELD, timeout=timeout) or {}
            if info.get("state") == "Failed":
                raise InvalidInput(f"Milvus could not build the index of {location}: "
                                   f"{info.get('index_state_fail_reason') or 'no reason given'}")
            bar.update(max(0, int(info.get("indexed_rows", 0)) - bar.n))
            if info.get("state") == "Finished" and not info.get("pending_index_rows"):
                return
            time.sleep(poll_s)


def _write(client: MilvusClient, location: MilvusLocation, source: EmbeddingSource, manifest: dict, written: int,
           max_batches: int | None, show_progress: bool, timeout: float) -> bool:
    """Writes the vectors from the batch holding row ``written`` on; False when ``max_batches`` stopped it."""
    batch_size = manifest["batch_size"]
    start = min(written, source.count) // batch_size * batch_size  # this batch may be cut short: upserted again
    done = 0
    with tqdm(total=source.count, initial=start, unit="vector", desc=f"milvus {location.collection}",
              disable=not show_progress) as bar:
        for first, vectors, ids in source.batches(batch_size, start):
            if max_batches is not None and done >= max_batches:
                with milvus_call(location, f"flushing {location}"):
                    client.flush(location.collection)
                return False
            rows = [{ID_FIELD: json.dumps(i), VECTOR_FIELD: v} for i, v in zip(ids, normalized(vectors))]
            write = client.upsert if first < written else client.insert
            try:
                with milvus_call(location, f"writing vectors {first}..{first + len(ids) - 1} into {location}"):
                    write(location.collection, rows, timeout=timeout)
            except MilvusUnavailable as exc:
                raise MilvusUnavailable(f"{exc}; the first {first} of {source.count} vectors are written: run the "
                                        "same command again to resume") from exc
            bar.update(len(ids))
            done += 1
    return True
