"""Reading benchmark files: data files of a dataset folder, image cells, video frame folders."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InvalidInput, MissingPath

DATA_SUFFIXES = (".parquet", ".jsonl", ".json")
_FRAME_SUFFIXES = {".jpg", ".jpeg", ".png"}


def default_image_cache() -> Path:
    """Where images stored inside data files are extracted by default: ``$LAME_CACHE/images``
    (``~/.cache/lame/images`` when ``LAME_CACHE`` is not set). Never the (possibly read-only) data root."""
    return Path(os.environ.get("LAME_CACHE", Path.home() / ".cache" / "lame")) / "images"


def has_data_files(path: Path, depth: int = 0) -> bool:
    """Whether ``path`` is a data file, or a folder holding .parquet/.jsonl/.json files directly or (with
    ``depth``) that many sub-folder levels down. Tells a test-data folder from an extracted image folder
    of the same name (MMEB-V2's older layout moves ``image-tasks/MMEB/<Task>/`` up to
    ``image-tasks/<Task>/``)."""
    if path.is_file():
        return path.suffix in DATA_SUFFIXES
    if not path.is_dir():
        return False
    subdirs = []
    for child in path.iterdir():
        if child.name.startswith("."):
            continue
        if child.is_file() and child.suffix in DATA_SUFFIXES:
            return True
        if depth > 0 and child.is_dir():
            subdirs.append(child)
    return any(has_data_files(d, depth - 1) for d in subdirs)


def data_files(path: Path, config: str | None = None, split: str | None = None) -> list[Path]:
    """The data files of one dataset: ``path`` itself, or the .parquet/.jsonl/.json files under it.

    A snapshot of a Hugging Face dataset repository may hold several configs and splits: with ``config``
    only the sub-folder of that name is read (when it exists); with ``split`` only files named
    ``<split>*`` or inside a ``<split>`` folder (when there are any).
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MissingPath(f"{path} does not exist")
    base = path / config if config and (path / config).is_dir() else path
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(base).parts))
    if split:
        chosen = [p for p in files if p.name.startswith(split) or split in p.relative_to(base).parts[:-1]]
        files = chosen or files
    if not files:
        raise MissingPath(f"{path}: no .parquet, .jsonl or .json data file")
    return files


def read_file(path: Path) -> list[dict]:
    """Rows of one .parquet (needs pyarrow), .jsonl or .json (a list of objects, or one object) file."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(f"reading {path} needs pyarrow (pip install pyarrow)") from exc
        return _numbered(pq.read_table(path).to_pylist())
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"{path}:{number}: invalid JSON ({exc})") from exc
                if isinstance(row, dict):
                    row["_row"] = number  # the line number
                rows.append(row)
        return rows
    data = json.loads(path.read_text())
    return _numbered(data if isinstance(data, list) else [data])


def _numbered(rows: list) -> list:
    """Each object row gets ``_row``: its 1-based position in its file, for messages."""
    for number, row in enumerate(rows, start=1):
        if isinstance(row, dict):
            row["_row"] = number
    return rows


def row_where(row: dict, fallback: int | None = None) -> str:
    """Where a row of :func:`read_records` comes from: ``file.jsonl:LINE`` or ``row N of file`` (1-based)."""
    source, number = row.get("_source"), row.get("_row")
    if number is None:
        return f"record {fallback + 1 if fallback is not None else '?'} of {source}"
    return f"{source}:{number}" if str(source).endswith(".jsonl") else f"row {number} of {source}"


def read_records(path: Path, config: str | None = None, split: str | None = None) -> list[dict]:
    """All rows of a dataset folder or file; each row gets ``_source``: the file it came from, and ``_row``:
    its 1-based line (JSONL) or row number there."""
    rows = []
    for file in data_files(path, config, split):
        for row in read_file(file):
            if not isinstance(row, dict):
                raise InvalidInput(f"{file}: a record must be an object, got {type(row).__name__}")
            row["_source"] = file
            rows.append(row)
    return rows


def _sniff_suffix(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data.startswith(b"GIF8"):
        return ".gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data.startswith(b"BM"):
        return ".bmp"
    return ".img"


class ImageStore:
    """Turns image cells (a path string, raw bytes, or a Hugging Face image ``{"bytes", "path"}``) into Paths.

    Embedded bytes are written once to ``extract_dir/<content hash><ext>`` so that every item refers to an
    image file; existing files are checked once.
    """

    def __init__(self, extract_dir: Path):
        self.extract_dir = Path(extract_dir)
        self._seen: set[Path] = set()

    def path(self, cell: Any, base_dir: Path, where: str) -> Path | None:
        if cell is None:
            return None
        if isinstance(cell, (bytes, bytearray)):
            return self._extract(bytes(cell)) if cell else None
        if isinstance(cell, (str, Path)):
            return self.file(Path(cell), base_dir, where) if str(cell) else None
        if isinstance(cell, dict):
            if cell.get("bytes"):
                return self._extract(bytes(cell["bytes"]))
            if cell.get("path"):
                return self.file(Path(cell["path"]), base_dir, where)
            return None
        raise InvalidInput(f"{where}: unsupported image value of type {type(cell).__name__}")

    def file(self, path: Path, base_dir: Path, where: str) -> Path:
        path = path if path.is_absolute() else base_dir / path
        if path not in self._seen:
            if not path.is_file():
                raise MissingPath(f"{where}: image file {path} does not exist")
            self._seen.add(path)
        return path

    def _extract(self, data: bytes) -> Path:
        path = self.extract_dir / f"{hashlib.sha1(data).hexdigest()[:20]}{_sniff_suffix(data)}"
        if path not in self._seen:
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)
            self._seen.add(path)
        return path


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def sample_frames(frame_dir: Path, num_frames: int | None, where: str, pad: bool = False) -> list[Path]:
    """The frame images of one video (natural sort order), ``num_frames`` of them evenly spaced.

    Like VLM2Vec: indices ``linspace(0, n - 1, num_frames)`` rounded down. A video with fewer saved frames
    keeps all of them, as saved (the leaderboard's reference behaviour); with ``pad=True`` it is sampled
    the same way anyway, so frames repeat up to ``num_frames`` (VLM2Vec ``main`` since June 2026).
    ``num_frames=None`` keeps every frame.
    """
    if not frame_dir.is_dir():
        raise MissingPath(f"{where}: frame folder {frame_dir} does not exist")
    frames = sorted((p for p in frame_dir.iterdir() if p.is_file() and p.suffix.lower() in _FRAME_SUFFIXES),
                    key=lambda p: _natural_key(p.name))
    if not frames:
        raise MissingPath(f"{where}: no frame images (.jpg/.jpeg/.png) in {frame_dir}")
    if num_frames is None or (num_frames >= len(frames) and not pad):
        return frames
    return [frames[i] for i in np.linspace(0, len(frames) - 1, num_frames).astype(int)]
