"""Vector search over embedded corpora: FAISS folders (exact, IVF, HNSW, sharded) and Milvus collections
(Milvus Lite files, servers, clusters), opened alike by :func:`open_index`.

:class:`IndexBuildSettings` needs nothing beyond the core install (``lame --help`` lists its options);
:class:`VectorIndex` needs the ``index`` extra and :class:`MilvusIndex` the ``milvus`` extra, and either
asked for without it is an error naming the extra (their modules ``require`` it).
"""

from .._lazy import lazy_exports

_EXPORTS = {"IndexBuildSettings": "settings", "KINDS": "settings", "SearchIndex": "base", "open_index": "loader",
            "build_index": "loader", "CorpusItems": "items", "format_hits": "query", "query_item": "query",
            "search": "query", "VectorIndex": "vector_index", "MilvusIndex": "milvus_index",
            "build_milvus_index": "milvus_build"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
