"""Every knob of the server, with the command-line flag that sets it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput


@dataclass(frozen=True)
class ServeSettings:
    model_name: str = "lame"  # echoed as `model` when a request names none
    max_batch_size: int = 32  # --max-batch-size: items in one model forward (1 turns batching off)
    max_wait_ms: float = 0.0  # --max-wait-ms: how long a batch waits for more requests (0 measured best)
    max_queue: int = 256  # --max-queue: requests waiting for the model; beyond it, 503 + Retry-After
    api_key: str | None = None  # --api-key: required as `Authorization: Bearer KEY` on /v1/*
    max_body_bytes: int = 16 * 1024 * 1024  # --max-body-bytes: request body; also caps a fetched image
    max_items: int = 256  # --max-items: inputs in one request
    max_images_per_item: int = 8  # --max-images-per-item
    # --max-image-pixels: pixels one image may decode to (a JPEG is decoded at 1/2..1/8 scale when the model reads
    # less); None: sized to the model, 4x the pixels its image processor keeps, within [1024^2, 4096^2]
    max_image_pixels: int | None = None
    decode_workers: int = 2  # --decode-workers: images decoded at once (each at most max_image_pixels in memory)
    # --max-inflight-bytes: request bodies and decoded images held by requests not yet answered; beyond, 503
    max_inflight_bytes: int = 1024**3
    allow_image_url_hosts: tuple[str, ...] = ()  # --allow-image-url-host: http(s) image hosts (repeatable)
    cors_origins: tuple[str, ...] = ()  # --cors-origin: browser origins allowed to call the API ("*": any)
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
