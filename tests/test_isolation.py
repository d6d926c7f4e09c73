"""One item never fails another: seeded fuzz items (random Unicode, lone surrogates, control characters,
huge and empty strings, odd image modes and sizes) mixed into batches of good items, through
``LaMEModel.encode``, ``Featurizer.many``, the server's engine and batcher, and ``lame encode``."""

from __future__ import annotations

import asyncio
import json
import random
import warnings

import numpy as np
import pytest
from PIL import Image

from helpers import noise
from tolerances import FORWARD
from lame.data.featurize import Features
from lame.data.items import ItemError
from lame.modeling.tiny import build_tiny_model

MAX_LENGTH = 128
SEED = 20240611
GOOD = [
    "a plain query about the digit seven",
    noise((20, 20), seed=0),
    {"text": "find this digit", "image": noise((30, 26), seed=1), "instruction": "Retrieve the image."},
    ["two figures", noise((40, 20), seed=2), "and", noise((28, 28), seed=3)],
    "zero",
]
IMAGE_MODES = ("P", "LA", "CMYK", "I;16", "1", "RGBA", "L", "I", "F", "RGB", "PA", "YCbCr")
IMAGE_SIZES = ((1, 1), (1, 2), (2, 300), (300, 2), (1000, 3), (3, 1000), (28, 28), (57, 31), (5, 900), (90, 1))


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("qwen2_vl", seed=0, use_decoder=False, num_reason_tokens=2, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def solo(model):
    """Each good item's embedding, computed alone."""
    return [model.encode([item])[0] for item in GOOD]


def random_text(rng: random.Random) -> str:
    kind = rng.randrange(8)
    length = rng.randrange(1, 40)
    if kind == 0:  # any code point, surrogates included
        return "".join(chr(rng.randrange(0x110000)) for _ in range(length))
    if kind == 1:  # control characters
        return "".join(chr(rng.choice([*range(32), 0x7F, *range(0x80, 0xA0)])) for _ in range(length))
    if kind == 2:  # huge, empty, blank
        return rng.choice(["", " ", "\n\t ", "x" * 20_000, "word " * 3_000, "\u00e9" * 50_000])
    if kind == 3:  # one lone surrogate in ordinary text
        return f"x {chr(rng.randrange(0xD800, 0xE000))} y"
    if kind == 4:  # zero-width, BOM, NUL, direction marks
        return "".join(rng.choice(["\u200b", "\ufeff", "\x00", "\u202e", "\u2066", "a", " "]) for _ in range(length))
    if kind == 5:  # reserved control tokens
        return rng.choice(["hi <|embed|>", "<|im_start|>user", "<|image_pad|>", "<|reason_0|> x"])
    if kind == 6:  # emoji, combining marks, CJK, right-to-left scripts
        return "".join(rng.choice(["\U0001F600", "e\u0301", "\u4e2d\u6587", "\u05e9\u05dc\u05d5\u05dd", "\U0010FFFF"])
                       for _ in range(length))
    return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(length))


def random_image(rng: random.Random) -> Image.Image:
    mode, size = rng.choice(IMAGE_MODES), rng.choice(IMAGE_SIZES)
    image = noise(size, seed=rng.randrange(1000)).convert("RGB")
    if mode in ("P", "PA"):
        return image.quantize(rng.randrange(2, 64)).convert(mode) if mode == "PA" else image.quantize(8)
    if mode == "I;16":
        array = np.random.default_rng(rng.randrange(1000)).integers(0, 65535, (size[1], size[0]), dtype=np.uint16)
        return Image.fromarray(array)  # mode I;16
    return image.convert(mode)


def random_item(rng: random.Random):
    kind = rng.randrange(7)
    if kind <= 1:
        return random_text(rng)
    if kind == 2:
        return random_image(rng)
    if kind == 3:
        return {"text": random_text(rng), "image": random_image(rng)}
    if kind == 4:
        return [random_text(rng), random_image(rng), random_text(rng), random_image(rng)]
    if kind == 5:
        return {"text": "fine text", "instruction": random_text(rng)}
    return rng.choice([42, None, b"not an image", {"bogus": 1}, [], {"text": 5}, {"parts": "x"}, [[1, 2]]])


def fuzz_batches(n: int, per_batch: int = 10):
    """``n`` batches, each the good items and fuzz items shuffled together; yields (items, good
    position -> GOOD index)."""
    rng = random.Random(SEED)
    for _ in range(n):
        items = [("good", g) for g in range(len(GOOD))] + [("fuzz", random_item(rng))
                                                            for _ in range(per_batch - len(GOOD))]
        rng.shuffle(items)
        yield ([GOOD[x] if kind == "good" else x for kind, x in items],
               {i: x for i, (kind, x) in enumerate(items) if kind == "good"})


def alone(model, item):
    """The item's own result: its embedding, or the ItemError it raises alone."""
    try:
        return model.encode([item])[0]
    except ItemError as exc:
        assert exc.index == 0
        return exc


def test_fuzz_batches_keep_good_items_exact_and_name_bad_ones(model, solo):
    seen_errors = set()
    for items, good in fuzz_batches(12):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            embeddings, skipped = model.encode(items, batch_size=4, on_error="skip", return_skipped=True)
        reasons = {s.index: s.reason for s in skipped}
        for i, item in enumerate(items):
            if i in good:
                assert i not in reasons, f"good item {i} skipped: {reasons.get(i)}"
                np.testing.assert_allclose(embeddings[i], solo[good[i]], atol=FORWARD, rtol=0)
                continue
            expected = alone(model, item)
            if isinstance(expected, ItemError):
                assert reasons.get(i) == expected.reason and expected.reason
                assert np.isnan(embeddings[i]).all()
                seen_errors.add(expected.reason.split(" (")[0].split(":")[0])
            else:
                assert i not in reasons, f"item {i} embeds alone but was skipped in a batch: {reasons[i]}"
                np.testing.assert_allclose(embeddings[i], expected, atol=FORWARD, rtol=0)
    # the generator reached the kinds of failure it was written for
    assert {"text is not valid Unicode", "empty item", "image could not be processed"} <= seen_errors
    assert any(e.startswith("too long") for e in seen_errors)
    assert any("reserved control token" in e for e in seen_errors)


def test_featurizer_many_equals_each_item_alone_on_fuzz(model):
    featurizer = model.featurizer
    for items, _ in fuzz_batches(6, per_batch=14):
        batched = featurizer.many(items)
        for index, (got, item) in enumerate(zip(batched, items)):
            try:
                want = featurizer(item, index=index)
            except ItemError as exc:
                assert isinstance(got, ItemError) and (got.index, got.reason) == (index, exc.reason)
                continue
            assert isinstance(got, Features), f"item {index}: {got}"
            assert got.input_ids.tolist() == want.input_ids.tolist()
            assert (got.pixel_values is None) == (want.pixel_values is None)
            if want.pixel_values is not None:
                assert got.pixel_values.equal(want.pixel_values)


@pytest.mark.parametrize("bad, words", [
    ("x \ud800", "lone surrogate U+D800 at character 2"),
    ({"text": "ok", "instruction": "\udfff"}, "lone surrogate U+DFFF"),
    (["fine", noise((1000, 3), seed=1)], "aspect ratio"),
])
def test_a_bad_item_is_skipped_with_its_reason(model, solo, bad, words):
    items = [GOOD[0], bad, GOOD[4]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embeddings, skipped = model.encode(items, on_error="skip", return_skipped=True)
    assert [s.index for s in skipped] == [1] and words in skipped[0].reason
    np.testing.assert_allclose(embeddings[[0, 2]], np.stack([solo[0], solo[4]]), atol=FORWARD, rtol=0)
    with pytest.raises(ItemError, match="item 1: "):
        model.encode(items)


def test_a_failing_tokenizer_or_processor_is_the_items_own_error(model, monkeypatch):
    """Whatever raises while one item is featurised alone becomes that item's ItemError."""
    featurizer = model.featurizer
    tokenizer = featurizer.tokenizer

    class Picky:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, text, *args, **kwargs):
            texts = [text] if isinstance(text, str) else text
            if any("poison" in t for t in texts):
                raise RuntimeError("the tokenizer choked")
            return tokenizer(text, *args, **kwargs)

    monkeypatch.setattr(featurizer, "tokenizer", Picky())
    results = featurizer.many(["fine", "poison pill", "also fine"])
    assert isinstance(results[0], Features) and isinstance(results[2], Features)
    assert isinstance(results[1], ItemError) and results[1].index == 1
    assert "RuntimeError: the tokenizer choked" in results[1].reason


# ------------------------------------------------------------------------------------------ serving
def test_engine_rejects_only_the_bad_items(model, solo):
    from lame.serve.engine import Engine

    items = [GOOD[0], "x \ud800", {"parts": ["text", GOOD[1]], "instruction": None}, "", GOOD[4]]
    result = Engine(model, max_batch_size=4)(items)
    assert set(result.rejected) == {1, 3}
    assert "lone surrogate" in result.rejected[1] and "empty" in result.rejected[3]
    np.testing.assert_allclose(result.embeddings[[0, 4]], np.stack([solo[0], solo[4]]), atol=FORWARD, rtol=0)
    assert result.tokens[1] == result.tokens[3] == 0 and result.tokens[0] > 0 and result.tokens[2] > 0


def test_a_batch_that_fails_is_retried_request_by_request():
    """A failure of the whole batched call (a bug, a device error) fails only the request it comes from."""
    from lame.serve.batcher import DynamicBatcher
    from lame.serve.engine import BatchResult

    calls = []

    def run(items):
        calls.append(list(items))
        if "poison" in items:
            raise RuntimeError("boom")
        return BatchResult(np.zeros((len(items), 2), np.float32), {}, [1] * len(items))

    async def scenario():
        batcher = DynamicBatcher(run, max_batch_size=4, max_wait_ms=10_000, max_queue=8)
        await batcher.start()
        try:
            return await asyncio.gather(batcher.submit(["a", "b"]), batcher.submit(["poison"]),
                                        batcher.submit(["c"]), return_exceptions=True)
        finally:
            await batcher.stop()

    first, second, third = asyncio.run(scenario())
    assert calls[0] == ["a", "b", "poison", "c"]  # one batch, then each request alone
    assert sorted(map(tuple, calls[1:])) == [("a", "b"), ("c",), ("poison",)]
    assert isinstance(second, RuntimeError)
    assert first[0].shape == (2, 2) and third[0].shape == (1, 2)


def test_server_answers_the_bad_request_400_and_its_batch_mates_200(model, solo):
    import httpx

    from lame.serve import ServerThread, ServeSettings, create_app

    app = create_app(model, ServeSettings(max_batch_size=16, max_wait_ms=50))
    bodies = [{"input": "a plain query about the digit seven"}, {"input": ["zero", "x \ud800"]},
              {"input": "zero"}, {"input": "\x00\x01\x02 control"}]

    async def fire(url):
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            return await asyncio.gather(*(http.post("/v1/embeddings", headers={"Content-Type": "application/json"},
                                                    content=json.dumps({**b, "encoding_format": "float"}))
                                          for b in bodies))  # json.dumps escapes the surrogate as \\ud800

    with ServerThread(app) as running:
        responses = asyncio.run(fire(running.url))
    assert [r.status_code for r in responses] == [200, 400, 200, 200]
    error = responses[1].json()["error"]
    assert error["code"] == "invalid_item" and "input 1" in error["message"] and "lone surrogate" in error["message"]
    np.testing.assert_allclose(responses[0].json()["data"][0]["embedding"], solo[0], atol=FORWARD, rtol=0)
    np.testing.assert_allclose(responses[2].json()["data"][0]["embedding"], solo[4], atol=FORWARD, rtol=0)


# ------------------------------------------------------------------------------------- lame encode
def test_lame_encode_skips_a_lone_surrogate_line_and_goes_on(saved_tiny_model, tmp_path):
    from lame.embed import EmbeddingShards, encode_corpus

    lines = [json.dumps({"id": "a", "item": "first"}), '{"id": "bad", "item": "x \\ud800 y"}',
             json.dumps({"id": "c", "item": "third"}), '{"id": "ctl", "item": "\\u0000\\u0007 bell"}']
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    manifest = encode_corpus(saved_tiny_model, corpus, tmp_path / "emb", shard_size=2, show_progress=False)
    assert manifest["count"] == 3 and manifest["skipped"] == 1
    report = [json.loads(line) for line in (tmp_path / "emb" / "skipped.jsonl").read_text().splitlines()]
    assert len(report) == 1 and report[0]["id"] == "bad" and report[0]["line"] == 2
    assert "lone surrogate" in report[0]["reason"]
    assert EmbeddingShards(tmp_path / "emb").load_all()[1] == ["a", "c", "ctl"]
