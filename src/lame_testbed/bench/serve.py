"""``lame bench serve``: requests/s and p50/p99 latency of the server at several concurrencies, and
(``--scenario images``) the memory and latency cost of large images.

The server runs in its own process (``lame serve``) on a loopback port, once with dynamic batching
and once with ``--max-batch-size 1`` (batching off); one client process sends single-text requests
from ``concurrency`` concurrent workers. Every level is bounded by a request count and a time limit.

The images scenario starts one server and measures: its resident memory at rest, the peak it reaches
while one large request (several big images) is served alone, and the p50/p99 latency of one-word
requests on their own and while clients keep sending large requests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from lame.extras import require

httpx = require("httpx", extra="serve", feature="lame bench serve")

CONCURRENCY = (1, 8, 32, 128)


@dataclass
class BenchRow:
    mode: str
    max_batch_size: int
    max_wait_ms: float
    concurrency: int
    requests: int  # answered 200
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float

    @property
    def label(self) -> str:
        return self.mode


def bench_serve(model_dir: str | Path | None = None, concurrency: tuple[int, ...] = CONCURRENCY, requests: int = 512,
                max_seconds: float = 20.0, max_batch_size: int = 32, max_wait_ms: float | Sequence[float] = 0.0,
                warmup: int = 8, threads: int | None = None, in_process: bool = False, rounds: int = 1,
                startup_timeout: float = 300.0) -> dict:
    """Runs every concurrency level against batching servers (one per ``max_wait_ms`` value) and a
    non-batching one; returns ``{"rows": [...], "ratio": {mode: rps(c=32) / rps(c=1)}, "settings": {...}}``.

    Every server runs from the start, and each level visits them in turn, ``rounds`` times (in
    alternating order, each round with its share of ``requests`` and ``max_seconds``), so servers are
    compared under the same background load even on a busy shared machine.
    ``in_process`` runs the servers in threads of this process (a quick check: client and server
    then share one interpreter, so the numbers are lower than with a server process)."""
    waits = [float(max_wait_ms)] if isinstance(max_wait_ms, (int, float)) else [float(w) for w in max_wait_ms]
    settings = {"model": str(model_dir) if model_dir else "tiny qwen2_vl (random)", "requests": requests,
                "max_seconds": max_seconds, "max_wait_ms": waits, "concurrency": list(concurrency), "rounds": rounds,
                "server": "thread in the client process" if in_process else "separate process", "threads": threads}
    start_server = _server_thread if in_process else _server
    modes = [("batching" if len(waits) == 1 else f"batching {w:g}ms", max_batch_size, w) for w in waits]
    modes.append(("no batching", 1, 0.0))
    per_round, seconds_per_round = -(-requests // rounds), max_seconds / rounds
    results: dict[tuple[int, int], tuple[list[float], int, float]] = {}
    with _model_folder(model_dir) as folder, contextlib.ExitStack() as stack:
        urls = [stack.enter_context(start_server(folder, batch, wait, max_queue=max(256, 2 * max(concurrency)),
                                                 threads=threads, timeout=startup_timeout))[0]
                for _, batch, wait in modes]
        for url in urls:
            asyncio.run(_level(url, min(4, warmup), warmup, max_seconds))  # warm up the model and sockets
        for c in concurrency:
            for r in range(rounds):
                order = range(len(modes)) if r % 2 == 0 else reversed(range(len(modes)))
                for m in order:
                    latencies, errors, seconds = asyncio.run(_level(urls[m], c, per_round, seconds_per_round))
                    before = results.get((m, c), ([], 0, 0.0))
                    results[(m, c)] = (before[0] + latencies, before[1] + errors, before[2] + seconds)
    rows = [_row(mode, batch, wait, c, *results[(m, c)]) for m, (mode, batch, wait) in enumerate(modes)
            for c in concurrency]
    return {"rows": [asdict(r) for r in rows], "ratio": _ratios(rows), "settings": settings}


def format_report(report: dict) -> str:
    lines = [f"{'mode':<16} {'batch':>5} {'conc':>5} {'wait ms':>7} {'ok':>6} {'errors':>6} {'req/s':>8} "
             f"{'p50 ms':>8} {'p99 ms':>8}"]
    for r in report["rows"]:
        lines.append(f"{r['mode']:<16} {r['max_batch_size']:>5} {r['concurrency']:>5} {r['max_wait_ms']:>7g} "
                     f"{r['requests']:>6} {r['errors']:>6} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}")
    for mode, ratio in report["ratio"].items():
        shown = "n/a (needs concurrency 1 and 32)" if ratio is None else f"{ratio:.2f}"
        lines.append(f"throughput(c=32)/throughput(c=1), {mode}: {shown}")
    return "\n".join(lines)


def _row(mode: str, batch: int, wait: float, concurrency: int, latencies: list[float], errors: int,
         seconds: float) -> BenchRow:
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return BenchRow(mode, batch, wait, concurrency, len(latencies), errors, round(seconds, 3),
                    len(latencies) / seconds if seconds > 0 else 0.0,
                    float(np.percentile(ms, 50)), float(np.percentile(ms, 99)))


def _ratios(rows: list[BenchRow]) -> dict[str, float | None]:
    out = {}
    for mode in dict.fromkeys(r.mode for r in rows):
        by_c = {r.concurrency: r.rps for r in rows if r.mode == mode}
        out[mode] = by_c[32] / by_c[1] if by_c.get(1) and 32 in by_c else None
    return out


async def _level(url: str, concurrency: int, requests: int, max_seconds: float) -> tuple[list[float], int, float]:
    # One client (one keep-alive connection) per worker: httpcore's shared pool costs O(connections) per
    # request, which made the client, not the server, the bottleneck at concurrency 128.
    clients = [httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=1),
                                 trust_env=False) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    numbers = itertools.count()
    start = time.perf_counter()
    deadline = start + max_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while (i := next(numbers)) < requests and time.perf_counter() < deadline:
            body = {"input": f"benchmark query {i}: a handwritten digit {i % 10} on white paper"}
            sent = time.perf_counter()
            try:
                response = await client.post("/v1/embeddings", json=body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - sent)
            else:
                errors += 1

    try:
        await asyncio.gather(*(worker(client) for client in clients))
        return latencies, errors, time.perf_counter() - start
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))


@contextlib.contextmanager
def _model_folder(model_dir: str | Path | None) -> Iterator[Path]:
    if model_dir is not None:
        yield Path(model_dir)
        return
    from lame.modeling import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="lame-bench-") as tmp:
        build_tiny_model("qwen2_vl", seed=0).save_pretrained(Path(tmp) / "model")
        yield Path(tmp) / "model"


@contextlib.contextmanager
def _server(model_dir: Path, max_batch_size: int, max_wait_ms: float, max_queue: int, threads: int | None,
            timeout: float, flags: Sequence[str] = (), env: dict | None = None) -> Iterator[tuple[str, int]]:
    """``lame serve`` in a child process: yields its URL and process id."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "lame.cli", "serve", "--model", str(model_dir), "--host", "127.0.0.1",
               "--port", str(port), "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms),
               "--max-queue", str(max_queue), "--log-level", "warning", *(["--threads", str(threads)] if threads else []),
               *flags]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, process, log, timeout)
            yield url, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def _server_thread(model_dir: Path, max_batch_size: int, max_wait_ms: float, max_queue: int, threads: int | None,
                   timeout: float, **_) -> Iterator[tuple[str, int]]:
    from lame.serve.server import ServerThread, load_app
    from lame.serve.settings import ServeSettings

    settings = ServeSettings(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue)
    if threads:
        torch.set_num_threads(threads)
    with ServerThread(load_app(model_dir, settings)) as running:
        yield running.url, os.getpid()


def _wait_healthy(url: str, process: subprocess.Popen, log, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read().decode()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server did not answer {url}/health within {timeout} s")


def save_report(report: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2))


# ------------------------------------------------------------------------------------ images scenario
IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}


def bench_serve_images(model_dir: str | Path | None = None, image_format: str = "png", image_side: int = 4096,
                       images_per_request: int = 8, heavy_clients: int = 2, small_concurrency: int = 4,
                       seconds: float = 20.0, max_batch_size: int = 32, max_wait_ms: float = 0.0,
                       threads: int | None = None, server_flags: Sequence[str] = (), in_process: bool = False,
                       env: dict | None = None, startup_timeout: float = 300.0) -> dict:
    """The cost of large images: memory of the server at rest and while one large request runs alone,
    and the latency of one-word requests alone and while ``heavy_clients`` keep sending large requests
    (``images_per_request`` images of ``image_side`` squared pixels each, in ``image_format``).

    ``server_flags`` are extra ``lame serve`` flags; ``env`` the server process's environment (to
    measure another installation of lame, e.g. with another ``PYTHONPATH``)."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    image = _bench_image(image_side, IMAGE_FORMATS[image_format])
    uri = f"data:image/{image_format};base64," + base64.b64encode(image).decode()
    heavy = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is in these pictures?"}] + [
        {"type": "image_url", "image_url": {"url": uri}}] * images_per_request}]}
    heavy_body = json.dumps(heavy).encode()
    settings = {"model": str(model_dir) if model_dir else "tiny qwen2_vl (random)", "image_format": image_format,
                "image_side": image_side, "image_bytes": len(image), "images_per_request": images_per_request,
                "request_bytes": len(heavy_body), "heavy_clients": heavy_clients,
                "small_concurrency": small_concurrency, "seconds": seconds, "max_batch_size": max_batch_size,
                "max_wait_ms": max_wait_ms, "server_flags": list(server_flags), "threads": threads,
                "server": "thread in the client process" if in_process else "separate process"}
    start_server = _server_thread if in_process else _server
    with _model_folder(model_dir) as folder, \
            start_server(folder, max_batch_size, max_wait_ms, max_queue=256, threads=threads,
                         timeout=startup_timeout, flags=tuple(server_flags), env=env) as (url, pid):
        memory = _Memory(pid)
        asyncio.run(_level(url, 2, 8, seconds))  # warm up the model and sockets
        idle = memory.rss_mb()
        memory.reset_peak()
        solo_seconds, solo_status = asyncio.run(_heavy_once(url, heavy_body))
        solo_peak = memory.peak_mb()
        time.sleep(0.5)
        after = memory.rss_mb()
        small_alone = asyncio.run(_mixed(url, small_concurrency, 0, heavy_body, seconds / 2))
        memory.reset_peak()
        loaded = asyncio.run(_mixed(url, small_concurrency, heavy_clients, heavy_body, seconds))
        loaded_peak = memory.peak_mb()
        memory.close()
    return {"settings": settings, "idle_rss_mb": idle,
            "solo": {"status": solo_status, "seconds": solo_seconds, "peak_rss_mb": solo_peak,
                     "peak_increase_mb": solo_peak - idle, "kept_mb": after - idle},
            "small_alone": small_alone["small"],
            "under_load": {**loaded, "peak_rss_mb": loaded_peak, "peak_increase_mb": loaded_peak - idle}}


def format_images_report(report: dict) -> str:
    s, solo = report["settings"], report["solo"]
    alone, load = report["small_alone"], report["under_load"]
    heavy = load["heavy"]
    return "\n".join([
        f"large request: {s['images_per_request']} x {s['image_side']}^2 {s['image_format']} "
        f"({s['request_bytes'] / 1024:.0f} KiB); server flags: {' '.join(s['server_flags']) or '(defaults)'}",
        f"server memory at rest: {report['idle_rss_mb']:.0f} MiB",
        f"one large request alone: HTTP {solo['status']} in {solo['seconds'] * 1000:.0f} ms, "
        f"peak memory +{solo['peak_increase_mb']:.0f} MiB (+{solo['kept_mb']:.0f} MiB still held after it)",
        f"one-word requests alone (c={s['small_concurrency']}): {alone['count']} ok, "
        f"p50 {alone['p50_ms']:.1f} ms, p99 {alone['p99_ms']:.1f} ms",
        f"one-word requests with {s['heavy_clients']} clients sending large ones: {load['small']['count']} ok, "
        f"{load['small']['errors']} errors, p50 {load['small']['p50_ms']:.1f} ms, p99 {load['small']['p99_ms']:.1f} ms",
        f"large requests meanwhile: {heavy['count']} answered {heavy['statuses']}, p50 {heavy['p50_ms']:.0f} ms; "
        f"peak memory +{load['peak_increase_mb']:.0f} MiB",
    ])


def _bench_image(side: int, fmt: str) -> bytes:
    """A smooth picture with a few shapes (compresses well, like a screenshot or a drawing)."""
    from PIL import Image, ImageDraw

    gradient = Image.linear_gradient("L").resize((side, side))
    image = Image.merge("RGB", [gradient, gradient.rotate(90), Image.radial_gradient("L").resize((side, side))])
    image = image.quantize(16).convert("RGB")
    draw = ImageDraw.Draw(image)
    step = max(side // 16, 1)
    for i in range(0, side, step):
        draw.ellipse((i, i // 2, i + step, i // 2 + step), outline=(255, 0, 0), width=max(side // 512, 1))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 85} if fmt in ("JPEG", "WEBP") else {}))
    return buffer.getvalue()


async def _heavy_once(url: str, body: bytes) -> tuple[float, int]:
    async with httpx.AsyncClient(base_url=url, timeout=600, trust_env=False) as client:
        sent = time.perf_counter()
        response = await client.post("/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
        return time.perf_counter() - sent, response.status_code


async def _mixed(url: str, small: int, heavy: int, heavy_body: bytes, seconds: float) -> dict:
    """``small`` workers send one-word requests and ``heavy`` workers large ones, for ``seconds``."""
    deadline = time.perf_counter() + seconds
    small_ms: list[float] = []
    heavy_ms: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0

    async def worker(kind: str) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=1),
                                     trust_env=False) as client:
            i = 0
            while time.perf_counter() < deadline:
                i += 1
                sent = time.perf_counter()
                try:
                    if kind == "small":
                        response = await client.post("/v1/embeddings", json={"input": f"word{i % 100}"})
                    else:
                        response = await client.post("/v1/embeddings", content=heavy_body,
                                                     headers={"Content-Type": "application/json"})
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                took = (time.perf_counter() - sent) * 1000
                if kind == "heavy":
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    heavy_ms.append(took)
                elif status == 200:
                    small_ms.append(took)
                else:
                    errors += 1

    await asyncio.gather(*[worker("small") for _ in range(small)], *[worker("heavy") for _ in range(heavy)])
    return {"small": {**_percentiles(small_ms), "errors": errors},
            "heavy": {**_percentiles(heavy_ms), "statuses": statuses}}


def _percentiles(ms: list[float]) -> dict:
    values = np.array(ms) if ms else np.array([np.nan])
    return {"count": len(ms), "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


class _Memory:
    """Resident memory of a process: now, and its peak since :meth:`reset_peak` (Linux ``VmHWM``,
    reset through ``clear_refs``; elsewhere, or where that is not allowed, sampled every 5 ms)."""

    def __init__(self, pid: int):
        self.pid = pid
        self._status = Path(f"/proc/{pid}/status")
        self._sampled = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = self._status.is_file() and self._can_reset()
        if not self._hwm:
            self._thread = threading.Thread(target=self._sample, daemon=True, name="lame-bench-memory")
            self._thread.start()

    def _can_reset(self) -> bool:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def _read(self, key: str) -> float:
        for line in self._status.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
        raise RuntimeError(f"{key} not in {self._status}")

    def rss_mb(self) -> float:
        if self._status.is_file():
            return self._read("VmRSS")
        import psutil

        return psutil.Process(self.pid).memory_info().rss / 2**20

    def reset_peak(self) -> None:
        if self._hwm:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self._sampled = self.rss_mb()

    def peak_mb(self) -> float:
        return self._read("VmHWM") if self._hwm else max(self._sampled, self.rss_mb())

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            try:
                self._sampled = max(self._sampled, self.rss_mb())
            except Exception:  # noqa: BLE001  (the process ended)
                return

    def close(self) -> None:
        self._stop.set()
