"""MMEB-V2 (78 tasks: 36 image, 18 video, 24 visual-document) from a local folder in its published layout.

Nothing is downloaded. ``root`` is laid out like the evaluation root of VLM2Vec (TIGER-AI-Lab/VLM2Vec,
``experiments/public/data/download_data.sh`` + ``experiments/public/eval/{image,video,visdoc}.yaml``):
the TIGER-Lab/MMEB-V2 repository (images and video frames) with each task's test file next to it::

    root/image-tasks/MMEB/... or image-tasks/<Task>/   images (MMEB-V2 image-tasks/mmeb_v1.tar.gz)
    root/image-query/<Task>/*.parquet                  ziyjiang/MMEB_Test_Instruct, subset <Task>
                                                       (or image-tasks/<Task>/*.parquet)
    root/video-tasks/frames/video_{cls,ret,mret,qa}/.../<video>/*.jpg
    root/video-tasks/data/<Task>/ or <file>.jsonl      the test set of VLM2Vec/<Task>
    root/visdoc-tasks/data/<Task>/{queries,corpus,qrels}/*.parquet   BEIR-style test set
    root/visdoc-tasks/<Dir>/<page>.png                 optional pre-extracted page images

Every accepted folder name is in ``layout.py``; :func:`check_mmeb_v2` reports what is present and the
command that fetches each missing part (``lame eval --benchmark mmeb-v2 --check-data ROOT``).

docs/benchmarks.md gives the full tree, the fields read per task and every decision taken where the
published material was ambiguous. Image and video tasks are scored by Hit@1, visual-document tasks by
nDCG@5. "local" tasks rank each query's own candidate list (positive first); "global" tasks rank the
deduplicated pool of all candidates (plus the corpus for visual-document tasks).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from ...errors import InvalidInput, MissingPath
from ..tasks import RetrievalTask
from .common import DEFAULT_MOMENT_POSITIVES, CandidatePool, MMEBTask, _assemble, _Context, make_item
from .files import (
    DATA_SUFFIXES,
    ImageStore,
    data_files,
    default_image_cache,
    read_file,
    read_records,
    sample_frames,
)
from .image import IMAGE_TASKS, parse_image
from .labels import VIDEO_CLS_LABELS
from .layout import IMAGE_TEST_REPO, DataPart, check_parts, data_candidates, find_task_data, format_check
from .video import VIDEO_PARSERS, VIDEO_TASKS
from .visdoc import _OTHER_NAMES, VISDOC_PROMPT, VISDOC_TARGET, VISDOC_TASKS, load_beir_qrels, load_visdoc

__all__ = [
    "DATA_SUFFIXES",
    "MMEB_V2_GROUPS",
    "MMEB_V2_TASKS",
    "VIDEO_CLS_LABELS",
    "CandidatePool",
    "DataPart",
    "ImageStore",
    "MMEBTask",
    "check_mmeb_v2",
    "data_files",
    "format_check",
    "load_beir_qrels",
    "load_mmeb_v2",
    "make_item",
    "mmeb_task_path",
    "read_file",
    "read_records",
    "sample_frames",
    "select_tasks",
]

# the leaderboard's frame count (Qwen3-VL-Embedding's reference evaluation, VLM2Vec's mmeb_v2_video_64f.yaml);
# VLM2Vec's public video.yaml samples 8
DEFAULT_NUM_FRAMES = 64
DEFAULT_NUM_CLIP_FRAMES = 8  # num_clip_frames of QVHighlight / Charades-STA in every published config
_CHOICES = {"candidate_instruction": ("none", "upstream"), "moment_positives": ("last", "all"),
            "label_pool": ("fixed", "test")}


def _build_registry() -> dict[str, MMEBTask]:
    registry: dict[str, MMEBTask] = {}
    for sub, names in IMAGE_TASKS.items():
        for name in names:
            registry[name] = MMEBTask(name, "image", sub, "hit@1", "local", "image", {"hf": IMAGE_TEST_REPO})
    for name, (sub, eval_type, parser, frames, data_names, hf, params) in VIDEO_TASKS.items():
        registry[name] = MMEBTask(name, "video", sub, "hit@1", eval_type, parser,
                                  {"frames": frames, "data_names": data_names, "hf": hf, **params})
    for name, (sub, parser, hf, image_dir, split) in VISDOC_TASKS.items():
        data_names = tuple(dict.fromkeys((name, hf.split("/")[-1], *_OTHER_NAMES.get(name, ()))))
        registry[name] = MMEBTask(name, "visdoc", sub, "ndcg@5", "global", parser,
                                  {"data_names": data_names, "hf": hf, "image_dir": image_dir, "split": split,
                                   "instruction": VISDOC_PROMPT, "target": VISDOC_TARGET})
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


def _groups() -> dict[str, list[str]]:
    return {g: [n for n, s in MMEB_V2_TASKS.items() if s.modality == g] for g in MMEB_V2_GROUPS}


def mmeb_task_path(root: Path, spec: MMEBTask) -> Path | None:
    """Where the task's test data lies under ``root`` (None if absent)."""
    return find_task_data(Path(root), spec)


def check_mmeb_v2(root: str | Path, tasks: Iterable[str] | str | None = None) -> list[DataPart]:
    """What the selected tasks need under ``root``: each part found or missing, with the command that gets
    a missing one (:func:`format_check` prints it). Reads no data file."""
    names = select_tasks(MMEB_V2_TASKS, tasks, _groups(), "MMEB-V2")
    return check_parts(Path(root), [MMEB_V2_TASKS[n] for n in names])


def _positive(name: str, value: int | None, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")


def load_mmeb_v2(root: str | Path, tasks: Iterable[str] | str | None = None, *,
                 num_frames: int | str | None = DEFAULT_NUM_FRAMES,
                 num_clip_frames: int | str | None = DEFAULT_NUM_CLIP_FRAMES,
                 num_samples: int | None = None, pad_frames: bool = False, eval_type: dict[str, str] | None = None,
                 candidate_instruction: str = "none", moment_positives: str = DEFAULT_MOMENT_POSITIVES,
                 label_pool: str = "fixed",
                 extract_dir: str | Path | None = None) -> list[RetrievalTask]:
    """Load MMEB-V2 tasks from ``root`` (see the module docstring and docs/benchmarks.md for the layout).

    ``tasks``: task names and/or the groups "image", "video", "visdoc" (None: all 78); an unknown name or
    a task whose data is missing raises an error naming it.

    Protocol options (docs/benchmarks.md says which published setting each default follows):

    * ``num_frames``: frames sampled per video, evenly spaced (default 64, the leaderboard's; VLM2Vec's
      public configs use 8; None or "all": every saved frame). Moment-retrieval query videos use it too.
    * ``num_clip_frames``: frames per candidate clip of QVHighlight / Charades-STA (default 8, as
      published; None or "all": every saved frame). MomentSeeker uses every saved frame of its clips and
      query videos, as VLM2Vec does.
    * ``num_samples``: only the first that many records of each task (VLM2Vec's num_sample_per_subset);
      SmthSmthV2 is always cut to its first 1,000, as every published config does.
    * ``pad_frames``: sample short videos with repetition up to ``num_frames`` (VLM2Vec ``main`` since
      June 2026) instead of using their saved frames as they are (the leaderboard's reference).
    * ``eval_type``: per-task override of the registry's "local"/"global".
    * ``candidate_instruction``: "none" (default; the leaderboard's reference evaluation encodes
      candidates without instruction) or "upstream" (VLM2Vec's target instructions: ``tgt_inst`` of the
      image data, TASK_INST_TGT of the video and visual-document parsers).
    * ``moment_positives``: "last" (default; one relevant clip per query of QVHighlight / Charades-STA,
      the last ``positive*`` folder in directory-listing order, as VLM2Vec's published parser labels it;
      the other positive clips count as non-relevant candidates) or "all" (every ``positive*`` clip is
      relevant).
    * ``label_pool``: "fixed" (global video classification ranks the published label list: 700 / 51 /
      101 / 10 classes, as VLM2Vec does) or "test" (only the labels the test file uses).
    * ``extract_dir``: where images stored inside parquet files are written (default
      ``$LAME_CACHE/images``, i.e. ``~/.cache/lame/images``).
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingPath(f"MMEB-V2 root {root} is not a folder")
    num_frames = None if num_frames == "all" else num_frames
    num_clip_frames = None if num_clip_frames == "all" else num_clip_frames
    _positive("num_frames", num_frames)
    _positive("num_clip_frames", num_clip_frames)
    _positive("num_samples", num_samples)
    for option, value in (("candidate_instruction", candidate_instruction), ("moment_positives", moment_positives),
                          ("label_pool", label_pool)):
        if value not in _CHOICES[option]:
            raise InvalidInput(f"{option} must be one of {_CHOICES[option]}, got {value!r}")
    names = select_tasks(MMEB_V2_TASKS, tasks, _groups(), "MMEB-V2")
    overrides = dict(eval_type or {})
    bad = {n: v for n, v in overrides.items() if n not in MMEB_V2_TASKS or v not in ("local", "global")}
    if bad:
        raise InvalidInput(f"eval_type overrides must map MMEB-V2 task names to 'local' or 'global': {bad}")
    paths = _task_paths(root, names)
    ctx = _Context(root, num_frames, ImageStore(Path(extract_dir) if extract_dir else default_image_cache()),
                   num_clip_frames=num_clip_frames, pad_frames=pad_frames, candidate_instruction=candidate_instruction,
                   moment_positives=moment_positives)
    for name in names:  # every frame folder before any record is parsed
        if MMEB_V2_TASKS[name].modality == "video":
            ctx.frames_root(MMEB_V2_TASKS[name])
    loaded = []  # a loop, not a comprehension: _label_pool's warning points at the caller (stacklevel)
    for name in names:
        loaded.append(_load_task(MMEB_V2_TASKS[name], paths[name], ctx, num_samples, overrides.get(name), label_pool))
    return loaded


def _task_paths(root: Path, names: list[str]) -> dict[str, Path]:
    """Each task's test data under ``root``; one error naming every task whose data is missing."""
    paths = {name: find_task_data(root, MMEB_V2_TASKS[name]) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        where = {n: data_candidates(MMEB_V2_TASKS[n]) for n in missing[:5]}
        raise MissingPath(f"MMEB-V2 task(s) {missing} not found under {root}; looked for e.g. {where} "
                          "(lame eval --benchmark mmeb-v2 --check-data ROOT lists what is missing and how to get it)")
    return paths


def _load_task(spec: MMEBTask, path: Path, ctx: _Context, num_samples: int | None, eval_type: str | None,
               label_pool: str) -> RetrievalTask:
    """One task from its test data (``num_samples``: at most that many records; ``eval_type``: an override)."""
    cap = min((n for n in (num_samples, spec.params.get("num_samples")) if n), default=None)
    if spec.modality == "visdoc":
        return load_visdoc(spec, path, ctx, cap)
    rows = read_records(path, config=spec.params.get("config"), split=spec.params.get("split", "test"))
    entries = _parser(spec)(spec, rows[:cap] if cap else rows, ctx)
    if not entries:
        raise InvalidInput(f"MMEB-V2 task {spec.name}: no records in {path}")
    task_type = eval_type or spec.eval_type
    return _assemble(spec, entries, task_type, _label_pool(spec, entries, task_type, label_pool))


def _label_pool(spec: MMEBTask, entries: list, eval_type: str, label_pool: str) -> list[str]:
    """The fixed label list a global classification task ranks (VLM2Vec's corpus for these tasks)."""
    labels = VIDEO_CLS_LABELS.get(spec.name)
    if labels is None or eval_type != "global" or label_pool != "fixed":
        return []
    unknown = sorted({str(c) for e in entries for c in e.candidates} - set(labels))
    if unknown:
        warnings.warn(f"MMEB-V2 task {spec.name}: {len(unknown)} label(s) of the test file are not in the "
                      f"published label list (e.g. {unknown[:3]}); they are added to the candidate pool",
                      stacklevel=4)  # the caller of load_mmeb_v2
    return labels
