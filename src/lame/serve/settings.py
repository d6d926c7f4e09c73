"""Every knob of the server; most are `lame serve` flags, declared here once."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cli_options import option
from ..errors import InvalidInput


@dataclass(frozen=True)
class ServeSettings:
    """The server's knobs; those with option metadata are `lame serve` flags (lame.cli_options)."""

    model_name: str = field(default="lame", metadata=option(
        "`model` in responses when a request names none (default: the model folder's name)",
        flag="--served-model-name"))
    max_batch_size: int = field(default=32, metadata=option("items per model forward; 1 turns batching off"))
    max_wait_ms: float = field(default=0.0, metadata=option(
        "how long a batch waits for more requests (whatever queued while the model ran still shares the next "
        "batch)"))
    max_queue: int = field(default=256, metadata=option("waiting requests before 503 + Retry-After"))
    api_key: str | None = field(default=None, metadata=option(
        "require 'Authorization: Bearer KEY' on /v1/* (default: $LAME_API_KEY)"))
    max_body_bytes: int = field(default=16 * 1024 * 1024, metadata=option(
        "request body size; also caps a fetched image"))
    max_items: int = field(default=256, metadata=option("inputs per request"))
    max_images_per_item: int = field(default=8, metadata=option("images in one item"))
    max_image_pixels: int | None = field(default=None, metadata=option(
        "pixels one image may decode to (a JPEG decodes at 1/2..1/8 scale when the model reads less); "
        "default: 4x what the model's image processor keeps, within 1024^2..4096^2"))
    decode_workers: int = field(default=2, metadata=option(
        "images decoded at once (each at most --max-image-pixels in memory)"))
    max_inflight_bytes: int = field(default=1024**3, metadata=option(
        "memory for request bodies and decoded images of requests not yet answered; beyond it, 503 + "
        "Retry-After"))
    allow_image_url_hosts: tuple[str, ...] = field(default=(), metadata=option(
        "fetch http(s) image URLs from this host (repeatable); otherwise only data: URIs",
        flag="--allow-image-url-host", metavar="HOST", repeat=True))
    cors_origins: tuple[str, ...] = field(default=(), metadata=option(
        "let browser pages from ORIGIN (e.g. https://app.example.com, or *) call the API (repeatable)",
        flag="--cors-origin", metavar="ORIGIN", repeat=True))
    # what a request embeds with unless it says (flags: lame.elastic_options.ElasticOptions); None: the model's K,
    # its full size (a /v1/search query: the index's size)
    num_reason_tokens: int | None = None
    dimensions: int | None = None
    image_fetch_timeout_s: float = 10.0
    max_k: int = 1000  # largest k for /v1/search
    retry_after_s: int = 1  # the Retry-After header of a 503

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_body_bytes", "max_items", "max_images_per_item",
                     "max_image_pixels", "decode_workers", "max_inflight_bytes", "max_k"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise InvalidInput(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")


def default_image_pixels(model_pixels: int | None) -> int:
    """The default ``--max-image-pixels`` for a model whose image processor keeps at most ``model_pixels``
    pixels of an image: 4x that (twice its side), at least 1024^2 (ordinary photos and screenshots stay
    decodable for low-resolution models) and at most 4096^2."""
    if not model_pixels:
        return 4096 * 4096
    return min(max(4 * model_pixels, 1024 * 1024), 4096 * 4096)
