"""A new backbone family is one adapter: LLaVA (CLIP vision tower + Llama language model, the upstream
``LlavaForConditionalGeneration``, nothing Qwen in the model) registered here, then built, encoded,
trained a step, saved and reloaded through the same LaME code as the Qwen families."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from helpers import noise
from tolerances import FORWARD, UNIT_NORM
from lame import LaMEConfig, LaMEModel
from lame.modeling import ADAPTERS, BackboneAdapter, get_adapter, register_adapter, tiny_families
from lame.modeling.baselines import variant_of
from lame.modeling.lora import add_lora
from lame.modeling.tiny import build_tiny_tokenizer, tiny_decoder
from lame.training.steps import LossWeights, TrainBatch, compute_gradients

IMAGE_SIZE, PATCH = 28, 14  # 2 x 2 patches: 4 image tokens per image

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@dataclass(frozen=True, kw_only=True)
class LlavaAdapter(BackboneAdapter):
    """The whole family: one patch-grid count per image; every other default of BackboneAdapter fits."""

    def image_slots(self, vision, image_processor, backbone_config):
        height, width = vision["pixel_values"].shape[-2:]
        patch = backbone_config.vision_config.patch_size
        tokens = (height // patch) * (width // patch) + (backbone_config.vision_feature_select_strategy == "full")
        n = vision["pixel_values"].shape[0]
        return [int(tokens)] * n, [1] * n


LLAVA = LlavaAdapter(model_type="llava", model_class=LlavaForConditionalGeneration,
                     image_processor_class=CLIPImageProcessorPil, image_token="<image>")


def tiny_llava(tokenizer) -> LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    return LlavaForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def llava_registered():
    register_adapter(LLAVA)
    try:
        yield LLAVA
    finally:
        ADAPTERS.pop("llava")


@pytest.fixture(scope="module")
def model(llava_registered):
    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    decoder_tokenizer = build_tiny_tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return LaMEModel.from_components(LaMEConfig(num_reason_tokens=4, max_length=256), tiny_llava(tokenizer),
                                     tokenizer, image_processor, tiny_decoder(decoder_tokenizer), decoder_tokenizer)


ITEMS = [
    "a text query about document 5",
    noise((40, 30), seed=0),
    {"text": "find this digit", "image": noise((20, 20), seed=1), "instruction": "Retrieve the matching image."},
    ["two figures", noise((30, 30), seed=2), "and", noise((50, 20), seed=3)],
    "seven",
]


def test_registering_makes_the_family_known(llava_registered):
    assert get_adapter("llava") is LLAVA
    assert "llava" not in tiny_families()  # no tiny config: not offered to `lame demo`
    with pytest.raises(ValueError, match="already registered"):
        register_adapter(LLAVA)
    with pytest.raises(ValueError, match="unsupported backbone type 'nope'.*llava"):
        get_adapter("nope")


def test_model_is_the_upstream_llava_class(model):
    assert type(model.backbone) is LlavaForConditionalGeneration and model.adapter is LLAVA
    assert model.config.backbone_type == "llava"
    features = model.featurizer(ITEMS[3])
    assert features.image_grid_thw is None and features.pixel_values.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert int((features.input_ids == model.featurizer.image_token_id).sum()) == 2 * (IMAGE_SIZE // PATCH) ** 2


def test_positions_are_one_dimensional_and_padding_aware(model):
    batch = model.collate(model.featurize(["short", "a much longer query with many words"]))
    positions = model.adapter.positions(model.backbone, batch)
    assert positions.shape == batch["input_ids"].shape
    for row in range(2):
        real = batch["attention_mask"][row].bool()
        assert positions[row, real].tolist() == list(range(int(real.sum())))


def test_encode_alone_equals_padded_batch(model):
    together = model.encode(ITEMS, batch_size=len(ITEMS))
    alone = np.stack([model.encode([item])[0] for item in ITEMS])
    np.testing.assert_allclose(together, alone, atol=FORWARD, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=UNIT_NORM, rtol=0)
    assert np.abs(model.similarity(together, together) - np.eye(len(ITEMS))).max() > 1e-3
    assert model.embedding_dim == together.shape[1] == 64


def test_one_training_step_reaches_every_part(model):
    model.train()
    try:
        batch = TrainBatch(queries=model.featurize(ITEMS[:2]), positives=model.featurize(ITEMS[2:4]),
                           negatives=[], targets=["seven", "three"], labels=torch.tensor([0, 1]))
        model.zero_grad()
        losses = compute_gradients(model, batch, LossWeights(1.0, 1.0, 0.1))
        assert all(np.isfinite([losses.contrastive, losses.reconstruction, losses.diversity]))
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        for prefix in ("latent_embeddings", "backbone.model.language_model.", "backbone.model.vision_tower.",
                       "backbone.model.multi_modal_projector.", "decoder_head."):
            assert any(name.startswith(prefix) and g.abs().sum() > 0 for name, g in grads.items()), prefix
        assert all(torch.isfinite(g).all() for g in grads.values())
    finally:
        model.zero_grad()
        model.eval()


def test_save_and_reload_identical(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    reloaded = LaMEModel.from_pretrained(tmp_path / "m")
    assert type(reloaded.image_processor) is CLIPImageProcessorPil and reloaded.adapter is LLAVA
    np.testing.assert_array_equal(reloaded.encode(ITEMS), model.encode(ITEMS))  # the same weights, the same code


def test_lora_goes_into_the_language_model(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    copy = LaMEModel.from_pretrained(tmp_path / "m")
    add_lora(copy, r=2, alpha=4, target_modules=("q_proj", "v_proj"))
    names = [n for n, _ in copy.named_parameters() if ".lora_" in n]
    assert names and all(n.startswith(LLAVA.lora_host + ".") for n in names)
    np.testing.assert_array_equal(copy.encode(ITEMS[:2]), model.encode(ITEMS[:2]))  # B = 0: the adapters add zeros


@pytest.mark.parametrize("variant", ["sequential", "cot"])
def test_baselines_run_through_the_adapter(model, variant):
    settings = {"latent_steps": 2} if variant == "sequential" else {"cot_max_new_tokens": 3}
    baseline = variant_of(model, variant, **settings).eval()
    items = ITEMS[:3]
    together = baseline.encode(items, batch_size=len(items))
    alone = np.stack([baseline.encode([item])[0] for item in items])
    np.testing.assert_allclose(together, alone, atol=FORWARD, rtol=0)


def test_a_family_without_a_tiny_config_is_refused_by_name(llava_registered, tmp_path):
    from lame import build_tiny_model
    from lame.training.recipe import RecipeError, recipe_from_dict

    with pytest.raises(ValueError, match="'llava' has no tiny config"):
        build_tiny_model("llava")
    (tmp_path / "train.jsonl").write_text('{"query": "q", "positive": "p"}\n')
    recipe = {"model": {"backbone": "tiny:llava", "decoder": None}, "data": {"sources": [{"path": "train.jsonl"}]},
              "train": {"output_dir": str(tmp_path / "out")},
              "stages": [{"name": "s", "steps": 1, "batch_size": 1, "trainable": [{"pattern": "latent_embeddings"}]}]}
    with pytest.raises(RecipeError, match="no tiny config for backbone type 'llava'"):
        recipe_from_dict(recipe, tmp_path)
