"""The on-disk format of an embedded corpus, written by :func:`lame.embed.encode_corpus`.

::

    OUTPUT/
      encode.json            the run's settings (checked when a run resumes)
      embeddings-00000.npy   float32 (n, d): the shard's embedded records, in file order
      ids-00000.json         the n ids, row for row; written last, so it marks the shard complete
      skipped-00000.json     [{"id", "line", "reason"}] for the shard's records that were skipped
      skipped.jsonl          the report: every skipped record, one JSON object a line
      manifest.json          dim, count, shards, model: written once every shard is complete

Every file is written to a temporary name and renamed, so a killed run leaves whole shards or none.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import MissingPath

MANIFEST = "manifest.json"
SETTINGS = "encode.json"
REPORT = "skipped.jsonl"


@dataclass(frozen=True)
class ShardFiles:
    directory: Path
    number: int

    @property
    def embeddings(self) -> Path:
        return self.directory / f"embeddings-{self.number:05d}.npy"

    @property
    def ids(self) -> Path:
        return self.directory / f"ids-{self.number:05d}.json"

    @property
    def skipped(self) -> Path:
        return self.directory / f"skipped-{self.number:05d}.json"

    def is_complete(self) -> bool:
        return self.ids.is_file() and self.embeddings.is_file() and self.skipped.is_file()

    def write(self, embeddings: np.ndarray, ids: list, skipped: list[dict]) -> None:
        """Writes the shard; the ids file goes last, so its presence means the shard is whole."""
        atomic_write(self.embeddings, lambda f: np.save(f, np.ascontiguousarray(embeddings, dtype=np.float32)))
        atomic_write_json(self.skipped, skipped)
        atomic_write_json(self.ids, ids)

    def read(self, mmap: bool = True) -> tuple[np.ndarray, list]:
        embeddings = np.load(self.embeddings, mmap_mode="r" if mmap else None)
        return embeddings, json.loads(self.ids.read_text())


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(tmp, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=None), mode="w")


class EmbeddingShards:
    """A complete embedded corpus: iterate it one shard at a time (memory-mapped)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            hint = " (an unfinished run: run `lame encode` again to resume it)" if (self.directory / SETTINGS).is_file() else ""
            raise MissingPath(f"{path} does not exist{hint}")
        self.manifest = json.loads(path.read_text())
        self.dim: int = self.manifest["dim"]
        self.count: int = self.manifest["count"]
        self.model: str | None = self.manifest.get("model")
        self.model_fingerprint: str | None = self.manifest.get("model_fingerprint")
        self.shards = [ShardFiles(self.directory, s["number"]) for s in self.manifest["shards"]]
        self.counts: list[int] = [s["count"] for s in self.manifest["shards"]]

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[np.ndarray, list]]:
        for shard in self.shards:
            yield shard.read()

    def load_all(self) -> tuple[np.ndarray, list]:
        """Every embedding and id in one array and list (for corpora that fit in memory)."""
        parts, ids = [np.zeros((0, self.dim), np.float32)], []
        for emb, shard_ids in self:
            parts.append(np.asarray(emb))
            ids += shard_ids
        return np.concatenate(parts), ids
