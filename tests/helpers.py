"""Small shared test inputs."""

import numpy as np
from PIL import Image


def noise(size: tuple[int, int], seed: int, high: int = 256) -> Image.Image:
    """A (width, height) RGB image of seeded uniform noise in [0, high)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, high, (size[1], size[0], 3), dtype=np.uint8), "RGB")
