"""Queries and documents: the ``role`` an item is embedded as.

LaME, the discriminative and the sequential models embed both alike; the explicit-CoT baseline
generates a rationale for a query and none for a document (its positives are trained without one).
Every model takes ``role=`` as an argument (``encode``, ``forward``) and has ``encode_query`` /
``encode_document``, as sentence-transformers 5+ models do.

Code that embeds with any encoder (``lame eval``, ``lame search``) calls :func:`encode_as`: an encoder
with those two methods (:class:`QueryDocumentEncoder`: LaME's models, a ``SentenceTransformer``) is
asked for the role; any other object with ``encode(items, ...)`` embeds both alike.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["query", "document"]
ROLES = ("query", "document")


def check_role(role: Any) -> None:
    """Raises ValueError unless ``role`` is ``"query"``, ``"document"`` or None."""
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be 'query', 'document' or None, got {role!r}")


@runtime_checkable
class QueryDocumentEncoder(Protocol):
    """An encoder that embeds queries and documents each its own way."""

    def encode_query(self, items, **kwargs) -> Any: ...

    def encode_document(self, items, **kwargs) -> Any: ...


def encode_as(model, items, role: Role, **kwargs) -> Any:
    """``model``'s embeddings of ``items`` as ``role``: ``model.encode_query`` / ``encode_document``
    where it has them, else ``model.encode`` (an encoder that has no roles)."""
    check_role(role)
    if role is not None and isinstance(model, QueryDocumentEncoder):
        return (model.encode_query if role == "query" else model.encode_document)(items, **kwargs)
    return model.encode(items, **kwargs)
