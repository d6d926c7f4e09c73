"""The item schema (lame.data.items) and the featuriser / collator built on it (lame.data.featurize)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import noise
from lame.data.featurize import collate
from lame.data.items import Item, ItemError, to_item
from lame.modeling.tiny import build_tiny_model


# ----------------------------------------------------------------------------------------- helpers
def solid(color, size=(20, 20), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def write_png(path: Path, image: Image.Image) -> Path:
    image.save(path, format="PNG")
    return path


def kinds(item: Item) -> list[str]:
    return ["img" if isinstance(p, Image.Image) else "txt" for p in item.parts]


def first_pixel(image: Image.Image):
    return image.getpixel((0, 0))


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("qwen2_vl", seed=0, max_length=512)


@pytest.fixture(scope="module")
def featurizer(model):
    return model.featurizer


# ---------------------------------------------------------------------------------- to_item: forms
def test_plain_string_is_text():
    item = to_item("a photo of a cat")
    assert item.parts == ["a photo of a cat"]
    assert item.images == []
    assert item.instruction is None
    assert item.text == "a photo of a cat"


def test_plain_string_naming_an_existing_file_stays_text(tmp_path):
    path = write_png(tmp_path / "cat.png", solid((255, 0, 0)))
    for obj in (str(path), [str(path)], {"text": str(path)}, [{"text": str(path)}]):
        item = to_item(obj)
        assert item.parts == [str(path)], obj
        assert item.images == [], obj


def test_pil_image_is_one_rgb_image_part():
    image = solid((10, 20, 30), size=(33, 17))
    item = to_item(image)
    assert kinds(item) == ["img"]
    assert item.images[0].mode == "RGB"
    assert item.images[0].size == (33, 17)
    assert first_pixel(item.images[0]) == (10, 20, 30)
    assert item.text == ""


def test_path_to_png_is_loaded_as_image(tmp_path):
    source = noise((24, 16), seed=1)
    path = write_png(tmp_path / "noise.png", source)
    item = to_item(path)
    assert kinds(item) == ["img"]
    loaded = item.images[0]
    assert loaded.mode == "RGB"
    assert loaded.size == (24, 16)
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(source))  # PNG is lossless


def test_image_bytes_part_is_decoded():
    buffer = io.BytesIO()
    solid((1, 2, 3)).save(buffer, format="PNG")
    item = to_item([buffer.getvalue(), "caption"])
    assert kinds(item) == ["img", "txt"]
    assert first_pixel(item.images[0]) == (1, 2, 3)


def test_list_of_mixed_parts_keeps_reading_order_and_drops_empty_text(tmp_path):
    red, green, blue = solid((255, 0, 0)), (0, 255, 0), solid((0, 0, 255))
    green_path = write_png(tmp_path / "green.png", solid(green))
    item = to_item(
        ["intro", red, {"text": "middle"}, "", {"image": green_path}, "   \n", {"image": blue}, {"text": " "}, "end"]
    )
    assert kinds(item) == ["txt", "img", "txt", "img", "img", "txt"]
    assert [p for p in item.parts if isinstance(p, str)] == ["intro", "middle", "end"]
    assert [first_pixel(im) for im in item.images] == [(255, 0, 0), green, (0, 0, 255)]
    assert item.images == [p for p in item.parts if isinstance(p, Image.Image)]
    assert item.text == "intro middle end"


def test_dict_with_text_image_images_instruction_resolves_paths_against_base_dir(tmp_path):
    write_png(tmp_path / "a.png", solid((255, 0, 0)))
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "b.png", solid((0, 255, 0)))
    item = to_item(
        {
            "instruction": "represent the document.",
            "text": "a photo of a dog",
            "image": "a.png",
            "images": ["sub/b.png", solid((0, 0, 255))],
        },
        base_dir=tmp_path,
    )
    assert item.instruction == "represent the document."
    # images (the single "image" first, then "images" in order), then the text
    assert kinds(item) == ["img", "img", "img", "txt"]
    assert [first_pixel(im) for im in item.images] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    assert item.parts[-1] == "a photo of a dog"
    # the instruction is not a part of the query text
    assert item.text == "a photo of a dog"


def test_dict_image_string_is_not_resolved_against_cwd_when_base_dir_given(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_png(elsewhere / "x.png", solid((1, 1, 1)))
    base = tmp_path / "base"
    base.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ItemError, match="does not exist") as info:
        to_item({"image": "x.png"}, index=3, base_dir=base)
    assert str(base / "x.png") in str(info.value)
    assert info.value.index == 3


def test_dict_with_parts_and_several_images(tmp_path):
    item = to_item({"parts": ["first", solid((9, 9, 9))], "images": [solid((8, 8, 8)), solid((7, 7, 7))]})
    assert kinds(item) == ["txt", "img", "img", "img"]
    assert [first_pixel(im) for im in item.images] == [(9, 9, 9), (8, 8, 8), (7, 7, 7)]


def test_empty_instruction_becomes_none():
    assert to_item({"text": "q", "instruction": ""}).instruction is None


@pytest.mark.parametrize(
    "mode, color, expected",
    [("L", 77, (77, 77, 77)), ("RGBA", (200, 100, 50, 128), (200, 100, 50)), ("P", 3, None)],
)
def test_images_are_converted_to_rgb(tmp_path, mode, color, expected):
    image = Image.new(mode, (20, 20), color)
    for obj in (image, write_png(tmp_path / f"{mode}.png", image), [image], {"image": image}):
        item = to_item(obj)
        assert item.images[0].mode == "RGB"
        if expected is not None:
            assert first_pixel(item.images[0]) == expected


# ------------------------------------------------------------------------------------- featurizer
def latent_ids(model) -> list[int]:
    return model.config.reason_token_ids + model.config.embed_token_ids


def test_prompt_ends_with_the_latent_block(model, featurizer):
    latent = model.config.latent_token_strings()
    assert latent[-1] == "<|embed|>" and len(latent) == model.config.num_latent_tokens
    for obj in ("a photo of a cat", solid((1, 2, 3)), {"text": "q", "image": solid((4, 5, 6)), "instruction": "i"}):
        prompt = featurizer.prompt(to_item(obj))
        assert prompt.endswith("".join(latent))
        ids = featurizer(obj).input_ids.tolist()
        n = model.config.num_latent_tokens
        assert ids[-n:] == latent_ids(model)
        # the latent tokens appear only once, at the very end
        assert not set(latent_ids(model)) & set(ids[:-n])


def test_image_pad_count_matches_grid_for_two_images(model, featurizer):
    small, large = noise((20, 20), seed=2), noise((64, 48), seed=3)
    features = featurizer(["left", small, "between", large, "right"])
    merge = model.image_processor.merge_size
    grid = features.image_grid_thw
    assert grid.shape == (2, 3)
    ids = features.input_ids
    pad_id = featurizer.image_token_id
    expected = int((grid.prod(-1) // merge**2).sum())
    assert int((ids == pad_id).sum()) == expected
    # the two images give different token counts, so the per-image runs are distinguishable
    per_image = (grid.prod(-1) // merge**2).tolist()
    assert per_image[0] != per_image[1]
    # each image is one contiguous run of pads between <|vision_start|> and <|vision_end|>, in order
    start_id = model.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    end_id = model.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    seq = ids.tolist()
    starts = [i for i, t in enumerate(seq) if t == start_id]
    ends = [i for i, t in enumerate(seq) if t == end_id]
    assert len(starts) == len(ends) == 2
    for s, e, count in zip(starts, ends, per_image):
        assert seq[s + 1: e] == [pad_id] * count
    # one row of patches per grid cell
    assert features.pixel_values.shape[0] == int(grid.prod(-1).sum())


def test_instruction_comes_before_the_query(model, featurizer):
    instruction, query = "represent the given image for retrieval.", "a photo of a dog"
    features = featurizer({"text": query, "instruction": instruction})
    decoded = model.tokenizer.decode(features.input_ids, skip_special_tokens=False)
    assert instruction in decoded and query in decoded
    assert decoded.index(instruction) < decoded.index(query)
    # with an image, the instruction still precedes the image and the text
    features = featurizer({"text": query, "image": solid((5, 5, 5)), "instruction": instruction})
    decoded = model.tokenizer.decode(features.input_ids, skip_special_tokens=False)
    assert decoded.index(instruction) < decoded.index(featurizer.layout.token) < decoded.index(query)


def test_featurizer_raises_item_error_with_index(featurizer):
    with pytest.raises(ItemError, match=r"^item 5: empty item"):
        featurizer("   ", index=5)


# ----------------------------------------------------------------------------------------- collate
def test_collate_left_pads_and_concatenates_images_in_item_order(model, featurizer):
    img_a, img_b = noise((64, 48), seed=4), noise((20, 28), seed=5)
    objs = [
        "one",
        ["a photo of a cat", img_a],
        "the digit in the image is a handwritten number. retrieve a picture that shows the result.",
        {"text": "two", "image": img_b},
    ]
    features = [featurizer(o, index=i) for i, o in enumerate(objs)]
    lengths = [len(f) for f in features]
    assert len(set(lengths)) > 1  # padding actually happens
    pad_id, image_id = model.tokenizer.pad_token_id, featurizer.image_token_id
    batch = collate(features, pad_id, image_id)
    width = max(lengths)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["mm_token_type_ids"].shape
    assert batch["input_ids"].shape == (len(objs), width)
    for row, f in enumerate(features):
        n_pad = width - len(f)
        assert batch["input_ids"][row, :n_pad].tolist() == [pad_id] * n_pad
        assert torch.equal(batch["input_ids"][row, n_pad:], f.input_ids)
        assert batch["attention_mask"][row].tolist() == [0] * n_pad + [1] * len(f)
        expected_mm = [0] * n_pad + [int(t == image_id) for t in f.input_ids.tolist()]
        assert batch["mm_token_type_ids"][row].tolist() == expected_mm
    assert int(batch["mm_token_type_ids"].sum()) == int((batch["input_ids"] == image_id).sum()) > 0
    # pixel values / grids of items 1 and 3, in that order
    assert torch.equal(batch["pixel_values"], torch.cat([features[1].pixel_values, features[3].pixel_values]))
    assert torch.equal(batch["image_grid_thw"], torch.cat([features[1].image_grid_thw, features[3].image_grid_thw]))
    assert not torch.equal(features[1].image_grid_thw, features[3].image_grid_thw)  # order is observable


def test_collate_text_only_batch_has_no_image_keys(model, featurizer):
    features = [featurizer("one"), featurizer("a photo of a cat dog")]
    batch = collate(features, model.tokenizer.pad_token_id, featurizer.image_token_id)
    assert "pixel_values" not in batch and "image_grid_thw" not in batch
    assert int(batch["mm_token_type_ids"].sum()) == 0
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].tolist() == [1, 1]
