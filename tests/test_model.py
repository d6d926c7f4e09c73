"""The core model on the three real backbone classes (tiny, random configs)."""

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import noise
from tolerances import FORWARD, UNIT_NORM, float32_sum
from lame import LaMEConfig, LaMEModel, build_tiny_model
from lame.modeling.adapters import get_adapter, tiny_families
from lame.modeling.tiny import QWEN_SPECIAL_TOKENS, build_tiny_tokenizer, tiny_decoder

FAMILIES = tiny_families()


def digit_image(seed: int, size: int = 8) -> Image.Image:
    return noise((size, size), seed, high=255)


MIXED = [
    "a text query about document 5 and its 12 pages",
    digit_image(0),
    ["two images", digit_image(1), "between", digit_image(2)],
    {"text": "find this digit", "image": digit_image(3), "instruction": "Retrieve the matching image."},
]


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return build_tiny_model(request.param, seed=0)


def test_encode_shape_dtype_unit_norm(model):
    emb = model.encode(MIXED, batch_size=2)
    assert emb.shape == (len(MIXED), 64)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=UNIT_NORM, rtol=0)
    assert np.abs(model.similarity(emb, emb) - np.eye(len(MIXED))).max() > 1e-3  # not all identical


def test_bfloat16_embeddings_are_normalised_in_float32():
    model = build_tiny_model("qwen2_vl", config=LaMEConfig(num_reason_tokens=2, use_decoder=False)).to(torch.bfloat16)
    emb = model.encode(["seven", "a handwritten three", "two plus two"])
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=UNIT_NORM, rtol=0)  # bfloat16: ~1e-2 off


def test_single_item_gives_vector(model):
    vec = model.encode("a text query")
    np.testing.assert_array_equal(vec, model.encode(["a text query"])[0])  # the same batch of one
    assert vec.shape == (64,)


def test_tiny_tokenizer_splits_the_same_after_reload(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["document 5", "What is 12+7?", "<|im_start|>user\nhi<|im_end|>", "seven plus three"]:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert tokenizer("<|im_start|>")["input_ids"] == [tokenizer.convert_tokens_to_ids("<|im_start|>")]


def test_embedding_does_not_depend_on_batch_neighbours(model):
    """Left padding and padding-aware positions: alone or in a mixed batch, same embedding."""
    together = model.encode(MIXED, batch_size=len(MIXED))
    alone = np.stack([model.encode([item])[0] for item in MIXED])
    np.testing.assert_allclose(together, alone, atol=FORWARD, rtol=0)


def test_save_and_reload_identical(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").rglob("*")}
    assert "lame_config.json" in files and "README.md" in files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    reloaded = LaMEModel.from_pretrained(tmp_path / "m")
    assert reloaded.config == model.config
    np.testing.assert_array_equal(reloaded.encode(MIXED), model.encode(MIXED))
    assert reloaded.decode_latents(MIXED[:2], max_new_tokens=4) == model.decode_latents(MIXED[:2], max_new_tokens=4)


def test_latent_tokens_sit_after_the_assistant_prompt(model):
    k = model.config.num_reason_tokens
    features = model.featurizer("where are the tokens")
    ids = features.input_ids.tolist()
    assert ids[-(k + 1):] == model.config.reason_token_ids + model.config.embed_token_ids
    assert model.config.reason_token_ids == model.tokenizer.convert_tokens_to_ids([f"<|reason_{i}|>" for i in range(k)])
    assert model.config.embed_token_ids == [model.tokenizer.convert_tokens_to_ids("<|embed|>")]
    prompt_end = model.tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert ids[-(k + 1) - len(prompt_end): -(k + 1)] == prompt_end
    # the latent tokens appear nowhere else
    assert sum(i in set(model.config.reason_token_ids + model.config.embed_token_ids) for i in ids) == k + 1


def test_latent_block_stays_last_under_left_padding(model):
    batch = model.collate([model.featurizer("short"), model.featurizer("a much longer query with many words")])
    latent = torch.tensor(model.config.reason_token_ids + model.config.embed_token_ids)
    assert torch.equal(batch["input_ids"][:, -len(latent):], latent.expand(2, -1))
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][1, 0] == 1


def test_decoder_sees_only_the_first_k_latent_states(model):
    k = model.config.num_reason_tokens
    batch = model.collate(model.featurize(MIXED[:2]))
    out = model(batch)
    out.hidden_states.retain_grad()
    model.reconstruction_loss(out.reason_states, ["three", "seven"]).backward()
    grad_norm = out.hidden_states.grad.norm(dim=-1)  # (B, L)
    length = grad_norm.shape[1]
    reason_cols = list(range(length - k - 1, length - 1))
    assert (grad_norm[:, reason_cols] > 0).all()
    others = [c for c in range(length) if c not in reason_cols]
    assert grad_norm[:, others].abs().max() == 0
    model.zero_grad()


def test_encode_never_runs_the_decoder(model, monkeypatch):
    calls = []
    monkeypatch.setattr(model.decoder_head.decoder, "forward", lambda *a, **k: calls.append(1))
    model.encode(MIXED)
    assert calls == []


def test_k_zero_is_the_discriminative_embedder():
    model = build_tiny_model("qwen2_vl", num_reason_tokens=0)
    assert model.decoder_head is None
    ids = model.featurizer("plain").input_ids.tolist()
    assert ids[-1] == model.config.embed_token_ids[0]
    assert not any(t.startswith("<|reason") for t in model.tokenizer.convert_ids_to_tokens(ids))
    batch = model.collate(model.featurize(["plain", "another"]))
    out = model(batch)
    assert out.reason_states.shape[1] == 0
    expected = torch.nn.functional.normalize(out.hidden_states[:, -1], dim=-1)
    torch.testing.assert_close(out.embeddings, expected, atol=float32_sum(64 + 2), rtol=0)  # a 64-d normalisation


def test_mean_pooling_over_the_positions_after_k():
    model = build_tiny_model("qwen2_vl", num_reason_tokens=4, num_embed_tokens=3, pooling="mean", projection_dim=16)
    out = model(model.collate(model.featurize(["one", "two"])))
    assert out.embed_states.shape[1] == 3 and out.reason_states.shape[1] == 4
    assert out.embeddings.shape == (2, 16)
    expected = torch.nn.functional.normalize(model.embedding_head.projection(out.hidden_states[:, -3:].mean(1)), dim=-1)
    # a mean of 3, a projection of 64 terms, a 16-d normalisation
    torch.testing.assert_close(out.embeddings, expected, atol=float32_sum(3 + 64 + 16 + 2), rtol=0)
    assert model.tokenizer.convert_ids_to_tokens(model.config.embed_token_ids)[-1] == "<|embed|>"


def test_attention_pooling_weighs_the_positions_after_k_with_its_query():
    """With a non-zero query, attention pooling is a softmax-weighted sum of the last M states, not their mean."""
    model = build_tiny_model("qwen2_vl", num_reason_tokens=4, num_embed_tokens=3, pooling="attention", projection_dim=16)
    with torch.no_grad():
        model.embedding_head.query.copy_(torch.randn(64, generator=torch.Generator().manual_seed(0)) * 8)
        out = model(model.collate(model.featurize(["one", "two"])))
    states = out.hidden_states[:, -3:]  # the M positions after the K reason tokens
    weights = (states @ model.embedding_head.query / 64**0.5).softmax(dim=1)
    project = model.embedding_head.projection
    with torch.no_grad():
        expected = torch.nn.functional.normalize(project((weights.unsqueeze(-1) * states).sum(1)), dim=-1)
        mean = torch.nn.functional.normalize(project(states.mean(1)), dim=-1)
    # the scores' 64 terms (up to `scores` in size: the softmax passes their rounding on), a softmax and a weighted
    # sum over 3 positions, a projection of 64 terms, a 16-d normalisation
    scores = float((states.abs() @ model.embedding_head.query.detach().abs()).max()) / 64**0.5
    bound = float32_sum(64 + 2 * 3 + 3 + 64 + 16 + 2, scale=1 + scores)
    torch.testing.assert_close(out.embeddings, expected, atol=bound, rtol=0)
    assert (out.embeddings - mean).abs().max() > 10 * bound


def test_attention_pooling_weights_are_a_softmax_over_the_positions():
    """States that are basis vectors make the pooled vector show the weights themselves."""
    from lame.modeling.heads import EmbeddingHead

    head = EmbeddingHead(8, "attention")
    with torch.no_grad():
        head.query.copy_(torch.tensor([2.0, -1.0, 0.5, 3.0, 0.0, 0.0, 0.0, 0.0]))
    states = torch.eye(8)[:4].unsqueeze(0)  # (1, M=4, H=8): position j is e_j
    with torch.no_grad():
        pooled = head(states, normalize=False)[0]
        expected = (head.query[:4] / 8**0.5).softmax(0)
    softmax = float32_sum(2 * 4 + 2)  # exp, a sum of 4, a division: weights in [0, 1]
    torch.testing.assert_close(pooled[:4], expected, atol=softmax, rtol=0)
    assert torch.all(pooled[:4] > 0) and abs(float(pooled.sum()) - 1.0) <= softmax and torch.all(pooled[4:] == 0)
    with torch.no_grad():  # the zero-initialised query weighs the positions equally
        torch.testing.assert_close(EmbeddingHead(8, "attention")(states, normalize=False)[0, :4], torch.full((4,), 0.25),
                                   atol=softmax, rtol=0)


def test_attention_pooling_is_learnable():
    model = build_tiny_model("qwen2_vl", num_reason_tokens=2, num_embed_tokens=3, pooling="attention")
    out = model(model.collate(model.featurize(["one"])))
    out.embeddings.sum().backward()
    assert model.embedding_head.query.grad.abs().sum() > 0


def test_unnormalised_embeddings_on_request(model):
    raw = model.encode(MIXED[:2], normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=UNIT_NORM, rtol=0)
    # the same states normalised by numpy and by the model: two 64-d normalisations
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), model.encode(MIXED[:2]), atol=UNIT_NORM,
                               rtol=0)


def test_decode_latents_returns_text_per_item(model):
    texts = model.decode_latents(MIXED, max_new_tokens=3)
    assert len(texts) == len(MIXED) and all(isinstance(t, str) for t in texts)


def test_decode_latents_says_what_the_decoder_learnt():
    """A few steps of the decoder head on one query's reason states: it then decodes exactly the target."""
    model = build_tiny_model("qwen2_vl", seed=0, num_reason_tokens=4)
    query, target = "three plus four", "seven plus three"
    assert model.decode_latents([query], max_new_tokens=8) != [target]
    with torch.no_grad():
        states = model(model.collate(model.featurize([query]))).reason_states
    optimizer = torch.optim.Adam(model.decoder_head.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        model.reconstruction_loss(states, [target]).backward()
        optimizer.step()
    assert model.decode_latents([query], max_new_tokens=8) == [target]


def test_similarity_is_cosine():
    a = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    b = np.array([[0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(LaMEModel.similarity(a, b), [[0.8], [0.0]], atol=float32_sum(3 * 2), rtol=0)
    assert isinstance(LaMEModel.similarity(torch.tensor(a), torch.tensor(b)), torch.Tensor)


@pytest.mark.parametrize("family", FAMILIES)
def test_from_backbone_loads_a_local_hf_checkpoint(family, tmp_path):
    """A plain Hugging Face VLM folder (as downloaded by a user) plus a decoder folder."""
    tokenizer = build_tiny_tokenizer()
    adapter = get_adapter(family)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vlm = adapter.model_class(adapter.tiny_config(len(tokenizer), ids))
    vlm.save_pretrained(tmp_path / "vlm")
    tokenizer.save_pretrained(tmp_path / "vlm")
    adapter.tiny_image_processor().save_pretrained(tmp_path / "vlm")
    tiny_decoder(tokenizer).save_pretrained(tmp_path / "dec")
    tokenizer.save_pretrained(tmp_path / "dec")

    model = LaMEModel.from_backbone(tmp_path / "vlm", LaMEConfig(num_reason_tokens=4), decoder=tmp_path / "dec")
    assert model.config.backbone_type == family
    torch.testing.assert_close(model.backbone.model.language_model.layers[0].mlp.up_proj.weight,
                               vlm.model.language_model.layers[0].mlp.up_proj.weight, atol=0, rtol=0)  # loaded as saved
    emb = model.encode(MIXED)
    assert emb.shape == (len(MIXED), 64) and np.isfinite(emb).all()


def test_from_backbone_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LaMEModel.from_backbone(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not a saved LaME model"):
        LaMEModel.from_pretrained(tmp_path)


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown LaME config key"):
        LaMEConfig.from_dict({"num_reason_tokens": 4, "num_reasoning_tokens": 8})
    with pytest.raises(ValueError, match="pooling"):
        LaMEConfig(pooling="max")
    with pytest.raises(ValueError, match="num_reason_tokens"):
        LaMEConfig(num_reason_tokens=-1)
