"""``lame bench serve``: requests/s and p50/p99 latency of the server at several concurrencies.

The server runs in its own process (``lame serve``) on a loopback port, once with dynamic batching
and once with ``--max-batch-size 1`` (batching off); one client process sends single-text requests
from ``concurrency`` concurrent workers. Every level is bounded by a request count and a time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from lame.extras import require

httpx = require("httpx", extra="serve", feature="lame bench serve")

CONCURRENCY = (1, 8, 32, 128)


@dataclass
class BenchRow:
    mode: str
    max_batch_size: int
    concurrency: int
    requests: int  # answered 200
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float


def bench_serve(model_dir: str | Path | None = None, concurrency: tuple[int, ...] = CONCURRENCY, requests: int = 512,
                max_seconds: float = 20.0, max_batch_size: int = 32, max_wait_ms: float = 5.0, warmup: int = 8,
                threads: int | None = None, in_process: bool = False, startup_timeout: float = 300.0) -> dict:
    """Runs every concurrency level against a batching server and a non-batching one; returns
    ``{"rows": [...], "ratio": {mode: rps(c=32) / rps(c=1)}, "settings": {...}}``.

    ``in_process`` runs the server in a thread of this process (a quick check: client and server
    then share one interpreter, so the numbers are lower than with a server process)."""
    settings = {"model": str(model_dir) if model_dir else "tiny qwen2_vl (random)", "requests": requests,
                "max_seconds": max_seconds, "max_wait_ms": max_wait_ms, "concurrency": list(concurrency),
                "server": "thread in the client process" if in_process else "separate process", "threads": threads}
    start_server = _server_thread if in_process else _server
    rows: list[BenchRow] = []
    with _model_folder(model_dir) as folder:
        for mode, batch in (("batching", max_batch_size), ("no batching", 1)):
            with start_server(folder, batch, max_wait_ms, max_queue=max(256, 2 * max(concurrency)), threads=threads,
                              timeout=startup_timeout) as url:
                asyncio.run(_level(url, min(4, warmup), warmup, max_seconds))  # warm up the model and sockets
                for c in concurrency:
                    latencies, errors, seconds = asyncio.run(_level(url, c, requests, max_seconds))
                    rows.append(_row(mode, batch, c, latencies, errors, seconds))
    return {"rows": [asdict(r) for r in rows], "ratio": _ratios(rows), "settings": settings}


def format_report(report: dict) -> str:
    lines = [f"{'mode':<12} {'batch':>5} {'conc':>5} {'ok':>6} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"]
    for r in report["rows"]:
        lines.append(f"{r['mode']:<12} {r['max_batch_size']:>5} {r['concurrency']:>5} {r['requests']:>6} "
                     f"{r['errors']:>6} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}")
    for mode, ratio in report["ratio"].items():
        shown = "n/a (needs concurrency 1 and 32)" if ratio is None else f"{ratio:.2f}"
        lines.append(f"throughput(c=32)/throughput(c=1), {mode}: {shown}")
    return "\n".join(lines)


def _row(mode: str, batch: int, concurrency: int, latencies: list[float], errors: int, seconds: float) -> BenchRow:
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return BenchRow(mode, batch, concurrency, len(latencies), errors, round(seconds, 3),
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
            body = {"model": "bench", "input": f"benchmark query {i}: a handwritten digit {i % 10} on white paper"}
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
            timeout: float) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "lame.cli", "serve", "--model", str(model_dir), "--host", "127.0.0.1",
               "--port", str(port), "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms),
               "--max-queue", str(max_queue), "--log-level", "warning", *(["--threads", str(threads)] if threads else [])]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, process, log, timeout)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def _server_thread(model_dir: Path, max_batch_size: int, max_wait_ms: float, max_queue: int, threads: int | None,
                   timeout: float) -> Iterator[str]:
    from lame.serve.server import ServerThread, load_app
    from lame.serve.settings import ServeSettings

    settings = ServeSettings(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue)
    if threads:
        torch.set_num_threads(threads)
    with ServerThread(load_app(model_dir, settings)) as running:
        yield running.url


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
