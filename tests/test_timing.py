"""The side-by-side timing helper of the quickstart and `lame bench quality` (a fake clock: no real timing)."""

from __future__ import annotations

import pytest

from lame_testbed.bench.timing import encode_timing, format_encode_timing, ratio, time_interleaved


class FakeClock:
    """Each call of a method costs what ``costs`` says for the current round; the clock advances by it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_calls_are_interleaved_round_by_round_and_summarised():
    clock, order = FakeClock(), []
    # round r: "a" costs 1 s, "b" 2 s; round 2 is a slow moment that doubles both
    costs = {"a": [1.0, 1.0, 2.0, 1.0], "b": [2.0, 2.0, 4.0, 2.0]}

    def call(name):
        order.append(name)
        clock.now += costs[name][sum(1 for o in order if o == name) - 1]

    timings = time_interleaved({"a": lambda: call("a"), "b": lambda: call("b")}, repeats=3, warmup=1, clock=clock)
    assert order == ["a", "b"] * 4  # one warm-up round, then three timed rounds, alternating
    assert timings["a"].rounds == [1.0, 2.0, 1.0] and timings["b"].rounds == [2.0, 4.0, 2.0]
    assert (timings["a"].median, timings["a"].low, timings["a"].high) == (1.0, 1.0, 2.0)
    # per-round ratios: the slow round slows both methods alike, the ratio stays 2
    assert ratio(timings, "b", "a").rounds == [2.0, 2.0, 2.0]


def test_repeats_must_be_positive():
    with pytest.raises(ValueError, match="repeats"):
        time_interleaved({"a": lambda: None}, repeats=0)


class CountingModel:
    def __init__(self):
        self.batch_sizes = []

    def encode(self, items, batch_size):
        self.batch_sizes.append(batch_size)


def test_encode_timing_reports_every_model_and_batch_size_with_ratios():
    models = {"discriminative": CountingModel(), "lame": CountingModel()}
    report = encode_timing(models, ["q"] * 8, batch_sizes=(1, 4), repeats=2, reference="discriminative")
    assert models["lame"].batch_sizes == [1, 1, 1, 4, 4, 4]  # warm-up + 2 rounds per batch size
    for key in ("batch1", "batch4"):
        assert set(report[key]) == {"discriminative", "lame"}
        assert report[key]["discriminative"]["ratio"] == 1.0
        assert len(report[key]["lame"]["rounds"]) == 2
    lines = format_encode_timing(report)
    assert "ratio to discriminative" in lines[0] and lines[2].lstrip().startswith("lame") and " x" in lines[2]
