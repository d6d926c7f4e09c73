"""Where each part of MMEB-V2 lies under the data root, in every published layout, and how to get a part
that is missing (``lame eval --benchmark mmeb-v2 --check-data ROOT``).

The layouts accepted are the ones VLM2Vec's download scripts and configs produce:

* images: ``image-tasks/mmeb_v1.tar.gz`` extracted (``image-tasks/MMEB/<Task>/``), or moved up as
  ``experiments/public/data/download_data.sh`` does (``image-tasks/<Task>/``);
* image test data: a snapshot of ``ziyjiang/MMEB_Test_Instruct`` in ``image-query/`` (VLM2Vec's
  ``dataset_hflocal_path.py``) or, as in its "MMEB-V2-eval overlay", ``image-tasks/<Task>/``. A folder
  there counts as test data only when it holds data files, so an extracted image folder of the same
  name is not mistaken for it;
* video frames: ``video-tasks/frames/video_{cls,ret,mret,qa}/...`` as the public configs name them, or as
  the archives extract (``video_ret/data/ziyan/video_retrieval/<Set>/frames``,
  ``video_qa/video_qa/<Set>``, ``video_mret/Charades-STA``: the 64-frame reproduction config);
* video and visual-document test data: ``video-tasks/data/`` and ``visdoc-tasks/data/``, under the task's
  name, the Hugging Face dataset's name or VLM2Vec's local file name (all listed in the registry).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import has_data_files

IMAGE_TEST_REPO = "ziyjiang/MMEB_Test_Instruct"
MEDIA_REPO = "TIGER-Lab/MMEB-V2"
_IMAGE_ARCHIVE = "image-tasks/mmeb_v1.tar.gz"
# frame archive of TIGER-Lab/MMEB-V2 per top folder: (archive, sub-folder it is extracted into)
_FRAME_ARCHIVES = {
    "video_cls": ("video-tasks/frames/video_cls.tar.gz", "video_cls"),
    "video_ret": ("video-tasks/frames/video_ret.tar.gz", "video_ret"),
    "video_mret": ("video-tasks/frames/video_mret.tar.gz", ""),
    "video_qa": ("video-tasks/frames/video_qa.tar.gz-*", ""),  # five parts, concatenated
}
_VIDEO_ARCHIVE_EXCLUDES = ("*.mp4", "*.avi", "*.mkv", "*.zip", "*.tar", "*.tar.gz")


def data_candidates(spec: Any) -> list[str]:
    """Where the task's test data may lie, relative to the root, in order of preference."""
    if spec.modality == "image":
        return [f"image-query/{spec.name}", f"image-tasks/{spec.name}"]
    base = "video-tasks/data" if spec.modality == "video" else "visdoc-tasks/data"
    return [f"{base}/{name}" for name in spec.params["data_names"]]


def find_task_data(root: Path, spec: Any) -> Path | None:
    """The task's test data under ``root`` (a folder with data files, or a data file), or None."""
    depth = 0 if spec.modality == "image" else 3
    for rel in data_candidates(spec):
        path = root / rel
        if has_data_files(path, depth):
            return path
    return None


def frames_candidates(spec: Any) -> tuple[str, ...]:
    return tuple(spec.params.get("frames", ()))


def find_frames_root(root: Path, spec: Any) -> Path | None:
    """The folder holding the task's per-video frame folders, or None."""
    base = root / "video-tasks" / "frames"
    return next((base / c for c in frames_candidates(spec) if (base / c).is_dir()), None)


def image_root(root: Path) -> Path:
    """The folder image paths of the image tasks are relative to: ``image-tasks/MMEB/`` (the archive
    extracted) or ``image-tasks/`` (its content moved up, as ``download_data.sh`` does)."""
    nested = root / "image-tasks" / "MMEB"
    return nested if nested.is_dir() else root / "image-tasks"


def find_images(root: Path) -> Path | None:
    """The extracted images of the image tasks, or None: ``image-tasks/MMEB/``, or else ``image-tasks/``
    when it holds a folder that is not test data."""
    nested = root / "image-tasks" / "MMEB"
    if nested.is_dir():
        return nested
    folder = root / "image-tasks"
    if folder.is_dir() and any(d.is_dir() and not d.name.startswith(".") and not has_data_files(d)
                               for d in folder.iterdir()):
        return folder
    return None


def page_dirs(root: Path, spec: Any) -> list[Path]:
    """Folders that may hold pre-extracted page images of a visual-document task."""
    names = dict.fromkeys([spec.params["image_dir"], spec.params["hf"].split("/")[-1]])
    return [root / "visdoc-tasks" / n for n in names] + [root / "visdoc-tasks" / "images" / n for n in names]


# ------------------------------------------------------------------------------------------------------
# What is present, what is missing, and the command that gets each missing part
# ------------------------------------------------------------------------------------------------------


@dataclass
class DataPart:
    """One part a task needs: its test data, or its images / video frames."""

    task: str
    what: str  # "test data" | "images" | "frames"
    found: Path | None
    expected: list[str]  # where it was looked for, relative to the root
    command: str | None = None  # shell command(s) that put it in place (when missing)
    source: str = ""  # what the command fetches (shared by the tasks one download serves)


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def hf_download(repo: str, local_dir: Path, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> str:
    argv = ["huggingface-cli", "download", repo, "--repo-type", "dataset"]
    if include:
        argv += ["--include", *include]
    if exclude:
        argv += ["--exclude", *exclude]
    return shlex.join(argv + ["--local-dir", str(local_dir)])


def _images_command(root: Path) -> str:
    archive = root / _IMAGE_ARCHIVE
    extract = f"tar -xzf {_q(archive)} -C {_q(root / 'image-tasks')}"
    if archive.is_file():
        return extract
    return hf_download(MEDIA_REPO, root, include=(_IMAGE_ARCHIVE,)) + " && " + extract


def _frames_command(root: Path, group: str) -> str:
    archive, into = _FRAME_ARCHIVES[group]
    frames = root / "video-tasks" / "frames"
    if group == "video_qa":
        extract = f"cat {_q(frames)}/video_qa.tar.gz-* | tar -xz -C {_q(frames)}"
        present = any(frames.glob("video_qa.tar.gz-*"))
    else:
        target = frames / into if into else frames
        extract = (f"mkdir -p {_q(target)} && " if into else "") + f"tar -xzf {_q(root / archive)} -C {_q(target)}"
        present = (root / archive).is_file()
    if present:
        return extract
    return hf_download(MEDIA_REPO, root, include=(archive,)) + " && " + extract


def _data_command(root: Path, spec: Any) -> str:
    if spec.modality == "image":
        return hf_download(IMAGE_TEST_REPO, root / "image-query", include=(f"{spec.name}/*",))
    repo = spec.params["hf"]
    if spec.modality == "video":
        return hf_download(repo, root / "video-tasks" / "data" / spec.name, exclude=_VIDEO_ARCHIVE_EXCLUDES)
    return hf_download(repo, root / "visdoc-tasks" / "data" / repo.split("/")[-1])


def check_parts(root: Path, specs: list) -> list[DataPart]:
    """Every part the selected tasks need, found or not; missing parts carry the command that gets them."""
    root = Path(root)
    parts = []
    for spec in specs:
        found = find_task_data(root, spec)
        source = f"test data of {spec.name}"
        parts.append(DataPart(spec.name, "test data", found, data_candidates(spec),
                              None if found else _data_command(root, spec), source))
        if spec.modality == "image":
            images = find_images(root)
            parts.append(DataPart(spec.name, "images", images, ["image-tasks/MMEB", "image-tasks/<Task>"],
                                  None if images else _images_command(root), "images (image-tasks/mmeb_v1.tar.gz)"))
        elif spec.modality == "video":
            frames = find_frames_root(root, spec)
            group = frames_candidates(spec)[0].split("/")[0]
            parts.append(DataPart(spec.name, "frames", frames,
                                  [f"video-tasks/frames/{c}" for c in frames_candidates(spec)],
                                  None if frames else _frames_command(root, group),
                                  f"frames ({_FRAME_ARCHIVES[group][0]})"))
    return parts


def format_check(parts: list[DataPart], root: Path, benchmark: str) -> str:
    """A report: one line per task (each part found, or where it was looked for), then the commands that
    fetch the missing parts, each once, with the tasks it serves."""
    root = Path(root)
    tasks: dict[str, list[DataPart]] = {}
    for part in parts:
        tasks.setdefault(part.task, []).append(part)
    complete = sum(all(p.found for p in ps) for ps in tasks.values())
    lines = [f"{benchmark} under {root}: {complete} of {len(tasks)} selected task(s) complete"]
    width = max((len(t) for t in tasks), default=4)
    for task, ps in tasks.items():
        status = "ok" if all(p.found for p in ps) else "missing"
        cells = []
        for p in ps:
            if p.found:
                cells.append(f"{p.what}: {_rel(p.found, root)}")
            else:
                cells.append(f"{p.what}: MISSING (looked for {', '.join(p.expected)})")
        lines.append(f"  {status:<8} {task:<{width}}  " + "; ".join(cells))
    commands: dict[str, tuple[str, list[str]]] = {}
    for p in parts:
        if not p.found and p.command:
            commands.setdefault(p.command, (p.source, []))[1].append(p.task)
    if commands:
        lines += ["", "To get the missing parts (huggingface-cli is in the huggingface_hub package):"]
        for command, (source, served) in commands.items():
            lines.append(f"# {source}, for {', '.join(dict.fromkeys(served))}")
            lines.append(command)
    return "\n".join(lines)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
