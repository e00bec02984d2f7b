"""Replay synthetic ticks to a running server at a fixed rate; report throughput and latency.

Ticks go over one ``StreamSignals`` stream in batches sent on a fixed schedule; each
batch's latency runs from its *scheduled* send time to the arrival of its
``SignalBatch`` (so a server that falls behind shows it, rather than slowing the
sender down and hiding the queueing: no coordinated omission).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from app.proto import load as load_stubs
from app.synthetic import synthetic_ticks

pb2, pb2_grpc = load_stubs()


@dataclass(frozen=True)
class ClientTls:
    """PEM files for a TLS server (``ca``) and, for mutual TLS, this client's identity."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.ca is not None or self.cert is not None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("--tls-cert and --tls-key go together (mutual TLS)")
        read = lambda p: None if p is None else Path(p).read_bytes()  # noqa: E731
        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


def open_channel(target: str, tls: ClientTls | None = None) -> grpc.aio.Channel:
    """A channel to ``target``: plaintext (inside the mesh) or TLS."""
    if tls is not None and tls.enabled:
        return grpc.aio.secure_channel(target, tls.credentials())
    return grpc.aio.insecure_channel(target)


@dataclass(frozen=True)
class ReplayReport:
    target: str
    rate: float
    seconds: float
    batches: int
    ticks: int
    accepted: int
    rejected: int
    signals: int
    elapsed_s: float
    latencies_us: np.ndarray

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_us(self, q: float) -> float:
        return (
            float(np.percentile(self.latencies_us, q)) if self.latencies_us.size else float("nan")
        )

    def render(self) -> str:
        return "\n".join(
            [
                f"replay to {self.target}: {self.rate:g} ticks/s requested for {self.seconds:g} s",
                f"sent {self.ticks:,} ticks in {self.batches:,} batches over {self.elapsed_s:.2f} s: "
                f"{self.ticks_per_s:,.0f} ticks/s; accepted {self.accepted:,}, "
                f"rejected {self.rejected:,}, signals {self.signals:,} "
                f"({self.signals / self.elapsed_s if self.elapsed_s else 0:,.0f}/s)",
                f"latency per batch (scheduled send -> SignalBatch): "
                f"p50 {self.percentile_us(50):,.0f} us  p95 {self.percentile_us(95):,.0f} us  "
                f"p99 {self.percentile_us(99):,.0f} us",
            ]
        )


async def replay(
    target: str,
    *,
    rate: float,
    seconds: float,
    batch_size: int = 50,
    n_symbols: int = 100,
    seed: int = 0,
    connect_timeout_s: float = 5.0,
    producer: str | None = None,
    tls: ClientTls | None = None,
) -> ReplayReport:
    """Stream ``rate * seconds`` synthetic ticks to ``target`` and measure each batch.
    Batches carry ``producer`` (default ``replay-<pid>``) and ids 1, 2, ...: the server
    deduplicates a retried batch."""
    if rate <= 0 or seconds <= 0 or batch_size < 1:
        raise ValueError(
            f"rate = {rate}, seconds = {seconds}, batch_size = {batch_size}: all must be positive"
        )
    total = max(batch_size, int(rate * seconds))
    per_symbol = -(-total // n_symbols)
    ticks, _ = synthetic_ticks(n_symbols, per_symbol, seed=seed)
    n_batches = -(-total // batch_size)
    interval = batch_size / rate
    # Stamp each tick with its batch's scheduled send time (plus its position, in ns): time
    # never goes back for a long-running server and never runs ahead of its clock.
    index = np.arange(ticks.ts_ns.shape[0], dtype=np.int64)
    ts_ns = time.time_ns() + (index // batch_size) * int(interval * 1e9) + index % batch_size
    sent_at: dict[int, float] = {}

    producer = producer or f"replay-{os.getpid()}"
    async with open_channel(target, tls) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), connect_timeout_s)
        except TimeoutError:
            raise ConnectionError(
                f"no server at {target} (start one with `python -m app serve`)"
            ) from None
        stub = pb2_grpc.SignalServiceStub(channel)
        start = time.perf_counter()

        async def requests() -> AsyncIterator[object]:
            for b in range(n_batches):
                scheduled = start + b * interval
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lo, hi = b * batch_size, min((b + 1) * batch_size, total)
                sent_at[b + 1] = scheduled
                yield pb2.TickBatch(
                    symbol=ticks.symbol[lo:hi].tolist(),
                    price=ticks.price[lo:hi].tolist(),
                    size=ticks.size[lo:hi].tolist(),
                    ts_ns=ts_ns[lo:hi].tolist(),
                    batch_id=b + 1,
                    producer=producer,
                )

        latencies = np.empty(n_batches)
        accepted = rejected = signals = received = 0
        async for reply in stub.StreamSignals(requests()):
            latencies[received] = (time.perf_counter() - sent_at.pop(reply.batch_id)) * 1e6
            received += 1
            accepted += reply.ack.accepted
            rejected += reply.ack.rejected
            signals += len(reply.symbol)
        elapsed = time.perf_counter() - start
    return ReplayReport(
        target, rate, seconds, received, total, accepted, rejected, signals, elapsed,
        latencies[:received],
    )  # fmt: skip
