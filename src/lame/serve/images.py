"""Images from requests: ``data:`` URIs, or http(s) URLs on allow-listed hosts; never a local file.

The image is decoded here, size-checked from its header before any pixel is decoded, and handed on
as a ``PIL.Image`` (never a path), so nothing in a request can make the server open a file.
"""

from __future__ import annotations

import base64
import binascii
import io
from urllib.parse import urlsplit

import httpx
from PIL import Image

from .errors import APIError
from .settings import ServeSettings


class ImageLoader:
    """``load(url, param)`` -> RGB ``PIL.Image``, or :class:`APIError` naming what was wrong."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
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
        limit = self.settings.max_image_pixels
        try:
            image = Image.open(io.BytesIO(data))  # reads the header only
            if image.width * image.height > limit:
                raise APIError(400, f"image is {image.width}x{image.height} = {image.width * image.height} pixels; "
                               f"the limit is {limit} (--max-image-pixels)", param, "image_too_large")
            image.load()
        except APIError:
            raise
        except Image.DecompressionBombError as exc:
            raise APIError(400, f"image is too large ({exc}); the limit is {limit} pixels (--max-image-pixels)",
                           param, "image_too_large") from exc
        except Exception as exc:  # PIL raises many types for corrupt data
            raise APIError(400, f"the image could not be decoded ({type(exc).__name__}: {exc})", param,
                           "invalid_image") from exc
        if image.width < 1 or image.height < 1:
            raise APIError(400, "the image is empty", param, "invalid_image")
        return image.convert("RGB")


def _data_uri_bytes(url: str, param: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.lower().startswith("data:image/") or not header.lower().endswith(";base64"):
        raise APIError(400, "a data URI must look like data:image/<type>;base64,<data>", param, "invalid_image_url")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise APIError(400, f"the image's base64 data is corrupt ({exc})", param, "invalid_base64") from exc
