"""`lame bench speed` and `lame bench encode` in quick mode (no timing assertions). The encode pipeline
they measure is tested in test_encode.py, batched featurisation in test_featurize.py."""

from __future__ import annotations

import json
import math

from lame.cli import main
from lame.experiments.bench.speed import SpeedSettings, methods


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
