"""Reading a corpus file: JSONL lines ``{"id": ..., "item": ITEM}``, BEIR/MTEB ``{"_id", "title", "text"}``
or plain ``{"id", "text"/"image"}`` (:mod:`lame.data.corpus_records`), image paths relative to the file.

Every non-blank line is a record; records are numbered from 0 in file order and shards are cut by
that number. A line that cannot be used (bad JSON, no id or content) is still a record that
carries the reason it is skipped, so a bad line never shifts the shard boundaries.

Ids are unique in the output: the first record with an id is the one for that id; a later record
with the same id is skipped and reported as a duplicate (:func:`duplicate_ids`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..data.corpus_records import CorpusRecordError, corpus_record, record_id
from ..errors import InvalidInput


@dataclass
class CorpusRecord:
    index: int  # 0-based among non-blank lines
    line: int  # 1-based line number in the file
    id: Any = None
    item: Any = None
    error: str | None = None  # why the record cannot be embedded


@dataclass(frozen=True)
class ShardSpan:
    """Where shard ``number`` starts in the file, so it is read without scanning what comes before."""

    number: int
    offset: int  # byte offset of its first line
    first_line: int
    count: int  # records in the shard


def plan_shards(path: str | Path, shard_size: int) -> list[ShardSpan]:
    """One pass over the file: the spans of consecutive ``shard_size`` records."""
    if shard_size < 1:
        raise InvalidInput(f"shard_size must be >= 1, got {shard_size}")
    spans: list[ShardSpan] = []
    offset, records, start = 0, 0, None  # start: (offset, line) of the current shard's first record
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                if start is None:
                    start = (offset, number)
                records += 1
                if records == shard_size:
                    spans.append(ShardSpan(len(spans), *start, records))
                    records, start = 0, None
            offset += len(line)
    if start is not None:
        spans.append(ShardSpan(len(spans), *start, records))
    return spans


def duplicate_ids(path: str | Path) -> dict[int, tuple[Any, int]]:
    """One pass over the file: ``{line: (id, line of the first record with that id)}`` for every record
    whose id an earlier readable record already has (a line refused for its content does not claim its
    id). Ids compare as JSON values (``1`` and ``"1"`` differ)."""
    first: dict[tuple[str, Any], int] = {}
    duplicates: dict[int, tuple[Any, int]] = {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            try:
                value, _ = corpus_record(row)
            except CorpusRecordError:
                continue
            key = (type(value).__name__, value)
            if key in first:
                duplicates[number] = (value, first[key])
            else:
                first[key] = number
    return duplicates


def read_span(path: str | Path, span: ShardSpan, first_index: int) -> Iterator[CorpusRecord]:
    """The ``span.count`` records of one shard; ``first_index`` is the index of its first record."""
    path = Path(path)
    seen = 0
    with open(path, "rb") as f:
        f.seek(span.offset)
        for number, raw in enumerate(f, start=span.first_line):
            if seen == span.count:
                return
            if not raw.strip():
                continue
            yield _parse(raw, first_index + seen, number, path.parent)
            seen += 1


def _parse(raw: bytes, index: int, number: int, base_dir: Path) -> CorpusRecord:
    record = CorpusRecord(index, number)
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        record.error = f"invalid JSON ({exc})"
        return record
    try:
        record.id, record.item = corpus_record(row, base_dir)
    except CorpusRecordError as exc:
        record.id = record_id(row)
        record.error = str(exc)
    return record
