"""Recipe and config validation: every bad value is a clear error naming its key, before any model is
built; the closed sets of names are the ones the code uses."""

from __future__ import annotations

import pytest
import torch
import yaml
from helpers import sum_record, write_jsonl

from lame.config import DTYPES, VARIANTS, ConfigError, LaMEConfig
from lame.training import parallel
from lame.training.recipe import PRECISIONS, STRATEGIES, RecipeError, load_recipe
from lame.training.schedules import schedules
from lame.training.trainer import model_config


@pytest.fixture
def recipe_file(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [sum_record(i) for i in range(4)])
    raw = {"model": {"backbone": "tiny:qwen2_vl", "decoder": "tiny", "lame": {"num_reason_tokens": 2}},
           "data": {"sources": [{"path": "train.jsonl"}]},
           "train": {"output_dir": str(tmp_path / "out")},
           "stages": [{"name": "only", "steps": 3, "batch_size": 2,
                       "trainable": [{"pattern": "latent_embeddings", "lr": 1e-3}]}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# (--set override, the key the error must start with)
BAD = [
    ("train.save_every=0", "train.save_every"),
    ("train.log_every=0", "train.log_every"),
    ("train.keep_last=0", "train.keep_last"),
    ("train.eval_every=0", "train.eval_every"),
    ("train.eval_every=-2", "train.eval_every"),
    ("train.grad_cache_chunk=0", "train.grad_cache_chunk"),
    ("train.mixed_precision=fp8", "train.mixed_precision"),
    ("train.mixed_precision=true", "train.mixed_precision"),
    ("train.strategy=zero", "train.strategy"),
    ("model.dtype=int8", "model.dtype"),
    ("data.positives_per_query=0", "data.positives_per_query"),
    ("data.negatives_per_query=-1", "data.negatives_per_query"),
    ("data.sources.0.weight=0", "data.sources[0].weight"),
    ("stages.0.warmup_steps=-1", "stages[0].warmup_steps"),
    ("stages.0.warmup_steps=4", "stages[0].warmup_steps"),  # more than the stage's 3 steps
    ("stages.0.schedule=cosine_annealing", "stages[0].schedule"),  # not a transformers scheduler
    ("stages.0.schedule=reduce_lr_on_plateau", "stages[0].schedule"),  # needs a metric
    ("stages.0.schedule=cosine_with_min_lr", "stages[0].schedule"),  # needs options
    ("stages.0.reconstruction_weight=-1", "stages[0].reconstruction_weight"),
    ("stages.0.contrastive_weight=-0.5", "stages[0].contrastive_weight"),
    ("stages.0.diversity_weight=-0.1", "stages[0].diversity_weight"),
    ("stages.0.trainable.0.lr=0", "stages[0].trainable[0].lr"),
    ("stages.0.trainable.0.eps=0", "stages[0].trainable[0].eps"),
    ("stages.0.lora={r: 0}", "stages[0].lora.r"),
    ("model.lame.projection_dim=-4", "model.lame.projection_dim"),
    ("model.lame.max_length=0", "model.lame.max_length"),
    ("model.lame.reconstruction_weight=-1", "model.lame.reconstruction_weight"),
    ("model.lame.diversity_weight=-1", "model.lame.diversity_weight"),
    ("model.lame.latent_steps=-1", "model.lame.latent_steps"),
    ("model.lame.cot_max_new_tokens=-1", "model.lame.cot_max_new_tokens"),
    ("model.lame.decoder_max_length=1", "model.lame.decoder_max_length"),
    ("model.lame.min_pixels=0", "model.lame.min_pixels"),
    ("model.lame.variant=plume", "model.lame.variant"),
    ("model.lame.pooling=max", "model.lame.pooling"),
    ("model.lame.use_decoder=false", "model.lame.use_decoder"),  # model.decoder is 'tiny'
    ("model.lame.nonsense=1", "model.lame"),
    ("eval={benchmark: nowhere}", "eval.benchmark"),  # neither a known name nor a folder
    ("eval={benchmark: mmeb-v2}", "eval.data_root"),
    ("eval={benchmark: mrmr, data_root: nowhere}", "eval.data_root"),
    ("eval={benchmark: mrmr, data_root: ., batch_size: 0}", "eval.batch_size"),
    ("eval={benchmark: mrmr, data_root: ., max_queries: 0}", "eval.max_queries"),
    ("eval={benchmark: mrmr, data_root: ., tasks: []}", "eval.tasks"),
    ("eval={benchmrk: x}", "unknown key(s) eval.benchmrk"),
]


@pytest.mark.parametrize("override, key", BAD, ids=[o for o, _ in BAD])
def test_bad_values_are_named_errors(recipe_file, override, key):
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe_file, [override])
    assert str(info.value).startswith(key), str(info.value)
    assert "\n" not in str(info.value)


def test_pixel_bounds_and_decoder_agreement(recipe_file):
    with pytest.raises(RecipeError, match=r"^model\.lame\.min_pixels: 5000 is more than max_pixels 1000"):
        load_recipe(recipe_file, ["model.lame.min_pixels=5000", "model.lame.max_pixels=1000"])
    with pytest.raises(RecipeError, match=r"^model\.lame\.use_decoder: true conflicts with model\.decoder: null"):
        load_recipe(recipe_file, ["model.decoder=null", "model.lame.use_decoder=true"])
    # agreeing values, or use_decoder left out: a decoder head exactly when model.decoder is set
    assert model_config(load_recipe(recipe_file, ["model.lame.use_decoder=true"])).use_decoder
    assert not model_config(load_recipe(recipe_file, ["model.decoder=null"])).use_decoder
    assert not model_config(load_recipe(recipe_file, ["model.decoder=null", "model.lame.use_decoder=false"])).use_decoder


@pytest.mark.parametrize("value", ["no", "false", "'no'"])
def test_mixed_precision_no_survives_yaml(recipe_file, value):
    """YAML reads a bare `no` as false: `--set train.mixed_precision=no` means "no"."""
    assert load_recipe(recipe_file, [f"train.mixed_precision={value}"]).train.mixed_precision == "no"
    text = recipe_file.read_text().replace("train:\n", f"train:\n  mixed_precision: {value}\n")
    recipe_file.write_text(text)
    assert load_recipe(recipe_file).train.mixed_precision == "no"


def test_fp16_with_fsdp_and_missing_deepspeed_config_fail_early(recipe_file, tmp_path):
    with pytest.raises(RecipeError, match=r"^train\.mixed_precision: fp16"):
        load_recipe(recipe_file, ["train.strategy=fsdp", "train.mixed_precision=fp16"])
    with pytest.raises(RecipeError, match=r"^train\.deepspeed_config: .*absent\.json does not exist"):
        load_recipe(recipe_file, ["train.strategy=deepspeed", f"train.deepspeed_config={tmp_path / 'absent.json'}"])


def test_bad_yaml_is_a_recipe_error(recipe_file):
    with pytest.raises(RecipeError, match=r"^--set stages\.0\.steps=\[: not valid YAML"):
        load_recipe(recipe_file, ["stages.0.steps=["])
    recipe_file.write_text("model: {backbone: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(recipe_file)


BAD_CONFIGS = [
    ({"projection_dim": -4}, "projection_dim"), ({"max_length": 0}, "max_length"),
    ({"reconstruction_weight": -0.1}, "reconstruction_weight"), ({"diversity_weight": -1}, "diversity_weight"),
    ({"latent_steps": -1}, "latent_steps"), ({"cot_max_new_tokens": -1}, "cot_max_new_tokens"),
    ({"decoder_max_length": 1}, "decoder_max_length"), ({"min_pixels": 400, "max_pixels": 100}, "min_pixels"),
    ({"max_pixels": 0}, "max_pixels"), ({"num_reason_tokens": -1}, "num_reason_tokens"),
    ({"num_embed_tokens": 0}, "num_embed_tokens"), ({"temperature": 0}, "temperature"),
    ({"variant": "plume"}, "variant"), ({"decoder_reads": "all"}, "decoder_reads"),
    ({"decoder_projector": "conv"}, "decoder_projector"), ({"decoder_target": "rationale"}, "decoder_target"),
]


@pytest.mark.parametrize("values, key", BAD_CONFIGS, ids=[k for _, k in BAD_CONFIGS])
def test_config_rejects_bad_values_naming_the_field(values, key):
    with pytest.raises(ConfigError) as info:
        LaMEConfig(**values)
    assert info.value.key == key and str(info.value).startswith(f"{key}: ")
    assert isinstance(info.value, ValueError)


def test_edge_values_are_accepted():
    LaMEConfig(projection_dim=1, max_length=1, decoder_max_length=2, latent_steps=0, cot_max_new_tokens=0,
               reconstruction_weight=0.0, diversity_weight=0.0, min_pixels=784, max_pixels=784)


def test_closed_sets_are_the_ones_the_code_uses():
    from lame.cli import build_parser
    from lame.modeling.variants import VARIANTS as REGISTERED

    assert set(REGISTERED) == set(VARIANTS)
    assert STRATEGIES == ("auto", parallel.DataParallel.name, parallel.FullySharded.name,
                          parallel.DeepSpeedZero.name)
    assert PRECISIONS[0] == "no" and all(isinstance(getattr(torch, name), torch.dtype) for name in DTYPES)
    speed = build_parser().parse_args(["bench", "speed", "--dtype", DTYPES[-1]])
    assert speed.dtype == DTYPES[-1]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "speed", "--dtype", "int8"])
    from transformers import SchedulerType

    assert {"constant", "linear", "cosine"} <= set(schedules()) < {s.value for s in SchedulerType}
    assert "reduce_lr_on_plateau" not in schedules()


def test_config_errors_from_python_are_config_errors_too():
    with pytest.raises(ConfigError, match="pooling"):
        LaMEConfig.from_dict({"pooling": "max"})
    with pytest.raises(ValueError, match="unknown LaME config key"):
        LaMEConfig.from_dict({"poolingg": "last"})
