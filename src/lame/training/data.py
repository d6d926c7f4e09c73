"""Training data: JSONL records in the project's schema, weighted mixtures, resumable streaming.

A training record (one JSON object per line)::

    {"id": "q1",
     "query": ITEM,                       # text, or {"text"/"image"/"images"/"parts"/"instruction"}
     "positive": ITEM | "positives": [ITEM, ...],
     "negatives": [ITEM, ...],            # optional hard negatives
     "answer": "seven",                   # optional: what the decoder reconstructs (see below)
     "rationale": "...",                  # optional: reconstructed before the answer in "rationale+answer" mode
     "caption": "...",                    # optional: the text of an image-only positive, for the decoder
     "label": 7}                          # optional: records with the same label are not negatives

**What the decoder reconstructs** (``decoder_target`` of the model config, :meth:`TrainingExample.decoder_target`):
the retrieval target. ``answer`` (the default): the record's ``answer`` when it has one, else the text of its
(first) positive, else its ``caption``; ``positive``: the positive's text, else the ``caption``, never the
``answer``; ``rationale+answer`` (also spelt ``full``): the ``rationale`` followed by the ``answer`` target.
The positive's text is its text parts (its ``instruction`` is not part of it): an image-only positive has
none, and its record gets no reconstruction loss unless it has a ``caption``.

Other fields (``level``, ``ops``, ...) are kept in ``meta``; the trainer lists them once per
source, so a misspelt optional field does not go unnoticed. Image paths are relative to the JSONL file. A file is never loaded whole: an index of line offsets
is built once (8 bytes per line), each epoch visits the lines in a seeded permutation, and the
sampler's whole state is a few integers per source, so a killed run resumes at the exact record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.items import item_text, resolve_paths
from ..config import DECODER_TARGET_ALIASES, DECODER_TARGETS
from ..errors import InvalidInput, MissingPath

RECORD_KEYS = {"id", "query", "positive", "positives", "negatives", "answer", "rationale", "caption", "label"}


class DataError(InvalidInput):
    """A record that does not follow the schema; the message names the file, line and field."""


@dataclass
class TrainingExample:
    query: Any
    positives: list
    negatives: list = field(default_factory=list)
    answer: str | None = None
    rationale: str | None = None
    caption: str | None = None
    label: Any = None
    source: str = ""
    where: str = ""  # "file:line", for messages about this example
    meta: dict = field(default_factory=dict)  # fields outside the schema

    def decoder_target(self, mode: str = "answer") -> str | None:
        """The text the decoder reconstructs for this example (None: no reconstruction loss); ``mode`` is
        the config's ``decoder_target`` (see the module docstring)."""
        mode = DECODER_TARGET_ALIASES.get(mode, mode)
        retrieved = item_text(self.positives[0]) if self.positives else None
        retrieved = retrieved or self.caption or None
        if mode == "positive":
            return retrieved
        target = self.answer or retrieved
        if mode == "answer":
            return target
        if mode != "rationale+answer":
            raise ValueError(f"unknown decoder_target {mode!r}; known: {', '.join(DECODER_TARGETS)}")
        parts = [p for p in (self.rationale, target) if p]
        return " ".join(parts) if parts else None


def parse_record(record: Any, where: str, base_dir: Path, source: str = "") -> TrainingExample:
    if not isinstance(record, dict):
        raise DataError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    if "query" not in record:
        raise DataError(f"{where}: missing field 'query'")
    if ("positive" in record) == ("positives" in record):
        raise DataError(f"{where}: give exactly one of 'positive' or 'positives'")
    positives = record["positives"] if "positives" in record else [record["positive"]]
    if not isinstance(positives, list) or not positives:
        raise DataError(f"{where}: 'positives' must be a non-empty list")
    negatives = record.get("negatives") or []
    if not isinstance(negatives, list):
        raise DataError(f"{where}: 'negatives' must be a list")
    for name in ("answer", "rationale", "caption"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise DataError(f"{where}: '{name}' must be a string")
    return TrainingExample(
        query=resolve_paths(record["query"], base_dir),
        positives=[resolve_paths(p, base_dir) for p in positives],
        negatives=[resolve_paths(n, base_dir) for n in negatives],
        answer=record.get("answer"),
        rationale=record.get("rationale"),
        caption=record.get("caption"),
        label=record.get("label"),
        source=source,
        where=where,
        meta={k: v for k, v in record.items() if k not in RECORD_KEYS},
    )


class JsonlSource:
    """Random access to the lines of a JSONL file through an index of byte offsets."""

    def __init__(self, path: str | Path, name: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingPath(f"data file {self.path} does not exist")
        self.name = name or self.path.stem
        offsets, numbers = [], []
        with self.path.open("rb") as f:
            position = 0
            for number, line in enumerate(f, start=1):
                if line.strip():
                    offsets.append(position)
                    numbers.append(number)
                position += len(line)
        if not offsets:
            raise DataError(f"data file {self.path} has no records")
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.line_numbers = np.asarray(numbers, dtype=np.int64)  # for messages
        self.extra_fields: set[str] = set()  # fields outside the schema seen so far
        self._file = None

    def __len__(self) -> int:
        return len(self.offsets)

    def read(self, index: int) -> TrainingExample:
        if self._file is None:
            self._file = self.path.open("rb")
        self._file.seek(int(self.offsets[index]))
        line = self._file.readline()
        where = f"{self.path}:{int(self.line_numbers[index])}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc})") from exc
        example = parse_record(record, where, self.path.parent, self.name)
        self.extra_fields.update(example.meta)
        return example

    def __getstate__(self):  # file handles do not cross process boundaries
        state = dict(self.__dict__)
        state["_file"] = None
        return state


class MixtureSampler:
    """Draws examples from weighted sources in a reproducible order with a tiny, saveable state.

    Draw number ``n`` picks its source with an RNG seeded by ``(seed, n)``; each source walks a
    per-epoch seeded permutation of its lines. All processes draw the same global sequence and
    each keeps its own slice, so nothing is duplicated or lost across processes.
    """

    def __init__(self, sources: list[JsonlSource], weights: list[float], seed: int = 0):
        if len(sources) != len(weights) or not sources:
            raise ValueError("one weight per source, at least one source")
        if any(w <= 0 for w in weights):
            raise ValueError(f"source weights must be > 0, got {weights}")
        self.sources = sources
        self.probabilities = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.seed = seed
        self.draws = 0
        self.cursors = [[0, 0] for _ in sources]  # [epoch, position] per source
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _order(self, source: int, epoch: int) -> np.ndarray:
        key = (source, epoch)
        if key not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k[0] != source}
            rng = np.random.default_rng([self.seed, source, epoch])
            self._orders[key] = rng.permutation(len(self.sources[source]))
        return self._orders[key]

    def next_positions(self, count: int) -> list[tuple[int, int]]:
        """The next ``count`` (source, line) pairs of the global sequence; advances the state."""
        out = []
        for _ in range(count):
            source = int(np.random.default_rng([self.seed, 1_000_003, self.draws]).choice(
                len(self.sources), p=self.probabilities))
            epoch, position = self.cursors[source]
            out.append((source, int(self._order(source, epoch)[position])))
            position += 1
            if position == len(self.sources[source]):
                epoch, position = epoch + 1, 0
            self.cursors[source] = [epoch, position]
            self.draws += 1
        return out

    def read(self, source: int, line: int) -> TrainingExample:
        return self.sources[source].read(line)

    def state_dict(self) -> dict:
        return {"draws": self.draws, "cursors": [list(c) for c in self.cursors], "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.draws = state["draws"]
        self.cursors = [list(c) for c in state["cursors"]]
        self.seed = state["seed"]
