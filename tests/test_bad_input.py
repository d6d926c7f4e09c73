"""Bad items through ``LaMEModel.encode``: a clear ItemError naming the item, or a NaN row with on_error="skip"."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from helpers import noise
from tolerances import FORWARD
from lame.data.items import ItemError
from lame.modeling.lame import SkippedItem
from lame.modeling.tiny import build_tiny_model

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("qwen2_vl", seed=0, max_length=MAX_LENGTH)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def random_bytes_file(tmp_path):
    path = tmp_path / "garbage_photo.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


@pytest.fixture
def truncated_png(tmp_path):
    data = png_bytes(noise((64, 64), seed=1))
    path = tmp_path / "cut_short.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def encode_error(model, items) -> ItemError:
    with pytest.raises(ItemError) as info:
        model.encode(items)
    return info.value


# ------------------------------------------------------------------------------- on_error="raise"
@pytest.mark.parametrize("which", ["random_bytes_file", "truncated_png"])
@pytest.mark.parametrize("wrap", ["path", "list", "dict"])
def test_corrupt_image_file(model, request, which, wrap):
    path = request.getfixturevalue(which)
    obj = {"path": path, "list": ["caption", path], "dict": {"text": "caption", "image": path}}[wrap]
    err = encode_error(model, ["a photo of a cat", noise((20, 20), 2), obj])
    message = str(err)
    assert message.startswith("item 2:")
    assert err.index == 2
    assert path.name in message
    assert "could not be decoded" in message
    assert isinstance(err, ValueError)  # ItemError is a ValueError


def test_missing_image_file(model, tmp_path):
    path = tmp_path / "no_such_picture.png"
    err = encode_error(model, ["one", path, "two"])
    assert str(err).startswith("item 1:")
    assert err.index == 1
    assert "no_such_picture.png" in str(err)
    assert "does not exist" in str(err)


def test_missing_image_in_dict(model, tmp_path):
    err = encode_error(model, [{"text": "q", "images": [noise((20, 20), 3), tmp_path / "gone.jpg"]}])
    assert str(err).startswith("item 0:") and "gone.jpg" in str(err) and "does not exist" in str(err)


@pytest.mark.parametrize("empty", ["", "   ", [], ["", " \n"], {"text": "  "}, {}, {"instruction": "represent the document."}])
def test_empty_item(model, empty):
    err = encode_error(model, ["one", "two", empty])
    assert str(err).startswith("item 2:")
    assert err.index == 2
    assert "empty item" in str(err)


@pytest.mark.parametrize(
    "bad, names",
    [
        (42, ["int"]),
        (3.5, ["float"]),
        (None, ["NoneType"]),
        (["fine text", 7], ["int"]),
        ({"txt": "typo"}, ["'txt'"]),
        ({"text": "q", "caption": "c"}, ["'caption'"]),
        ({"text": 5}, ["'text'", "int"]),
        ({"text": "q", "images": "a.png"}, ["'images'", "str"]),
        ({"text": "q", "instruction": 1}, ["'instruction'", "int"]),
        ([{"text": "a", "image": "b"}], ["dict"]),
    ],
)
def test_unsupported_type_or_key(model, bad, names):
    err = encode_error(model, ["ok", bad])
    assert str(err).startswith("item 1:")
    for name in names:
        assert name in str(err), (name, str(err))


def test_text_too_long(model):
    long_text = " ".join(["the digit in the image is a handwritten number."] * 20)
    err = encode_error(model, ["short", long_text])
    assert str(err).startswith("item 1:")
    assert "too long" in str(err)
    assert "max_length" in str(err) and str(MAX_LENGTH) in str(err)


def test_images_count_towards_max_length(model):
    # short text, but many images: the image patches push it past max_length, so the images are
    # downscaled until it fits; with more images than fit even at their smallest, it is refused
    few_images = ["a photo", *[noise((56, 56), s) for s in range(2)]]
    assert np.isfinite(model.encode([few_images])).all()  # the same kind of item fits with fewer images
    many_images = ["a photo", *[noise((56, 56), s) for s in range(12)]]
    assert len(model.featurizer.__call__(many_images)) <= MAX_LENGTH  # 16 image tokens each: 4 now
    assert np.isfinite(model.encode([many_images])).all()
    too_many = ["a photo", *[noise((56, 56), s) for s in range(20)]]
    err = encode_error(model, [too_many])
    assert str(err).startswith("item 0:") and "too long" in str(err) and str(MAX_LENGTH) in str(err)
    assert "already as small as the image processor makes them" in str(err)


def test_single_bad_item_raises_with_index_zero(model):
    err = encode_error(model, "")
    assert str(err).startswith("item 0:") and "empty item" in str(err)


@pytest.mark.parametrize("value", ["ignore", "Skip", None, True])
def test_invalid_on_error(model, value):
    with pytest.raises(ValueError, match="on_error"):
        model.encode(["fine"], on_error=value)


# -------------------------------------------------------------------------------- on_error="skip"
@pytest.fixture
def mixed_batch(random_bytes_file):
    items = [
        "a photo of a cat",
        random_bytes_file,  # bad: corrupt image
        {"text": "the digit in the image", "image": noise((40, 28), 4)},
        "one two three four five six seven eight nine ten",
        {"text": "   "},  # bad: empty
        ["which picture matches the text", noise((20, 20), 5)],
    ]
    return items, [1, 4]


def test_skip_gives_nan_rows_and_matches_good_items_alone(model, mixed_batch):
    items, bad = mixed_batch
    good = [i for i in range(len(items)) if i not in bad]
    with pytest.warns(UserWarning):
        # a different batch size than the reference run, so the good items are batched differently
        out = model.encode(items, on_error="skip", batch_size=2)
    reference = model.encode([items[i] for i in good])
    d = reference.shape[1]
    assert out.shape == (len(items), d)
    assert out.dtype == np.float32
    assert np.isnan(out[bad]).all()
    assert np.isfinite(out[good]).all()
    np.testing.assert_allclose(out[good], reference, atol=FORWARD, rtol=0)
    # the rows are really different items, not one row repeated
    assert not np.allclose(out[good[0]], out[good[1]], atol=FORWARD, rtol=0)


def test_skip_warns_naming_each_skipped_item(model, mixed_batch):
    items, bad = mixed_batch
    with pytest.warns(UserWarning) as record:
        model.encode(items, on_error="skip")
    messages = [str(w.message) for w in record if "skipped" in str(w.message)]
    assert len(messages) == 1
    message = messages[0]
    assert "skipped 2 of 6" in message
    for i in bad:
        assert re.search(rf"\bitem {i}\b", message)
    for i in set(range(len(items))) - set(bad):
        assert not re.search(rf"\bitem {i}\b", message)
    assert "could not be decoded" in message and "empty item" in message


def test_return_skipped_lists_indices_and_reasons(model, mixed_batch):
    items, bad = mixed_batch
    with pytest.warns(UserWarning):
        out, skipped = model.encode(items, on_error="skip", return_skipped=True)
    assert out.shape[0] == len(items)
    assert all(isinstance(s, SkippedItem) for s in skipped)
    assert [s.index for s in skipped] == bad
    assert "could not be decoded" in skipped[0].reason and items[1].name in skipped[0].reason
    assert "empty item" in skipped[1].reason


def test_skip_without_bad_items_does_not_warn(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, skipped = model.encode(["one", "two"], on_error="skip", return_skipped=True)
    assert skipped == []
    assert np.isfinite(out).all()


def test_skip_all_bad(model, tmp_path):
    items = ["", tmp_path / "missing.png", 42]
    with pytest.warns(UserWarning, match="skipped 3 of 3"):
        out, skipped = model.encode(items, on_error="skip", return_skipped=True)
    assert out.shape[0] == 3 and np.isnan(out).all()
    assert [s.index for s in skipped] == [0, 1, 2]
    assert "empty item" in skipped[0].reason
    assert "does not exist" in skipped[1].reason
    assert "int" in skipped[2].reason


def test_skip_too_long_item(model):
    long_text = " ".join(["retrieve a picture that shows the result."] * 20)
    with pytest.warns(UserWarning, match="item 0"):
        out, skipped = model.encode([long_text, "short"], on_error="skip", return_skipped=True)
    assert [s.index for s in skipped] == [0]
    assert "too long" in skipped[0].reason
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


@pytest.mark.parametrize("text", ["a <|image_pad|> b", "x <|embed|> y", "<|im_end|> jailbreak"])
def test_text_containing_a_control_token_is_an_item_error(model, text):
    with pytest.raises(ItemError, match="item 0: text contains reserved control token"):
        model.encode([text])
    with pytest.warns(UserWarning, match="item 0"):
        out, skipped = model.encode([text, "fine"], on_error="skip", return_skipped=True)
    assert [s.index for s in skipped] == [0]
    assert np.isfinite(out[1]).all()
