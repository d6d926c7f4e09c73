"""An elastic model's k and d through every interface: `lame encode`, the index it builds, `lame search`,
`lame serve` (a server default and a per-request field; OpenAI's `dimensions`), sentence-transformers
and the mteb wrapper; the values a model was not trained for are refused in one line everywhere."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from helpers import write_jsonl

from lame import LaMEModel, build_tiny_model
from lame.cli import main
from lame.errors import InvalidInput
from lame.index import VectorIndex, search
from lame.serve import ServerThread, ServeSettings, create_app
from lame.serve.engine import Engine, ReasonTokens

DOCS = [f"document {i} about the digit {i % 10}" for i in range(10)]
QUERIES = ["the digit three", "a page about seven"]
# every float32 path here embeds the same inputs with the same arithmetic; what differs is the batch an
# item shares (left padding, another batch size): positions and masks make that exact up to summation
# order, a few float32 ulps of values of order 1
ATOL = 1e-5


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("elastic") / "model"
    build_tiny_model("qwen2_vl", seed=0, use_decoder=False, num_reason_tokens=4, elastic_k=[0, 1, 4],
                     matryoshka_dims=[64, 16]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(saved):
    return LaMEModel.from_pretrained(saved)


@pytest.fixture(scope="module")
def encoded(saved, tmp_path_factory):
    """`lame encode` at k = 1, d = 16 and `lame index build` of it."""
    folder = tmp_path_factory.mktemp("encoded")
    write_jsonl(folder / "corpus.jsonl", [{"id": f"d{i}", "text": text} for i, text in enumerate(DOCS)])
    assert main(["encode", "--model", str(saved), "--input", str(folder / "corpus.jsonl"), "--output",
                 str(folder / "emb"), "--num-reason-tokens", "1", "--dimensions", "16"]) == 0
    assert main(["index", "build", "--embeddings", str(folder / "emb"), "--output", str(folder / "idx")]) == 0
    return folder


def error_line(capsys) -> str:
    """The error `lame` printed: one line, after transformers' weight-loading progress bar."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "Traceback" not in "\n".join(lines) and lines[-1].startswith("lame "), lines
    return lines[-1]


def test_lame_encode_records_k_and_d_and_the_index_carries_them(encoded, model):
    manifest = json.loads((encoded / "emb" / "manifest.json").read_text())
    assert (manifest["num_reason_tokens"], manifest["dimensions"], manifest["dim"]) == (1, 16, 16)
    vectors, ids = np.load(encoded / "emb" / "embeddings-00000.npy"), json.loads(
        (encoded / "emb" / "ids-00000.json").read_text())
    expected = model.encode(DOCS, role="document", num_reason_tokens=1, dimensions=16)
    np.testing.assert_allclose(vectors, expected[[int(i[1:]) for i in ids]], atol=ATOL)
    index = VectorIndex.load(encoded / "idx")
    assert (index.num_reason_tokens, index.dim) == (1, 16)
    assert json.loads((encoded / "idx" / "index.json").read_text())["num_reason_tokens"] == 1


def test_lame_encode_refuses_untrained_values_and_a_resume_with_others(encoded, saved, capsys):
    corpus = str(encoded / "corpus.jsonl")
    assert main(["encode", "--model", str(saved), "--input", corpus, "--output", str(encoded / "other"),
                 "--num-reason-tokens", "2"]) == 2
    assert error_line(capsys) == ("lame encode: error: num_reason_tokens=2: this model embeds with 0, 1 or 4 reason "
                                  "tokens (elastic_k of its config)")
    assert main(["encode", "--model", str(saved), "--input", corpus, "--output", str(encoded / "emb"),
                 "--num-reason-tokens", "4", "--dimensions", "16"]) == 2
    assert "num_reason_tokens: 1 then, 4 now" in error_line(capsys)


def test_search_with_queries_of_another_k_but_never_another_size(encoded, saved, model, capsys):
    index = VectorIndex.load(encoded / "idx")
    assert index.check_model(model) is None
    docs = model.encode(DOCS, role="document", num_reason_tokens=1, dimensions=16)
    for k in (0, 4):  # queries of any trained k share the documents' space
        hits = search(model, index, QUERIES, k=3, num_reason_tokens=k)
        queries = model.encode(QUERIES, role="query", num_reason_tokens=k, dimensions=16)
        for row, query in zip(hits, queries):
            assert [h["id"] for h in row] == [f"d{i}" for i in np.argsort(-(docs @ query), kind="stable")[:3]]
    assert main(["search", "--model", str(saved), "--index", str(encoded / "idx"), "--query", "seven",
                 "--num-reason-tokens", "4", "--json-output"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 10
    assert main(["search", "--model", str(saved), "--index", str(encoded / "idx"), "--query", "seven",
                 "--dimensions", "64"]) == 2
    assert error_line(capsys).startswith("lame search: error: dimensions=64: the index holds 16-dimensional vectors")
    fixed = build_tiny_model("qwen2_vl", seed=0, use_decoder=False)  # trained for its full 64 values only
    with pytest.raises(InvalidInput, match="16-dimensional vectors but the model makes 64-dimensional"):
        index.check_model(fixed)


def test_the_engine_embeds_each_item_with_its_own_k(model):
    engine = Engine(model, max_batch_size=8)
    items = [ReasonTokens("one", 0), "two", ReasonTokens("three", 1), ReasonTokens("", 0), ReasonTokens("four", 0)]
    result = engine(items)
    assert list(result.rejected) == [3] and np.isnan(result.embeddings[3]).all()
    for row, (text, k) in zip((0, 1, 2, 4), (("one", 0), ("two", 4), ("three", 1), ("four", 0))):
        np.testing.assert_allclose(result.embeddings[row], model.encode(text, num_reason_tokens=k), atol=ATOL)


@pytest.fixture(scope="module")
def server(model, encoded):
    settings = ServeSettings(model_name="elastic", num_reason_tokens=1)
    with ServerThread(create_app(model, settings, VectorIndex.load(encoded / "idx"))) as running:
        yield running


def embed(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/v1/embeddings", json={"input": QUERIES, "encoding_format": "float", **body},
                      timeout=60)


def test_a_server_default_k_and_per_request_k_and_dimensions(server, model):
    vectors = np.array([d["embedding"] for d in embed(server).json()["data"]])
    np.testing.assert_allclose(vectors, model.encode(QUERIES, num_reason_tokens=1), atol=ATOL)  # the server's k
    response = embed(server, num_reason_tokens=4, dimensions=16).json()
    vectors = np.array([d["embedding"] for d in response["data"]])
    np.testing.assert_allclose(vectors, model.encode(QUERIES, num_reason_tokens=4, dimensions=16), atol=ATOL)
    for body, param, words in (({"num_reason_tokens": 2}, "num_reason_tokens", "0, 1 or 4 reason tokens"),
                               ({"dimensions": 32}, "dimensions", "64 or 16 dimensions"),
                               ({"num_reason_tokens": "4"}, "num_reason_tokens", "must be an integer")):
        error = embed(server, **body)
        assert error.status_code == 400
        assert error.json()["error"]["param"] == param and words in error.json()["error"]["message"]


def test_search_requests_take_any_k_and_only_the_index_size(server, model, encoded):
    index = VectorIndex.load(encoded / "idx")
    for k in (None, 0, 4):
        body = {"input": QUERIES, "k": 3} | ({} if k is None else {"num_reason_tokens": k})
        got = httpx.post(server.url + "/v1/search", json=body, timeout=60).json()["data"]
        expected = search(model, index, QUERIES, k=3, num_reason_tokens=1 if k is None else k)
        assert [[h["id"] for h in row["hits"]] for row in got] == [[h["id"] for h in row] for row in expected]
    refused = httpx.post(server.url + "/v1/search", json={"input": QUERIES, "dimensions": 64}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "dimensions"


def test_server_defaults_the_model_or_index_cannot_take_are_refused_at_start(model, encoded):
    index = VectorIndex.load(encoded / "idx")
    with pytest.raises(InvalidInput, match="num_reason_tokens=2"):
        create_app(model, ServeSettings(num_reason_tokens=2))
    with pytest.raises(InvalidInput, match="dimensions=64: the index holds 16-dimensional"):
        create_app(model, ServeSettings(dimensions=64), index)


def test_sentence_transformers_num_reason_tokens_and_truncate_dim(saved, model):
    st_module = pytest.importorskip("sentence_transformers")
    st = st_module.SentenceTransformer(str(saved), trust_remote_code=True, device="cpu")
    np.testing.assert_allclose(st.encode(QUERIES, num_reason_tokens=0), model.encode(QUERIES, num_reason_tokens=0),
                               atol=ATOL)
    short = st.encode_document(QUERIES, num_reason_tokens=1, truncate_dim=16, normalize_embeddings=True)
    np.testing.assert_allclose(short, model.encode_document(QUERIES, num_reason_tokens=1, dimensions=16), atol=ATOL)
    assert st[0].dimension_choices == [64, 16]
    with pytest.raises(InvalidInput, match="num_reason_tokens=2"):
        st.encode(QUERIES, num_reason_tokens=2)


def test_the_mteb_wrapper_embeds_with_the_chosen_k_and_d(model):
    pytest.importorskip("mteb")
    from lame.integrations.mteb import LaMEEncoder

    encoder = LaMEEncoder(model, num_reason_tokens=0, dimensions=16)
    assert encoder.mteb_model_meta.embed_dim == 16 and encoder.mteb_model_meta.name.endswith("-k0-d16")
    metadata = SimpleNamespace(name="task", type="Retrieval")
    got = encoder.encode([{"text": QUERIES}], task_metadata=metadata, hf_split="test", hf_subset="default")
    np.testing.assert_allclose(got, model.encode(QUERIES, num_reason_tokens=0, dimensions=16), atol=ATOL)
    with pytest.raises(InvalidInput, match="dimensions=32"):
        LaMEEncoder(model, dimensions=32)
