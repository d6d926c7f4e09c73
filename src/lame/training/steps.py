"""One optimisation step's gradients: the whole batch at once, or GradCache chunks.

GradCache (Gao et al., 2021) decouples the contrastive batch size from memory: embed every item
without a graph, compute the contrastive loss on those embeddings as leaves, then re-run each chunk
WITH a graph and backpropagate ``<embedding, cached gradient>``. The decoder and diversity losses
are sums over queries (and decoder tokens), so each query chunk adds its own share exactly; nothing
depends on the number of devices, and one device gets the same gradients as the full batch.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..data.featurize import Features
from ..losses import collective_device, diversity_loss, info_nce, world_size


@dataclass
class TrainBatch:
    queries: list[Features]
    positives: list[Features]  # query i's j-th positive at i * P + j
    negatives: list[Features]  # query i's j-th hard negative at i * N + j
    targets: list[str | None]  # decoder target per query (None: no reconstruction for that query)
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.queries)


@dataclass
class LossWeights:
    contrastive: float = 1.0
    reconstruction: float = 1.0
    diversity: float = 0.0


@dataclass
class StepLosses:
    contrastive: float
    reconstruction: float
    diversity: float
    total: float


def compute_gradients(model, batch: TrainBatch, weights: LossWeights, chunk_size: int | None = None,
                      autocast=None, backward=None, lockstep: bool = False) -> StepLosses:
    """Accumulates into ``.grad`` the gradients of this process's share of the LaME loss.

    The contrastive term is the loss of the GLOBAL batch (gathered) times the number of processes,
    so that averaging gradients over processes gives the global gradient (see :mod:`lame.losses`).
    ``backward(loss, last)`` runs each backward pass through the model (default ``loss.backward()``;
    DeepSpeed's engine needs its own); ``last`` marks the step's final one.

    ``lockstep``: every process runs the same sequence of forward and backward passes through the
    same modules, as sharded parameters need (each pass is a collective under FSDP and ZeRO). Batches
    differ in size between processes once samples are skipped, and in which queries have decoder
    targets; the missing passes run on this process's own data with weight zero.
    """
    autocast = autocast or _no_autocast
    backward = backward or _plain_backward
    sizes = [len(batch.queries), len(batch.positives), len(batch.negatives)]
    if lockstep:
        sizes = global_max(sizes)
    if chunk_size is None or chunk_size >= max(*sizes, 1):
        return _full_batch(model, batch, weights, autocast, backward, lockstep)
    return _grad_cache(model, batch, weights, chunk_size, autocast, backward, lockstep)


def _plain_backward(loss: torch.Tensor, last: bool) -> None:
    loss.backward()


@contextmanager
def _no_autocast():
    yield


def _reshape(embeddings: torch.Tensor, batch: int) -> torch.Tensor | None:
    return embeddings.reshape(batch, -1, embeddings.shape[-1]) if embeddings.shape[0] else None


@dataclass
class Normalizers:
    """Global (all-process) counts that turn this process's sums into shares of the global means.

    Each process's term is ``sum_local * world / count_global``; averaging gradients over the
    processes then gives the gradient of ``sum_global / count_global``, the single-process loss.
    """

    decoder_tokens: int
    lm_tokens: int
    queries: int
    world: int

    @classmethod
    def of(cls, model, batch: TrainBatch) -> "Normalizers":
        decoder_tokens = 0
        if model.decoder_head is not None:
            decoder_tokens = model.decoder_head.count_target_tokens([t for t in batch.targets if t])
        lm_tokens = sum(getattr(f, "lm_tokens", 0) for f in batch.queries)
        counts = global_sum([decoder_tokens, lm_tokens, len(batch.queries)])
        return cls(int(counts[0]), int(counts[1]), int(counts[2]), world_size())


def global_sum(values: list[float]) -> list[float]:
    """Sums numbers over all processes (identity on one process)."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=collective_device())
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def global_max(values: list[int]) -> list[int]:
    """Element-wise maximum over all processes (identity on one process)."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device=collective_device())
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return [int(v) for v in tensor.tolist()]


def _side_terms(model, out, batch: TrainBatch, rows: slice, weights: LossWeights, norm: Normalizers,
                lockstep: bool = False):
    """Decoder and diversity terms of the queries in ``rows``, as shares of the global batch means
    (already multiplied by the number of processes, like the contrastive term). In ``lockstep`` the
    decoder runs even for rows without a target (weight zero), because other processes run it."""
    zero = out.embeddings.new_zeros(())
    reconstruction = diversity = zero
    offset = rows.start
    with_target = [i for i in range(out.embeddings.shape[0]) if batch.targets[offset + i]]
    if weights.reconstruction and model.decoder_head is not None and norm.decoder_tokens:
        states = out.decoder_states(model.config.decoder_reads)
        if with_target:
            total, _ = model.decoder_head.loss_terms(states[with_target],
                                                     [batch.targets[offset + i] for i in with_target])
            reconstruction = total * norm.world / norm.decoder_tokens
        elif lockstep:
            reconstruction = model.decoder_head.loss_terms(states[:1], [""])[0] * 0.0
    if weights.reconstruction and out.lm_loss is not None and norm.lm_tokens:
        # explicit-CoT baseline: summed LM loss on its rationales
        reconstruction = reconstruction + out.lm_loss * norm.world / norm.lm_tokens
    if weights.diversity and out.reason_states.shape[1] > 1:
        diversity = diversity_loss(out.reason_states) * out.embeddings.shape[0] * norm.world / norm.queries
    return reconstruction, diversity


def _full_batch(model, batch: TrainBatch, weights: LossWeights, autocast, backward, lockstep: bool) -> StepLosses:
    size = len(batch)
    with autocast():
        q = model(model.collate(batch.queries))
        pos = model(model.collate(batch.positives)).embeddings
        neg = model(model.collate(batch.negatives)).embeddings if batch.negatives else None
        contrastive = info_nce(q.embeddings, _reshape(pos, size), _reshape(neg, size) if neg is not None else None,
                               temperature=model.config.temperature, labels=batch.labels)
        reconstruction, diversity = _side_terms(model, q, batch, slice(0, size), weights, Normalizers.of(model, batch),
                                                lockstep)
        total = (weights.contrastive * contrastive * world_size() + weights.reconstruction * reconstruction
                 + weights.diversity * diversity)
    backward(total, True)
    return _losses(contrastive, reconstruction, diversity, weights)


def _losses(contrastive, reconstruction, diversity, weights: LossWeights) -> StepLosses:
    """Global values for logging: the side terms are this process's world-scaled shares."""
    c, r, d = (float(x.detach()) if torch.is_tensor(x) else float(x) for x in (contrastive, reconstruction, diversity))
    world = world_size()
    r, d = (v / world for v in global_sum([r, d]))
    return StepLosses(c, r, d, weights.contrastive * c + weights.reconstruction * r + weights.diversity * d)


class _RandomState:
    """Captures the RNG state before a chunk's first pass so the second pass replays it (dropout)."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    @contextmanager
    def replay(self):
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if self.cuda else []):
            torch.set_rng_state(self.cpu)
            if self.cuda:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def _chunks(features: list[Features], size: int) -> list[slice]:
    return [slice(i, min(i + size, len(features))) for i in range(0, len(features), size)]


def _padded(chunks: list[slice], count: int) -> list[tuple[slice, float]]:
    """(chunk, weight): this process's chunks, then its last chunk again with weight 0 up to ``count``."""
    return [(rows, 1.0) for rows in chunks] + [(rows, 0.0) for rows in chunks[-1:] * (count - len(chunks))]


def _grad_cache(model, batch: TrainBatch, weights: LossWeights, chunk_size: int, autocast, backward,
                lockstep: bool) -> StepLosses:
    size = len(batch)
    groups = {"queries": batch.queries, "positives": batch.positives, "negatives": batch.negatives}
    chunks = {name: _chunks(features, chunk_size) for name, features in groups.items()}
    # In lockstep every process makes as many passes per group as the process with the most chunks.
    counts = [len(c) for c in chunks.values()]
    counts = global_max(counts) if lockstep else counts
    passes = [(name, rows, weight) for (name, group_chunks), count in zip(chunks.items(), counts)
              for rows, weight in _padded(group_chunks, count)]
    cached: dict[str, list[torch.Tensor]] = {name: [] for name in groups}
    states: list[_RandomState] = []
    with torch.no_grad():
        for name, rows, weight in passes:
            states.append(_RandomState())
            with autocast():
                embeddings = model(model.collate(groups[name][rows])).embeddings.float()
            if weight:
                cached[name].append(embeddings)

    leaves = {k: torch.cat(v).detach().requires_grad_() for k, v in cached.items() if v}
    contrastive = info_nce(leaves["queries"], _reshape(leaves["positives"], size),
                           _reshape(leaves["negatives"], size) if "negatives" in leaves else None,
                           temperature=model.config.temperature, labels=batch.labels)
    (weights.contrastive * contrastive * world_size()).backward()  # to the cached embeddings only

    norm = Normalizers.of(model, batch)
    reconstruction = diversity = 0.0
    for number, ((name, rows, weight), state) in enumerate(zip(passes, states), start=1):
        with state.replay(), autocast():
            out = model(model.collate(groups[name][rows]))
            surrogate = (out.embeddings.float() * leaves[name].grad[rows]).sum()
            if name == "queries":
                rec, div = _side_terms(model, out, batch, rows, weights, norm, lockstep)
                surrogate = surrogate + weights.reconstruction * rec + weights.diversity * div
                reconstruction += weight * float(rec.detach())
                diversity += weight * float(div.detach())
        backward(surrogate * weight, number == len(passes))
    return _losses(contrastive, reconstruction, diversity, weights)
