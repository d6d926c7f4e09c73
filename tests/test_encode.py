"""``LaMEModel.encode``, the sentence-transformers-shaped API: windows of batched featurisation overlapped
with the model, order and on_error semantics across windows, restored train mode, output options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from tolerances import FORWARD

from lame.data.items import ItemError
from lame_testbed.bench.encode import mixed_items, naive_encode
from lame.modeling.tiny import build_tiny_model

ITEMS = ["three plus four", {"text": "six plus nine", "instruction": "add mod ten"}, "seven"]


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("qwen2_vl", seed=0, use_decoder=False, num_reason_tokens=2)


def test_encode_equals_naive_loop(model):
    items = mixed_items(20, seed=1)
    np.testing.assert_allclose(model.encode(items, batch_size=4), naive_encode(model, items, 4), atol=FORWARD, rtol=0)


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
    np.testing.assert_allclose(emb[probe], model.encode([items[i] for i in probe]), atol=FORWARD, rtol=0)
    with pytest.raises(ItemError, match=r"^item 70:"):
        model.encode(items, batch_size=2)


def test_encode_restores_train_mode_even_when_it_raises(model):
    model.train()
    try:
        with pytest.raises(ItemError, match=r"^item 1:"):
            model.encode(["fine", "   "])
        assert model.training and all(m.training for m in model.modules())
        model.encode(ITEMS)
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()
    with pytest.raises(ItemError):
        model.encode(["   "])
    assert not any(m.training for m in model.modules())


def test_embedding_dim_is_the_output_dimension(model):
    assert model.embedding_dim == 64 == model.encode(ITEMS).shape[1]
    projected = build_tiny_model("qwen2_vl", seed=0, use_decoder=False, num_reason_tokens=2, projection_dim=16)
    assert projected.embedding_dim == 16 == projected.encode(ITEMS).shape[1]
    assert projected.encode([]).shape == (0, 16)


def test_convert_to_tensor(model):
    expected = model.encode(ITEMS)
    tensor = model.encode(ITEMS, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32 and tensor.shape == expected.shape
    np.testing.assert_array_equal(tensor.numpy(), expected)
    assert isinstance(model.encode(ITEMS, convert_to_numpy=False), torch.Tensor)
    vector = model.encode(ITEMS[0], convert_to_tensor=True)
    assert isinstance(vector, torch.Tensor) and vector.shape == (64,)


def test_device_moves_the_model_first(model, monkeypatch):
    moves = []
    original = model.to

    def spy(*args, **kwargs):
        moves.append(args[0] if args else kwargs.get("device"))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "to", spy)
    np.testing.assert_array_equal(model.encode(ITEMS, device="cpu"), model.encode(ITEMS))
    assert moves == ["cpu"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_device_cuda_gives_the_cpu_embeddings():
    model = build_tiny_model("qwen2_vl", seed=0, use_decoder=False, num_reason_tokens=2)
    expected = model.encode(ITEMS)
    on_gpu = model.encode(ITEMS, device="cuda")
    assert model.device.type == "cuda"
    # other float32 kernels, no TF32 (torch's default for matmuls; text items, no convolution): rounding only
    np.testing.assert_allclose(on_gpu, expected, atol=FORWARD, rtol=0)
