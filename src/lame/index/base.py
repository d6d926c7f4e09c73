"""What every index backend offers (:class:`SearchIndex`), and the model check they share.

A search index holds the unit vectors of one embedded corpus with their ids, and records the model
that embedded them (path and fingerprint), the dimension and the corpus file, in ``manifest``. FAISS
folders (:class:`~lame.index.VectorIndex`) and Milvus collections (:class:`~lame.index.MilvusIndex`)
both implement it; :func:`lame.index.open_index` opens either from one argument.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidInput


@runtime_checkable
class SearchIndex(Protocol):
    """An index of one embedded corpus, searched by cosine similarity (FAISS folder or Milvus collection)."""

    kind: str  # flat, ivf or hnsw
    dim: int
    model: str | None  # the path of the model that embedded the corpus
    model_fingerprint: str | None
    num_reason_tokens: int | None  # the reason tokens the documents were embedded with (None: unknown)
    corpus: str | None  # the JSONL the vectors were embedded from
    manifest: dict  # everything recorded at build time (kind, dim, count, model, corpus, corpus_bytes, ...)

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, list[list[Any]]]:
        """Top ``k``: ``scores`` (n, k) float32 cosine similarities, best first, and ``ids`` (n lists);
        fewer than ``k`` hits leave ``-inf`` scores and ``None`` ids at the end of a row."""

    def check_model(self, model) -> str | None:
        """Refuses a model whose embeddings are not what the index holds; a note when it cannot tell."""

    def query_dimensions(self, dimensions: int | None = None) -> int:
        """The size queries are embedded at (the index's); another ``dimensions`` is refused."""


def check_model(index: SearchIndex, model, what: str = "the index", require_fingerprint: bool = False) -> str | None:
    """The check behind every backend's ``check_model``: refuses (:class:`~lame.errors.InvalidInput`)
    another dimension or another model than the one ``index`` records. An index that records no
    fingerprint gets a note back, or with ``require_fingerprint`` an error."""
    sizes = getattr(model, "dimension_choices", [model.embedding_dim])  # an elastic model gives several
    if index.dim not in sizes:
        made = " or ".join(map(str, sizes))
        raise InvalidInput(f"{what} holds {index.dim}-dimensional vectors but the model makes {made}-dimensional "
                           "embeddings: use the model that encoded the corpus, or rebuild the index with this one")
    if index.model_fingerprint is None:
        message = (f"{what} does not record which model built it, so it cannot be checked against this one; "
                   "rebuild it (lame encode, lame index build) to have it checked")
        if require_fingerprint:
            raise InvalidInput(message)
        return message
    found = model.fingerprint()
    if found != index.model_fingerprint:
        built = f" ({index.model})" if index.model else ""
        raise InvalidInput(f"the index was built from another model{built} than this one: model fingerprint "
                           f"{index.model_fingerprint[:19]}... in the index, {found[:19]}... for this model; "
                           "its neighbours would be wrong. Use the model that encoded the corpus, or re-encode "
                           "the corpus with this model and rebuild the index")
    return None


def query_dimensions(index: SearchIndex, dimensions: int | None = None) -> int:
    """The size queries are embedded at: the index's own; another ``dimensions`` is refused (a query
    with any of the model's numbers of reason tokens shares the documents' space, another size does not)."""
    if dimensions is not None and dimensions != index.dim:
        raise InvalidInput(f"dimensions={dimensions}: the index holds {index.dim}-dimensional vectors, so queries "
                           f"are embedded at {index.dim} too; build an index from embeddings of size {dimensions} "
                           "to search at that size")
    return index.dim


def query_matrix(queries, dim: int) -> np.ndarray:
    """Queries as unit rows of a float32 (n, ``dim``) matrix: one vector of size ``dim`` or n of them.
    Another width is refused, never reshaped: (n, 2d) queries are not 2n queries of size d (a Matryoshka
    index built with ``--dimensions d`` searched with full-size queries is the usual way to get here)."""
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise InvalidInput(f"queries of shape {tuple(queries.shape)}: the index holds {dim}-dimensional vectors, "
                           f"so it searches one vector of size {dim} or an (n, {dim}) array; embed the queries "
                           f"at the index's size (dimensions={dim})")
    return normalized(queries)


def padded(scores: list[list[float]], ids: list[list[Any]], k: int) -> tuple[np.ndarray, list[list[Any]]]:
    """Rows of up to ``k`` hits as a (n, k) float32 array and n id lists, short rows filled with -inf / None."""
    array = np.full((len(scores), k), -np.inf, dtype=np.float32)
    for row, values in zip(array, scores):
        row[:len(values)] = values
    return array, [list(row) + [None] * (k - len(row)) for row in ids]


def default_nlist(count: int) -> int:
    """IVF lists: about 4 sqrt(n), with at least 39 training points per list (FAISS's own rule)."""
    return max(1, min(int(4 * math.sqrt(max(count, 1))), count // 39))


def normalized(vectors: np.ndarray) -> np.ndarray:
    """A float32 C-contiguous copy of ``vectors`` with rows of unit length (zero rows stay zero), as FAISS's
    ``normalize_L2`` makes them."""
    vectors = np.array(vectors, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors
