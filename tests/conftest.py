"""Fixtures shared by the test files: built once per session, read-only for the tests that use them.
Plain helpers (WORDS, noise images, JSONL, free ports, toy batches) are in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SMALL_DIGITS


@pytest.fixture(scope="session")
def saved_tiny_model(tmp_path_factory) -> Path:
    """A tiny random Qwen2-VL-class LaME model (seed 0, default config) saved in a folder."""
    from lame import build_tiny_model

    folder = tmp_path_factory.mktemp("tiny-model") / "model"
    build_tiny_model("qwen2_vl", seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def train_model():
    """A tiny model in training mode with K = 3 and a decoder head, for gradient checks (its weights
    never change; tests leave .grad empty)."""
    from lame import LaMEConfig, build_tiny_model

    config = LaMEConfig(num_reason_tokens=3, temperature=0.05, max_length=512)
    return build_tiny_model("qwen2_vl", seed=1, config=config).train()


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory) -> Path:
    """The digits benchmark (seed 3, small counts): train.jsonl, test/ and images/."""
    from lame_testbed.digits import generate_digits_benchmark

    out = tmp_path_factory.mktemp("digits")
    generate_digits_benchmark(out, seed=3, **SMALL_DIGITS)
    return out
