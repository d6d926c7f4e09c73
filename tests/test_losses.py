"""Tests for lame.losses: InfoNCE (hand-computed references), diversity, and 2-process gloo equality of
the gathered loss and its gradients with the single-process loss on the global batch. How the terms
combine in training: test_objective.py."""

from __future__ import annotations

import datetime
import math
import os
import random

import pytest
import torch
import torch.multiprocessing as mp
from helpers import HANG_GUARD_S, free_port
from tolerances import float32_sum, float64_sum

from lame.losses import diversity_loss, info_nce

TEMPERATURE = 0.5
# The hand formulas and info_nce both work in float64 here: a few dozen roundings (dot products of <= 3 terms,
# exp and log, sums over <= 9 candidates and 3 queries) relative to the scores' size, |q.p| / t <= 3 / 0.5.
FLOAT64_LOSS = float64_sum(64, scale=3 / TEMPERATURE)


def diversity_tolerance(batch: int, k: int, dim: int) -> float:
    """diversity_loss works in float32 whatever its input: each cosine rounds along a normalisation and a dot
    product (2 * dim terms), the k * k squares (the diagonal's k ones included: scale k * k) are summed, the
    diagonal taken out, the rest divided by k (k - 1) and averaged over the batch."""
    return float32_sum(2 * dim + k * k + k + batch, scale=k * k) / (k * (k - 1))


# ---------------------------------------------------------------------------------------------------
# Independent reference: explicit loops, plain python floats, math.exp / math.log only.
# ---------------------------------------------------------------------------------------------------


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def reference_info_nce(queries, positives, negatives=None, temperature=TEMPERATURE, labels=None):
    """queries: list of B vectors; positives: list of B lists of P vectors; negatives: list of B lists
    of N vectors or None; labels: list of B ints or None.  Follows the module docstring literally."""
    batch = len(queries)
    # Candidate set C: (vector, owner query of a positive or None for a hard negative)
    candidates = []
    for owner, pos_list in enumerate(positives):
        for vec in pos_list:
            candidates.append((vec, owner))
    if negatives is not None:
        for neg_list in negatives:
            for vec in neg_list:
                candidates.append((vec, None))

    total = 0.0
    for i in range(batch):
        denominator = 0.0
        for vec, owner in candidates:
            is_own_positive = owner == i
            false_negative = (
                labels is not None and owner is not None and not is_own_positive and labels[owner] == labels[i]
            )
            if false_negative:
                continue
            denominator += math.exp(_dot(queries[i], vec) / temperature)
        numerator = 0.0
        for vec in positives[i]:
            numerator += math.exp(_dot(queries[i], vec) / temperature)
        total += math.log(denominator) - math.log(numerator)
    return total / batch


def _rand_vectors(rng, n, dim):
    return [[rng.uniform(-1.0, 1.0) for _ in range(dim)] for _ in range(n)]


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------
# info_nce vs. hand computation
# ---------------------------------------------------------------------------------------------------


def test_info_nce_single_positive_in_batch_matches_hand_formula():
    """(a) 3 queries, 2-dim, one positive each, only in-batch negatives; expected value written out."""
    q = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
    p = [[0.8, 0.6], [-0.5, 1.0], [1.0, 1.0]]
    t = TEMPERATURE
    s = [[(q[i][0] * p[j][0] + q[i][1] * p[j][1]) / t for j in range(3)] for i in range(3)]
    expected = (
        (math.log(math.exp(s[0][0]) + math.exp(s[0][1]) + math.exp(s[0][2])) - s[0][0])
        + (math.log(math.exp(s[1][0]) + math.exp(s[1][1]) + math.exp(s[1][2])) - s[1][1])
        + (math.log(math.exp(s[2][0]) + math.exp(s[2][1]) + math.exp(s[2][2])) - s[2][2])
    ) / 3
    # the generic loop reference agrees with the written-out one (sanity of the reference itself)
    assert reference_info_nce(q, [[v] for v in p]) == pytest.approx(expected, abs=FLOAT64_LOSS)

    got_2d = info_nce(_t(q), _t(p), temperature=t, gather=False)
    got_3d = info_nce(_t(q), _t(p).unsqueeze(1), temperature=t, gather=False)
    assert got_2d.item() == pytest.approx(expected, abs=FLOAT64_LOSS)
    assert got_3d.item() == pytest.approx(expected, abs=FLOAT64_LOSS)


def test_info_nce_with_hard_negatives_matches_hand_loop():
    """(b) hard negatives (B, N, D) are candidates for EVERY query, not only their owner."""
    rng = random.Random(1)
    q, p = _rand_vectors(rng, 3, 3), _rand_vectors(rng, 3, 3)
    n = [_rand_vectors(rng, 2, 3) for _ in range(3)]  # (3, 2, 3)
    expected = reference_info_nce(q, [[v] for v in p], n)
    got = info_nce(_t(q), _t(p), _t(n), temperature=TEMPERATURE, gather=False)
    assert got.item() == pytest.approx(expected, abs=FLOAT64_LOSS)

    # Must differ from a version where each query only sees its own hard negatives.
    own_only = 0.0
    for i in range(3):
        cands = [v for v in p] + n[i]
        den = sum(math.exp(_dot(q[i], v) / TEMPERATURE) for v in cands)
        own_only += math.log(den) - _dot(q[i], p[i]) / TEMPERATURE
    own_only /= 3
    assert abs(got.item() - own_only) > 1e-3


def test_info_nce_multiple_positives_matches_documented_formula():
    """(c) P positives per query: L_i = logsumexp_C s_ij - logsumexp_{P(i)} s_ip, all positives are
    candidates for every query."""
    rng = random.Random(2)
    q = _rand_vectors(rng, 3, 3)
    p = [_rand_vectors(rng, 2, 3) for _ in range(3)]  # (3, 2, 3)
    n = [_rand_vectors(rng, 1, 3) for _ in range(3)]  # (3, 1, 3)
    expected_no_neg = reference_info_nce(q, p)
    expected_neg = reference_info_nce(q, p, n)
    got_no_neg = info_nce(_t(q), _t(p), temperature=TEMPERATURE, gather=False)
    got_neg = info_nce(_t(q), _t(p), _t(n), temperature=TEMPERATURE, gather=False)
    assert got_no_neg.item() == pytest.approx(expected_no_neg, abs=FLOAT64_LOSS)
    assert got_neg.item() == pytest.approx(expected_neg, abs=FLOAT64_LOSS)

    # Not the same as averaging a separate single-positive InfoNCE per positive (a common alternative).
    per_positive = 0.0
    all_pos = [v for pl in p for v in pl]
    for i in range(3):
        den = sum(math.exp(_dot(q[i], v) / TEMPERATURE) for v in all_pos)
        for v in p[i]:
            per_positive += (math.log(den) - _dot(q[i], v) / TEMPERATURE) / (3 * 2)
    assert abs(got_no_neg.item() - per_positive) > 1e-3


def test_info_nce_labels_mask_other_queries_positives_with_same_label():
    """(d) query 0 and query 2 share a label: each one's positives leave the other's denominator,
    while its own positives (and hard negatives) stay."""
    rng = random.Random(3)
    q = _rand_vectors(rng, 3, 3)
    p = [_rand_vectors(rng, 2, 3) for _ in range(3)]
    n = [_rand_vectors(rng, 1, 3) for _ in range(3)]
    labels = [7, 4, 7]

    # Explicit expected value for query 0: denominator = own positives + query 1's positives + all negs.
    t = TEMPERATURE
    def e(a, b):
        return math.exp(_dot(a, b) / t)
    den0 = sum(e(q[0], v) for v in p[0]) + sum(e(q[0], v) for v in p[1]) + sum(e(q[0], nl[0]) for nl in n)
    num0 = sum(e(q[0], v) for v in p[0])
    den1 = sum(e(q[1], v) for pl in p for v in pl) + sum(e(q[1], nl[0]) for nl in n)  # unique label
    num1 = sum(e(q[1], v) for v in p[1])
    den2 = sum(e(q[2], v) for v in p[2]) + sum(e(q[2], v) for v in p[1]) + sum(e(q[2], nl[0]) for nl in n)
    num2 = sum(e(q[2], v) for v in p[2])
    expected = (math.log(den0 / num0) + math.log(den1 / num1) + math.log(den2 / num2)) / 3
    assert reference_info_nce(q, p, n, labels=labels) == pytest.approx(expected, abs=FLOAT64_LOSS)

    got = info_nce(_t(q), _t(p), _t(n), temperature=t, labels=torch.tensor(labels), gather=False)
    assert got.item() == pytest.approx(expected, abs=FLOAT64_LOSS)

    # Masking has an effect (lower loss than unmasked) and all-distinct labels mask nothing.
    unmasked = info_nce(_t(q), _t(p), _t(n), temperature=t, gather=False)
    assert got.item() < unmasked.item() - 1e-3
    distinct = info_nce(_t(q), _t(p), _t(n), temperature=t, labels=torch.tensor([0, 1, 2]), gather=False)
    assert distinct.item() == pytest.approx(unmasked.item(), abs=FLOAT64_LOSS)

    # All queries sharing one label: only own positives + hard negatives remain for each query.
    same = info_nce(_t(q), _t(p), _t(n), temperature=t, labels=torch.tensor([5, 5, 5]), gather=False)
    exp_same = 0.0
    for i in range(3):
        num = sum(e(q[i], v) for v in p[i])
        exp_same += math.log((num + sum(e(q[i], nl[0]) for nl in n)) / num) / 3
    assert same.item() == pytest.approx(exp_same, abs=FLOAT64_LOSS)


def test_symmetric_info_nce_matches_hand_formula():
    """Both directions, averaged: each query ranks every candidate (L_i) and each positive ranks the
    queries (T_p); queries sharing the positive's label leave its denominator; hard negatives only
    enter the first direction."""
    rng = random.Random(5)
    q = _rand_vectors(rng, 3, 3)
    p = [_rand_vectors(rng, 2, 3) for _ in range(3)]
    n = [_rand_vectors(rng, 1, 3) for _ in range(3)]
    labels = [7, 4, 7]
    t = TEMPERATURE
    forward = reference_info_nce(q, p, n, labels=labels)
    backward = 0.0
    for owner in range(3):
        for v in p[owner]:
            rivals = [j for j in range(3) if j == owner or labels[j] != labels[owner]]
            den = sum(math.exp(_dot(v, q[j]) / t) for j in rivals)
            backward += (math.log(den) - _dot(v, q[owner]) / t) / 6
    expected = (forward + backward) / 2
    got = info_nce(_t(q), _t(p), _t(n), temperature=t, labels=torch.tensor(labels), gather=False, symmetric=True)
    assert got.item() == pytest.approx(expected, abs=FLOAT64_LOSS)
    # without labels nothing is masked in the reverse direction either
    unmasked_backward = sum(
        (math.log(sum(math.exp(_dot(v, qj) / t) for qj in q)) - _dot(v, q[o]) / t) / 6 for o in range(3) for v in p[o])
    got = info_nce(_t(q), _t(p), _t(n), temperature=t, gather=False, symmetric=True)
    assert got.item() == pytest.approx((reference_info_nce(q, p, n) + unmasked_backward) / 2, abs=FLOAT64_LOSS)
    assert info_nce(_t(q), _t(p), _t(n), temperature=t, gather=False).item() != pytest.approx(got.item(),
                                                                                             abs=FLOAT64_LOSS)


def test_info_nce_without_process_group_gather_is_noop():
    rng = random.Random(4)
    q, p = _t(_rand_vectors(rng, 4, 3)), _t([_rand_vectors(rng, 2, 3) for _ in range(4)])
    a = info_nce(q, p, temperature=TEMPERATURE, gather=True)
    b = info_nce(q, p, temperature=TEMPERATURE, gather=False)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------
# diversity_loss
# ---------------------------------------------------------------------------------------------------


def test_diversity_loss_collapsed_states_give_one():
    base = torch.tensor([0.3, -1.2, 0.5, 2.0])
    # same direction, different positive/negative scales: cos^2 = 1 everywhere
    states = torch.stack([base, 2.5 * base, -0.7 * base, 10.0 * base]).unsqueeze(0).repeat(2, 1, 1)
    assert diversity_loss(states).item() == pytest.approx(1.0, abs=diversity_tolerance(2, 4, 4))


def test_diversity_loss_orthogonal_states_give_zero():
    states = torch.diag(torch.tensor([1.0, 3.0, 0.2, 5.0]))[:3].unsqueeze(0)  # (1, 3, 4), orthogonal rows
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))
    batch = torch.cat([states, states @ rotation])  # still mutually orthogonal after a rotation
    assert diversity_loss(batch).item() == pytest.approx(0.0, abs=diversity_tolerance(2, 3, 4))


def test_diversity_loss_matches_hand_loop_on_random_example():
    rng = random.Random(5)
    batch, k, dim = 3, 4, 5
    states = [[[rng.gauss(0, 1) for _ in range(dim)] for _ in range(k)] for _ in range(batch)]
    expected = 0.0
    for b in range(batch):
        units = []
        for h in states[b]:
            norm = math.sqrt(_dot(h, h))
            units.append([x / norm for x in h])
        acc = 0.0
        for i in range(k):
            for j in range(k):
                if i != j:
                    acc += _dot(units[i], units[j]) ** 2
        expected += acc / (k * (k - 1)) / batch
    got = diversity_loss(torch.tensor(states, dtype=torch.float64))  # computed in float32 all the same
    assert got.item() == pytest.approx(expected, abs=diversity_tolerance(batch, k, dim))
    assert 0.0 < got.item() < 1.0


def test_diversity_loss_single_state_is_zero():
    states = torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(0))
    got = diversity_loss(states)
    assert got.shape == ()
    assert got.item() == 0.0


# ---------------------------------------------------------------------------------------------------
# Distributed: 2 gloo processes vs. single process on the global batch
# ---------------------------------------------------------------------------------------------------

WORLD = 2
GLOBAL_B, DIM, NUM_POS, NUM_NEG = 8, 6, 2, 1
DIST_TEMPERATURE = 0.1


def _global_batch():
    g = torch.Generator().manual_seed(1234)
    queries = torch.randn(GLOBAL_B, DIM, generator=g)
    positives = torch.randn(GLOBAL_B, NUM_POS, DIM, generator=g)
    negatives = torch.randn(GLOBAL_B, NUM_NEG, DIM, generator=g)
    # repeats inside a rank (rows 0,1) and across ranks (rows 2,5 and 3,7)
    labels = torch.tensor([0, 0, 1, 2, 3, 1, 4, 2])
    return queries, positives, negatives, labels


def _dist_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """Top-level so it can be pickled by the 'spawn' start method."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=HANG_GUARD_S))
        try:
            queries, positives, negatives, labels = _global_batch()
            rows = slice(rank * GLOBAL_B // world, (rank + 1) * GLOBAL_B // world)
            q = queries[rows].clone().requires_grad_(True)
            p = positives[rows].clone().requires_grad_(True)
            n = negatives[rows].clone().requires_grad_(True)
            loss = info_nce(q, p, n, temperature=DIST_TEMPERATURE, labels=labels[rows].clone(), gather=True)
            loss.backward()
            local_only = info_nce(q.detach(), p.detach(), n.detach(), temperature=DIST_TEMPERATURE,
                                  labels=labels[rows].clone(), gather=False)
            torch.save({"loss": loss.detach(), "local_only": local_only, "q": q.grad, "p": p.grad, "n": n.grad},
                       os.path.join(out_dir, f"rank{rank}.pt"))
        finally:
            dist.destroy_process_group()
    except BaseException as exc:  # report to the parent instead of hanging it
        with open(os.path.join(out_dir, f"rank{rank}.err"), "w") as f:
            f.write(repr(exc))
        raise


def test_info_nce_gathered_two_gloo_processes_match_single_process(tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo not available")

    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_dist_worker, args=(r, WORLD, port, str(tmp_path))) for r in range(WORLD)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(timeout=HANG_GUARD_S)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
    errors = {r: (tmp_path / f"rank{r}.err").read_text() for r in range(WORLD) if (tmp_path / f"rank{r}.err").exists()}
    assert not errors, f"worker errors: {errors}"
    assert all(proc.exitcode == 0 for proc in procs), [proc.exitcode for proc in procs]

    # single-process reference on the global batch (no process group -> gather is a no-op)
    assert not dist.is_initialized()
    queries, positives, negatives, labels = _global_batch()
    q = queries.clone().requires_grad_(True)
    p = positives.clone().requires_grad_(True)
    n = negatives.clone().requires_grad_(True)
    full = info_nce(q, p, n, temperature=DIST_TEMPERATURE, labels=labels, gather=True)
    full.backward()
    # float32 on both sides, summed in another order (each rank its share, then the all-reduce): a chain of the
    # DIM-term scores, the logsumexp over all candidates and the mean over the queries, relative to the scores'
    # size (the loss) or to the vectors' size over the temperature (the gradients)
    terms = DIM + GLOBAL_B * (NUM_POS + NUM_NEG) + GLOBAL_B
    vectors = torch.cat([queries, positives.flatten(0, 1), negatives.flatten(0, 1)])
    loss_bound = float32_sum(terms, scale=float((queries @ vectors.T).abs().max()) / DIST_TEMPERATURE)
    grad_bound = float32_sum(terms, scale=float(vectors.abs().max()) / DIST_TEMPERATURE)

    per_rank = GLOBAL_B // WORLD
    for r in range(WORLD):
        res = torch.load(tmp_path / f"rank{r}.pt")
        rows = slice(r * per_rank, (r + 1) * per_rank)
        torch.testing.assert_close(res["loss"], full.detach(), rtol=0, atol=loss_bound, msg=lambda m: f"rank {r}: {m}")
        # the test is sensitive: the rank-local loss (no gather) is different from the global one
        assert not torch.allclose(res["local_only"], full.detach(), rtol=0, atol=loss_bound)
        for name, grad in (("q", q.grad), ("p", p.grad), ("n", n.grad)):
            assert res[name] is not None, (r, name)
            assert res[name].abs().sum() > 0, (r, name)
            torch.testing.assert_close(res[name], grad[rows], rtol=0, atol=grad_bound,
                                       msg=lambda m: f"rank {r}, gradient of {name}: {m}")
