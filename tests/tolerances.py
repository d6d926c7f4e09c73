"""Tolerances of the tests' numeric comparisons, each derived from how the compared numbers are computed.

Rounding. A float32 operation is correct to half a unit in the last place: relative error at most eps / 2,
eps = FLOAT32_EPS = 2**-23 ~ 1.2e-7 (float64: 2**-52 ~ 2.2e-16). A sum of n terms rounds n - 1 times, each
time by at most eps / 2 of a partial sum no larger than sum|terms|, so the same sum taken in two orders
(another BLAS kernel or blocking, another batch shape or thread count, the partial sums of two processes or
of GradCache chunks) differs by at most n * eps * sum|terms| (Higham, Accuracy and Stability of Numerical
Algorithms, section 4.2). That needs every rounding to err the same way; rounding errors of mean zero that
are independent add like a random walk, and then the difference stays below LAMBDA * sqrt(n) * eps *
sum|terms| but with probability under 2n * exp(-LAMBDA**2 / 2), 3e-10 for n <= 10**4 (Higham and Mary,
"A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 41, 2019). ``float32_sum``
is the smaller of the two. A chain of sums (a forward pass) hands each sum's error on to the next; where no
step magnifies it, the chain is bounded by ``float32_sum`` of all the terms along it.

Scale. The error is relative to the size of the terms summed, not to the result: an entry that is small
because large terms cancelled still carries their error. So computed tensors are compared entry by entry
with an absolute bound, the tolerance times the tensors' largest |entry| (``scaled``), and rtol = 0, as
test_training_distributed.py compares gradients. Unit vectors have scale 1: their bound is absolute.

Exact. Where both sides run the same arithmetic on the same inputs (a reloaded model, a resumed run, the
same batch reached another way) the comparison is exact (assert_array_equal, torch.equal, assert_close
with rtol=0 and atol=0): CPU kernels give the same bits for the same shapes and thread count.

Checked with the whole suite on an Intel Xeon with AVX-512, with its own kernels and with the AVX2 kernels
a CPU without AVX-512 (AMD EPYC before Zen 4) runs, 1 and 2 threads: the largest rounding difference
seen is 0.18 of its bound (GradCache gradients, AVX2). To run the AVX2 path on an AVX-512 machine:
MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 (without the last, oneDNN
still sees the real CPU and bfloat16 attention fails in pack_vnni2 on an AVX-512-BF16 host, which no
real AVX2 CPU does).
"""

from __future__ import annotations

import math

import torch

FLOAT32_EPS = torch.finfo(torch.float32).eps  # 2**-23
FLOAT64_EPS = torch.finfo(torch.float64).eps  # 2**-52
LAMBDA = 8  # standard deviations of the random-walk bound (see the module docstring)


def float32_sum(n: int, scale: float = 1.0, eps: float = FLOAT32_EPS) -> float:
    """How far two computations of one sum (or chain of sums) of ``n`` terms in float32 (or ``eps``'s
    format) may be apart, ``scale`` bounding sum|terms|: min(n, LAMBDA * sqrt(n)) * eps * scale."""
    return min(n, LAMBDA * math.sqrt(n)) * eps * scale


def float64_sum(n: int, scale: float = 1.0) -> float:
    """``float32_sum`` for float64 arithmetic (Python floats, float64 tensors)."""
    return float32_sum(n, scale, FLOAT64_EPS)


def scaled(tolerance: float, *values) -> float:
    """An absolute bound: ``tolerance`` times the largest |entry| of ``values`` (tensors, arrays, numbers),
    the scale the rounding errors of computing them are relative to."""
    return tolerance * max(float(torch.as_tensor(v, dtype=torch.float64).abs().max()) for v in values)


# The tiny test models (lame.modeling.tiny): 2 text layers of hidden size 64, MLP size 128, head size 16,
# and items of at most 256 positions in the tests (the longest, in test_packing.py, has 116). One output
# entry of a forward pass is at the end of a chain of, per layer, four weight matmuls (at most 128 terms
# each), the attention scores (16 terms) and the softmax's sum and weighted sum over the positions (256).
TINY_FORWARD_TERMS = 2 * (4 * 128 + 16 + 2 * 256)
# An output of a tiny model computed twice in different ways (another batch, other padding, packed rows,
# another kernel or thread count): relative to the output's scale (unit embeddings: absolute). ~4.3e-5.
FORWARD = float32_sum(TINY_FORWARD_TERMS)
# A test training batch has at most 1024 positions (helpers.sum_batch: 379); a weight's gradient sums
# over all of them, each at the end of the forward chain and of the backward chain that retraces it.
TRAIN_BATCH_POSITIONS = 1024
# Gradients (and the losses they come from) of one training batch computed in two ways (GradCache
# chunks, two processes, packed rows): relative to the scale of the tensor compared. ~6.9e-5.
GRADIENT = float32_sum(2 * TINY_FORWARD_TERMS + TRAIN_BATCH_POSITIONS)
# The norm of a unit vector of the tiny models' 64 dimensions, normalised and measured in float32: 1 up
# to two sums of 64 squares (the normalisation's and the measurement's), a square root and a division.
# ~1.1e-5.
UNIT_NORM = float32_sum(2 * 64 + 2)

# Retrieval scores (hit@k, MRR, nDCG and their averages) are float64 arithmetic on ranks: two
# computations from the same rankings (the evaluation run again, a JSON round trip) agree up to the
# rounding of averaging at most 1024 per-query values. Where a score is checked against a fraction
# written out by hand, pytest.approx's default (relative 1e-6) stands: far above float64 rounding, far
# below a score's step of 1 / queries.
SCORE = float64_sum(1024)


def rounded_to_decimals(decimals: int) -> float:
    """How far a number written with ``decimals`` decimals may be from the number itself: half a unit of
    the last decimal (widened by the float64 rounding of reading the digits back)."""
    return 0.5 * 10.0**-decimals * (1 + 4 * FLOAT64_EPS)


def rounded_to_digits(value: float, digits: int) -> float:
    """How far ``value``, published with ``digits`` significant digits, may be from the number it stands
    for."""
    return rounded_to_decimals(digits - 1 - math.floor(math.log10(abs(value))))
