"""Encode -> index build -> search: flat, IVF, HNSW and sharded FAISS indexes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tolerances import UNIT_NORM, float32_sum

from lame.errors import InvalidInput
from lame import LaMEModel
from lame.embed import EmbeddingShards, encode_corpus
from lame.index import VectorIndex, search

N = 40
TEXTS = [f"document {i}: the digit {i % 10} written {['small', 'large', 'bold', 'thin'][i % 4]} number {i}"
         for i in range(N)]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, saved_tiny_model):
    """A saved tiny model, and a corpus encoded with it into 6 embedding shards of 7 vectors."""
    root = tmp_path_factory.mktemp("index")
    (root / "model").symlink_to(saved_tiny_model, target_is_directory=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"id": f"doc{i}", "item": t}) + "\n"
                                               for i, t in enumerate(TEXTS)))
    encode_corpus(root / "model", root / "corpus.jsonl", root / "emb", batch_size=8, shard_size=7,
                  show_progress=False)
    return root


@pytest.fixture(scope="module")
def model(embedded):
    return LaMEModel.from_pretrained(embedded / "model")


CASES = {
    "flat": {"kind": "flat"},
    "ivf": {"kind": "ivf", "nlist": 4},
    "hnsw": {"kind": "hnsw", "m": 8},
    "flat-3-shards": {"kind": "flat", "shard_size": 15},
    "ivf-3-shards": {"kind": "ivf", "nlist": 4, "shard_size": 15},
    "hnsw-3-shards": {"kind": "hnsw", "m": 8, "shard_size": 15},
}


@pytest.mark.parametrize("case", CASES)
def test_each_item_finds_itself_first(embedded, tmp_path, case):
    built = VectorIndex.build(embedded / "emb", tmp_path / "idx", **CASES[case])
    index = VectorIndex.load(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["kind"] == CASES[case]["kind"] and manifest["dim"] == 64 and manifest["count"] == N
    shards = 3 if "shards" in case else 1
    assert len(manifest["shards"]) == shards == len(list((tmp_path / "idx").glob("index-*.faiss")))
    vectors, ids = EmbeddingShards(embedded / "emb").load_all()
    assert ids == [f"doc{i}" for i in range(N)]
    for idx in (built, index):
        scores, hits = idx.search(vectors, k=5)
        assert [row[0] for row in hits] == ids
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=UNIT_NORM, rtol=0)  # a unit vector's dot with itself
        assert np.all(np.diff(scores, axis=1) <= 0)  # best first


def test_sharded_search_merges_to_the_exact_top_k():
    rng = np.random.default_rng(0)
    vectors, queries = rng.normal(size=(100, 16)).astype(np.float32), rng.normal(size=(12, 16)).astype(np.float32)
    ids = [f"v{i}" for i in range(100)]
    sharded = VectorIndex.build((vectors, ids), kind="flat", shard_size=30)
    assert [len(s.ids) for s in sharded.shards] == [30, 30, 30, 10]
    scores, hits = sharded.search(queries, k=8)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    brute = unit(queries) @ unit(vectors).T
    best = np.argsort(-brute, axis=1)[:, :8]
    assert hits == [[ids[j] for j in row] for row in best]
    # two 16-d normalisations and a 16-term dot product, by faiss and by numpy
    np.testing.assert_allclose(scores, np.take_along_axis(brute, best, 1), atol=float32_sum(3 * 16 + 2), rtol=0)


def test_k_beyond_the_corpus_pads(embedded):
    index = VectorIndex.build(embedded / "emb", kind="flat", shard_size=15)
    scores, hits = index.search(np.ones(64, np.float32), k=N + 5)
    assert scores.shape == (1, N + 5)
    assert sorted(hits[0][:N]) == sorted(f"doc{i}" for i in range(N)) and hits[0][N:] == [None] * 5
    assert np.all(np.isneginf(scores[0, N:]))


def test_queries_of_another_width_are_refused_not_reshaped(embedded):
    index = VectorIndex.build(embedded / "emb", kind="flat")
    queries = np.ones((3, 64), np.float32)
    for wrong in (queries[:, :32], np.ones((3, 128), np.float32), np.ones((2, 3, 64), np.float32)):
        with pytest.raises(InvalidInput, match=rf"queries of shape \({', '.join(map(str, wrong.shape))}\): .* "
                                               r"64-dimensional"):
            index.search(wrong, 3)
    assert index.search(queries[0], 2)[1] == index.search(queries[:1], 2)[1]  # one vector is one query


def test_text_query_through_the_model_finds_its_document(embedded, model, tmp_path):
    index = VectorIndex.build(embedded / "emb", tmp_path / "idx", kind="hnsw")
    results = search(model, index, TEXTS[:10], k=3)
    assert [r[0]["id"] for r in results] == [f"doc{i}" for i in range(10)]
    assert all(set(hit) == {"id", "score"} for r in results for hit in r)


def test_index_errors(embedded, tmp_path):
    with pytest.raises(ValueError, match="unknown index kind"):
        VectorIndex.build(embedded / "emb", kind="annoy")
    with pytest.raises(ValueError, match="nlist=100"):
        VectorIndex.build(embedded / "emb", kind="ivf", nlist=100)
    with pytest.raises(FileNotFoundError, match="index"):
        VectorIndex.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        VectorIndex.build(tmp_path, kind="flat")


def test_rebuild_into_the_same_folder_drops_old_shards(embedded, tmp_path):
    VectorIndex.build(embedded / "emb", tmp_path, kind="flat", shard_size=10)
    VectorIndex.build(embedded / "emb", tmp_path, kind="flat")
    assert len(list(tmp_path.glob("index-*.faiss"))) == 1
    assert len(VectorIndex.load(tmp_path, mmap=True)) == N


def test_cli_index_build_and_search(embedded, tmp_path, capsys):
    from lame.cli import main

    assert main(["index", "build", "--embeddings", str(embedded / "emb"), "--output", str(tmp_path / "idx"),
                 "--kind", "ivf", "--nlist", "2", "--shard-size", "15"]) == 0
    assert "ivf index of 40 vectors (dim 64) in 3 shard(s)" in capsys.readouterr().out
    common = ["search", "--model", str(embedded / "model"), "--index", str(tmp_path / "idx"), "--k", "4"]
    assert main(common + ["--query", TEXTS[5], "--json-output"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 4 and hits[0]["id"] == "doc5"
    assert main(common + ["--json", json.dumps({"text": TEXTS[7]})]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["rank", "score", "id"] and table[1].split()[-1] == "doc7" and len(table) == 5
    assert main(common + ["--json", '{"image": "missing.png"}']) == 2
    assert "does not exist" in capsys.readouterr().err


def test_duplicate_ids_are_refused_before_anything_is_written(embedded, tmp_path, capsys):
    from lame.cli import main

    vectors = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match=r"2 duplicate id\(s\) \('a' at rows 0 and 2; 1 at rows 1 and 3\)"):
        VectorIndex.build((vectors, ["a", 1, "a", 1]), kind="flat")
    assert len(VectorIndex.build((vectors, ["a", 1, "1", "b"]), kind="flat")) == 4  # 1 and "1" differ
    emb = tmp_path / "emb"
    shutil.copytree(embedded / "emb", emb)
    ids = json.loads((emb / "ids-00003.json").read_text())
    (emb / "ids-00003.json").write_text(json.dumps(["doc0", *ids[1:]]))  # another shard's id
    assert main(["index", "build", "--embeddings", str(emb), "--output", str(tmp_path / "idx")]) == 2
    assert "duplicate id(s) ('doc0' at rows 0 and 21)" in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()


def test_the_index_records_its_model_and_refuses_another(embedded, model, tmp_path, capsys):
    from lame import build_tiny_model
    from lame.cli import main

    fingerprint = model.fingerprint()
    assert fingerprint.startswith("sha256:") and EmbeddingShards(embedded / "emb").model_fingerprint == fingerprint
    index = VectorIndex.build(embedded / "emb", tmp_path / "idx")
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["model_fingerprint"] == fingerprint
    assert index.check_model(model) is None
    other = build_tiny_model("qwen2_vl", seed=1)  # same architecture and dimension, other weights
    with pytest.raises(ValueError, match="built from another model"):
        index.check_model(other)
    with pytest.raises(ValueError, match="holds 64-dimensional vectors but the model makes 16-dimensional"):
        index.check_model(build_tiny_model("qwen2_vl", seed=0, projection_dim=16))
    other.save_pretrained(tmp_path / "other")
    assert main(["search", "--model", str(tmp_path / "other"), "--index", str(tmp_path / "idx"), "--query", "x"]) == 2
    assert "built from another model" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "other"), "--index", str(tmp_path / "idx")]) == 2
    assert "built from another model" in capsys.readouterr().err
    # an index that records no model: searched, with a note that it could not be checked
    unchecked = VectorIndex.build(EmbeddingShards(embedded / "emb").load_all(), tmp_path / "plain")
    assert "cannot be checked" in unchecked.check_model(model)
    assert main(["search", "--model", str(embedded / "model"), "--index", str(tmp_path / "plain"),
                 "--query", TEXTS[3], "--json-output"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["id"] == "doc3" and "cannot be checked" in captured.err
    assert VectorIndex.build((np.eye(64, dtype=np.float32), list(range(64))),
                             model_fingerprint=fingerprint).check_model(model) is None
