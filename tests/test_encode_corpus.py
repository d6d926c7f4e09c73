"""`lame encode`: JSONL corpus -> float32 shards; bad records reported; resumable; data-parallel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import HANG_GUARD_S, build_tiny_baseline, free_port, noise, subprocess_env
from tolerances import FORWARD

from lame import LaMEModel
from lame.embed import EmbeddingShards, encode_corpus
from lame.embed import encode as encode_module

SHARD = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, saved_tiny_model):
    """A saved tiny model and a corpus of 15 records (4 shards): text, images, and 3 bad records."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "model").symlink_to(saved_tiny_model, target_is_directory=True)
    (root / "images").mkdir()
    for i in range(3):
        noise((12, 12), i, high=255).save(root / "images" / f"{i}.png")
    lines = [json.dumps({"id": f"t{i}", "item": f"document number {i} about digits"}) for i in range(8)]
    lines.insert(2, "{not json")  # line 3
    lines.insert(5, "")  # a blank line is not a record
    lines += [json.dumps({"id": f"img{i}", "item": {"image": f"images/{i}.png", "text": f"picture {i}"}})
              for i in range(3)]
    lines.append(json.dumps({"id": "missing", "item": {"image": "images/nope.png"}}))
    lines.append(json.dumps({"id": 7, "item": ["interleaved", {"image": "images/0.png"}, "parts"]}))
    lines.append(json.dumps({"item": "no id"}))
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def reference(corpus):
    """One uninterrupted single-process run."""
    out = corpus / "reference"
    manifest = encode_corpus(corpus / "model", corpus / "corpus.jsonl", out, batch_size=3, shard_size=SHARD,
                             show_progress=False)
    return out, manifest


def read_output(folder: Path) -> tuple[np.ndarray, list]:
    return EmbeddingShards(folder).load_all()


def test_shards_manifest_and_report(corpus, reference):
    out, manifest = reference
    assert manifest["count"] == 12 and manifest["skipped"] == 3 and manifest["records"] == 15
    assert manifest["dim"] == 64 and manifest["model"] == str((corpus / "model").resolve())
    assert [s["count"] for s in manifest["shards"]] == [3, 4, 4, 1]
    assert all((out / f"embeddings-{n:05d}.npy").is_file() and (out / f"ids-{n:05d}.json").is_file() for n in range(4))
    embeddings, ids = read_output(out)
    assert ids == [f"t{i}" for i in range(8)] + ["img0", "img1", "img2", 7]
    assert embeddings.dtype == np.float32 and embeddings.shape == (12, 64)
    report = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(r["id"], r["line"]) for r in report] == [(None, 3), ("missing", 14), (None, 16)]
    assert "invalid JSON" in report[0]["reason"] and "does not exist" in report[1]["reason"]
    assert "no 'id'" in report[2]["reason"]
    assert not list(out.glob(".tmp-*"))


def test_embeddings_equal_model_encode(corpus, reference):
    model = LaMEModel.from_pretrained(corpus / "model")
    images = corpus / "images"
    expected = model.encode([f"document number {i} about digits" for i in range(8)]
                            + [{"image": images / f"{i}.png", "text": f"picture {i}"} for i in range(3)]
                            + [["interleaved", {"image": images / "0.png"}, "parts"]])
    np.testing.assert_allclose(read_output(reference[0])[0], expected, atol=FORWARD, rtol=0)  # other batches


def test_resume_after_a_stop_gives_the_same_output(corpus, reference, tmp_path):
    out = tmp_path / "out"
    stopped = encode_corpus(corpus / "model", corpus / "corpus.jsonl", out, batch_size=3, shard_size=SHARD,
                            show_progress=False, max_shards=2)  # the test hook: stop after 2 shards
    assert stopped is None and not (out / "manifest.json").exists()
    assert sorted(p.name for p in out.glob("ids-*.json")) == ["ids-00000.json", "ids-00001.json"]
    # What a kill in the middle of shard 2 leaves: its embeddings written, its ids not, a temporary file.
    (out / "embeddings-00002.npy").write_bytes(b"half a file")
    (out / ".tmp-ids-00002.json-999").write_text("[")
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*-0000[01].*")}
    manifest = encode_corpus(corpus / "model", corpus / "corpus.jsonl", out, batch_size=3, shard_size=SHARD,
                             show_progress=False)
    assert manifest["count"] == reference[1]["count"] and manifest["shards"] == reference[1]["shards"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*-0000[01].*")} == kept  # finished shards not redone
    embeddings, ids = read_output(out)
    ref_embeddings, ref_ids = read_output(reference[0])
    assert ids == ref_ids
    np.testing.assert_array_equal(embeddings, ref_embeddings)
    assert (out / "skipped.jsonl").read_text() == (reference[0] / "skipped.jsonl").read_text()


def test_resume_refuses_other_settings(corpus, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    with pytest.raises(ValueError, match="shard_size"):
        encode_corpus(corpus / "model", corpus / "corpus.jsonl", out, shard_size=SHARD + 1, show_progress=False)


def test_unfinished_folder_is_named_as_such(corpus, tmp_path):
    encode_corpus(corpus / "model", corpus / "corpus.jsonl", tmp_path, shard_size=SHARD, show_progress=False,
                  max_shards=1)
    with pytest.raises(FileNotFoundError, match="resume"):
        EmbeddingShards(tmp_path)


SCRIPT = r'''
import json, sys
from pathlib import Path
from lame.embed import encode as encode_module

model, corpus, out, log = sys.argv[1:5]
done = []
original = encode_module._encode_shard


def record(model_, input_path, output, span, *rest):
    done.append(span.number)
    return original(model_, input_path, output, span, *rest)


encode_module._encode_shard = record
from accelerate import PartialState
from lame.cli import main
manifest = encode_module.encode_corpus(model, corpus, out, batch_size=3, shard_size=int(sys.argv[5]), show_progress=False)
shards = list(done)
# then a corpus of which no record can be embedded, through the command line: both processes must stop
refused = main(["encode", "--model", model, "--input", sys.argv[6], "--output", out + "-refused", "--shard-size", "2"])
Path(log + f"-{PartialState().process_index}.json").write_text(json.dumps({"shards": shards, "manifest": manifest is not None,
                                                                            "refused": refused}))
'''


def test_two_processes_match_one_process(corpus, reference, tmp_path):
    """torchrun, 2 CPU processes (gloo), resuming a folder that already holds shards 0 and 2; then a
    corpus of which nothing can be embedded: both processes return the error, printed once, none hangs."""
    out = tmp_path / "out"
    out.mkdir()
    for number in (0, 2):  # finished earlier: must be kept, not redone
        for kind in ("embeddings", "ids", "skipped"):
            name = f"{kind}-{number:05d}." + ("npy" if kind == "embeddings" else "json")
            shutil.copy2(reference[0] / name, out / name)
    shutil.copy2(reference[0] / "encode.json", out / "encode.json")
    (tmp_path / "script.py").write_text(SCRIPT)
    env = subprocess_env()
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(tmp_path / "script.py"),
               str(corpus / "model"), str(corpus / "corpus.jsonl"), str(out), str(tmp_path / "log"), str(SHARD),
               str(refused_corpus(tmp_path))]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-4000:]
    logs = [json.loads((tmp_path / f"log-{rank}.json").read_text()) for rank in (0, 1)]
    assert sorted(logs[0]["shards"] + logs[1]["shards"]) == [1, 3]  # the unfinished ones, each once
    assert logs[0]["shards"] and logs[1]["shards"]  # both processes worked
    assert logs[0]["manifest"] and logs[1]["manifest"]
    embeddings, ids = read_output(out)
    ref_embeddings, ref_ids = read_output(reference[0])
    assert ids == ref_ids and len(set(map(str, ids))) == len(ids)  # none lost, none duplicated
    np.testing.assert_allclose(embeddings, ref_embeddings, atol=FORWARD, rtol=0)
    assert (out / "skipped.jsonl").read_text() == (reference[0] / "skipped.jsonl").read_text()

    assert logs[0]["refused"] == logs[1]["refused"] == 2  # the CLI's exit status for a user error, on both
    errors = [line for line in done.stderr.splitlines() if line.startswith("lame encode: error: ")]
    assert len(errors) == 1 and "no record of refused.jsonl could be embedded (5 refused)" in errors[0]
    assert len(list(Path(f"{out}-refused").glob("ids-*.json"))) == 3  # each process did its share


def test_cli_encode(corpus, reference, tmp_path, capsys):
    from lame.cli import main

    out = tmp_path / "cli"
    args = ["encode", "--model", str(corpus / "model"), "--input", str(corpus / "corpus.jsonl"), "--output", str(out),
            "--batch-size", "3", "--shard-size", str(SHARD)]
    assert main(args + ["--max-shards", "1"]) == 0 and "resume" in capsys.readouterr().out
    assert main(args) == 0
    assert "12 embeddings in 4 shards" in capsys.readouterr().out
    assert read_output(out)[1] == read_output(reference[0])[1]
    assert main(args[:-1] + ["5"]) == 2  # other settings on the same folder: a clear error, not a crash
    assert "another run" in capsys.readouterr().err


def test_duplicate_ids_keep_the_first_record_and_are_reported(saved_tiny_model, tmp_path, capsys):
    from lame.cli import main

    rows = [("a", "first a"), ("b", "first b"), ("a", "second a"), (1, "the integer one"), ("1", "the string one"),
            ("c", "c"), ("b", "second b"), (1, "another integer one")]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "item": t}) + "\n" for i, t in rows))
    out = tmp_path / "emb"
    args = ["encode", "--model", str(saved_tiny_model), "--input", str(corpus), "--output", str(out), "--shard-size", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "5 embeddings in 3 shards" in printed and "3 skipped, 3 of them duplicate ids" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 5 and manifest["skipped"] == manifest["duplicates"] == 3
    embeddings, ids = read_output(out)
    assert ids == ["a", "b", 1, "1", "c"]  # 1 and "1" are different JSON values
    model = LaMEModel.from_pretrained(saved_tiny_model)
    np.testing.assert_allclose(embeddings, model.encode(["first a", "first b", "the integer one", "the string one", "c"]),
                               atol=FORWARD, rtol=0)
    report = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(r["id"], r["line"]) for r in report] == [("a", 3), ("b", 7), (1, 8)]
    assert report[0]["reason"] == "duplicate id 'a': line 1 has it already (the first record with an id is kept)"


def test_a_corpus_is_embedded_as_documents(tmp_path):
    """The explicit-CoT baseline embeds documents without a rationale, as it was trained; queries with one."""
    model = build_tiny_baseline("cot", cot_max_new_tokens=4).eval()
    model.save_pretrained(tmp_path / "cot")
    texts = ["a page about sevens", "a page about twos"]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"id": i, "item": t}) + "\n" for i, t in enumerate(texts)))
    encode_corpus(tmp_path / "cot", tmp_path / "corpus.jsonl", tmp_path / "out", show_progress=False)
    saved = LaMEModel.from_pretrained(tmp_path / "cot")
    embeddings = read_output(tmp_path / "out")[0]
    np.testing.assert_allclose(embeddings, saved.encode(texts, role="document"), atol=FORWARD, rtol=0)
    assert np.abs(embeddings - saved.encode(texts, role="query")).max() > 1e-3


# ------------------------------------------------------------------- corpora in the field's shapes


def test_beir_and_plain_lines_are_read_as_items(saved_tiny_model, tmp_path):
    """BEIR/MTEB {"_id", "title", "text"} lines (title joined as MTEB joins it) and plain {"id", "text"} /
    {"id", "image"} lines embed as the items they stand for, beside the project's own lines."""
    noise((12, 12), 5, high=255).save(tmp_path / "page.png")
    rows = [{"_id": "doc1", "title": "Sevens", "text": "A page about sevens.", "metadata": {"url": "x"}},
            {"_id": "doc2", "title": "", "text": "  no title here  "},
            {"_id": 3, "text": "an integer BEIR id"},
            {"id": "plain", "text": "a plain text line"},
            {"id": "picture", "image": "page.png"},
            {"id": "both", "text": "a caption", "image": "page.png"},
            {"id": "own", "item": {"text": "the project's own line"}}]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = encode_corpus(saved_tiny_model, tmp_path / "corpus.jsonl", tmp_path / "out", show_progress=False)
    assert manifest["count"] == len(rows) and manifest["skipped"] == 0
    embeddings, ids = read_output(tmp_path / "out")
    assert ids == ["doc1", "doc2", 3, "plain", "picture", "both", "own"]
    items = ["Sevens A page about sevens.", "no title here", "an integer BEIR id", "a plain text line",
             {"image": tmp_path / "page.png"}, {"text": "a caption", "image": tmp_path / "page.png"},
             {"text": "the project's own line"}]
    model = LaMEModel.from_pretrained(saved_tiny_model)
    np.testing.assert_allclose(embeddings, model.encode(items, role="document"), atol=FORWARD, rtol=0)

    from lame.index.items import CorpusItems  # a search hit shows the same item

    corpus = CorpusItems(tmp_path / "corpus.jsonl")
    assert corpus.preview("doc1")["text"] == "Sevens A page about sevens." and corpus.preview("both")["images"] == 1


def refused_corpus(folder: Path) -> Path:
    path = folder / "refused.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in REFUSED))
    return path


REFUSED = [{"doc_id": 1, "body": "an id under another name"},
           {"_id": "d2", "contents": "pyserini's field name"},
           {"id": "d3", "image": "missing.png"},  # read, then refused by the model: no such file
           {"id": True, "text": "a boolean id"},
           {"id": "d5", "text": 5}]


def test_a_corpus_of_which_nothing_is_embedded_is_an_error_naming_the_first_reasons(saved_tiny_model, tmp_path,
                                                                                    capsys):
    from lame.cli import main

    out = tmp_path / "out"
    args = ["encode", "--model", str(saved_tiny_model), "--input", str(refused_corpus(tmp_path)),
            "--output", str(out), "--shard-size", "2"]
    for _ in range(2):  # run again (resumed: every shard is done): the same error, not "0 embeddings"
        assert main(args) == 2
        printed = capsys.readouterr()
        assert "embeddings in" not in printed.out
        (error,) = [line for line in printed.err.splitlines() if "error" in line]  # beside the progress bar
        assert error.startswith("lame encode: error: no record of refused.jsonl could be embedded (5 refused); "
                                "first reasons: line 1: no 'id' (or BEIR '_id') field (the line has 'doc_id', "
                                "'body'); line 2: no 'item', 'text' or 'image' field (the line has '_id', 'contents')")
        assert "; line 3: " in error and "missing.png" in error and "line 4" not in error
        assert error.endswith(f"(every one in {out / 'skipped.jsonl'})")
        assert not (out / "manifest.json").exists()
        report = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
        assert [r["line"] for r in report] == [1, 2, 3, 4, 5]
        assert "string or an integer" in report[3]["reason"] and "'text' must be a string" in report[4]["reason"]

    (tmp_path / "same.jsonl").write_text((json.dumps({"docid": 1, "contents": "x"}) + "\n") * 4)
    with pytest.raises(encode_module.NothingEmbedded, match=r"\(4 refused\); first reasons: line 1: no 'id' .*"
                                                            r"'contents'\) \(and 3 more lines\) \(every one in"):
        encode_corpus(saved_tiny_model, tmp_path / "same.jsonl", tmp_path / "same", show_progress=False)
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    with pytest.raises(encode_module.NothingEmbedded, match="holds no record"):
        encode_corpus(saved_tiny_model, tmp_path / "blank.jsonl", tmp_path / "blank", show_progress=False)


def test_a_resumed_run_with_nothing_new_to_embed_succeeds(saved_tiny_model, tmp_path):
    """The count is over the whole output: the second run embeds nothing itself (its shard is all
    refused) and still succeeds, since the first run's shard holds embeddings."""
    lines = [{"id": f"d{i}", "text": f"document {i}"} for i in range(2)] + [{"doc_id": i} for i in range(2)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "out"
    assert encode_corpus(saved_tiny_model, tmp_path / "corpus.jsonl", out, shard_size=2, show_progress=False,
                         max_shards=1) is None
    manifest = encode_corpus(saved_tiny_model, tmp_path / "corpus.jsonl", out, shard_size=2, show_progress=False)
    assert manifest["count"] == 2 and manifest["skipped"] == 2 and [s["count"] for s in manifest["shards"]] == [2, 0]
    assert encode_corpus(saved_tiny_model, tmp_path / "corpus.jsonl", out, shard_size=2,
                         show_progress=False)["count"] == 2  # everything done: the manifest again
