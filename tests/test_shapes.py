"""Random-weight models of the real architectures (lame.modeling.shapes) and the speed cost model."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tolerances import rounded_to_digits

from lame.errors import InvalidInput
from lame_testbed.bench.costmodel import Dims, Machine, Query, dims_of, predict, predicted_ratio
from lame.modeling.shapes import (SHAPES, build_shaped_model, depths, parse_shape_spec, resolve_depths,
                                  shaped_backbone_config, shaped_image_processor)

FULL = {"qwen2-vl-2b": (28, 32), "qwen2.5-vl-3b": (36, 32), "qwen3-vl-8b": (36, 27)}


def visual_tokens(shape: str, width: int, height: int) -> int:
    """How many visual tokens the shape's image processor makes of one ``width`` x ``height`` image."""
    processor = shaped_image_processor(shape)
    grid = processor(images=[Image.new("RGB", (width, height))], return_tensors="pt")["image_grid_thw"]
    return int(grid.prod()) // processor.merge_size**2


def test_bench_shape_choices_are_the_shapes():
    # the bench settings spell the names out so `lame bench --help` loads no torch
    from lame_testbed.bench.settings import SHAPES as choices

    assert list(choices) == list(SHAPES)


@pytest.mark.parametrize("name", list(SHAPES))
def test_truncated_configs_keep_widths_and_valid_block_indexes(name):
    assert tuple(depths(name).values()) == FULL[name]
    full = shaped_backbone_config(name)
    small = shaped_backbone_config(name, layers=2, vision_layers=3)
    assert small.text_config.num_hidden_layers == 2 and small.vision_config.depth == 3
    assert small.text_config.hidden_size == full.text_config.hidden_size
    assert small.text_config.vocab_size == 151936
    for key in ("fullatt_block_indexes", "deepstack_visual_indexes"):
        indexes = getattr(small.vision_config, key, None)
        if indexes is not None:
            assert indexes and all(0 <= i < 3 for i in indexes)
    # the same fraction of the vision tower as of the language model, at least one block
    assert resolve_depths(name, 1)["vision_layers"] == 1
    assert resolve_depths(name)["layers"] == FULL[name][0]
    with pytest.raises(InvalidInput):
        shaped_backbone_config(name, layers=FULL[name][0] + 1)


def test_build_on_meta_has_the_real_parameter_count():
    model = build_shaped_model("qwen2-vl-2b", device="meta", use_decoder=False)
    backbone = sum(p.numel() for p in model.backbone.parameters())
    # the published size of Qwen2-VL-2B-Instruct, to 3 significant digits
    assert backbone == pytest.approx(2.21e9, abs=rounded_to_digits(2.21e9, 3))
    assert visual_tokens("qwen2-vl-2b", 448, 448) == 256 and visual_tokens("qwen3-vl-8b", 448, 448) == 196


def test_parse_shape_spec():
    assert parse_shape_spec("shape:qwen2-vl-2b") == ("qwen2-vl-2b", None)
    assert parse_shape_spec("shape:qwen3-vl-8b/4") == ("qwen3-vl-8b", 4)
    for bad in ("shape:qwen9", "shape:qwen2-vl-2b/x"):
        with pytest.raises(InvalidInput):
            parse_shape_spec(bad)


def test_cost_model_dims_and_ratio_structure():
    d = dims_of("qwen2-vl-2b")
    assert (d.hidden, d.vocab, d.layers, d.vision_layers) == (1536, 151936, 28, 32)
    assert d.block_params * d.layers + d.head_params < 2.21e9
    # a machine with no overhead: a product of r rows costs 1 ns per parameter up to 8 rows, then 2r/F
    machine = Machine(name="test", tau={k: {1: 1e-9, 1024: 1024 * 2 / 1e11} for k in ("block", "vision", "head")},
                      bandwidth=4e9, bytes_per_param=4)
    query = Query(tokens=320, patches=1024)
    lame = predict(d, machine, "lame", 8, 1, query, 28, 32)
    cot = predict(d, machine, "cot", 256, 1, query, 28, 32)
    assert cot["head"] == pytest.approx(256 * d.head_params * 1e-9)
    assert cot["total"] > lame["total"] > predict(d, machine, "discriminative", 0, 1, query, 28, 32)["total"]
    # a shorter query makes the prompt pass cheaper and the CoT ratio larger
    short = predicted_ratio(d, machine, Query(32, 0), 1, 28, 32, "cot", 256)
    assert short > predicted_ratio(d, machine, query, 1, 28, 32, "cot", 256) > 1
    assert isinstance(Dims(**d.__dict__), Dims)


@pytest.mark.slow
def test_bench_speed_at_a_real_shape_writes_the_cost_model(tmp_path):
    from lame.cli import main

    torch.set_num_threads(1)
    assert main(["bench", "speed", "--shape", "qwen2-vl-2b", "--layers", "1", "--quick", "--threads", "1",
                 "--clock", "cpu", "--device", "cpu", "--output", str(tmp_path)]) == 0
    import json

    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["depth"]["layers"] == 1 and report["depth"]["full_layers"] == 28
    rows = report["cost_model"]["rows"]
    assert {r["full_depth"] for r in rows} == {False, True}
    assert all(r["predicted_ms"] > 0 for r in rows)
    assert (tmp_path / "speed-model.png").stat().st_size > 0


@pytest.mark.parametrize("name, hidden, kv, mlp, vision", [
    ("qwen2-vl-2b", 1536, 256, 8960, 1280), ("qwen2.5-vl-3b", 2048, 256, 11008, 1280),
    ("qwen3-vl-8b", 4096, 1024, 12288, 1152),
])
def test_shaped_model_has_the_real_widths(name, hidden, kv, mlp, vision):
    model = build_shaped_model(name, layers=1, device="meta", num_reason_tokens=8)
    lm = model.adapter.language_model(model.backbone)
    block = lm.layers[0]
    assert len(lm.layers) == 1
    assert tuple(model.backbone.get_input_embeddings().weight.shape) == (151936, hidden)
    assert block.self_attn.k_proj.out_features == kv and block.mlp.gate_proj.out_features == mlp
    visual = model.backbone.model.visual
    assert len(visual.blocks) == 1 and visual.blocks[0].attn.qkv.in_features == vision
    assert tuple(model.latent_embeddings.shape) == (9, hidden)
    head = model.decoder_head.decoder  # Qwen3-0.6B's shape
    assert head.config.hidden_size == 1024 and head.config.vocab_size == 151936
