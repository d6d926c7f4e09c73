"""The items behind an index's ids: what a search hit shows (its text, its images as thumbnails).

An index records the corpus JSONL it was embedded from (``index.json``: ``corpus``, ``corpus_bytes``;
an index built before that is traced through its embeddings folder's manifest). :class:`CorpusItems`
reads that file once, keeps each id's byte offset, and reads a record again when asked. Images are
only ever the ones a corpus record names, looked up by (id, position): no path comes from a caller.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from ..data.corpus_records import CorpusRecordError, corpus_record
from ..data.items import load_image
from ..errors import InvalidInput, MissingPath

THUMBNAIL_SIZE = 256


class CorpusItems:
    """``id -> item`` over a corpus JSONL (the lines :mod:`lame.data.corpus_records` reads), scanned lazily once."""

    def __init__(self, path: str | Path, expected_bytes: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingPath(f"the corpus {self.path} the index was built from does not exist (moved or deleted)")
        if expected_bytes is not None and self.path.stat().st_size != expected_bytes:
            raise InvalidInput(f"the corpus {self.path} changed since the index was built "
                               f"({expected_bytes} bytes then, {self.path.stat().st_size} now)")
        self._offsets: dict[str, int] | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_index(cls, index) -> "CorpusItems | None":
        """The corpus of an index (:class:`~lame.index.SearchIndex`: FAISS or Milvus), or None when it records none."""
        path, size = index.manifest.get("corpus"), index.manifest.get("corpus_bytes")
        embeddings = index.manifest.get("embeddings")
        if path is None and embeddings and (Path(embeddings) / "manifest.json").is_file():
            manifest = json.loads((Path(embeddings) / "manifest.json").read_text())
            path, size = manifest.get("input"), manifest.get("input_bytes")
        return cls(path, size) if path else None

    def _index(self) -> dict[str, int]:
        with self._lock:
            if self._offsets is None:
                offsets: dict[str, int] = {}
                offset = 0
                with open(self.path, "rb") as f:
                    for line in f:
                        if line.strip():
                            try:
                                record_id, _ = corpus_record(json.loads(line))
                            except (json.JSONDecodeError, UnicodeDecodeError, CorpusRecordError):
                                record_id = None  # a refused line: lame encode skipped it too
                            if record_id is not None:
                                offsets.setdefault(str(record_id), offset)
                        offset += len(line)
                self._offsets = offsets
            return self._offsets

    def __contains__(self, id: Any) -> bool:
        return str(id) in self._index()

    def item(self, id: Any) -> Any:
        """The record's item, image paths resolved against the corpus folder; KeyError for an unknown id."""
        offset = self._index()[str(id)]
        with open(self.path, "rb") as f:
            f.seek(offset)
            return corpus_record(json.loads(f.readline()), self.path.parent)[1]

    def preview(self, id: Any) -> dict:
        """``{"id", "text", "images"}``: the item's text parts joined (or None) and how many images it has."""
        texts, images = _text_and_images(self.item(id))
        return {"id": id, "text": "\n".join(texts) if texts else None, "images": len(images)}

    def thumbnail(self, id: Any, number: int, size: int = THUMBNAIL_SIZE) -> bytes:
        """The item's image ``number`` as a PNG of at most ``size`` pixels a side; IndexError if it has none."""
        _, images = _text_and_images(self.item(id))
        if not 0 <= number < len(images):
            raise IndexError(number)
        image = load_image(images[number])  # decoded as an image, or ValueError: never raw file bytes
        image.thumbnail((size, size), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()


def _text_and_images(item: Any) -> tuple[list[str], list]:
    """(text parts, image parts) of an item in any of the schema's forms, in reading order."""
    texts: list[str] = []
    images: list = []

    def part(value: Any) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict) and len(value) == 1 and ("text" in value or "image" in value):
            part(value.get("text")) if "text" in value else images.append(value["image"])
        elif value is not None:
            images.append(value)

    if isinstance(item, dict):
        for value in item.get("parts") or []:
            part(value)
        images += ([item["image"]] if item.get("image") is not None else []) + list(item.get("images") or [])
        if isinstance(item.get("text"), str):
            texts.append(item["text"])
    elif isinstance(item, list):
        for value in item:
            part(value)
    else:
        part(item)
    return [t for t in texts if t.strip()], images
