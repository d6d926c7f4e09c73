"""The generative probe: can the VLM itself answer the digits benchmark's held-out queries?

The VLM generates greedily after each query's question (its images and the operations); the answer is
the number word after the last "The answer is" of what it wrote (or the last number word when it never
says so). A level the VLM cannot answer here is a level no embedder on this backbone can be expected to
solve: check the backbone before comparing embedders on it.

Run ``python -m lame_testbed.digit_vlm.probe [MODEL_DIR] [--split val|test]`` (default: the shipped
reference VLM on the test split).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import torch

from lame.data.featurize import Featurizer, collate
from lame.data.items import load_image, resolve_paths
from lame_testbed.digits import NUMBER_WORDS, image_only_ceiling, question

_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b")


def answer_of(text: str) -> str | None:
    """The number word a generated text gives as its answer: after the last "answer is", else the last one."""
    tail = text.rsplit("answer is", 1)[-1] if "answer is" in text else text
    words = _WORD.findall(tail)
    if not words:
        return None
    return words[0] if "answer is" in text else words[-1]


def query_item(level: int, ops, images: list, text: str | None = None) -> dict:
    """A query as a generative question: its images and ``text`` (default: the operations alone, no
    retrieval phrase)."""
    key = {"images": images} if len(images) > 1 else {"image": images[0]}
    return {**key, "instruction": text or question(level, ops)}


def held_out_questions(data_dir: Path, split: str, per_level: int | None = None) -> list[dict]:
    """The split's queries as generative questions: {"item", "answer", "task", "id"}; images loaded. A
    level's task is its number ("0".."3"), a family's its name; ``per_level``: the first N of each task."""
    from lame_testbed.families import FAMILIES

    folder = data_dir / split
    rows, seen = [], {}
    for line in (folder / "queries.jsonl").read_text().splitlines():
        record = json.loads(line)
        task = str(record["level"]) if "level" in record else record["task"]
        if per_level is not None and seen.get(task, 0) >= per_level:
            continue
        seen[task] = seen.get(task, 0) + 1
        paths = resolve_paths(record["query"], folder)
        images = [load_image(p) for p in ([paths["image"]] if "image" in paths else paths["images"])]
        if "level" in record:
            item = query_item(record["level"], record["ops"], images)
        else:  # the family's rule as the question, the images as a level's
            item = query_item(0, [], images, FAMILIES[task].phrase(record["rule"]))
        rows.append({"item": item, "answer": record["answer"], "task": task, "id": record["id"]})
    return rows


@torch.inference_mode()
def generate_answers(model, featurizer: Featurizer, tokenizer, items: list, batch_size: int = 32,
                     max_new_tokens: int = 64) -> list[str]:
    """Greedy continuations of each item's prompt (up to ``<|im_end|>``)."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts = []
    for start in range(0, len(items), batch_size):
        batch = collate([featurizer(item) for item in items[start: start + batch_size]], tokenizer.pad_token_id,
                        featurizer.image_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=end,
                             pad_token_id=tokenizer.pad_token_id)
        texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    model.train(was_training)
    return texts


@torch.inference_mode()
def one_pass_answers(model, featurizer: Featurizer, tokenizer, items: list, batch_size: int = 8) -> list[str]:
    """For each item, the number word the VLM finds most likely as its WHOLE answer right after the prompt
    (teacher-forced log-probability of the word and ``<|im_end|>``): what it knows without thinking aloud."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    words = [tokenizer(w, add_special_tokens=False)["input_ids"] + [end] for w in NUMBER_WORDS]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers = []
    for start in range(0, len(items), batch_size):
        features, lengths = [], []
        for item in items[start: start + batch_size]:
            base = featurizer(item)
            for ids in words:
                features.append(dataclasses.replace(base, input_ids=torch.cat([base.input_ids, torch.tensor(ids)])))
                lengths.append(len(ids))
        batch = collate(features, tokenizer.pad_token_id, featurizer.image_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logprobs = model(**batch).logits[:, :-1].float().log_softmax(-1)
        targets = batch["input_ids"][:, 1:]
        picked = logprobs.gather(2, targets.unsqueeze(-1)).squeeze(-1)
        scores = torch.stack([picked[row, -n:].sum() for row, n in enumerate(lengths)])
        best = scores.view(-1, len(NUMBER_WORDS)).argmax(1)
        answers += [NUMBER_WORDS[int(i)] for i in best]
    model.train(was_training)
    return answers


def probe(model, featurizer: Featurizer, tokenizer, data_dir: Path, split: str = "test",
          per_level: int | None = None, examples: int = 0, one_pass: bool = True) -> dict[str, dict]:
    """Per task: the VLM's answer accuracy on the split's held-out queries when it generates (greedy,
    ``accuracy``) and, with ``one_pass``, when it must answer at once (``one_pass_accuracy``), with the
    image-only ceiling."""
    rows = held_out_questions(Path(data_dir), split, per_level)
    texts = generate_answers(model, featurizer, tokenizer, [r["item"] for r in rows])
    direct = one_pass_answers(model, featurizer, tokenizer, [r["item"] for r in rows]) if one_pass else None
    result: dict[str, dict] = {}
    from lame_testbed.families import FAMILIES

    for task in sorted({r["task"] for r in rows}):
        mine = [(r, t) for r, t in zip(rows, texts) if r["task"] == task]
        correct = sum(answer_of(t) == r["answer"] for r, t in mine)
        ceiling = image_only_ceiling(int(task)) if task.isdigit() else FAMILIES[task].image_only_ceiling()
        result[task] = {"accuracy": round(correct / len(mine), 4), "queries": len(mine),
                        "image_only_ceiling": round(ceiling, 4)}
        if direct is not None:
            hits = [d == r["answer"] for r, d in zip(rows, direct) if r["task"] == task]
            result[task]["one_pass_accuracy"] = round(sum(hits) / len(hits), 4)
        if examples:
            result[task]["examples"] = [{"id": r["id"], "answer": r["answer"], "generated": t}
                                        for r, t in mine[:examples]]
    return result


def load_vlm(folder: Path):
    """(model, featurizer, tokenizer) of a pretrained digit VLM folder."""
    from transformers import AutoTokenizer

    from lame.modeling.adapters import get_adapter

    adapter = get_adapter("qwen2_vl")
    model = adapter.model_class.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    image_processor = adapter.load_image_processor(folder)
    layout = adapter.image_layout(image_processor, model.config)
    return model, Featurizer(tokenizer, image_processor, [], 512, layout), tokenizer


def main(argv: list[str] | None = None) -> int:
    from . import reference_backbone
    from lame_testbed.quickstart.run import ensure_data

    parser = argparse.ArgumentParser(prog="python -m lame_testbed.digit_vlm.probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, help="VLM folder (default: the shipped reference)")
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--per-level", type=int, help="only the first N queries of each level or family")
    parser.add_argument("--examples", type=int, default=2, help="generations to print per level or family")
    args = parser.parse_args(argv)
    model, featurizer, tokenizer = load_vlm(args.model or reference_backbone())
    result = probe(model, featurizer, tokenizer, ensure_data(), args.split, args.per_level, args.examples)
    for task, row in result.items():
        one_pass = f", in one pass {row['one_pass_accuracy']:.3f}" if "one_pass_accuracy" in row else ""
        print(f"{'level ' + task if task.isdigit() else task}: answer accuracy {row['accuracy']:.3f}{one_pass} on {row['queries']} {args.split} "
              f"queries (image-only ceiling {row['image_only_ceiling']:.3f})")
        for example in row.get("examples", []):
            print(f"    {example['id']} (answer {example['answer']}): {example['generated']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
