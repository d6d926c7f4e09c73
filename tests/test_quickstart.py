"""The quickstart's pieces: the digits task, the summary of the quality grid, a tiny end-to-end run."""

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from lame.experiments.digits import generate_digits_benchmark
from lame.data.featurize import Featurizer
from lame.modeling.adapters import get_adapter
from lame.modeling.tiny import build_tiny_tokenizer
from lame.experiments.quickstart.pretrain import answer_accuracy
from lame.experiments.bench.quality import GRID, _first_step_reaching, summarize
from lame.experiments.quickstart.run import QuickstartSettings, answer_pairs, digits_task, format_report


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    generate_digits_benchmark(out, train_queries_per_level=20, test_queries_per_level=10, test_text_queries_per_level=2)
    return out


def test_a_query_never_ranks_its_own_image(digits):
    task = digits_task(digits / "test")
    assert task.group_by == "level"
    for query in task.queries:
        own = set(query.meta["query_ids"])
        assert own and not own & set(query.candidates)
        assert set(query.candidates) == set(task.corpus) - own


def test_subset_keeps_the_first_queries_of_each_level(digits):
    task = digits_task(digits / "test", per_level=3)
    levels = [q.meta["level"] for q in task.queries]
    assert sorted(levels) == sorted([0, 1, 2, 3] * 3)


def _run(variant, seed, final, curve):
    return {"variant": variant, "seed": seed, "test": {"hit@1": final, "hit@1/level0": final},
            "curve": [{"step": s, "hit@1": h} for s, h in curve]}


def test_summary_mean_spread_and_steps_to_the_baseline():
    runs = [
        _run("baseline", 0, 0.4, [(10, 0.1), (20, 0.3)]),
        _run("baseline", 1, 0.6, [(10, 0.2), (20, 0.5)]),
        _run("lame", 0, 0.5, [(10, 0.45), (20, 0.6)]),
        _run("lame", 1, 0.7, [(10, 0.2), (20, 0.3)]),
    ]
    summary = summarize(runs)
    assert summary["baseline"]["hit@1"]["mean"] == pytest.approx(0.5)
    assert summary["baseline"]["hit@1"]["std"] == pytest.approx(0.1)
    # the baseline's final curve value is the mean of 0.3 and 0.5 = 0.4
    assert summary["lame"]["steps_to_baseline_final"] == [10, None]
    assert _first_step_reaching([{"step": 5, "hit@1": 0.2}], 0.3) is None


def test_grid_variants_differ_only_in_what_they_name():
    assert GRID["baseline"][:2] == (0, False)
    assert GRID["lame"][:2] == (8, True) and GRID["lame"][2] == {}
    for name, (_, _, changes) in GRID.items():
        replace(QuickstartSettings(), **changes)  # every change is a real settings field


@pytest.mark.slow
def test_quickstart_end_to_end_small(tmp_path, monkeypatch):
    """The whole quickstart at a toy budget: both models, scores, plot, decoded latents."""
    from lame.experiments.quickstart import run as quickstart

    monkeypatch.setattr(quickstart, "CACHE", tmp_path / "cache")
    settings = replace(QuickstartSettings(), warmup_steps=2, joint_steps=2, batch_size=4, eval_every=2,
                       eval_queries_per_level=2, pretrain=replace(QuickstartSettings().pretrain, steps=2))
    report = quickstart.run_quickstart(tmp_path / "out", settings, show_progress=False)
    assert set(report["variants"]) == {"lame", "baseline"}
    assert (tmp_path / "out" / "quickstart.png").is_file() and (tmp_path / "out" / "scores.json").is_file()
    assert len(report["variants"]["lame"]["decoded_latents"]) > 0
    assert "baseline" in format_report(report)


class _FavoursOneWord(torch.nn.Module):
    """A stand-in VLM that predicts every next token of a row ending in ``word`` + <|im_end|> with
    certainty, and is unsure everywhere else: ``word`` is always its most likely answer."""

    def __init__(self, tokenizer, word: str):
        super().__init__()
        self.vocab = len(tokenizer)
        self.ending = tokenizer(word, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]

    def forward(self, input_ids, **_):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for row in range(input_ids.shape[0]):
            if input_ids[row, -len(self.ending):].tolist() == self.ending:
                logits[row, torch.arange(input_ids.shape[1] - 1), input_ids[row, 1:]] = 50.0
        return SimpleNamespace(logits=logits)


def test_generative_reference_scores_the_most_likely_number_word(digits):
    pairs = answer_pairs(digits / "test" / "queries.jsonl", digits / "test", per_level=3)
    assert sorted(level for _, _, level in pairs) == sorted([0, 1, 2, 3] * 3)
    records = [json.loads(line) for line in (digits / "test" / "queries.jsonl").read_text().splitlines()]
    assert [answer for _, answer, _ in pairs][:3] == [r["answer"] for r in records[:3]]
    assert all(isinstance(image, Image.Image) for item, _, _ in pairs
               for image in ([item["image"]] if "image" in item else item["images"]))
    tokenizer = build_tiny_tokenizer()
    adapter = get_adapter("qwen2_vl")
    image_processor = adapter.tiny_image_processor()
    featurizer = Featurizer(tokenizer, image_processor, [], 512, adapter.image_layout(image_processor))
    items, answers = [item for item, _, _ in pairs], [answer for _, answer, _ in pairs]
    for word in ("seven", "six", answers[0]):
        expected = sum(answer == word for answer in answers) / len(answers)
        assert answer_accuracy(_FavoursOneWord(tokenizer, word), featurizer, tokenizer, items, answers) == expected
