"""Video parts of items: a video file (decoded with PyAV, the ``video`` extra) or a folder of frames.

An item names a video as ``{"video": PATH, "num_frames": N}`` (a dict item, or a part of an
interleaved one); ``PATH`` is a video file (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``) or a
folder of frame images (``.jpg``, ``.jpeg``, ``.png``). Frames are sampled as VLM2Vec samples them: the
frames in natural order (``frame_2`` before ``frame_10``), ``N`` of them at ``linspace(0, count - 1, N)``
(rounded down), or every frame when there are ``N`` or fewer (no padding). ``num_frames`` defaults to
:data:`DEFAULT_NUM_FRAMES`.

Each sampled frame keeps its time in seconds, which Qwen2.5-VL (time-aligned positions) and Qwen3-VL
(timestamps written between frames) read: from the file's timestamps; for a folder, from its ``fps``
when the item gives one (``{"video": FOLDER, "fps": 1}``: the folder holds one frame per second),
otherwise the sampled frames are taken to be 0.5 s apart (the 2 frames per second the Qwen2.5-VL
processor assumes without metadata).

The model reads a video through its backbone's own video input (``pixel_values_videos`` and
``video_grid_thw``), not as separate images: :class:`lame.modeling.adapters.QwenVLAdapter`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .images import load_image

DEFAULT_NUM_FRAMES = 8
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
UNKNOWN_FPS_SPACING = 0.5  # seconds between sampled frames of a folder without fps


@dataclass
class Video:
    """Sampled frames (RGB, all of the first frame's size) and their times in seconds."""

    frames: list[Image.Image]
    timestamps: list[float]
    source: str = ""
    size: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        if not self.frames:
            raise ValueError(f"video {self.source!r} has no frames")
        if len(self.timestamps) != len(self.frames):
            raise ValueError(f"{len(self.timestamps)} timestamps for {len(self.frames)} frames")
        self.frames = [f.convert("RGB") for f in self.frames]
        first = self.frames[0].size
        self.frames = [f if f.size == first else f.resize(first, Image.Resampling.BICUBIC) for f in self.frames]
        self.size = first

    def resized(self, width: int, height: int) -> "Video":
        """The same video with every frame resized to ``width`` x ``height``."""
        frames = [f.resize((width, height), Image.Resampling.BICUBIC) for f in self.frames]
        return Video(frames, list(self.timestamps), self.source)


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``frame_2`` before ``frame_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def sample_indices(count: int, num_frames: int | None) -> list[int]:
    """``num_frames`` indices of ``count`` frames, evenly spread from the first to the last (VLM2Vec's
    ``linspace`` rounded down); all of them when ``num_frames`` is None or not less than ``count``."""
    if num_frames is None or num_frames >= count:
        return list(range(count))
    return np.linspace(0, count - 1, num_frames, dtype=int).tolist()


def load_video(source: Any, num_frames: int | None = DEFAULT_NUM_FRAMES, fps: float | None = None,
               base_dir: Path | None = None) -> Video:
    """A :class:`Video` from a video file, a folder of frames or a list of frames (images or paths:
    already sampled, all of them are used); raises ValueError naming the problem."""
    if isinstance(source, Video):
        return source
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1):
        raise ValueError(f"'num_frames' must be a positive integer, got {num_frames!r}")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0):
        raise ValueError(f"'fps' must be a positive number, got {fps!r}")
    if isinstance(source, (list, tuple)):
        frames = [load_image(frame, base_dir) for frame in source]
        return Video(frames, _folder_times(list(range(len(frames))), fps, len(frames)), "frames")
    if not isinstance(source, (str, Path)):
        raise ValueError(f"a video is a file, a folder of frames or a list of frames, not {type(source).__name__}")
    path = Path(source)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if path.is_dir():
        return _load_folder(path, num_frames, fps)
    if not path.is_file():
        raise ValueError(f"video {str(path)!r} does not exist")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"video {str(path)!r}: not a video file ({', '.join(VIDEO_SUFFIXES)}) or a folder of frames")
    return _decode_file(path, num_frames)


def frame_files(folder: Path) -> list[Path]:
    """The frame images of a folder, in natural order."""
    names = sorted((p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
                   key=natural_key)
    return [folder / name for name in names]


def _load_folder(folder: Path, num_frames: int | None, fps: float | None) -> Video:
    files = frame_files(folder)
    if not files:
        raise ValueError(f"video folder {str(folder)!r} holds no frame images ({', '.join(FRAME_SUFFIXES)})")
    indices = sample_indices(len(files), num_frames)
    frames = [load_image(files[i]) for i in indices]
    return Video(frames, _folder_times(indices, fps, len(indices)), str(folder))


def _folder_times(indices: list[int], fps: float | None, count: int) -> list[float]:
    if fps:
        return [i / fps for i in indices]
    return [k * UNKNOWN_FPS_SPACING for k in range(count)]


def _decode_file(path: Path, num_frames: int | None) -> Video:
    from ..extras import require

    av = require("av", extra="video", feature=f"reading the video file {path.name}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"video {str(path)!r} has no video stream")
            stream = container.streams.video[0]
            count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
            if not count:
                raise ValueError(f"video {str(path)!r} has no frames")
            wanted = set(sample_indices(count, num_frames))
            rate = float(stream.average_rate or 1)
            container.seek(0)
            frames, times = [], []
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    frames.append(frame.to_image())
                    times.append(float(frame.time) if frame.time is not None else index / rate)
                if index >= max(wanted):
                    break
    except av.error.FFmpegError as exc:
        raise ValueError(f"video {str(path)!r} could not be decoded ({exc})") from exc
    if not frames:
        raise ValueError(f"video {str(path)!r} has no decodable frames")
    return Video(frames, times, str(path))
