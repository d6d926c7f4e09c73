"""The digits benchmark's task families: answers follow the instruction as a reader would compute it, the
images and the instruction are each far from enough alone, and the reported ceilings are exact."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np
import pytest

from helpers import SMALL_DIGITS as SMALL
from helpers import WORDS, read_jsonl

from lame_testbed.digits import generate_digits_benchmark
from lame_testbed.families import FAMILIES

ORDINAL = {"first": 0, "second": 1, "third": 2, "fourth": 3}
TARGET = r" (Find an image of the result\.|Write the result as a word\.)"


def read_instruction(text: str, digits: list[int]) -> int:
    """An independent reading of a family instruction: the answer it asks for."""
    if m := re.fullmatch(r"If this digit is even, the answer is (\d); otherwise it is (\d)\." + TARGET, text):
        assert len(digits) == 1
        return int(m.group(1)) if digits[0] % 2 == 0 else int(m.group(2))
    if m := re.fullmatch(r"Find the (first|second) digit(?: plus (1))?\." + TARGET, text):
        assert len(digits) == 2
        return (digits[ORDINAL[m.group(1)]] + int(m.group(2) or 0)) % 10
    if m := re.fullmatch(r"Find the (first|second|third|fourth) of the four digits\." + TARGET, text):
        assert len(digits) == 4
        return digits[ORDINAL[m.group(1)]]
    raise AssertionError(f"not a family instruction: {text!r}")


def shown_digits(row, labels) -> list[int]:
    item = row["query"]
    paths = [item["image"]] if "image" in item else item["images"]
    return [int(labels[int(re.search(r"(\d{4})\.png", p).group(1))]) for p in paths]


@pytest.fixture(scope="module")
def labels():
    from sklearn.datasets import load_digits

    return load_digits().target


def test_family_answers_follow_their_instructions(digits_data, labels):
    rows = [r for r in read_jsonl(digits_data / "train.jsonl") + read_jsonl(digits_data / "test" / "queries.jsonl")
            + read_jsonl(digits_data / "val" / "queries.jsonl") if r["task"] in FAMILIES]
    assert Counter(r["task"] for r in rows if r["id"].startswith("train")) == {
        name: SMALL["train_queries_per_level"] for name in FAMILIES}
    for row in rows:
        digits = shown_digits(row, labels)
        assert row["query_digits"] == digits
        answer = read_instruction(row["query"]["instruction"], digits)
        assert row["label"] == [answer, row["target_modality"]], row["id"]
        assert row["answer"] == WORDS[answer]
        assert row["rationale"].endswith(f"The answer is {WORDS[answer]}.")
        assert FAMILIES[row["task"]].answer(row["rule"], digits) == answer
        if FAMILIES[row["task"]].distinct_digits:
            assert len(set(digits)) == len(digits), row["id"]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_neither_the_images_nor_the_instruction_alone_beat_the_ceilings(name, tmp_path, monkeypatch):
    """A guess fitted on half of 4,000 generated records - from the digits shown alone, or from the rule
    alone - scores on the other half no better than the exact ceiling the summary reports (up to 3
    binomial standard deviations of 2,000 records): the generator leaks no answer the ceilings miss."""
    import lame_testbed.digits as digits_module

    monkeypatch.setattr(digits_module, "_write_images", lambda images, folder, size: None)
    count = 4000
    summary = generate_digits_benchmark(
        tmp_path, seed=0, train_queries_per_level=count, test_queries_per_level=0, test_text_queries_per_level=0,
        val_queries_per_level=0, val_text_queries_per_level=0, levels=(), families=(name,))
    rows = read_jsonl(tmp_path / "train.jsonl")
    fit, held = rows[: count // 2], rows[count // 2:]
    family = FAMILIES[name]
    for key, ceiling in ((lambda r: tuple(r["query_digits"]), family.image_only_ceiling()),
                         (lambda r: tuple(r["rule"]), family.text_only_ceiling())):
        table: dict[tuple, Counter] = defaultdict(Counter)
        for row in fit:
            table[key(row)][row["label"][0]] += 1
        hits = sum(bool(table[key(r)]) and table[key(r)].most_common(1)[0][0] == r["label"][0] for r in held)
        assert hits / len(held) <= ceiling + 3 * np.sqrt(ceiling * (1 - ceiling) / len(held))
    assert family.image_only_ceiling() <= 0.35 and family.text_only_ceiling() <= 0.5
    assert summary["image_only_ceiling"][name] == round(family.image_only_ceiling(), 4)
    assert summary["text_only_ceiling"][name] == round(family.text_only_ceiling(), 4)


def test_ceilings_match_a_count_by_hand():
    # parity: the image decides between two digits the instruction names, each uniform: 1/10 from the
    # image, 1/2 from the instruction.
    assert FAMILIES["parity"].image_only_ceiling() == pytest.approx(0.1)
    assert FAMILIES["parity"].text_only_ceiling() == pytest.approx(0.5)
    # pick: the four rules give {a, b, a+1, b+1}; two of them coincide (best guess 1/2) when b = a,
    # b = a + 1 or a = b + 1 (3 in 10 pairs), else each is 1/4: 0.3 * 0.5 + 0.7 * 0.25.
    assert FAMILIES["pick"].image_only_ceiling() == pytest.approx(0.325)
    # position: four different digits, one of four picked: 1/4; the instruction alone: 1/10.
    assert FAMILIES["position"].image_only_ceiling() == pytest.approx(0.25)
    assert FAMILIES["position"].text_only_ceiling() == pytest.approx(0.1)
