"""The numbers of reason tokens an elastic model trains a step with (config ``elastic_k``).

Each step, the queries use the first k_q of the K reason tokens and the documents (positives and hard
negatives) the first k_d, both drawn uniformly from ``elastic_k``, independently, so that queries and
documents of different k learn to share one embedding space (:mod:`lame.modeling.elastic`). A draw is a
function of the run's seed and the step number alone: every process draws the same k (one shape for
all, as sharded training needs) and a resumed run draws what the uninterrupted one did.
"""

from __future__ import annotations

import numpy as np

TAG = 0x1A7E  # keeps these draws apart from any other stream seeded by (seed, step)


def draw_reason_tokens(choices: list[int], seed: int, step: int) -> tuple[int, int]:
    """``(k for the queries, k for the documents)`` of training step ``step`` (1-based)."""
    if len(choices) == 1:
        return choices[0], choices[0]
    rng = np.random.default_rng([TAG, seed, step])
    query, document = rng.integers(0, len(choices), size=2)
    return choices[int(query)], choices[int(document)]
