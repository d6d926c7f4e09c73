"""`lame bench elastic`: the summary over seeds, the targets and the report from recorded runs; its
options; the recipes it trains; and (slow) a whole quick run on the shipped reference VLM."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from helpers import SMALL_DIGITS

from lame.cli import build_parser
from lame.cli_options import from_options
from lame.errors import InvalidInput
from lame_testbed.bench.elastic import method_recipe, run_elastic, run_names
from lame_testbed.bench.elastic_report import check_targets, format_elastic, markdown_tables, plot_elastic, summarize
from lame_testbed.bench.settings import ElasticSettings

SETTINGS = ElasticSettings(ks=(0, 2), dims=(128, 32), seeds=(0, 1))


def scores(hit: float) -> dict:
    return {"hit@1": hit, "hit@1/level0": hit + 0.1, "hit@1/level1": hit - 0.1}


def recorded_runs(elastic_at: dict, fixed_at: dict, cross: float, matryoshka_32: float, truncated_32: float):
    """Two seeds of runs; seed 1 scores 0.02 above seed 0 everywhere (a paired gap has no spread)."""
    runs = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        grid = {f"{q},{d}": scores((elastic_at[q] if q == d else cross) + shift) for q in (0, 2) for d in (0, 2)}
        sizes = {f"{k},{d}": scores((elastic_at[k] if d == 128 else matryoshka_32) + shift) for k in (0, 2)
                 for d in (128, 32)}
        runs.append({"method": "elastic", "seed": seed, "train_seconds": 2.0, "test": {"grid": grid, "sizes": sizes}})
        for k in (0, 2):
            truncated = {"128": scores(fixed_at[k] + shift), "32": scores(truncated_32 + shift)}
            runs.append({"method": f"fixed-k{k}", "seed": seed, "train_seconds": 1.0,
                         "test": {"full": scores(fixed_at[k] + shift), "truncated": truncated}})
    return runs


def test_summary_pairs_seeds_and_targets_say_where_they_are_missed():
    runs = recorded_runs({0: 0.50, 2: 0.60}, {0: 0.505, 2: 0.62}, cross=0.595, matryoshka_32=0.59,
                         truncated_32=0.50)
    summary = summarize(runs, SETTINGS)
    assert summary["per_k"]["2"]["elastic"]["hit@1"]["mean"] == pytest.approx(0.61)
    assert summary["per_k"]["2"]["gap"] == pytest.approx({"mean": -0.02, "std": 0.0, "n": 2})
    assert summary["grid"]["0,2"]["gap_to_top"]["mean"] == pytest.approx(-0.005)
    assert summary["sizes"]["32"]["matryoshka_loss"]["mean"] == pytest.approx(-0.01)
    assert summary["sizes"]["32"]["truncated_loss"]["mean"] == pytest.approx(-0.12)
    targets = check_targets(summary, SETTINGS)
    within = targets["elastic_within_1_point_of_fixed_at_every_k"]
    assert not within["met"] and within["values"]["0"] == pytest.approx(-0.005)  # k = 2 is 2 points behind
    assert targets["k_top_queries_or_documents_against_any_k_within_1_point_of_top"]["met"]
    quarter = targets["quarter_size_32_matryoshka_loses_at_most_2_points_and_less_than_truncation"]
    assert quarter["met"] and quarter["values"]["truncation_loss"] == pytest.approx(0.12)
    text = format_elastic({"summary": summary, "settings": asdict(SETTINGS), "targets": targets})
    assert "target elastic_within_1_point_of_fixed_at_every_k: NOT met" in text
    assert "-2.0±0.0" in text  # the paired gap at k = 2, in points
    tables = markdown_tables({"summary": summary, "settings": asdict(SETTINGS)})
    assert "| 2 | 0.610±0.014 | 0.630±0.014 | -2.0±0.0 |" in tables and "| 32 | 0.600±0.014 (-1.0±0.0) |" in tables


def test_matryoshka_that_keeps_no_more_than_truncation_misses_its_target():
    runs = recorded_runs({0: 0.5, 2: 0.6}, {0: 0.5, 2: 0.6}, cross=0.6, matryoshka_32=0.55, truncated_32=0.59)
    quarter = check_targets(summarize(runs, SETTINGS), SETTINGS)[
        "quarter_size_32_matryoshka_loses_at_most_2_points_and_less_than_truncation"]
    assert not quarter["met"]  # loses 5 points, and more than plain truncation's 1


def test_the_figure_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    runs = recorded_runs({0: 0.5, 2: 0.6}, {0: 0.5, 2: 0.6}, cross=0.6, matryoshka_32=0.55, truncated_32=0.5)
    report = {"summary": summarize(runs, SETTINGS), "timing": {"rows": {
        "elastic k=0": {"ms_per_query": {"median": 5.0}}, "elastic k=2": {"ms_per_query": {"median": 6.0}}}}}
    assert plot_elastic(report, tmp_path / "elastic.png") == [tmp_path / "elastic.png"]
    assert (tmp_path / "elastic.png").stat().st_size > 10_000


def test_options_are_the_settings_fields_and_the_recipes_share_one_budget(tmp_path):
    args = build_parser().parse_args(["bench", "elastic", "--ks", "0", "4", "--dims", "128", "32", "--seeds", "3",
                                      "--joint-steps", "7", "--ablations"])
    settings = from_options(ElasticSettings, args)
    assert (settings.ks, settings.dims, settings.seeds, settings.joint_steps) == ((0, 4), (128, 32), (3,), 7)
    names = [name for name, _ in run_names(settings)]
    assert names == ["elastic", "fixed-k4", "fixed-k0", "elastic-no-matryoshka", "matryoshka-k4"]
    recipes = {n: method_recipe(n, settings, 3, tmp_path, tmp_path / "t.jsonl", tmp_path / n) for n in names}
    assert {json.dumps(r["stages"]) for r in recipes.values() if r["model"]["decoder"]} == \
        {json.dumps(recipes["fixed-k4"]["stages"])}  # same steps, batch and rates for every model with a decoder
    lame = {n: r["model"]["lame"] for n, r in recipes.items()}
    assert lame["elastic"]["elastic_k"] == [0, 4] and lame["elastic"]["matryoshka_dims"] == [128, 32]
    assert "matryoshka_dims" not in lame["elastic-no-matryoshka"] and "elastic_k" not in lame["matryoshka-k4"]
    assert lame["fixed-k0"]["num_reason_tokens"] == 0 and recipes["fixed-k0"]["model"]["decoder"] is None
    # one embedding head for every model (k = 0 included): the comparison is about k and d only
    assert {(v["num_embed_tokens"], v["pooling"]) for v in lame.values()} == {(1, "last")}
    assert {r["stages"][1]["steps"] for r in recipes.values()} == {7}


def test_bad_settings_and_runs_of_other_settings_are_refused(tmp_path):
    for bad, flag in ((replace(SETTINGS, ks=(2, 0)), "--ks"), (replace(SETTINGS, dims=(32, 128)), "--dims")):
        with pytest.raises(InvalidInput, match=flag):
            run_elastic(replace(bad, output=str(tmp_path / "x")))
    finished = tmp_path / "out" / "runs" / "elastic-seed0.json"
    finished.parent.mkdir(parents=True)
    finished.write_text(json.dumps({"settings": {**asdict(SETTINGS), "joint_steps": 3}}))
    with pytest.raises(InvalidInput, match=r"elastic-seed0.json was made with other settings \(joint_steps\)"):
        run_elastic(replace(SETTINGS, output=str(tmp_path / "out")), data_dir=tmp_path)
    recipe = method_recipe("elastic", SETTINGS, 0, tmp_path, tmp_path / "t.jsonl", tmp_path / "w")
    older_head = {**recipe["model"]["lame"], "num_embed_tokens": 4, "pooling": "mean"}  # the method since redefined
    finished.write_text(json.dumps({"settings": asdict(SETTINGS), "model": older_head}))
    with pytest.raises(InvalidInput, match=r"elastic-seed0.json was made with other settings \(model\)"):
        run_elastic(replace(SETTINGS, output=str(tmp_path / "out")), data_dir=tmp_path)


@pytest.mark.slow
def test_a_quick_bench_on_the_reference_vlm(tmp_path):
    """Every part of the report from a real (tiny-budget) run: training, scoring, timing, targets, figure."""
    from lame_testbed.digits import generate_digits_benchmark

    generate_digits_benchmark(tmp_path / "digits", seed=3, **SMALL_DIGITS)
    settings = replace(ElasticSettings(output=str(tmp_path / "out")).quick_version(), jobs=2)
    report = run_elastic(settings, data_dir=tmp_path / "digits")
    assert [(r["method"], r["seed"]) for r in report["runs"]] == run_names(settings)
    assert set(report["summary"]["grid"]) == {"0,0", "0,2", "2,0", "2,2"}
    assert set(report["timing"]["rows"]) == {"elastic k=0", "elastic k=2", "fixed k=0", "fixed k=2"}
    assert report["training_records"] == 2 * SMALL_DIGITS["train_queries_per_level"]
    assert Path(report["plots"][0]).is_file() and (tmp_path / "out" / "elastic.json").is_file()
    assert "query k (rows) x document k (columns)" in format_elastic(report)
