"""The reference digit VLM: a tiny Qwen2-VL that reads digits and reasons step by step when it generates.

Shipped in ``reference/`` (weights, tokenizer, image processor, decoder head, model card, log and
``SHA256SUMS``); rebuilt by ``python -m lame_testbed.digit_vlm.pretrain``; checked by
``python -m lame_testbed.digit_vlm.probe``.
"""

from __future__ import annotations

from pathlib import Path

from lame.errors import MissingPath

REFERENCE_DIR = Path(__file__).parent / "reference"


def reference_backbone(verify: bool = True) -> Path:
    """The folder of the shipped reference VLM (its checksums verified first)."""
    from .card import verify_checksums

    if not (REFERENCE_DIR / "config.json").is_file():
        raise MissingPath(f"the reference VLM is missing from {REFERENCE_DIR}; rebuild it with "
                          "python -m lame_testbed.digit_vlm.pretrain " + str(REFERENCE_DIR))
    if verify:
        verify_checksums(REFERENCE_DIR)
    return REFERENCE_DIR
