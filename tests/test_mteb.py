"""The mteb wrapper: a LaME model scored by the mteb package on a task built here from local files
gets the scores `lame eval` gives on the same files."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import WORDS, noise, write_jsonl
from tolerances import FORWARD, SCORE, rounded_to_decimals

from lame.eval.jsonl import load_jsonl_task
from lame.eval.runner import evaluate

mteb = pytest.importorskip("mteb")
from lame.integrations.mteb import LaMEEncoder, batch_items, mteb_task  # noqa: E402

# mteb rounds its scores to 5 decimals (mteb/_evaluators/retrieval_metrics.py); the same rankings give the same
# scores up to that
MTEB_ROUNDING = rounded_to_decimals(5) + SCORE
# lame metric -> the mteb score that has the same definition
SAME = {"ndcg@5": "ndcg_at_5", "ndcg@10": "ndcg_at_10", "recall@1": "recall_at_1", "recall@5": "recall_at_5",
        "hit@1": "precision_at_1", "mrr": "mrr_at_10"}


@pytest.fixture(scope="module")
def task_folder(tmp_path_factory):
    """Text, image and image+text documents; text, image and instructed image+text queries."""
    folder = tmp_path_factory.mktemp("mteb-task")
    (folder / "images").mkdir()
    for i in range(6):
        noise((20 + 2 * i, 16), seed=10 + i).save(folder / "images" / f"{i}.png")
    corpus = [{"id": f"t{i}", "item": f"a page about the number {WORDS[i]}"} for i in range(5)]
    corpus += [{"id": f"i{i}", "item": {"image": f"images/{i}.png"}} for i in range(3)]
    corpus += [{"id": f"c{i}", "item": {"text": f"figure {WORDS[i]}", "image": f"images/{i + 3}.png"}} for i in range(2)]
    queries = [
        {"id": "q0", "query": "the number zero", "relevant": {"t0": 2, "c0": 1}},
        {"id": "q1", "query": "number three", "relevant": {"t3": 1}},
        {"id": "q2", "query": {"image": "images/1.png"}, "relevant": {"i1": 1, "t1": 1}},
        {"id": "q3", "query": {"text": "which figure is this?", "image": "images/4.png",
                               "instruction": "Find the matching figure."}, "relevant": {"c1": 1}},
        {"id": "q4", "query": {"text": "four", "instruction": "Find the page."}, "relevant": {"t4": 1, "i2": 2}},
    ]
    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(folder / "queries.jsonl", queries)
    return folder


@pytest.fixture(scope="module")
def model():
    from lame import build_tiny_model

    return build_tiny_model("qwen2_vl", seed=0)


def test_mteb_scores_equal_lame_eval(task_folder, model):
    lame_scores = evaluate(model, [load_jsonl_task(task_folder)], show_progress_bar=False)["tasks"]
    task = mteb_task(task_folder, name="LaMETinyAny2Any")
    assert task.metadata.category == "it2it" and task.metadata.modalities == ["image", "text"]
    result = mteb.evaluate(LaMEEncoder(model, batch_size=4), task, cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    mine = lame_scores[task_folder.name]
    for ours, theirs in SAME.items():
        assert scores[theirs] == pytest.approx(mine[ours], abs=MTEB_ROUNDING), (ours, scores[theirs], mine[ours])
    assert 0 < scores["ndcg_at_10"] < 1  # not a degenerate ranking


def test_rows_become_the_items_lame_reads(task_folder, model):
    image = noise((8, 8), 0)
    batch = {"text": ["hello", "", "cap"], "image": [None, [image], [image, image]]}
    assert batch_items(batch) == ["hello", {"images": [image]}, {"images": [image, image], "text": "cap"}]
    instructed = {"text": ["q instr"], "query": ["q"], "instruction": ["instr"]}
    assert batch_items(instructed) == [{"text": "q", "instruction": "instr"}]
    assert batch_items({"text": ["q"]}, "default") == [{"text": "q", "instruction": "default"}]
    encoder = LaMEEncoder(model, instructions={"query": "Q:", "T2-document": "D:"})
    metadata = mteb_task(task_folder, name="T2").metadata
    assert encoder.instruction_for(metadata, mteb.types.PromptType.query) == "Q:"
    assert encoder.instruction_for(metadata, mteb.types.PromptType.document) == "D:"
    meta = encoder.mteb_model_meta
    assert meta.embed_dim == 64 and meta.similarity_fn_name.value == "cosine" and "image" in meta.modalities


def test_interleaved_items_are_refused(tmp_path):
    from lame.errors import UserError

    write_jsonl(tmp_path / "corpus.jsonl", [{"id": "d", "item": ["a", "b"]}])
    write_jsonl(tmp_path / "queries.jsonl", [{"id": "q", "query": "a", "relevant": {"d": 1}}])
    with pytest.raises(UserError, match="interleaved"):
        mteb_task(tmp_path)


def test_embeddings_through_mteb_equal_encode(task_folder, model):
    from mteb._create_dataloaders import create_dataloader
    from mteb.types import PromptType

    task = mteb_task(task_folder, name="LaMETinyAny2Any2")
    task.load_data()
    split = task.dataset["default"]["test"]
    loader = create_dataloader(split["queries"], task_metadata=task.metadata, prompt_type=PromptType.query,
                               batch_size=2)
    got = LaMEEncoder(model).encode(loader, task_metadata=task.metadata, hf_split="test", hf_subset="default",
                                    prompt_type=PromptType.query)
    want = model.encode([q.item for q in load_jsonl_task(task_folder).queries])
    np.testing.assert_allclose(got, want, atol=FORWARD, rtol=0)  # batches of 2 against one batch


def test_candidates_become_top_ranked_with_equal_scores(tmp_path, model):
    write_jsonl(tmp_path / "corpus.jsonl", [{"id": f"d{i}", "item": f"doc {WORDS[i]}"} for i in range(10)])
    write_jsonl(tmp_path / "queries.jsonl", [
        {"id": f"q{i}", "query": f"number {WORDS[i]}", "relevant": {f"d{i}": 1},
         "candidates": [f"d{j}" for j in range(i, min(i + 4, 10))]} for i in range(7)])
    mine = evaluate(model, [load_jsonl_task(tmp_path)], show_progress_bar=False)["tasks"][tmp_path.name]
    task = mteb_task(tmp_path, name="LaMETinyCandidates")
    task.load_data()
    assert task.dataset["default"]["test"]["top_ranked"]["q2"] == ["d2", "d3", "d4", "d5"]
    scores = mteb.evaluate(LaMEEncoder(model), task, cache=None, show_progress_bar=False).task_results[0]
    scores = scores.scores["test"][0]
    for ours, theirs in SAME.items():
        assert scores[theirs] == pytest.approx(mine[ours], abs=MTEB_ROUNDING), ours
