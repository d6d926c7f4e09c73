"""What runs in the model thread: embed one batch of items and count their tokens."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rejected items are answered per request, not logged
            embeddings, skipped = self.model.encode(items, batch_size=self.max_batch_size, on_error="skip",
                                                    return_skipped=True)
        rejected = {s.index: s.reason for s in skipped}
        return BatchResult(embeddings, rejected, self.count_tokens(items))

    def count_tokens(self, items: list) -> list[int]:
        """Per item: its text (instruction and text parts) in the model's tokenizer, plus the image
        tokens the image processor makes of each image. The chat template and latent block are not
        counted: they are the same for every item."""
        texts: list[tuple[int, str]] = []
        counts = [0] * len(items)
        for i, item in enumerate(items):
            parts = [item] if isinstance(item, str) else [item.get("instruction") or "", *item["parts"]]
            for part in parts:
                if isinstance(part, str):
                    if part:
                        texts.append((i, part))
                elif isinstance(part, Image.Image):
                    counts[i] += self._image_tokens(part)
        if texts:
            encoded = self.model.tokenizer([t for _, t in texts], add_special_tokens=False)["input_ids"]
            for (i, _), ids in zip(texts, encoded):
                counts[i] += len(ids)
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
