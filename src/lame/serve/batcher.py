"""Dynamic batching: concurrent requests that arrive within ``max_wait_ms`` share one model call.

Requests wait in a bounded asyncio queue (full -> :class:`QueueFull`, answered 503). One collector
task takes the first waiting request, keeps taking more until the batch holds ``max_batch_size``
items or the wait is over, and runs the batch in the single model thread. While the model runs,
new requests queue up and form the next batch. A request cancelled while it waits (its client went
away) is dropped when the collector reaches it, never run.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .engine import BatchResult


class QueueFull(Exception):
    pass


class ItemRejected(Exception):
    def __init__(self, index: int, reason: str):
        super().__init__(f"input {index}: {reason}")
        self.index, self.reason = index, reason


@dataclass
class _Job:
    items: list
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    def __init__(self, run: Callable[[list], BatchResult], max_batch_size: int = 32, max_wait_ms: float = 0.0,
                 max_queue: int = 256, metrics=None):
        self.run, self.metrics = run, metrics
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.max_queue = max_queue
        self.batches = 0  # model calls so far
        self.items = 0  # items embedded so far
        self.cancelled = 0  # requests given up while queued (their client went away): never run
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lame-model")
        self._task = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(QueueFull())
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, items: list) -> tuple[np.ndarray, list[int]]:
        """Embeddings ``(n, d)`` and token counts of ``items``; raises :class:`QueueFull` or
        :class:`ItemRejected` (the first item the model refused)."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        job = _Job(items, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull() from None
        self._observe_depth()
        return await job.future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        carried: _Job | None = None
        while True:
            first = carried or await self._queue.get()
            carried = None
            jobs, size = [first], len(first.items)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch_size:
                remaining = deadline - loop.time()
                try:
                    job = self._queue.get_nowait() if remaining <= 0 else \
                        await asyncio.wait_for(self._queue.get(), remaining)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if size + len(job.items) > self.max_batch_size:
                    carried = job  # starts the next batch: a batch never exceeds max_batch_size items
                    break
                jobs.append(job)
                size += len(job.items)
            self._observe_depth()
            self.cancelled += sum(j.future.cancelled() for j in jobs)
            await self._run(loop, [j for j in jobs if not j.future.done()])

    async def _run(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        if not jobs:
            return
        items = [item for job in jobs for item in job.items]
        try:
            result = await loop.run_in_executor(self._executor, self.run, items)
        except Exception as exc:  # a bug or a device error: keep serving, and fail only the request(s) it belongs to
            if len(jobs) == 1:
                if not jobs[0].future.done():
                    jobs[0].future.set_exception(exc)
                return
            for job in jobs:  # each request alone, so one request's failure is never its batch-mates'
                if not job.future.done():
                    await self._run(loop, [job])
            return
        self.batches += 1
        self.items += len(items)
        if self.metrics is not None:
            self.metrics.observe_batch(len(items))
        start = 0
        for job in jobs:
            stop = start + len(job.items)
            rejected = sorted(i - start for i in result.rejected if start <= i < stop)
            if not job.future.done():
                if rejected:
                    job.future.set_exception(ItemRejected(rejected[0], result.rejected[rejected[0] + start]))
                else:
                    job.future.set_result((result.embeddings[start:stop], result.tokens[start:stop]))
            start = stop

    def _observe_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.queue_depth)
