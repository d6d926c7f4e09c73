"""One line of a corpus file -> ``(id, item)``, in the shapes corpora come in.

* the project's own: ``{"id": ..., "item": ITEM}`` (any item of :mod:`lame.data.items`);
* BEIR / MTEB: ``{"_id": ..., "title": ..., "text": ...}`` (``title`` optional; other fields, such as
  BEIR's ``metadata``, are ignored);
* plain: ``{"id": ..., "text": ...}``, ``{"id": ..., "image": PATH}``, or both (one text+image item).

The id is ``id``, else ``_id``: a string or an integer. A line with ``item`` uses it as it is; otherwise
the item is built from ``title`` / ``text`` / ``image``. Image paths are relative to the corpus file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from .items import resolve_paths

ID_KEYS = ("id", "_id")
CONTENT_KEYS = ("item", "text", "title", "image")


class CorpusRecordError(InvalidInput):
    """Why one corpus line cannot be read as an item (a few words, no file or line)."""


def record_id(row: Any) -> Any:
    """The line's id (``id``, else BEIR's ``_id``), or None when it has neither; not checked."""
    if not isinstance(row, dict):
        return None
    return next((row[key] for key in ID_KEYS if key in row), None)


def corpus_record(row: Any, base_dir: Path | None = None) -> tuple[Any, Any]:
    """``(id, item)`` of one parsed JSON line; :class:`CorpusRecordError` says why it cannot be used.
    ``base_dir``: the folder image paths are relative to (None: left as strings)."""
    if not isinstance(row, dict):
        raise CorpusRecordError(f"a line must be a JSON object, got {type(row).__name__}")
    if not any(key in row for key in ID_KEYS):
        raise CorpusRecordError(f"no 'id' (or BEIR '_id') field (the line has {_fields(row)})")
    record = record_id(row)
    if isinstance(record, bool) or not isinstance(record, (str, int)):
        raise CorpusRecordError(f"the id must be a string or an integer, got {type(record).__name__}")
    item = row["item"] if "item" in row else _content_item(row)
    return record, resolve_paths(item, base_dir) if base_dir is not None else item


def _content_item(row: dict) -> Any:
    """The item of a line without ``item``: its title and text as one string, its image, or both."""
    if not any(key in row for key in CONTENT_KEYS):
        raise CorpusRecordError(f"no 'item', 'text' or 'image' field (the line has {_fields(row)}): "
                                "lines are the project's {\"id\", \"item\"}, BEIR's {\"_id\", \"title\", \"text\"} or "
                                "{\"id\", \"text\"/\"image\"}")
    for key in ("text", "title", "image"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise CorpusRecordError(f"'{key}' must be a string, got {type(row[key]).__name__}")
    title, text, image = row.get("title") or "", row.get("text") or "", row.get("image")
    # A title is joined to its text as MTEB does (mteb/_create_dataloaders.py, _corpus_to_dict):
    # (title + " " + text).strip() when there is a title, else text.strip(); BEIR's SentenceBERT
    # wrapper joins with the same single space. Most BEIR/MTEB numbers are computed on that string.
    joined = (title + " " + text).strip() if title else text.strip()
    if image is None:
        return joined
    return {"text": joined, "image": image} if joined else {"image": image}


def _fields(row: dict) -> str:
    return ", ".join(repr(key) for key in list(row)[:8]) or "no field"
