"""The reference VLM's model card and checksum file."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lame.errors import InvalidInput

CHECKSUMS = "SHA256SUMS"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksummed_files(folder: Path) -> list[Path]:
    """Every file of the folder that the checksum file covers (all but itself), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS
                  and "__pycache__" not in p.parts)


def write_checksums(folder: Path) -> None:
    lines = [f"{sha256(p)}  {p.relative_to(folder).as_posix()}" for p in checksummed_files(folder)]
    (folder / CHECKSUMS).write_text("\n".join(lines) + "\n")


def verify_checksums(folder: Path) -> None:
    """Raises ``InvalidInput`` (a ``ValueError``) naming the first file that is missing, extra or differs from ``SHA256SUMS``."""
    listed = {}
    for line in (folder / CHECKSUMS).read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    present = {p.relative_to(folder).as_posix() for p in checksummed_files(folder)}
    for name in sorted(set(listed) | present):
        if name not in present:
            raise InvalidInput(f"{folder}: {name} is listed in {CHECKSUMS} but missing")
        if name not in listed:
            raise InvalidInput(f"{folder}: {name} is not listed in {CHECKSUMS}")
        if sha256(folder / name) != listed[name]:
            raise InvalidInput(f"{folder}: {name} does not match its checksum in {CHECKSUMS}")


def write_card(folder: Path, record: dict, command: str) -> None:
    """README.md (front matter + what, how, scores), then ``SHA256SUMS`` over every file."""
    s = record["settings"]
    probe = record["probe"]
    levels = sorted(probe["test"])
    def one_pass(lv: str) -> str:
        row = probe["test"][lv]
        return f"{row['one_pass_accuracy']:.3f}" if "one_pass_accuracy" in row else "-"

    rows = "\n".join(
        f"| {lv} | {probe['val'][lv]['accuracy']:.3f} | {probe['test'][lv]['accuracy']:.3f} "
        f"({probe['test'][lv]['queries']}) | {one_pass(lv)} | {probe['test'][lv]['image_only_ceiling']:.3f} |"
        for lv in levels)
    params = record["parameters"]
    text = f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [lame, digits, tiny, qwen2_vl]
---
# Reference digit VLM (tiny Qwen2-VL) for LaME's offline digits benchmark

A `Qwen2VLForConditionalGeneration` of {params['backbone']:,} parameters (text: {s['hidden_size']} wide,
{s['num_layers']} layers; vision: {s['vision_dim']} wide, {s['vision_depth']} blocks, 14-pixel patches),
trained from random initialisation to read scikit-learn's handwritten digits and to answer the digits
benchmark's arithmetic questions step by step, plus a tiny Qwen3 causal LM ({params['decoder']:,}
parameters, `decoder/`) trained on the same answers: the stand-in for LaME's decoder head. It exists so that
LaME can be tested on a backbone that CAN reason when it generates.

## How it was made

```bash
{command}
```

* Data: queries drawn afresh at every step from the benchmark's TRAINING images only (seed
  {s['split_seed']} split: 60 % train / 10 % validation / 30 % test, by image), shifted by up to one pixel
  with contrast jitter; captions ("Which digit is this?"), the level 1-3 questions answered with their
  worked steps (level mix {list(s['level_weights'])}), and {s['text_drill_share']:.0%} text-only arithmetic
  drills. {s.get('direct_answer_share', 0):.0%} of the answers are the number word alone (answered in one
  pass), the rest the worked steps; {s.get('instruction_share', 0):.0%} of the image questions are worded as the
  benchmark's retrieval instructions.
* Backbone: {s['steps']} steps, batch {s['batch_size']}, AdamW, lr {s['lr']} (5 % warm-up, cosine decay), next-token loss on the
  answer. Decoder: {s['decoder_steps']} steps on the same answers (half of them the answer word alone).
* The full log is `pretrain.log`; the settings and scores are in `pretrain.json`.

## Generative probe (greedy; the answer is the number word after "The answer is")

| level | val accuracy | test accuracy (queries) | test, answering in one pass | image-only ceiling |
|---|---|---|---|---|
{rows}

Level 0 asks "Which digit is this?"; levels 1-3 are the benchmark's operations
(`python -m lame_testbed.digit_vlm.probe`). "In one pass": the number word it finds most likely as
its whole answer right after the question (no worked steps), scored over the ten words.

## Files

Hugging Face layout (`config.json`, `model.safetensors`, tokenizer and image-processor files) and
`decoder/`; `{CHECKSUMS}` lists the SHA-256 of every file, and the tests check it.
"""
    (folder / "README.md").write_text(text)
    write_checksums(folder)
