"""The project's own evaluation format, for any user data.

A task is a folder with ``corpus.jsonl`` (``{"id": ..., "item": ITEM}``; also BEIR/MTEB
``{"_id", "title", "text"}`` and plain ``{"id", "text"/"image"}`` lines, :mod:`lame.data.corpus_records`)
and ``queries.jsonl`` (``{"id": ..., "query": ITEM, "relevant": {doc_id: grade}, "candidates":
[doc_id, ...]?}``; any other field is kept as metadata). An optional ``task.json`` sets ``name``,
``metric``, ``category`` and ``group_by``. Image paths are relative to the JSONL file. A benchmark
folder holds task folders.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.corpus_records import CorpusRecordError, corpus_record
from ..data.items import resolve_paths
from ..errors import InvalidInput, MissingPath
from .tasks import Query, RetrievalTask

TASK_KEYS = {"name", "metric", "category", "group_by"}


def _read_jsonl(path: Path) -> list[dict]:
    """The file's JSON objects, each with its ``_where`` (file:line); an error names the first bad line."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{number}: invalid JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise InvalidInput(f"{path}:{number}: a record must be a JSON object, got {type(row).__name__}")
        row["_where"] = f"{path}:{number}"
        rows.append(row)
    if not rows:
        raise InvalidInput(f"{path}: no record (the file is empty or blank)")
    return rows


def is_task_folder(path: Path) -> bool:
    return (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file()


def load_jsonl_task(folder: str | Path) -> RetrievalTask:
    folder = Path(folder)
    if not is_task_folder(folder):
        raise MissingPath(f"{folder}: a JSONL task folder needs corpus.jsonl and queries.jsonl")
    settings = json.loads((folder / "task.json").read_text()) if (folder / "task.json").is_file() else {}
    unknown = sorted(set(settings) - TASK_KEYS)
    if unknown:
        raise InvalidInput(f"{folder / 'task.json'}: unknown key(s) {unknown}; allowed {sorted(TASK_KEYS)}")
    corpus = {}
    for row in _read_jsonl(folder / "corpus.jsonl"):
        where = row.pop("_where")
        try:
            doc_id, item = corpus_record(row, folder)
        except CorpusRecordError as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        corpus[str(doc_id)] = item
    queries = []
    for row in _read_jsonl(folder / "queries.jsonl"):
        for key in ("id", "query", "relevant"):
            if key not in row:
                raise InvalidInput(f"{row['_where']}: missing field {key!r}")
        if not isinstance(row["relevant"], dict):
            raise InvalidInput(f"{row['_where']}: 'relevant' must map doc ids to grades")
        meta = {k: v for k, v in row.items() if k not in ("id", "query", "relevant", "candidates", "_where")}
        candidates = [str(c) for c in row["candidates"]] if row.get("candidates") is not None else None
        queries.append(Query(str(row["id"]), resolve_paths(row["query"], folder),
                             {str(k): float(v) for k, v in row["relevant"].items()}, candidates, meta))
    return RetrievalTask(
        name=settings.get("name", folder.name),
        queries=queries,
        corpus=corpus,
        metric=settings.get("metric", "hit@1"),
        category=settings.get("category", "default"),
        group_by=settings.get("group_by"),
    )


def load_jsonl_benchmark(path: str | Path) -> list[RetrievalTask]:
    """One task folder, or a folder of task folders (sorted by name)."""
    path = Path(path)
    if is_task_folder(path):
        return [load_jsonl_task(path)]
    folders = sorted(p for p in path.iterdir() if p.is_dir() and is_task_folder(p)) if path.is_dir() else []
    if not folders:
        raise MissingPath(f"{path}: no task folder (corpus.jsonl + queries.jsonl) found")
    return [load_jsonl_task(p) for p in folders]
