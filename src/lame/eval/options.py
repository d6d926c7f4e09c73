"""The loader options of the published benchmarks, as `lame eval` takes them (one declaration each).

A field left at None is not passed: the loader's own default applies (docs/benchmarks.md says which
published setting each default follows). :func:`lame.eval.loaders.load_benchmark` refuses an option
the benchmark does not take.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

from ..cli_options import option


def frames(value: str) -> int | str:
    """A frame count: a positive integer, or "all" (every saved frame)."""
    if value == "all":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all', got {value!r}")
    return number


def task_scope(value: str) -> tuple[str, str]:
    """``TASK=local`` or ``TASK=global`` -> (task, scope)."""
    name, sep, scope = value.partition("=")
    if not sep or scope not in ("local", "global"):
        raise argparse.ArgumentTypeError(f"takes TASK=local or TASK=global, got {value!r}")
    return name, scope


@dataclass(frozen=True)
class BenchmarkOptions:
    """MMEB-V2 and MRMR protocol options (None: the loader's default)."""

    num_frames: int | str | None = field(default=None, metadata=option(
        "MMEB-V2: frames sampled per video, evenly spaced (default 64, the leaderboard's; VLM2Vec's public "
        "configs: 8); 'all': every saved frame", type=frames, metavar="N|all"))
    num_clip_frames: int | str | None = field(default=None, metadata=option(
        "MMEB-V2: frames per candidate clip of QVHighlight / Charades-STA (default 8, as published)",
        type=frames, metavar="N|all"))
    num_samples: int | None = field(default=None, metadata=option(
        "MMEB-V2: only the first N records of each task (num_sample_per_subset; SmthSmthV2 is always cut to "
        "1,000)", metavar="N"))
    pad_frames: bool = field(default=False, metadata=option(
        "MMEB-V2: sample short videos with repetition up to --num-frames (VLM2Vec main since June 2026; "
        "default: their saved frames as they are, the leaderboard's reference)"))
    eval_type: tuple[tuple[str, str], ...] = field(default=(), metadata=option(
        "MMEB-V2: rank a task's own candidate lists (local) or its whole pool (global) (repeatable)",
        type=task_scope, metavar="TASK=local|global", repeat=True))
    candidate_instruction: str | None = field(default=None, metadata=option(
        "MMEB-V2: none (default, the leaderboard's reference) or upstream: VLM2Vec's target instructions on "
        "candidates (tgt_inst, TASK_INST_TGT)", choices=("none", "upstream")))
    moment_positives: str | None = field(default=None, metadata=option(
        "MMEB-V2 QVHighlight / Charades-STA: one relevant clip per query, the last positive folder listed "
        "(last, default; VLM2Vec's published evaluation code) or every positive clip (all)",
        choices=("last", "all")))
    label_pool: str | None = field(default=None, metadata=option(
        "MMEB-V2 global video classification: rank the published label lists (fixed, default) or only the "
        "labels of the test file (test)", choices=("fixed", "test")))
    items: str | None = field(default=None, metadata=option(
        "MRMR: official (default): text with its <image N> placeholders plus the image column, as MRMR's "
        "evaluation code; interleaved: text pieces and the numbered images in order",
        flag="--mrmr-items", choices=("official", "interleaved")))
    extract_dir: str | None = field(default=None, metadata=option(
        "MMEB-V2 / MRMR: where images stored inside data files are extracted (default: $LAME_CACHE/images, "
        "i.e. ~/.cache/lame/images)", flag="--image-cache", metavar="DIR"))

    def loader_kwargs(self) -> dict:
        """The options given (not None), as :func:`lame.eval.loaders.load_benchmark` takes them."""
        values = asdict(self)
        values["pad_frames"] = True if self.pad_frames else None
        values["eval_type"] = dict(self.eval_type) or None
        return {name: value for name, value in values.items() if value is not None}
