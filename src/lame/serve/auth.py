"""The API key (``--api-key``): a dependency of every ``/v1/*`` router; ``/health``, ``/metrics`` and the
page do not ask for it."""

from __future__ import annotations

import hmac

from fastapi import Request

from .errors import APIError
from .state import StateDep


async def require_api_key(request: Request, state: StateDep) -> None:
    """Refuses (401) a request without ``Authorization: Bearer KEY`` when the server has a key;
    the key is compared in constant time."""
    api_key = state.settings.api_key
    if api_key is None:
        return
    headers = {"WWW-Authenticate": "Bearer"}
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "missing API key: send the header 'Authorization: Bearer KEY'", None, "invalid_api_key",
                       headers=headers)
    if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "incorrect API key", None, "invalid_api_key", headers=headers)
