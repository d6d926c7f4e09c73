"""Images from requests: ``data:`` URIs, or http(s) URLs on allow-listed hosts; never a local file.

Only PNG, JPEG, WebP and GIF are decoded (the first frame of a GIF); Pillow is never asked to try
another format. Decoding is bounded by what the model reads: the image's header gives its size,
the model's image processor the size it would shrink it to; a JPEG is then decoded directly at
1/2, 1/4 or 1/8 scale (never below that size), the pixel limit is checked against what will be
decoded, before any pixel is, and the decoded image is shrunk to the processor's size at once. At
most ``decode_workers`` images are decoded at a time. The image is handed on as a ``PIL.Image``
(never a path), so nothing in a request can make the server open a file.
"""

from __future__ import annotations

import base64
import binascii
import io
import threading
from typing import Callable
from urllib.parse import urlsplit

import httpx
from PIL import Image

from .errors import APIError
from .settings import ServeSettings

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")  # what Image.open may try; nothing else is ever parsed
Target = Callable[[int, int], "tuple[int, int] | None"]


class ImageLoader:
    """``load(url, param)`` -> RGB ``PIL.Image``, or :class:`APIError` naming what was wrong."""

    def __init__(self, settings: ServeSettings, max_pixels: int | None = None, target: Target | None = None,
                 resample: int = Image.Resampling.BICUBIC):
        """``max_pixels``: the most pixels one image may decode to (default ``settings.max_image_pixels``);
        ``target(width, height)``: the size the model's processor shrinks an image to, or None."""
        self.settings = settings
        self.max_pixels = max_pixels or settings.max_image_pixels or 4096 * 4096
        self.target, self.resample = target, resample
        self._decoding = threading.BoundedSemaphore(settings.decode_workers)
        self._client = httpx.Client(timeout=settings.image_fetch_timeout_s, follow_redirects=False) \
            if settings.allow_image_url_hosts else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def load(self, url: str, param: str) -> Image.Image:
        if not isinstance(url, str) or not url:
            raise APIError(400, "an image_url must be a non-empty string", param, "invalid_image_url")
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            return self._decode(_data_uri_bytes(url, param), param)
        if scheme in ("http", "https"):
            return self._decode(self._fetch(url, param), param)
        if scheme == "file":
            raise APIError(400, "file:// image URLs are refused: the server never reads its own files; send the "
                           "image as a data: URI", param, "image_url_refused")
        raise APIError(400, "an image_url must be a data: URI (data:image/png;base64,...) or an http(s) URL on an "
                       "allowed host; local paths are refused", param, "image_url_refused")

    def _fetch(self, url: str, param: str) -> bytes:
        host = urlsplit(url).hostname
        if self._client is None or host not in self.settings.allow_image_url_hosts:
            raise APIError(400, f"image URL host {host!r} is not allowed (--allow-image-url-host); send the image "
                           "as a data: URI", param, "image_url_refused")
        limit = self.settings.max_body_bytes
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise APIError(400, f"fetching the image URL gave HTTP {response.status_code}", param,
                                   "image_fetch_failed")
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise APIError(400, f"the image at the URL is larger than {limit} bytes (--max-body-bytes)",
                                       param, "image_too_large")
                return bytes(data)
        except httpx.HTTPError as exc:
            raise APIError(400, f"fetching the image URL failed ({type(exc).__name__})", param,
                           "image_fetch_failed") from exc

    def _decode(self, data: bytes, param: str) -> Image.Image:
        with self._decoding:  # bounded: at most decode_workers full-size decodes in memory at once
            return self._decode_now(data, param)

    def _decode_now(self, data: bytes, param: str) -> Image.Image:
        limit = self.max_pixels
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
            width, height = image.size
            if width < 1 or height < 1:
                raise APIError(400, "the image is empty", param, "invalid_image")
            goal = self.target(width, height) if self.target is not None else None
            if goal is not None and image.format == "JPEG":
                image.draft("RGB", goal)  # decode at 1/2, 1/4 or 1/8 scale, never below the goal
            if image.width * image.height > limit:
                scaled = f" (decoded at {image.width}x{image.height})" if image.size != (width, height) else ""
                raise APIError(400, f"image is {width}x{height}{scaled} = {image.width * image.height} pixels to "
                               f"decode; the limit is {limit} (--max-image-pixels): send a smaller image",
                               param, "image_too_large")
            image.load()
            image = _shrink(image, goal, self.resample)
        except APIError:
            raise
        except Image.DecompressionBombError as exc:
            raise APIError(400, f"image is too large ({exc}); the limit is {limit} pixels (--max-image-pixels)",
                           param, "image_too_large") from exc
        except Image.UnidentifiedImageError as exc:
            raise APIError(400, f"the data is not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image", param,
                           "invalid_image") from exc
        except Exception as exc:  # PIL raises many types for corrupt data
            raise APIError(400, f"the image could not be decoded ({type(exc).__name__}: {exc})", param,
                           "invalid_image") from exc
        return image


def _shrink(image: Image.Image, goal: tuple[int, int] | None, resample: int) -> Image.Image:
    """RGB at the processor's size: what the processor itself would make of the image (the same
    resampling; beyond 6x, an integer box reduction first, which costs a fraction of the time)."""
    if image.mode == "L" and goal is not None:  # grey: shrink one channel, then copy it
        return image.resize(goal, resample, reducing_gap=3.0).convert("RGB")
    image = image.convert("RGB")  # what lame's item schema does with every image
    if goal is not None and image.size != goal:
        image = image.resize(goal, resample, reducing_gap=3.0)
    return image


def _data_uri_bytes(url: str, param: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.lower().startswith("data:image/") or not header.lower().endswith(";base64"):
        raise APIError(400, "a data URI must look like data:image/<type>;base64,<data>", param, "invalid_image_url")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise APIError(400, f"the image's base64 data is corrupt ({exc})", param, "invalid_base64") from exc
