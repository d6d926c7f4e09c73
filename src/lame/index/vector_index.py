"""VectorIndex: a (possibly sharded) FAISS index over an embedded corpus, with its ids.

Building reads one embeddings shard at a time and cuts index shards of ``shard_size`` vectors, so a
corpus larger than memory never sits in memory whole; search runs every index shard and merges the
top k. Vectors and queries are L2-normalised, so scores are cosine similarities. Ids must be unique
(duplicates are refused before anything is written).

Saved folder::

    index.json               kind, dim, count, model and its fingerprint, the reason tokens its documents were
                             embedded with (num_reason_tokens), corpus (the JSONL it was embedded from),
                             search defaults, shards
    index-00000.faiss        one FAISS index per shard
    index-00000.ids.json     its ids, row for row
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..embed.shards import atomic_write_json
from ..errors import InvalidInput, MissingPath
from . import kinds
from .base import check_model, normalized, query_dimensions, query_matrix
from .kinds import faiss
from .location import FAISS_MANIFEST
from .source import EmbeddingSource

MANIFEST = FAISS_MANIFEST
FORMAT_VERSION = 1


@dataclass
class _Shard:
    index: faiss.Index
    ids: list


class VectorIndex:
    """Build with :meth:`build`, open a saved one with :meth:`load`, query with :meth:`search`."""

    def __init__(self, shards: list[_Shard], manifest: dict):
        self.shards = shards
        self.manifest = manifest
        self.kind: str = manifest["kind"]
        self.dim: int = manifest["dim"]
        self.model: str | None = manifest.get("model")
        self.corpus: str | None = manifest.get("corpus")  # the JSONL file the vectors were embedded from
        self.model_fingerprint: str | None = manifest.get("model_fingerprint")
        self.num_reason_tokens: int | None = manifest.get("num_reason_tokens")  # the documents' k (None: unknown)
        self._ids = [i for shard in shards for i in shard.ids]
        self._offsets = np.cumsum([0] + [len(s.ids) for s in shards])[:-1]

    def __len__(self) -> int:
        return len(self._ids)

    # ------------------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        embeddings: str | Path | tuple[np.ndarray, list],
        output: str | Path | None = None,
        kind: str = "flat",
        nlist: int | None = None,
        m: int = 32,
        shard_size: int | None = None,
        train_size: int | None = None,
        nprobe: int = 16,
        ef_search: int = 64,
        ef_construction: int = 80,
        seed: int = 0,
        corpus: str | Path | None = None,
        model_fingerprint: str | None = None,
        num_reason_tokens: int | None = None,
    ) -> "VectorIndex":
        """Indexes a folder written by ``lame encode`` (or an ``(embeddings, ids)`` pair).

        ``kind``: ``flat`` (exact), ``ivf`` (``nlist`` lists, trained on a random sample of
        ``train_size`` vectors) or ``hnsw`` (``m`` links per node). ``shard_size`` caps the vectors
        per index shard. With ``output`` each shard is written there as soon as it is full. The index
        records the corpus JSONL the vectors come from (``lame encode``'s input, or ``corpus``), so a hit's
        item can be shown (:class:`lame.index.CorpusItems`).
        ``model_fingerprint`` (:meth:`lame.LaMEModel.fingerprint`) names the model of in-memory
        embeddings; a ``lame encode`` folder carries its own, and the reason tokens its documents were
        embedded with (``num_reason_tokens`` for in-memory embeddings). The vectors' dimension is the
        size d they were embedded at.
        """
        source = EmbeddingSource.open(embeddings)
        if source.count == 0:
            raise InvalidInput("nothing to index: the embeddings hold no vectors")
        source.check_unique_ids()
        if kind not in kinds.KINDS:
            raise InvalidInput(f"unknown index kind {kind!r}; choose one of {', '.join(kinds.KINDS)}")
        if shard_size is not None and shard_size < 1:
            raise InvalidInput(f"shard_size must be >= 1, got {shard_size}")
        nlist = (nlist or kinds.default_nlist(source.count)) if kind == "ivf" else None
        template = kinds.new_index(kind, source.dim, nlist or 1, m, ef_construction)
        if kind == "ivf":
            kinds.train(template, source.sample(train_size or max(64 * nlist, 4096), seed), nlist)
        manifest = {"format": FORMAT_VERSION, "kind": kind, "metric": "cosine", "dim": source.dim,
                    "count": source.count, **source.provenance(corpus, model_fingerprint, num_reason_tokens),
                    "nlist": nlist,
                    "m": m if kind == "hnsw" else None, "nprobe": nprobe, "ef_search": ef_search,
                    "shard_size": shard_size, "shards": []}
        output = Path(output) if output is not None else None
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            for stale in [*output.glob("index-*.faiss"), *output.glob("index-*.ids.json"), output / MANIFEST]:
                stale.unlink(missing_ok=True)  # a previous build's shards (this build may have fewer)
        shards: list[_Shard] = []
        for number, pieces in _cut(source, shard_size or source.count):
            shard = _Shard(faiss.clone_index(template), [])
            for vectors, ids in pieces:
                shard.index.add(normalized(vectors))
                shard.ids += ids
            entry = {"index": f"index-{number:05d}.faiss", "ids": f"index-{number:05d}.ids.json",
                     "count": len(shard.ids)}
            manifest["shards"].append(entry)
            if output is None:
                shards.append(shard)
            else:  # written now and let go: only one shard is ever held in memory
                _write_shard(shard, output, entry)
        if output is None:
            return cls(shards, manifest)
        atomic_write_json(output / MANIFEST, manifest)
        return cls.load(output, mmap=True)

    # ------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, directory: str | Path, mmap: bool = False) -> "VectorIndex":
        """Opens a saved index; ``mmap=True`` maps the vectors from disk instead of reading them."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise MissingPath(f"{path} does not exist: not an index folder (build one with `lame index build`)")
        manifest = json.loads(path.read_text())
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        shards = [_Shard(faiss.read_index(str(directory / s["index"]), flags),
                         json.loads((directory / s["ids"]).read_text())) for s in manifest["shards"]]
        return cls(shards, manifest)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for shard, entry in zip(self.shards, self.manifest["shards"]):
            _write_shard(shard, directory, entry)
        atomic_write_json(directory / MANIFEST, self.manifest)

    def check_model(self, model) -> str | None:
        """Refuses (:class:`~lame.errors.InvalidInput`) a model whose embeddings are not what this index
        holds: a dimension it does not give (:attr:`lame.LaMEModel.dimension_choices`), or another model
        than the one recorded when it was built. Returns a note when the index records no model to
        compare with (older indexes, in-memory arrays)."""
        return check_model(self, model)

    def query_dimensions(self, dimensions: int | None = None) -> int:
        """The size queries are embedded at: the index's own; another ``dimensions`` is refused (a query
        with any of the model's numbers of reason tokens shares the documents' space, another size does not)."""
        return query_dimensions(self, dimensions)

    # ------------------------------------------------------------------------------ searching
    def search(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None,
               ef_search: int | None = None) -> tuple[np.ndarray, list[list[Any]]]:
        """Top ``k`` over every shard: ``scores`` (n, k) float32, best first, and ``ids`` (n lists).

        Fewer than ``k`` hits (a small corpus, an approximate index) leave ``-inf`` scores and
        ``None`` ids at the end of a row.
        """
        if k < 1:
            raise InvalidInput(f"k must be >= 1, got {k}")
        queries = query_matrix(queries, self.dim)
        nprobe = nprobe or self.manifest["nprobe"]
        ef_search = ef_search or self.manifest["ef_search"]
        all_scores, all_rows = [], []
        for shard, offset in zip(self.shards, self._offsets):
            kinds.set_search_params(shard.index, k, nprobe, ef_search)
            scores, rows = shard.index.search(queries, min(k, shard.index.ntotal))
            all_scores.append(scores)
            all_rows.append(np.where(rows >= 0, rows + offset, -1))
        scores, rows = np.concatenate(all_scores, axis=1), np.concatenate(all_rows, axis=1)
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
        if scores.shape[1] < k:
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        ids = [[self._ids[r] if r >= 0 else None for r in row] for row in rows.tolist()]
        return scores, ids


def _write_shard(shard: _Shard, directory: Path, entry: dict) -> None:
    tmp = directory / f".tmp-{entry['index']}-{os.getpid()}"
    faiss.write_index(shard.index, str(tmp))
    os.replace(tmp, directory / entry["index"])
    atomic_write_json(directory / entry["ids"], shard.ids)


def _cut(source: EmbeddingSource, shard_size: int) -> Iterator[tuple[int, Iterator[tuple[np.ndarray, list]]]]:
    """Re-cuts the source into index shards of ``shard_size`` vectors: ``(number, pieces)`` where
    the pieces (slices of the source's shards) must be consumed before the next shard is asked for."""
    stream = _slices(source, shard_size)
    pending = next(stream, None)
    number = 0
    while pending is not None:
        def pieces():
            nonlocal pending
            while pending is not None and pending[0] == number:
                yield pending[1], pending[2]
                pending = next(stream, None)

        yield number, pieces()
        number += 1


def _slices(source: EmbeddingSource, shard_size: int) -> Iterator[tuple[int, np.ndarray, list]]:
    """``(index shard number, vectors, ids)`` slices of the source, in order."""
    position = 0
    for vectors, ids in source:
        start = 0
        while start < len(ids):
            number = position // shard_size
            take = min((number + 1) * shard_size - position, len(ids) - start)
            yield number, np.asarray(vectors[start:start + take], dtype=np.float32), ids[start:start + take]
            start += take
            position += take
