"""Packed (padding-free) batches: the same embeddings and gradients as padded ones, for less compute."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import noise
from tolerances import FORWARD, GRADIENT, scaled
from lame import build_tiny_model
from lame.data.packing import collate_packed, plan_rows
from lame_testbed.bench.padding import PaddingSettings, encode_batches, padding_stats, run_padding
from lame.training.objective import LossWeights
from lame.training.steps import TrainBatch, compute_gradients

ITEMS = [
    "a short text",
    {"text": "which digit is this? " * 6, "image": noise((56, 56), 1), "instruction": "Add 3."},
    ["two figures", noise((40, 60), 2), "and", noise((56, 28), 3)],
    "a much longer text about seven, eight and nine " * 5,
    noise((28, 28), 4),
    {"text": "x", "image": noise((56, 56), 5)},
]


def test_plan_rows_first_fit_decreasing():
    assert plan_rows([5, 3, 2, 4]) == [[0], [3], [1, 2]]
    assert plan_rows([5, 3, 2, 4], capacity=9) == [[0, 3], [1, 2]]
    assert plan_rows([7, 1, 1, 1], capacity=4) == [[0], [1, 2, 3]]  # the capacity grows to the longest item
    stats = padding_stats([4, 2, 2], [[0, 1, 2]])
    assert stats["padded_fraction"] == pytest.approx(1 - 8 / 12)
    assert stats["packed_fraction"] == 0.0 and stats["packed_rows"] == 2


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("capacity", [None, 400])
def test_packed_embeddings_equal_padded(family, capacity):
    model = build_tiny_model(family, seed=0, use_decoder=False, num_reason_tokens=4)
    features = model.featurize(ITEMS)
    batch = collate_packed(features, model.tokenizer.pad_token_id, model.featurizer.image_token_id, capacity)
    assert batch["input_ids"].shape[0] < len(ITEMS)  # items really share rows
    with torch.inference_mode():
        padded = model(model.collate(features))
        packed = model(batch)
    # the same sums over each item's own positions, in rows of another shape
    torch.testing.assert_close(packed.embeddings, padded.embeddings, atol=FORWARD, rtol=0)
    torch.testing.assert_close(packed.reason_states, padded.reason_states, atol=scaled(FORWARD, padded.reason_states),
                               rtol=0)
    assert packed.hidden_states is None


def test_encode_with_packing_equals_without():
    model = build_tiny_model("qwen2_vl", seed=0, use_decoder=False)
    plain = model.encode(ITEMS * 3, batch_size=4)
    packed = model.encode(ITEMS * 3, batch_size=4, packing=True)
    np.testing.assert_allclose(packed, plain, atol=FORWARD, rtol=0)
    assert not hasattr(model, "packing")  # an argument of the call, not a state of the model


def test_baselines_keep_padding():
    from lame.modeling.baselines import variant_of

    model = build_tiny_model("qwen2_vl", seed=0, use_decoder=False)
    for variant in ("sequential", "cot"):
        peer = variant_of(model, variant)
        assert "pack_rows" not in peer.collate(model.featurize(ITEMS[:2]), packed=True)


@pytest.mark.parametrize("chunk", [None, 2])
def test_packed_training_gradients_equal_padded(train_model, chunk):
    model = train_model
    queries = model.featurize(ITEMS)
    positives = model.featurize(list(reversed(ITEMS)))
    batch = TrainBatch(queries, positives, [], ["seven", None, "nine", "one", "two", "three"], torch.arange(6))
    weights = LossWeights(contrastive=1.0, reconstruction=1.0, diversity=0.1)
    grads, losses = {}, {}
    for packed in (False, True):
        model.zero_grad(set_to_none=True)
        losses[packed] = compute_gradients(model, batch, weights, chunk, packing=packed)
        grads[packed] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
    assert math.isclose(losses[True].total, losses[False].total, rel_tol=GRADIENT)
    assert grads[True].keys() == grads[False].keys() and grads[True]
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, atol=scaled(GRADIENT, g), rtol=0,
                                   msg=lambda m: f"{name}: {m}")


def test_bench_padding_quick_counts_padding():
    report = run_padding(PaddingSettings(quick=True, pairs=64))
    rows = report["rows"]
    assert rows["training queries"]["padded_fraction"] > rows["training queries"]["packed_fraction"]
    assert rows["encode"]["padded_fraction"] < rows["encode, no sorting"]["padded_fraction"]
    assert sum(report["tasks"].values()) == 64
    assert encode_batches([3, 1, 2], 2) == [[0, 2], [1]]


def test_the_trainer_passes_its_recipes_packing_to_every_pass(tmp_path, monkeypatch):
    """train.packing and train.packing_capacity reach the collate calls of the step as arguments; the
    model itself carries no packing state."""
    from helpers import write_jsonl

    from lame.modeling import LaMEModel
    from lame.training.recipe import recipe_from_dict
    from lame.training.trainer import Trainer

    words = ["one", "two", "three", "four"]
    write_jsonl(tmp_path / "train.jsonl", [{"query": f"{w} plus nothing", "positive": w} for w in words])
    raw = {"model": {"backbone": "tiny:qwen2_vl", "lame": {"num_reason_tokens": 2}},
           "data": {"sources": [{"path": "train.jsonl"}]},
           "train": {"output_dir": str(tmp_path / "out"), "tensorboard": False, "featurize_workers": 0,
                     "packing": True, "packing_capacity": 48, "save_every": 100},
           "stages": [{"name": "s", "steps": 1, "batch_size": 4,
                       "trainable": [{"pattern": "latent_embeddings", "lr": 1e-3}]}]}
    calls = []
    real = LaMEModel.collate

    def collate(self, features, packed=False, capacity=None, **kwargs):
        batch = real(self, features, packed=packed, capacity=capacity, **kwargs)
        calls.append((packed, capacity, "pack_rows" in batch))
        return batch

    monkeypatch.setattr(LaMEModel, "collate", collate)
    trainer = Trainer(recipe_from_dict(raw, tmp_path), show_progress=False)
    trainer.run()
    assert calls == [(True, 48, True)] * 2  # the queries' pass and the positives'
    assert not {"packing", "packing_capacity"} & set(vars(trainer.model))
