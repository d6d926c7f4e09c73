"""Chat messages -> one item (lame.data.messages), and one conversation embedding alike through
LaMEModel.encode, sentence-transformers and the server."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from helpers import noise
from PIL import Image

from lame import LaMEModel
from lame.data.messages import ImageRef, MessageError, conversation_item, read_conversation
from lame.errors import UserError
from lame.serve import ServerThread, ServeSettings, create_app


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def test_parts_keep_reading_order_and_system_text_is_the_instruction():
    messages = [{"role": "system", "content": "Find the digit."},
                {"role": "user", "content": [text_part("before"), image_part("A"), text_part("after")]},
                {"role": "system", "content": [text_part(""), text_part("Answer briefly.")]},
                {"role": "user", "content": [{"type": "image", "image": "B"}, image_part("C")]},
                {"role": "user", "content": "last"}]
    loaded = []

    def load(source, param):
        loaded.append((source, param))
        return f"<{source}>"

    item = conversation_item(messages, load)
    assert item == {"parts": ["before", "<A>", "after", "<B>", "<C>", "last"],
                    "instruction": "Find the digit.\nAnswer briefly."}
    assert loaded == [("A", "messages[1].content[1]"), ("B", "messages[3].content[0]"),
                      ("C", "messages[3].content[1]")]
    assert conversation_item([{"role": "user", "content": "x"}], load) == {"parts": ["x"], "instruction": None}


def test_images_are_counted_before_any_is_loaded():
    conversation = read_conversation([{"role": "user", "content": [image_part("A"), text_part("t"), image_part("B")]}],
                                     name="messages[2]")
    assert conversation.images == [ImageRef("A", "messages[2][0].content[0]"), ImageRef("B", "messages[2][0].content[2]")]


BAD = {
    "not a list": ({"role": "user", "content": "x"}, "messages", "invalid_type"),
    "empty": ([], "messages", "invalid_type"),
    "not an object": (["hi"], "messages[0]", "invalid_type"),
    "assistant": ([{"role": "assistant", "content": "hi"}], "messages[0].role", "invalid_value"),
    "no role": ([{"content": "hi"}], "messages[0].role", "invalid_value"),
    "content a number": ([{"role": "user", "content": 5}], "messages[0].content", "invalid_type"),
    "unknown part": ([{"role": "user", "content": [text_part("x"), {"type": "audio"}]}], "messages[0].content[1]",
                     "invalid_type"),
    "bare string part": ([{"role": "user", "content": ["x"]}], "messages[0].content[0]", "invalid_type"),
    "text not a string": ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "messages[0].content[0]",
                          "invalid_type"),
    "url not a string": ([{"role": "user", "content": [text_part("a"), {"type": "image_url", "image_url": {}}]}],
                         "messages[0].content[1]", "invalid_type"),
    "image in system": ([{"role": "user", "content": "a"}, {"role": "system", "content": [image_part("A")]}],
                        "messages[1].content[0]", "invalid_value"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_messages_name_the_field(case):
    messages, param, code = BAD[case]
    with pytest.raises(MessageError) as caught:
        conversation_item(messages, lambda source, param: pytest.fail("no image is loaded for a bad conversation"))
    assert (caught.value.param, caught.value.code) == (param, code)
    assert str(caught.value).startswith(f"'{param}' ") and isinstance(caught.value, UserError)


# ------------------------------------------------------------------ one conversation, three entry points
@pytest.fixture(scope="module")
def lame_model(saved_tiny_model):
    return LaMEModel.from_pretrained(saved_tiny_model)


def test_one_conversation_embeds_alike_everywhere(saved_tiny_model, lame_model):
    st_module = pytest.importorskip("sentence_transformers")
    buffer = io.BytesIO()
    noise((28, 56), seed=4, high=255).save(buffer, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    chat = [{"role": "system", "content": "Find the digit."},
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [text_part("the one before"), image_part(uri), text_part("and after")]}]
    image = Image.open(io.BytesIO(buffer.getvalue()))
    item = {"parts": ["the one before", image, "and after"], "instruction": "Find the digit.\nAnswer briefly."}
    # Same weights, the same item, batch size 1: the same float32 operations on the same tensors in one
    # process, so the vectors are bit-identical, not merely close. The image is small enough that the
    # server does not shrink it (a resize would change its pixels), and the JSON floats are float32
    # values written in full, so they read back exactly.
    expected = lame_model.encode([item], batch_size=1)
    st = st_module.SentenceTransformer(str(saved_tiny_model), trust_remote_code=True, device="cpu")
    through_st = st.encode([chat], batch_size=1)
    with ServerThread(create_app(lame_model, ServeSettings(max_batch_size=1))) as server:
        answer = httpx.post(server.url + "/v1/embeddings", json={"messages": chat, "encoding_format": "float"})
    assert answer.status_code == 200, answer.text
    through_server = np.asarray([answer.json()["data"][0]["embedding"]], dtype=np.float32)
    np.testing.assert_array_equal(through_st, expected)
    np.testing.assert_array_equal(through_server, expected)
    # The order and the newline matter: the item read as the old sentence-transformers path read it
    # (images first, system texts joined by a space) embeds elsewhere, far beyond float32 rounding.
    other = lame_model.encode([{"parts": [image, "the one before", "and after"],
                                "instruction": "Find the digit. Answer briefly."}], batch_size=1)
    assert np.abs(other - expected).max() > 1e-3
    # sentence-transformers refuses what the server refuses, naming the same field
    with pytest.raises(MessageError, match=r"'messages\[0\]\.role' must be 'user' or 'system'"):
        st.encode([[{"role": "assistant", "content": "hi"}]])
