"""The Milvus backend on Milvus Lite: the same ids and scores as FAISS through Python, the CLI and HTTP,
resumable builds, and one-line errors for bad URIs, foreign or mismatched collections and a server
that goes away mid-build. Every test shares one Milvus Lite file (one collection each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import HANG_GUARD_S, free_port, subprocess_env

pytest.importorskip("pymilvus", reason="the 'milvus' extra (pymilvus, milvus-lite) is not installed")
pytest.importorskip("milvus_lite", reason="the 'milvus' extra (pymilvus, milvus-lite) is not installed")

from pymilvus import DataType, MilvusClient  # noqa: E402

from lame.errors import InvalidInput
from lame import LaMEModel  # noqa: E402
from lame.embed import EmbeddingShards, encode_corpus  # noqa: E402
from lame.index import MilvusIndex, VectorIndex, build_milvus_index, open_index, search  # noqa: E402
from lame.index.milvus_client import MilvusUnavailable  # noqa: E402

N = 40
TEXTS = [f"document {i}: the digit {i % 10} written {['small', 'large', 'bold', 'thin'][i % 4]} number {i}"
         for i in range(N)]
IDS = [f"doc{i}" for i in range(N)]
DIM = 64  # the tiny model's embedding width
# Both backends score a query against a vector as a float32 dot product of unit vectors, summed in
# different orders (FAISS's SIMD / BLAS kernels; Milvus Lite FLAT: a numpy product through BLAS). Any
# order of summing d products is within d * u * |q| |v| = d * 2^-24 of the exact value (the standard
# bound for a float32 dot product, u = 2^-24), 3.8e-6 at d = 64; the two can err on opposite sides, so
# they differ by at most 2 d u = 7.6e-6 (the renormalisation each applies adds a few u, ~1e-7). 1e-5 is
# that bound rounded up; it is not fitted to one CPU.
SCORE_TOLERANCE = 1e-5
assert 2 * DIM * 2.0**-24 < SCORE_TOLERANCE


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, saved_tiny_model):
    """A saved tiny model, a corpus encoded with it into 6 embedding shards, and its FAISS flat index."""
    root = tmp_path_factory.mktemp("milvus")
    (root / "model").symlink_to(saved_tiny_model, target_is_directory=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"id": i, "item": t}) + "\n" for i, t in zip(IDS, TEXTS)))
    encode_corpus(root / "model", root / "corpus.jsonl", root / "emb", batch_size=8, shard_size=7,
                  show_progress=False)
    VectorIndex.build(root / "emb", root / "faiss", kind="flat")
    return root


@pytest.fixture(scope="module")
def lite(embedded) -> str:
    """The module's Milvus Lite file (started once: each test writes its own collection)."""
    return str(embedded / "milvus.db")


@pytest.fixture(scope="module")
def model(embedded):
    return LaMEModel.from_pretrained(embedded / "model")


@pytest.fixture(scope="module")
def vectors(embedded):
    return EmbeddingShards(embedded / "emb").load_all()[0]


def stored_ids(uri: str, collection: str, decode=json.loads) -> list:
    """Every id the collection holds, duplicates included, decoded from the id field's JSON."""
    client = MilvusClient(uri)
    client.load_collection(collection)
    rows = client.query(collection, filter='id != ""', output_fields=["id"], limit=16_384,
                        consistency_level="Strong")
    return [decode(row["id"]) for row in rows]


def build(embedded, lite, collection, **kwargs):
    return build_milvus_index(embedded / "emb", lite, collection, show_progress=False, **kwargs)


def split(hits: list[dict]) -> tuple[list, list[float]]:
    """The ids and the scores of hits as ``lame search --json-output`` and ``/v1/search`` give them."""
    return [h["id"] for h in hits], [h["score"] for h in hits]


def assert_same_hits(ids, scores, faiss_ids, faiss_scores) -> None:
    """Rows of hits (ids and scores, best first) are FAISS's: scores within SCORE_TOLERANCE rank by rank,
    and the same id at every rank, except where FAISS scores two hits within 2 x SCORE_TOLERANCE of each
    other (each backend is within the tolerance of the exact score, so such near ties may come in either
    order; the tiny model's corpus has some). FAISS's rows may be longer (k + 1: a tie at rank k is then
    seen); where they are not and a tie may run past their end, another id of that score is accepted."""
    k = len(ids[0])
    np.testing.assert_allclose(np.asarray(scores, dtype=np.float64),
                               np.asarray(faiss_scores, dtype=np.float64)[:, :k], atol=SCORE_TOLERANCE)
    for row, faiss_row, faiss_row_scores in zip(ids, faiss_ids, faiss_scores, strict=True):
        found = [i for i in row if i is not None]
        assert len(set(found)) == len(found) and [i is None for i in row] == [i is None for i in faiss_row[:k]]
        for rank, hit in enumerate(row):
            if hit == faiss_row[rank]:
                continue
            tied = [other for other, score in zip(faiss_row, faiss_row_scores)
                    if abs(score - faiss_row_scores[rank]) <= 2 * SCORE_TOLERANCE]
            unseen = len(faiss_row) == k and faiss_row[-1] is not None and \
                abs(faiss_row_scores[-1] - faiss_row_scores[rank]) <= 2 * SCORE_TOLERANCE
            assert hit in tied or unseen, f"rank {rank}: {hit!r} where FAISS has {faiss_row[rank]!r}, and no tie"


# ------------------------------------------------------------------------------------- exactness
def test_flat_gives_faiss_flat_ids_and_scores(embedded, lite, model, vectors):
    milvus = build(embedded, lite, "flat", batch_size=16)
    faiss_index = VectorIndex.load(embedded / "faiss")
    queries = np.concatenate([vectors, model.encode(["the digit seven", "a bold number", "thin"], role="query")])
    assert queries.shape[1] == DIM
    for k in (1, 10, N + 5):  # N + 5: past the corpus, both pad with -inf / None
        faiss_scores, faiss_ids = faiss_index.search(queries, k + 1)
        scores, ids = milvus.search(queries, k)
        assert scores.dtype == np.float32 and scores.shape == (len(queries), k)
        assert_same_hits(ids, scores, faiss_ids, faiss_scores)
    assert [row[0] for row in milvus.search(vectors, 1)[1]] == IDS
    for index in (milvus, faiss_index):  # a bad k or query width: the same error from either backend
        with pytest.raises(ValueError, match=r"^k must be >= 1, got 0$"):
            index.search(queries, 0)
        for wrong in (queries[:, : DIM // 2], np.concatenate([queries, queries], axis=1)):  # never reshaped
            with pytest.raises(InvalidInput, match=rf"queries of shape \({len(queries)}, {wrong.shape[1]}\)"):
                index.search(wrong, 3)
        assert index.search(queries[0], 2)[1] == index.search(queries[:1], 2)[1]  # one vector is one query
    through_model = [zip(*map(split, search(model, index, TEXTS[:5], k=k)))
                     for index, k in ((milvus, 10), (faiss_index, 11))]
    assert_same_hits(*through_model[0], *through_model[1])


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_find_each_item_first(embedded, lite, vectors, kind):
    index = build(embedded, lite, kind, kind=kind, nlist=4 if kind == "ivf" else None, m=8)
    scores, ids = index.search(vectors, k=5)
    assert [row[0] for row in ids] == IDS
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=SCORE_TOLERANCE)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    assert index.manifest["kind"] == kind
    assert index.manifest["nlist"] == 4 if kind == "ivf" else index.manifest["m"] == 8


def test_the_collection_records_model_dimension_and_corpus(embedded, lite, model):
    build(embedded, lite, "recorded")
    properties = MilvusClient(lite).describe_collection("recorded")["properties"]
    recorded = json.loads(properties["lame.index"])
    assert recorded["model_fingerprint"] == model.fingerprint()
    assert recorded["model"] == str((embedded / "model").resolve())
    assert recorded["dim"] == 64 and recorded["count"] == N and recorded["complete"] is True
    assert recorded["corpus"] == str((embedded / "corpus.jsonl").resolve())
    opened = open_index(f"{lite}#recorded")
    assert isinstance(opened, MilvusIndex) and len(opened) == N and opened.dim == 64
    assert opened.check_model(model) is None


def test_ids_keep_their_json_type(lite):
    vectors = np.eye(4, dtype=np.float32)
    index = build_milvus_index((vectors, [1, "1", "a", 2]), lite, "typed", show_progress=False)
    assert index.search(vectors, k=1)[1] == [[1], ["1"], ["a"], [2]]
    with pytest.raises(ValueError, match="holds another build"):  # other arrays: never taken for a finished build
        build_milvus_index((vectors[::-1], [1, "1", "a", 2]), lite, "typed", show_progress=False)


# ----------------------------------------------------------------------------- CLI and HTTP alike
def test_cli_search_prints_what_faiss_prints(embedded, lite, capsys):
    from lame.cli import main

    assert main(["index", "build", "--embeddings", str(embedded / "emb"), "--backend", "milvus", "--uri", lite,
                 "--collection", "cli", "--batch-size", "9"]) == 0
    assert f"flat index of 40 vectors (dim 64): collection 'cli' at {lite}" in capsys.readouterr().out
    outputs = {}
    for name, where in (("faiss", str(embedded / "faiss")), ("milvus", f"{lite}#cli")):
        assert main(["search", "--model", str(embedded / "model"), "--index", where, "--query", TEXTS[5],
                     "--k", "7", "--json-output"]) == 0
        outputs[name] = json.loads(capsys.readouterr().out)
    assert_same_hits(*zip(split(outputs["milvus"])), *zip(split(outputs["faiss"])))
    assert len(outputs["milvus"]) == 7 and outputs["milvus"][0]["id"] == "doc5"
    errors = []
    for where in (str(embedded / "faiss"), f"{lite}#cli"):
        assert main(["search", "--model", str(embedded / "model"), "--index", where, "--query", "x", "--k", "0"]) == 2
        errors.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert errors[0] == errors[1] == "lame search: error: k must be >= 1, got 0"


def test_http_search_answers_what_faiss_answers(embedded, lite):
    import httpx

    from lame.serve import ServerThread, ServeSettings
    from lame.serve.server import load_app

    build(embedded, lite, "http")
    answers = {}
    for name, where in (("faiss", str(embedded / "faiss")), ("milvus", f"{lite}#http")):
        with ServerThread(load_app(embedded / "model", ServeSettings(), where)) as server:
            answers[name] = [httpx.post(server.url + "/v1/search", json={"input": TEXTS[:3], "k": k}, timeout=60)
                             for k in (4, N + 5, 0)]  # N + 5: past the corpus; 0: refused
            health = httpx.get(server.url + "/health").json()
        assert health["index"] == {"kind": "flat", "count": N}
    for milvus, faiss_answer in zip(answers["milvus"], answers["faiss"]):
        assert milvus.status_code == faiss_answer.status_code and milvus.json().keys() == faiss_answer.json().keys()
    assert answers["milvus"][2].status_code == 400 and answers["milvus"][2].json() == answers["faiss"][2].json()
    for k, milvus, faiss_answer in zip((4, N + 5), *(answers[name][:2] for name in ("milvus", "faiss"))):
        hits, faiss_hits = ([row["hits"] for row in answer.json()["data"]] for answer in (milvus, faiss_answer))
        assert_same_hits(*zip(*map(split, hits)), *zip(*map(split, faiss_hits)))
        assert [len(row) for row in hits] == [min(k, N)] * 3 and [row[0]["id"] for row in hits] == IDS[:3]


def test_an_elastic_models_k_and_d_as_with_faiss(tmp_path, lite, capsys):
    """Documents encoded at k = 1, d = 16 by an elastic model: the collection records both, queries of
    any trained k find what FAISS finds, and another query size is refused in FAISS's words."""
    from lame import build_tiny_model
    from lame.cli import main

    build_tiny_model("qwen2_vl", seed=0, use_decoder=False, num_reason_tokens=4, elastic_k=[0, 1, 4],
                     matryoshka_dims=[64, 16]).save_pretrained(tmp_path / "model")
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"id": i, "item": t}) + "\n"
                                                   for i, t in zip(IDS[:12], TEXTS[:12])))
    encode_corpus(tmp_path / "model", tmp_path / "corpus.jsonl", tmp_path / "emb", num_reason_tokens=1,
                  dimensions=16, show_progress=False)
    faiss_index = VectorIndex.build(tmp_path / "emb", tmp_path / "faiss")
    milvus = build_milvus_index(tmp_path / "emb", lite, "elastic", show_progress=False)
    assert (milvus.num_reason_tokens, milvus.dim) == (faiss_index.num_reason_tokens, faiss_index.dim) == (1, 16)
    elastic = LaMEModel.from_pretrained(tmp_path / "model")
    assert milvus.check_model(elastic) is None
    for k in (0, 4):  # queries of any trained k share the documents' space
        hits = [zip(*map(split, search(elastic, index, TEXTS[:3], k=n, num_reason_tokens=k)))
                for index, n in ((milvus, 5), (faiss_index, 6))]
        assert_same_hits(*hits[0], *hits[1])
    errors = []
    for where in (str(tmp_path / "faiss"), f"{lite}#elastic"):
        assert main(["search", "--model", str(tmp_path / "model"), "--index", where, "--query", "x",
                     "--dimensions", "64"]) == 2
        errors.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert errors[0] == errors[1] and "dimensions=64: the index holds 16-dimensional vectors" in errors[0]


# ------------------------------------------------------------------------------------------ resume
def test_a_stopped_build_resumes_with_every_id_once(embedded, lite):
    assert build(embedded, lite, "stopped", batch_size=8, max_batches=2) is None
    assert sorted(stored_ids(lite, "stopped")) == sorted(IDS[:16])
    with pytest.raises(ValueError, match=r"unfinished build \(16 of 40 vectors\): run the same `lame index build`"):
        open_index(f"{lite}#stopped")
    index = build(embedded, lite, "stopped", batch_size=8)
    assert len(index) == N and sorted(stored_ids(lite, "stopped")) == sorted(IDS)
    assert build(embedded, lite, "stopped", batch_size=8).manifest["complete"]  # done: nothing written again
    assert len(stored_ids(lite, "stopped")) == N


def test_a_batch_cut_short_is_written_again_without_doubles(embedded, lite, vectors):
    assert build(embedded, lite, "cut", batch_size=8, max_batches=1) is None
    client = MilvusClient(lite)  # three rows of the second batch made it before the build died
    client.insert("cut", [{"id": json.dumps(IDS[i]), "vector": vectors[i]} for i in (8, 9, 10)])
    build(embedded, lite, "cut", batch_size=8)
    assert sorted(stored_ids(lite, "cut")) == sorted(IDS)


def test_a_killed_build_resumes_with_every_id_once(embedded, lite):
    """A build process killed (SIGKILL) right after its third insert, then the same build again."""
    uri = str(embedded / "killed.db")  # its own file: the child process must hold Milvus Lite's lock alone
    child = f"""
import os, signal
from pymilvus import MilvusClient
from lame.index import build_milvus_index
insert, calls = MilvusClient.insert, []
def insert_then_die(self, *args, **kwargs):
    result = insert(self, *args, **kwargs)
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
MilvusClient.insert = insert_then_die
build_milvus_index({str(embedded / 'emb')!r}, {uri!r}, batch_size=6, show_progress=False)
"""
    done = subprocess.run([sys.executable, "-c", child], env=subprocess_env(), capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert 0 < len(stored_ids(uri, "lame")) < N
    index = build_milvus_index(embedded / "emb", uri, batch_size=6, show_progress=False)
    assert len(index) == N and sorted(stored_ids(uri, "lame")) == sorted(IDS)


# -------------------------------------------------------------------------------------- bad input
def test_a_server_that_drops_mid_build(embedded, monkeypatch, tmp_path):
    from milvus_lite.server_manager import server_manager_instance

    uri = str(tmp_path / "drops.db")
    insert, calls = MilvusClient.insert, []

    def insert_after_the_server_stopped(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            server_manager_instance.release_server(uri)  # the server is gone before the third insert
        return insert(self, *args, **kwargs)

    monkeypatch.setattr(MilvusClient, "insert", insert_after_the_server_stopped)
    with pytest.raises(MilvusUnavailable) as excinfo:
        build_milvus_index(embedded / "emb", uri, batch_size=8, timeout=3, show_progress=False)
    message = str(excinfo.value)
    assert "\n" not in message and uri in message
    assert "the first 16 of 40 vectors are written: run the same command again to resume" in message
    monkeypatch.setattr(MilvusClient, "insert", insert)
    index = build_milvus_index(embedded / "emb", uri, batch_size=8, show_progress=False)
    assert len(index) == N and sorted(stored_ids(uri, "lame")) == sorted(IDS)


def test_unreachable_and_missing_uris(embedded, tmp_path, capsys):
    from lame.cli import main

    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MilvusUnavailable, match=f"Milvus at {nowhere} does not answer"):
        build_milvus_index(embedded / "emb", nowhere, timeout=3, show_progress=False)
    with pytest.raises(MilvusUnavailable, match=f"Milvus at {nowhere} does not answer"):
        open_index(nowhere, timeout=3)
    with pytest.raises(FileNotFoundError, match="the Milvus Lite file .*missing.db does not exist"):
        open_index(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()  # looking did not create it
    with pytest.raises(FileNotFoundError, match="the folder .*nowhere of the Milvus Lite file"):
        build_milvus_index(embedded / "emb", tmp_path / "nowhere" / "x.db", show_progress=False)
    with pytest.raises(ValueError, match=r"do not write credentials into the URI .*LAME_MILVUS_TOKEN"):
        open_index("http://root:secret@127.0.0.1:19530")
    with pytest.raises(ValueError, match="'no-dashes' is not a Milvus collection name"):
        open_index(f"{tmp_path / 'x.db'}#no-dashes")
    common = ["search", "--model", str(embedded / "model"), "--query", "x"]
    assert main([*common, "--index", nowhere]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lame search: error: connecting: Milvus at http://127.0.0.1")


def test_a_missing_collection_names_those_there_and_leaves_no_connection_open(embedded, lite, monkeypatch):
    import lame.index.milvus_build as milvus_build
    import lame.index.milvus_index as milvus_index

    opened = []

    def connect(*args, **kwargs):
        client = real_connect(*args, **kwargs)
        closes, client.closed = client.close, False
        client.close = lambda: (setattr(client, "closed", True), closes())
        opened.append(client)
        return client

    real_connect = milvus_index.connect
    monkeypatch.setattr(milvus_index, "connect", connect)
    monkeypatch.setattr(milvus_build, "connect", connect)
    index = build(embedded, lite, "present")  # the build's own client is closed; the index holds one open
    assert [c.closed for c in opened] == [True, False] and index.client is opened[1]
    with pytest.raises(FileNotFoundError, match=r"no collection 'absent' at .*\(it has: .*present"):
        open_index(f"{lite}#absent")
    assert opened[2].closed  # refused: nothing left open


def test_another_model_is_refused_with_the_faiss_line(embedded, lite, tmp_path, capsys):
    from lame import build_tiny_model
    from lame.cli import main

    build(embedded, lite, "mine")
    build_tiny_model("qwen2_vl", seed=1).save_pretrained(tmp_path / "other")  # same dimension, other weights
    errors = []
    for where in (str(embedded / "faiss"), f"{lite}#mine"):
        assert main(["search", "--model", str(tmp_path / "other"), "--index", where, "--query", "x"]) == 2
        errors.append(capsys.readouterr().err.strip().splitlines()[-1])  # after the model's loading bars
    assert errors[0] == errors[1] and "the index was built from another model" in errors[1]
    assert main(["serve", "--model", str(tmp_path / "other"), "--index", f"{lite}#mine"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == errors[1].replace("lame search", "lame serve")


def test_collections_without_a_fingerprint_are_refused(embedded, lite, model, capsys):
    from lame.cli import main

    client = MilvusClient(lite)  # a collection someone made without lame
    client.create_collection("foreign", dimension=64)
    with pytest.raises(ValueError, match="'foreign' at .* was not built by `lame index build`: it records no model"):
        open_index(f"{lite}#foreign")
    assert main(["search", "--model", str(embedded / "model"), "--index", f"{lite}#foreign", "--query", "x"]) == 2
    assert "was not built by `lame index build`" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'foreign' at .* already exists and was not built by `lame index build`"):
        build(embedded, lite, "foreign")
    unchecked = build_milvus_index(EmbeddingShards(embedded / "emb").load_all(), lite, "arrays", show_progress=False)
    with pytest.raises(ValueError, match="does not record which model built it"):
        unchecked.check_model(model)  # FAISS searches with a note; a Milvus collection is refused


def test_a_collection_of_another_dimension_is_refused_and_kept(embedded, lite):
    client = MilvusClient(lite)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=16)
    client.create_collection("narrow", schema=schema)
    client.insert("narrow", [{"id": "kept", "vector": np.ones(16, np.float32)}])
    with pytest.raises(ValueError, match="'narrow' at .* holds 16-dimensional vectors but the embeddings are "
                                         "64-dimensional: choose another --collection, or --overwrite"):
        build(embedded, lite, "narrow")
    assert stored_ids(lite, "narrow", decode=str) == ["kept"]  # nothing lost
    built = build_milvus_index((np.eye(16, dtype=np.float32), list(range(16))), lite, "sixteen", show_progress=False)
    with pytest.raises(ValueError, match="holds 16-dimensional vectors but the model makes 64-dimensional"):
        built.check_model(LaMEModel.from_pretrained(embedded / "model"))


def test_another_build_is_refused_unless_overwritten(embedded, lite):
    build(embedded, lite, "rebuilt", kind="flat")
    with pytest.raises(ValueError, match=r"holds another build \(kind 'flat' there, 'hnsw' now; m None there, "
                                         r"32 now.*--overwrite to replace"):
        build(embedded, lite, "rebuilt", kind="hnsw")
    assert build(embedded, lite, "rebuilt", kind="hnsw", overwrite=True).kind == "hnsw"
    assert sorted(stored_ids(lite, "rebuilt")) == sorted(IDS)


def test_duplicate_ids_are_refused_before_anything_is_written(lite):
    with pytest.raises(ValueError, match=r"1 duplicate id\(s\) \('a' at rows 0 and 2\)"):
        build_milvus_index((np.eye(3, dtype=np.float32), ["a", "b", "a"]), lite, "duplicates", show_progress=False)
    assert not MilvusClient(lite).has_collection("duplicates")


@pytest.mark.parametrize(("flags", "error"), [
    (["--backend", "milvus"], "--backend milvus needs --uri URI"),
    (["--backend", "milvus", "--uri", "x.db", "--output", "idx"], "--output does not apply to --backend milvus"),
    (["--output", "idx", "--uri", "x.db", "--overwrite"], "--uri, --overwrite do not apply to --backend faiss"),
    (["--backend", "milvus", "--uri", "x.db", "--batch-size", "0"], "batch-size must be >= 1, got 0"),
])
def test_cli_refuses_options_of_the_other_backend(embedded, capsys, flags, error):
    from lame.cli import main

    assert main(["index", "build", "--embeddings", str(embedded / "emb"), *flags]) == 2
    assert capsys.readouterr().err.strip().startswith(f"lame index: error: {error}")


def test_another_process_holding_the_lite_file_is_named(tmp_path):
    uri = str(tmp_path / "held.db")
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from pymilvus import MilvusClient
MilvusClient({uri!r}).list_collections()
print("open", flush=True)
time.sleep(60)
"""], env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(MilvusUnavailable, match="is open in another process .*milvus-lite server --data-dir"):
            open_index(uri)
    finally:
        holder.kill()
        holder.wait()
    assert os.path.isdir(uri)


def test_transport_errors_become_one_line():
    import grpc

    from lame.index.location import MilvusLocation
    from lame.index.milvus_client import milvus_call

    class Reset(grpc.RpcError):  # what pymilvus passes on from gRPC as it is
        def __init__(self, code):
            self._code = code

        def code(self):
            return self._code

        def details(self):
            return "connection reset\nby peer"

    where = MilvusLocation("http://127.0.0.1:19530", "docs")
    with pytest.raises(MilvusUnavailable, match=r"^searching: Milvus at http://127.0.0.1:19530 does not answer "
                                                r"\(UNAVAILABLE: connection reset by peer\)$"):
        with milvus_call(where, "searching"):
            raise Reset(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(ValueError, match=r"refused it \(PERMISSION_DENIED: connection reset by peer\)$"):
        with milvus_call(where, "searching"):
            raise Reset(grpc.StatusCode.PERMISSION_DENIED)
