"""Elastic LaME: one model embedding with the first k of its K reason tokens and at nested sizes d;
training on per-step draws of k and on nested prefixes of the embedding (Matryoshka); the config that
lists what a model is trained for, and the refusals of anything else."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import noise, sum_batch, sum_record, write_jsonl

from lame import LaMEConfig, LaMEModel, build_tiny_model
from lame.errors import InvalidInput
from lame.losses import MatryoshkaLoss, info_nce
from lame.modeling.baselines import variant_of
from lame.training.elastic import draw_reason_tokens
from lame.training.objective import LossWeights
from lame.training.recipe import RecipeError, recipe_from_dict
from lame.training.steps import compute_gradients
from lame.training.trainer import Trainer, build_model

ITEMS = ["three plus four", {"text": "six plus nine", "instruction": "add mod ten"}, "seven",
         {"text": "which digit?", "image": noise((56, 56), 1)}]
K, CHOICES, DIMS = 4, [0, 1, 4], [64, 16]  # the tiny models' hidden size is 64


@pytest.fixture(scope="module")
def elastic_model():
    return build_tiny_model("qwen2_vl", seed=0, use_decoder=False, num_reason_tokens=K, elastic_k=CHOICES,
                            matryoshka_dims=DIMS).eval()


def fixed_twin(model: LaMEModel, k: int) -> LaMEModel:
    """A model built with K = k on ``model``'s backbone, holding ``model``'s first k reason vectors, its
    embedding vector(s) and its embedding head."""
    twin = variant_of(model, "lame", num_reason_tokens=k)
    with torch.no_grad():
        twin.latent_embeddings.copy_(torch.cat([model.latent_embeddings[:k], model.latent_embeddings[K:]]))
    twin.embedding_head.load_state_dict(model.embedding_head.state_dict())
    return twin.eval()


# ------------------------------------------------------------------------------------------ inference
@pytest.mark.parametrize("k", CHOICES)
def test_k_reason_tokens_embed_exactly_as_a_model_built_with_k(elastic_model, k):
    """The first k reason tokens, the embedding token right after them: the same inputs and positions as a
    K = k model's, hence the same arithmetic and the same numbers, bit for bit."""
    twin = fixed_twin(elastic_model, k)
    assert twin.config.latent_token_strings() == [f"<|reason_{i}|>" for i in range(k)] + ["<|embed|>"]
    np.testing.assert_array_equal(elastic_model.encode(ITEMS, num_reason_tokens=k), twin.encode(ITEMS))
    features = elastic_model.featurize(ITEMS)
    with torch.inference_mode():
        out = elastic_model(elastic_model.collate(features, num_reason_tokens=k), num_reason_tokens=k)
    assert out.reason_states.shape[1] == k and out.embed_states.shape[1] == 1


@pytest.mark.parametrize("k", CHOICES)
def test_packed_batches_at_k_equal_padded_ones(elastic_model, k):
    # the tolerance of tests/test_packing.py: packed rows attend over another set of positions (summation order)
    padded = elastic_model.encode(ITEMS, batch_size=4, num_reason_tokens=k)
    packed = elastic_model.encode(ITEMS, batch_size=4, num_reason_tokens=k, packing=True)
    np.testing.assert_allclose(packed, padded, atol=1e-5, rtol=1e-4)


def test_dimensions_give_the_renormalised_prefix(elastic_model):
    full = elastic_model.encode(ITEMS, num_reason_tokens=1)
    short = elastic_model.encode(ITEMS, num_reason_tokens=1, dimensions=16, convert_to_tensor=True)
    assert short.shape == (len(ITEMS), 16)
    prefix = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    # one float32 normalisation of 16 values each way: a few ulps of 1
    np.testing.assert_allclose(short.numpy(), prefix, atol=1e-6, rtol=0)
    raw = elastic_model.encode(ITEMS, dimensions=16, normalize=False)
    np.testing.assert_array_equal(raw, elastic_model.encode(ITEMS, normalize=False)[:, :16])


def test_values_a_model_was_not_trained_for_are_refused_in_one_line(elastic_model):
    for kwargs, words in (({"num_reason_tokens": 2}, "0, 1 or 4 reason tokens"),
                          ({"num_reason_tokens": 8}, "0, 1 or 4 reason tokens"),
                          ({"num_reason_tokens": True}, "0, 1 or 4 reason tokens"),
                          ({"dimensions": 32}, "64 or 16 dimensions"),
                          ({"dimensions": "16"}, "64 or 16 dimensions")):
        with pytest.raises(InvalidInput) as caught:
            elastic_model.encode(ITEMS[:1], **kwargs)
        message = str(caught.value)
        assert "\n" not in message and words in message, message
        assert message.startswith(f"{next(iter(kwargs))}=")
    fixed = build_tiny_model("qwen2_vl", seed=0, use_decoder=False, num_reason_tokens=2)
    assert fixed.encode(ITEMS[:1], num_reason_tokens=2, dimensions=64).shape == (1, 64)
    for kwargs in ({"num_reason_tokens": 0}, {"dimensions": 32}):
        with pytest.raises(InvalidInput, match="this model (embeds with 2 reason|gives embeddings of 64)"):
            fixed.encode(ITEMS[:1], **kwargs)
    peer = variant_of(fixed, "sequential")  # a baseline: its own K only
    with pytest.raises(InvalidInput, match="num_reason_tokens=1"):
        peer.encode(ITEMS[:1], num_reason_tokens=1)


def test_a_batch_collated_for_another_k_is_named_as_such(elastic_model):
    features = elastic_model.featurize(ITEMS[:2])
    batch = elastic_model.collate(features, num_reason_tokens=1)
    with torch.no_grad(), pytest.raises(ValueError, match="latent block of 4 reason tokens.* same num_reason_tokens"):
        elastic_model(batch)  # the forward's default k is K = 4


def test_the_saved_config_lists_what_the_model_is_trained_for(elastic_model, tmp_path):
    fixed = build_tiny_model("qwen2_vl", seed=0, use_decoder=False, num_reason_tokens=2)
    fixed.save_pretrained(tmp_path / "fixed")
    saved = json.loads((tmp_path / "fixed" / "lame_config.json").read_text())
    assert (saved["elastic_k"], saved["matryoshka_dims"]) == ([2], [64])
    elastic_model.save_pretrained(tmp_path / "elastic")
    saved = json.loads((tmp_path / "elastic" / "lame_config.json").read_text())
    assert (saved["elastic_k"], saved["matryoshka_dims"]) == (CHOICES, DIMS)
    reloaded = LaMEModel.from_pretrained(tmp_path / "elastic")
    assert (reloaded.reason_token_choices, reloaded.dimension_choices) == (CHOICES, DIMS)
    np.testing.assert_array_equal(reloaded.encode(ITEMS, num_reason_tokens=0, dimensions=16),
                                  elastic_model.encode(ITEMS, num_reason_tokens=0, dimensions=16))
    # a folder saved before these keys existed: a fixed-K model at its full size
    older = {k: v for k, v in json.loads((tmp_path / "fixed" / "lame_config.json").read_text()).items()
             if k not in ("elastic_k", "matryoshka_dims")}
    (tmp_path / "fixed" / "lame_config.json").write_text(json.dumps(older))
    old = LaMEModel.from_pretrained(tmp_path / "fixed")
    assert (old.reason_token_choices, old.dimension_choices) == ([2], [64])


# ------------------------------------------------------------------------------------- configuration
def recipe(tmp_path, **lame) -> dict:
    write_jsonl(tmp_path / "train.jsonl", [sum_record(i) for i in range(8)])
    return {"model": {"backbone": "tiny:qwen2_vl", "decoder": None, "lame": {"num_reason_tokens": K, **lame}},
            "data": {"sources": [{"path": "train.jsonl"}]},
            "train": {"output_dir": str(tmp_path / "out"), "tensorboard": False, "featurize_workers": 0},
            "stages": [{"name": "s", "steps": 4, "batch_size": 4,
                        "trainable": [{"pattern": "latent_embeddings", "lr": 1e-2}]}]}


@pytest.mark.parametrize("lame, message", [
    ({"elastic_k": [0, 4, 2]}, "model.lame.elastic_k: must be ascending without repeats, e.g. [0, 2, 4]"),
    ({"elastic_k": [0, 2, 2, 4]}, "model.lame.elastic_k: must be ascending without repeats"),
    ({"elastic_k": [0, 9]}, "model.lame.elastic_k[1]: 9 is more than num_reason_tokens (4)"),
    ({"elastic_k": [-1, 4]}, "model.lame.elastic_k[0]: must be >= 0, got -1"),
    ({"elastic_k": ["two", 4]}, "model.lame.elastic_k[0]: must be an integer, got 'two'"),
    ({"elastic_k": [0, 2]}, "model.lame.elastic_k: must end with num_reason_tokens (4)"),
    ({"elastic_k": []}, "model.lame.elastic_k: must be a non-empty list"),
    ({"elastic_k": [0, 4], "variant": "sequential"}, "model.lame.elastic_k: only the 'lame' variant"),
    ({"matryoshka_dims": [16, 64]}, "model.lame.matryoshka_dims: must be descending without repeats"),
    ({"matryoshka_dims": [64, 0]}, "model.lame.matryoshka_dims[1]: must be >= 1, got 0"),
    ({"matryoshka_dims": [32, 16], "projection_dim": 48}, "model.lame.matryoshka_dims[0]: must be the embedding "
                                                          "size, projection_dim (48); got 32"),
])
def test_bad_elastic_settings_are_named_by_their_recipe_path(tmp_path, lame, message):
    with pytest.raises(RecipeError) as caught:
        recipe_from_dict(recipe(tmp_path, **lame), tmp_path)
    assert str(caught.value).startswith(message), str(caught.value)


def test_sizes_are_checked_against_the_built_model(tmp_path):
    """The hidden size is known once the backbone is built: a first size other than it is a recipe error."""
    checked = recipe_from_dict(recipe(tmp_path, matryoshka_dims=[32, 16]), tmp_path)
    with pytest.raises(RecipeError, match=r"^model\.lame\.matryoshka_dims\[0\]: must be the model's embedding "
                                          r"size \(64\), the size encode gives by default; got 32$"):
        build_model(checked)


# ------------------------------------------------------------------------------------------ training
def test_the_draw_of_k_depends_on_the_seed_and_step_only():
    draws = [draw_reason_tokens(CHOICES, 7, step) for step in range(1, 401)]
    assert draws == [draw_reason_tokens(list(CHOICES), 7, step) for step in range(1, 401)]
    # queries and documents draw independently: every pair occurs (each of the 9 has p = 1/9 per step)
    assert set(draws) == {(q, d) for q in CHOICES for d in CHOICES}
    assert draws != [draw_reason_tokens(CHOICES, 8, step) for step in range(1, 401)]
    assert {draw_reason_tokens([K], 7, step) for step in range(1, 50)} == {(K, K)}


def test_matryoshka_loss_is_the_mean_over_renormalised_prefixes():
    torch.manual_seed(0)
    q, p, n = (torch.nn.functional.normalize(torch.randn(6, *shape, 64), dim=-1) for shape in ((), (), (2,)))
    plain = info_nce(q, p, n, temperature=0.05)
    assert torch.equal(MatryoshkaLoss(info_nce, [64])(q, p, n, temperature=0.05), plain)
    short = MatryoshkaLoss(info_nce, [16])
    # the 16-value loss reads the first 16 values only, after re-normalising them
    changed = q.clone()
    changed[:, 16:] = torch.randn(6, 48)
    changed[:, :16] *= 3.0
    torch.testing.assert_close(short(changed, p, n, temperature=0.05), short(q, p, n, temperature=0.05))
    assert not math.isclose(float(short(q, p, n, temperature=0.05)), float(plain), rel_tol=1e-3)
    both = MatryoshkaLoss(info_nce, [64, 16])(q, p, None, temperature=0.05)
    expected = (info_nce(q, p, temperature=0.05) + short(q, p, None, temperature=0.05)) / 2
    torch.testing.assert_close(both, expected)
    with pytest.raises(ValueError, match="matryoshka size 80 is more than the embeddings' 64"):
        MatryoshkaLoss(info_nce, [80])(q, p)


@pytest.fixture(scope="module")
def elastic_train_model():
    config = LaMEConfig(num_reason_tokens=3, temperature=0.05, max_length=512, elastic_k=[0, 1, 3],
                        matryoshka_dims=[64, 16])
    return build_tiny_model("qwen2_vl", seed=1, config=config).train()


def step_gradients(model, batch, reason_tokens, chunk=None):
    model.zero_grad(set_to_none=True)
    weights = LossWeights(1.0, 0.7, 0.3)
    losses = compute_gradients(model, batch, weights, chunk, reason_tokens=reason_tokens)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return losses, grads


@pytest.mark.parametrize("reason_tokens", [(1, 3), (3, 0), (0, 1)])
def test_a_step_at_drawn_k_reads_only_those_tokens_and_grad_cache_agrees(elastic_train_model, reason_tokens):
    model = elastic_train_model
    batch = sum_batch(model)
    losses, grads = step_gradients(model, batch, reason_tokens)
    latent = grads["latent_embeddings"].abs().amax(dim=1)  # per latent vector: reason 0..2, then [EMBED]
    used = max(reason_tokens)
    assert (latent[:used] > 0).all() and latent[3] > 0
    assert (latent[used:3] == 0).all()  # reason tokens past both k are never read
    decoder = [n for n in grads if n.startswith("decoder_head.")]
    if reason_tokens[0] == 0:  # queries without reason tokens: the decoder has nothing to read
        assert losses.reconstruction == 0 and decoder == [] and losses.diversity == 0
    else:
        assert losses.reconstruction > 0 and decoder
    # GradCache: the tolerance of tests/test_training.py's test_grad_cache_equals_full_batch
    chunked_losses, chunked = step_gradients(model, batch, reason_tokens, chunk=2)
    assert math.isclose(chunked_losses.total, losses.total, rel_tol=1e-5, abs_tol=1e-6)
    assert chunked.keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(chunked[name], g, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_an_elastic_run_with_grad_cache_and_packing_resumes_like_an_uninterrupted_one(tmp_path):
    raw = recipe(tmp_path, elastic_k=[0, 1, 2, 4], matryoshka_dims=[64, 32])
    raw["model"]["decoder"] = "tiny"
    raw["train"] |= {"grad_cache_chunk": 2, "packing": True, "save_every": 2, "log_every": 1}
    draws = [draw_reason_tokens([0, 1, 2, 4], 0, step) for step in range(1, 5)]
    assert any(q < K for q, _ in draws[2:]) and any(d < K for _, d in draws[2:])  # after the kill: other k
    whole = Trainer(recipe_from_dict(raw, tmp_path), show_progress=False).run()
    raw["train"]["output_dir"] = str(tmp_path / "killed")
    killed = recipe_from_dict(raw, tmp_path)
    assert Trainer(killed, show_progress=False).run(stop_after=2) is None
    resumed = Trainer(killed, resume=True, show_progress=False).run()
    want, got = LaMEModel.from_pretrained(whole), LaMEModel.from_pretrained(resumed)
    assert got.reason_token_choices == [0, 1, 2, 4] and got.dimension_choices == [64, 32]
    # the tolerance of tests/test_training.py's kill-and-resume test
    for key, value in want.state_dict().items():
        torch.testing.assert_close(got.state_dict()[key], value, atol=1e-6, rtol=0, msg=lambda m: f"{key}: {m}")
    initial = build_model(recipe_from_dict(raw, tmp_path)).state_dict()["latent_embeddings"]
    assert (want.state_dict()["latent_embeddings"] - initial).abs().amax(dim=1).min() > 0  # every vector trained
