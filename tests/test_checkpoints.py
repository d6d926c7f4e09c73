"""Real checkpoint folders: the published layouts of the three families (tests/published.py), the chat
template the processor uses, the system prompt it adds, items that fail alone, and LaME's forward
against the upstream transformers forward on the same inputs."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from helpers import noise
from published import LAYOUTS, QWEN25_TEXT_TEMPLATE, SYSTEM_PROMPT, write_published_checkpoint
from tolerances import FORWARD, scaled

from lame import LaMEConfig, LaMEModel, build_tiny_model
from lame.data.items import ItemError, to_item
from lame.data.video import Video

FAMILIES = sorted(LAYOUTS)
ITEMS = ["a text query", {"text": "what digit?", "image": noise((40, 30), 1)},
         ["two pictures", noise((28, 28), 2), "and", noise((56, 28), 3)], noise((32, 32), 4)]
VIDEO = Video([noise((64, 48), 10 + i) for i in range(5)], [0.0, 0.4, 0.8, 1.2, 1.6], "clip")
WITH_VIDEO = [*ITEMS, {"text": "what happens?", "video": VIDEO}, ["a clip", VIDEO, "and a still", noise((28, 28), 9)]]


@pytest.fixture(scope="module", params=FAMILIES)
def published(request, tmp_path_factory):
    folder = write_published_checkpoint(tmp_path_factory.mktemp("ckpt") / LAYOUTS[request.param]["name"],
                                        request.param)
    return request.param, folder


def test_a_published_folder_embeds_with_the_processors_multimodal_template(published):
    family, folder = published
    model = LaMEModel.from_backbone(folder, LaMEConfig(num_reason_tokens=2, use_decoder=False))
    assert model.tokenizer.chat_template == LAYOUTS[family]["chat_template"]  # not tokenizer_config.json's
    prompt = model.featurizer.prompt(to_item(ITEMS[1]))
    assert (SYSTEM_PROMPT in prompt) == LAYOUTS[family]["system_prompt"]  # the default system turn, if any
    assert "<|vision_start|><|image_pad|><|vision_end|>what digit?" in prompt
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no item is skipped
        emb = model.encode(ITEMS, on_error="skip")
    assert emb.shape == (len(ITEMS), 64) and np.isfinite(emb).all()
    # saved and reloaded, the model keeps the multimodal template
    model.save_pretrained(folder.parent / f"{family}-lame")
    again = LaMEModel.from_pretrained(folder.parent / f"{family}-lame")
    assert again.tokenizer.chat_template == model.tokenizer.chat_template
    np.testing.assert_allclose(again.encode(ITEMS), emb, atol=FORWARD, rtol=0)


def test_a_template_that_fails_is_each_items_own_error(tmp_path):
    """With a text-only template (what the tokenizer of a Qwen2.5-VL folder holds) every item fails on
    its own: on_error='skip' gives NaN rows and a warning, never an exception."""
    model = build_tiny_model("qwen2_vl", config=LaMEConfig(num_reason_tokens=2, use_decoder=False))
    model.tokenizer.chat_template = QWEN25_TEXT_TEMPLATE
    with pytest.warns(UserWarning, match="skipped 4 of 4 items"):
        emb, skipped = model.encode(ITEMS, on_error="skip", return_skipped=True)
    assert np.isnan(emb).all() and [s.index for s in skipped] == [0, 1, 2, 3]
    assert "can only concatenate str" in skipped[0].reason
    with pytest.raises(ItemError, match="item 0: could not be featurised"):
        model.encode(ITEMS)


def test_an_interleaved_item_is_a_list_inside_the_list():
    """``encode(["caption", img])`` is a batch of two items; one interleaved item is ``[["caption", img]]``
    (or a dict with ``parts``)."""
    model = build_tiny_model("qwen2_vl", config=LaMEConfig(num_reason_tokens=2, use_decoder=False))
    image = noise((28, 28), 5)
    assert model.encode(["caption", image]).shape == (2, 64)
    one = model.encode([["caption", image]])
    assert one.shape == (1, 64)
    np.testing.assert_array_equal(model.encode([{"parts": ["caption", {"image": image}]}]), one)  # the same item
    with pytest.raises(ItemError, match=r"interleaved item is a list inside the list of items"):
        model.encode([["caption", [image]]])


# ------------------------------------------------------------------------------ upstream forward
def upstream_hidden(model, features) -> torch.Tensor:
    """The upstream model's last hidden states for one item alone, its latent tokens' input embeddings
    set to LaME's latent vectors (LaME puts those vectors at these positions)."""
    backbone = copy.deepcopy(model.backbone)
    with torch.no_grad():
        backbone.get_input_embeddings().weight[model.latent_token_ids] = model.latent_embeddings
    batch = model.collate([features])
    keys = ["input_ids", "attention_mask", "pixel_values", "image_grid_thw", "pixel_values_videos",
            "video_grid_thw", "mm_token_type_ids"] + (["second_per_grid_ts"] if model.adapter.timed_video else [])
    inputs = {k: batch[k] for k in keys if k in batch}
    with torch.no_grad():
        return backbone.model(**inputs).last_hidden_state[0]


@pytest.mark.parametrize("k", [0, 8])
@pytest.mark.parametrize("family", FAMILIES)
def test_the_forward_is_the_upstream_forward(family, k):
    """Same inputs, the upstream class's own forward (its own positions, its own video input): LaME's
    hidden states agree, for each item alone and inside a left-padded batch, videos included."""
    model = build_tiny_model(family, seed=1, config=LaMEConfig(num_reason_tokens=k, use_decoder=False)).eval()
    features = model.featurize(WITH_VIDEO)
    assert features[-1].pixel_values_videos is not None and features[-1].pixel_values is not None
    with torch.no_grad():
        together = model(model.collate(features)).hidden_states
        for row, f in enumerate(features):
            expected = upstream_hidden(model, f)
            alone = model(model.collate([f])).hidden_states[0]
            bound = scaled(FORWARD, expected)  # the same model run by other code, alone or in a padded batch
            torch.testing.assert_close(alone, expected, atol=bound, rtol=0)
            torch.testing.assert_close(together[row, -len(f):], expected, atol=bound, rtol=0)


def test_a_full_hd_photo_is_sized_to_the_budget_not_refused(tmp_path):
    """Qwen2-VL's released image-processor settings read a 1920x1080 photo as 2,691 image tokens, over
    the default max_length 2048: the photo is downscaled to fit (aspect kept), in the batched path too;
    text alone over the budget is still refused."""
    folder = write_published_checkpoint(tmp_path / "Qwen2-VL-2B-Instruct", "qwen2_vl")
    model = LaMEModel.from_backbone(folder, LaMEConfig(num_reason_tokens=8, use_decoder=False))
    assert model.config.max_length == 2048
    photo = noise((1920, 1080), 7)
    full = model.featurizer.image_processor(images=[photo], return_tensors="pt")["image_grid_thw"]
    assert int(full.prod()) // 4 == 2691  # what the processor alone makes of it
    item = {"text": "a street at night", "image": photo, "instruction": "Describe the photo."}
    features = model.featurizer(item)
    assert 1900 < len(features) <= 2048
    t, h, w = features.image_grid_thw[0].tolist()
    # the aspect ratio is kept, up to each side landing on a multiple of 2 patches (at most 2 patches off)
    assert abs(w / h - 1920 / 1080) <= 2 * (1 + 1920 / 1080) / h
    (batched,) = model.featurizer.many([item])
    assert torch.equal(batched.input_ids, features.input_ids)
    assert model.featurizer.length(item) == len(features)
    with pytest.raises(ItemError, match="too long"):
        model.featurizer("seven " * 2100)
