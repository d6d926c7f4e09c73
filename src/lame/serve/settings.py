"""Every knob of the server, with the command-line flag that sets it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput


@dataclass(frozen=True)
class ServeSettings:
    model_name: str = "lame"  # echoed as `model` when a request names none
    max_batch_size: int = 32  # --max-batch-size: items in one model forward (1 turns batching off)
    max_wait_ms: float = 5.0  # --max-wait-ms: how long a batch waits for more requests
    max_queue: int = 256  # --max-queue: requests waiting for the model; beyond it, 503 + Retry-After
    api_key: str | None = None  # --api-key: required as `Authorization: Bearer KEY` on /v1/*
    max_body_bytes: int = 16 * 1024 * 1024  # --max-body-bytes: request body; also caps a fetched image
    max_items: int = 256  # --max-items: inputs in one request
    max_images_per_item: int = 8  # --max-images-per-item
    max_image_pixels: int = 4096 * 4096  # --max-image-pixels: width x height of one image
    allow_image_url_hosts: tuple[str, ...] = ()  # --allow-image-url-host: http(s) image hosts (repeatable)
    image_fetch_timeout_s: float = 10.0
    max_k: int = 1000  # largest k for /v1/search
    retry_after_s: int = 1  # the Retry-After header of a 503

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_body_bytes", "max_items", "max_images_per_item",
                     "max_image_pixels", "max_k"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise InvalidInput(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
