"""Dynamic micro-batching: requests for one ONNX model queue up and run together.

Semantics follow Triton's dynamic batcher: a batch is dispatched as soon as it holds
``max_batch_size`` requests, or when its oldest request has waited ``max_queue_delay_s``
(0 = never wait: take whatever is queued). While one batch computes, the next one collects,
so under load batches form even with no delay. ``max_batch_size=1`` turns batching off.

The model runs in a caller-supplied executor (one thread on a 2-core box): onnxruntime releases
the GIL, so the event loop keeps serving gRPC while a batch computes. Results come back through
one future per request; callers that need ordering (streams) await them in their own order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher already holds max_queue_size requests."""


class Expired(Exception):
    """The request's deadline passed while it was queued."""


class Closed(Exception):
    """The batcher no longer accepts requests (shutdown)."""


@dataclass(frozen=True)
class BatchResult:
    output: np.ndarray  # this request's row of the model output
    queue_s: float  # arrival (submit) to the start of its batch
    compute_s: float  # the batch's model run
    batch_size: int


@dataclass
class _Job:
    x: np.ndarray
    arrival: float
    deadline: float | None
    future: asyncio.Future


class Batcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        executor,
        max_batch_size: int = 32,
        max_queue_delay_s: float = 0.0,
        max_queue_size: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "",
    ):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_queue_delay_s < 0:
            raise ValueError("max_queue_delay_s must be >= 0")
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self._on_batch = on_batch
        self.name = name
        self._queue: collections.deque[_Job] = collections.deque()
        self._wakeup = asyncio.Event()  # something was queued (or close() was called)
        self._full = asyncio.Event()  # the queue holds a full batch
        self._closing = False
        self._task: asyncio.Task | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    def submit(self, x: np.ndarray, deadline: float | None = None, arrival: float | None = None) -> asyncio.Future:
        """Queue one sample (no batch dimension); the future resolves to a BatchResult.

        ``deadline`` and ``arrival`` are time.perf_counter() values.
        """
        if self._closing:
            raise Closed(f"{self.name}: the server is shutting down")
        if len(self._queue) >= self.max_queue_size:
            raise QueueFull(f"{self.name}: queue full ({self.max_queue_size} requests waiting)")
        future = asyncio.get_running_loop().create_future()
        arrival = time.perf_counter() if arrival is None else arrival
        self._queue.append(_Job(x, arrival, deadline, future))
        self._wakeup.set()
        if len(self._queue) >= self.max_batch_size:
            self._full.set()
        return future

    async def close(self) -> None:
        """Stop accepting requests, finish the queued ones, stop the worker."""
        self._closing = True
        self._wakeup.set()
        self._full.set()
        if self._task is not None:
            await self._task

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._collect()
            batch = self._take()
            if batch:
                await self._execute(batch)

    async def _collect(self) -> None:
        """Wait for the batch to fill, at most until the oldest request has waited the delay."""
        if self.max_queue_delay_s <= 0 or self.max_batch_size == 1:
            return
        until = self._queue[0].arrival + self.max_queue_delay_s
        while len(self._queue) < self.max_batch_size and not self._closing:
            remaining = until - time.perf_counter()
            if remaining <= 0:
                return
            self._full.clear()
            try:
                await asyncio.wait_for(self._full.wait(), remaining)
            except (TimeoutError, asyncio.TimeoutError):
                return

    def _take(self) -> list[_Job]:
        batch: list[_Job] = []
        now = time.perf_counter()
        while self._queue and len(batch) < self.max_batch_size:
            job = self._queue.popleft()
            if job.future.done():  # the caller gave up (cancelled RPC)
                continue
            if job.deadline is not None and now >= job.deadline:
                job.future.set_exception(Expired(f"deadline exceeded after {1e3 * (now - job.arrival):.1f} ms in the queue"))
                continue
            batch.append(job)
        if len(self._queue) < self.max_batch_size:
            self._full.clear()
        return batch

    async def _execute(self, batch: list[_Job]) -> None:
        n = len(batch)
        start = time.perf_counter()
        try:
            x = np.stack([job.x for job in batch]) if n > 1 else batch[0].x[None]
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, x)
            if len(out) != n:
                raise RuntimeError(f"the model returned {len(out)} rows for a batch of {n}")
        except asyncio.CancelledError:
            self._fail(batch, RuntimeError("the batcher was cancelled"))
            raise
        except Exception as exc:  # a model failure fails this batch, never the worker
            log.exception("%s: batch of %d failed", self.name, n)
            self._fail(batch, exc)
            return
        compute = time.perf_counter() - start
        for i, job in enumerate(batch):
            if not job.future.done():
                job.future.set_result(BatchResult(out[i], start - job.arrival, compute, n))
        if self._on_batch is not None:
            try:
                self._on_batch(n, compute)
            except Exception:  # metrics must not stop inference
                log.exception("%s: batch callback failed", self.name)

    @staticmethod
    def _fail(batch: list[_Job], exc: BaseException) -> None:
        for job in batch:
            if not job.future.done():
                job.future.set_exception(exc)
