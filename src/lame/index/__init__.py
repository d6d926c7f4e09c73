"""Vector search over embedded corpora with FAISS: exact, IVF and HNSW, sharded."""

from ..extras import require

# before the submodules import them: a missing one is an error naming the extra
require("faiss", extra="index", feature="lame index/search")

from .items import CorpusItems
from .kinds import KINDS
from .query import format_hits, query_item, search
from .vector_index import VectorIndex

__all__ = ["KINDS", "CorpusItems", "VectorIndex", "format_hits", "query_item", "search"]
