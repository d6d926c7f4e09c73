"""Metrics against hand-computed values; the JSONL format; the runner with a fake encoder; the cache."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from lame.eval import Query, RetrievalTask, evaluate, hit_at_1, load_jsonl_benchmark, mrr, ndcg_at_k, recall_at_k
from lame.eval.loaders import load_benchmark
from lame.eval.runner import format_table, score_task


def test_hit_recall_mrr_by_hand():
    ranking = ["d3", "d1", "d7", "d2"]
    relevant = {"d1": 1, "d2": 1, "d9": 1}
    assert hit_at_1(ranking, relevant) == 0.0
    assert hit_at_1(["d1"], relevant) == 1.0
    assert recall_at_k(ranking, relevant, 1) == 0.0
    assert recall_at_k(ranking, relevant, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranking, relevant, 4) == pytest.approx(2 / 3)
    assert mrr(ranking, relevant) == pytest.approx(1 / 2)
    assert mrr(["x", "y"], relevant) == 0.0


def test_ndcg_linear_gain_by_hand():
    ranking = ["a", "b", "c", "d"]
    relevant = {"b": 2, "d": 1, "e": 3}
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranking, relevant, 10) == pytest.approx(dcg / idcg)
    # only the top-k count, and the ideal is cut at k too
    assert ndcg_at_k(ranking, relevant, 1) == 0.0
    assert ndcg_at_k(["e", "b"], relevant, 2) == pytest.approx(1.0)
    assert ndcg_at_k(ranking, {}, 5) == 0.0


def _task(local: bool) -> RetrievalTask:
    corpus = {f"d{i}": f"doc {i}" for i in range(4)}
    queries = [
        Query("q0", "query 0", {"d0": 1}, ["d0", "d1"] if local else None, {"level": 0}),
        Query("q1", "query 1", {"d2": 1, "d3": 2}, ["d1", "d2", "d3"] if local else None, {"level": 1}),
    ]
    return RetrievalTask("t", queries, corpus, metric="ndcg@5", category="cat", group_by="level")


def test_score_task_global_and_local_by_hand():
    docs = np.eye(4, dtype=np.float32)
    # q0 prefers d1 then d0; q1 prefers d3 then d1 then d2
    queries = np.array([[0.5, 0.9, 0, 0], [0, 0.6, 0.2, 0.9]], dtype=np.float32)
    result, rankings = score_task(_task(local=False), queries, docs, ["d0", "d1", "d2", "d3"])
    assert rankings["q0"][:2] == ["d1", "d0"]
    q0 = 1 / math.log2(3)
    q1 = (2 / 1 + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert result["ndcg@5"] == pytest.approx((q0 + q1) / 2)
    assert result["score"] == result["ndcg@5"]
    assert result["hit@1"] == pytest.approx(0.5)
    assert result["groups"]["0"]["ndcg@5"] == pytest.approx(q0)
    # local: q0 only sees d0, d1 -> still d1 first; q1 sees d1, d2, d3 -> same order as global
    local, rankings = score_task(_task(local=True), queries, docs, ["d0", "d1", "d2", "d3"])
    assert rankings["q0"] == ["d1", "d0"] and len(rankings["q1"]) == 3


def test_task_rejects_unknown_metric_and_orphan_queries():
    with pytest.raises(ValueError, match="unknown metric"):
        RetrievalTask("t", [], {}, metric="map")
    with pytest.raises(ValueError, match="no relevant document"):
        RetrievalTask("t", [Query("q", "x", {"zz": 1})], {"d": "doc"})
    with pytest.raises(ValueError, match="not in the corpus"):
        RetrievalTask("t", [Query("q", "x", {"d": 1}, ["d", "nope"])], {"d": "doc"})


def _write_jsonl_task(folder, with_image=True):
    folder.mkdir(parents=True)
    (folder / "img").mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "img" / "a.png")
    corpus = [{"id": "red", "item": {"image": "img/a.png"}}, {"id": "blue", "item": "blue"}]
    queries = [{"id": "q1", "query": {"text": "a red square", "instruction": "find it"}, "relevant": {"red": 1},
                "level": 2}]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries) + "\n")
    (folder / "task.json").write_text(json.dumps({"metric": "hit@1", "category": "toy", "group_by": "level"}))


def test_jsonl_benchmark_layout(tmp_path):
    _write_jsonl_task(tmp_path / "bench" / "alpha")
    _write_jsonl_task(tmp_path / "bench" / "beta")
    tasks = load_jsonl_benchmark(tmp_path / "bench")
    assert [t.name for t in tasks] == ["alpha", "beta"]
    task = tasks[0]
    assert task.corpus["red"]["image"] == tmp_path / "bench" / "alpha" / "img" / "a.png"
    assert task.queries[0].meta == {"level": 2} and task.category == "toy"
    assert [t.name for t in load_benchmark(str(tmp_path / "bench"), tasks=["beta"])] == ["beta"]
    with pytest.raises(ValueError, match="unknown task"):
        load_benchmark(str(tmp_path / "bench"), tasks=["gamma"])
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        load_benchmark(str(tmp_path / "nowhere"))


def test_jsonl_errors_name_file_and_line(tmp_path):
    _write_jsonl_task(tmp_path / "t")
    (tmp_path / "t" / "queries.jsonl").write_text('{"id": "q1", "query": "x", "relevant": {"red": 1}}\n{oops\n')
    with pytest.raises(ValueError, match=r"queries.jsonl:2: invalid JSON"):
        load_jsonl_benchmark(tmp_path / "t")
    (tmp_path / "t" / "queries.jsonl").write_text('{"id": "q1", "query": "x"}\n')
    with pytest.raises(ValueError, match=r"queries.jsonl:1: missing field 'relevant'"):
        load_jsonl_benchmark(tmp_path / "t")


def test_jsonl_corpus_takes_beir_and_plain_lines_and_refuses_empty_files(tmp_path):
    _write_jsonl_task(tmp_path / "t")
    corpus = [{"_id": "red", "title": "Red", "text": "a red square"}, {"id": "blue", "text": "blue"},
              {"id": "pic", "image": "img/a.png"}]
    (tmp_path / "t" / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (task,) = load_jsonl_benchmark(tmp_path / "t")
    assert task.corpus == {"red": "Red a red square", "blue": "blue", "pic": {"image": tmp_path / "t" / "img" / "a.png"}}
    (tmp_path / "t" / "corpus.jsonl").write_text('{"id": "red", "item": "x"}\n{"doc": "blue", "body": "y"}\n')
    with pytest.raises(ValueError, match=r"corpus.jsonl:2: no 'id' \(or BEIR '_id'\) field"):
        load_jsonl_benchmark(tmp_path / "t")
    (tmp_path / "t" / "corpus.jsonl").write_text('{"id": "red", "item": "x"}\n')
    (tmp_path / "t" / "queries.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"queries.jsonl: no record"):  # not a score over zero queries
        load_jsonl_benchmark(tmp_path / "t")


class CountingEncoder:
    """Embeds text by a fixed table so rankings are known; counts what it had to encode."""

    def __init__(self):
        self.calls = 0

    def encode(self, items, batch_size=32, show_progress_bar=False):
        self.calls += len(items)
        out = []
        for item in items:
            text = item if isinstance(item, str) else item.get("text", "")
            out.append([1.0, 0.0] if "red" in text or isinstance(item, dict) and "image" in item else [0.0, 1.0])
        return np.array(out, dtype=np.float32)


def test_evaluate_and_cache(tmp_path):
    _write_jsonl_task(tmp_path / "t")
    tasks = load_jsonl_benchmark(tmp_path / "t")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "lame_config.json").write_text("{}")
    encoder = CountingEncoder()
    report = evaluate(encoder, tasks, cache_dir=tmp_path / "cache", model_dir=model_dir, show_progress_bar=False)
    assert report["tasks"]["t"]["hit@1"] == 1.0 and report["overall"] == 1.0
    assert report["tasks"]["t"]["groups"]["2"]["hit@1"] == 1.0
    first = encoder.calls
    evaluate(encoder, tasks, cache_dir=tmp_path / "cache", model_dir=model_dir, show_progress_bar=False)
    assert encoder.calls == first  # everything came from the cache
    (model_dir / "lame_config.json").write_text('{"changed": 1}')  # a different model: no stale reuse
    evaluate(encoder, tasks, cache_dir=tmp_path / "cache", model_dir=model_dir, show_progress_bar=False)
    assert encoder.calls == 2 * first
    assert "overall: 1.0000" in format_table(report)
