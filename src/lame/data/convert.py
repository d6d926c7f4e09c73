"""``lame data convert``: published training sets -> the project's training JSONL (lame.training.data).

Formats (the VLM2Vec / VLM2Vec-V2 training sources, read from local copies; nothing is downloaded):

* ``mmeb-train``: a snapshot of the MMEB-train dataset (``TIGER-Lab/MMEB-train``): one folder per subset
  (``ImageNet_1K/original-00000-of-00001.parquet``, ...) with columns ``qry``, ``qry_image_path``,
  ``pos_text``, ``pos_image_path`` and, where present, ``neg_text``, ``neg_image_path``; image paths are
  relative to ``--image-root`` (the folder the images archive was unpacked into). One JSONL per subset.
* ``llavahound-caption``, ``llavahound-video``, ``llavahound-qa``: the video sources of the VLM2Vec-V2
  mixture, a JSONL of ``{"id", "video", "conversations": [{"value": "<video>..."}, {"value": ...}]}``
  (``video_caption_300k.jsonl``, ``video_240k_caption_15k.jsonl``) and a folder of frame folders
  (``--video-root``, one folder per ``video``). ``caption``: video -> its caption; ``video``: caption ->
  video; ``qa``: video and question -> answer. Videos become native video items
  (``{"video": FOLDER, "num_frames": 8}``).
* ``vidore``: the ColPali training set (``vidore/colpali_train_set`` parquet: ``query``, ``image``,
  ``answer``): document page and question -> answer, as VLM2Vec-V2 uses it.
* ``visrag``: VisRAG's in-domain retrieval training set (``openbmb/VisRAG-Ret-Train-In-domain-data``
  parquet: ``query``, ``image``): question -> document page.

Images stored inside parquet files are written out under ``OUTPUT/images/<name>/``. Every row is
checked as it is converted: a missing image, frame folder or field skips the row, counted by reason.
A source of which no row could be converted is an error naming its first reasons (after the other
sources are written); its file is not written, so an earlier conversion's file is kept.
Files are streamed (parquet in record batches, JSONL line by line), never loaded whole.

**Instructions.** MMEB-train writes a field's instruction and content in one string (``"<|image_1|>
Represent the given news image with the following caption for domain classification: Police ..."``).
The instruction becomes the item's ``instruction`` (it goes before the query inside the chat template,
as the evaluation loaders put MMEB-V2's ``qry_inst``): the text before the first ``": "`` when it
opens as an instruction does (Represent, Find, Retrieve, Given, Select, Identify, ...), or the whole
text of a field whose content is its image. The rest is the item's ``text``. So an image positive
written ``"<|image_1|>\\nRepresent the given image."`` has no text: the decoder gets no boilerplate to
reconstruct (lame.training.data).

**Labels.** A record whose positive is a text gets that text as its ``label``: records of one class
(or one answer) are not used as each other's negatives.

:data:`VLM2VEC_V2_MIXTURE` is the published VLM2Vec-V2 training mixture (its sources, weights and row
caps); ``configs/vlm2vec-v2-mixture.yaml`` trains on it. ``--published-caps`` applies the caps.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, MissingPath
from .video import DEFAULT_NUM_FRAMES, frame_files

FORMATS = ("mmeb-train", "llavahound-caption", "llavahound-video", "llavahound-qa", "vidore", "visrag")

MMEB_TRAIN_SUBSETS = (
    "ImageNet_1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "OK-VQA", "A-OKVQA", "DocVQA",
    "InfographicsVQA", "ChartQA", "Visual7W", "VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t",
    "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS", "WebQA", "MSCOCO",
)


@dataclass(frozen=True)
class MixtureSource:
    name: str  # the output file's stem
    format: str
    weight: float
    max_rows: int | None = None
    subset: str | None = None  # mmeb-train


def _mmeb(subset: str, weight: float, max_rows: int) -> MixtureSource:
    return MixtureSource(subset, "mmeb-train", weight, max_rows, subset)


# VLM2Vec-V2's published training mixture (experiments/public/train/train_v2.yaml of the VLM2Vec
# repository): source name, format, sampling weight and rows kept per source.
VLM2VEC_V2_MIXTURE = (
    _mmeb("ImageNet_1K", 1, 100_000), _mmeb("N24News", 1, 50_000), _mmeb("HatefulMemes", 0.5, 10_000),
    _mmeb("VOC2007", 0.5, 10_000), _mmeb("SUN397", 0.5, 20_000), _mmeb("OK-VQA", 0.5, 10_000),
    _mmeb("A-OKVQA", 0.5, 20_000), _mmeb("DocVQA", 1, 40_000), _mmeb("InfographicsVQA", 0.5, 25_000),
    _mmeb("ChartQA", 0.5, 28_000), _mmeb("Visual7W", 1, 70_000), _mmeb("VisDial", 1, 130_000),
    _mmeb("CIRR", 0.5, 30_000), _mmeb("VisualNews_t2i", 1, 100_000), _mmeb("VisualNews_i2t", 1, 100_000),
    _mmeb("MSCOCO_t2i", 1, 100_000), _mmeb("MSCOCO_i2t", 1, 120_000), _mmeb("NIGHTS", 0.5, 20_000),
    _mmeb("WebQA", 0.5, 20_000), _mmeb("MSCOCO", 1, 100_000),
    MixtureSource("colpali_train_set", "vidore", 10),
    MixtureSource("visrag-indomain", "visrag", 12),
    MixtureSource("video_caption_300k", "llavahound-caption", 5, 300_000),
    MixtureSource("video_caption_300k-video", "llavahound-video", 5, 300_000),
    MixtureSource("video_qa_240k", "llavahound-qa", 5, 240_000),
)
DEFAULT_NAMES = {"llavahound-caption": "video_caption_300k", "llavahound-video": "video_caption_300k-video",
                 "llavahound-qa": "video_qa_240k", "vidore": "colpali_train_set", "visrag": "visrag-indomain"}

# Instructions LaME writes where a source has none in its rows (short task descriptions of its own).
VIDEO_TO_CAPTION = "Describe the content of the video."
CAPTION_TO_VIDEO = "Find a video that contains the following visual content:"
VIDEO_TARGET = "Understand the content of the provided video."
VIDEO_QA = "Answer a question based on the content of the video."
DOC_QUERY = "Find a document image that matches the given query:"
DOC_TARGET = "Represent the given document image."
DOC_QA = "Answer the question about the document page."

_IMAGE_TOKEN = re.compile(r"<\|image_\d+\|>")
_INSTRUCTION_OPENINGS = re.compile(r"^(represent|find|retrieve|given|select|identify|answer|search|which|what is "
                                   r"the (category|class))\b", re.IGNORECASE)


FIRST_REASONS = 3  # reasons quoted when no row of a source could be converted
FIRST_EMPTY = 3  # such sources named in one error


class ConvertError(InvalidInput):
    """A source that cannot be converted (missing files or columns); the message names it."""


@dataclass
class ConvertSummary:
    name: str
    source: str
    output: str
    read: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    examples: dict = field(default_factory=dict)  # reason -> first row that had it

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, where)

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "output": self.output, "read": self.read,
                "written": self.written, "skipped": dict(self.skipped), "first_skipped": self.examples}

    def refusal(self) -> str:
        """One line for a source of which no row could be converted: counts and the first reasons."""
        if not self.read:
            return f"{self.name}: {self.source} holds no row"
        reasons = "; ".join(f"{where}: {reason}" for reason, where in list(self.examples.items())[:FIRST_REASONS])
        return (f"no row of {self.name} could be converted ({self.read} read, {sum(self.skipped.values())} "
                f"refused); first reasons: {reasons}")

    def line(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = "; ".join(f"{n} {r} (e.g. {self.examples[r]})" for r, n in self.skipped.most_common(3))
        return (f"{self.name}: {self.written} of {self.read} rows written to {self.output}"
                + (f", {skipped} skipped: {reasons}" if skipped else ""))


class _Skip(Exception):
    """This row is skipped; the message is the reason (a few words, counted)."""


# ------------------------------------------------------------------------------------------ helpers
def split_instruction(text: str, content_is_image: bool) -> tuple[str | None, str]:
    """(instruction, text) of an MMEB field (see the module docstring)."""
    text = _IMAGE_TOKEN.sub("", text or "").strip()
    head, sep, tail = text.partition(": ")
    if sep and _INSTRUCTION_OPENINGS.match(head) and len(head.split()) <= 30:
        return head + ":", tail.strip()
    if content_is_image and text:
        return text, ""
    return None, text


def _item(text: str = "", instruction: str | None = None, **visual) -> Any:
    visual = {k: v for k, v in visual.items() if v is not None}
    if not visual and not instruction:
        return text
    item = {**({"instruction": instruction} if instruction else {}), **visual}
    if text:
        item["text"] = text
    return item


def _relative(path: Path, folder: Path) -> str:
    """``path`` as a training JSONL in ``folder`` names it: relative when it can be, else absolute."""
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive (Windows)
        return str(path)


def _parquet_rows(path: Path, columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of a parquet file, one record batch in memory at a time."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    present = set(parquet.schema_arrow.names)
    wanted = [c for c in columns if c in present] if columns else None
    for batch in parquet.iter_batches(batch_size=512, columns=wanted):
        yield from batch.to_pylist()


def _data_files(folder: Path, split: str | None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.parquet") if not any(part.startswith(".") for part in p.parts))
    if split:
        files = [p for p in files if p.name.startswith(f"{split}-") or p.name.startswith(f"{split}.")
                 or split in p.relative_to(folder).parts[:-1]] or files
    return files


class _ImageWriter:
    """Images stored in parquet cells (``{"bytes", "path"}``) written to files, checked as images."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, cell: Any, key: str) -> Path:
        from PIL import Image, UnidentifiedImageError

        data = cell.get("bytes") if isinstance(cell, dict) else cell if isinstance(cell, (bytes, bytearray)) else None
        if not data:
            raise _Skip("no image bytes")
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
                kind = (image.format or "png").lower()
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise _Skip("image bytes that are not an image") from None
        path = self.folder / f"{key}.{'jpg' if kind == 'jpeg' else kind}"
        path.write_bytes(bytes(data))
        return path


# ------------------------------------------------------------------------------------- converters
def _mmeb_rows(root: Path, subset: str, split: str | None, image_root: Path, out_dir: Path,
               summary: ConvertSummary) -> Iterator[dict]:
    folder = root / subset
    if not folder.is_dir():
        raise MissingPath(f"mmeb-train: no subset folder {folder}")
    files = _data_files(folder, split)
    if not files:
        raise ConvertError(f"mmeb-train: {folder} holds no parquet file")

    def image(path: Any, where: str) -> str | None:
        if not path:
            return None
        found = image_root / str(path)
        if not found.is_file():
            raise _Skip("image file missing")
        return _relative(found, out_dir)

    for file in files:
        for number, row in enumerate(_parquet_rows(file), start=1):
            where = f"row {number} of {file.name}"
            summary.read += 1
            try:
                if "qry" not in row or "pos_text" not in row:
                    raise ConvertError(f"mmeb-train: {file} lacks the qry / pos_text columns")
                q_image, p_image = image(row.get("qry_image_path"), where), image(row.get("pos_image_path"), where)
                q_inst, q_text = split_instruction(row.get("qry") or "", q_image is not None)
                p_inst, p_text = split_instruction(row.get("pos_text") or "", p_image is not None)
                if not (q_text or q_image) or not (p_text or p_image):
                    raise _Skip("empty query or positive")
                record = {"id": f"{subset}:{number}", "query": _item(q_text, q_inst, image=q_image),
                          "positive": _item(p_text, p_inst, image=p_image)}
                n_image = image(row.get("neg_image_path"), where) if row.get("neg_image_path") else None
                n_inst, n_text = split_instruction(row.get("neg_text") or "", n_image is not None)
                if n_text or n_image:
                    record["negatives"] = [_item(n_text, n_inst, image=n_image)]
                if p_text and not p_image:
                    record["label"] = p_text
            except _Skip as exc:
                summary.skip(str(exc), where)
                continue
            yield record


def _conversations(row: dict) -> tuple[str, str]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2:
        raise _Skip("no question and answer turns")
    first, second = (t.get("value") if isinstance(t, dict) else None for t in turns[:2])
    if not isinstance(first, str) or not isinstance(second, str) or not second.strip():
        raise _Skip("no question and answer turns")
    return first.replace("<video>", "").strip(), second.strip()


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    if path.suffix == ".json":  # a JSON array cannot be streamed without a parser for it: read whole
        data = json.loads(path.read_text())
        yield from enumerate(data if isinstance(data, list) else [data], start=1)
        return
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError:
                    yield number, None


def _llavahound_rows(source: Path, mode: str, video_root: Path, out_dir: Path, num_frames: int,
                     summary: ConvertSummary) -> Iterator[dict]:
    if not source.is_file():
        raise MissingPath(f"{source} does not exist")
    for number, row in _jsonl_rows(source):
        where = f"{source.name}:{number}"
        summary.read += 1
        try:
            if not isinstance(row, dict):
                raise _Skip("not a JSON object")
            video_id = row.get("video")
            if not isinstance(video_id, str) or not video_id:
                raise _Skip("no video")
            folder = video_root / video_id
            if not folder.is_dir() or not frame_files(folder):
                raise _Skip("frame folder missing or empty")
            video = {"video": _relative(folder, out_dir), "num_frames": num_frames}
            question, answer = _conversations(row)
            if mode == "caption":
                record = {"query": {"instruction": question or VIDEO_TO_CAPTION, **video}, "positive": answer}
            elif mode == "video":
                record = {"query": {"instruction": CAPTION_TO_VIDEO, "text": answer},
                          "positive": {"instruction": VIDEO_TARGET, **video}, "caption": answer}
            else:
                if not question:
                    raise _Skip("no question")
                record = {"query": {"instruction": VIDEO_QA, **video, "text": question}, "positive": answer,
                          "label": answer}
        except _Skip as exc:
            summary.skip(str(exc), where)
            continue
        yield {"id": f"{row.get('id', number)}", **record}


def _document_rows(source: Path, kind: str, out_dir: Path, name: str, summary: ConvertSummary) -> Iterator[dict]:
    files = [source] if source.is_file() else _data_files(source, "train") if source.is_dir() else []
    if not files:
        raise MissingPath(f"{source}: no parquet file")
    images = _ImageWriter(out_dir / "images" / name)
    for file in files:
        for number, row in enumerate(_parquet_rows(file), start=1):
            where = f"row {number} of {file.name}"
            summary.read += 1
            try:
                query = (row.get("query") or "").strip()
                if not query:
                    raise _Skip("no query")
                page = _relative(images.write(row.get("image"), f"{file.stem}-{number:08d}"), out_dir)
                if kind == "vidore":
                    answer = (row.get("answer") or "").strip()
                    if not answer:
                        raise _Skip("no answer")
                    record = {"query": {"instruction": DOC_QA, "image": page, "text": query}, "positive": answer,
                              "label": answer}
                else:
                    record = {"query": {"instruction": DOC_QUERY, "text": query},
                              "positive": {"instruction": DOC_TARGET, "image": page}}
            except _Skip as exc:
                summary.skip(str(exc), where)
                continue
            yield {"id": f"{name}:{file.stem}:{number}", **record}


# ------------------------------------------------------------------------------------------- entry
def convert(fmt: str, source: str | Path, output: str | Path, *, image_root: str | Path | None = None,
            video_root: str | Path | None = None, subsets: list[str] | None = None, split: str | None = "original",
            max_rows: int | None = None, published_caps: bool = False, num_frames: int = DEFAULT_NUM_FRAMES,
            name: str | None = None) -> list[ConvertSummary]:
    """Converts ``source`` (a local copy, in the layout of ``fmt``) into JSONL files under ``output``
    (one per subset or source, named as in :data:`VLM2VEC_V2_MIXTURE`); returns one summary per file
    and writes them to ``output/convert-summary.json``.

    ``max_rows``: at most this many records per file; ``published_caps``: VLM2Vec-V2's per-source
    caps instead (``max_rows`` wins where both are given)."""
    if fmt not in FORMATS:
        raise ConvertError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    source, output = Path(source), Path(output)
    if not source.exists():
        raise MissingPath(f"{source} does not exist")
    output.mkdir(parents=True, exist_ok=True)
    caps = {m.name: m.max_rows for m in VLM2VEC_V2_MIXTURE} if published_caps else {}
    jobs = _jobs(fmt, source, output, image_root=image_root, video_root=video_root, subsets=subsets, split=split,
                 num_frames=num_frames, name=name)
    summaries = [_write_jsonl(stem, rows, source, output, max_rows if max_rows is not None else caps.get(stem))
                 for stem, rows in jobs]
    report = _record_summaries(summaries, output)
    empty = [s for s in summaries if not s.written]
    if empty:
        more = f"; and {len(empty) - FIRST_EMPTY} more" if len(empty) > FIRST_EMPTY else ""
        raise ConvertError("; ".join(s.refusal() for s in empty[:FIRST_EMPTY]) + more
                           + f" (counts in {report})")
    return summaries


def _jobs(fmt: str, source: Path, output: Path, *, image_root, video_root, subsets, split, num_frames,
          name) -> list[tuple[str, Any]]:
    """The files ``fmt`` makes of ``source``: (file stem, a function of its summary yielding its records)."""
    if fmt == "mmeb-train":
        root = Path(image_root) if image_root else source
        found = [s for s in MMEB_TRAIN_SUBSETS if (source / s).is_dir()]
        found += sorted(p.name for p in source.iterdir() if p.is_dir() and p.name not in found
                        and not p.name.startswith(".") and any(p.glob("*.parquet")))
        chosen = subsets or found
        if not chosen:
            raise ConvertError(f"mmeb-train: {source} holds no subset folder with parquet files")
        return [(subset, lambda s, sub=subset: _mmeb_rows(source, sub, split, root, output, s)) for subset in chosen]
    if fmt.startswith("llavahound"):
        if video_root is None:
            raise ConvertError(f"{fmt}: --video-root (the folder of frame folders) is required")
        mode = fmt.split("-", 1)[1]
        return [(name or DEFAULT_NAMES[fmt],
                 lambda s: _llavahound_rows(source, mode, Path(video_root), output, num_frames, s))]
    stem = name or DEFAULT_NAMES[fmt]
    return [(stem, lambda s: _document_rows(source, fmt, output, stem, s))]


def _write_jsonl(stem: str, rows, source: Path, output: Path, limit: int | None) -> ConvertSummary:
    """Writes ``output/STEM.jsonl`` from ``rows(summary)`` (at most ``limit`` records) and counts them."""
    target = output / f"{stem}.jsonl"
    summary = ConvertSummary(stem, str(source), str(target))
    tmp = target.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in rows(summary):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            summary.written += 1
            if limit is not None and summary.written >= limit:
                break
    if summary.written:
        tmp.replace(target)
    else:  # nothing to train on: no empty file, and an earlier conversion's file is kept
        tmp.unlink()
    return summary


def _record_summaries(summaries: list[ConvertSummary], output: Path) -> Path:
    """Adds the summaries to ``output/convert-summary.json`` (an earlier run's other files stay listed)."""
    report = output / "convert-summary.json"
    previous = json.loads(report.read_text()) if report.is_file() else {}
    previous.update({s.name: s.to_dict() for s in summaries})
    report.write_text(json.dumps(previous, indent=2) + "\n")
    return report


def describe_summaries(summaries: list[ConvertSummary], output: str | Path) -> str:
    """What `lame data convert` prints: a line per file, then the files as recipe data sources."""
    weights = {m.name: m.weight for m in VLM2VEC_V2_MIXTURE}
    lines = [summary.line() for summary in summaries]
    lines.append(f"summary: {Path(output) / 'convert-summary.json'}; as recipe data sources (weights of the "
                 "VLM2Vec-V2 mixture where it has the source):")
    lines += [f"    - {{path: {s.output}, weight: {weights.get(s.name, 1.0)}}}" for s in summaries]
    return "\n".join(lines)

