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

from collections.abc import Iterable
from pathlib import Path

from ...errors import InvalidInput, MissingPath
from ..tasks import RetrievalTask
from .common import CandidatePool, MMEBTask, _assemble, _Context, make_item
from .files import DATA_SUFFIXES, ImageStore, data_files, read_file, read_records, sample_frames
from .image import IMAGE_TASKS, parse_image
from .video import VIDEO_PARSERS, VIDEO_TASKS
from .visdoc import VISDOC_PROMPT, VISDOC_TASKS, load_beir_qrels, load_visdoc

__all__ = ["CandidatePool", "DATA_SUFFIXES", "ImageStore", "MMEBTask", "MMEB_V2_GROUPS", "MMEB_V2_TASKS",
           "data_files", "load_beir_qrels", "load_mmeb_v2", "make_item", "mmeb_task_path", "read_file",
           "read_records", "sample_frames", "select_tasks"]


def _build_registry() -> dict[str, MMEBTask]:
    registry: dict[str, MMEBTask] = {}
    for sub, names in IMAGE_TASKS.items():
        for name in names:
            registry[name] = MMEBTask(name, "image", sub, "hit@1", "local", "image")
    for name, (sub, eval_type, parser, frames, data_file, params) in VIDEO_TASKS.items():
        registry[name] = MMEBTask(name, "video", sub, "hit@1", eval_type, parser,
                                  {"frames": frames, "data_file": data_file, **params})
    for name, (sub, parser, hf_dir, image_dir, split) in VISDOC_TASKS.items():
        registry[name] = MMEBTask(name, "visdoc", sub, "ndcg@5", "global", parser,
                                  {"data_file": hf_dir, "image_dir": image_dir, "split": split,
                                   "instruction": VISDOC_PROMPT})
    return registry


MMEB_V2_TASKS: dict[str, MMEBTask] = _build_registry()
MMEB_V2_GROUPS = ("image", "video", "visdoc")  # also accepted in ``tasks=``


def _parser(spec: MMEBTask):
    return parse_image if spec.parser == "image" else VIDEO_PARSERS[spec.parser]


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
        raise InvalidInput(f"unknown {benchmark} task(s) {unknown}; known: {sorted(registry)}"
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
        raise MissingPath(f"MMEB-V2 root {root} is not a folder")
    if num_frames is not None and num_frames < 1:
        raise InvalidInput(f"num_frames must be >= 1 or None, got {num_frames}")
    groups = {g: [n for n, s in MMEB_V2_TASKS.items() if s.modality == g] for g in MMEB_V2_GROUPS}
    names = select_tasks(MMEB_V2_TASKS, tasks, groups, "MMEB-V2")
    overrides = dict(eval_type or {})
    bad = {n: v for n, v in overrides.items() if n not in MMEB_V2_TASKS or v not in ("local", "global")}
    if bad:
        raise InvalidInput(f"eval_type overrides must map MMEB-V2 task names to 'local' or 'global': {bad}")
    paths = {name: mmeb_task_path(root, MMEB_V2_TASKS[name]) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        where = {n: str(Path(*_expected(MMEB_V2_TASKS[n]))) for n in missing[:5]}
        raise MissingPath(f"MMEB-V2 task(s) {missing} not found under {root}; expected e.g. {where}")
    ctx = _Context(root, num_frames, ImageStore(Path(extract_dir) if extract_dir else root / ".lame_images"))
    loaded = []
    for name in names:
        spec = MMEB_V2_TASKS[name]
        if spec.modality == "visdoc":
            loaded.append(load_visdoc(spec, paths[name], ctx))
            continue
        rows = read_records(paths[name], config=spec.params.get("config"),
                            split=spec.params.get("split", "test"))
        entries = _parser(spec)(spec, rows, ctx)
        if not entries:
            raise InvalidInput(f"MMEB-V2 task {name}: no records in {paths[name]}")
        loaded.append(_assemble(spec, entries, overrides.get(name, spec.eval_type)))
    return loaded


def _expected(spec: MMEBTask) -> tuple[str, ...]:
    if spec.modality == "image":
        return ("image-tasks", spec.name)
    return ("video-tasks" if spec.modality == "video" else "visdoc-tasks", "data", spec.name)
