"""Small all-process reductions of plain numbers (identity on one process)."""

from __future__ import annotations

import torch

from ..losses import collective_device, world_size


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
