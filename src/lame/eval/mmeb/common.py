"""What every MMEB-V2 task family shares: the task spec, items, candidate pools and task assembly."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InvalidInput, MissingPath
from ..tasks import Query, RetrievalTask
from .files import ImageStore, row_where, sample_frames
from .layout import data_candidates, find_frames_root, frames_candidates

_IMAGE_TOKEN = re.compile(r"<\|image_\d+\|>")


@dataclass(frozen=True)
class MMEBTask:
    name: str
    modality: str  # "image" | "video" | "visdoc"
    subcategory: str  # e.g. "classification", "vqa", "retrieval", "grounding", "moment", "qa", "vidore-v1"
    metric: str  # "hit@1" (image, video) or "ndcg@5" (visdoc)
    eval_type: str  # "local" or "global"
    parser: str  # which record format the task's test file has (a key of _PARSERS)
    params: dict = field(default_factory=dict)  # file names, field names, frame folder, instruction


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


def _assemble(spec: MMEBTask, entries: list[_Entry], eval_type: str, pool_first: Iterable[Any] = ()
              ) -> RetrievalTask:
    """The task from its entries. ``pool_first``: candidates put in the corpus before any entry's (a global
    task's fixed candidate list, e.g. every class label, whether or not a query has it as its answer)."""
    pool = CandidatePool()
    for item in pool_first:
        pool.add(item)
    queries = []
    for e in entries:
        ids = [pool.add(c) for c in e.candidates]
        relevant = {ids[i]: 1.0 for i in e.positives}
        candidates = list(dict.fromkeys(ids)) if eval_type == "local" else None
        queries.append(Query(e.qid, e.item, relevant, candidates, e.meta))
    return RetrievalTask(spec.name, queries, pool.corpus, metric=spec.metric, category=spec.modality)


_SAME = object()  # "the task's num_frames"

# QVHighlight / Charades-STA relevance: VLM2Vec's published moment-retrieval parser keeps ONE label per
# query (``label_name`` = the last ``positive*`` folder os.listdir yields); the other positive clips stay
# in the candidate list as non-relevant. "all" (every positive clip relevant) is the other reading.
DEFAULT_MOMENT_POSITIVES = "last"


@dataclass
class _Context:
    """What the parsers share: the root, the extraction store and the protocol options of load_mmeb_v2."""

    root: Path
    num_frames: int | None
    images: ImageStore
    num_clip_frames: int | None = 8
    pad_frames: bool = False
    candidate_instruction: str = "none"  # "none" | "upstream"
    moment_positives: str = DEFAULT_MOMENT_POSITIVES  # "last" | "all"
    _frame_roots: dict = field(default_factory=dict)

    def frames_root(self, spec: MMEBTask) -> Path:
        if spec.name not in self._frame_roots:
            found = find_frames_root(self.root, spec)
            if found is None:
                looked = [str(Path("video-tasks", "frames", c)) for c in frames_candidates(spec)]
                raise MissingPath(f"MMEB-V2 task {spec.name}: no frame folder under {self.root}; looked for "
                                  f"{looked} (lame eval --benchmark mmeb-v2 --check-data ROOT says how to get it)")
            self._frame_roots[spec.name] = found
        return self._frame_roots[spec.name]

    def data_paths(self, spec: MMEBTask) -> list[Path]:
        return [self.root / c for c in data_candidates(spec)]

    def frames(self, spec: MMEBTask, folder: Path, where: str, num_frames: Any = _SAME) -> list[Path]:
        """The frames of one video: ``num_frames`` of them (default: the task's), None for all."""
        n = self.num_frames if num_frames is _SAME else num_frames
        return sample_frames(folder, n, f"MMEB-V2 task {spec.name}, {where}", pad=self.pad_frames)

    def target(self, spec: MMEBTask) -> str | None:
        """The candidate instruction: VLM2Vec's TASK_INST_TGT with candidate_instruction="upstream", else
        none (the leaderboard's reference evaluation encodes candidates without an instruction)."""
        return spec.params.get("target") if self.candidate_instruction == "upstream" else None


def _where(spec: MMEBTask, i: int, row: dict) -> str:
    return f"MMEB-V2 task {spec.name}, {row_where(row, i)}"


def _require(row: dict, keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise InvalidInput(f"{where}: missing field(s) {missing}")


def _positive_first(candidates: list, positive: int) -> tuple[list, list[int]]:
    return [candidates[positive]] + candidates[:positive] + candidates[positive + 1:], [0]
