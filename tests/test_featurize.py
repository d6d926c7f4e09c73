"""The batched featuriser (``Featurizer.many``): one image-processor and one tokenizer call per window,
and item by item exactly what the single-item featuriser gives, errors included."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import noise
from lame.data.featurize import Features, Featurizer
from lame.data.items import ItemError, to_item
from lame.modeling.tiny import build_tiny_model

GOOD = [
    "a plain text query about document 5",
    noise((20, 20), seed=0),
    ["two images", noise((64, 48), seed=1), "between", noise((20, 28), seed=2)],
    {"text": "find this digit", "image": noise((30, 30), seed=3), "instruction": "Retrieve the matching image."},
    {"images": [noise((40, 20), seed=4), noise((28, 28), seed=5)], "text": "a page with two figures"},
    {"parts": ["caption", {"image": noise((24, 24), seed=6)}, "more text"], "instruction": "Represent the page."},
    {"text": "seven plus three", "instruction": "add mod ten"},
]
BAD = [
    "text with <|embed|> inside",  # reserved control token
    {"text": "fine", "instruction": "<|im_start|>system"},  # reserved token in the instruction
    "   ",  # empty
    "seven " * 600,  # longer than max_length
    noise((600, 2), seed=7),  # an aspect ratio the image processor refuses
    ["caption", noise((2, 600), seed=8)],  # the same, inside an interleaved item
    Path("/nonexistent/missing.png"),  # a missing file
    42,  # unsupported type
]


def mixed() -> list:
    """Good and bad items interleaved, so every bad item has good neighbours on both sides."""
    items = []
    for i in range(max(len(GOOD), len(BAD))):
        items += GOOD[i: i + 1] + BAD[i: i + 1]
    return items


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("qwen2_vl", seed=0, use_decoder=False, num_reason_tokens=2, max_length=256)


def single(featurizer, items: list) -> list[Features | ItemError]:
    out = []
    for index, item in enumerate(items):
        try:
            out.append(featurizer(item, index=index))
        except ItemError as exc:
            out.append(exc)
    return out


def assert_same(results, expected) -> None:
    assert len(results) == len(expected)
    for index, (got, want) in enumerate(zip(results, expected)):
        if isinstance(want, ItemError):
            assert isinstance(got, ItemError), f"item {index}: expected {want}, got features"
            assert (got.index, got.reason) == (want.index, want.reason)
            continue
        assert isinstance(got, Features), f"item {index}: unexpected {got}"
        assert torch.equal(got.input_ids, want.input_ids), f"item {index}: input ids differ"
        for name in ("pixel_values", "image_grid_thw"):
            a, b = getattr(got, name), getattr(want, name)
            assert (a is None) == (b is None), f"item {index}: {name}"
            if a is not None:
                assert a.dtype == b.dtype and torch.equal(a, b), f"item {index}: {name} differ"


def test_many_equals_the_single_item_path_on_a_mixed_list(model):
    items = mixed()
    expected = single(model.featurizer, items)
    assert sum(isinstance(e, ItemError) for e in expected) == len(BAD)  # every bad item is bad on its own
    assert_same(model.featurizer.many(items), expected)


def test_many_takes_a_window_of_indices(model):
    items = mixed()
    window = range(3, 11)
    expected = single(model.featurizer, items)
    assert_same(model.featurizer.many(items, window), [expected[i] for i in window])


class CountingProcessor:
    """An image processor that counts its calls and fails on calls with more than ``fail_above`` images."""

    def __init__(self, inner, fail_above: int | None = None):
        self.inner, self.fail_above, self.calls = inner, fail_above, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, images, **kwargs):
        self.calls.append(len(images))
        if self.fail_above is not None and len(images) > self.fail_above:
            raise RuntimeError("the batched call failed")
        return self.inner(images=images, **kwargs)


class CountingTokenizer:
    """A tokenizer that counts its calls on lists of texts and, if asked, fails on them."""

    def __init__(self, inner, fail_on_lists: bool = False):
        self.inner, self.fail_on_lists, self.list_calls = inner, fail_on_lists, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, text, **kwargs):
        if isinstance(text, list):
            self.list_calls += 1
            if self.fail_on_lists:
                raise RuntimeError("the batched call failed")
        return self.inner(text, **kwargs)


def featurizer_with(model, tokenizer=None, image_processor=None) -> Featurizer:
    f = model.featurizer
    return Featurizer(tokenizer or f.tokenizer, image_processor or f.image_processor,
                      model.config.latent_token_strings(), f.max_length, f.layout)


def test_one_processor_call_and_one_tokenizer_call_per_window(model):
    processor = CountingProcessor(model.image_processor)
    tokenizer = CountingTokenizer(model.tokenizer)
    results = featurizer_with(model, tokenizer, processor).many(GOOD)
    assert processor.calls == [sum(len(to_item(x).images) for x in GOOD)]
    assert tokenizer.list_calls == 1
    assert_same(results, single(model.featurizer, GOOD))


def test_a_failed_batched_image_call_falls_back_to_each_item(model):
    processor = CountingProcessor(model.image_processor, fail_above=2)  # no item has more than 2 images
    items = mixed()
    results = featurizer_with(model, image_processor=processor).many(items)
    assert max(processor.calls) > 2  # the batched call was tried
    assert_same(results, single(model.featurizer, items))


def test_a_failed_batched_tokenizer_call_falls_back_to_each_item(model):
    tokenizer = CountingTokenizer(model.tokenizer, fail_on_lists=True)
    items = mixed()
    results = featurizer_with(model, tokenizer=tokenizer).many(items)
    assert tokenizer.list_calls == 1
    assert_same(results, single(model.featurizer, items))


def test_the_image_token_is_reserved(model):
    token = model.featurizer.layout.token
    assert token in model.featurizer.reserved
    [result] = model.featurizer.many([f"a {token} b"])
    assert isinstance(result, ItemError) and token in result.reason
