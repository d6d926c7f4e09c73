"""A saved LaME folder loads as a sentence-transformers model and embeds as LaMEModel.encode does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import build_tiny_baseline, noise
from tolerances import FORWARD, UNIT_NORM, float32_sum

from lame import LaMEModel

pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer  # noqa: E402

TEXTS = ["a handwritten seven", "zero", "the digit four, drawn twice", "nine"]


@pytest.fixture(scope="module")
def lame_model(saved_tiny_model):
    return LaMEModel.from_pretrained(saved_tiny_model)


@pytest.fixture(scope="module")
def st(saved_tiny_model):
    return SentenceTransformer(str(saved_tiny_model), trust_remote_code=True, device="cpu")


def test_saved_folder_declares_the_module(saved_tiny_model):
    modules = json.loads((saved_tiny_model / "modules.json").read_text())
    assert modules == [{"idx": 0, "name": "0", "path": "", "type": "lame.integrations.sentence_transformers.LaMEModule"}]
    config = json.loads((saved_tiny_model / "config_sentence_transformers.json").read_text())
    assert config["model_type"] == "SentenceTransformer" and config["similarity_fn_name"] == "cosine"
    assert "lame" in config["requirements"]


def test_sentence_transformers_6_asks_for_trust_remote_code(saved_tiny_model):
    # a class outside sentence_transformers.* is imported only when the caller allows it
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(saved_tiny_model), device="cpu")


def test_text_embeddings_match(st, lame_model):
    got = st.encode(TEXTS, batch_size=3)
    np.testing.assert_allclose(got, lame_model.encode(TEXTS), atol=FORWARD, rtol=0)
    assert got.shape == (4, lame_model.embedding_dim) == (4, st.get_embedding_dimension())
    np.testing.assert_allclose(st.encode("zero"), lame_model.encode("zero"), atol=FORWARD, rtol=0)
    tensor = st.encode(TEXTS[:2], convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, 64)


def test_image_and_multimodal_embeddings_match(st, lame_model, tmp_path):
    a, b = noise((28, 20), seed=1), noise((16, 16), seed=2)
    a.save(tmp_path / "a.png")
    array = np.asarray(b)  # (H, W, 3) uint8: an image to sentence-transformers
    st_inputs = [a, str(tmp_path / "a.png"), array, {"text": "which digit?", "image": a},
                 {"text": "two pictures", "image": [a, b]}]
    lame_items = [a, tmp_path / "a.png", b, {"text": "which digit?", "image": a},
                  {"text": "two pictures", "images": [a, b]}]
    np.testing.assert_allclose(st.encode(st_inputs, batch_size=2), lame_model.encode(lame_items), atol=FORWARD, rtol=0)
    # only images: the batch's modality is "image"
    np.testing.assert_allclose(st.encode([a, b]), lame_model.encode([a, b]), atol=FORWARD, rtol=0)
    chat = [{"role": "system", "content": "Find the digit."},
            {"role": "user", "content": [{"type": "image", "image": a}, {"type": "text", "text": "this one"}]}]
    np.testing.assert_allclose(st.encode([chat])[0],
                               lame_model.encode({"parts": [a, "this one"], "instruction": "Find the digit."}),
                               atol=FORWARD, rtol=0)


def test_prompt_is_the_instruction_and_similarity_works(st, lame_model):
    got = st.encode(["seven"], prompt="Find the digit word.")
    np.testing.assert_allclose(got, lame_model.encode([{"text": "seven", "instruction": "Find the digit word."}]),
                               atol=FORWARD, rtol=0)
    q, d = st.encode(TEXTS[:2]), st.encode(TEXTS)
    scores = st.similarity(q, d)
    # the same vectors by torch and by numpy: two 64-d normalisations and a 64-term dot product
    np.testing.assert_allclose(scores.numpy(), lame_model.similarity(q, d), atol=float32_sum(3 * 64 + 2), rtol=0)
    # one text embedded in two batches, both unit: 1 - |q - d|^2 / 2, so their rounding is second order
    assert scores.shape == (2, 4) and abs(float(scores[0, 0]) - 1) <= UNIT_NORM


def test_st_save_reloads_in_both(st, lame_model, tmp_path):
    st.save(str(tmp_path / "again"))
    again = LaMEModel.from_pretrained(tmp_path / "again")
    np.testing.assert_array_equal(again.encode(TEXTS), lame_model.encode(TEXTS))  # the same weights, the same call
    reloaded = SentenceTransformer(str(tmp_path / "again"), trust_remote_code=True, device="cpu")
    np.testing.assert_allclose(reloaded.encode(TEXTS), lame_model.encode(TEXTS), atol=FORWARD, rtol=0)


def test_folders_saved_before_still_load(saved_tiny_model, lame_model, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(saved_tiny_model, old)
    (old / "modules.json").unlink()
    (old / "config_sentence_transformers.json").unlink()
    np.testing.assert_array_equal(LaMEModel.from_pretrained(old).encode(TEXTS), lame_model.encode(TEXTS))


def test_unsupported_inputs_are_user_errors(st):
    from lame.errors import UserError

    with pytest.raises(UserError, match="not fetched"):
        st.encode(["https://example.org/x.png"])


def test_encode_query_and_encode_document_are_lames_roles(tmp_path):
    """sentence-transformers' encode_query / encode_document pass task="query" / "document": the
    explicit-CoT baseline then generates a rationale for the queries only, as LaMEModel does."""
    build_tiny_baseline("cot", cot_max_new_tokens=4).save_pretrained(tmp_path / "cot")
    model = LaMEModel.from_pretrained(tmp_path / "cot")
    st = SentenceTransformer(str(tmp_path / "cot"), trust_remote_code=True, device="cpu")
    queries, documents = st.encode_query(TEXTS[:2]), st.encode_document(TEXTS[:2])
    np.testing.assert_allclose(queries, model.encode_query(TEXTS[:2]), atol=FORWARD, rtol=0)
    np.testing.assert_allclose(documents, model.encode_document(TEXTS[:2]), atol=FORWARD, rtol=0)
    np.testing.assert_allclose(st.encode(TEXTS[:2]), queries, atol=FORWARD, rtol=0)  # no role: a query, as in LaME
    assert np.abs(queries - documents).max() > 1e-3
