"""Plain helpers shared by the test files (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import torch
from PIL import Image

WORDS = "zero one two three four five six seven eight nine".split()
# How long a test waits for a child process or a collective before calling it hung. Only a hang guard:
# far above what the slowest of them takes on a busy 2-core machine (a few minutes), so that load never
# fails a test, while a deadlock still ends in a failure rather than in the CI job's own time limit.
HANG_GUARD_S = 1200
SMALL_DIGITS = {"train_queries_per_level": 300, "test_queries_per_level": 40, "test_text_queries_per_level": 10}


def noise(size: tuple[int, int], seed: int, high: int = 256) -> Image.Image:
    """A (width, height) RGB image of seeded uniform noise in [0, high)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, high, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> dict:
    """This process's environment for a child run: no inherited rank variables, one thread, no GPU."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    return env


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def sum_record(i: int) -> dict:
    """Training record i of a toy task: "a plus b" -> the word of (a + b) mod 10."""
    a, b = i % 10, (i * 7 + 3) % 10
    answer = WORDS[(a + b) % 10]
    return {"id": str(i), "query": {"text": f"{WORDS[a]} plus {WORDS[b]}", "instruction": "add mod ten"},
            "positive": answer, "negatives": [WORDS[(a + b + 1) % 10]], "answer": answer,
            "rationale": f"{WORDS[a]} plus {WORDS[b]} is {answer}", "label": (a + b) % 10}


def sum_batch(model):
    """A TrainBatch of 5 queries, 2 positives and 1 hard negative each; 3 decoder targets; queries 0
    and 2 share a label (masked false negatives)."""
    from lame.training.steps import TrainBatch

    f = model.featurizer
    n = 5
    queries = [f({"text": f"{WORDS[i]} plus {WORDS[(3 * i + 1) % 10]}", "instruction": "add mod ten"})
               for i in range(n)]
    positives = [f(f"{WORDS[(i + j) % 10]} is the answer" if j else WORDS[(4 * i + 1) % 10])
                 for i in range(n) for j in range(2)]
    negatives = [f(f"the digit {WORDS[(i + 5) % 10]}") for i in range(n)]
    targets = ["seven", None, "the answer is three because", "nine", None]
    labels = torch.tensor([7, 3, 7, 1, 9])
    return TrainBatch(queries, positives, negatives, targets, labels)


def gradients(model, batch, weights, chunk: int | None = None):
    """(StepLosses, {parameter name: gradient}) of one compute_gradients call; leaves .grad empty."""
    from lame.training.steps import compute_gradients

    model.zero_grad(set_to_none=True)
    losses = compute_gradients(model, batch, weights, chunk)
    grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
             for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return losses, grads


def build_tiny_baseline(variant: str, backbone_type: str = "qwen2_vl", seed: int = 0, **overrides):
    """A tiny random baseline: ``discriminative`` (LaME with K=0), ``sequential`` or ``cot``."""
    from lame import build_tiny_model
    from lame.modeling.baselines import BASELINE_DEFAULTS

    values = BASELINE_DEFAULTS | overrides
    if variant != "discriminative":
        values["variant"] = variant
    return build_tiny_model(backbone_type, seed=seed, **values)
