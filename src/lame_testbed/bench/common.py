"""What the benchmarks share: the model they load or build, the machine they record, synthetic inputs."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lame.modeling import LaMEModel, build_tiny_model

WORDS = ("zero one two three four five six seven eight nine plus minus times digit image picture answer "
         "question result reason step first second third find another retrieve document").split()


def resolve_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_base_model(model: str | Path | None, backbone: str, device: torch.device, dtype: str = "float32",
                    num_reason_tokens: int = 8, shape: str | None = None, layers: int | None = None,
                    vision_layers: int | None = None) -> LaMEModel:
    """A saved LaME folder (``model``), a random model of a real architecture (``shape``, optionally
    truncated to ``layers`` / ``vision_layers`` blocks: :mod:`lame.modeling.shapes`), or a tiny random
    one of ``backbone``; no decoder head."""
    torch_dtype = getattr(torch, dtype)
    if model:
        base = LaMEModel.from_pretrained(model, dtype=torch_dtype, device=device)
    elif shape:
        from lame.modeling.shapes import build_shaped_model

        base = build_shaped_model(shape, layers, vision_layers, dtype=torch_dtype, device=device, seed=0,
                                  use_decoder=False, num_reason_tokens=num_reason_tokens, max_length=8192)
    else:
        base = build_tiny_model(backbone, seed=0, use_decoder=False, num_reason_tokens=num_reason_tokens,
                                max_length=4096)
        base = base.to(device=device, dtype=torch_dtype)
    return base.eval()


def random_image(seed: int, size: int | tuple[int, int]) -> Image.Image:
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def words(seed: int, n: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


@contextmanager
def torch_threads(threads: int | None):
    """Intra-op CPU threads for the run (None: leave torch's setting). On a shared machine fewer threads than
    cores avoids OpenMP threads waiting on each other while the OS runs someone else's process."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, clock: str = "wall") -> float:
    """Seconds ``fn()`` takes: wall-clock time, or (``clock="cpu"``) this process's CPU time, which on a
    CPU shared with other tenants counts the work done and not the time spent waiting for a core (it
    equals latency only with one torch thread and nothing else running in the process)."""
    now = time.perf_counter if clock == "wall" else time.process_time
    synchronize(device)
    start = now()
    fn()
    synchronize(device)
    return now() - start


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def environment(device: torch.device) -> dict:
    """Hardware and library versions, recorded next to every benchmark's numbers."""
    versions = {}
    for name in ("lame", "torch", "transformers", "tokenizers", "numpy", "pillow", "accelerate"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": str(device),
        "versions": versions,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_report(report: dict, output: str | Path | None, name: str) -> Path | None:
    """Writes ``report`` as ``output/<name>.json`` (the folder created); nothing when ``output`` is None."""
    if output is None:
        return None
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
