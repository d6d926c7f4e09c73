"""The training pipeline on tiny models: recipe validation, freezing, GradCache, kill + resume, LoRA,
bad samples, divergence and the end-of-run artefacts (all on CPU, a few steps each)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import build_tiny_baseline, gradients, noise, sum_batch, sum_record, write_jsonl
from PIL import Image
from safetensors.torch import load_file
from tolerances import FORWARD, GRADIENT, SCORE, float64_sum, rounded_to_digits, scaled

from lame import LaMEConfig, LaMEModel, build_tiny_model
from lame.errors import InvalidInput
from lame.modeling.lora import add_lora, merge_lora
from lame.training import build as build_module
from lame.training import trainer as trainer_module
from lame.training.parallel import resolve_strategy
from lame.training.params import select_trainable
from lame.training.recipe import ParamGroupSpec, RecipeError, load_recipe, recipe_from_dict
from lame.training.objective import LossWeights, StepLosses
from lame.training.trainer import Trainer, TrainingDiverged, build_model, dry_run, train

PROBE_ITEMS = ["three plus four", {"text": "six plus nine", "instruction": "add mod ten"}, "seven"]


# ----------------------------------------------------------------------------------------- helpers
def make_data(folder: Path, n: int = 24) -> Path:
    return write_jsonl(folder / "train.jsonl", [sum_record(i) for i in range(n)])


WARMUP = [{"pattern": "latent_embeddings", "lr": 1e-2}, {"pattern": "decoder_head.*", "lr": 1e-2}]
JOINT = [{"pattern": "*lora_*", "lr": 1e-2}, {"pattern": "latent_embeddings", "lr": 1e-2},
         {"pattern": "decoder_head.*", "lr": 1e-2}]


def two_stage(output_dir: Path, steps=(3, 3), **train) -> dict:
    """The two-stage recipe (warm-up of the new parts, then LoRA + new parts), tiny and fast."""
    return {
        "model": {"backbone": "tiny:qwen2_vl", "decoder": "tiny",
                  "lame": {"num_reason_tokens": 4, "temperature": 0.05}},
        "data": {"sources": [{"path": "train.jsonl"}], "negatives_per_query": 1},
        "train": {"output_dir": str(output_dir), "save_every": 2, "keep_last": 2, "log_every": 2,
                  "grad_cache_chunk": 2, **train},
        "stages": [
            {"name": "warmup", "steps": steps[0], "batch_size": 4, "trainable": WARMUP},
            # LoRA dropout makes the run depend on the RNG: resuming must restore it exactly.
            {"name": "joint", "steps": steps[1], "batch_size": 4,
             "lora": {"r": 4, "alpha": 8, "dropout": 0.1}, "trainable": JOINT},
        ],
    }


def one_stage(output_dir: Path, steps: int, **train) -> dict:
    return {
        "model": {"backbone": "tiny:qwen2_vl", "decoder": "tiny",
                  "lame": {"num_reason_tokens": 2, "temperature": 0.05}},
        "data": {"sources": [{"path": "train.jsonl"}]},
        "train": {"output_dir": str(output_dir), "save_every": 100, "log_every": 1, "tensorboard": False,
                  **train},
        "stages": [{"name": "only", "steps": steps, "batch_size": 4, "trainable": WARMUP}],
    }


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def saved_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(model_dir.rglob("*.safetensors")):
        for key, value in load_file(path).items():
            out[f"{path.relative_to(model_dir)}::{key}"] = value
    return out


def tmp_folders(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


# ------------------------------------------------------------------------------ shared full run (A)
@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """The uninterrupted two-stage run; its trainer keeps the in-memory model."""
    folder = tmp_path_factory.mktemp("run_a")
    make_data(folder)
    recipe = recipe_from_dict(two_stage(folder / "out"), folder)
    trainer = Trainer(recipe, show_progress=False)
    final = trainer.run()
    return {"folder": folder, "recipe": recipe, "trainer": trainer, "final": final, "out": folder / "out"}


# ----------------------------------------------------------------------------------- 1. validation
def test_unknown_keys_are_named_with_their_path(tmp_path):
    make_data(tmp_path)
    good = two_stage(tmp_path / "out")
    recipe_from_dict(good, tmp_path)  # the base recipe is valid

    top = {**good, "modell": {}}
    with pytest.raises(RecipeError, match=r"modell"):
        recipe_from_dict(top, tmp_path)

    nested_stage = json.loads(json.dumps(good))
    nested_stage["stages"][0]["lrr"] = 1e-3
    with pytest.raises(RecipeError, match=r"stages\[0\]\.lrr"):
        recipe_from_dict(nested_stage, tmp_path)

    nested_train = json.loads(json.dumps(good))
    nested_train["train"]["savee_every"] = 3
    with pytest.raises(RecipeError, match=r"train\.savee_every"):
        recipe_from_dict(nested_train, tmp_path)

    deep = json.loads(json.dumps(good))
    deep["stages"][1]["trainable"][0]["lrate"] = 1.0
    with pytest.raises(RecipeError, match=r"stages\[1\]\.trainable\[0\]\.lrate"):
        recipe_from_dict(deep, tmp_path)


def test_missing_data_file_is_named(tmp_path):
    raw = two_stage(tmp_path / "out")
    raw["data"]["sources"] = [{"path": "nowhere/absent.jsonl"}]
    with pytest.raises(RecipeError, match=r"absent\.jsonl") as info:
        recipe_from_dict(raw, tmp_path)
    assert str(tmp_path / "nowhere" / "absent.jsonl") in str(info.value)
    assert "data.sources[0]" in str(info.value)


@pytest.mark.parametrize("stage, pattern", [(0, "latent_embedingz"), (1, "*lora_Z*"), (0, "*lora_*")])
def test_pattern_matching_nothing_is_rejected_before_training(tmp_path, stage, pattern):
    """Stage 0 has no LoRA yet, so '*lora_*' matches nothing there; in stage 1 it is fine (next test)."""
    make_data(tmp_path)
    raw = two_stage(tmp_path / "out")
    raw["stages"][stage]["trainable"] = raw["stages"][stage]["trainable"] + [{"pattern": pattern, "lr": 1e-3}]
    recipe = recipe_from_dict(raw, tmp_path)
    index = len(raw["stages"][stage]["trainable"]) - 1
    for build in (lambda: Trainer(recipe, show_progress=False), lambda: dry_run(recipe)):
        with pytest.raises(RecipeError) as info:
            build()
        message = str(info.value)
        assert f"stages[{stage}]" in message and pattern in message
        assert f"trainable[{index}]" in message
    assert not (tmp_path / "out" / "checkpoints").exists()
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_lora_pattern_is_accepted_before_lora_exists(tmp_path):
    make_data(tmp_path)
    recipe = recipe_from_dict(two_stage(tmp_path / "out"), tmp_path)
    trainer = Trainer(recipe, show_progress=False)  # validates every stage's patterns
    assert not any("lora_" in n for n, _ in trainer.model.named_parameters())  # LoRA not added yet
    report = dry_run(recipe)
    joint = {g["pattern"]: g for g in report[1]["groups"]}
    assert joint["*lora_*"]["parameters"] > 0


# Sizes published on the checkpoints' model cards (safetensors parameter counts, 3 significant digits).
PUBLISHED = {"Qwen2-VL-2B-Instruct": 2.21e9, "Qwen2-VL-7B-Instruct": 8.29e9, "Qwen2.5-VL-3B-Instruct": 3.75e9,
             "Qwen3-VL-8B-Instruct": 8.77e9}
QWEN3_06B = 0.596e9
RECIPES = ["qwen2-vl-2b", "qwen2-vl-7b", "qwen2.5-vl-3b", "qwen3-vl-8b"]


@pytest.mark.parametrize("variant", ["", "-lora"], ids=["full", "lora"])
@pytest.mark.parametrize("name", RECIPES)
def test_dry_run_of_a_shipped_recipe_without_its_checkpoints(name, variant):
    """The checkpoint folders are not on this machine: the real architectures are built without weights.
    Stage 1 trains the new parts with the backbone frozen; stage 2 fine-tunes the whole language model
    (or, in the -lora variant, LoRA adapters on it); the vision encoder stays frozen."""
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "configs" / f"{name}{variant}.yaml", check_paths=False)
    assert not Path(recipe.model.backbone).exists()
    assert recipe.model.dtype == "bfloat16" and recipe.train.mixed_precision == "bf16"
    report = dry_run(recipe)
    warmup, joint = ({g["pattern"]: g["parameters"] for g in stage["groups"]} for stage in report)
    backbone = PUBLISHED[Path(recipe.model.backbone).name]
    assert warmup["(frozen)"] == pytest.approx(backbone, abs=rounded_to_digits(backbone, 3))
    assert warmup["decoder_head.decoder.*"] == pytest.approx(QWEN3_06B, abs=rounded_to_digits(QWEN3_06B, 3))
    if variant:
        assert sum(warmup.values()) == sum(joint.values()) - joint["*lora_*"]  # LoRA adds its adapters only
        assert 1e6 < joint["*lora_*"] < 0.02 * backbone
    else:
        language_model = joint["backbone.model.language_model.*"]
        assert 0.6 * backbone < language_model < backbone and sum(warmup.values()) == sum(joint.values())
        assert joint["(frozen)"] == warmup["(frozen)"] - language_model  # the vision encoder (and LM head)


def test_the_2b_recipe_gives_the_released_embedding_size():
    """LaME-2B's model card lists a projection dimension of 3584 (Qwen2-VL-2B's hidden size is 1536)."""
    from lame.modeling.meta import build_on_meta
    from lame.training.trainer import model_config

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "configs" / "qwen2-vl-2b.yaml", check_paths=False)
    model = build_on_meta(recipe.model.backbone, None, model_config(recipe).replace(use_decoder=False))
    assert model.embedding_dim == 3584 and model.adapter.hidden_size(model.backbone) == 1536


def test_overrides_and_bad_overrides(tmp_path):
    make_data(tmp_path)
    path = tmp_path / "recipe.yaml"
    raw = two_stage("out")
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path, ["stages.0.steps=3", "train.seed=5", "stages.1.trainable.0.lr=0.5"])
    assert recipe.stages[0].steps == 3 and recipe.train.seed == 5
    assert recipe.stages[1].trainable[0].lr == 0.5
    assert recipe.stages[1].steps == 3  # untouched
    assert Path(recipe.data.sources[0].path) == tmp_path / "train.jsonl"  # relative to the YAML file

    bad = {
        "stages.7.steps=3": r"stages\.7",  # no such stage
        "train.seed": r"train\.seed",  # no '='
        "train.savee_every=3": r"train\.savee_every",  # unknown key
        "stages.0.steps=zero": r"stages\[0\]\.steps",  # wrong type
        "stages.0.steps=0": r"stages\[0\]\.steps",  # bad value
    }
    for override, expected in bad.items():
        with pytest.raises(RecipeError, match=expected):
            load_recipe(path, [override])


# ------------------------------------------------------------------------------------- 2. freezing
def test_warmup_stage_trains_exactly_its_patterns(tmp_path, capsys):
    make_data(tmp_path)
    raw = two_stage(tmp_path / "out")
    raw["stages"][0]["warmup_steps"] = 2  # the printed groups show their own rates, not the schedule's first (0)
    recipe = recipe_from_dict(raw, tmp_path)
    initial = state(build_model(recipe))
    trainer = Trainer(recipe, show_progress=True)
    assert trainer.run(stop_after=2) is None  # stopped inside the warm-up stage
    out = capsys.readouterr().out
    assert re.search(r"latent_embeddings +\d+ params  lr 1\.0e-02", out), out
    after = state(trainer.model)
    assert after.keys() == initial.keys()

    from fnmatch import fnmatchcase

    patterns = [g["pattern"] for g in WARMUP]
    matched = {k for k in initial if any(fnmatchcase(k, p) for p in patterns)}
    assert "latent_embeddings" in matched and any(k.startswith("decoder_head.projector") for k in matched)
    unchanged_matched = sorted(k for k in matched if torch.equal(initial[k], after[k]))
    changed_frozen = sorted(k for k in initial.keys() - matched if not torch.equal(initial[k], after[k]))
    assert changed_frozen == [], f"frozen parameters changed: {changed_frozen[:5]}"
    assert unchanged_matched == [], f"trainable parameters did not change: {unchanged_matched[:5]}"


# ------------------------------------------------------------------------------------ 3. GradCache
@pytest.mark.parametrize("weights", [LossWeights(1.0, 0.0, 0.0), LossWeights(0.0, 1.0, 0.0),
                                     LossWeights(0.0, 0.0, 1.0), LossWeights(1.0, 0.7, 0.3)],
                         ids=["contrastive", "decoder", "diversity", "all"])
def test_grad_cache_equals_full_batch(train_model, weights):
    batch = sum_batch(train_model)
    full_losses, full = gradients(train_model, batch, weights, None)
    assert full["latent_embeddings"].abs().max() > 1e-4
    if weights.reconstruction:
        for name in ("decoder_head.projector.0.weight",
                     "decoder_head.decoder.model.layers.0.mlp.up_proj.weight"):
            assert full[name].abs().max() > 1e-6, name
    if weights.contrastive:
        assert full["backbone.model.language_model.layers.0.self_attn.q_proj.weight"].abs().max() > 1e-6
    for chunk in (2, 3):
        losses, chunked = gradients(train_model, batch, weights, chunk)
        for key in ("contrastive", "reconstruction", "diversity", "total"):
            expected = getattr(full_losses, key)
            assert math.isclose(getattr(losses, key), expected, rel_tol=GRADIENT), key
        for name, g in full.items():
            torch.testing.assert_close(chunked[name], g, atol=scaled(GRADIENT, g), rtol=0,
                                       msg=lambda m: f"{name} chunk {chunk}: {m}")


# --------------------------------------------------------------------------------- 4. kill + resume
@pytest.mark.parametrize("stop_after", [5, 3], ids=["inside_stage_2", "at_stage_boundary"])
def test_kill_and_resume_equals_uninterrupted(run_a, tmp_path, stop_after):
    make_data(tmp_path)
    recipe = recipe_from_dict(two_stage(tmp_path / "out"), tmp_path)
    assert Trainer(recipe, show_progress=False).run(stop_after=stop_after) is None
    assert not (tmp_path / "out" / "model").exists()
    final = Trainer(recipe, resume=True, show_progress=False).run()
    assert final == tmp_path / "out" / "model"

    expected, got = saved_weights(run_a["final"]), saved_weights(final)
    assert expected.keys() == got.keys()
    assert any("lora_B" in k for k in got)
    for key in expected:  # the resumed run redoes the same steps from the saved state: the same arithmetic
        torch.testing.assert_close(got[key], expected[key], atol=0, rtol=0, msg=lambda m: f"{key}: {m}")

    emb_a = LaMEModel.from_pretrained(run_a["final"]).encode(PROBE_ITEMS)
    emb_b = LaMEModel.from_pretrained(final).encode(PROBE_ITEMS)
    np.testing.assert_array_equal(emb_b, emb_a)

    for out in (run_a["out"], tmp_path / "out"):
        names = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert names == ["step-000004", "step-000006"]  # keep_last 2; saved at 2, 3 (stage end), 4, 6
        assert tmp_folders(out) == []


# A bfloat16 recipe whose second stage trains a language-model block that the first keeps frozen: the
# block is cast to float32 master weights at the stage boundary, not before.
LM_BLOCK = "backbone.model.language_model.layers.1.*"


def bf16_two_stage(output_dir: Path) -> dict:
    raw = two_stage(output_dir, steps=(2, 2), save_every=1, keep_last=4, grad_cache_chunk=None, tensorboard=False)
    raw["model"]["dtype"] = "bfloat16"
    raw["stages"][1] = {"name": "joint", "steps": 2, "batch_size": 4,
                        "trainable": [{"pattern": LM_BLOCK, "lr": 1e-3}, *WARMUP]}
    return raw


@pytest.fixture(scope="module")
def run_bf16(tmp_path_factory):
    """The uninterrupted bfloat16 run, with the dtypes each stage's optimizer was built over."""
    folder = tmp_path_factory.mktemp("run_bf16")
    make_data(folder)
    recipe = recipe_from_dict(bf16_two_stage(folder / "out"), folder)
    trainer = Trainer(recipe, show_progress=False)
    held = []  # per stage: ({name: dtype} of the model, {name: dtype} of the optimizer's parameters)
    make_optimizer = trainer.strategy.make_optimizer

    def recording(model, groups, stage, *args):
        names = {id(p): n for n, p in model.named_parameters()}
        held.append(({n: p.dtype for n, p in model.named_parameters()},
                     {names[id(p)]: p.dtype for g in groups for p in g["params"]}))
        return make_optimizer(model, groups, stage, *args)

    trainer.strategy.make_optimizer = recording
    return {"final": trainer.run(), "held": held}


def test_a_stage_holds_in_float32_only_what_it_and_earlier_stages_train(run_bf16):
    from fnmatch import fnmatchcase

    (warmup, warmup_optimized), (joint, joint_optimized) = run_bf16["held"]
    block = [n for n in joint if fnmatchcase(n, LM_BLOCK)]
    assert block and all(warmup[n] == torch.bfloat16 for n in block)  # frozen in the warm-up: model.dtype
    assert all(joint[n] == torch.float32 for n in block)  # cast at the joint stage's start
    assert warmup["backbone.model.language_model.layers.0.mlp.up_proj.weight"] == torch.bfloat16
    assert joint["backbone.model.language_model.layers.0.mlp.up_proj.weight"] == torch.bfloat16
    assert warmup["decoder_head.decoder.model.layers.0.mlp.up_proj.weight"] == torch.float32
    # every parameter an optimizer updates is a float32 master weight
    assert set(warmup_optimized.values()) == set(joint_optimized.values()) == {torch.float32}
    assert set(block) <= joint_optimized.keys()


def test_kill_and_resume_at_and_inside_the_stage_that_casts_equals_uninterrupted(run_bf16, tmp_path):
    """Killed after step 3 (inside the joint stage) and resumed from its checkpoint, or from the warm-up's
    last checkpoint (step 2, the boundary): both end bit for bit where the uninterrupted run ends."""
    make_data(tmp_path)
    recipe = recipe_from_dict(bf16_two_stage(tmp_path / "out"), tmp_path)
    assert Trainer(recipe, show_progress=False).run(stop_after=3) is None
    boundary = recipe_from_dict(bf16_two_stage(tmp_path / "boundary"), tmp_path)
    shutil.copytree(tmp_path / "out", tmp_path / "boundary")
    shutil.rmtree(tmp_path / "boundary" / "checkpoints" / "step-000003")
    expected = saved_weights(run_bf16["final"])
    for resumed in (recipe, boundary):
        final = Trainer(resumed, resume=True, show_progress=False).run()
        got = saved_weights(final)
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key].dtype == expected[key].dtype and torch.equal(got[key], expected[key]), key


# ---------------------------------------------------------------------------------------- 5. LoRA
def test_lora_save_reload_merge(run_a, tmp_path):
    trained = run_a["trainer"].model
    lora_b = {n: p for n, p in trained.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.detach().abs().max() > 0 for p in lora_b.values())  # moved from the zero init

    # the LoRA stage leaves the base weights of the backbone alone
    initial = state(build_model(run_a["recipe"]))
    for name, value in trained.state_dict().items():
        if name.startswith("backbone.") and "lora_" not in name:
            assert torch.equal(value, initial[name.replace(".base_layer.", ".")]), name

    expected = trained.encode(PROBE_ITEMS)
    reloaded = LaMEModel.from_pretrained(run_a["final"])
    assert reloaded.config.lora is not None
    np.testing.assert_array_equal(reloaded.encode(PROBE_ITEMS), expected)  # the same weights, the same code

    q_name = "backbone.model.language_model.layers.0.self_attn.q_proj"
    base_before = reloaded.get_submodule(q_name).base_layer.weight.detach().clone()
    merge_lora(reloaded)
    assert reloaded.config.lora is None
    assert not any("lora_" in n for n, _ in reloaded.named_parameters())
    assert not torch.equal(reloaded.get_submodule(q_name).weight, base_before)  # the adapter was folded in
    # W + B A folded into one weight: the same products summed another way
    np.testing.assert_allclose(reloaded.encode(PROBE_ITEMS), expected, atol=FORWARD, rtol=0)

    reloaded.save_pretrained(tmp_path / "merged")
    merged = LaMEModel.from_pretrained(tmp_path / "merged")
    assert merged.config.lora is None
    np.testing.assert_allclose(merged.encode(PROBE_ITEMS), expected, atol=FORWARD, rtol=0)


# ------------------------------------------------------------------------------- 6. bad samples
def test_missing_and_corrupt_images_are_skipped_counted_and_summarised(tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in range(3):
        pixels = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "img" / f"good{i}.png")
    (tmp_path / "img" / "corrupt.png").write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    good = (tmp_path / "img" / "good0.png").read_bytes()
    (tmp_path / "img" / "truncated.png").write_bytes(good[: len(good) // 2])

    records = [sum_record(i) for i in range(12)]
    for i in (1, 4, 6):
        records[i]["query"]["image"] = f"img/good{i % 3}.png"
    bad = {2: "missing.png", 7: "corrupt.png", 10: "truncated.png"}
    for i, name in bad.items():
        records[i]["query"]["image"] = f"img/{name}"
    # a blank line before record 5: line numbers are the file's, 1-based
    text = "".join(json.dumps(r) + "\n" + ("\n" if i == 4 else "") for i, r in enumerate(records))
    (tmp_path / "train.jsonl").write_text(text)
    line_of = {i: i + 1 + (i > 4) for i in range(12)}

    # 3 steps x batch 4 = 12 draws = exactly one pass over the 12 records: each bad one is met once
    recipe = recipe_from_dict(one_stage(tmp_path / "out", steps=3), tmp_path)
    final = train(recipe, show_progress=True)
    assert (final / "lame_heads.safetensors").is_file()

    listing = tmp_path / "out" / "skipped-0.jsonl"
    skipped = [json.loads(line) for line in listing.read_text().splitlines()]
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped"] == len(skipped) == len(bad)
    by_line = {s["line"]: s for s in skipped}
    assert sorted(by_line) == sorted(line_of[i] for i in bad)
    for i, name in bad.items():
        entry = by_line[line_of[i]]
        assert entry["file"] == str(tmp_path / "train.jsonl") and entry["source"] == "train"
        assert 1 <= entry["step"] <= 3
        assert name in entry["reason"]  # names the image file
        assert f"train.jsonl:{line_of[i]}: query:" in entry["reason"]  # and the record, by its line
    reasons = {bad[i]: by_line[line_of[i]]["reason"] for i in bad}
    assert "does not exist" in reasons["missing.png"]
    assert "could not be decoded" in reasons["corrupt.png"]
    assert "could not be decoded" in reasons["truncated.png"]

    # one line during the run (at a logged step) and one after it: count, first reasons, the list's path
    out = capsys.readouterr().out.splitlines()
    during = [line for line in out if line.startswith("skipped ") and "so far" in line]
    after = [line for line in out if line.startswith("skipped 3 of 12 samples drawn (25.0%): ")]
    assert during and len(after) == 1
    assert after[0].endswith(f"Every skipped sample is listed in {listing}")
    assert all(f"train.jsonl:{line_of[i]}: query: image" in after[0] for i in bad)
    assert str(tmp_path / "img") not in after[0]  # the summary names files, not their folders


def test_data_of_which_no_record_is_usable_stops_at_the_first_step_naming_the_reasons(tmp_path, capsys):
    from lame.cli import main

    records = [sum_record(i) for i in range(8)]
    for record in records:
        record["query"]["image"] = "img/missing.png"
    write_jsonl(tmp_path / "train.jsonl", records)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(one_stage(tmp_path / "out", steps=3)))
    assert main(["train", str(tmp_path / "recipe.yaml")]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lame train: error:")]
    assert len(error) == 1 and "every sample of a batch at step 1 was unusable" in error[0]
    assert "train.jsonl:" in error[0] and "query: image" in error[0] and "missing.png" in error[0]
    assert not (tmp_path / "out" / "final").exists()


def test_a_sample_is_featurised_in_one_batched_call_and_fails_alone(monkeypatch):
    """The trainer featurises a sample's query, positives and negatives in one batched call; the query
    goes through the model's hook (the explicit-CoT baseline adds its rationale); a bad item names its role."""
    from dataclasses import replace

    from lame.data.items import ItemError
    from lame.training.batches import featurize_example
    from lame.training.data import TrainingExample

    image = noise((28, 28), 0)
    example = TrainingExample(query={"text": "three plus four", "image": image}, positives=["seven", image],
                              negatives=["eight"], rationale="three and four make seven", where="train.jsonl:3")
    items = [example.query, *example.positives, *example.negatives]
    for model in (build_tiny_model("qwen2_vl", config=LaMEConfig(num_reason_tokens=2, use_decoder=False)),
                  build_tiny_baseline("cot", cot_max_new_tokens=2)):
        calls = []
        batched = model.featurizer.many
        monkeypatch.setattr(model.featurizer, "many", lambda xs, indices=None: calls.append(len(xs)) or batched(xs, indices))
        features = featurize_example(model, example, 2, 1)
        assert calls == [4]
        expected = [model.training_query_features(example, model.featurizer(items[0]))]
        expected += [model.featurizer(x) for x in items[1:]]
        for got, want in zip(features, expected, strict=True):
            assert torch.equal(got.input_ids, want.input_ids) and getattr(got, "lm_tokens", 0) == getattr(want, "lm_tokens", 0)
        assert (getattr(features[0], "lm_tokens", 0) > 0) == (model.config.variant == "cot")  # the rationale's tokens
        with pytest.raises(ItemError, match=r"train.jsonl:3: negative: empty item"):
            featurize_example(model, replace(example, negatives=["   "]), 2, 1)
        with pytest.raises(ItemError, match=r"train.jsonl:3: positive: .*does not exist"):
            featurize_example(model, replace(example, positives=["seven", Path("/nonexistent.png")]), 2, 1)


# ------------------------------------------------------------------------------------ 7. divergence
def test_nan_loss_stops_with_training_diverged(tmp_path, monkeypatch):
    make_data(tmp_path)
    recipe = recipe_from_dict(one_stage(tmp_path / "out", steps=6, save_every=2, keep_last=2), tmp_path)
    real = trainer_module.compute_gradients
    calls = []

    def flaky(model, batch, weights, chunk_size=None, **options):
        calls.append(1)
        if len(calls) == 5:
            return StepLosses(float("nan"), 1.0, 0.1, float("nan"))
        return real(model, batch, weights, chunk_size, **options)

    monkeypatch.setattr(trainer_module, "compute_gradients", flaky)
    trainer = Trainer(recipe, show_progress=False)
    with pytest.raises(TrainingDiverged) as info:
        trainer.run()
    message = str(info.value)
    assert "step 5" in message
    assert "the step was not applied and nothing was saved. Last good checkpoint: " in message
    assert "step-000004" in message
    assert len(calls) == 5

    checkpoints = tmp_path / "out" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000002", "step-000004"]
    assert not (tmp_path / "out" / "model").exists()
    last = checkpoints / "step-000004"
    assert json.loads((last / "trainer_state.json").read_text())["progress"]["global_step"] == 4
    loaded = LaMEModel.from_pretrained(last / "model")
    for name, value in loaded.state_dict().items():  # nothing was applied after the last good step
        assert torch.equal(value, trainer.model.state_dict()[name]), name
    resumed = Trainer(recipe, resume=True, show_progress=False)
    assert resumed.progress.global_step == 4


def finite_checkpoints(folder: Path) -> dict[str, bool]:
    """Checkpoint name -> whether every weight it holds is finite."""
    return {c.name: all(torch.isfinite(v).all() for v in saved_weights(c / "model").values())
            for c in sorted(folder.glob("step-*"))}


def test_a_learning_rate_of_1e6_stops_in_one_line_and_never_saves_non_finite_weights(tmp_path, capsys):
    """lr 1e6 (with weight decay) turns gradients and weights non-finite within a few steps: the run stops
    before applying or saving them, with one line and exit status 2 naming a checkpoint that is finite.
    Resuming with a lower learning rate trains at that rate; a checkpoint whose finite weights already
    lead to non-finite values is named as such at the first step after resuming from it."""
    from lame.cli import main

    make_data(tmp_path)
    raw = one_stage(tmp_path / "out", steps=8, save_every=1, keep_last=20, featurize_workers=0)
    raw["stages"][0].update(schedule="constant", trainable=[
        {"pattern": p, "lr": 1e6, "weight_decay": 0.01} for p in ("latent_embeddings", "decoder_head.*")])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    checkpoints = tmp_path / "out" / "checkpoints"

    def error_line() -> str:
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lame train: error:")]
        assert len(lines) == 1
        return lines[0]

    assert main(["train", str(recipe)]) == 2
    line = error_line()
    assert line.startswith("lame train: error: training diverged at step ")
    step = int(line.split("at step ")[1].split()[0])
    saved = finite_checkpoints(checkpoints)
    assert step >= 2 and list(saved) == [f"step-{s:06d}" for s in range(1, step)]
    assert all(saved.values())  # nothing non-finite was written ...
    assert f"Last good checkpoint: {checkpoints / f'step-{step - 1:06d}'}. " in line  # ... or named
    assert "nothing was saved" in line and line.endswith(
        f"To go on, lower the learning rate (now 1e+06, 1e+06) and continue from it with --resume (step {step} "
        "started from its weights: should the resumed run diverge at once, delete it and resume from an earlier one)")
    assert not (tmp_path / "out" / "model").exists()

    lower = ["--set", "stages.0.trainable.0.lr=1e-3", "--set", "stages.0.trainable.1.lr=1e-3",
             "--set", "stages.0.trainable.1.eps=1e-6"]
    for attempt in range(step):  # back through the checkpoints until one can go on
        last = checkpoints / f"step-{step - 1 - attempt:06d}"
        if main(["train", str(recipe), "--resume", *lower]) == 0:
            break
        line = error_line()
        assert f"the first step after resuming from {last}: " in line
        assert "delete it and resume from an earlier checkpoint" in line
        shutil.rmtree(last)
    out = capsys.readouterr().out
    assert f"resuming from {last}: stage 'only' at step {step - 1 - attempt} of 8" in out
    assert "resumed stage 'only' with the recipe's values: trainable[0].lr 1e+06 -> 0.001, " \
           "trainable[1].lr 1e+06 -> 0.001, trainable[1].eps 1e-08 -> 1e-06" in out
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 8 and rows[-1]["lr"] == 1e-3 and math.isfinite(rows[-1]["grad_norm"])
    assert all(finite_checkpoints(checkpoints).values())


def test_non_finite_weights_are_never_written(tmp_path, monkeypatch):
    """Weights that turn non-finite in an update with a finite gradient norm stop the run before the
    checkpoint of that step is written; a checkpoint holding them is refused by --resume."""
    make_data(tmp_path)
    recipe = recipe_from_dict(one_stage(tmp_path / "out", steps=4, save_every=1, keep_last=5), tmp_path)
    original = torch.optim.AdamW.step
    steps = []

    def poisoned(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned)
    trainer = Trainer(recipe, show_progress=False)
    with pytest.raises(TrainingDiverged, match=r"at step 3 .*weights are not finite \(latent_embeddings\) after "
                                               r"the step, before writing checkpoint step-000003.*Last good checkpoint: "
                       ) as info:
        trainer.run()
    assert str(info.value).count("step-000002") == 1 and "\n" not in str(info.value)
    assert list(finite_checkpoints(tmp_path / "out" / "checkpoints").items()) == [("step-000001", True),
                                                                                 ("step-000002", True)]
    assert not list((tmp_path / "out" / "checkpoints").glob(".tmp-*"))

    # a non-finite checkpoint (from elsewhere) is refused by name, before anything is trained
    monkeypatch.setattr(torch.optim.AdamW, "step", original)
    bad = tmp_path / "out" / "checkpoints" / "step-000002" / "model"
    model = LaMEModel.from_pretrained(bad)
    with torch.no_grad():
        model.latent_embeddings.view(-1)[1] = float("nan")
    model.save_pretrained(bad)
    with pytest.raises(InvalidInput, match=r"--resume: .*step-000002 holds non-finite weights \(1 tensors, "
                                           r"e.g. latent_embeddings\)"):
        Trainer(recipe, resume=True, show_progress=False)


def test_background_featurisation_trains_exactly_like_inline(tmp_path):
    """Threads featurise the next batch during a step; the run is the one without them."""
    make_data(tmp_path)
    finals = {}
    for workers in (0, 2):
        recipe = recipe_from_dict(one_stage(tmp_path / f"w{workers}", steps=3, featurize_workers=workers), tmp_path)
        finals[workers] = state(Trainer(recipe, show_progress=False).run() and
                                LaMEModel.from_pretrained(tmp_path / f"w{workers}" / "model"))
    assert finals[0].keys() == finals[2].keys()
    for key in finals[0]:
        assert torch.equal(finals[0][key], finals[2][key]), key
    with pytest.raises(RecipeError, match="featurize_workers"):
        recipe_from_dict(one_stage(tmp_path / "bad", steps=1, featurize_workers=-1), tmp_path)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_fp16_scales_the_loss(tmp_path, precision):
    """Both precisions in one process (accelerate's own autocast state would refuse the second);
    fp16 steps go through a gradient scaler whose state is checkpointed."""
    make_data(tmp_path)
    # fp16: the scaler starts at 2**16 and halves on each step whose gradients overflow (that step is skipped)
    recipe = recipe_from_dict(one_stage(tmp_path / "out", steps=8, mixed_precision=precision, save_every=8),
                              tmp_path)
    initial = state(build_model(recipe))
    trainer = Trainer(recipe, show_progress=False)
    trainer.run()
    seen = []
    with trainer.autocast():
        seen.append((torch.ones(2, 2) @ torch.ones(2, 2)).dtype)
    assert seen == [torch.bfloat16 if precision == "bf16" else torch.float16]
    trained = state(LaMEModel.from_pretrained(tmp_path / "out" / "model"))
    assert not torch.equal(trained["latent_embeddings"], initial["latent_embeddings"])
    assert all(torch.isfinite(v).all() for v in trained.values())
    scaler_file = tmp_path / "out" / "checkpoints" / "step-000008" / "grad_scaler.json"
    assert scaler_file.exists() == (precision == "fp16")
    if precision == "fp16":
        assert 1.0 < json.loads(scaler_file.read_text())["scale"] <= 2.0 ** 16


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_bf16_recipes_keep_float32_master_weights_for_what_trains(tmp_path, monkeypatch, precision):
    """model.dtype bfloat16: one AdamW step at a small learning rate moves every trainable element that
    has a gradient (a bfloat16 weight of magnitude 0.02 cannot move by 1e-6, so updated in bfloat16
    most would not change: the control below); frozen weights stay bfloat16, and a resumed run gets
    the float32 master weights back bit for bit. (A few gradient elements are exactly 0 where they
    come through bfloat16 arithmetic: the autocast matmuls, the latent vectors' cast to the frozen
    embeddings' dtype; AdamW does not move those.)"""
    make_data(tmp_path)
    trainable = [{"pattern": "latent_embeddings", "lr": 1e-6}, {"pattern": "decoder_head.*", "lr": 1e-6},
                 {"pattern": "backbone.model.language_model.layers.*", "lr": 1e-6}]
    prefixes = ("latent_embeddings", "decoder_head.", "backbone.model.language_model.layers.")

    def one_step(folder: str):
        raw = one_stage(tmp_path / folder, steps=1, mixed_precision=precision, featurize_workers=0)
        raw["model"]["dtype"] = "bfloat16"
        raw["stages"][0].update(trainable=trainable, schedule="constant")
        recipe = recipe_from_dict(raw, tmp_path)
        trainer = Trainer(recipe, show_progress=False)
        names = [n for n, _ in trainer.model.named_parameters() if n.startswith(prefixes)]
        before, grads = state(trainer.model), {}
        real_step = trainer.strategy.step

        def step(optimizer, *args):
            grads.update({n: p.grad.clone() for n, p in trainer.model.named_parameters() if n in names})
            return real_step(optimizer, *args)

        monkeypatch.setattr(trainer.strategy, "step", step)
        trainer.run()
        after = state(trainer.model)
        moved = sum(int((after[n] != before[n]).sum()) for n in names) / sum(before[n].numel() for n in names)
        return recipe, names, before, after, grads, moved

    recipe, names, before, after, grads, moved = one_step("out")
    assert all(before[n].dtype == torch.float32 for n in names)
    assert before["backbone.model.visual.patch_embed.proj.weight"].dtype == torch.bfloat16  # frozen: as loaded
    assert before["backbone.model.language_model.embed_tokens.weight"].dtype == torch.bfloat16
    for n in names:
        assert bool((after[n] != before[n])[grads[n] != 0].all()), n  # every element with a gradient moved
    assert moved > 0.99
    assert torch.equal(after["backbone.model.visual.patch_embed.proj.weight"],
                       before["backbone.model.visual.patch_embed.proj.weight"])
    resumed = Trainer(recipe, resume=True, show_progress=False).model
    for name, value in resumed.state_dict().items():
        assert value.dtype == after[name].dtype and torch.equal(value, after[name]), name

    # the control: the same step on the bfloat16 weights themselves
    monkeypatch.setattr(build_module, "master_weights", lambda *args: None)
    *_, control_moved = one_step("control")
    assert control_moved < 0.5, control_moved


def test_lora_added_early_for_sharding_stays_frozen_until_its_stage():
    model = build_tiny_model("qwen2_vl", config=LaMEConfig(num_reason_tokens=2, use_decoder=False))
    add_lora(model, 4, 8, 0.0, ["q_proj", "v_proj"])
    broad = [ParamGroupSpec(pattern="backbone.model.language_model.*", lr=1e-3)]
    before = select_trainable(model, broad, without_lora=True)
    names = {id(p): n for n, p in model.named_parameters()}
    assert not any(".lora_" in names[id(p)] for g in before for p in g["params"])
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".lora_" in n)
    during = select_trainable(model, broad)
    assert any(".lora_" in names[id(p)] for g in during for p in g["params"])


# --------------------------------------------------------------------------- 7. parallel strategies
class _Launched:
    """What the trainer reads from accelerate: the distributed type it detected."""

    def __init__(self, kind: str):
        self.distributed_type = f"DistributedType.{kind}"


@pytest.mark.parametrize("kind, env, expected", [
    ("NO", {}, "ddp"), ("MULTI_GPU", {}, "ddp"), ("FSDP", {}, "fsdp"), ("DEEPSPEED", {}, "deepspeed"),
    # on CPU accelerate reports MULTI_CPU; its launcher's flags still say what the config asked for
    ("MULTI_CPU", {"ACCELERATE_USE_FSDP": "true"}, "fsdp"),
    ("MULTI_CPU", {"ACCELERATE_USE_DEEPSPEED": "true"}, "deepspeed"),
])
def test_auto_strategy_follows_accelerate_launch(monkeypatch, kind, env, expected):
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert resolve_strategy("auto", _Launched(kind)) == expected
    assert resolve_strategy("ddp", _Launched(kind)) == "ddp"  # an explicit recipe value wins


def test_shipped_launch_configs_are_consistent():
    root = Path(__file__).resolve().parents[1] / "configs"
    seen = {}
    for path in sorted((root / "accelerate").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        seen[path.stem] = config["distributed_type"]
        if config["distributed_type"] == "DEEPSPEED":
            ds_file = root.parent / config["deepspeed_config"]["deepspeed_config_file"]
            stage = json.loads(ds_file.read_text())["zero_optimization"]["stage"]
            assert path.stem.endswith(f"zero{stage}"), (path, stage)
    assert {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed-zero2": "DEEPSPEED",
            "deepspeed-zero3": "DEEPSPEED"}.items() <= seen.items()


def test_bad_strategy_and_zero3_with_grad_cache_are_rejected_before_training(tmp_path):
    make_data(tmp_path)
    with pytest.raises(RecipeError, match="train.strategy"):
        recipe_from_dict(one_stage(tmp_path / "out", steps=1, strategy="zero"), tmp_path)
    pytest.importorskip("deepspeed")
    zero3 = Path(__file__).resolve().parents[1] / "configs" / "deepspeed" / "zero3.json"
    recipe = recipe_from_dict(one_stage(tmp_path / "out", steps=1, strategy="deepspeed", deepspeed_config=str(zero3),
                                        grad_cache_chunk=2), tmp_path)
    with pytest.raises(RecipeError, match="grad_cache_chunk.*ZeRO-3"):
        Trainer(recipe, show_progress=False)
    assert not (tmp_path / "out" / "checkpoints").exists()


# ------------------------------------------------------------------------- 7b. evaluation in a recipe
def write_sums_benchmark(folder: Path) -> Path:
    """A JSONL benchmark of two tasks on the toy sums: "sums" ranks the ten number words (global, grouped
    by level), "sums-local" ranks three candidates per query."""
    words = "zero one two three four five six seven eight nine".split()
    corpus = [{"id": str(d), "item": w} for d, w in enumerate(words)]
    queries = []
    for i in range(12):
        record = sum_record(i)
        answer = str(record["label"])
        queries.append({"id": f"q{i}", "query": record["query"], "relevant": {answer: 1}, "level": i % 2,
                        "candidates": [answer, str((int(answer) + 1) % 10), str((int(answer) + 5) % 10)]})
    for name, settings in {"sums": {"group_by": "level"}, "sums-local": {"metric": "mrr"}}.items():
        rows = [{k: v for k, v in q.items() if name == "sums-local" or k != "candidates"} for q in queries]
        write_jsonl(folder / name / "corpus.jsonl", corpus)
        write_jsonl(folder / name / "queries.jsonl", rows)
        (folder / name / "task.json").write_text(json.dumps(settings))
    return folder


def test_a_recipe_names_a_benchmark_scored_during_training(tmp_path, capsys):
    """The recipe's eval section: scores every eval_every steps and at the end in metrics.jsonl,
    TensorBoard and the plot; the final report in the model card and next to the model."""
    from lame.eval.jsonl import load_jsonl_benchmark
    from lame.eval.runner import evaluate
    from lame.training.evaluation import first_queries

    make_data(tmp_path)
    write_sums_benchmark(tmp_path / "bench")
    raw = one_stage("out", steps=4, eval_every=3, log_every=2, tensorboard=True)
    raw["eval"] = {"benchmark": "bench", "max_queries": 3, "batch_size": 4}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    recipe = load_recipe(tmp_path / "recipe.yaml")
    assert recipe.eval.benchmark == str(tmp_path / "bench")  # relative to the recipe's folder
    recipe.train.output_dir = str(tmp_path / "out")
    trainer = Trainer(recipe, show_progress=True)
    final = trainer.run()
    out = capsys.readouterr().out
    assert f"evaluating every 3 steps and at the end on {tmp_path / 'bench'}: 2 task(s), 6 queries, " \
           "at most 3 per task" in out

    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/overall" in r]
    assert [r["step"] for r in evals] == [3, 4]
    assert set(evals[-1]) == {"step", "stage", "eval/overall", "eval/sums/hit@1", "eval/sums-local/mrr"}
    assert evals[-1]["eval/overall"] == pytest.approx((evals[-1]["eval/sums/hit@1"] + evals[-1]["eval/sums-local/mrr"]) / 2)

    # the same numbers as evaluating the saved model on the same queries
    tasks = [first_queries(t, 3) for t in load_jsonl_benchmark(tmp_path / "bench")]
    assert len(tasks[1].corpus) < 10 and len(tasks[0].corpus) == 10  # a local task embeds only its candidates
    report = evaluate(LaMEModel.from_pretrained(final), tasks, show_progress_bar=False)
    assert report["overall"] == pytest.approx(evals[-1]["eval/overall"], abs=SCORE)

    saved = json.loads((final / "scores-bench-step-000004.json").read_text())
    assert saved["overall"] == pytest.approx(report["overall"], abs=SCORE) and saved["step"] == 4
    assert set(saved["tasks"]["sums"]["groups"]) == {"0", "1"}  # group_by level
    card = (final / "README.md").read_text()
    scores = card.split("## Scores", 1)[1]
    assert f"Benchmark `{tmp_path / 'bench'}` after step 4, first 3 queries per task" in scores
    assert "sums-local" in scores and f"overall: {report['overall']:.4f}" in scores
    assert f"scores after step 4: overall {report['overall']:.4f}" in out

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "out" / "tensorboard"))
    events.Reload()
    assert {"eval/overall", "eval/sums/hit@1", "train/loss", "train/grad_norm"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("eval/overall")] == [3, 4]
    with Image.open(tmp_path / "out" / "loss_curves.png") as image:
        assert image.width > 1000  # a second panel for the scores


def test_eval_every_without_anything_to_evaluate_says_so(tmp_path, capsys):
    make_data(tmp_path)
    Trainer(recipe_from_dict(one_stage(tmp_path / "out", steps=1, eval_every=2), tmp_path))
    assert "note: train.eval_every is set but nothing is evaluated: add an eval section" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- 8. artefacts
def test_end_of_run_artefacts(run_a):
    out, recipe = run_a["out"], run_a["recipe"]
    with Image.open(out / "loss_curves.png") as image:
        assert image.format == "PNG"
        image.verify()

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keys = {"step", "stage", "loss", "contrastive", "reconstruction", "diversity", "lr", "samples_per_s"}
    assert all(keys <= row.keys() for row in rows)
    assert [r["step"] for r in rows] == [2, 3, 4, 6]  # log_every 2, and every stage's last step
    assert [r["stage"] for r in rows] == ["warmup", "warmup", "joint", "joint"]
    config = run_a["trainer"].model.config
    for r in rows:
        assert all(math.isfinite(r[k]) for k in keys - {"stage"})
        assert r["samples_per_s"] > 0 and r["lr"] >= 0 and r["reconstruction"] > 0
        total = (r["contrastive"] + config.reconstruction_weight * r["reconstruction"]
                 + config.diversity_weight * r["diversity"])
        assert math.isclose(r["loss"], total, rel_tol=float64_sum(3))  # the trainer's sum of the same floats

    card = (run_a["final"] / "README.md").read_text()
    assert str(Path(recipe.data.sources[0].path)) in card
    block = card.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == recipe.to_dict()

    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
