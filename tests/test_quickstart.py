"""The quickstart's pieces: the digits tasks, training subsets, method recipes, summaries and targets."""

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from lame.errors import InvalidInput
from lame_testbed.bench.quality import check_targets, run_quality, summarize, summarize_sweep
from lame_testbed.digits import generate_digits_benchmark
from lame_testbed.families import FAMILIES
from lame_testbed.quickstart.run import digits_task, method_recipe, training_file
from lame_testbed.quickstart.settings import METHODS, PEERS, QuickstartSettings
from lame.modeling import LaMEModel
from lame.training.recipe import recipe_from_dict


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    generate_digits_benchmark(out, train_queries_per_level=20, test_queries_per_level=10, test_text_queries_per_level=2,
                              val_queries_per_level=4, val_text_queries_per_level=1)
    return out


@pytest.mark.parametrize("split", ["test", "val"])
def test_a_query_never_ranks_its_own_image(digits, split):
    task = digits_task(digits / split)
    assert task.group_by == "task"
    for query in task.queries:
        own = set(query.meta["query_ids"])
        assert own and not own & set(query.candidates)
        assert set(query.candidates) == set(task.corpus) - own


def test_subset_keeps_the_first_queries_of_each_task(digits):
    task = digits_task(digits / "test", per_task=3)
    tasks = [q.meta["task"] for q in task.queries]
    assert sorted(tasks) == sorted(["level0", "level1", "level2", "level3", *FAMILIES] * 3)


def test_training_subset_is_balanced_seeded_and_resolvable(digits, tmp_path):
    from lame.training.data import JsonlSource

    assert training_file(digits, None, 0, tmp_path) == digits / "train.jsonl"
    path = training_file(digits, 14, 0, tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["task"] for r in rows) == sorted(["level0", "level1", "level2", "level3", *FAMILIES] * 2)
    originals = {json.loads(line)["id"] for line in (digits / "train.jsonl").read_text().splitlines()}
    assert {r["id"] for r in rows} <= originals
    again = training_file(digits, 14, 0, tmp_path / "again").read_text()
    other = training_file(digits, 14, 1, tmp_path / "other").read_text()
    assert again == path.read_text() and other != again
    source = JsonlSource(str(path))  # image paths resolve wherever the subset file lies
    for line in range(len(rows)):
        example = source.read(line)
        for item in [example.query, *example.positives]:
            images = ([item["image"]] if "image" in item else item.get("images", [])) if isinstance(item, dict) else []
            assert all(Path(p).is_file() for p in images)


def test_every_method_gets_the_same_budget(tmp_path):
    settings = QuickstartSettings()
    backbone = tmp_path / "vlm"
    recipes = {name: method_recipe(name, settings, backbone, tmp_path / "train.jsonl", tmp_path / name)
               for name in PEERS}
    # the same steps in all, batch and learning rates; one-stage ablations spend the warm-up's steps jointly
    budgets = {name: (sum(s["steps"] for s in r["stages"]), {s["batch_size"] for s in r["stages"]},
                      sorted({g["lr"] for s in r["stages"] for g in s["trainable"]})) for name, r in recipes.items()}
    assert len({json.dumps(b, default=sorted) for b in budgets.values()}) == 1, budgets
    for name, recipe in recipes.items():
        method, lame = METHODS[name], recipe["model"]["lame"]
        assert lame["num_reason_tokens"] == method.k
        assert (recipe["model"]["decoder"] is not None) == method.decoder
        assert lame.get("variant", "lame") == method.variant
        patterns = [g["pattern"] for g in recipe["stages"][-1]["trainable"]]  # the joint stage
        assert "backbone.model.language_model.*" in patterns and not any("visual" in p for p in patterns)
        assert ("decoder_head.*" in patterns) == method.decoder


def test_ablations_change_only_what_they_name(tmp_path):
    base = method_recipe("lame", QuickstartSettings(), tmp_path, tmp_path / "t.jsonl", tmp_path / "o")
    for name, method in METHODS.items():
        replace(QuickstartSettings(), **method.changes)  # every change is a real settings field
        if method.k == 8 and method.decoder and method.variant == "lame":
            other = method_recipe(name, QuickstartSettings(), tmp_path, tmp_path / "t.jsonl", tmp_path / "o")
            changed = {k for k in base["model"]["lame"] if base["model"]["lame"][k] != other["model"]["lame"][k]}
            changed |= {"stages"} if base["stages"] != other["stages"] else set()
            lame = METHODS["lame"]
            head = {"num_embed_tokens", "pooling"} if (method.embed_tokens, method.pooling) != (
                lame.embed_tokens, lame.pooling) else set()
            assert changed <= set(method.changes) | {"stages"} | head, name


def test_recipes_validate(digits, tmp_path):
    (tmp_path / "vlm" / "decoder").mkdir(parents=True)
    for name in PEERS:
        recipe = method_recipe(name, QuickstartSettings(), tmp_path / "vlm", digits / "train.jsonl", tmp_path / name)
        recipe_from_dict(recipe)


def _run(method, seed, families, level0=0.95, decoded=None, pairs=None, reasoning=0.25):
    test = {"hit@1": families, "hit@1/level0": level0, "hit@1/reasoning": reasoning, "hit@1/families": families}
    run = {"method": method, "seed": seed, "pairs": pairs, "test": test, "train_seconds": 1.0}
    if decoded is not None:
        run["decoded_test"] = {name: decoded for name in FAMILIES}
    return run


def test_unknown_methods_are_refused_before_any_run(tmp_path):
    for methods, sweep in ((["lame", "nope"], []), (["lame"], ["discriminative", "nope"])):
        with pytest.raises(InvalidInput, match=r"\['nope'\]"):
            run_quality(tmp_path / "q", methods, [0], sweep_methods=sweep, sweep_pairs=[250])
    assert not (tmp_path / "q").exists()


def test_finished_runs_with_other_settings_are_refused(tmp_path, monkeypatch):
    import lame_testbed.digit_vlm as digit_vlm
    import lame_testbed.quickstart.run as quickstart_run

    monkeypatch.setattr(quickstart_run, "ensure_data", lambda: tmp_path)
    monkeypatch.setattr(digit_vlm, "reference_backbone", lambda: tmp_path)
    run = tmp_path / "q" / "runs" / "lame-all-seed0.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({"settings": {**vars(QuickstartSettings()), "joint_steps": 1150}}))
    with pytest.raises(InvalidInput, match="joint_steps"):
        run_quality(tmp_path / "q", ["lame"], [0])


def test_a_run_recorded_before_a_setting_existed_counts_as_trained_with_its_default(tmp_path):
    from lame_testbed.bench.quality import _check_finished_runs

    run = tmp_path / "runs" / "lame-all-seed0.json"
    run.parent.mkdir(parents=True)
    older = {k: v for k, v in json.loads(json.dumps(vars(QuickstartSettings()))).items() if k != "noisy_positives"}
    run.write_text(json.dumps({"settings": older}))
    _check_finished_runs(tmp_path, [("lame", 0, None)], QuickstartSettings())  # reused
    from lame_testbed.bench.quality import model_definition

    current = model_definition("lame", QuickstartSettings())
    assert current["lame"]["num_embed_tokens"] == METHODS["lame"].embed_tokens and current["decoder"]
    run.write_text(json.dumps({"settings": older, "model": {**current, "lame": {**current["lame"],
                                                                                   "num_embed_tokens": 1}}}))
    with pytest.raises(InvalidInput, match=r"model\.lame"):  # trained before the method's head changed
        _check_finished_runs(tmp_path, [("lame", 0, None)], QuickstartSettings())
    run.write_text(json.dumps({"settings": older}))
    with pytest.raises(InvalidInput, match="noisy_positives"):
        _check_finished_runs(tmp_path, [("lame", 0, None)], QuickstartSettings(noisy_positives=0.5))


def test_summary_and_targets_from_runs():
    runs = [_run("discriminative", 0, 0.70), _run("discriminative", 1, 0.74), _run("discriminative", 2, 0.72),
            _run("discriminative-matched", 0, 0.78), _run("discriminative-matched", 1, 0.80),
            _run("discriminative-matched", 2, 0.76),
            # LaME: +8 points over discriminative on every seed; over the matched control +1, +1, +3
            _run("lame", 0, 0.79, decoded=0.95, level0=0.92), _run("lame", 1, 0.81, decoded=0.93, level0=0.94),
            _run("lame", 2, 0.79, decoded=0.97, level0=0.93),
            _run("cot", 0, 0.80, reasoning=0.5), _run("cot", 1, 0.80, reasoning=0.5),
            # with 250 pairs LaME leads the matched control by 4 points on every seed
            *(_run("discriminative-matched", seed, 0.50, pairs=250) for seed in range(3)),
            *(_run("lame", seed, 0.54 + 0.01 * seed, pairs=250) for seed in range(3))]
    summary = summarize([r for r in runs if r["pairs"] is None])
    assert summary["lame"]["hit@1/families"]["mean"] == pytest.approx(0.79 + 0.02 / 3)
    assert summary["lame"]["hit@1/families"]["std"] == pytest.approx(0.011547, abs=1e-6)  # sample std (ddof 1)
    assert summary["lame"]["decoded/pick"]["mean"] == pytest.approx(0.95)
    report = {"summary": summary, "runs": runs, "sweep": summarize_sweep([r for r in runs if r["pairs"]]),
              "timing": {"batch1": {"lame": {"median": 2.0}, "cot": {"median": 30.0}},
                         "batch32": {"lame": {"median": 1.0}, "cot": {"median": 5.0}}}}
    targets = check_targets(report)
    ahead = targets["lame_ahead_of_discriminative_by_5_points_on_the_families"]
    assert ahead["met"] and ahead["values"]["mean"] == pytest.approx(0.0766667, abs=1e-6)
    matched = targets["lame_ahead_of_the_position_matched_control_by_2_points_in_a_regime"]
    assert not matched["values"]["all"]["met"]  # +1.7 on average, but +1 on two seeds: within the noise
    assert matched["values"]["250"]["met"] and matched["met"]
    decoded = targets["lame_hit1_within_5_points_of_its_decoded_accuracy_and_decoded_at_least_0.90"]
    # the latents name the answer for 95 % but the embedding retrieves it for 80 %: 15 points apart
    assert decoded["values"]["decoded"] == pytest.approx(0.95) and not decoded["met"]
    level0 = targets["no_method_more_than_2_points_behind_discriminative_on_level0"]
    assert level0["values"]["lame"] == pytest.approx(-0.02) and level0["met"]
    cot = targets["lame_within_10_percent_of_cot_on_levels_1_3_and_10x_faster"]
    assert cot["values"]["quality_ratio"] == pytest.approx(0.5) and not cot["met"]
    assert cot["values"]["speedup_batch1"] == pytest.approx(15.0)
    # one seed proves nothing, however large the gap
    single = check_targets({"summary": summarize([r for r in runs if r["seed"] == 0 and r["pairs"] is None]),
                            "runs": [r for r in runs if r["seed"] == 0]})
    assert not single["lame_ahead_of_discriminative_by_5_points_on_the_families"]["met"]


def test_markdown_tables_show_both_paired_gaps_decoded_accuracy_speed_ratios_and_the_sweep():
    from lame_testbed.bench.quality_report import markdown_tables

    runs = [*(_run("discriminative", s, f) for s, f in enumerate((0.70, 0.74, 0.72))),
            *(_run("discriminative-matched", s, f) for s, f in enumerate((0.78, 0.80, 0.76))),
            *(_run("lame", s, f, decoded=0.9) for s, f in enumerate((0.79, 0.81, 0.79))),
            *(_run(m, s, 0.5, pairs=500) for m in ("discriminative-matched", "lame") for s in range(3))]
    report = {"summary": summarize([r for r in runs if r["pairs"] is None]), "runs": runs,
              "sweep": summarize_sweep([r for r in runs if r["method"] != "discriminative"]),
              "timing": {"batch1": {"discriminative": {"median": 2.0}, "lame": {"median": 2.5}},
                         "batch32": {"discriminative": {"median": 1.0}, "lame": {"median": 1.5}}}}
    tables = markdown_tables(report)
    lame = next(line for line in tables.splitlines() if line.startswith(f"| {METHODS['lame'].label}"))
    # per-seed gaps: to discriminative 9, 7, 7 points; to the matched control 1, 1, 3
    assert "| +7.7 ± 1.2 | +1.7 ± 1.2 |" in lame and "**0.797 ± 0.012**" in lame
    speed = [line for line in tables.splitlines() if line.startswith(f"| {METHODS['lame'].label}")][1]
    assert "0.900 ± 0.000" in speed and "2.50 (1.25x)" in speed and "1.50 (1.50x)" in speed
    assert "| 500 pairs | all pairs |" in tables and "| 0.500 ± 0.000 |" in tables


# ------------------------------------------------------------------ the shipped reference VLM
def test_the_shipped_reference_vlm_is_intact_and_small():
    from lame_testbed.digit_vlm import REFERENCE_DIR, reference_backbone
    from lame_testbed.digit_vlm.card import checksummed_files

    folder = reference_backbone()  # raises if a file differs from SHA256SUMS
    assert folder == REFERENCE_DIR
    weights = sum(p.stat().st_size for p in checksummed_files(folder) if p.suffix == ".safetensors")
    assert weights <= 25 * 2**20
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))  # safetensors only
    record = json.loads((folder / "pretrain.json").read_text())
    card = (folder / "README.md").read_text()
    assert "python -m lame_testbed.digit_vlm.pretrain" in card
    for level, row in record["probe"]["test"].items():  # the card's table is the recorded probe
        assert f"{row['accuracy']:.3f} ({row['queries']})" in card, level


def test_an_altered_reference_file_is_named(tmp_path):
    import shutil

    from lame.errors import UserError
    from lame_testbed.digit_vlm import REFERENCE_DIR
    from lame_testbed.digit_vlm.card import verify_checksums

    copy = tmp_path / "reference"
    shutil.copytree(REFERENCE_DIR, copy)
    verify_checksums(copy)
    original = (copy / "config.json").read_bytes()
    config = json.loads(original)
    (copy / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    with pytest.raises((UserError, ValueError), match="config.json"):
        verify_checksums(copy)
    (copy / "config.json").write_bytes(original)
    (copy / "extra.txt").write_text("x")
    with pytest.raises((UserError, ValueError), match="extra.txt"):
        verify_checksums(copy)


def test_the_reference_vlm_reads_held_out_digits(digits):
    """A behaviour check of the shipped weights: it names the digit of held-out images when it generates."""
    from lame_testbed.digit_vlm import reference_backbone
    from lame_testbed.digit_vlm.probe import load_vlm, probe

    model, featurizer, tokenizer = load_vlm(reference_backbone())
    scores = probe(model, featurizer, tokenizer, digits, "test", per_level=12)
    assert scores["0"]["accuracy"] >= 0.75 and scores["1"]["accuracy"] >= 0.5


@pytest.mark.parametrize("text,answer", [
    ("The image shows 4. 4 plus 3 is 7. The answer is seven.", "seven"),
    ("The image shows 4. The answer is four. The answer is five.", "five"),
    ("seven", "seven"), ("three then nine", "nine"), ("no number here", None), ("", None)])
def test_the_answer_of_a_generated_text(text, answer):
    from lame_testbed.digit_vlm.probe import answer_of

    assert answer_of(text) == answer


@pytest.mark.slow
def test_quickstart_end_to_end_small(tmp_path, monkeypatch):
    """The whole quickstart at a toy budget on the shipped VLM: both methods, scores, samples, plot."""
    from lame_testbed.quickstart import run as quickstart

    monkeypatch.setattr(quickstart, "CACHE", tmp_path / "cache")
    settings = replace(QuickstartSettings(), warmup_steps=2, joint_steps=2, batch_size=4, eval_every=2,
                       eval_queries_per_task=2, decode_queries_per_task=3)
    report = quickstart.run_quickstart(tmp_path / "out", settings, show_progress=False, jobs=2)
    assert set(report["methods"]) == {"discriminative", "discriminative-matched", "lame"}
    assert (tmp_path / "out" / "quickstart.png").is_file() and (tmp_path / "out" / "scores.json").is_file()
    assert len(report["samples"]["queries"]) == 4 + len(FAMILIES) + 1  # an image target per task, a word
    assert all(len(s["top"]) == 3 and s["decoded"] is not None for s in report["samples"]["queries"])
    assert set(report["methods"]["lame"]["decoded_test"]) == {"level0", "level1", "level2", "level3", *FAMILIES}
    text = quickstart.format_report(report)
    assert "discriminative" in text and "latents decode to" in text
    # both trained models timed side by side after training, with their ratio
    assert set(report["timing"]["batch1"]) == set(report["methods"]) and "ratio to discriminative" in text
    # the search page's index holds the test corpus, embedded by the trained LaME model
    from lame.index.vector_index import VectorIndex

    assert report["search"]["command"].startswith("lame serve --model ") and "--ui" in text
    index = VectorIndex.load(report["search"]["command"].split("--index ")[1].split()[0])
    corpus_size = sum(1 for _ in (quickstart.ensure_data() / "test" / "corpus.jsonl").open())
    assert len(index) == corpus_size and index.check_model(LaMEModel.from_pretrained(
        report["methods"]["lame"]["model_dir"])) is None


def test_noisy_positives_swap_a_seeded_fraction_of_pairs_and_keep_the_answers(digits, tmp_path):
    tasks = ("level0", "parity")
    clean = {r["id"]: r for r in map(json.loads, training_file(digits, None, 0, tmp_path / "clean", tasks)
                                     .read_text().splitlines())}
    path = training_file(digits, None, 0, tmp_path, tasks, noisy_positives=0.25)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    wrong = [r for r in rows if r["label"] != clean[r["id"]]["label"]]  # a positive showing something else
    assert Counter(r["task"] for r in wrong) == {"level0": 5, "parity": 5}  # 25 % of each task's 20 records
    assert all(r["positive"] == clean[r["id"]]["positive"] for r in rows if r not in wrong)
    for r in rows:  # the query and what the decoder reconstructs stay right; the label follows the positive
        assert (r["query"], r["answer"]) == (clean[r["id"]]["query"], clean[r["id"]]["answer"])
        donor = next(c for c in clean.values() if c["positive"] == r["positive"] and c["task"] == r["task"])
        assert r["label"] == donor["label"]
    again = training_file(digits, None, 0, tmp_path / "again", tasks, noisy_positives=0.25)
    assert again.read_text() == path.read_text()
    with pytest.raises(InvalidInput, match="noisy_positives"):
        training_file(digits, None, 0, tmp_path, noisy_positives=1.0)


def test_the_search_index_is_rebuilt_for_another_model_in_the_same_folder(digits, saved_tiny_model, tmp_path):
    pytest.importorskip("faiss")
    import torch

    from lame.index.vector_index import VectorIndex
    from lame_testbed.quickstart.run import search_index

    data = tmp_path / "data"  # a few documents of the test corpus, their images where the corpus expects them
    (data / "test").mkdir(parents=True)
    (data / "images").symlink_to(digits / "images", target_is_directory=True)
    (data / "test" / "corpus.jsonl").write_text("".join((digits / "test" / "corpus.jsonl").read_text()
                                                        .splitlines(keepends=True)[:6]))
    other = LaMEModel.from_pretrained(saved_tiny_model)
    with torch.no_grad():
        other.latent_embeddings.add_(1.0)
    other.save_pretrained(tmp_path / "other")
    for model_dir in (saved_tiny_model, tmp_path / "other"):  # a second quickstart run into the same output
        report = search_index(str(model_dir), data, tmp_path / "test-index")
        index = VectorIndex.load(tmp_path / "test-index" / "index")
        assert len(index) == 6 and index.check_model(LaMEModel.from_pretrained(model_dir)) is None, report


def test_training_on_some_tasks_only(digits, tmp_path):
    path = training_file(digits, None, 0, tmp_path, tasks=("level0", "parity"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert Counter(r["task"] for r in rows) == {"level0": 20, "parity": 20}
    subset = training_file(digits, 4, 0, tmp_path, tasks=("level0", "parity"))
    assert Counter(json.loads(line)["task"] for line in subset.read_text().splitlines()) == {"level0": 2, "parity": 2}
    with pytest.raises(InvalidInput, match=r"\['level9'\]"):
        training_file(digits, None, 0, tmp_path, tasks=("level9",))
