"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ENDPOINTS = ("/v1/embeddings", "/v1/search", "/health", "/metrics")


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch_size: int):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lame_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("lame_request_latency_seconds", "Request latency, from first byte to response",
                                 ["endpoint"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch_size})
        self.batch_size = Histogram("lame_batch_size_items", "Items per model batch", registry=r, buckets=sizes)
        self.batches = Counter("lame_batches", "Model batches run", registry=r)
        self.items = Counter("lame_items", "Items embedded", registry=r)
        self.queue_depth = Gauge("lame_queue_depth", "Requests waiting for the model", registry=r)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"  # unknown paths share one label: bounded cardinality
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, items: int) -> None:
        self.batches.inc()
        self.items.inc(items)
        self.batch_size.observe(items)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Plain ASGI middleware: counts every HTTP request by path and status, and times it."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_observed(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - start)
