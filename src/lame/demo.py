"""`lame demo`: the whole inference path of a LaME model on real images, on a CPU, in seconds.

It builds a tiny, randomly initialised LaME model on the real Qwen2-VL classes, embeds handwritten
digit images (scikit-learn's bundled set) and number words, searches, saves and reloads the model,
and decodes the reason tokens. The weights are random, so retrieval is at chance level here.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from .modeling import LaMEModel, build_tiny_model

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

def digit_images(count: int, seed: int = 0) -> tuple[list[Image.Image], np.ndarray]:
    """``count`` real 8x8 handwritten digits from scikit-learn, as RGB images, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.images))[:count]
    images = [Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).convert("RGB") for i in order]
    return images, digits.target[order]


def run_demo(output: Path, backbone_type: str = "qwen2_vl", num_images: int = 32) -> dict:
    start = time.perf_counter()
    model = build_tiny_model(backbone_type, seed=0)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: tiny {backbone_type} LaME, K={model.config.num_reason_tokens}, {params / 1e6:.2f}M parameters")

    images, labels = digit_images(num_images)
    queries = [{"image": img, "instruction": "Find the number word for this digit."} for img in images]
    query_emb = model.encode(queries, batch_size=16, show_progress_bar=True)
    word_emb = model.encode(WORDS)
    hits = (model.similarity(query_emb, word_emb).argmax(1) == labels).mean()
    print(f"image -> word Hit@1 over {num_images} digits: {hits:.2f} (chance 0.10; the weights are random)")

    model.save_pretrained(output)
    reloaded = LaMEModel.from_pretrained(output)
    same = np.array_equal(reloaded.encode(queries[:4]), query_emb[:4])
    print(f"saved to {output}; reloaded model gives identical embeddings: {same}")

    decoded = model.decode_latents(queries[:2], max_new_tokens=8)
    for label, text in zip(labels[:2], decoded):
        print(f"reason tokens of a '{WORDS[label]}' image decode to: {text!r}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return {"hit_at_1": float(hits), "reload_identical": bool(same), "decoded": decoded}
