"""Samples a run skips (a bad record or item): each listed in ``skipped-<rank>.jsonl``, counted over all
processes (the count is part of the run's progress, so it survives a resume), and summarised in one
line with the first reasons."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..data.items import ItemError

EXAMPLES = 3  # reasons of skipped samples kept for the printed summaries


class SkipLog:
    def __init__(self, output: Path, rank: int, world: int, progress, sampler):
        """``progress``: the run's :class:`~lame.training.resume.Progress` (its ``skipped`` is the count);
        ``sampler``: the :class:`~lame.training.data.MixtureSampler` the samples come from."""
        self.output, self.rank, self.world = output, rank, world
        self.progress, self.sampler = progress, sampler
        self.file = output / f"skipped-{rank}.jsonl"
        self.examples: list[str] = []  # the first skipped samples' reasons (all processes)
        self.reported = progress.skipped  # the count at the last printed summary

    def record(self, source: int, index: int, exc: Exception) -> str:
        """Lists a skipped sample: the step that drew it, its source, file and 1-based line number, and
        why; returns the reason with paths relative to the file's folder."""
        data = self.sampler.sources[source]
        line = int(data.line_numbers[index])
        reason = exc.reason if isinstance(exc, ItemError) else str(exc)
        with self.file.open("a") as f:
            f.write(json.dumps({"step": self.progress.global_step + 1, "source": data.name, "file": str(data.path),
                                "line": line, "reason": reason}) + "\n")
        return reason.replace(str(data.path.parent) + os.sep, "")

    def count(self, count: int, mine: list[str]) -> None:
        """Adds a batch's skipped samples (``count`` over all processes, ``mine`` this process's
        reasons) to the count and, while fewer than EXAMPLES are known, to the examples."""
        self.progress.skipped += count
        if len(self.examples) >= EXAMPLES:
            return
        if self.world > 1:  # every process takes this branch alike: the count is global
            gathered = [None] * self.world
            torch.distributed.all_gather_object(gathered, mine)
            mine = [reason for reasons in gathered for reason in reasons]
        self.examples += mine[: EXAMPLES - len(self.examples)]

    def new_summary(self) -> str | None:
        """The summary line when samples were skipped since the last one, else None."""
        if self.progress.skipped <= self.reported:
            return None
        self.reported = self.progress.skipped
        return self.summary()

    def summary(self, final: bool = False) -> str:
        """One line: how many samples were skipped, the first reasons, and where the list is."""
        count, drawn = self.progress.skipped, self.sampler.draws
        listing = self.file if self.world == 1 else self.output / "skipped-<rank>.jsonl"
        share = f" ({100 * count / drawn:.1f}%)" if drawn else ""
        reasons = "; ".join(self.examples)
        more = f"; +{count - len(self.examples)} more" if count > len(self.examples) else ""
        return (f"skipped {count} of {drawn} samples drawn{share}{'' if final else ' so far'}: {reasons}{more}. "
                f"Every skipped sample is listed in {listing}")
