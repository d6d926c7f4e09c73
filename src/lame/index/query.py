"""``lame search``: one query (text, image file or JSON item) -> top-k ids and scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data.items import resolve_paths
from ..errors import InvalidInput
from .base import SearchIndex


def query_item(text: str | None = None, image: str | Path | None = None, json_item: str | None = None,
               base_dir: Path | None = None) -> Any:
    """The item for exactly one of ``text``, ``image`` (a file) or ``json_item`` (an item as JSON,
    image paths relative to ``base_dir``, default the working folder)."""
    given = [x is not None for x in (text, image, json_item)]
    if sum(given) != 1:
        raise InvalidInput("give exactly one of a text query, an image file or a JSON item")
    if text is not None:
        return text
    if image is not None:
        return Path(image)
    try:
        item = json.loads(json_item)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the JSON query is not valid JSON ({exc})") from exc
    return resolve_paths(item, base_dir or Path.cwd())


def search(model, index: SearchIndex, items: list, k: int = 10, num_reason_tokens: int | None = None,
           dimensions: int | None = None) -> list[list[dict]]:
    """Embeds ``items`` as queries (any encoder: :func:`lame.modeling.roles.encode_as`) and returns, per
    item, its hits ``{"id", "score"}`` best first. Queries take the index's size (``dimensions``, when
    given, must be it) and any ``num_reason_tokens`` the model was trained for, whatever the documents'."""
    from ..modeling.roles import encode_as  # here: lame.modeling imports transformers

    size = index.query_dimensions(dimensions)
    choice = {"num_reason_tokens": num_reason_tokens} if num_reason_tokens is not None else {}
    if size != getattr(model, "embedding_dim", size):
        choice["dimensions"] = size
    scores, ids = index.search(encode_as(model, items, "query", **choice), k)
    return [[{"id": i, "score": float(s)} for i, s in zip(row_ids, row_scores) if i is not None]
            for row_ids, row_scores in zip(ids, scores)]


def format_hits(hits: list[dict]) -> str:
    lines = [f"{'rank':>4}  {'score':>8}  id"]
    lines += [f"{rank:>4}  {hit['score']:>8.4f}  {hit['id']}" for rank, hit in enumerate(hits, start=1)]
    return "\n".join(lines)
