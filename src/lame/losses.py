"""The loss functions of LaME's training: InfoNCE over gathered negatives, latent diversity.

How they combine with the decoder's reconstruction loss into the training objective, under which
weights and across processes: :mod:`lame.training.objective`.

**Contrastive** (InfoNCE, several positives allowed). For query i with candidate set C (every
positive and hard negative of every query in the GLOBAL batch, gathered across processes) and its
own positives P(i)::

    s_ij = <q_i, c_j> / temperature
    L_i  = logsumexp_{j in C, not masked} s_ij - logsumexp_{p in P(i)} s_ip
    L    = mean_i L_i

Candidates that are positives of another query with the same ``label`` as query i (false negatives,
common when few answers exist) are masked out when labels are given.

**Symmetric** (``symmetric=True``, config ``symmetric_contrastive``): the target-to-query direction is
added, as CLIP trains; VLM2Vec and most embedding recipes train the query-to-target direction only,
which stays the default. Every positive p (of query o(p)) ranks the queries of the global batch::

    t_pj = <p, q_j> / temperature
    T_p  = logsumexp_{j, not masked} t_pj - t_p,o(p)
    L    = (mean_i L_i + mean_p T_p) / 2

Queries j != o(p) with the label of o(p) are masked out; hard negatives take part only as candidates of
the first direction.

**Diversity** on the K reason states h_1..h_K of each query (K >= 2), with u_k = h_k / ||h_k||::

    L_div = mean_batch  1/(K(K-1)) * sum_{k != l} <u_k, u_l>^2

0 when the K states are mutually orthogonal, 1 when they have all collapsed onto one direction.

**Matryoshka** (:class:`MatryoshkaLoss`, config ``matryoshka_dims``): a contrastive loss applied to
nested prefixes of the embeddings, as sentence-transformers' ``MatryoshkaLoss`` does (Kusupati et al.,
2022), so that the first d values of an embedding, re-normalised, are an embedding of their own::

    L = mean_{d in dims} L_contrastive(prefix_d(q), prefix_d(c))

**Distributed.** :func:`gather_with_grad` concatenates every process's tensor with the local slice
kept in the autograd graph, and every process computes the loss over the global batch. Each process's
loss equals the single-process loss on the global batch, and the gradient reaching its local
embeddings equals the single-process gradient for those rows. DDP averages parameter gradients over
W processes, so a trainer multiplies this loss by W before ``backward`` to get the global gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def collective_device() -> torch.device:
    """Where small tensors for collectives must live: NCCL only moves GPU tensors."""
    if world_size() > 1 and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gathers ``tensor`` along dim 0; the local slice keeps its gradient, the others are constants.

    Processes may hold different numbers of rows (a process that dropped a bad sample has fewer).
    """
    if world_size() == 1:
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    sizes = [int(s) for s in sizes]
    padded = tensor.detach().new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor.detach()
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded.contiguous())
    pieces = [g[:n] for g, n in zip(gathered, sizes)]
    pieces[dist.get_rank()] = tensor
    return torch.cat(pieces, dim=0)


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = 0.02,
    labels: torch.Tensor | None = None,
    gather: bool = True,
    symmetric: bool = False,
) -> torch.Tensor:
    """InfoNCE over in-batch (and gathered) candidates.

    Args:
        queries: (B, D) query embeddings.
        positives: (B, D) or (B, P, D): P positives per query.
        negatives: optional (B, N, D) hard negatives; they are candidates for every query.
        labels: optional (B,) target ids; another query's positive with the same label is masked.
        gather: gather all of the above across processes first (no-op on one process).
        symmetric: also the target-to-query direction, averaged with the first (see the module doc).
    """
    if positives.dim() == 2:
        positives = positives.unsqueeze(1)
    if positives.shape[0] != queries.shape[0]:
        raise ValueError(f"{positives.shape[0]} positive rows for {queries.shape[0]} queries")
    if labels is not None:
        labels = labels.to(queries.device)
    if gather:
        queries, positives = gather_with_grad(queries), gather_with_grad(positives)
        negatives = gather_with_grad(negatives) if negatives is not None else None
        labels = gather_with_grad(labels) if labels is not None else None
    batch, num_pos, _ = positives.shape
    candidates = [positives.reshape(batch * num_pos, -1)]
    if negatives is not None:
        candidates.append(negatives.reshape(-1, negatives.shape[-1]))
    logits = queries @ torch.cat(candidates).T / temperature  # (B, C)

    owner = torch.arange(batch, device=queries.device).repeat_interleave(num_pos)  # positive column -> query
    is_positive = torch.zeros_like(logits, dtype=torch.bool)
    is_positive[:, : batch * num_pos] = owner.unsqueeze(0) == torch.arange(batch, device=queries.device).unsqueeze(1)
    if labels is not None:
        same_label = labels.unsqueeze(1) == labels[owner].unsqueeze(0)  # (B, B*P)
        false_negative = torch.zeros_like(is_positive)
        false_negative[:, : batch * num_pos] = same_label
        logits = logits.masked_fill(false_negative & ~is_positive, float("-inf"))
    log_denominator = torch.logsumexp(logits, dim=1)
    log_numerator = torch.logsumexp(logits.masked_fill(~is_positive, float("-inf")), dim=1)
    loss = (log_denominator - log_numerator).mean()
    if not symmetric:
        return loss
    # target -> query: every positive column ranks the queries; its own query is the target
    reverse = logits[:, : batch * num_pos].T  # (B*P, B), the same scores seen from the positives
    own = is_positive[:, : batch * num_pos].T
    if labels is not None:  # other queries with the positive's label are false negatives
        reverse = reverse.masked_fill((labels[owner].unsqueeze(1) == labels.unsqueeze(0)) & ~own, float("-inf"))
    reverse_loss = torch.logsumexp(reverse, dim=1) - reverse[own]
    return (loss + reverse_loss.mean()) / 2


def diversity_loss(reason_states: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal cosine similarity between the K reason states (see module doc)."""
    k = reason_states.shape[1]
    if k < 2:
        return reason_states.new_zeros(())
    unit = F.normalize(reason_states.float(), dim=-1)
    gram = unit @ unit.transpose(1, 2)  # (B, K, K)
    off_diagonal = gram.pow(2).sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).pow(2).sum(dim=1)
    return (off_diagonal / (k * (k - 1))).mean()


class MatryoshkaLoss:
    """``loss`` applied to nested prefixes of its embedding arguments, averaged over ``dims``.

    Each prefix is re-normalised when ``normalize`` (the model's embeddings are unit vectors); the full
    size is passed as it is, so ``dims=[full]`` is exactly ``loss``. sentence-transformers' loss SUMS the
    sizes' terms (weights 1); here they are averaged, so the contrastive term keeps its scale beside the
    reconstruction and diversity weights.
    """

    def __init__(self, loss, dims: list[int], normalize: bool = True):
        self.loss, self.dims, self.normalize = loss, list(dims), normalize

    def __call__(self, *embeddings: torch.Tensor | None, **kwargs) -> torch.Tensor:
        """``loss(*embeddings, **kwargs)`` on each size's prefixes; None arguments stay None."""
        terms = [self.loss(*(self._prefix(e, d) for e in embeddings), **kwargs) for d in self.dims]
        return terms[0] if len(terms) == 1 else torch.stack(terms).mean()

    def _prefix(self, embeddings: torch.Tensor | None, dim: int) -> torch.Tensor | None:
        if embeddings is None or dim == embeddings.shape[-1]:
            return embeddings
        if dim > embeddings.shape[-1]:
            raise ValueError(f"matryoshka size {dim} is more than the embeddings' {embeddings.shape[-1]}")
        prefix = embeddings[..., :dim]
        return F.normalize(prefix, dim=-1) if self.normalize else prefix
