"""The offline digits reasoning benchmark: split hygiene, arithmetic, paths, relevance, determinism."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import SMALL_DIGITS as SMALL
from helpers import WORDS, read_jsonl
from tolerances import float64_sum

import lame_testbed.digits as digits_module
from lame_testbed.digits import answer_given_digit, generate_digits_benchmark, image_only_ceiling, main
from lame_testbed.families import FAMILIES
from lame.data.items import to_item


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target


@pytest.fixture
def bench(digits_data) -> Path:
    """Written with seed 3 and SMALL counts (conftest)."""
    return digits_data


def image_paths(item) -> list[str]:
    if isinstance(item, str):
        return []
    paths = ([item["image"]] if "image" in item else []) + list(item.get("images", []))
    return paths


def index_of(path: str) -> int:
    match = re.fullmatch(r"(?:\.\./)?images/(\d{4})\.png", path)
    assert match, path
    return int(match.group(1))


def corpus_image_indices(out: Path, split: str = "test") -> set[int]:
    return {
        int(doc["id"][4:])
        for doc in read_jsonl(out / split / "corpus.jsonl")
        if doc["id"].startswith("img-")
    }


# An independent reading of the instruction text.
UNARY = re.compile(r"(add|subtract|multiply by) (\d)")
BINARY = {
    "multiply the two digits": "product",
    "add the two digits": "sum",
    "subtract the second digit from the first": "difference",
}


def parse_instruction(text: str) -> list[list]:
    if text in ("Find another image of this digit.", "Write this digit as a word."):
        return []
    match = re.fullmatch(
        r"(.+) \(mod 10\)\.(?: (Find an image of the result\.|Write the result as a word\.))?", text
    )
    assert match, text
    ops = []
    for piece in match.group(1).split(", then "):
        piece = piece[0].lower() + piece[1:]
        if piece in BINARY:
            ops.append([BINARY[piece]])
        else:
            unary = UNARY.fullmatch(piece)
            assert unary, text
            ops.append(
                [{"add": "add", "subtract": "sub", "multiply by": "mul"}[unary.group(1)], int(unary.group(2))]
            )
    return ops


def compute(ops: list[list], digits: list[int]) -> int:
    value = digits[0]
    for op in ops:
        if op[0] == "product":
            value = digits[0] * digits[1]
        elif op[0] == "sum":
            value = digits[0] + digits[1]
        elif op[0] == "difference":
            value = digits[0] - digits[1]
        elif op[0] == "add":
            value += op[1]
        elif op[0] == "sub":
            value -= op[1]
        elif op[0] == "mul":
            value *= op[1]
        else:
            raise AssertionError(op)
    return value % 10


@pytest.fixture
def no_pngs(monkeypatch):
    """Skip writing the 1,797 PNGs (slow on a busy disk) in tests that only read the JSONL records."""
    monkeypatch.setattr(digits_module, "_write_images", lambda images, folder, size: None)


def all_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(bench, tmp_path):
    same, other = tmp_path / "same", tmp_path / "other"
    generate_digits_benchmark(same, seed=3, **SMALL)
    generate_digits_benchmark(other, seed=4, **SMALL)
    files_a, files_b, files_c = all_files(bench), all_files(same), all_files(other)
    assert set(files_a) >= {
        "train.jsonl",
        "test/corpus.jsonl",
        "test/queries.jsonl",
        "summary.json",
        "README.md",
    }
    assert sum(name.startswith("images/") for name in files_a) == 1797
    assert files_a == files_b
    for name in ["train.jsonl", "test/corpus.jsonl", "test/queries.jsonl", "split.json", "summary.json"]:
        assert files_a[name] != files_c[name], name


def test_split_by_image_and_stratified(bench, labels):
    test_images = corpus_image_indices(bench)
    val_images = corpus_image_indices(bench, "val")
    split = json.loads((bench / "split.json").read_text())
    assert set(split["test"]) == test_images and set(split["val"]) == val_images
    train, val, test = set(split["train"]), set(split["val"]), set(split["test"])
    assert not train & test and not train & val and not val & test
    assert len(train) + len(val) + len(test) == len(labels)
    for digit in range(10):
        n = int((labels == digit).sum())
        n_train = sum(labels[i] == digit for i in split["train"])
        n_val = sum(labels[i] == digit for i in split["val"])
        assert abs(n_train + n_val - 0.7 * n) <= 1
        assert abs(n_val - 0.1 * n) <= 1

    for record in read_jsonl(bench / "train.jsonl"):
        used = image_paths(record["query"]) + image_paths(record["positive"])
        assert {index_of(p) for p in used} <= train, record["id"]
    for name, images in (("test", test_images), ("val", val_images)):
        for query in read_jsonl(bench / name / "queries.jsonl"):
            assert {index_of(p) for p in image_paths(query["query"])} <= images, query["id"]
            assert set(query["relevant"]) <= {doc["id"] for doc in read_jsonl(bench / name / "corpus.jsonl")}


def test_test_images_do_not_depend_on_the_validation_share(labels):
    from lame_testbed.digits import split_images

    _, val_a, test_a = split_images(labels, seed=0, val_fraction=0.1)
    train_b, val_b, test_b = split_images(labels, seed=0, val_fraction=0.0)
    assert np.array_equal(test_a, test_b) and len(val_b) == 0
    assert set(train_b) == set(val_a) | set(split_images(labels, seed=0)[0])


def test_positives_show_answer_and_are_not_the_query(bench, labels):
    records = read_jsonl(bench / "train.jsonl")
    per_task = Counter(r["task"] for r in records)
    assert per_task == {task: SMALL["train_queries_per_level"] for task in [f"level{lv}" for lv in range(4)] + list(FAMILIES)}
    text_share = sum(r["target_modality"] == "text" for r in records) / len(records)
    assert text_share == pytest.approx(0.25, abs=0.01)
    for record in records:
        answer, modality = record["label"]  # equal labels are not negatives: an image of the answer is
        assert modality == record["target_modality"]  # a negative for a query that asks for the word
        assert record["answer"] == WORDS[answer]
        query_indices = [index_of(p) for p in image_paths(record["query"])]
        shown = FAMILIES[record["task"]].images if record["task"] in FAMILIES else 1 + (record["level"] == 3)
        assert len(query_indices) == shown
        assert len(set(query_indices)) == len(query_indices)  # different images (maybe the same digit)
        if record["target_modality"] == "text":
            assert record["positive"] == {"text": WORDS[answer]}
        else:
            assert set(record["positive"]) == {"image"}
            positive = index_of(record["positive"]["image"])
            assert positive not in query_indices, record["id"]
            assert labels[positive] == answer, record["id"]
        assert record["rationale"].endswith(f"The answer is {record['answer']}.")


def test_answers_follow_the_arithmetic(bench, labels):
    rows = read_jsonl(bench / "train.jsonl") + read_jsonl(bench / "test" / "queries.jsonl")
    rows = [row for row in rows if "level" in row]  # the families: test_families.py
    seen_ops = set()
    for row in rows:
        digits = [int(labels[index_of(p)]) for p in image_paths(row["query"])]
        parsed = parse_instruction(row["query"]["instruction"])
        assert parsed == row["ops"], row["id"]
        assert len(parsed) == {0: 0, 1: 1, 2: 2, 3: 2}[row["level"]], row["id"]
        assert compute(parsed, digits) == row["label"][0], row["id"]
        assert row["answer"] == WORDS[row["label"][0]]
        assert row["query_digits"] == digits
        hint = row["query"]["instruction"]
        assert ("word" in hint) == (row["target_modality"] == "text"), row["id"]
        seen_ops.update(op[0] for op in parsed)
    assert seen_ops == {"add", "sub", "mul", "product", "sum", "difference"}


def test_every_image_path_resolves_to_a_png(bench):
    checked: set[Path] = set()
    files = {
        bench / "train.jsonl": ["query", "positive"],
        bench / "test" / "queries.jsonl": ["query"],
        bench / "test" / "corpus.jsonl": ["item"],
    }
    for path, keys in files.items():
        for row in read_jsonl(path):
            for key in keys:
                item = row[key]
                to_item(item, base_dir=path.parent)  # the project's own loader accepts it
                for rel in image_paths(item):
                    target = (path.parent / rel).resolve()
                    if target in checked:
                        continue
                    with Image.open(target) as image:
                        assert image.format == "PNG"
                        image.load()
                    checked.add(target)
    assert len(checked) >= len(corpus_image_indices(bench))


def test_relevant_is_exactly_the_test_images_of_the_answer(bench, labels):
    corpus = read_jsonl(bench / "test" / "corpus.jsonl")
    ids = [doc["id"] for doc in corpus]
    assert len(ids) == len(set(ids))
    words = {doc["id"]: doc["item"] for doc in corpus if doc["id"].startswith("word-")}
    assert words == {f"word-{d}": WORDS[d] for d in range(10)}
    test_images = corpus_image_indices(bench)
    queries = read_jsonl(bench / "test" / "queries.jsonl")
    counts: dict[tuple, int] = defaultdict(int)
    for query in queries:
        counts[(query["task"], query["target_modality"])] += 1
        own = {index_of(p) for p in image_paths(query["query"])}
        assert query["query_ids"] == [
            f"img-{i:04d}" for i in [index_of(p) for p in image_paths(query["query"])]
        ]
        if query["target_modality"] == "text":
            assert query["relevant"] == {f"word-{query['label'][0]}": 1}
        else:
            expected = {f"img-{i:04d}" for i in test_images if labels[i] == query["label"][0] and i not in own}
            assert set(query["relevant"]) == expected, query["id"]
            assert set(query["relevant"].values()) == {1}
            assert expected
    for task in [f"level{lv}" for lv in range(4)] + list(FAMILIES):
        assert counts[(task, "image")] == SMALL["test_queries_per_level"]
        assert counts[(task, "text")] == SMALL["test_text_queries_per_level"]


def test_summary_matches_files(bench):
    summary = json.loads((bench / "summary.json").read_text())
    assert summary["seed"] == 3
    assert summary["train"]["records"] == len(read_jsonl(bench / "train.jsonl"))
    assert summary["test"]["queries"] == len(read_jsonl(bench / "test" / "queries.jsonl"))
    assert summary["test"]["corpus"]["documents"] == len(read_jsonl(bench / "test" / "corpus.jsonl"))
    assert summary["val"]["queries"] == len(read_jsonl(bench / "val" / "queries.jsonl"))
    split = summary["split"]
    assert split["train_images"] + split["val_images"] + split["test_images"] == 1797
    readme = (bench / "README.md").read_text()
    assert "seed 3" in readme and "test/queries.jsonl" in readme


def test_answer_not_predictable_from_the_image_alone(no_pngs, tmp_path, labels):
    out = tmp_path / "big"
    generate_digits_benchmark(
        out,
        seed=0,
        train_queries_per_level=2000,
        test_queries_per_level=0,
        test_text_queries_per_level=0,
        levels=(0, 1, 2, 3),
        families=(),
    )
    by_level: dict[int, np.ndarray] = {level: np.zeros((10, 10)) for level in range(4)}
    for record in read_jsonl(out / "train.jsonl"):
        first = int(labels[index_of(image_paths(record["query"])[0])])
        by_level[record["level"]][first, record["label"][0]] += 1
    assert np.array_equal(by_level[0], np.diag(by_level[0].diagonal()))  # level 0: the answer is the digit
    for level in (1, 2, 3):
        counts = by_level[level]
        p = counts / counts.sum(axis=1, keepdims=True)
        assert (counts.sum(axis=1) >= 100).all()
        assert p.max(axis=1).max() < 0.5, (level, p.max(axis=1))
        # the best image-only guess is far below the ceiling of 1.0
        assert counts.max(axis=1).sum() / counts.sum() < 0.35, level
        # and the exact table the summary reports agrees with the sample
        exact = answer_given_digit(level)
        # a row adds up the float64 weights of up to 26 x 26 operation pairs, a few roundings each
        assert np.allclose(exact.sum(axis=1), 1.0, rtol=0, atol=float64_sum(4 * 26 * 26))
        assert exact.max() < 0.5
        assert np.abs(p - exact).max() < 0.15, level
        assert image_only_ceiling(level) < 0.2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image_only_ceiling"]["0"] == 1.0
    assert all(summary["image_only_ceiling"][str(level)] < 0.2 for level in (1, 2, 3))


def test_levels_are_independent_streams_and_validated(no_pngs, tmp_path):
    small = {"train_queries_per_level": 30, "test_queries_per_level": 5, "test_text_queries_per_level": 2}
    generate_digits_benchmark(tmp_path / "all", seed=1, **small)
    generate_digits_benchmark(tmp_path / "two", seed=1, levels=(2,), families=(), **small)
    level2 = [r for r in read_jsonl(tmp_path / "all" / "train.jsonl") if r.get("level") == 2]
    assert level2 == read_jsonl(tmp_path / "two" / "train.jsonl")
    # adding the families changes no level's records, and each family has its own stream too
    generate_digits_benchmark(tmp_path / "levels", seed=1, families=(), **small)
    every = read_jsonl(tmp_path / "all" / "train.jsonl")
    assert [r for r in every if "level" in r] == read_jsonl(tmp_path / "levels" / "train.jsonl")
    for name in FAMILIES:
        generate_digits_benchmark(tmp_path / name, seed=1, levels=(), families=(name,), **small)
        assert [r for r in every if r["task"] == name] == read_jsonl(tmp_path / name / "train.jsonl")
    with pytest.raises(ValueError):
        generate_digits_benchmark(tmp_path / "bad", levels=(4,))
    with pytest.raises(ValueError):
        generate_digits_benchmark(tmp_path / "bad", seed=-1)


def test_module_entry_point(no_pngs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(
            [
                str(out),
                "--seed",
                "5",
                "--train-queries-per-level",
                "20",
                "--test-queries-per-level",
                "4",
                "--test-text-queries-per-level",
                "1",
                "--levels",
                "1",
                "3",
                "--families",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 5 and summary["levels"] == [1, 3]
    assert summary["train"]["records"] == 40
    assert "wrote" in capsys.readouterr().out
