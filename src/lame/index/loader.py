"""One way to open an index, whatever its backend: a FAISS folder or a Milvus ``URI[#COLLECTION]``."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInput
from .base import SearchIndex
from .location import milvus_location
from .settings import IndexBuildSettings


def open_index(index: str | Path, collection: str | None = None, **options) -> SearchIndex:
    """The index at ``index``: a folder written by ``lame index build`` (FAISS), or a Milvus collection
    (a ``.db`` file or ``http(s)://host:19530``, with ``#NAME`` or ``collection``). ``options`` go to
    :meth:`VectorIndex.load <lame.index.VectorIndex.load>` (``mmap``) or :meth:`MilvusIndex.open
    <lame.index.MilvusIndex.open>` (``timeout``)."""
    location = milvus_location(index, collection)
    if location is None:
        if collection is not None:
            raise InvalidInput(f"a collection ({collection!r}) is for a Milvus URI; {index} is an index folder")
        from .vector_index import VectorIndex

        return VectorIndex.load(index, **options)
    from .milvus_index import MilvusIndex

    return MilvusIndex.open(location, **options)


def build_index(embeddings, settings: IndexBuildSettings, show_progress: bool = True) -> SearchIndex | None:
    """``lame index build``: a FAISS folder or a Milvus collection over ``embeddings`` (a ``lame encode``
    folder), as ``settings`` say; None when a Milvus build stopped at ``max_batches``."""
    settings.check_backend()
    if settings.backend == "faiss":
        from .vector_index import VectorIndex

        return VectorIndex.build(embeddings, settings.output, kind=settings.kind, nlist=settings.nlist, m=settings.m,
                                 ef_construction=settings.ef_construction, shard_size=settings.shard_size)
    from .milvus_build import build_milvus_index

    return build_milvus_index(embeddings, settings.uri, settings.collection, kind=settings.kind, nlist=settings.nlist,
                              m=settings.m, ef_construction=settings.ef_construction, batch_size=settings.batch_size,
                              overwrite=settings.overwrite, max_batches=settings.max_batches,
                              show_progress=show_progress)
