"""The embeddings an index is built from: a ``lame encode`` folder read one shard at a time, or arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..embed.shards import EmbeddingShards
from ..errors import InvalidInput
from .base import normalized


class EmbeddingSource:
    """Embeddings to index: a ``lame encode`` folder, read one shard at a time, or arrays in memory."""

    def __init__(self, shards: Iterable[tuple[np.ndarray, list]], counts: list[int], dim: int,
                 model: str | None, name: str | None, fingerprint: str | None = None):
        self._shards, self.counts, self.dim, self.model, self.name = shards, counts, dim, model, name
        self.fingerprint = fingerprint
        self.num_reason_tokens: int | None = None  # what `lame encode` embedded the documents with
        self.count = sum(counts)
        self.corpus: str | None = None  # the corpus JSONL `lame encode` read, and its size then
        self.corpus_bytes: int | None = None

    @classmethod
    def open(cls, embeddings) -> "EmbeddingSource":
        if isinstance(embeddings, tuple):
            vectors, ids = embeddings
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim != 2 or len(vectors) != len(ids):
                raise InvalidInput(f"embeddings {vectors.shape} and {len(ids)} ids do not match")
            return cls([(vectors, list(ids))], [len(ids)], vectors.shape[1], None, None)
        store = EmbeddingShards(embeddings)
        source = cls(store, store.counts, store.dim, store.model, str(Path(embeddings).resolve()),
                     store.model_fingerprint)
        source.corpus, source.corpus_bytes = store.manifest.get("input"), store.manifest.get("input_bytes")
        source.num_reason_tokens = store.manifest.get("num_reason_tokens")
        return source

    def provenance(self, corpus: str | Path | None = None, model_fingerprint: str | None = None,
                   num_reason_tokens: int | None = None) -> dict:
        """What an index records of where its vectors come from: the embedding model (path, fingerprint),
        the reason tokens the documents were embedded with, the embeddings folder and the corpus file with
        its size. What ``lame encode`` recorded wins; the arguments fill in for arrays, which record none."""
        return {"model": self.model, "model_fingerprint": self.fingerprint or model_fingerprint,
                "num_reason_tokens": self.num_reason_tokens if self.num_reason_tokens is not None
                else num_reason_tokens, "embeddings": self.name,
                "corpus": str(Path(corpus).resolve()) if corpus is not None else self.corpus,
                "corpus_bytes": Path(corpus).stat().st_size if corpus is not None else self.corpus_bytes}

    def __iter__(self) -> Iterator[tuple[np.ndarray, list]]:
        return iter(self._shards)

    def batches(self, size: int, start: int = 0) -> Iterator[tuple[int, np.ndarray, list]]:
        """``(first row, vectors, ids)`` of ``size`` rows each (the last may be shorter), from row ``start``
        on; one source shard is read at a time, and shards wholly before ``start`` are not read at all."""
        parts: list[np.ndarray] = []
        pending: list = []
        position, offset = start, 0
        for count, read in zip(self.counts, self._readers()):
            start_of_shard, offset = offset, offset + count
            if offset <= start:
                continue
            vectors, ids = read()
            begin = max(start - start_of_shard, 0)
            while begin < count:
                take = min(size - len(pending), count - begin)
                parts.append(np.asarray(vectors[begin:begin + take], dtype=np.float32))
                pending += ids[begin:begin + take]
                begin += take
                if len(pending) == size:
                    yield position, np.concatenate(parts), pending
                    position += size
                    parts, pending = [], []
        if pending:
            yield position, np.concatenate(parts), pending

    def _readers(self) -> Iterator[Callable[[], tuple[np.ndarray, list]]]:
        """A function reading each shard, so that a skipped shard is never read."""
        if isinstance(self._shards, EmbeddingShards):
            yield from (shard.read for shard in self._shards.shards)
        else:
            yield from ((lambda pair=pair: pair) for pair in self._shards)

    def check_unique_ids(self) -> None:
        """Refuses duplicate ids (a search hit must name one vector): ids compare as JSON values."""
        first: dict[tuple[str, Any], int] = {}
        duplicates: list[str] = []
        count = row = 0
        for _, ids in self:
            for record_id in ids:
                key = (type(record_id).__name__, record_id)
                if key in first:
                    count += 1
                    if len(duplicates) < 3:
                        duplicates.append(f"{record_id!r} at rows {first[key]} and {row}")
                else:
                    first[key] = row
                row += 1
        if count:
            raise InvalidInput(f"the embeddings hold {count} duplicate id(s) ({'; '.join(duplicates)}); an index needs "
                               "unique ids: remove the duplicates (`lame encode` keeps the first record of each id)")

    def sample(self, size: int, seed: int) -> np.ndarray:
        """A uniform random sample of ``size`` vectors, gathered shard by shard."""
        size = min(size, self.count)
        chosen = np.sort(np.random.default_rng(seed).choice(self.count, size, replace=False))
        parts, start = [], 0
        for (vectors, _), count in zip(self, self.counts):
            local = chosen[(chosen >= start) & (chosen < start + count)] - start
            parts.append(np.asarray(vectors[local], dtype=np.float32))
            start += count
        return normalized(np.concatenate(parts))
