"""What runs in the model thread: embed one batch of items and count their tokens."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..data.items import ItemError
from .truncation import Truncate, truncate_item


@dataclass(frozen=True)
class ReasonTokens:
    """An item (or a :class:`Truncate` of one) to embed with ``k`` reason tokens instead of the model's K."""

    item: Any
    k: int


@dataclass
class BatchResult:
    embeddings: np.ndarray  # (n, d); rows of rejected items are NaN
    rejected: dict[int, str]  # item position -> why the model refused it
    tokens: list[int]  # per item, see :meth:`Engine.count_tokens`


class Engine:
    def __init__(self, model, max_batch_size: int):
        self.model = model
        self.max_batch_size = max_batch_size
        self.dim = model.embedding_dim

    def __call__(self, items: list) -> BatchResult:
        """Embeds ``items`` (each a str, an item dict, or a :class:`Truncate` of one; any of them in a
        :class:`ReasonTokens`): one model call per number of reason tokens."""
        rejected: dict[int, str] = {}
        ks = [item.k if isinstance(item, ReasonTokens) else None for item in items]
        items = [item.item if isinstance(item, ReasonTokens) else item for item in items]
        for i, item in enumerate(items):
            if isinstance(item, Truncate):
                try:
                    items[i] = truncate_item(self, item.item, item.tokens)
                except ItemError as exc:
                    rejected[i], items[i] = exc.reason, ""
        embeddings = np.full((len(items), self.dim), np.nan, dtype=np.float32)
        for k in dict.fromkeys(ks):
            rows = [i for i, item_k in enumerate(ks) if item_k == k]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # rejected items are answered per request, not logged
                embeddings[rows], skipped = self.model.encode([items[i] for i in rows], batch_size=self.max_batch_size,
                                                              on_error="skip", return_skipped=True,
                                                              num_reason_tokens=k)
            rejected = {rows[s.index]: s.reason for s in skipped} | rejected
        return BatchResult(embeddings, rejected, self.count_tokens(items, skip=rejected))

    def count_tokens(self, items: list, skip=()) -> list[int]:
        """Per item: its text (instruction and text parts) in the model's tokenizer, plus the image
        tokens the image processor makes of each image. The chat template and latent block are not
        counted: they are the same for every item. Items in ``skip`` (refused ones) count 0."""
        texts: list[tuple[int, str]] = []
        counts = [0] * len(items)
        for i, item in enumerate(items):
            if i in skip:
                continue
            parts = [item] if isinstance(item, str) else [item.get("instruction") or "", *item["parts"]]
            for part in parts:
                if isinstance(part, str):
                    if part:
                        texts.append((i, part))
                elif isinstance(part, Image.Image):
                    counts[i] += self._image_tokens(part)
        if texts:
            for (i, _), n in zip(texts, self._token_counts([t for _, t in texts])):
                counts[i] += n
        return counts

    def _token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text: one tokenizer call, or one per text where the batched call fails
        (a text the model embedded can always be tokenised alone; any other counts 0)."""
        tokenizer = self.model.tokenizer
        try:
            return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        except Exception:  # noqa: BLE001  (each text on its own: one text never fails the others)
            counts = []
            for text in texts:
                try:
                    counts.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
                except Exception:  # noqa: BLE001
                    counts.append(0)
            return counts

    def _image_tokens(self, image: Image.Image) -> int:
        processor = self.model.image_processor
        patches = getattr(processor, "get_number_of_image_patches", None)
        if patches is None:
            return 0
        try:
            return patches(image.height, image.width) // getattr(processor, "merge_size", 1) ** 2
        except ValueError:  # an aspect ratio the processor refuses; the model rejects the item too
            return 0
