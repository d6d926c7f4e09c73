"""MRMR (Zhang et al. 2025, arXiv:2510.09510) from local snapshots of its Hugging Face datasets.

Nothing is downloaded. ``root`` holds one folder per task, each a snapshot of ``MRMRbenchmark/<folder>``::

    root/<folder>/query/test-*.parquet     id, modality, text, image, image 1..N, category? ...
    root/<folder>/corpus/test-*.parquet    id, modality, text, image, image 1..N, vision
    root/<folder>/qrels/test-*.parquet     query-id (or query_id), corpus-id (or corpus_id), score
    root/<folder>/pin_p/...                optional extra corpus documents (Knowledge)

Items are built as MRMR's own evaluation code builds them (rebeccaz4/MRMR, ``mteb/tasks/Image/
Any2AnyRetrieval/eng/*``): the record's ``text``, ``<image N>`` placeholders included, with its ``image``
column. ``items="interleaved"`` builds instead a list of text and image parts in reading order from
the numbered ``image N`` columns. Relevance is graded (``score``); the main metric is nDCG@10, except
Hit@1 for Negation, whose queries rank only their own four descriptions (``<query id>_1`` ..
``_4``), as the official predictions do. docs/benchmarks.md lists the decisions taken where the data
was ambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, MissingPath
from .mmeb import ImageStore, load_beir_qrels, read_records, select_tasks
from .mmeb.files import default_image_cache, row_where
from .mmeb.layout import DataPart, hf_download
from .tasks import Query, RetrievalTask


@dataclass(frozen=True)
class MRMRTask:
    name: str
    folder: str  # the dataset name: huggingface.co/datasets/MRMRbenchmark/<folder>
    category: str  # "knowledge" | "theorem" | "contradiction"
    metric: str
    instruction: str  # the task prompt of the MRMR evaluation code (rebeccaz4/MRMR, mteb/tasks)
    domains: dict = field(default_factory=dict)  # query "category" -> reported domain
    pool: str = "corpus"  # "corpus": every query ranks the corpus; "own": only docs "<query id>_<k>"
    pin_p: str = "own"  # extra pin_p rows keep their ids ("own", Theorem) or are distractors ("distractor")


_KNOWLEDGE_DOMAINS = {
    "Art": "Art", "Art_Theory": "Art", "Design": "Art", "Music": "Art",
    "Sociology": "Humanities", "Literature": "Humanities", "History": "Humanities",
    "Psychology": "Humanities",
    "Clinical_Medicine": "Medicine", "Diagnostics_and_Laboratory_Medicine": "Medicine",
    "Basic_Medical_Science": "Medicine", "Pharmacy": "Medicine",
    "Biology": "Science", "Chemistry": "Science", "Geography": "Science", "Agriculture": "Science",
}
_THEOREM_DOMAINS = {
    "Accounting": "Business", "Finance": "Business", "Manage": "Business", "Marketing": "Business",
    "Economics": "Business",
    "Electronics": "Engineering", "Computer_Science": "Engineering", "Mechanical_Engineering": "Engineering",
    "Materials": "Engineering", "Architecture_and_Engineering": "Engineering",
    "Math": "Math", "Physics": "Physics", "Energy_and_Power": "Physics",
}

MRMR_TASKS: dict[str, MRMRTask] = {
    t.name: t for t in (
        MRMRTask("Knowledge", "knowledge", "knowledge", "ndcg@10",
                 "Retrieve relevant documents that help answer the question.", _KNOWLEDGE_DOMAINS,
                 pin_p="distractor"),
        MRMRTask("Theorem", "theorem", "theorem", "ndcg@10",
                 "Retrieve relevant theorems that are involved in solving the problem.", _THEOREM_DOMAINS),
        MRMRTask("Negation", "negation", "contradiction", "hit@1",
                 "Given an image caption, retrieve descriptions that have contradictory information with "
                 "the image.", pool="own"),
        MRMRTask("Design", "design", "contradiction", "ndcg@10",
                 "Given a vehicle design, retrieve the design requirements that it violates."),
        MRMRTask("Traffic", "traffic", "contradiction", "ndcg@10",
                 "Given a traffic case, retrieve the driving rule documents that it violates."),
    )
}
MRMR_GROUPS = ("knowledge", "theorem", "contradiction")  # also accepted in ``tasks=``
MRMR_ITEMS = ("official", "interleaved")

_PLACEHOLDER = re.compile(r"(<image(?: \d+)?>)")
_NUMBERED = re.compile(r"image (\d+)")


def official_item(row: dict, images: ImageStore, where: str) -> Any:
    """A record as MRMR's evaluation code passes it to a model: its ``text`` as it is (``<image N>``
    placeholders included) and its ``image`` column (an image followed by the text; either may be
    absent). None when the record has neither."""
    image = images.path(row.get("image"), Path(row["_source"]).parent, where)
    text = row.get("text")
    text = str(text) if text is not None and str(text).strip() else ""
    if image is None:
        return text or None
    return {"image": image, "text": text} if text else image


def interleave(row: dict, images: ImageStore, where: str) -> list:
    """A record's text and images as parts in reading order.

    ``<image N>`` in ``text`` is replaced by the column ``image N`` and ``<image>`` by ``image``. Numbered
    images that the text never mentions follow the text (in order); when there are no numbered images, an
    unmentioned ``image`` comes first. When numbered images exist, an unmentioned ``image`` column is taken
    for a combined rendering of them and left out.
    """
    base = Path(row["_source"]).parent
    numbered: dict[int, Path] = {}
    for key, value in row.items():
        m = _NUMBERED.fullmatch(key)
        if m and (path := images.path(value, base, where)) is not None:
            numbered[int(m.group(1))] = path
    single = images.path(row.get("image"), base, where)
    parts: list = []
    used: set = set()
    for piece in _PLACEHOLDER.split(str(row.get("text") or "")):
        if _PLACEHOLDER.fullmatch(piece):
            number = piece[len("<image"):-1].strip()
            key: Any = int(number) if number else "image"
            path = numbered.get(key) if key != "image" else single
            if path is None and key in ("image", 1) and single is not None and not numbered:
                key, path = "image", single
            if path is None:
                parts.append(piece)  # a placeholder without its image stays text
            else:
                parts.append(path)
                used.add(key)
        elif piece.strip():
            parts.append(piece.strip())
    parts += [numbered[n] for n in sorted(numbered) if n not in used]
    if single is not None and not numbered and "image" not in used:
        parts.insert(0, single)
    return parts


def _task_dir(root: Path, spec: MRMRTask) -> Path | None:
    wanted = {spec.folder.lower(), spec.name.lower()}
    return next((p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() in wanted), None)


def _subdir(task_dir: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (task_dir / name).exists():
            return task_dir / name
    raise MissingPath(f"{what}: no {names[0]}/ in {task_dir}")


def _load_task(spec: MRMRTask, task_dir: Path, images: ImageStore, items: str) -> RetrievalTask:
    what = f"MRMR task {spec.name}"

    def build(row: dict, where: str) -> Any:
        if items == "interleaved":
            return interleave(row, images, where) or None
        return official_item(row, images, where)

    qrels = load_beir_qrels(read_records(_subdir(task_dir, ("qrels",), what), split="test"), what)
    corpus: dict[str, Any] = {}
    for i, row in enumerate(read_records(_subdir(task_dir, ("corpus",), what), split="test")):
        where = f"{what}, corpus {row_where(row, i)}"
        if "id" not in row:
            raise InvalidInput(f"{where}: missing field 'id'")
        item = build(row, where)
        if item is None:
            raise InvalidInput(f"{where}: empty document (no text and no image)")
        corpus[str(row["id"])] = item
    if (task_dir / "pin_p").exists():  # extra corpus documents of the Knowledge/Theorem data
        for i, row in enumerate(read_records(task_dir / "pin_p", split="test")):
            where = f"{what}, pin_p {row_where(row, i)}"
            own = str(row["id"]) if row.get("id") is not None else None
            # Knowledge: MRMR renames every pin_p row ("redo-<row>"), so no judgement can point at one
            fresh = spec.pin_p == "distractor" or own is None or own in corpus
            doc_id = f"pin_p-{i}" if fresh else own
            item = build(row, where)
            if item is not None:
                corpus[doc_id] = item
    own_docs: dict[str, list[str]] = {}
    if spec.pool == "own":
        for doc_id in corpus:
            own_docs.setdefault(doc_id.rsplit("_", 1)[0], []).append(doc_id)
    queries = []
    for i, row in enumerate(read_records(_subdir(task_dir, ("query", "queries"), what), split="test")):
        where = f"{what}, query {row_where(row, i)}"
        if "id" not in row:
            raise InvalidInput(f"{where}: missing field 'id'")
        qid = str(row["id"])
        if qid not in qrels:  # no relevant document: not scored (as in the MTEB evaluation)
            continue
        item = build(row, where)
        if item is None:
            raise InvalidInput(f"{where}: empty query (no text and no image)")
        candidates = None
        if spec.pool == "own":
            candidates = own_docs.get(qid)
            if not candidates:
                raise InvalidInput(f"{where}: no corpus document {qid}_<k> for this query to rank")
        meta = {}
        if row.get("category"):
            meta = {"category": str(row["category"]), "domain": spec.domains.get(str(row["category"]),
                                                                                 str(row["category"]))}
        query = {"instruction": spec.instruction, "parts": item} if isinstance(item, list) else \
            _with_instruction(item, spec.instruction)
        queries.append(Query(qid, query, qrels[qid], candidates, meta))
    if not queries:
        raise InvalidInput(f"{what}: no query has a relevant document in qrels")
    return RetrievalTask(spec.name, queries, corpus, metric=spec.metric, category=spec.category,
                         group_by="domain" if spec.domains else None)


def _with_instruction(item: Any, instruction: str) -> dict:
    if isinstance(item, dict):
        return {"instruction": instruction, **item}
    if isinstance(item, Path):
        return {"instruction": instruction, "image": item}
    return {"instruction": instruction, "text": item}


def check_mrmr(root: str | Path, tasks: Iterable[str] | str | None = None) -> list[DataPart]:
    """Which selected task folders are present under ``root``, with the download command of each missing one."""
    root = Path(root)
    groups = {g: [n for n, s in MRMR_TASKS.items() if s.category == g] for g in MRMR_GROUPS}
    parts = []
    for name in select_tasks(MRMR_TASKS, tasks, groups, "MRMR"):
        spec = MRMR_TASKS[name]
        found = _task_dir(root, spec) if root.is_dir() else None
        command = None if found else hf_download(f"MRMRbenchmark/{spec.folder}", root / spec.folder)
        parts.append(DataPart(name, "test data", found, [spec.folder], command, f"MRMRbenchmark/{spec.folder}"))
    return parts


def load_mrmr(root: str | Path, tasks: Iterable[str] | str | None = None, *, items: str = "official",
              extract_dir: str | Path | None = None) -> list[RetrievalTask]:
    """Load MRMR tasks from ``root`` (one folder per task; see the module docstring).

    ``tasks``: task names (Knowledge, Theorem, Negation, Design, Traffic) and/or the groups "knowledge",
    "theorem", "contradiction" (None: all five); an unknown name or a missing folder raises an error
    naming it. ``items``: "official" (text with its placeholders plus the ``image`` column, as MRMR's
    evaluation code) or "interleaved" (text pieces and the numbered images in reading order). Images
    embedded in parquet files are written once to ``extract_dir`` (default ``$LAME_CACHE/images``, i.e.
    ``~/.cache/lame/images``) so that items refer to image files.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingPath(f"MRMR root {root} is not a folder")
    if items not in MRMR_ITEMS:
        raise InvalidInput(f"items must be one of {MRMR_ITEMS}, got {items!r}")
    groups = {g: [n for n, s in MRMR_TASKS.items() if s.category == g] for g in MRMR_GROUPS}
    names = select_tasks(MRMR_TASKS, tasks, groups, "MRMR")
    dirs = {name: _task_dir(root, MRMR_TASKS[name]) for name in names}
    missing = [name for name, d in dirs.items() if d is None]
    if missing:
        expected = {n: str(root / MRMR_TASKS[n].folder) for n in missing}
        raise MissingPath(f"MRMR task(s) {missing} not found; expected folders {expected}")
    images = ImageStore(Path(extract_dir) if extract_dir else default_image_cache())
    return [_load_task(MRMR_TASKS[name], dirs[name], images, items) for name in names]
