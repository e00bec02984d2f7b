"""Dynamic batching benchmark: throughput and latency with the micro-batcher vs one call per request.

Same concurrency (N client coroutines, each sending one-row requests back to back) against
two backends: MLServer on loopback (KServe-v2 gRPC, the protocol Triton speaks) and the
in-process ONNX Runtime model. Target: batching >= 3x the throughput. Medians of repeated
rounds, modes interleaved so machine noise hits all alike; the last line is the headline.

Also the CPU the batcher burns while it waits: a few clients whose requests never fill a
batch, so every batch waits out its full queue delay; process CPU seconds per request with
the batcher's deadline thread against the baseline, the earlier batcher that spun on
``asyncio.sleep(0)`` until the deadline (``SpinningBatcher``, kept here only as the baseline).

    .venv/bin/python bench/batching.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.batcher import MicroBatcher
from app.inference import InferenceBackend, KServeBackend, LocalOnnxBackend
from app.model.build import ensure_model
from app.model.train import make_dataset
from app.serving.launch import MLServerProcess
from app.settings.telemetry import TelemetryConfig
from app.telemetry import configure_logging


async def closed_loop(
    call, rows: np.ndarray, concurrency: int, seconds: float
) -> tuple[float, float, float]:
    """(requests/s, p50 us, p95 us) of ``concurrency`` clients calling back to back."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await call(rows[i % len(rows) : i % len(rows) + 1])
            latencies.append(time.perf_counter() - t)
            i += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1e6
    return len(latencies) / elapsed, float(np.percentile(lat, 50)), float(np.percentile(lat, 95))


class SpinningBatcher(MicroBatcher):
    """The baseline: the batcher as it was, yielding to the loop in a loop until the deadline."""

    async def _wait_for_batch(self) -> None:
        deadline = self._queue[0].enqueued + self.max_queue_delay_s
        while self._queued_rows < self.max_batch_size and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            if remaining > 0.0015:  # asyncio's timers: millisecond resolution
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), remaining - 0.0015)
            else:
                await asyncio.sleep(0)


async def cpu_per_request(
    batcher_type: type[MicroBatcher], backend: InferenceBackend, rows, seconds: float, delay_us: int
) -> tuple[float, float, float]:
    """(CPU us per request, requests/s, p50 us) of 4 clients that never fill a batch."""
    batcher = batcher_type(backend, max_batch_size=64, max_queue_delay_us=delay_us)
    await batcher.infer(rows[:1])
    cpu = time.process_time()
    rate, p50, _ = await closed_loop(batcher.infer, rows, 4, seconds)
    used = time.process_time() - cpu
    await batcher.close()
    return used / (rate * seconds) * 1e6, rate, p50


async def measure(
    backend: InferenceBackend, rows, concurrency, seconds, rounds, max_batch, delay_us
):
    results: dict[str, list[tuple[float, float, float]]] = {"unbatched": [], "batched": []}
    for _ in range(rounds):
        results["unbatched"].append(await closed_loop(backend.infer, rows, concurrency, seconds))
        batcher = MicroBatcher(backend, max_batch_size=max_batch, max_queue_delay_us=delay_us)
        results["batched"].append(await closed_loop(batcher.infer, rows, concurrency, seconds))
        await batcher.close()
    return {
        mode: tuple(statistics.median(r[i] for r in runs) for i in range(3))
        for mode, runs in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter rounds, under a minute")
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts/model"))
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=500)
    args = parser.parse_args()
    seconds, rounds = (2.0, 3) if args.quick else (5.0, 5)
    artifacts = ensure_model(args.model_dir)
    configure_logging(TelemetryConfig(log_level="warning"))  # no sampled served-row lines here
    rows = make_dataset(8, 600, seed=9).x
    c = args.concurrency
    print(f"{c} concurrent clients, one-row requests; batcher max_batch_size "
          f"{args.max_batch_size}, max_queue_delay_us {args.max_queue_delay_us}; "
          f"medians of {rounds} rounds of {seconds:g} s")  # fmt: skip

    cpu: dict[str, list[tuple[float, float, float]]] = {"spinning": [], "deadline thread": []}

    async def run_all() -> dict[str, dict]:
        out = {}
        local = LocalOnnxBackend(artifacts.path("fp32"), artifacts.model_version)
        for _ in range(rounds):
            for label, kind in (("spinning", SpinningBatcher), ("deadline thread", MicroBatcher)):
                cpu[label].append(await cpu_per_request(kind, local, rows, seconds / 2,
                                                        args.max_queue_delay_us))  # fmt: skip
        out["in-process"] = await measure(local, rows, c, seconds, rounds,
                                          args.max_batch_size, args.max_queue_delay_us)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp, MLServerProcess(
            Path(tmp), artifacts.path("fp32"), model_name=artifacts.name,
            model_version=str(artifacts.version),
        ) as server:  # fmt: skip
            remote = KServeBackend(server.url, artifacts.name, timeout_s=10.0)
            await remote.infer(rows[:1])
            out["MLServer loopback"] = await measure(remote, rows, c, seconds, rounds,
                                                     args.max_batch_size, args.max_queue_delay_us)  # fmt: skip
            await remote.close()
        return out

    results = asyncio.run(run_all())
    ratios = {}
    for target, modes in results.items():
        u, b = modes["unbatched"], modes["batched"]
        ratios[target] = b[0] / u[0]
        print(f"  {target}:")
        print(
            f"    one call per request: {u[0]:>9,.0f} req/s  p50 {u[1]:>8,.0f} us  p95 {u[2]:>8,.0f} us"
        )
        print(
            f"    dynamic batching:     {b[0]:>9,.0f} req/s  p50 {b[1]:>8,.0f} us  p95 {b[2]:>8,.0f} us"
        )
        print(f"    throughput ratio {ratios[target]:.1f}x, p95 ratio {b[2] / u[2]:.2f}x")
    waits = {k: tuple(statistics.median(r[i] for r in v) for i in range(3)) for k, v in cpu.items()}
    print(f"  queue-delay wait ({args.max_queue_delay_us} us, 4 clients, batches never full):")
    for label, (us, rate, p50) in waits.items():
        print(
            f"    {label:<16} {us:>7.1f} CPU us per request  {rate:>9,.0f} req/s  p50 {p50:>6,.0f} us"
        )
    cpu_ratio = waits["spinning"][0] / waits["deadline thread"][0]
    ml, ip = results["MLServer loopback"], results["in-process"]
    print(
        f"batching: MLServer {ml['batched'][0]:,.0f} vs {ml['unbatched'][0]:,.0f} req/s "
        f"({ratios['MLServer loopback']:.1f}x, p95 {ml['batched'][2]:,.0f} vs {ml['unbatched'][2]:,.0f} us); "
        f"in-process {ip['batched'][0]:,.0f} vs {ip['unbatched'][0]:,.0f} req/s "
        f"({ratios['in-process']:.1f}x); target >= 3x; waiting out the queue delay costs "
        f"{waits['deadline thread'][0]:.0f} CPU us per request vs {waits['spinning'][0]:.0f} spinning "
        f"({cpu_ratio:.1f}x less)"
    )


if __name__ == "__main__":
    main()
