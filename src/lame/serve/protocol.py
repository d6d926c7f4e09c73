"""Request bodies -> items, and embeddings -> OpenAI response bodies.

Inputs are OpenAI's ``input`` (a string or a list of strings) or vLLM's multimodal ``messages``
(one conversation = one item, or a list of conversations = one item each; system text becomes the
item's instruction). Items are built only from ``str`` and decoded ``PIL.Image`` parts: request data
never becomes a ``pathlib.Path``, which the item schema would read as a file.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.messages import MessageError, read_conversation
from ..errors import InvalidInput
from .errors import APIError
from .images import ImageLoader
from .settings import ServeSettings
from .truncation import Truncate

ENCODING_FORMATS = ("float", "base64")


@dataclass
class ParsedRequest:
    items: list  # str, or {"parts": [str | PIL.Image], "instruction": str | None}; Truncate(...) of one
    model: str | None
    encoding_format: str = "float"
    dimensions: int | None = None
    num_reason_tokens: int | None = None  # None: the model's K
    k: int = 10

    @property
    def image_bytes(self) -> int:
        """Memory the request's decoded images hold (RGB, 3 bytes a pixel)."""
        items = [getattr(item, "item", item) for item in self.items]
        return sum(3 * p.width * p.height for item in items if isinstance(item, dict) for p in item["parts"]
                   if not isinstance(p, str))


def parse_json(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc})", None, "invalid_json") from exc
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}", None, "invalid_type")
    return data


def parse_embedding_request(data: dict, settings: ServeSettings, images: ImageLoader, model) -> ParsedRequest:
    """A ``POST /v1/embeddings`` body checked and read: its items, model name, encoding format,
    ``num_reason_tokens`` and ``dimensions`` (else the server's); a bad field raises :class:`APIError` naming it."""
    request = _embedding_choice(data, settings, model, ParsedRequest(_items(data, settings, images),
                                                                     _model(data, settings)))
    fmt = data.get("encoding_format", "float")
    if fmt is None:
        fmt = "float"
    if fmt not in ENCODING_FORMATS:
        raise APIError(400, f"'encoding_format' must be one of {list(ENCODING_FORMATS)}, got {fmt!r}",
                       "encoding_format", "invalid_value")
    request.encoding_format = fmt
    return request


def _embedding_choice(data: dict, settings: ServeSettings, model, request: ParsedRequest,
                      index_dim: int | None = None) -> ParsedRequest:
    """The request's ``num_reason_tokens`` and ``dimensions`` (else the server's defaults; with an index,
    its size), each one the model was trained for."""
    for name, check in (("num_reason_tokens", model.check_reason_tokens), ("dimensions", model.check_dimensions)):
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise APIError(400, f"'{name}' must be an integer, got {value!r}", name, "invalid_type")
        value = getattr(settings, name) if value is None else value
        if name == "dimensions" and index_dim is not None:
            if value not in (None, index_dim):
                raise APIError(400, f"'dimensions' {value}: the index holds {index_dim}-dimensional vectors, and "
                               "queries must have their size", name, "invalid_value")
            value = index_dim
        try:
            setattr(request, name, None if value is None else check(value))
        except InvalidInput as exc:
            raise APIError(400, str(exc), name, "invalid_value") from exc
    return request


def parse_search_request(data: dict, settings: ServeSettings, images: ImageLoader, model,
                         index_dim: int) -> ParsedRequest:
    """A ``POST /v1/search`` body checked and read like an embeddings request, its queries embedded at the
    index's size ``index_dim``, and its ``k`` (1 to the server's ``max_k``); a bad field raises :class:`APIError`."""
    request = _embedding_choice(data, settings, model, ParsedRequest(_items(data, settings, images),
                                                                     _model(data, settings)), index_dim)
    k = data.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= settings.max_k:
        raise APIError(400, f"'k' must be an integer from 1 to {settings.max_k}, got {k!r}", "k", "invalid_value")
    request.k = k
    return request


def _model(data: dict, settings: ServeSettings) -> str | None:
    """The request's ``model``: absent, or the served name (anything else is 404, as OpenAI answers)."""
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, f"'model' must be a string, got {type(model).__name__}", "model", "invalid_type")
    if model is not None and model != settings.model_name:
        raise APIError(404, f"the model {model!r} does not exist: this server serves {settings.model_name!r} "
                       "(GET /v1/models; --served-model-name)", "model", "model_not_found")
    return model


def _truncation(data: dict) -> int | None:
    """What to cut items to: vLLM's ``truncate_prompt_tokens``, or TEI's ``truncate`` (true = -1, the
    model's limit; false = no cut). Given both, they must agree."""
    value = data.get("truncate_prompt_tokens")
    allowed = isinstance(value, int) and not isinstance(value, bool) and (value >= 1 or value == -1)
    if value is not None and not allowed:
        raise APIError(400, f"'truncate_prompt_tokens' must be an integer >= 1, or -1 (fit the model's max_length), "
                       f"got {value!r}", "truncate_prompt_tokens", "invalid_value")
    flag = data.get("truncate")
    if flag is None:
        return value
    if not isinstance(flag, bool):
        raise APIError(400, f"'truncate' must be true or false, got {flag!r}", "truncate", "invalid_type")
    if value is None:
        return -1 if flag else None
    if flag and value == -1:
        return -1
    means = "true cuts to the model's max_length (truncate_prompt_tokens -1)" if flag else "false asks for no cut"
    raise APIError(400, f"'truncate' {means} but 'truncate_prompt_tokens' is {value}: give one of them",
                   "truncate", "invalid_value")


def _items(data: dict, settings: ServeSettings, images: ImageLoader) -> list:
    truncate = _truncation(data)
    items = _plain_items(data, settings, images)
    return items if truncate is None else [Truncate(item, truncate) for item in items]


def _plain_items(data: dict, settings: ServeSettings, images: ImageLoader) -> list:
    has_input, has_messages = data.get("input") is not None, data.get("messages") is not None
    if has_input == has_messages:
        raise APIError(400, "give exactly one of 'input' (text) or 'messages' (multimodal)", "input",
                       "missing_input" if not has_input else "invalid_value")
    if has_messages:
        messages = data["messages"]
        if isinstance(messages, list) and messages and all(isinstance(m, list) for m in messages):
            if len(messages) > settings.max_items:  # several conversations: one item each
                raise APIError(400, f"the request has {len(messages)} conversations; the limit is {settings.max_items} "
                               "(--max-items)", "messages", "too_many_items")
            return [_conversation(m, settings, images, f"messages[{c}]") for c, m in enumerate(messages)]
        return [_conversation(messages, settings, images)]
    value = data["input"]
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise APIError(400, f"'input' must be a string or a list of strings, got {type(value).__name__}", "input",
                       "invalid_type")
    if not texts:
        raise APIError(400, "'input' must not be empty", "input", "invalid_value")
    if any(isinstance(t, (int, list)) and not isinstance(t, bool) for t in texts):
        raise APIError(400, "token-id inputs are not supported: this server takes text (a string or a list of "
                       "strings) or multimodal 'messages', never token ids", "input", "unsupported_input")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise APIError(400, f"'input[{bad}]' must be a string, got {type(texts[bad]).__name__}", "input",
                       "invalid_type")
    if len(texts) > settings.max_items:
        raise APIError(400, f"the request has {len(texts)} inputs; the limit is {settings.max_items} (--max-items)",
                       "input", "too_many_items")
    return list(texts)


def _conversation(messages: Any, settings: ServeSettings, images: ImageLoader, name: str = "messages") -> dict:
    """The item of one conversation (:mod:`lame.data.messages` reads it); images are decoded only once
    their count is known to be allowed."""
    try:
        conversation = read_conversation(messages, name)
    except MessageError as exc:
        raise APIError(400, str(exc), exc.param, exc.code) from exc
    count = len(conversation.images)
    if count > settings.max_images_per_item:
        raise APIError(400, f"the item has {count} images; the limit is {settings.max_images_per_item} "
                       "(--max-images-per-item)", name, "too_many_images")
    return conversation.item(images.load)


# ------------------------------------------------------------------------------------------ responses
def embedding_response(embeddings: np.ndarray, request: ParsedRequest, model_name: str, tokens: int) -> dict:
    vectors = np.asarray(embeddings, dtype=np.float32)
    data = []
    for i, vector in enumerate(vectors):
        if request.encoding_format == "base64":
            value: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        else:
            value = vector.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": model_name, "usage": _usage(tokens)}


def search_response(scores: np.ndarray, ids: list[list], request: ParsedRequest, model_name: str,
                    tokens: int) -> dict:
    data = [{"object": "search_result", "index": i,
             "hits": [{"id": hit, "score": float(s)} for hit, s in zip(row_ids, row_scores) if hit is not None]}
            for i, (row_ids, row_scores) in enumerate(zip(ids, scores))]
    return {"object": "list", "data": data, "model": model_name, "usage": _usage(tokens)}


def _usage(tokens: int) -> dict:
    return {"prompt_tokens": tokens, "total_tokens": tokens}
