"""The FAISS index kinds: exact inner product, IVF and HNSW, all on inner product (cosine on unit vectors)."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput
from ..extras import require
from .base import default_nlist  # noqa: F401  (the IVF rule both backends use)
from .settings import KINDS

faiss = require("faiss", extra="index", feature="a FAISS index (lame index build --backend faiss, lame search)")


def new_index(kind: str, dim: int, nlist: int = 1, m: int = 32, ef_construction: int = 80) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "ivf":
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        return index
    raise InvalidInput(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


def train(index: faiss.Index, sample: np.ndarray, nlist: int) -> None:
    """IVF needs its coarse centroids before anything is added; flat and HNSW need nothing."""
    if index.is_trained:
        return
    if len(sample) < nlist:
        raise InvalidInput(f"IVF with nlist={nlist} needs at least {nlist} vectors to train on, got {len(sample)}")
    index.train(sample)


def set_search_params(index: faiss.Index, k: int, nprobe: int, ef_search: int) -> None:
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(nprobe, index.nlist)
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(ef_search, k)
