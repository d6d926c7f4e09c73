"""`lame eval` writes its scores into the model folder's card: a Hugging Face model-index and a table;
evaluating a benchmark again replaces its own block and keeps everything else."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import WORDS, write_jsonl
from huggingface_hub import ModelCard
from tolerances import rounded_to_decimals

from lame.cli import main
from lame.integrations.card import add_eval_results


def report(score: float) -> dict:
    task = {"metric": "hit@1", "score": score, "hit@1": score, "ndcg@10": 0.5, "num_queries": 3, "category": "c"}
    return {"tasks": {"alpha": task}, "categories": {"c": score}, "overall": score}


def results(card: ModelCard) -> dict:
    return {(r.dataset_type, r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}


def test_blocks_are_replaced_in_place_and_others_kept(tmp_path):
    (tmp_path / "README.md").write_text(
        "---\nlibrary_name: lame\ntags: [embeddings]\nmodel-index:\n- name: m\n  results:\n  - task: {type: retrieval}\n"
        "    dataset: {type: other/bench, name: Other}\n    metrics:\n    - {type: ndcg_at_10, value: 0.9}\n---\n"
        "# A card\n\nWords of the author.\n")
    add_eval_results(tmp_path, report(0.25), "bench-a")
    add_eval_results(tmp_path, report(0.5), "bench-b")
    add_eval_results(tmp_path, report(0.75), "bench-a")  # again: replaces bench-a's block
    card = ModelCard.load(tmp_path / "README.md")
    assert results(card) == {("other/bench", None, "ndcg_at_10"): 0.9,
                             ("bench-a", "alpha", "hit@1"): 0.75, ("bench-a", "alpha", "ndcg@10"): 0.5,
                             ("bench-b", "alpha", "hit@1"): 0.5, ("bench-b", "alpha", "ndcg@10"): 0.5}
    assert card.data.library_name == "lame" and card.data.tags == ["embeddings"]
    text = card.text
    assert "Words of the author." in text and text.count("## Evaluation results") == 1
    assert text.count("<!-- lame-eval:bench-a start -->") == 1 and "| alpha | c | hit@1 | 0.7500 |" in text
    assert "0.2500" not in text and "| **overall** | | | **0.5000** |" in text


def test_a_folder_without_a_card_gets_one(tmp_path):
    add_eval_results(tmp_path, report(1.0), "bench")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.model_name == tmp_path.name and results(card)[("bench", "alpha", "hit@1")] == 1.0


def test_lame_eval_updates_the_saved_models_card(tmp_path, saved_tiny_model, capsys):
    model = tmp_path / "model"
    shutil.copytree(saved_tiny_model, model)
    bench = tmp_path / "tiny-bench" / "words"
    write_jsonl(bench / "corpus.jsonl", [{"id": w, "item": w} for w in WORDS[:4]])
    write_jsonl(bench / "queries.jsonl", [{"id": f"q{i}", "query": f"the word {w}", "relevant": {w: 1}}
                                          for i, w in enumerate(WORDS[:4])])
    assert main(["eval", "--model", str(model), "--benchmark", str(bench.parent), "--cache-dir", ""]) == 0
    assert "model card updated" in capsys.readouterr().out
    card = ModelCard.load(model / "README.md")
    assert "# LaME embedding model" in card.text  # the card save_pretrained wrote, updated in place
    scores = results(card)
    assert set(scores) == {("tiny-bench", "words", "hit@1"), ("tiny-bench", "words", "ndcg@10")}
    assert main(["eval", "--model", str(model), "--benchmark", str(bench.parent), "--cache-dir", "",
                 "--no-card"]) == 0
    assert results(ModelCard.load(model / "README.md")) == scores
    assert scores[("tiny-bench", "words", "hit@1")] == pytest.approx(
        json.loads((model / "scores-tiny-bench.json").read_text())["tasks"]["words"]["hit@1"],
        abs=rounded_to_decimals(6))  # the card's metadata rounds scores to 6 decimals
