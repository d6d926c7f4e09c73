"""Training records: what the decoder reconstructs from each (the retrieval target), and that the trainer
hands those targets to the loss."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_jsonl

from lame import LaMEConfig
from lame.config import ConfigError
from lame.training import trainer as trainer_module
from lame.training.data import parse_record
from lame.training.recipe import recipe_from_dict
from lame.training.trainer import Trainer

BASE = Path("/data")
TEXT_PAIR = {"query": "a handwritten seven", "positive": "seven"}
WITH_ANSWER = {"query": {"image": "q.png"}, "positive": {"text": "the digit seven", "instruction": "Represent it."},
               "answer": "7", "rationale": "it has a bar"}
IMAGE_ONLY = {"query": "a cat", "positive": {"image": "cat.png", "instruction": "Represent the image."}}
CAPTIONED = {**IMAGE_ONLY, "caption": "a cat on a mat"}
INTERLEAVED = {"query": "q", "positives": [["page", {"image": "p.png"}, {"text": "two"}], "other"]}

CASES = [  # record, {mode: target}
    (TEXT_PAIR, {"answer": "seven", "positive": "seven", "rationale+answer": "seven"}),
    (WITH_ANSWER, {"answer": "7", "positive": "the digit seven", "rationale+answer": "it has a bar 7"}),
    (IMAGE_ONLY, {"answer": None, "positive": None, "rationale+answer": None}),
    (CAPTIONED, {"answer": "a cat on a mat", "positive": "a cat on a mat", "rationale+answer": "a cat on a mat"}),
    (INTERLEAVED, {"answer": "page two", "positive": "page two", "rationale+answer": "page two"}),
]


@pytest.mark.parametrize("record, expected", CASES, ids=["text", "answer", "image", "caption", "interleaved"])
def test_the_decoder_reconstructs_the_retrieval_target(record, expected):
    example = parse_record(record, "train.jsonl:1", BASE)
    for mode, target in expected.items():
        assert example.decoder_target(mode) == target, mode
    assert example.decoder_target("full") == expected["rationale+answer"]  # the earlier name
    assert "caption" not in example.meta  # a schema field, not metadata


def test_decoder_target_full_is_an_alias_and_bad_values_are_named():
    assert LaMEConfig(decoder_target="full").decoder_target == "rationale+answer"
    assert LaMEConfig().decoder_target == "answer"
    with pytest.raises(ConfigError, match="decoder_target"):
        LaMEConfig(decoder_target="caption")


def test_text_pairs_without_an_answer_get_a_reconstruction_loss(tmp_path, monkeypatch):
    """Records with only a query and a text positive: the positive's text is the decoder's target, so
    the reconstruction term is there; an image-only positive without caption has none."""
    records = [{"query": f"{w} plus one", "positive": w} for w in ("one", "two", "three")]
    records.append({"query": "a picture", "positive": {"image": "missing-is-fine-here.png"}})
    write_jsonl(tmp_path / "train.jsonl", records)
    raw = {"model": {"backbone": "tiny:qwen2_vl", "decoder": "tiny", "lame": {"num_reason_tokens": 2}},
           "data": {"sources": [{"path": "train.jsonl"}]},
           "train": {"output_dir": str(tmp_path / "out"), "tensorboard": False, "featurize_workers": 0,
                     "log_every": 1},
           "stages": [{"name": "s", "steps": 1, "batch_size": 3,
                       "trainable": [{"pattern": "decoder_head.*", "lr": 1e-3}]}]}
    seen = []
    real = trainer_module.compute_gradients

    def record(model, batch, weights, *args, **kwargs):
        seen.append(list(batch.targets))
        losses = real(model, batch, weights, *args, **kwargs)
        seen.append(losses.reconstruction)
        return losses

    monkeypatch.setattr(trainer_module, "compute_gradients", record)
    Trainer(recipe_from_dict(raw, tmp_path), show_progress=False).run()
    targets, reconstruction = seen
    assert targets and all(t in ("one", "two", "three") for t in targets)
    assert reconstruction > 0
    image_only = parse_record(records[-1], "x:4", tmp_path)
    assert image_only.decoder_target("answer") is None
