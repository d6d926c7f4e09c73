"""Statistics over training seeds, as every benchmark report gives them."""

from __future__ import annotations

import numpy as np


def seed_stats(values: list[float]) -> dict:
    """Mean, sample standard deviation (ddof 1: with 3 seeds the population one understates the spread;
    0 for one value) and count of ``values``."""
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "n": len(values)}
