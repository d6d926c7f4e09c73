"""Vector search over embedded corpora with FAISS: exact, IVF and HNSW, sharded."""

from .kinds import KINDS
from .query import format_hits, query_item, search
from .vector_index import VectorIndex

__all__ = ["KINDS", "VectorIndex", "format_hits", "query_item", "search"]
