"""Replay synthetic ticks to a running service at a fixed rate; report throughput and latency.

Batches go out on a fixed schedule through `app.client.SignalClient` (so a sharded service
gets each batch's symbols at their owners); each batch's latency runs from its
*scheduled* send time to the arrival of the last of its replies (so a service that falls
behind shows it, rather than slowing the sender down and hiding the queueing: no
coordinated omission).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.client import ClientTls, IngestReply, SignalClient, open_channel
from app.proto import reject_reason_name
from app.synthetic import synthetic_ticks

__all__ = ["ClientTls", "ReplayReport", "open_channel", "replay"]


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
    shards: int = 1
    retries: int = 0
    reasons: dict[str, int] | None = None  # rejected ticks by RejectReason name

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_us(self, q: float) -> float:
        return (
            float(np.percentile(self.latencies_us, q)) if self.latencies_us.size else float("nan")
        )

    def render(self) -> str:
        sharded = (
            f" ({self.shards} shards, {self.retries} parts retried)" if self.shards > 1
            else f" ({self.retries} parts retried)" if self.retries else ""
        )  # fmt: skip
        why = ", ".join(f"{k} {v:,}" for k, v in sorted((self.reasons or {}).items()))
        return "\n".join(
            [
                f"replay to {self.target}{sharded}: {self.rate:g} ticks/s requested for "
                f"{self.seconds:g} s",
                f"sent {self.ticks:,} ticks in {self.batches:,} batches over {self.elapsed_s:.2f} s: "
                f"{self.ticks_per_s:,.0f} ticks/s; accepted {self.accepted:,}, "
                f"rejected {self.rejected:,}{f' ({why})' if why else ''}, signals {self.signals:,} "
                f"({self.signals / self.elapsed_s if self.elapsed_s else 0:,.0f}/s)",
                f"latency per batch (scheduled send -> last reply): "
                f"p50 {self.percentile_us(50):,.0f} us  p95 {self.percentile_us(95):,.0f} us  "
                f"p99 {self.percentile_us(99):,.0f} us",
            ]
        )


async def replay(
    targets: str | Sequence[str],
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
    """Send ``rate * seconds`` synthetic ticks to the service at ``targets`` (any of its
    replicas) and measure each batch. Parts carry ``producer`` (default ``replay-<pid>``)
    and the client's ids: the service deduplicates a retried part."""
    if rate <= 0 or seconds <= 0 or batch_size < 1:
        raise ValueError(
            f"rate = {rate}, seconds = {seconds}, batch_size = {batch_size}: all must be positive"
        )
    targets = [targets] if isinstance(targets, str) else list(targets)
    total = max(batch_size, int(rate * seconds))
    per_symbol = -(-total // n_symbols)
    ticks, _ = synthetic_ticks(n_symbols, per_symbol, seed=seed)
    n_batches = -(-total // batch_size)
    interval = batch_size / rate
    # Stamp each tick with its batch's scheduled send time (plus its position, in ns): time
    # never goes back for a long-running server and never runs ahead of its clock.
    index = np.arange(ticks.ts_ns.shape[0], dtype=np.int64)
    ts_ns = time.time_ns() + (index // batch_size) * int(interval * 1e9) + index % batch_size

    client = SignalClient(targets, producer=producer or f"replay-{os.getpid()}", tls=tls,
                          connect_timeout_s=connect_timeout_s)  # fmt: skip
    async with client:
        shards = await client.shard_count()  # ConnectionError when nothing answers
        start = time.perf_counter()
        latencies = np.empty(n_batches)

        async def one(b: int) -> IngestReply:
            scheduled = start + b * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lo, hi = b * batch_size, min((b + 1) * batch_size, total)
            reply = await client.ingest(ticks.symbol[lo:hi], ticks.price[lo:hi],
                                        ticks.size[lo:hi], ts_ns[lo:hi])  # fmt: skip
            latencies[b] = (time.perf_counter() - scheduled) * 1e6
            return reply

        replies = await asyncio.gather(*(one(b) for b in range(n_batches)))
        elapsed = time.perf_counter() - start
    accepted = sum(r.accepted for r in replies)
    codes = np.concatenate([r.rejected_reason for r in replies]) if replies else np.empty(0)
    reasons = {reject_reason_name(int(c)): int(n)
               for c, n in zip(*np.unique(codes, return_counts=True), strict=True)}  # fmt: skip
    return ReplayReport(
        ", ".join(targets), rate, seconds, len(replies), total, accepted, total - accepted,
        sum(r.signals for r in replies), elapsed, latencies, shards, client.retries, reasons,
    )  # fmt: skip
