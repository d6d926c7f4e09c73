"""MMEB-V2 (78 tasks: 36 image, 18 video, 24 visual-document) from a local folder in its published layout.

Nothing is downloaded. ``root`` is laid out like the evaluation root of VLM2Vec (TIGER-AI-Lab/VLM2Vec,
``experiments/public/data/download_data.sh`` + ``experiments/public/eval/{image,video,visdoc}.yaml``):
the TIGER-Lab/MMEB-V2 repository (images and video frames) with each task's test file next to it::

    root/image-tasks/MMEB/...                       images (MMEB-V2 image-tasks/mmeb_v1.tar.gz)
    root/image-tasks/<Task>/*.parquet               ziyjiang/MMEB_Test_Instruct, subset <Task>
    root/video-tasks/frames/video_{cls,ret,mret,qa}/<Dir>/<video>/*.jpg
    root/video-tasks/data/<Task>/ or <file>.jsonl   the test set of VLM2Vec/<Task>
    root/visdoc-tasks/data/<Task>/{queries,corpus,qrels}/*.parquet   BEIR-style test set
    root/visdoc-tasks/<Dir>/<page>.png              optional pre-extracted page images

docs/benchmarks.md gives the full tree, the fields read per task and every decision taken where the
published material was ambiguous. Image and video tasks are scored by Hit@1, visual-document tasks by
nDCG@5. "local" tasks rank each query's own candidate list (positive first); "global" tasks rank the
deduplicated pool of all candidates (plus the corpus for visual-document tasks).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .tasks import Query, RetrievalTask

# ----------------------------------------------------------------------------------------------------
# The registry: one entry per task (data, not code branches)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MMEBTask:
    name: str
    modality: str  # "image" | "video" | "visdoc"
    subcategory: str  # e.g. "classification", "vqa", "retrieval", "grounding", "moment", "qa", "vidore-v1"
    metric: str  # "hit@1" (image, video) or "ndcg@5" (visdoc)
    eval_type: str  # "local" or "global"
    parser: str  # which record format the task's test file has (a key of _PARSERS)
    params: dict = field(default_factory=dict)  # file names, field names, frame folder, instruction


_IMAGE = {
    "classification": ["ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "Place365",
                       "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211"],
    "vqa": ["OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W", "ScienceQA", "VizWiz",
            "GQA", "TextVQA"],
    "retrieval": ["VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t", "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS",
                  "WebQA", "FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS"],
    "grounding": ["MSCOCO", "RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"],
}

# Query instructions of the video and visdoc parsers in VLM2Vec src/data/eval_dataset/*.py (the image
# tasks carry theirs in the data, field qry_inst).
_VIDEO_QA_PROMPT = ("Given a video and a question, select the most accurate answer from the provided "
                    "candidates. Return only the exact text of your chosen answer. Question:")
_MOMENT_PROMPT = "Find the clip that corresponds to the described scene in the given video:"
_VISDOC_PROMPT = "Find a document image that matches the given query:"

# name: (subcategory, eval_type, parser, frame folder under video-tasks/frames,
#        file or folder in video-tasks/data (VLM2Vec's local mirror names), params)
_VIDEO = {
    "SmthSmthV2": ("classification", "local", "ssv2", "video_cls/SSv2", "ssv2.jsonl",
                   {"instruction": "What actions or object interactions are being performed by the person "
                                   "in the video?"}),
    "HMDB51": ("classification", "global", "video_cls", "video_cls/HMDB51", "hmdb51.jsonl",
               {"instruction": "What actions or objects interactions are the person in the video doing?"}),
    "UCF101": ("classification", "global", "video_cls", "video_cls/UCF101", "ucf101.jsonl",
               {"instruction": "What activities or sports are being performed by the person in the video?"}),
    "K700": ("classification", "global", "video_cls", "video_cls/K700", "k700.jsonl",
             {"instruction": "Recognize the category of the video content."}),
    "Breakfast": ("classification", "global", "video_cls", "video_cls/Breakfast", "breakfast.jsonl",
                  {"instruction": "Recognize the breakfast type that the person is cooking in the video."}),
    "MSR-VTT": ("retrieval", "global", "video_ret", "video_ret/MSR-VTT", "msr-vtt.jsonl",
                {"config": "test_1k", "video": "video_id", "text": "caption",
                 "instruction": "Find a video that contains the following visual content:"}),
    "MSVD": ("retrieval", "global", "video_ret", "video_ret/MSVD", "msvd.jsonl",
             {"video": "video_id", "text": "caption",
              "instruction": "Find the video snippet that corresponds to the given summary:"}),
    "DiDeMo": ("retrieval", "global", "video_ret", "video_ret/DiDeMo", "didemo.jsonl",
               {"video": "video", "video_is_path": True, "text": "caption",
                "instruction": "Find a video that includes the following described scenes:"}),
    "YouCook2": ("retrieval", "global", "video_ret", "video_ret/YouCook2", "youcook2-val.jsonl",
                 {"split": "val", "video": "id", "text": "sentence",
                  "instruction": "Find a video that demonstrates the following action while making a "
                                 "recipe:"}),
    "VATEX": ("retrieval", "global", "video_ret", "video_ret/VATEX", "vatex.jsonl",
              {"video": "videoID", "text": "enCap",
               "instruction": "Select a video that fits the description provided:"}),
    "QVHighlight": ("moment", "local", "moment", "video_mret/QVHighlight", "qvhighlight.jsonl",
                    {"instruction": _MOMENT_PROMPT}),
    "Charades-STA": ("moment", "local", "moment", "video_mret/Charades_STA", "charades_sta.jsonl",
                     {"instruction": _MOMENT_PROMPT}),
    "MomentSeeker": ("moment", "local", "momentseeker", "video_mret/MomentSeeker", "momentseeker_1k6.jsonl",
                     {"instruction_text": "Find the clip that corresponds to the given text:",
                      "instruction_image": "Select the video clip that aligns with the given text and image:",
                      "instruction_video": "Find the clip that corresponds to the given sentence and video "
                                           "segment:"}),
    "Video-MME": ("qa", "local", "videomme", "video_qa/Video-MME", "video-mme.jsonl",
                  {"instruction": _VIDEO_QA_PROMPT}),
    "NExTQA": ("qa", "local", "nextqa", "video_qa/NExTQA", "nextqa.jsonl",
               {"config": "MC", "instruction": _VIDEO_QA_PROMPT}),
    "EgoSchema": ("qa", "local", "egoschema", "video_qa/EgoSchema", "egoschema.jsonl",
                  {"config": "Subset", "instruction": _VIDEO_QA_PROMPT}),
    "MVBench": ("qa", "local", "mvbench", "video_qa/MVBench", "mvbench",
                {"split": "train", "instruction": _VIDEO_QA_PROMPT}),
    "ActivityNetQA": ("qa", "local", "activitynetqa", "video_qa/ActivityNetQA", "activitynetqa.jsonl",
                      {"instruction": _VIDEO_QA_PROMPT}),
}

# name: (subcategory, parser, folder of the HF dataset under visdoc-tasks/data, page-image folder, split)
_VISDOC = {
    "ViDoRe_arxivqa": ("vidore-v1", "vidore", "arxivqa_test_subsampled_beir", "ViDoRe_arxivqa", "test"),
    "ViDoRe_docvqa": ("vidore-v1", "vidore", "docvqa_test_subsampled_beir", "ViDoRe_docvqa", "test"),
    "ViDoRe_infovqa": ("vidore-v1", "vidore", "infovqa_test_subsampled_beir", "ViDoRe_infovqa", "test"),
    "ViDoRe_tabfquad": ("vidore-v1", "vidore", "tabfquad_test_subsampled_beir", "ViDoRe_tabfquad", "test"),
    "ViDoRe_tatdqa": ("vidore-v1", "vidore", "tatdqa_test_beir", "ViDoRe_tatdqa", "test"),
    "ViDoRe_shiftproject": ("vidore-v1", "vidore", "shiftproject_test_beir", "ViDoRe_shiftproject", "test"),
    "ViDoRe_syntheticDocQA_artificial_intelligence": (
        "vidore-v1", "vidore", "syntheticDocQA_artificial_intelligence_test_beir",
        "ViDoRe_syntheticDocQA_artificial_intelligence", "test"),
    "ViDoRe_syntheticDocQA_energy": ("vidore-v1", "vidore", "syntheticDocQA_energy_test_beir",
                                     "ViDoRe_syntheticDocQA_energy", "test"),
    "ViDoRe_syntheticDocQA_government_reports": (
        "vidore-v1", "vidore", "syntheticDocQA_government_reports_test_beir",
        "ViDoRe_syntheticDocQA_government_reports", "test"),
    "ViDoRe_syntheticDocQA_healthcare_industry": (
        "vidore-v1", "vidore", "syntheticDocQA_healthcare_industry_test_beir",
        "ViDoRe_syntheticDocQA_healthcare_industry", "test"),
    "ViDoRe_esg_reports_human_labeled_v2": ("vidore-v2", "vidore", "esg_reports_human_labeled_v2",
                                            "esg_reports_human_labeled_v2", "test"),
    "ViDoRe_biomedical_lectures_v2_multilingual": ("vidore-v2", "vidore", "biomedical_lectures_v2",
                                                   "biomedical_lectures_v2_multilingual", "test"),
    "ViDoRe_economics_reports_v2_multilingual": ("vidore-v2", "vidore", "economics_reports_v2",
                                                 "economics_reports_v2_multilingual", "test"),
    "ViDoRe_esg_reports_v2_multilingual": ("vidore-v2", "vidore", "esg_reports_v2",
                                           "esg_reports_v2_multilingual", "test"),
    "VisRAG_ArxivQA": ("visrag", "visrag", "VisRAG-Ret-Test-ArxivQA", "VisRAG_ArxivQA", "train"),
    "VisRAG_ChartQA": ("visrag", "visrag", "VisRAG-Ret-Test-ChartQA", "VisRAG_ChartQA", "train"),
    "VisRAG_MP-DocVQA": ("visrag", "visrag", "VisRAG-Ret-Test-MP-DocVQA", "VisRAG_MP-DocVQA", "train"),
    "VisRAG_SlideVQA": ("visrag", "visrag", "VisRAG-Ret-Test-SlideVQA", "VisRAG_SlideVQA", "train"),
    "VisRAG_InfoVQA": ("visrag", "visrag", "VisRAG-Ret-Test-InfoVQA", "VisRAG_InfoVQA", "train"),
    "VisRAG_PlotQA": ("visrag", "visrag", "VisRAG-Ret-Test-PlotQA", "VisRAG_PlotQA", "train"),
    "ViDoSeek-page": ("ood", "vidore", "ViDoSeek-page-fixed", "ViDoSeek-page", "test"),
    "ViDoSeek-doc": ("ood", "vidore", "ViDoSeek", "ViDoSeek-doc", "test"),
    "MMLongBench-page": ("ood", "vidore", "MMLongBench-page-fixed", "MMLongBench-page", "test"),
    "MMLongBench-doc": ("ood", "vidore", "MMLongBench-doc", "MMLongBench-doc", "test"),
}


def _build_registry() -> dict[str, MMEBTask]:
    registry: dict[str, MMEBTask] = {}
    for sub, names in _IMAGE.items():
        for name in names:
            registry[name] = MMEBTask(name, "image", sub, "hit@1", "local", "image")
    for name, (sub, eval_type, parser, frames, data_file, params) in _VIDEO.items():
        registry[name] = MMEBTask(name, "video", sub, "hit@1", eval_type, parser,
                                  {"frames": frames, "data_file": data_file, **params})
    for name, (sub, parser, hf_dir, image_dir, split) in _VISDOC.items():
        registry[name] = MMEBTask(name, "visdoc", sub, "ndcg@5", "global", parser,
                                  {"data_file": hf_dir, "image_dir": image_dir, "split": split,
                                   "instruction": _VISDOC_PROMPT})
    return registry


MMEB_V2_TASKS: dict[str, MMEBTask] = _build_registry()
MMEB_V2_GROUPS = ("image", "video", "visdoc")  # also accepted in ``tasks=``


# ----------------------------------------------------------------------------------------------------
# Reading files (shared with mrmr.py)
# ----------------------------------------------------------------------------------------------------

DATA_SUFFIXES = (".parquet", ".jsonl", ".json")
_FRAME_SUFFIXES = {".jpg", ".jpeg", ".png"}
_IMAGE_TOKEN = re.compile(r"<\|image_\d+\|>")


def data_files(path: Path, config: str | None = None, split: str | None = None) -> list[Path]:
    """The data files of one dataset: ``path`` itself, or the .parquet/.jsonl/.json files under it.

    A snapshot of a Hugging Face dataset repository may hold several configs and splits: with ``config``
    only the sub-folder of that name is read (when it exists); with ``split`` only files named
    ``<split>*`` or inside a ``<split>`` folder (when there are any).
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    base = path / config if config and (path / config).is_dir() else path
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(base).parts))
    if split:
        chosen = [p for p in files if p.name.startswith(split) or split in p.relative_to(base).parts[:-1]]
        files = chosen or files
    if not files:
        raise FileNotFoundError(f"{path}: no .parquet, .jsonl or .json data file")
    return files


def read_file(path: Path) -> list[dict]:
    """Rows of one .parquet (needs pyarrow), .jsonl or .json (a list of objects, or one object) file."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(f"reading {path} needs pyarrow (pip install pyarrow)") from exc
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: invalid JSON ({exc})") from exc
        return rows
    data = json.loads(path.read_text())
    return data if isinstance(data, list) else [data]


def read_records(path: Path, config: str | None = None, split: str | None = None) -> list[dict]:
    """All rows of a dataset folder or file; each row gets ``_source``: the file it came from."""
    rows = []
    for file in data_files(path, config, split):
        for row in read_file(file):
            if not isinstance(row, dict):
                raise ValueError(f"{file}: a record must be an object, got {type(row).__name__}")
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
        raise ValueError(f"{where}: unsupported image value of type {type(cell).__name__}")

    def file(self, path: Path, base_dir: Path, where: str) -> Path:
        path = path if path.is_absolute() else base_dir / path
        if path not in self._seen:
            if not path.is_file():
                raise FileNotFoundError(f"{where}: image file {path} does not exist")
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


def sample_frames(frame_dir: Path, num_frames: int | None, where: str) -> list[Path]:
    """The frame images of one video (natural sort order), ``num_frames`` of them evenly spaced.

    Like VLM2Vec: indices ``linspace(0, n - 1, num_frames)`` rounded down; a video with fewer saved frames
    keeps all of them (no padding). ``num_frames=None`` keeps every frame.
    """
    if not frame_dir.is_dir():
        raise FileNotFoundError(f"{where}: frame folder {frame_dir} does not exist")
    frames = sorted((p for p in frame_dir.iterdir() if p.is_file() and p.suffix.lower() in _FRAME_SUFFIXES),
                    key=lambda p: _natural_key(p.name))
    if not frames:
        raise FileNotFoundError(f"{where}: no frame images (.jpg/.jpeg/.png) in {frame_dir}")
    if num_frames is None or num_frames >= len(frames):
        return frames
    return [frames[i] for i in np.linspace(0, len(frames) - 1, num_frames).astype(int)]


# ----------------------------------------------------------------------------------------------------
# Items, candidate pools, task assembly
# ----------------------------------------------------------------------------------------------------


def _clean(text: Any) -> str:
    """A text field without the ``<|image_1|>`` placeholder tokens (the image is its own part)."""
    if text is None:
        return ""
    return _IMAGE_TOKEN.sub("", str(text)).strip()


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist"):
        return list(value.tolist())
    return [value]


def make_item(text: str = "", images: Iterable[Path] = (), instruction: str | None = None) -> Any:
    """The smallest item form: a str, a Path, or a dict with text/image(s)/instruction (None if empty)."""
    images = list(images)
    if not text and not images:
        return None
    if not instruction and not images:
        return text
    if not instruction and not text and len(images) == 1:
        return images[0]
    item: dict[str, Any] = {}
    if instruction:
        item["instruction"] = instruction
    if len(images) == 1:
        item["image"] = images[0]
    elif images:
        item["images"] = images
    if text:
        item["text"] = text
    return item


def _content_key(item: Any) -> Any:
    if isinstance(item, Path):
        return ("path", str(item))
    if isinstance(item, dict):
        return ("dict",) + tuple((k, _content_key(item[k])) for k in sorted(item))
    if isinstance(item, (list, tuple)):
        return ("list",) + tuple(_content_key(x) for x in item)
    return ("text", item)


class CandidatePool:
    """Candidates deduplicated by content (text, instruction and image paths): one corpus id per content."""

    def __init__(self, prefix: str = "c"):
        self.prefix = prefix
        self.corpus: dict[str, Any] = {}
        self._ids: dict[Any, str] = {}

    def add(self, item: Any) -> str:
        key = _content_key(item)
        doc_id = self._ids.get(key)
        if doc_id is None:
            doc_id = f"{self.prefix}{len(self._ids)}"
            self._ids[key] = doc_id
            self.corpus[doc_id] = item
        return doc_id


@dataclass
class _Entry:
    """One query with its candidate items, the positives first (``positives``: indices into candidates)."""

    qid: str
    item: Any
    candidates: list
    positives: list[int]
    meta: dict = field(default_factory=dict)


def _assemble(spec: MMEBTask, entries: list[_Entry], eval_type: str) -> RetrievalTask:
    pool = CandidatePool()
    queries = []
    for e in entries:
        ids = [pool.add(c) for c in e.candidates]
        relevant = {ids[i]: 1.0 for i in e.positives}
        candidates = list(dict.fromkeys(ids)) if eval_type == "local" else None
        queries.append(Query(e.qid, e.item, relevant, candidates, e.meta))
    return RetrievalTask(spec.name, queries, pool.corpus, metric=spec.metric, category=spec.modality)


@dataclass
class _Context:
    root: Path
    num_frames: int | None
    images: ImageStore

    def frames_root(self, spec: MMEBTask) -> Path:
        return self.root / "video-tasks" / "frames" / spec.params["frames"]

    def frames(self, spec: MMEBTask, folder: Path, where: str) -> list[Path]:
        return sample_frames(folder, self.num_frames, f"MMEB-V2 task {spec.name}, {where}")


def _where(spec: MMEBTask, i: int, row: dict) -> str:
    return f"MMEB-V2 task {spec.name}, record {i} ({row.get('_source')})"


def _require(row: dict, keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")


def _positive_first(candidates: list, positive: int) -> tuple[list, list[int]]:
    return [candidates[positive]] + candidates[:positive] + candidates[positive + 1:], [0]


# ----------------------------------------------------------------------------------------------------
# Record formats
# ----------------------------------------------------------------------------------------------------


def _parse_image(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """ziyjiang/MMEB_Test_Instruct (also TIGER-Lab/MMEB-eval): qry_inst?, qry_text, qry_img_path,
    tgt_inst?, tgt_text[], tgt_img_path[] with the positive first; paths relative to image-tasks/MMEB
    (or to image-tasks/ itself in the older layout where mmeb_v1.tar.gz's MMEB/* was moved up)."""
    image_root = ctx.root / "image-tasks" / "MMEB"
    if not image_root.is_dir():
        image_root = ctx.root / "image-tasks"
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["qry_text", "tgt_text"], where)
        q_images = [ctx.images.file(Path(p), image_root, where)
                    for p in _as_list(row.get("qry_img_path")) if p]
        query = make_item(_clean(row.get("qry_text")), q_images, _clean(row.get("qry_inst")) or None)
        if query is None:
            raise ValueError(f"{where}: empty query (no text and no image)")
        texts, paths = _as_list(row.get("tgt_text")), _as_list(row.get("tgt_img_path"))
        if paths and texts and len(paths) != len(texts):
            raise ValueError(f"{where}: tgt_text has {len(texts)} entries but tgt_img_path {len(paths)}")
        candidates = []
        for k in range(max(len(texts), len(paths))):
            text = _clean(texts[k]) if k < len(texts) else ""
            path = paths[k] if k < len(paths) else ""
            cand = make_item(text, [ctx.images.file(Path(path), image_root, where)] if path else [])
            if cand is None:
                raise ValueError(f"{where}: target {k} is empty (no text and no image)")
            candidates.append(cand)
        if not candidates:
            raise ValueError(f"{where}: no targets")
        entries.append(_Entry(f"q{i}", query, candidates, [0]))
    return entries


def _parse_video_cls(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/{HMDB51,UCF101,Kinetics-700,Breakfast}: video_id, pos_text (the label)."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["video_id", "pos_text"], where)
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(row["video_id"]), where)
        query = make_item("", frames, spec.params["instruction"])
        entries.append(_Entry(f"q{i}", query, [str(row["pos_text"])], [0],
                              {"video_id": str(row["video_id"])}))
    return entries


def _parse_ssv2(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/SmthSmthV2: video_id, pos_text, neg_text (the whole option list, positive included)."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["video_id", "pos_text", "neg_text"], where)
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(row["video_id"]), where)
        positive = str(row["pos_text"])
        options = [positive] + [str(c) for c in _as_list(row["neg_text"]) if str(c) != positive]
        entries.append(_Entry(f"q{i}", make_item("", frames, spec.params["instruction"]), options, [0],
                              {"video_id": str(row["video_id"])}))
    return entries


def _parse_video_ret(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/{MSR-VTT,MSVD,DiDeMo,VATEX}, lmms-lab/YouCook2: a caption (or caption list: the first one) and
    the video it describes; the video is its frame folder."""
    p = spec.params
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, [p["video"], p["text"]], where)
        video = str(row[p["video"]])
        if p.get("video_is_path"):
            video = Path(video).stem
        captions = _as_list(row[p["text"]])
        if not captions:
            raise ValueError(f"{where}: empty {p['text']!r}")
        frames = ctx.frames(spec, ctx.frames_root(spec) / video, where)
        query = make_item(str(captions[0]).strip(), (), p["instruction"])
        entries.append(_Entry(f"q{i}", query, [make_item("", frames)], [0], {"video_id": video}))
    return entries


def _parse_moment(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/{QVHighlight,Charades-STA}: query, video_path. Frames: <video>/query/ is the query video,
    every other sub-folder a candidate clip; those named positive* are relevant."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["query", "video_path"], where)
        video_dir = ctx.frames_root(spec) / Path(str(row["video_path"])).stem
        if not video_dir.is_dir():
            raise FileNotFoundError(f"{where}: frame folder {video_dir} does not exist")
        query = make_item(str(row["query"]).strip(), ctx.frames(spec, video_dir / "query", where),
                          spec.params["instruction"])
        clips = sorted((d for d in video_dir.iterdir() if d.is_dir() and d.name != "query"),
                       key=lambda d: (not d.name.startswith("positive"), _natural_key(d.name)))
        positives = [k for k, d in enumerate(clips) if d.name.startswith("positive")]
        if not positives:
            raise FileNotFoundError(f"{where}: no positive* clip folder in {video_dir}")
        candidates = [make_item("", ctx.frames(spec, d, where)) for d in clips]
        entries.append(_Entry(f"q{i}", query, candidates, positives, {"video_id": video_dir.name}))
    return entries


def _clip_name(path: str) -> str:
    return str(path).split(".mp4")[0].replace("/", "_")


def _parse_momentseeker(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/MomentSeeker: query, input_frames ('' | <video>.mp4 | <image>.jpg), positive_frames and
    negative_frames ([{output_path}]); clip frames in video_frames/<output_path, '/' -> '_', no .mp4>."""
    p, root = spec.params, ctx.frames_root(spec)
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["query", "positive_frames", "negative_frames"], where)
        source = str(row.get("input_frames") or "")
        text = str(row["query"]).strip()
        if source.endswith(".mp4"):
            query = make_item(text, ctx.frames(spec, root / "video_frames" / _clip_name(source), where),
                              p["instruction_video"])
        elif source.endswith(".jpg"):
            image = ctx.images.file(Path(f"query_{source}"), root, where)
            query = make_item(text, [image], p["instruction_image"])
        else:
            query = make_item(text, (), p["instruction_text"])

        def clips(value: Any) -> list[str]:
            return [str(c["output_path"] if isinstance(c, dict) else c) for c in _as_list(value)]

        positive, negative = clips(row["positive_frames"]), clips(row["negative_frames"])
        if not positive:
            raise ValueError(f"{where}: no positive clip")
        candidates = [make_item("", ctx.frames(spec, root / "video_frames" / _clip_name(c), where))
                      for c in positive + negative]
        entries.append(_Entry(f"q{i}", query, candidates, list(range(len(positive)))))
    return entries


_OPTION_PREFIX = re.compile(r"^\s*\(?[A-Z]\)?\s*[.:)]\s*")


def _options_block(question: str, options: list[str]) -> str:
    lines = [f"({chr(ord('A') + k)}) {o}" for k, o in enumerate(options)]
    return question.rstrip() + "\nOptions:\n" + "\n".join(lines)


def _qa_entry(spec: MMEBTask, i: int, frames: list[Path], text: str, options: list[str], answer: int,
              where: str, meta: dict) -> _Entry:
    if not 0 <= answer < len(options):
        raise ValueError(f"{where}: answer index {answer} outside the {len(options)} options")
    candidates, positives = _positive_first([str(o) for o in options], answer)
    return _Entry(f"q{i}", make_item(text, frames, spec.params["instruction"]), candidates, positives, meta)


def _parse_videomme(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/Video-MME: question, videoID, options ['A. ...', ...], answer (a letter)."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["question", "videoID", "options", "answer"], where)
        options = [str(o) for o in _as_list(row["options"])]
        letter = str(row["answer"]).strip()
        if len(letter) != 1 or not letter.isalpha():
            raise ValueError(f"{where}: answer {row['answer']!r} is not an option letter")
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(row["videoID"]), where)
        text = str(row["question"]).strip() + "\n" + "\n".join(options)
        meta = {k: row[k] for k in ("question_id", "domain", "sub_category") if k in row}
        entries.append(_qa_entry(spec, i, frames, text, [_OPTION_PREFIX.sub("", o) for o in options],
                                 ord(letter.upper()) - ord("A"), where, meta))
    return entries


def _parse_nextqa(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/NExTQA (config MC): video, question, answer (index), a0..a4."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["video", "question", "answer", "a0", "a1", "a2", "a3", "a4"], where)
        options = [str(row[f"a{k}"]) for k in range(5)]
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(row["video"]), where)
        meta = {k: row[k] for k in ("qid", "type") if k in row}
        text = _options_block(str(row["question"]).strip(), options)
        entries.append(_qa_entry(spec, i, frames, text, options, int(row["answer"]), where, meta))
    return entries


def _parse_egoschema(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/EgoSchema (config Subset): video_idx, question, option [...], answer (index)."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["video_idx", "question", "option", "answer"], where)
        options = [str(o) for o in _as_list(row["option"])]
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(row["video_idx"]), where)
        text = str(row["question"]).strip() + " " + " ".join(options)
        meta = {"question_idx": row["question_idx"]} if "question_idx" in row else {}
        entries.append(_qa_entry(spec, i, frames, text, [_OPTION_PREFIX.sub("", o) for o in options],
                                 int(row["answer"]), where, meta))
    return entries


def _parse_activitynetqa(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/ActivityNetQA (the yes/no subset): video_name, question, answer ('yes' | 'no')."""
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["video_name", "question", "answer"], where)
        answer = str(row["answer"]).strip().lower()
        if answer not in ("yes", "no"):
            raise ValueError(f"{where}: answer {row['answer']!r} is neither 'yes' nor 'no'")
        frames = ctx.frames(spec, ctx.frames_root(spec) / f"v_{row['video_name']}", where)
        text = str(row["question"]).strip() + "? (A) yes; (B) no."
        entries.append(_qa_entry(spec, i, frames, text, ["yes", "no"], ["yes", "no"].index(answer), where,
                                 {"question_id": row["question_id"]} if "question_id" in row else {}))
    return entries


def _parse_mvbench(spec: MMEBTask, rows: list[dict], ctx: _Context) -> list[_Entry]:
    """VLM2Vec/MVBench: one config (or <subset>.json) per subset; question, video, candidates, answer (text).
    Frames in <subset>/<video>/."""
    data_root = ctx.root / "video-tasks" / "data"
    entries = []
    for i, row in enumerate(rows):
        where = _where(spec, i, row)
        _require(row, ["question", "video", "candidates", "answer"], where)
        subset = row.get("subset")
        if not subset:  # the config folder (or <subset>.json file) the row came from
            source = Path(row["_source"])
            base = next((b for b in (data_root / spec.name, data_root / spec.params["data_file"])
                         if b in source.parents), source.parent)
            rel = source.relative_to(base)
            subset = rel.parts[0] if len(rel.parts) > 1 else source.stem
        options = [str(c) for c in _as_list(row["candidates"])]
        answer = str(row["answer"])
        if answer not in options:
            raise ValueError(f"{where}: answer {answer!r} is not among the candidates {options}")
        frames = ctx.frames(spec, ctx.frames_root(spec) / str(subset) / str(row["video"]), where)
        text = _options_block(str(row["question"]).strip(), options)
        entries.append(_qa_entry(spec, i, frames, text, options, options.index(answer), where,
                                 {"subset": str(subset)}))
    return entries


def _visrag_image_name(corpus_id: str) -> str:
    """VLM2Vec's page-image file name for VisRAG (long ids are shortened, made unique by a hash)."""
    base, ext = Path(corpus_id).stem, Path(corpus_id).suffix
    if not ext:
        base, ext = corpus_id, ""
    return f"{base[:50]}_{hashlib.md5(corpus_id.encode('utf-8')).hexdigest()[:8]}{ext}"


def _field(row: dict, names: tuple[str, ...], where: str) -> Any:
    for name in names:
        if name in row:
            return row[name]
    raise ValueError(f"{where}: missing field {names[0]!r}")


def load_beir_qrels(rows: list[dict], what: str) -> dict[str, dict[str, float]]:
    """query id -> {doc id: grade} from rows with query-id/query_id, corpus-id/corpus_id, score; only
    grades > 0 are kept, the highest one when a pair repeats."""
    qrels: dict[str, dict[str, float]] = {}
    for i, row in enumerate(rows):
        where = f"{what}, qrels row {i} ({row.get('_source')})"
        qid = str(_field(row, ("query-id", "query_id"), where))
        did = str(_field(row, ("corpus-id", "corpus_id"), where))
        score = float(row.get("score", 1))
        if score > 0:
            docs = qrels.setdefault(qid, {})
            docs[did] = max(docs.get(did, 0.0), score)
    return qrels


def _load_visdoc(spec: MMEBTask, data_dir: Path, ctx: _Context) -> RetrievalTask:
    """BEIR layout: queries (query-id, query), corpus (corpus-id, image), qrels (query-id, corpus-id,
    score)."""
    split = spec.params["split"]
    what = f"MMEB-V2 task {spec.name}"
    qrels = load_beir_qrels(read_records(data_dir / "qrels", split=split), what)
    image_dirs = [ctx.root / "visdoc-tasks" / spec.params["image_dir"],
                  ctx.root / "visdoc-tasks" / "images" / spec.params["image_dir"]]
    corpus: dict[str, Any] = {}
    for i, row in enumerate(read_records(data_dir / "corpus", split=split)):
        where = f"{what}, corpus row {i} ({row.get('_source')})"
        did = str(_field(row, ("corpus-id", "corpus_id"), where))
        name = _visrag_image_name(did) if spec.parser == "visrag" else f"{did}.png"
        page = next((d / name for d in image_dirs if (d / name).is_file()), None)
        if page is None:
            page = ctx.images.path(row.get("image"), Path(row["_source"]).parent, where)
        if page is None:
            raise FileNotFoundError(f"{where}: no page image {name} in {image_dirs[0]} and none in the "
                                    "corpus file")
        corpus[did] = page
    queries = []
    for i, row in enumerate(read_records(data_dir / "queries", split=split)):
        where = f"{what}, query row {i} ({row.get('_source')})"
        qid = str(_field(row, ("query-id", "query_id"), where))
        if qid not in qrels:  # no relevant page: nothing to score (VLM2Vec cannot load such a query either)
            continue
        meta = {"language": row["language"]} if row.get("language") else {}
        text = str(_field(row, ("query",), where)).strip()
        if not text:
            raise ValueError(f"{where}: empty query text")
        queries.append(Query(qid, make_item(text, (), spec.params["instruction"]), qrels[qid], None, meta))
    if not queries:
        raise ValueError(f"{what}: no query has a relevant document in qrels")
    return RetrievalTask(spec.name, queries, corpus, metric=spec.metric, category=spec.modality)


_PARSERS: dict[str, Callable[[MMEBTask, list[dict], _Context], list[_Entry]]] = {
    "image": _parse_image,
    "video_cls": _parse_video_cls,
    "ssv2": _parse_ssv2,
    "video_ret": _parse_video_ret,
    "moment": _parse_moment,
    "momentseeker": _parse_momentseeker,
    "videomme": _parse_videomme,
    "nextqa": _parse_nextqa,
    "egoschema": _parse_egoschema,
    "activitynetqa": _parse_activitynetqa,
    "mvbench": _parse_mvbench,
}


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def select_tasks(registry: dict, tasks: Iterable[str] | str | None, groups: dict[str, list[str]],
                 benchmark: str) -> list[str]:
    """Registry names for ``tasks`` (names or group names, in the order given; None: all)."""
    if tasks is None:
        return list(registry)
    if isinstance(tasks, str):
        tasks = [tasks]
    chosen: list[str] = []
    unknown = []
    for name in tasks:
        if name in registry:
            chosen.append(name)
        elif name in groups:
            chosen.extend(groups[name])
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"unknown {benchmark} task(s) {unknown}; known: {sorted(registry)}"
                         + (f" or a group {sorted(groups)}" if groups else ""))
    return list(dict.fromkeys(chosen))


def mmeb_task_path(root: Path, spec: MMEBTask) -> Path | None:
    """Where the task's test data lies under ``root`` (None if absent)."""
    if spec.modality == "image":
        options = [root / "image-tasks" / spec.name]
    else:
        base = root / ("video-tasks" if spec.modality == "video" else "visdoc-tasks") / "data"
        options = [base / spec.name, base / spec.params["data_file"]]
    return next((p for p in options if p.exists()), None)


def load_mmeb_v2(root: str | Path, tasks: Iterable[str] | str | None = None, *, num_frames: int | None = 8,
                 eval_type: dict[str, str] | None = None, extract_dir: str | Path | None = None
                 ) -> list[RetrievalTask]:
    """Load MMEB-V2 tasks from ``root`` (see the module docstring and docs/benchmarks.md for the layout).

    ``tasks``: task names and/or the groups "image", "video", "visdoc" (None: all 78); an unknown name or
    a task whose data is missing raises an error naming it. ``num_frames``: frames sampled per video,
    evenly spaced (None: all saved frames). ``eval_type``: per-task override of the registry's
    "local"/"global". ``extract_dir``: where images embedded in parquet files are written (default
    ``root/.lame_images``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MMEB-V2 root {root} is not a folder")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1 or None, got {num_frames}")
    groups = {g: [n for n, s in MMEB_V2_TASKS.items() if s.modality == g] for g in MMEB_V2_GROUPS}
    names = select_tasks(MMEB_V2_TASKS, tasks, groups, "MMEB-V2")
    overrides = dict(eval_type or {})
    bad = {n: v for n, v in overrides.items() if n not in MMEB_V2_TASKS or v not in ("local", "global")}
    if bad:
        raise ValueError(f"eval_type overrides must map MMEB-V2 task names to 'local' or 'global': {bad}")
    paths = {name: mmeb_task_path(root, MMEB_V2_TASKS[name]) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        where = {n: str(Path(*_expected(MMEB_V2_TASKS[n]))) for n in missing[:5]}
        raise FileNotFoundError(f"MMEB-V2 task(s) {missing} not found under {root}; expected e.g. {where}")
    ctx = _Context(root, num_frames, ImageStore(Path(extract_dir) if extract_dir else root / ".lame_images"))
    loaded = []
    for name in names:
        spec = MMEB_V2_TASKS[name]
        if spec.modality == "visdoc":
            loaded.append(_load_visdoc(spec, paths[name], ctx))
            continue
        rows = read_records(paths[name], config=spec.params.get("config"),
                            split=spec.params.get("split", "test"))
        entries = _PARSERS[spec.parser](spec, rows, ctx)
        if not entries:
            raise ValueError(f"MMEB-V2 task {name}: no records in {paths[name]}")
        loaded.append(_assemble(spec, entries, overrides.get(name, spec.eval_type)))
    return loaded


def _expected(spec: MMEBTask) -> tuple[str, ...]:
    if spec.modality == "image":
        return ("image-tasks", spec.name)
    return ("video-tasks" if spec.modality == "video" else "visdoc-tasks", "data", spec.name)
