"""`lame bench speed`, `encode`, `train` and `index` in quick mode (no timing assertions). The encode pipeline
they measure is tested in test_encode.py, batched featurisation in test_featurize.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from tolerances import FORWARD

from lame.cli import main
from lame_testbed.bench.speed import SpeedSettings, methods


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
    assert report["allclose"] and report["max_abs_difference"] <= FORWARD  # the same items in other batches
    assert report["settings"]["items"] == 40 and sum(report["items"].values()) == 40
    assert all(v > 0 for v in report["items"].values())  # text, single-image and multi-image items
    assert report["speedup"] > 0 and "speed-up" in capsys.readouterr().out


def test_bench_train_quick_compares_both_loops(tmp_path, capsys):
    assert main(["bench", "train", "--quick", "--threads", "1", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "train.json").read_text())
    assert set(report["rows"]) == {"lame train", "plain loop"}
    assert all(row["samples_per_s"] > 0 for row in report["rows"].values())
    assert report["speedup"] > 0 and "lame train / plain loop" in capsys.readouterr().out


def test_bench_encode_realistic_corpus_with_packing(tmp_path):
    assert main(["bench", "encode", "--quick", "--items", "24", "--corpus", "realistic", "--packing", "--device",
                 "cpu", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "encode.json").read_text())
    assert report["allclose"] and report["settings"]["packing"]
    assert report["items"]["text"] and report["items"]["single_image"]


@pytest.mark.slow  # 40 s: every part of scripts/gpu-check.sh end to end on the tiny config
def test_gpu_check_script_runs_tiny_on_cpu(tmp_path):
    """scripts/gpu-check.sh runs this module on a GPU; --tiny runs every part on the tiny config."""
    from lame_testbed.bench.gpucheck import run_gpu_check

    report = run_gpu_check(tmp_path, tiny=True, log=lambda *_: None)
    saved = json.loads((tmp_path / "gpu-check.json").read_text())
    assert set(saved["parts"]) == {"speed", "train", "encode"}
    assert not any("error" in part for part in report["parts"].values()), report["parts"]
    train = report["parts"]["train"]
    assert {"lora, GradCache chunk 2", "lora, whole batch", "full, GradCache chunk 2", "full, whole batch"} <= set(train)
    assert all(train[k]["samples_per_s"] for k in train if "," in k)
    assert report["parts"]["encode"]["packed"]["allclose"]


def test_recipes_take_shape_backbones(tmp_path):


    from lame.training.recipe import RecipeError, recipe_from_dict
    from lame.training.trainer import dry_run

    (tmp_path / "train.jsonl").write_text('{"query": "a", "positive": "b"}\n')
    raw = {"model": {"backbone": "shape:qwen2-vl-2b/2", "decoder": "shape", "lame": {"num_reason_tokens": 8}},
           "data": {"sources": [{"path": "train.jsonl"}]},
           "stages": [{"name": "s", "steps": 1, "batch_size": 4, "trainable": [{"pattern": "latent_embeddings"}]}]}
    report = dry_run(recipe_from_dict(raw, tmp_path))
    groups = {g["pattern"]: g["parameters"] for g in report[0]["groups"]}
    assert groups["latent_embeddings"] == 9 * 1536 and report[0]["memory"]["recipe"]["peak"] > 0
    for backbone, decoder in (("shape:qwen9", "shape"), ("shape:qwen2-vl-2b", "/models/Qwen3-0.6B")):
        with pytest.raises(RecipeError, match="model"):
            recipe_from_dict({**raw, "model": {"backbone": backbone, "decoder": decoder}}, tmp_path)


def test_cot_goal_is_extrapolated_from_two_shorter_rows():
    from lame_testbed.bench.speed import extrapolate_cot

    rows = [{"family": "cot", "batch_size": 32, "k": k, "name": f"cot-N{k}", "ratio_vs_reference": 1 + 0.1 * k}
            for k in (16, 64)]
    value, sources = extrapolate_cot(rows, 32, 256)
    assert value == pytest.approx(1 + 0.1 * 256) and sources == ["cot-N16", "cot-N64"]
    assert extrapolate_cot(rows, 1, 256) is None and extrapolate_cot(rows[:1], 32, 256) is None


def test_bench_index_quick_compares_four_methods(tmp_path, capsys):
    pytest.importorskip("milvus_lite", reason="the 'milvus' extra (pymilvus, milvus-lite) is not installed")
    assert main(["bench", "index", "--quick", "--threads", "1", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "index.json").read_text())
    rows = {(r["backend"], r["kind"]): r for r in report["rows"]}
    assert set(rows) == {("faiss", "flat"), ("faiss", "hnsw"), ("milvus-lite", "flat"), ("milvus-lite", "hnsw")}
    assert rows["faiss", "flat"]["recall_at_k"] == rows["milvus-lite", "flat"]["recall_at_k"] == 1.0  # both exact
    dim = report["settings"]["dim"]
    for row in rows.values():
        assert 0 < row["recall_at_k"] <= 1 and row["build_s"] > 0 and row["queries_per_s"] > 0
        assert row["build_cpu_s"] > 0 and row["queries_per_cpu_s"] > 0 and row["batched_queries_per_s"] > 0
        # worst case in float32 (u = 2^-24): d u for the dot product in any order, d/2 u for each of the two
        # renormalisations (query, vector: the error of a norm), u for the stored result
        assert row["max_score_error"] <= (2 * dim + 1) * 2.0**-24
    assert report["settings"]["vectors"] == 2000 and report["settings"]["dim"] == 64
    assert report["environment"]["index_versions"]["milvus-lite"]
    assert "milvus-lite  hnsw" in capsys.readouterr().out


def test_exact_top_k_merges_its_blocks():
    from lame_testbed.bench.index import exact_top_k, unit_vectors

    corpus, queries = unit_vectors(45_000, 8, 0), unit_vectors(5, 8, 1)  # three blocks of 20,000
    expected = np.argsort(-(queries.astype(np.float64) @ corpus.astype(np.float64).T), axis=1)[:, :10]
    assert np.array_equal(exact_top_k(corpus, queries, 10), expected)
