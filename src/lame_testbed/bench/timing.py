"""Timing several models side by side: interleaved rounds, medians with their spread, ratios.

A method timed once, right after its own training, measures whatever else the machine was doing at
that moment as much as the method. Here every method runs once per round, the rounds repeat, and each
method's number is the median over rounds with the lowest and highest round beside it; ratios are
medians of per-round ratios, so a slow moment that hits one round hits every method of that round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Timing:
    """Per-round values of one quantity (e.g. ms per query): their median, lowest and highest."""

    rounds: list[float]

    @property
    def median(self) -> float:
        return float(statistics.median(self.rounds))

    @property
    def low(self) -> float:
        return min(self.rounds)

    @property
    def high(self) -> float:
        return max(self.rounds)

    def to_dict(self) -> dict:
        return {"median": self.median, "low": self.low, "high": self.high, "rounds": self.rounds}


def time_interleaved(calls: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """Seconds of each call, the calls interleaved: ``warmup`` untimed rounds, then ``repeats`` timed ones."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for call in calls.values():
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = clock()
            call()
            seconds[name].append(clock() - started)
    return {name: Timing(values) for name, values in seconds.items()}


def ratio(timings: dict[str, Timing], name: str, reference: str) -> Timing:
    """``name`` over ``reference``, round by round."""
    return Timing([a / b for a, b in zip(timings[name].rounds, timings[reference].rounds)])


def encode_timing(models: dict, items: Sequence, batch_sizes: Sequence[int] = (1, 32), repeats: int = 5,
                  reference: str | None = None) -> dict:
    """Milliseconds per query of ``model.encode(items)`` for every model at every batch size, interleaved;
    with ``reference``, each model's ratio to it. Returns a JSON-ready dict keyed ``batch{b}``."""
    report: dict = {"queries": len(items), "repeats": repeats, "reference": reference}
    for batch in batch_sizes:
        calls = {name: (lambda m=model, b=batch: m.encode(items, batch_size=b)) for name, model in models.items()}
        timings = time_interleaved(calls, repeats=repeats, warmup=1)
        per_query = {name: Timing([1000 * s / len(items) for s in t.rounds]) for name, t in timings.items()}
        row = {name: t.to_dict() for name, t in per_query.items()}
        if reference in per_query:
            for name in row:
                row[name]["ratio"] = ratio(per_query, name, reference).median
        report[f"batch{batch}"] = row
    return report


def format_encode_timing(report: dict) -> list[str]:
    """One line per model: ms/query (median, lowest-highest round) at each batch size, and the ratio."""
    batches = [key for key in report if key.startswith("batch")]
    names = list(report[batches[0]]) if batches else []
    reference = report.get("reference")
    lines = [f"ms per query, median of {report['repeats']} interleaved rounds (lowest-highest)"
             + (f"; x: ratio to {reference}, round by round" if reference else "")]
    for name in names:
        cells = []
        for key in batches:
            t = report[key][name]
            cell = f"{key[5:]:>3}: {t['median']:7.2f} ({t['low']:.2f}-{t['high']:.2f})"
            if "ratio" in t:
                cell += f" x{t['ratio']:.2f}"
            cells.append(cell)
        lines.append(f"  {name:<24}" + "   ".join(f"batch {c}" for c in cells))
    return lines


def ms_per_query(timing: dict) -> dict[str, dict[str, float]]:
    """{method: {"batch1": median ms, "batch32": ...}} from a timing report."""
    table: dict[str, dict[str, float]] = {}
    for key, row in timing.items():
        if key.startswith("batch"):
            for method, values in row.items():
                table.setdefault(method, {})[key] = values["median"]
    return table
