"""A reasoning-over-images retrieval benchmark on scikit-learn's handwritten digits (offline).

The 1,797 real 8x8 digit images bundled with scikit-learn (``sklearn.datasets.load_digits``) are split
by image (stratified by digit) into train, validation and test images. Each query shows one or two digit images and
an instruction; its answer is a digit 0-9 that needs reading the image(s) *and* doing the arithmetic:

* level 0: "Find another image of this digit." (answer = the digit);
* level 1: one operation mod 10 with a random operand, e.g. "Add 3 (mod 10).";
* level 2: two chained operations, e.g. "Add 3, then multiply by 2 (mod 10).";
* level 3: two images combined (product, sum or difference), then one more operation,
  e.g. "Multiply the two digits, then subtract 4 (mod 10).".

Operations and operands are drawn uniformly, so from level 1 on the answer is spread over several
digits given the query image's digit: an image-only (no reasoning) model stays well below ceiling.
The task families of :mod:`lame_testbed.families` (parity, pick, position) are rules over one, two or
four images that one forward pass can learn, where the levels need more depth than one pass has.

Targets are either another image of the answer digit or the answer's number word ("seven").
Output files (see :func:`generate_digits_benchmark` and the README written next to them)::

    OUTPUT_DIR/images/NNNN.png      every digit image, named by its sklearn index
    OUTPUT_DIR/train.jsonl          training records (query, positive, answer, rationale, label, ops)
    OUTPUT_DIR/test/corpus.jsonl    every test image plus the ten number words
    OUTPUT_DIR/test/queries.jsonl   test queries with graded ``relevant`` corpus ids
    OUTPUT_DIR/val/...              the same for the validation images (tune here, report on test/)
    OUTPUT_DIR/split.json           the train/val/test image indices
    OUTPUT_DIR/summary.json         counts per level and split
    OUTPUT_DIR/README.md            what all of this is

Generation is deterministic: the same seed writes the same files byte for byte.

Run ``python -m lame_testbed.digits OUTPUT_DIR [--seed N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lame.errors import InvalidInput
from .families import FAMILIES, NUMBER_WORDS, Family

LEVELS = (0, 1, 2, 3)
# 2: a validation split carved from the training images, 56-pixel images; 3: task families;
# 4: the families parity, pick and position, labels [answer, target modality]
BENCHMARK_VERSION = 4

# Single-digit operations (value, operand) -> value mod 10; operands drawn uniformly from these ranges.
UNARY_OPS = ("add", "sub", "mul")
OPERANDS = {"add": tuple(range(1, 10)), "sub": tuple(range(1, 10)), "mul": tuple(range(2, 10))}
# Two-digit combinations for level 3: (first, second) -> value mod 10.
BINARY_OPS = ("product", "sum", "difference")

_UNARY_PHRASE = {"add": "add {k}", "sub": "subtract {k}", "mul": "multiply by {k}"}
_UNARY_WORD = {"add": "plus", "sub": "minus", "mul": "times"}
_BINARY_PHRASE = {
    "product": "multiply the two digits",
    "sum": "add the two digits",
    "difference": "subtract the second digit from the first",
}
_BINARY_WORD = {"product": "times", "sum": "plus", "difference": "minus"}

# The part of the instruction that says what kind of target to find.
_TARGET_PHRASE = {
    ("image", 0): "Find another image of this digit.",
    ("text", 0): "Write this digit as a word.",
    ("image", 1): "Find an image of the result.",
    ("text", 1): "Write the result as a word.",
}

_STREAM_SPLIT, _STREAM_TRAIN = 0, 1
_STREAM_HELD_OUT = {"test": 2, "val": 3}


# --------------------------------------------------------------------------------------------------
# arithmetic, instructions and rationales


def apply_ops(ops: Sequence[Sequence[Any]], digits: Sequence[int]) -> int:
    """The answer of ``ops`` (as stored in a record's ``"ops"``) on the query image digits, mod 10."""
    digits = [int(d) for d in digits]
    if not ops:
        if len(digits) != 1:
            raise ValueError("a query without operations has exactly one image")
        return digits[0]
    ops = list(ops)
    if ops[0][0] in BINARY_OPS:
        if len(digits) != 2:
            raise ValueError(f"{ops[0][0]!r} needs two images, got {len(digits)}")
        value = _binary(ops[0][0], digits[0], digits[1])[1]
        ops = ops[1:]
    else:
        if len(digits) != 1:
            raise ValueError(f"unary operations need one image, got {len(digits)}")
        value = digits[0]
    for name, operand in ops:
        value = _unary(name, value, int(operand))[1]
    return value


def _unary(name: str, value: int, k: int) -> tuple[int, int]:
    raw = {"add": value + k, "sub": value - k, "mul": value * k}[name]
    return raw, raw % 10


def _binary(name: str, a: int, b: int) -> tuple[int, int]:
    raw = {"product": a * b, "sum": a + b, "difference": a - b}[name]
    return raw, raw % 10


def _step(a: int, word: str, b: int, raw: int) -> str:
    text = f"{a} {word} {b} is {raw}"
    if raw % 10 != raw:
        text += f", which is {raw % 10} mod 10"
    return text + "."


def question(level: int, ops: Sequence[Sequence[Any]]) -> str:
    """The question a generative VLM answers for a query: the operations, without what to retrieve."""
    if level == 0:
        return "Which digit is this?"
    return _operations_phrase(ops)


def instruction(level: int, ops: Sequence[Sequence[Any]], target: str, modality_hint: bool = True) -> str:
    """A query's instruction: the operations, then (with ``modality_hint``) what kind of target to find."""
    if level == 0:
        return _TARGET_PHRASE[(target, 0)]
    text = _operations_phrase(ops)
    if modality_hint:
        text += " " + _TARGET_PHRASE[(target, 1)]
    return text


def _operations_phrase(ops: Sequence[Sequence[Any]]) -> str:
    phrases = []
    for op in ops:
        if op[0] in BINARY_OPS:
            phrases.append(_BINARY_PHRASE[op[0]])
        else:
            phrases.append(_UNARY_PHRASE[op[0]].format(k=op[1]))
    text = ", then ".join(phrases)
    return text[0].upper() + text[1:] + " (mod 10)."


def rationale(ops: Sequence[Sequence[Any]], digits: Sequence[int]) -> str:
    """The worked steps of a query, ending with "The answer is <word>."."""
    digits = [int(d) for d in digits]
    if len(digits) == 1:
        sentences = [f"The image shows {digits[0]}."]
        value = digits[0]
        rest = ops
    else:
        a, b = digits
        sentences = [f"The first image shows {a} and the second shows {b}."]
        raw, value = _binary(ops[0][0], a, b)
        sentences.append(_step(a, _BINARY_WORD[ops[0][0]], b, raw))
        rest = ops[1:]
    for name, k in rest:
        raw, new = _unary(name, value, k)
        sentences.append(_step(value, _UNARY_WORD[name], k, raw))
        value = new
    sentences.append(f"The answer is {NUMBER_WORDS[value]}.")
    return " ".join(sentences)


def _sample_unary(rng: np.random.Generator) -> list:
    name = UNARY_OPS[int(rng.integers(len(UNARY_OPS)))]
    operands = OPERANDS[name]
    return [name, int(operands[int(rng.integers(len(operands)))])]


def _sample_ops(rng: np.random.Generator, level: int) -> list[list]:
    if level == 0:
        return []
    if level == 1:
        return [_sample_unary(rng)]
    if level == 2:
        return [_sample_unary(rng), _sample_unary(rng)]
    if level == 3:
        return [[BINARY_OPS[int(rng.integers(len(BINARY_OPS)))]], _sample_unary(rng)]
    raise ValueError(f"unknown level {level}")


# --------------------------------------------------------------------------------------------------
# data


def _image_id(index: int) -> str:
    return f"img-{index:04d}"


def _image_path(index: int, prefix: str = "") -> str:
    return f"{prefix}images/{index:04d}.png"


def split_images(labels: np.ndarray, seed: int, train_fraction: float = 0.7,
                 val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) image indices, stratified by digit. ``train_fraction`` of each digit's images
    are for training, the rest for test; ``val_fraction`` (of all images) of the training share is held
    out for validation, so the test images do not depend on ``val_fraction``."""
    rng = np.random.default_rng([seed, _STREAM_SPLIT])
    train, val, test = [], [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        n_train = round(train_fraction * len(members))
        n_val = round(val_fraction * len(members))
        train.extend(members[: n_train - n_val].tolist())
        val.extend(members[n_train - n_val: n_train].tolist())
        test.extend(members[n_train:].tolist())
    return np.array(sorted(train)), np.array(sorted(val), dtype=np.int64), np.array(sorted(test))


def render_digit(array: np.ndarray, size: int) -> Image.Image:
    """An 8x8 scikit-learn digit (values 0-16) as a ``size`` x ``size`` RGB image, nearest-neighbour."""
    pixels = np.clip(np.rint(np.asarray(array, dtype=np.float64) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.NEAREST).convert("RGB")


def _write_images(images: np.ndarray, folder: Path, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, array in enumerate(images):
        render_digit(array, size).save(folder / f"{index:04d}.png", format="PNG")


def draw_query(
    rng: np.random.Generator, level: int, pool: np.ndarray, labels: np.ndarray
) -> tuple[list[int], list[int], list[list], int]:
    """A random query of ``level`` on images drawn from ``pool``: (image indices, their digits, ops, answer)."""
    first = int(rng.integers(len(pool)))
    positions = [first]
    if level == 3:  # a second, different image (it may show the same digit)
        second = int(rng.integers(len(pool) - 1))
        positions.append(second + (second >= first))
    indices = [int(pool[p]) for p in positions]
    digits = [int(labels[i]) for i in indices]
    ops = _sample_ops(rng, level)
    return indices, digits, ops, apply_ops(ops, digits)


def _query_item(level: int, indices: list[int], text: str, prefix: str) -> dict:
    if level == 3:
        return {"images": [_image_path(i, prefix) for i in indices], "instruction": text}
    return {"image": _image_path(indices[0], prefix), "instruction": text}


def _train_records(
    level: int,
    count: int,
    seed: int,
    train: np.ndarray,
    labels: np.ndarray,
    text_fraction: float,
    modality_hint: bool,
) -> list[dict]:
    rng = np.random.default_rng([seed, _STREAM_TRAIN, level])
    by_digit = {d: [int(i) for i in train if labels[i] == d] for d in range(10)}
    n_text = round(text_fraction * count)
    is_text = np.zeros(count, dtype=bool)
    is_text[rng.permutation(count)[:n_text]] = True
    records = []
    for n in range(count):
        target = "text" if is_text[n] else "image"
        indices, digits, ops, answer = draw_query(rng, level, train, labels)
        if target == "text":
            positive: dict = {"text": NUMBER_WORDS[answer]}
        else:
            candidates = [i for i in by_digit[answer] if i not in indices]
            positive = {"image": _image_path(candidates[int(rng.integers(len(candidates)))])}
        records.append(
            {
                "id": f"train-L{level}-{n:06d}",
                "task": f"level{level}",
                "level": level,
                "query": _query_item(level, indices, instruction(level, ops, target, modality_hint), ""),
                "positive": positive,
                **_answer_fields(ops, digits, answer, target),
            }
        )
    return records


def _answer_fields(ops: list[list], digits: list[int], answer: int, target: str) -> dict:
    """The fields train records and test queries share: answer, rationale, label and provenance."""
    return {
        "answer": NUMBER_WORDS[answer],
        "rationale": rationale(ops, digits),
        "label": [answer, target],
        "target_modality": target,
        "ops": ops,
        "query_digits": digits,
    }


def _held_out_queries(
    split: str,
    level: int,
    n_image: int,
    n_text: int,
    seed: int,
    images: np.ndarray,
    labels: np.ndarray,
    modality_hint: bool,
) -> list[dict]:
    """Queries of the ``split`` ("val" or "test") on its own images, with graded relevance."""
    rng = np.random.default_rng([seed, _STREAM_HELD_OUT[split], level])
    by_digit = {d: [_image_id(int(i)) for i in images if labels[i] == d] for d in range(10)}
    queries = []
    for n in range(n_image + n_text):
        target = "image" if n < n_image else "text"
        indices, digits, ops, answer = draw_query(rng, level, images, labels)
        if target == "image":
            own = {_image_id(i) for i in indices}
            relevant = {doc: 1 for doc in by_digit[answer] if doc not in own}
        else:
            relevant = {f"word-{answer}": 1}
        queries.append(
            {
                "id": f"{split}-L{level}-{n:06d}",
                "task": f"level{level}",
                "level": level,
                "query": _query_item(level, indices, instruction(level, ops, target, modality_hint), "../"),
                "relevant": relevant,
                **_answer_fields(ops, digits, answer, target),
                "query_ids": [_image_id(i) for i in indices],
            }
        )
    return queries


def _family_stream(family: Family) -> int:
    """A family's own random stream (after the levels'), so adding a family changes no level's records."""
    return 100 + list(FAMILIES).index(family.name)


def _draw_images(rng: np.random.Generator, family: Family, pool: np.ndarray, labels: np.ndarray) -> tuple[list, list]:
    """Different images of ``pool`` for a query of ``family`` (showing different digits where the family
    asks for that): (indices, digits)."""
    if family.distinct_digits:
        digits = rng.choice(10, size=family.images, replace=False)
        indices = []
        for d in digits:
            shown = pool[labels[pool] == d]
            indices.append(int(shown[int(rng.integers(len(shown)))]))
    else:
        indices = [int(pool[p]) for p in rng.choice(len(pool), size=family.images, replace=False)]
    return indices, [int(labels[i]) for i in indices]


def family_instruction(family: Family, rule, target: str) -> str:
    """A family query's instruction: the rule, then what kind of target to find."""
    return family.phrase(rule) + " " + _TARGET_PHRASE[(target, 1)]


def _family_query(family: Family, indices: list[int], text: str, prefix: str) -> dict:
    if family.images > 1:
        return {"images": [_image_path(i, prefix) for i in indices], "instruction": text}
    return {"image": _image_path(indices[0], prefix), "instruction": text}


def _family_fields(family: Family, rule, digits: list[int], answer: int, target: str) -> dict:
    return {"task": family.name, "rule": list(rule), "answer": NUMBER_WORDS[answer],
            "rationale": family.rationale(rule, digits), "label": [answer, target], "target_modality": target,
            "query_digits": digits}


def _family_train_records(family: Family, count: int, seed: int, train: np.ndarray, labels: np.ndarray,
                          text_fraction: float) -> list[dict]:
    rng = np.random.default_rng([seed, _STREAM_TRAIN, _family_stream(family)])
    by_digit = {d: [int(i) for i in train if labels[i] == d] for d in range(10)}
    is_text = np.zeros(count, dtype=bool)
    is_text[rng.permutation(count)[:round(text_fraction * count)]] = True
    records = []
    for n in range(count):
        target = "text" if is_text[n] else "image"
        indices, digits = _draw_images(rng, family, train, labels)
        rule = family.sample_rule(rng)
        answer = family.answer(rule, digits)
        if target == "text":
            positive: dict = {"text": NUMBER_WORDS[answer]}
        else:
            candidates = [i for i in by_digit[answer] if i not in indices]
            positive = {"image": _image_path(candidates[int(rng.integers(len(candidates)))])}
        records.append({"id": f"train-{family.name}-{n:06d}",
                        "query": _family_query(family, indices, family_instruction(family, rule, target), ""),
                        "positive": positive, **_family_fields(family, rule, digits, answer, target)})
    return records


def _family_held_out_queries(split: str, family: Family, n_image: int, n_text: int, seed: int, images: np.ndarray,
                             labels: np.ndarray) -> list[dict]:
    rng = np.random.default_rng([seed, _STREAM_HELD_OUT[split], _family_stream(family)])
    by_digit = {d: [_image_id(int(i)) for i in images if labels[i] == d] for d in range(10)}
    queries = []
    for n in range(n_image + n_text):
        target = "image" if n < n_image else "text"
        indices, digits = _draw_images(rng, family, images, labels)
        rule = family.sample_rule(rng)
        answer = family.answer(rule, digits)
        own = {_image_id(i) for i in indices}
        relevant = ({doc: 1 for doc in by_digit[answer] if doc not in own} if target == "image"
                    else {f"word-{answer}": 1})
        queries.append({"id": f"{split}-{family.name}-{n:06d}",
                        "query": _family_query(family, indices, family_instruction(family, rule, target), "../"),
                        "relevant": relevant, **_family_fields(family, rule, digits, answer, target),
                        "query_ids": [_image_id(i) for i in indices]})
    return queries


def answer_given_digit(level: int) -> np.ndarray:
    """Exact ``P(answer | first image's digit)`` (10x10, rows = digit) under the sampling of operations.

    Operations and operands are uniform as generated; at level 3 the second digit is taken as uniform.
    """
    table = np.zeros((10, 10))
    unary = [
        ([name, k], 1.0 / len(UNARY_OPS) / len(OPERANDS[name])) for name in UNARY_OPS for k in OPERANDS[name]
    ]
    for d in range(10):
        if level == 0:
            table[d, d] = 1.0
        elif level == 1:
            for op, w in unary:
                table[d, apply_ops([op], [d])] += w
        elif level == 2:
            for op1, w1 in unary:
                for op2, w2 in unary:
                    table[d, apply_ops([op1, op2], [d])] += w1 * w2
        elif level == 3:
            for b in range(10):
                for combine in BINARY_OPS:
                    for op, w in unary:
                        table[d, apply_ops([[combine], op], [d, b])] += w / 10 / len(BINARY_OPS)
        else:
            raise ValueError(f"unknown level {level}")
    return table


def image_only_ceiling(level: int) -> float:
    """Accuracy of the best answer guess from the first image's digit alone (digits uniform); chance is 0.1."""
    return float(answer_given_digit(level).max(axis=1).mean())


def _empirical_image_only(records: list[dict]) -> dict:
    """In-sample accuracy of the best predictor of the answer from the first query image's digit alone."""
    counts = np.zeros((10, 10), dtype=np.int64)
    for record in records:
        counts[record["query_digits"][0], record["label"][0]] += 1
    total = int(counts.sum())
    rows = counts.sum(axis=1)
    max_p = [round(float(counts[d].max() / rows[d]), 4) if rows[d] else None for d in range(10)]
    return {
        "accuracy": round(float(counts.max(axis=1).sum() / total), 4) if total else None,
        "max_p_answer_given_digit": max_p,
    }


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8", newline="\n")


# --------------------------------------------------------------------------------------------------
# public API


def generate_digits_benchmark(
    output_dir: str | Path,
    seed: int = 0,
    train_queries_per_level: int = 2000,
    test_queries_per_level: int = 200,
    levels: Sequence[int] = LEVELS,
    *,
    families: Sequence[str] = tuple(FAMILIES),
    test_text_queries_per_level: int = 50,
    val_queries_per_level: int = 100,
    val_text_queries_per_level: int = 25,
    train_text_fraction: float = 0.25,
    train_fraction: float = 0.7,
    val_fraction: float = 0.1,
    image_size: int = 56,
    modality_hint: bool = True,
) -> dict:
    """Write the digits reasoning benchmark under ``output_dir`` and return its summary.

    ``seed`` fixes everything (the image split included): the same seed writes the same files byte for
    byte. Each level's records come from their own random stream, so a level's records do not depend on
    which other levels are generated. ``test_queries_per_level`` counts image-target test queries;
    ``test_text_queries_per_level`` more per level have the number word as target (``val_*`` the same
    for the validation split, whose images are ``val_fraction`` of all images, taken from the training
    share: tune on it, never on the test split). A ``train_text_fraction`` of each level's training
    records have the number word as positive. With ``modality_hint`` (default) the instruction ends with
    what to find ("Find an image of the result." / "Write the result as a word."); level 0 always says it.
    ``families`` (:mod:`lame_testbed.families`) get the same counts as a level; their instructions
    always end with what to find.
    """
    from sklearn.datasets import load_digits

    counts = {"train": train_queries_per_level, "test": (test_queries_per_level, test_text_queries_per_level),
              "val": (val_queries_per_level, val_text_queries_per_level)}
    levels, families = _checked_tasks(levels, families)
    _check_arguments(seed, counts, train_fraction, val_fraction, train_text_fraction, image_size)
    seed = int(seed)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    labels = np.asarray(digits.target, dtype=np.int64)
    train, val, test = split_images(labels, seed, train_fraction, val_fraction)
    held_out = {"test": (test, *counts["test"]), "val": (val, *counts["val"])}
    if not len(val):
        held_out.pop("val")
    _write_images(digits.images, out / "images", image_size)
    _write_json(out / "split.json", {"seed": seed, "train": train.tolist(), "val": val.tolist(),
                                     "test": test.tolist()}, indent=None)

    tasks = [_LevelTask(level, modality_hint) for level in levels] + [_FamilyTask(FAMILIES[f]) for f in families]
    train_records, queries, train_counts, query_counts = _task_records(
        tasks, int(train_queries_per_level), train_text_fraction, seed, train, labels, held_out)

    _write_jsonl(out / "train.jsonl", train_records)
    held_out_summary = {name: {**_write_held_out(out / name, images, queries[name]), "per_task": query_counts[name]}
                        for name, (images, _, _) in held_out.items()}
    summary = {
        "benchmark": "lame-digits-reasoning",
        "version": BENCHMARK_VERSION,
        "source": "sklearn.datasets.load_digits (1,797 real 8x8 handwritten digits)",
        "seed": seed,
        "levels": levels,
        "families": families,
        "image_size": image_size,
        "modality_hint": modality_hint,
        "image_only_ceiling": {task.key: round(task.image_only_ceiling(), 4) for task in tasks},
        "text_only_ceiling": {f: round(FAMILIES[f].text_only_ceiling(), 4) for f in families},
        "split": _split_summary(labels, train, val, test, train_fraction, val_fraction),
        "train": {"records": len(train_records), "text_fraction": train_text_fraction, "per_task": train_counts},
        **held_out_summary,
        "files": {"images": "images/NNNN.png", "train": "train.jsonl", "split": "split.json", "readme": "README.md",
                  **{f"{name}_{kind}": f"{name}/{kind}.jsonl" for name in held_out for kind in ("corpus", "queries")}},
    }
    _write_json(out / "summary.json", summary)
    (out / "README.md").write_text(_readme(summary), encoding="utf-8", newline="\n")
    return {**summary, "output_dir": str(out)}


def _task_records(tasks: list, train_count: int, train_text_fraction: float, seed: int, train: np.ndarray,
                  labels: np.ndarray, held_out: dict) -> tuple[list, dict, dict, dict]:
    """Every task's training records and held-out queries, with their counts per task."""
    train_records: list[dict] = []
    queries: dict[str, list[dict]] = {name: [] for name in held_out}
    train_counts: dict[str, Any] = {}
    query_counts: dict[str, dict[str, Any]] = {name: {} for name in held_out}
    for task in tasks:
        records = task.train_records(train_count, seed, train, labels, train_text_fraction)
        train_records += records
        n_text = sum(r["target_modality"] == "text" for r in records)
        train_counts[task.key] = {"records": len(records), "image_target": len(records) - n_text,
                                  "text_target": n_text, "image_only_empirical": _empirical_image_only(records)}
        for split, (images, n_image, n_text) in held_out.items():
            task_queries = task.held_out(split, int(n_image), int(n_text), seed, images, labels)
            queries[split] += task_queries
            query_counts[split][task.key] = {"queries": len(task_queries), "image_target": int(n_image),
                                             "text_target": int(n_text)}
    return train_records, queries, train_counts, query_counts


def _write_held_out(folder: Path, images: np.ndarray, queries: list[dict]) -> dict:
    """A held-out split's corpus (its images and the ten number words) and queries; their counts."""
    corpus = [{"id": _image_id(int(i)), "item": {"image": _image_path(int(i), "../")}} for i in images]
    corpus += [{"id": f"word-{d}", "item": NUMBER_WORDS[d]} for d in range(10)]
    _write_jsonl(folder / "corpus.jsonl", corpus)
    _write_jsonl(folder / "queries.jsonl", queries)
    return {"corpus": {"documents": len(corpus), "images": len(images), "texts": 10}, "queries": len(queries)}


class _LevelTask:
    """An arithmetic level as the generator's loop sees it."""

    def __init__(self, level: int, modality_hint: bool):
        self.level, self.modality_hint, self.key = level, modality_hint, str(level)

    def train_records(self, count, seed, train, labels, text_fraction):
        return _train_records(self.level, count, seed, train, labels, text_fraction, self.modality_hint)

    def held_out(self, split, n_image, n_text, seed, images, labels):
        return _held_out_queries(split, self.level, n_image, n_text, seed, images, labels, self.modality_hint)

    def image_only_ceiling(self) -> float:
        return image_only_ceiling(self.level)


class _FamilyTask:
    """A task family as the generator's loop sees it."""

    def __init__(self, family: Family):
        self.family, self.key = family, family.name

    def train_records(self, count, seed, train, labels, text_fraction):
        return _family_train_records(self.family, count, seed, train, labels, text_fraction)

    def held_out(self, split, n_image, n_text, seed, images, labels):
        return _family_held_out_queries(split, self.family, n_image, n_text, seed, images, labels)

    def image_only_ceiling(self) -> float:
        return self.family.image_only_ceiling()


def _checked_tasks(levels: Sequence[int], families: Sequence[str]) -> tuple[list[int], list[str]]:
    levels = list(dict.fromkeys(int(level) for level in levels))
    if any(level not in LEVELS for level in levels):
        raise InvalidInput(f"levels must be a subset of {LEVELS}, got {levels}")
    families = list(dict.fromkeys(families))
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise InvalidInput(f"unknown task famil{'ies' if len(unknown) > 1 else 'y'} {unknown}; "
                           f"known: {', '.join(FAMILIES)}")
    if not levels and not families:
        raise InvalidInput("name at least one level or family")
    return levels, families


def _check_arguments(seed, counts: dict, train_fraction: float, val_fraction: float, train_text_fraction: float,
                     image_size: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    names = {"train": ("train_queries_per_level",),
             "test": ("test_queries_per_level", "test_text_queries_per_level"),
             "val": ("val_queries_per_level", "val_text_queries_per_level")}
    for split, values in counts.items():
        for name, value in zip(names[split], values if isinstance(values, tuple) else (values,)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InvalidInput(f"{name} must be a non-negative integer, got {value!r}")
    if not 0.0 < train_fraction < 1.0:
        raise InvalidInput(f"train_fraction must be in (0, 1), got {train_fraction}")
    if not 0.0 <= val_fraction < train_fraction:
        raise InvalidInput(f"val_fraction must be in [0, train_fraction), got {val_fraction}")
    if not 0.0 <= train_text_fraction <= 1.0:
        raise InvalidInput(f"train_text_fraction must be in [0, 1], got {train_text_fraction}")
    if image_size < 8:
        raise InvalidInput(f"image_size must be at least 8, got {image_size}")


def _split_summary(labels, train, val, test, train_fraction: float, val_fraction: float) -> dict:
    return {
        "train_fraction": train_fraction,
        "val_fraction": val_fraction,
        "train_images": len(train),
        "val_images": len(val),
        "test_images": len(test),
        **{f"{name}_images_per_digit": [int((labels[images] == d).sum()) for d in range(10)]
           for name, images in (("train", train), ("val", val), ("test", test))},
    }


_README = """\
# LaME digits reasoning benchmark

Generated by `lame_testbed.digits` (version {version}) with seed {seed}; the same seed writes the
same files byte for byte.

Images: the 1,797 real 8x8 handwritten digits bundled with scikit-learn (`sklearn.datasets.load_digits`,
no download), scaled from 0-16 to 0-255 (light strokes on a dark background), upscaled to {size}x{size}
with nearest-neighbour and saved as RGB PNG: `images/NNNN.png`, NNNN = the sklearn index.

## Split

By image, stratified by digit: {train_images} train images, {val_images} validation images and
{test_images} test images (the validation images are {val_fraction:.0%} of all images, taken from the
{train_fraction:.0%} training share, so the test images are the same whatever the validation share).
Training records use only train images (queries and positives); validation and test queries and their
corpora use only their own split's images. Tune on `val/`, report on `test/`. `split.json` lists the
indices.

## Levels

The answer is always a digit 0-9; all arithmetic is mod 10. Operations: add k (k = 1..9), subtract k
(k = 1..9), multiply by k (k = 2..9), drawn uniformly.

| level | query | example instruction |
|---|---|---|
| 0 | one image | Find another image of this digit. |
| 1 | one image, one operation | Add 3 (mod 10). Find an image of the result. |
| 2 | one image, two chained operations | Add 3, then multiply by 2 (mod 10). Find an image of the result. |
| 3 | two images: product, sum or difference (first minus second), then one operation | \
Multiply the two digits, then subtract 4 (mod 10). Write the result as a word. |

With `modality_hint` (here: {modality_hint}) each level 1-3 instruction ends with what to find: "Find an
image of the result." or "Write the result as a word."; level 0 always says it ("Find another image of
this digit." / "Write this digit as a word.").

## Task families

Shallow rules one forward pass can learn (read the digit(s), then one choice the instruction makes);
`lame_testbed.families` defines them. Every instruction ends with what to find.

| family | query images | example instruction | image-only ceiling | text-only ceiling |
|---|---|---|---|---|
{family_rows}

`image_only_ceiling` in `summary.json` is the exact accuracy of the best guess of the answer without
the instruction: for a level, from the first image's digit alone; for a family, from all the query's
digits. A family's `text_only_ceiling` is the same from the instruction alone. Chance is 0.1. From level
1 on and in every family the answer is spread over several digits for any query image(s), so a model
that only recognises the images cannot reach the ceiling; `train.per_task.TASK.image_only_empirical` is
the first-image guess measured in-sample on the training records.

## Files

Image paths in a JSONL file are relative to that file's folder.

* `train.jsonl`: one training record a line: `id`, `task` (`level0`..`level3` or a family's name),
  `level` (arithmetic tasks), `query` (`{{"image" or "images",
  "instruction"}}`), `positive` (another train image of the answer digit, never a query image, or the
  number word `{{"text": "seven"}}`), `target_modality` (`image` or `text`), `answer` (number word),
  `label` (`[answer digit, target modality]`: records with equal labels are not each other's negatives,
  so an image of the answer is a negative for a query that asks for the word), `rationale` (worded steps), `ops` (the operations, e.g.
  `[["add", 3], ["mul", 2]]`; level 3 starts with `["product"]`, `["sum"]` or `["difference"]`) and
  `query_digits` (the digits shown). Family records have `rule` (e.g. `[3, 7]` for parity,
  `["second", 1]` for pick, `["third"]` for position) instead of `level` and `ops`.
* `test/corpus.jsonl`: `{{"id": "img-NNNN", "item": {{"image": "../images/NNNN.png"}}}}` for every test
  image, plus `{{"id": "word-D", "item": "seven"}}` for the ten number words.
* `test/queries.jsonl`: `id`, `level`, `query`, `relevant` (corpus id -> grade 1: all test images of the
  answer digit except the query's own images, or the answer's `word-D`), `target_modality`, `answer`,
  `label`, `rationale`, `ops`, `query_digits` and `query_ids` (the query's own corpus ids; they are in
  the corpus but never relevant, so an evaluation may drop them from the ranking).
* `val/corpus.jsonl`, `val/queries.jsonl`: the same for the validation images.
* `split.json`: the train, val and test image indices.
* `summary.json`: counts per task and split.

## Counts

| task | train records (image / text target) | val queries | test queries (image / text target) | \
image-only ceiling |
|---|---|---|---|---|
{count_rows}

Corpus: {documents} documents ({corpus_images} images, {corpus_texts} words).
"""


def _readme(summary: dict) -> str:
    split = summary["split"]
    rows = []
    for task in [str(level) for level in summary["levels"]] + summary["families"]:
        tr = summary["train"]["per_task"][task]
        te = summary["test"]["per_task"][task]
        va = summary.get("val", {}).get("per_task", {}).get(task, {"queries": 0})
        rows.append(
            f"| {task} | {tr['records']} ({tr['image_target']} / {tr['text_target']}) | {va['queries']} | "
            f"{te['queries']} ({te['image_target']} / {te['text_target']}) | "
            f"{summary['image_only_ceiling'][task]:.2f} |"
        )
    corpus = summary["test"]["corpus"]
    return _README.format(
        version=summary["version"],
        seed=summary["seed"],
        size=summary["image_size"],
        train_images=split["train_images"],
        val_images=split["val_images"],
        train_fraction=split["train_fraction"],
        val_fraction=split["val_fraction"],
        test_images=split["test_images"],
        modality_hint=summary["modality_hint"],
        count_rows="\n".join(rows),
        family_rows="\n".join(
            f"| {name} | {FAMILIES[name].images} | {FAMILIES[name].example} | "
            f"{summary['image_only_ceiling'][name]:.3f} | {summary['text_only_ceiling'][name]:.3f} |"
            for name in summary["families"]) or "| (none generated) | | | | |",
        documents=corpus["documents"],
        corpus_images=corpus["images"],
        corpus_texts=corpus["texts"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lame_testbed.digits",
        description="Write the offline digits reasoning benchmark (scikit-learn handwritten digits).",
    )
    parser.add_argument("output_dir", help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--train-queries-per-level", type=int, default=2000)
    parser.add_argument("--test-queries-per-level", type=int, default=200, help="image-target test queries")
    parser.add_argument(
        "--test-text-queries-per-level", type=int, default=50, help="text-target test queries"
    )
    parser.add_argument("--levels", type=int, nargs="*", default=list(LEVELS), choices=LEVELS)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--val-queries-per-level", type=int, default=100, help="image-target val queries")
    parser.add_argument("--val-text-queries-per-level", type=int, default=25, help="text-target val queries")
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument(
        "--no-modality-hint", action="store_true", help="leave the target phrase out of level 1-3"
    )
    args = parser.parse_args(argv)
    summary = generate_digits_benchmark(
        args.output_dir,
        seed=args.seed,
        train_queries_per_level=args.train_queries_per_level,
        test_queries_per_level=args.test_queries_per_level,
        levels=args.levels,
        families=args.families,
        test_text_queries_per_level=args.test_text_queries_per_level,
        val_queries_per_level=args.val_queries_per_level,
        val_text_queries_per_level=args.val_text_queries_per_level,
        image_size=args.image_size,
        modality_hint=not args.no_modality_hint,
    )
    print(
        f"wrote {summary['output_dir']}: {summary['train']['records']} train records, "
        f"{summary['test']['queries']} test queries, {summary['test']['corpus']['documents']} corpus documents"
    )
    for task in [str(level) for level in summary["levels"]] + summary["families"]:
        name = f"level {task}" if task.isdigit() else task
        print(f"  {name}: image-only ceiling {summary['image_only_ceiling'][task]:.3f} (chance 0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
