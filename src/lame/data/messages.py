"""Chat messages -> one item: the one reading of a conversation that every entry point shares.

A conversation is a non-empty list of OpenAI-style messages ``{"role": "system" | "user", "content":
...}``; ``content`` is a string or a list of parts ``{"type": "text", "text": str}``, ``{"type":
"image_url", "image_url": {"url": str}}`` (or ``"image_url": str``) or ``{"type": "image", "image":
...}``. It becomes the item ``{"parts": [...], "instruction": str | None}``:

* the user messages' text and images, in reading order (across messages and within each);
* the system messages' text, joined with newlines, as the instruction (a system message holds text only).

Images are made by the caller's ``load_image(source, param)``: ``source`` is the part's URL or image
value as given, ``param`` names the part (``messages[0].content[1]``). The server decodes data: URIs
there and never opens a file; sentence-transformers also takes PIL images, arrays and paths. Whatever
``load_image`` raises goes through unchanged. Malformed messages raise :class:`MessageError`, which
names the field, so a server can answer with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import InvalidInput

ROLES = ("system", "user")
PART_FORMS = ('{"type": "text", "text": ...}, {"type": "image_url", "image_url": {"url": ...}} or '
              '{"type": "image", "image": ...}')
LoadImage = Callable[[Any, str], Any]


class MessageError(InvalidInput):
    """A conversation that cannot become an item. ``param`` is the field at fault (``messages[0].role``);
    ``code`` is ``invalid_type`` (a field of the wrong shape) or ``invalid_value`` (a value not allowed)."""

    def __init__(self, param: str, reason: str, code: str = "invalid_value"):
        self.param, self.reason, self.code = param, reason, code
        super().__init__(f"'{param}' {reason}")


@dataclass(frozen=True)
class ImageRef:
    """An image part not yet loaded: what the message gave, and where."""

    source: Any
    param: str


@dataclass
class Conversation:
    """A checked conversation: user parts (``str`` or :class:`ImageRef`) in reading order, system texts."""

    parts: list = field(default_factory=list)
    system: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[ImageRef]:
        return [p for p in self.parts if isinstance(p, ImageRef)]

    @property
    def instruction(self) -> str | None:
        return "\n".join(t for t in self.system if t) or None

    def item(self, load_image: LoadImage) -> dict:
        """The item, each image part replaced by ``load_image(source, param)``."""
        parts = [load_image(p.source, p.param) if isinstance(p, ImageRef) else p for p in self.parts]
        return {"parts": parts, "instruction": self.instruction}


def read_conversation(messages: Any, name: str = "messages") -> Conversation:
    """Check ``messages`` (the field ``name``) and sort its parts; no image is loaded yet, so a caller
    can check how many there are first."""
    if not isinstance(messages, list) or not messages:
        raise MessageError(name, "must be a non-empty list of messages", "invalid_type")
    conversation = Conversation()
    for m, message in enumerate(messages):
        where = f"{name}[{m}]"
        if not isinstance(message, dict):
            raise MessageError(where, "must be an object with 'role' and 'content'", "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise MessageError(f"{where}.role", f"must be 'user' or 'system', got {role!r}")
        for part in _content_parts(message.get("content"), f"{where}.content"):
            if role == "user":
                conversation.parts.append(part)
            elif isinstance(part, ImageRef):
                raise MessageError(part.param, "is an image: a system message holds text only")
            else:
                conversation.system.append(part)
    return conversation


def conversation_item(messages: Any, load_image: LoadImage, name: str = "messages") -> dict:
    """The item of a conversation (see the module docstring)."""
    return read_conversation(messages, name).item(load_image)


def _content_parts(content: Any, where: str) -> list:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise MessageError(where, "must be a string or a list of content parts", "invalid_type")
    return [_part(part, f"{where}[{p}]") for p, part in enumerate(content)]


def _part(part: Any, param: str) -> str | ImageRef:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return part["text"]
    if kind == "image_url":
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        if not isinstance(url, str):
            raise MessageError(param, "has an 'image_url.url' that is not a string", "invalid_type")
        return ImageRef(url, param)
    if kind == "image" and part.get("image") is not None:
        return ImageRef(part["image"], param)
    raise MessageError(param, f"must be one of {PART_FORMS}", "invalid_type")
