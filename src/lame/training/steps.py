"""One optimisation step's gradients: the whole batch at once, or GradCache chunks.

Both paths compute the same objective (:class:`lame.training.objective.LaMELoss`); they differ only
in how they run the model. GradCache (Gao et al., 2021) decouples the contrastive batch size from
memory: embed every item without a graph, compute the contrastive loss on those embeddings as
leaves, then re-run each chunk WITH a graph and backpropagate ``<embedding, cached gradient>``. The
decoder and diversity losses are sums over queries (and decoder tokens), so each query chunk adds
its own share exactly; one device gets the same gradients as the full batch.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch

from ..data.featurize import Features
from .collectives import global_max
from .objective import LaMELoss, LossWeights, StepLosses


@dataclass
class TrainBatch:
    queries: list[Features]
    positives: list[Features]  # query i's j-th positive at i * P + j
    negatives: list[Features]  # query i's j-th hard negative at i * N + j
    targets: list[str | None]  # decoder target per query (None: no reconstruction for that query)
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.queries)


def compute_gradients(model, batch: TrainBatch, weights: LossWeights, chunk_size: int | None = None,
                      autocast=None, backward=None, lockstep: bool = False, packing: bool = False,
                      packing_capacity: int | None = None,
                      reason_tokens: tuple[int, int] | None = None) -> StepLosses:
    """Accumulates into ``.grad`` the gradients of this process's share of the LaME loss.

    The shares are such that averaging gradients over processes gives the global gradient (see
    :mod:`lame.training.objective`). ``backward(loss, last)`` runs each backward pass through the
    model (default ``loss.backward()``; DeepSpeed's engine needs its own); ``last`` marks the step's
    final one.

    ``lockstep``: every process runs the same sequence of forward and backward passes through the
    same modules, as sharded parameters need (each pass is a collective under FSDP and ZeRO). Batches
    differ in size between processes once samples are skipped, and in which queries have decoder
    targets; the missing passes run on this process's own data with weight zero.

    ``packing``: the passes run padding-free batches (``model.collate(..., packed=True,
    capacity=packing_capacity)``, :mod:`lame.data.packing`): the same losses and gradients.

    ``reason_tokens``: ``(k_q, k_d)``, the reason tokens the queries and the documents (positives,
    negatives) use this step (an elastic model's draw, :mod:`lame.training.elastic`); None: K for both.
    """
    autocast = autocast or _no_autocast
    backward = backward or _plain_backward
    loss = LaMELoss(model, weights, lockstep)
    run = _runner(model, packing, packing_capacity, reason_tokens)
    sizes = [len(batch.queries), len(batch.positives), len(batch.negatives)]
    if lockstep:
        sizes = global_max(sizes)
    if chunk_size is None or chunk_size >= max(*sizes, 1):
        return _full_batch(batch, loss, autocast, backward, run)
    return _grad_cache(batch, loss, chunk_size, autocast, backward, run)


def _runner(model, packing: bool, capacity: int | None, reason_tokens: tuple[int, int] | None):
    """``(group, features) -> model output``: the features of ``group`` ("queries", "positives" or
    "negatives") collated with the run's packing (only the options that are set) and the group's
    number of reason tokens, and run through the model."""
    collate = model.collate
    if packing:
        collate = partial(model.collate, packed=True, **({} if capacity is None else {"capacity": capacity}))
    query_k, document_k = reason_tokens or (model.config.num_reason_tokens,) * 2
    ks = {"queries": query_k, "positives": document_k, "negatives": document_k}

    def run(group: str, features: list[Features]):
        return model(collate(features, num_reason_tokens=ks[group]), num_reason_tokens=ks[group])

    return run


def _plain_backward(loss: torch.Tensor, last: bool) -> None:
    loss.backward()


@contextmanager
def _no_autocast():
    yield


def _full_batch(batch: TrainBatch, loss: LaMELoss, autocast, backward, run) -> StepLosses:
    with autocast():
        q = run("queries", batch.queries)
        pos = run("positives", batch.positives).embeddings
        neg = run("negatives", batch.negatives).embeddings if batch.negatives else None
        contrastive = loss.contrastive(q.embeddings, pos, neg, batch.labels)
        reconstruction, diversity = loss.side_terms(q, batch.targets, loss.normalizers(batch))
        total = loss.share(contrastive, reconstruction, diversity)
    backward(total, True)
    return loss.report(contrastive, reconstruction, diversity)


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


def _chunks(features: list[Features], size: int) -> list[list[int]]:
    """Chunks of ``size`` items, made after sorting the items by length (longest first): items of similar
    length share a chunk, so a padded chunk computes less padding. The loss is over the whole batch, so
    which items share a chunk changes nothing but the cost."""
    order = sorted(range(len(features)), key=lambda i: (-len(features[i]), i))
    return [order[i: i + size] for i in range(0, len(order), size)]


def _padded(chunks: list[list[int]], count: int) -> list[tuple[list[int], float]]:
    """(chunk, weight): this process's chunks, then its last chunk again with weight 0 up to ``count``."""
    return [(rows, 1.0) for rows in chunks] + [(rows, 0.0) for rows in chunks[-1:] * (count - len(chunks))]


def _grad_cache(batch: TrainBatch, loss: LaMELoss, chunk_size: int, autocast, backward, run) -> StepLosses:
    groups = {"queries": batch.queries, "positives": batch.positives, "negatives": batch.negatives}
    chunks = {name: _chunks(features, chunk_size) for name, features in groups.items()}
    # In lockstep every process makes as many passes per group as the process with the most chunks.
    counts = [len(c) for c in chunks.values()]
    counts = global_max(counts) if loss.lockstep else counts
    passes = [(name, rows, weight) for (name, group_chunks), count in zip(chunks.items(), counts)
              for rows, weight in _padded(group_chunks, count)]
    cached: dict[str, list[torch.Tensor]] = {name: [] for name in groups}
    states: list[_RandomState] = []
    with torch.no_grad():
        for name, rows, weight in passes:
            states.append(_RandomState())
            with autocast():
                embeddings = run(name, [groups[name][i] for i in rows]).embeddings.float()
            if weight:
                cached[name].append(embeddings)

    def in_batch_order(name: str) -> torch.Tensor:  # the chunks' rows back in the batch's order
        order = torch.tensor([i for rows in chunks[name] for i in rows])
        return torch.cat(cached[name])[torch.argsort(order).to(cached[name][0].device)]

    leaves = {k: in_batch_order(k).detach().requires_grad_() for k, v in cached.items() if v}
    contrastive = loss.contrastive(leaves["queries"], leaves["positives"], leaves.get("negatives"), batch.labels)
    loss.share(contrastive=contrastive).backward()  # to the cached embeddings only

    norm = loss.normalizers(batch)
    reconstruction = diversity = 0.0
    for number, ((name, rows, weight), state) in enumerate(zip(passes, states), start=1):
        with state.replay(), autocast():
            out = run(name, [groups[name][i] for i in rows])
            surrogate = (out.embeddings.float() * leaves[name].grad[rows]).sum()
            if name == "queries":
                rec, div = loss.side_terms(out, [batch.targets[i] for i in rows], norm)
                surrogate = surrogate + loss.share(reconstruction=rec, diversity=div)
                reconstruction += weight * float(rec.detach())
                diversity += weight * float(div.detach())
        backward(surrogate * weight, number == len(passes))
    return loss.report(contrastive, reconstruction, diversity)
