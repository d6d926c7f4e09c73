"""Padding-free batches: several items share one row of the backbone's input, each attending only to itself.

A left-padded batch (:func:`lame.data.featurize.collate`) computes every position of ``B x longest``;
on a mixed corpus (one-line texts beside images of hundreds of visual tokens) most of them can be
padding. A *packed* batch lays the items end to end in rows of at most ``capacity`` positions
(first-fit decreasing, :func:`plan_rows`); the backbone gets, instead of an attention mask, position
ids that restart at 0 for every item, which transformers turns into a block-diagonal causal mask
(SDPA, eager) or into flash-attention's variable-length ``cu_seqlens`` (no padding computed at all).
Rows are also the unit of the attention cost: with a dense masked kernel (SDPA) a row of ``C``
positions costs ``C^2`` in attention, so rows are capped; with flash-attention the cap can be large.

:func:`collate_packed` gives the batch, :func:`packed_positions` the positions (the backbone family's
own, e.g. Qwen's multimodal RoPE, rebased per item), and :meth:`lame.modeling.LaMEModel.forward`
reads each item's latent states back from its span. Embeddings equal the padded path's (allclose).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .featurize import Features

def plan_rows(lengths: Sequence[int], capacity: int | None = None) -> list[list[int]]:
    """Item indices per row, first-fit decreasing into rows of ``capacity`` positions (default: the
    longest item, i.e. no row is longer than the padded batch's; never less than the longest item)."""
    capacity = max(capacity or 0, max(lengths, default=0))
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, space in enumerate(free):
            if lengths[index] <= space:
                rows[r].append(index)
                free[r] -= lengths[index]
                break
        else:
            rows.append([index])
            free.append(capacity - lengths[index])
    return rows


def collate_packed(features: list[Features], pad_token_id: int, image_token_id: int,
                   capacity: int | None = None) -> dict[str, torch.Tensor]:
    """Packs a list of :class:`Features` into rows of at most ``capacity`` positions (see :func:`plan_rows`).

    Besides ``input_ids`` (R, C) and ``attention_mask`` (R, C; 1 on items, 0 on the rows' free tail), the
    batch holds, per item in the given order, its row, first column and length (``pack_rows``,
    ``pack_starts``, ``pack_lengths``), and per position the first column of its item
    (``pack_item_start``). Images follow the order in which their placeholders appear row by row.
    """
    lengths = [len(f) for f in features]
    rows = plan_rows(lengths, capacity)
    width = max(sum(lengths[i] for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    item_start = torch.arange(width).repeat(len(rows), 1)  # free positions: their own column
    text_positions = torch.zeros((len(rows), width), dtype=torch.long)
    placement = torch.zeros((len(features), 3), dtype=torch.long)
    ordered: list[Features] = []
    for r, row in enumerate(rows):
        column = 0
        for index in row:
            f, n = features[index], lengths[index]
            input_ids[r, column: column + n] = f.input_ids
            mask[r, column: column + n] = 1
            item_start[r, column: column + n] = column
            text_positions[r, column: column + n] = torch.arange(n)
            placement[index] = torch.tensor([r, column, n])
            ordered.append(f)
            column += n
    batch = {
        "input_ids": input_ids,
        "attention_mask": mask,
        "mm_token_type_ids": ((input_ids == image_token_id) & mask.bool()).int(),
        "pack_rows": placement[:, 0], "pack_starts": placement[:, 1], "pack_lengths": placement[:, 2],
        "pack_item_start": item_start, "pack_text_positions": text_positions,
    }
    with_images = [f for f in ordered if f.pixel_values is not None]
    if with_images:
        batch["pixel_values"] = torch.cat([f.pixel_values for f in with_images])
        if all(f.image_grid_thw is not None for f in with_images):
            batch["image_grid_thw"] = torch.cat([f.image_grid_thw for f in with_images])
    return batch


def packed_positions(adapter, backbone, batch: dict) -> torch.Tensor:
    """Position ids of a packed batch: the family's own positions of each item as if it were alone.

    The adapter computes positions over whole rows (right-padded); every item starts with a text
    token, whose positions equal its offset in the row, so subtracting the positions at the item's
    first column rebases them. Multimodal RoPE (3, R, C) gets the per-item text positions as a fourth,
    leading row, transformers' packed format: the attention mask is then built from them.
    """
    row_batch = {key: batch[key] for key in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw")
                 if key in batch}
    positions = adapter.positions(backbone, row_batch)
    start = batch["pack_item_start"].to(positions.device)
    text = batch["pack_text_positions"].to(positions.device)
    if positions.ndim == 3:
        base = positions.gather(-1, start.unsqueeze(0).expand_as(positions))
        rebased = (positions - base) * batch["attention_mask"].to(positions.device)
        return torch.cat([text.unsqueeze(0), rebased])
    return text


def latent_index(batch: dict, n_latent: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns), each (B, n_latent): where every item's latent block sits in the packed rows."""
    rows = batch["pack_rows"][:, None].expand(-1, n_latent)
    columns = (batch["pack_starts"] + batch["pack_lengths"] - n_latent)[:, None] + torch.arange(n_latent)
    return rows, columns
