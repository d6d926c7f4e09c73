"""Decoding one image from a PIL image, a path or bytes: what items and video frames share."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError


def load_image(source: Any, base_dir: Path | None = None) -> Image.Image:
    """Open an image from a PIL image, a path or raw bytes and return it decoded, in RGB."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (bytes, bytearray)):
        image = _decode(io.BytesIO(source), "image bytes")
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise ValueError(f"image file {str(path)!r} does not exist")
        image = _decode(path, f"image file {str(path)!r}")
    else:
        raise ValueError(f"unsupported image type {type(source).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image has an empty size {image.size}")
    return image.convert("RGB")


def _decode(source, name: str) -> Image.Image:
    try:
        image = Image.open(source)
        image.load()  # decode now, so a truncated file fails here and not deep inside the processor
    except UnidentifiedImageError as exc:
        raise ValueError(f"{name} could not be decoded (not an image format Pillow reads)") from exc
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{name} could not be decoded ({exc})") from exc
    return image
