"""``truncate_prompt_tokens``: cut an item's text so that it fits.

``N >= 1``: the item's counted tokens (those ``usage.prompt_tokens`` counts: instruction, text parts
and image tokens) are cut to at most ``N``; ``-1``: the item is cut to fit the model's
``max_length`` (with the chat template and the latent block). Text is cut from the end: the last
text part first, a part that would keep no token is dropped whole. The instruction and the images
are never cut; an item that is still too long (or empty) after the cut is refused as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..data.items import ItemError


@dataclass(frozen=True)
class Truncate:
    """An item to cut to ``tokens`` (see the module docstring) before it is embedded."""

    item: Any  # str, or {"parts": [str | PIL.Image], "instruction": str | None}
    tokens: int


def truncate_item(engine, item, tokens: int):
    """``item`` with its text cut as ``truncate_prompt_tokens=tokens`` asks; ``engine`` counts tokens."""
    model = engine.model
    for _ in range(4):  # re-tokenising a cut text can differ by a token at the cut: check and cut again
        try:
            excess = (engine.count_tokens([item])[0] - tokens if tokens > 0
                      else model.featurizer.length(item) - model.featurizer.max_length)
        except ItemError:
            return item  # the model says what is wrong with it
        if excess <= 0:
            return item
        cut = _cut(model.tokenizer, item, excess)
        if cut == item:  # no text left to cut
            if tokens > 0:
                raise ItemError(None, f"{excess + tokens} tokens remain once all its text is cut (the instruction "
                                      f"and images are not cut) > truncate_prompt_tokens {tokens}")
            return item  # the model refuses it as too long
        item = cut
    return item


def _cut(tokenizer, item, excess: int):
    """``item`` with about ``excess`` tokens removed from the end of its text."""
    parts = [item] if isinstance(item, str) else list(item["parts"])
    for i in range(len(parts) - 1, -1, -1):
        if excess <= 0:
            break
        part = parts[i]
        if not isinstance(part, str) or not part:
            continue
        ids = tokenizer(part, add_special_tokens=False, return_offsets_mapping=tokenizer.is_fast)
        keep = len(ids["input_ids"]) - excess
        if keep <= 0:
            parts[i], excess = "", excess - len(ids["input_ids"])
            continue
        if tokenizer.is_fast:
            parts[i] = part[: ids["offset_mapping"][keep - 1][1]]
        else:
            parts[i] = tokenizer.decode(ids["input_ids"][:keep])
        excess = 0
    parts = [p for p in parts if isinstance(p, Image.Image) or p]
    if isinstance(item, str):
        return parts[0] if parts else ""
    return {**item, "parts": parts}
