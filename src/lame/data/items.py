"""The item schema: what can be embedded, and how it is normalised.

An item is one of

* ``str``: text;
* ``PIL.Image.Image``: an image;
* ``pathlib.Path``: an image file (plain strings are always text, never paths);
* a list of parts, each a ``str`` (text), a ``PIL.Image.Image`` or ``Path`` (image), or a part dict
  ``{"text": ...}`` / ``{"image": PATH_OR_IMAGE}``: an interleaved document, several images allowed.
  Where a function takes a LIST of items (``encode``), an interleaved item is a list inside that list:
  ``encode(["caption", img])`` embeds two items (a text and an image), ``encode([["caption", img]])``
  one interleaved item, as does ``encode([{"parts": ["caption", {"image": img}]}])``;
* a dict with any of ``"text"``, ``"image"``, ``"images"`` (list), ``"video"``, ``"parts"`` (list) and
  an optional ``"instruction"``. In JSONL files image and video paths are strings under
  ``"image"``/``"images"``/``"video"``, resolved against the file's folder.

A video is ``{"video": FILE_OR_FOLDER_OF_FRAMES, "num_frames": N, "fps": F}`` (``num_frames`` and ``fps``
optional), as a dict item (with ``text``/``instruction`` beside it) or as a part of an interleaved item;
:mod:`lame.data.video` says how frames are sampled. The backbone reads it as a video (its own video
input), not as separate images.

Every item is normalised to an :class:`Item`: an ordered list of text, image and video parts plus an
optional instruction. Problems raise :class:`ItemError`, which names the item's index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from PIL import Image

from ..errors import InvalidInput
from .images import load_image
from .video import DEFAULT_NUM_FRAMES, Video, load_video

ItemLike = Union[str, Image.Image, Path, list, dict]
_ITEM_KEYS = {"text", "image", "images", "video", "num_frames", "fps", "parts", "instruction"}
_VIDEO_KEYS = {"video", "num_frames", "fps"}


class ItemError(InvalidInput):
    """An item that cannot be embedded; ``index`` is its position in the caller's input."""

    def __init__(self, index: int | None, reason: str):
        self.index = index
        self.reason = reason
        where = f"item {index}" if index is not None else "item"
        super().__init__(f"{where}: {reason}")


@dataclass
class Item:
    """A normalised item: parts in reading order (``str`` text, RGB ``PIL.Image`` or :class:`Video`)."""

    parts: list[str | Image.Image | Video]
    instruction: str | None = None
    images: list[Image.Image] = field(init=False)
    videos: list[Video] = field(init=False)

    def __post_init__(self) -> None:
        self.images = [p for p in self.parts if isinstance(p, Image.Image)]
        self.videos = [p for p in self.parts if isinstance(p, Video)]

    @property
    def text(self) -> str:
        return " ".join(p for p in self.parts if isinstance(p, str))


def to_item(obj: ItemLike, index: int | None = None, base_dir: Path | None = None) -> Item:
    """Normalise any supported item form to an :class:`Item`, raising :class:`ItemError` on problems."""
    try:
        item = _to_item(obj, base_dir)
    except ItemError:
        raise
    except ValueError as exc:
        raise ItemError(index, str(exc)) from exc
    if not item.parts:
        raise ItemError(index, "empty item: no text and no image")
    for text in (item.instruction, *item.parts):
        if isinstance(text, str):
            _check_text(text, index)
    return item


def _check_text(text: str, index: int | None) -> None:
    """Text must be encodable Unicode: a lone surrogate (``"\\ud800"``, which JSON's ``\\u`` escapes can
    produce) has no UTF-8 form, and the tokenizer cannot read it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ItemError(index, f"text is not valid Unicode: lone surrogate U+{ord(text[exc.start]):04X} at "
                               f"character {exc.start}") from None


def _to_item(obj: Any, base_dir: Path | None) -> Item:
    if isinstance(obj, Item):
        return obj
    if isinstance(obj, dict):
        unknown = sorted(set(obj) - _ITEM_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; an item dict may have {sorted(_ITEM_KEYS)}")
        instruction = obj.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise ValueError(f"'instruction' must be a string, got {type(instruction).__name__}")
        parts: list = []
        if obj.get("parts") is not None:
            if not isinstance(obj["parts"], list):
                raise ValueError(f"'parts' must be a list, got {type(obj['parts']).__name__}")
            parts += [_part(p, base_dir) for p in obj["parts"]]
        images = obj.get("images") or []
        if not isinstance(images, list):
            raise ValueError(f"'images' must be a list, got {type(images).__name__}")
        if obj.get("image") is not None:
            images = [obj["image"], *images]
        parts += [load_image(img, base_dir) for img in images]
        if obj.get("video") is not None:
            parts.append(_video(obj, base_dir))
        elif obj.get("num_frames") is not None or obj.get("fps") is not None:
            raise ValueError("'num_frames' and 'fps' go with a 'video'")
        if obj.get("text") is not None:
            if not isinstance(obj["text"], str):
                raise ValueError(f"'text' must be a string, got {type(obj['text']).__name__}")
            parts.append(obj["text"])
        return Item(_drop_empty_text(parts), instruction or None)
    if isinstance(obj, list):
        return Item(_drop_empty_text([_part(p, base_dir) for p in obj]))
    return Item(_drop_empty_text([_part(obj, base_dir)]))


INTERLEAVED_HINT = ("an interleaved item is a list inside the list of items: encode([['caption', image]]) embeds "
                    "one item, encode(['caption', image]) two; or write {'parts': ['caption', {'image': image}]}")


def _part(obj: Any, base_dir: Path | None) -> str | Image.Image:
    if isinstance(obj, (list, tuple)):
        raise ValueError(f"a part of an interleaved item is text or an image, not a {type(obj).__name__}; "
                         + INTERLEAVED_HINT)
    if isinstance(obj, str):
        return obj
    if isinstance(obj, (Image.Image, Path, bytes, bytearray)):
        return load_image(obj, base_dir)
    if isinstance(obj, Video):
        return obj
    if isinstance(obj, dict) and "video" in obj and set(obj) <= _VIDEO_KEYS:
        return _video(obj, base_dir)
    if isinstance(obj, dict) and len(obj) == 1 and ("text" in obj or "image" in obj):
        if "text" in obj:
            if not isinstance(obj["text"], str):
                raise ValueError(f"text part must be a string, got {type(obj['text']).__name__}")
            return obj["text"]
        return load_image(obj["image"], base_dir)
    raise ValueError(
        f"unsupported item type {type(obj).__name__}; expected text (str), an image (PIL.Image or "
        "pathlib.Path), a video ({'video': path, 'num_frames': N}), a list of parts, or a dict with "
        "text/image/images/video/parts; " + INTERLEAVED_HINT
    )


def _video(obj: dict, base_dir: Path | None) -> Video:
    return load_video(obj["video"], obj.get("num_frames", DEFAULT_NUM_FRAMES), obj.get("fps"), base_dir)


def _drop_empty_text(parts: list) -> list:
    return [p for p in parts if not (isinstance(p, str) and not p.strip())]


def item_text(obj: Any) -> str | None:
    """The text an item holds (its text parts in reading order, joined by spaces; the instruction is not
    part of it), read from the item as given: no image is opened. None when it holds no text."""
    if isinstance(obj, Item):
        texts = [p for p in obj.parts if isinstance(p, str)]
    elif isinstance(obj, str):
        texts = [obj]
    elif isinstance(obj, list):
        texts = [_part_text(p) for p in obj]
    elif isinstance(obj, dict):
        parts = obj.get("parts") if isinstance(obj.get("parts"), list) else []
        texts = [_part_text(p) for p in parts] + [obj.get("text") if isinstance(obj.get("text"), str) else None]
    else:
        texts = []
    joined = " ".join(t.strip() for t in texts if isinstance(t, str) and t.strip())
    return joined or None


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and isinstance(part.get("text"), str):
        return part["text"]
    return None


def resolve_paths(item: Any, base_dir: Path) -> Any:
    """Items read from JSON name images by string paths: make them Paths relative to ``base_dir``."""
    if isinstance(item, dict):
        out = dict(item)
        if isinstance(out.get("image"), str):
            out["image"] = base_dir / out["image"]
        if isinstance(out.get("images"), list):
            out["images"] = [base_dir / p if isinstance(p, str) else p for p in out["images"]]
        if isinstance(out.get("video"), str):
            out["video"] = base_dir / out["video"]
        if isinstance(out.get("parts"), list):
            out["parts"] = [_resolve_part(p, base_dir) for p in out["parts"]]
        return out
    if isinstance(item, list):
        return [_resolve_part(p, base_dir) for p in item]
    return item


def _resolve_part(part: Any, base_dir: Path) -> Any:
    if isinstance(part, dict) and isinstance(part.get("image"), str):
        return {"image": base_dir / part["image"]}
    if isinstance(part, dict) and isinstance(part.get("video"), str):
        return {**part, "video": base_dir / part["video"]}
    return part
