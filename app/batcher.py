"""Dynamic micro-batching: many small inference requests become few backend calls.

A request (one or more rows) waits at most ``max_queue_delay_us`` for others to join
it, or less once ``max_batch_size`` rows are queued; one backend call serves the batch
and each caller gets its own rows back. At most ``max_concurrent_batches`` calls are
in flight; while they run, new requests queue up and form the next, larger batch. The
queue is bounded in rows: a request that does not fit is refused at once with
``QueueFullError`` (the gRPC layer answers RESOURCE_EXHAUSTED) instead of growing
memory without bound.

asyncio's timers round up to the millisecond on Linux (epoll), too coarse for a
sub-millisecond queue delay; spinning on ``sleep(0)`` until the deadline kept the
bound but burnt a core for the whole delay. The deadline is kept by a helper thread
instead (``DeadlineWaker``: a condition-variable wait, microsecond-accurate) that wakes
the loop once; the loop sleeps meanwhile.

Each backend call is timed (``signal_inference_duration_seconds{backend}``), and the
rows it served go to the skew monitor when the model's manifest records its training
distribution (``app.skew``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.inference import Inference, InferenceBackend, check_inputs
from app.skew import SkewMonitor
from app.telemetry import default_metrics

log = logging.getLogger(__name__)


class DeadlineWaker:
    """Calls a callback on an event loop at a ``time.perf_counter`` deadline, from a helper
    thread: one pending deadline, re-armed or cancelled at will, no polling."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: tuple[float, asyncio.AbstractEventLoop, Callable[[], None]] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(
        self, deadline: float, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]
    ) -> None:
        """Run ``wake`` on ``loop`` at ``deadline`` (replacing any pending deadline)."""
        with self._cond:
            self._pending = (deadline, loop, wake)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="batcher-deadline",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            self._cond.notify()

    def cancel(self) -> None:
        with self._cond:
            self._pending = None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._pending is None:
                    self._cond.wait()
                    continue
                deadline, loop, wake = self._pending
                remaining = deadline - time.perf_counter()
                if remaining > 0:
                    self._cond.wait(remaining)  # a re-arm or close wakes it early
                    continue
                self._pending = None
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody to wake
                    loop.call_soon_threadsafe(wake)


class QueueFullError(RuntimeError):
    """The batcher's queue has no room for the request (back-pressure)."""


class BatcherClosedError(RuntimeError):
    """The batcher is shutting down and takes no new requests."""


@dataclass
class _Request:
    inputs: np.ndarray
    future: asyncio.Future[Inference]
    enqueued: float


@dataclass
class BatcherStats:
    requests: int = 0
    rows: int = 0
    batches: int = 0
    rejected: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # rows per backend call, last 1024

    def record(self, rows: int) -> None:
        self.batches += 1
        self.batch_sizes.append(rows)
        if len(self.batch_sizes) > 1024:
            del self.batch_sizes[:512]


class MicroBatcher:
    """Coalesces concurrent ``infer`` calls into batched backend calls (one event loop)."""

    def __init__(
        self,
        backend: InferenceBackend,
        *,
        max_batch_size: int = 256,
        max_queue_delay_us: int = 500,
        max_queue_rows: int = 16384,
        max_concurrent_batches: int = 2,
        monitor: SkewMonitor | None = None,
    ) -> None:
        """``monitor`` defaults to one on the backend's manifest when it records the model's
        training distribution."""
        if max_batch_size < 1 or max_queue_delay_us < 0 or max_concurrent_batches < 1:
            raise ValueError(
                f"max_batch_size = {max_batch_size}, max_queue_delay_us = {max_queue_delay_us}, "
                f"max_concurrent_batches = {max_concurrent_batches}: need >= 1, >= 0, >= 1"
            )
        if max_queue_rows < max_batch_size:
            raise ValueError(
                f"max_queue_rows = {max_queue_rows}: must be >= max_batch_size ({max_batch_size})"
            )
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_us / 1e6
        self.max_queue_rows = max_queue_rows
        self.stats = BatcherStats()
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self.monitor = monitor if monitor is not None else _default_monitor(backend)
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._wakeup = asyncio.Event()  # something was queued
        self._full = asyncio.Event()  # a full batch is queued, the delay is spent, or closing
        self._waker = DeadlineWaker()
        self._timer_fired = False
        self._wake_slack_s = 0.0  # how early to arm the waker (see _wait_for_batch)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def free_rows(self) -> int:
        return self.max_queue_rows - self._queued_rows

    def start(self) -> None:
        """Start the dispatch task on the running loop (idempotent)."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._dispatch(), name="micro-batcher"
            )

    def submit(self, inputs: np.ndarray) -> asyncio.Future[Inference]:
        """Queue ``inputs`` now (no await: callers can check room and queue atomically)."""
        if self._closing:
            raise BatcherClosedError("the batcher is shutting down")
        arr = check_inputs(inputs)
        rows = arr.shape[0]
        if self._queued_rows + rows > self.max_queue_rows:
            self.stats.rejected += 1
            raise QueueFullError(
                f"inference queue full: {self._queued_rows} rows queued, request of {rows} "
                f"exceeds max_queue_rows = {self.max_queue_rows}"
            )
        self.start()
        future: asyncio.Future[Inference] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(arr, future, time.perf_counter()))
        self._queued_rows += rows
        self.stats.requests += 1
        self.stats.rows += rows
        self._wakeup.set()
        if self._queued_rows >= self.max_batch_size:
            self._full.set()
        return future

    async def infer(self, inputs: np.ndarray) -> Inference:
        """Probabilities for ``inputs``, computed in whatever batch they join."""
        return await self.submit(inputs)

    async def _dispatch(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._wait_for_batch()
            await self._slots.acquire()
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _wait_for_batch(self) -> None:
        """Return when a full batch is queued, the oldest request's delay is spent, or closing.

        The waker is armed ``_wake_slack_s`` before the deadline: a moving average of how
        late its wake-ups reach the loop (thread and loop scheduling), so the batch leaves
        close to its deadline on a busy machine too, never after it on average.
        """
        deadline = self._queue[0].enqueued + self.max_queue_delay_s
        loop = asyncio.get_running_loop()
        while self._queued_rows < self.max_batch_size and not self._closing:
            target = deadline - self._wake_slack_s
            if target - time.perf_counter() <= 0:
                break
            self._full.clear()
            self._timer_fired = False
            self._waker.arm(target, loop, self._on_deadline)
            await self._full.wait()
            if self._timer_fired:
                late = time.perf_counter() - target
                self._wake_slack_s = min(0.9 * self._wake_slack_s + 0.1 * max(late, 0.0),
                                         self.max_queue_delay_s / 2)  # fmt: skip
        self._waker.cancel()

    def _on_deadline(self) -> None:
        self._timer_fired = True
        self._full.set()

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # caller gave up (cancelled): skip it
                self._queue.popleft()
                self._queued_rows -= head.inputs.shape[0]
                continue
            n = head.inputs.shape[0]
            if batch and rows + n > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_rows -= n
            batch.append(head)
            rows += n
        if self._queued_rows < self.max_batch_size:
            self._full.clear()
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        try:
            inputs = (
                batch[0].inputs if len(batch) == 1 else np.concatenate([r.inputs for r in batch])
            )
            self.stats.record(inputs.shape[0])
            metrics = default_metrics()
            metrics.inference_batch_size.observe(inputs.shape[0])
            metrics.inference_queue_depth.set(self._queued_rows)
            started = time.perf_counter()
            try:
                result = await self.backend.infer(inputs)
            except BaseException as exc:
                metrics.inference_latency.labels(self.backend.name).observe(
                    time.perf_counter() - started
                )
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            metrics.inference_latency.labels(result.backend).observe(time.perf_counter() - started)
            lo = 0
            for r in batch:
                hi = lo + r.inputs.shape[0]
                if not r.future.done():
                    r.future.set_result(result.rows(lo, hi))
                lo = hi
            if self.monitor is not None:
                self.monitor.observe(inputs, result.identity.sha256)
        finally:
            self._slots.release()

    async def close(self) -> None:
        """Stop taking requests, serve every queued one at once, wait for calls in flight."""
        self._closing = True
        self._wakeup.set()
        self._full.set()
        if self._worker is not None:
            await self._worker
            self._worker = None
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._waker.close()


def _default_monitor(backend: InferenceBackend) -> SkewMonitor | None:
    artifacts = backend.artifacts
    if artifacts is None or "input_distribution" not in artifacts.manifest:
        return None
    return SkewMonitor(artifacts)
