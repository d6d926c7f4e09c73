"""`lame bench speed` and `lame bench encode` in quick mode (no timing assertions), and the encode
pipeline they measure: overlapped featurisation keeps order and on_error semantics across windows."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from lame.experiments.bench.common import random_image
from lame.experiments.bench.encode import mixed_items, naive_encode
from lame.experiments.bench.speed import SpeedSettings, methods
from lame.cli import main
from lame.data.items import ItemError
from lame.modeling.lame import featurize_many
from lame.modeling.tiny import build_tiny_model


def test_bench_speed_quick_writes_every_row(tmp_path, capsys):
    assert main(["bench", "speed", "--quick", "--device", "cpu", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "speed.json").read_text())
    assert (tmp_path / "speed.png").stat().st_size > 0
    settings = SpeedSettings().quick_version()
    expected = {(m.name, bs) for m in methods(settings) for bs in settings.batch_sizes}
    assert {(r["name"], r["batch_size"]) for r in report["rows"]} == expected
    assert {"discriminative", "lame-K4", "lame-K8", "lame-K16", "lame-K32", "sequential-K8"} <= {
        name for name, _ in expected}
    assert sum(name.startswith("cot-N") for name, _ in expected) == 3 * len(settings.batch_sizes)
    for row in report["rows"]:
        assert row["latency_ms"] > 0 and math.isfinite(row["throughput_qps"]) and row["ratio_vs_reference"] > 0
    assert report["reference"] == "lame-K8"
    assert len(report["goals"]) == 3 * len(settings.batch_sizes)
    assert report["settings"]["query_tokens_actual"] == [settings.query_tokens]
    assert report["environment"]["versions"]["torch"] and report["environment"]["cpu_count"]
    printed = capsys.readouterr().out
    assert "lame-K8" in printed and "goal" in printed


def test_bench_encode_quick_writes_both_loops(tmp_path, capsys):
    assert main(["bench", "encode", "--quick", "--items", "40", "--device", "cpu", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "encode.json").read_text())
    assert set(report["rows"]) == {"naive", "encode"}
    assert report["allclose"] and report["max_abs_difference"] < 1e-5
    assert report["settings"]["items"] == 40 and sum(report["items"].values()) == 40
    assert all(v > 0 for v in report["items"].values())  # text, single-image and multi-image items
    assert report["speedup"] > 0 and "speed-up" in capsys.readouterr().out


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("qwen2_vl", seed=0, use_decoder=False, num_reason_tokens=2)


def test_encode_equals_naive_loop(model):
    items = mixed_items(20, seed=1)
    np.testing.assert_allclose(model.encode(items, batch_size=4), naive_encode(model, items, 4), atol=1e-5)


def test_batched_featurization_equals_the_featurizer(model):
    """One processor and one tokenizer call per window; the same Features, and the featurizer's own errors."""
    items = mixed_items(30, seed=2)
    items[3] = "text with <|embed|> inside"  # reserved control token
    items[5] = "   "  # empty
    items[7] = "seven " * 600  # longer than max_length
    items[9] = random_image(9, (600, 2))  # an aspect ratio the image processor refuses
    results = featurize_many(model.featurizer, items, range(len(items)))
    for index, (item, result) in enumerate(zip(items, results)):
        try:
            expected = model.featurizer(item, index=index)
        except ItemError as exc:
            assert isinstance(result, ItemError) and str(result) == str(exc)
            continue
        assert torch.equal(result.input_ids, expected.input_ids)
        if expected.pixel_values is None:
            assert result.pixel_values is None and result.image_grid_thw is None
        else:
            assert torch.equal(result.pixel_values, expected.pixel_values)
            assert torch.equal(result.image_grid_thw, expected.image_grid_thw)
    assert [i for i, r in enumerate(results) if isinstance(r, ItemError)] == [3, 5, 7, 9]


def test_overlapped_windows_keep_order_and_skip_semantics(model):
    """batch_size=2 makes 64-item windows: items in the second and third window, bad ones among them."""
    items = [f"item number {i} " + "seven " * (i % 7) for i in range(150)]
    bad = {70, 149}
    for i in bad:
        items[i] = "   "
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        emb, skipped = model.encode(items, batch_size=2, on_error="skip", return_skipped=True)
    assert [s.index for s in skipped] == sorted(bad)
    assert np.isnan(emb[sorted(bad)]).all() and not np.isnan(np.delete(emb, sorted(bad), axis=0)).any()
    probe = [0, 63, 64, 128, 148]
    np.testing.assert_allclose(emb[probe], model.encode([items[i] for i in probe]), atol=1e-5)
    with pytest.raises(ItemError, match=r"^item 70:"):
        model.encode(items, batch_size=2)
