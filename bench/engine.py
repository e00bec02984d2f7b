"""Feature-engine benchmark: streaming cost per tick over 1,000 interleaved symbols.

Baselines, measured in the same run on the same ticks:
  * talipp updating the same indicators tick by tick (target: the engine >= 100x faster);
  * TA-Lib computing them in batch over each symbol's whole series (target: streaming
    within 2x of TA-Lib's batch throughput).
Also p50/p95/p99 of a single-tick update and of tick -> signal in-process with the
local model (target p95 < 100 us). Medians of repeated runs; the last line is the headline.
The engine is configured as the service runs it (exchange-calendar sessions per venue,
gap resets: ``FeatureEngine.from_config``); the same engine without sessions or gaps is
measured alongside, so the cost of sessions shows in the same run.

    .venv/bin/python bench/engine.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import FeatureConfig
from app.features import FeatureEngine
from app.inference import LocalOnnxBackend
from app.model.build import ensure_model
from app.pipeline import tick_to_signal_sync
from app.synthetic import synthetic_ticks

N_SYMBOLS = 1000
# The service's engine: its defaults, a quarter of the symbols on London's calendar.
SERVICE = FeatureConfig(
    n_symbols=N_SYMBOLS, symbol_venues={s: "XLON" for s in range(0, N_SYMBOLS, 4)}
)


def service_engine() -> FeatureEngine:
    return FeatureEngine.from_config(SERVICE)


def plain_engine() -> FeatureEngine:
    return FeatureEngine(N_SYMBOLS)


def engine_ns_per_tick(ticks, batch: int, repeats: int, make_engine=service_engine) -> float:
    n = len(ticks)
    out = np.empty((batch, 7))
    reasons = np.empty(batch, np.uint8)
    make_engine().update(ticks.symbol[:10], ticks.price[:10], ticks.size[:10], ticks.ts_ns[:10])
    runs = []
    for _ in range(repeats):
        engine = make_engine()
        t = time.perf_counter()
        for lo in range(0, n - batch + 1, batch):
            hi = lo + batch
            engine.update(ticks.symbol[lo:hi], ticks.price[lo:hi], ticks.size[lo:hi],
                          ticks.ts_ns[lo:hi], out=out, reasons=reasons)  # fmt: skip
        runs.append((time.perf_counter() - t) / (n - n % batch) * 1e9)
    return statistics.median(runs)


def talipp_ns_per_tick(ticks, n_ticks: int) -> float:
    from talipp.indicators import EMA, RSI, SMA, VWAP, StdDev
    from talipp.ohlcv import OHLCV

    per_symbol = {}
    t = time.perf_counter()
    for i in range(n_ticks):
        s = int(ticks.symbol[i])
        p = float(ticks.price[i])
        ind = per_symbol.get(s)
        if ind is None:
            ind = per_symbol[s] = {
                "ema_fast": EMA(12), "ema_slow": EMA(26), "rsi": RSI(14), "vol": StdDev(20),
                "sma": SMA(20), "sd": StdDev(20), "vwap": VWAP(), "last": None,
            }  # fmt: skip
        ind["ema_fast"].add(p)
        ind["ema_slow"].add(p)
        ind["rsi"].add(p)
        if ind["last"] is not None:
            ind["vol"].add(math.log(p / ind["last"]))
        ind["last"] = p
        ind["sma"].add(p)
        ind["sd"].add(p)
        ind["vwap"].add(OHLCV(p, p, p, p, float(ticks.size[i])))
    return (time.perf_counter() - t) / n_ticks * 1e9


def talib_batch_ns_per_tick(ticks, repeats: int) -> float:
    import talib

    order = np.argsort(ticks.symbol, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(ticks.symbol, minlength=N_SYMBOLS))]
    series = [
        (ticks.price[order[a:b]], ticks.size[order[a:b]])
        for a, b in itertools.pairwise(bounds)
        if b - a > 30
    ]
    total = sum(p.shape[0] for p, _ in series)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for p, q in series:
            talib.EMA(p, 12)
            talib.EMA(p, 26)
            talib.RSI(p, 14)
            talib.STDDEV(np.diff(np.log(p)), 20, 1)
            mean = talib.SMA(p, 20)
            sd = talib.STDDEV(p, 20, 1)
            _ = (p - mean) / sd
            _ = np.cumsum(p * q) / np.cumsum(q)
            sign = np.sign(np.diff(p, prepend=p[0]))
            _ = np.convolve(sign * q, np.ones(20), "valid") / np.convolve(q, np.ones(20), "valid")
        runs.append((time.perf_counter() - t) / total * 1e9)
    return statistics.median(runs)


def percentiles_us(samples_ns: list[int]) -> tuple[float, float, float]:
    a = np.asarray(samples_ns) / 1e3
    return tuple(float(np.percentile(a, q)) for q in (50, 95, 99))  # type: ignore[return-value]


def single_tick_latency(ticks, n: int) -> tuple[float, float, float]:
    engine = service_engine()
    warm = 200_000 if len(ticks) >= 200_000 else len(ticks) // 2
    engine.update(ticks.symbol[:warm], ticks.price[:warm], ticks.size[:warm], ticks.ts_ns[:warm])
    out = np.empty((1, 7))
    reasons = np.empty(1, np.uint8)
    samples = []
    for i in range(warm, warm + n):
        sl = slice(i, i + 1)
        t = time.perf_counter_ns()
        engine.update(ticks.symbol[sl], ticks.price[sl], ticks.size[sl], ticks.ts_ns[sl],
                      out=out, reasons=reasons)  # fmt: skip
        samples.append(time.perf_counter_ns() - t)
    return percentiles_us(samples)


def tick_to_signal_latency(ticks, n: int, model_dir: Path) -> tuple[float, float, float]:
    artifacts = ensure_model(model_dir)
    backend = LocalOnnxBackend(artifacts.path("fp32"), artifacts.model_version)
    engine = service_engine()
    warm = 200_000 if len(ticks) >= 200_000 else len(ticks) // 2
    engine.update(ticks.symbol[:warm], ticks.price[:warm], ticks.size[:warm], ticks.ts_ns[:warm])
    samples = []
    produced = 0
    for i in range(warm, warm + n):
        sl = slice(i, i + 1)
        t = time.perf_counter_ns()
        signals = tick_to_signal_sync(engine, backend, ticks.symbol[sl], ticks.price[sl],
                                      ticks.size[sl], ticks.ts_ns[sl])  # fmt: skip
        if len(signals):  # ticks still warming up after a halt make no signal: not timed
            samples.append(time.perf_counter_ns() - t)
        produced += len(signals)
    assert produced >= 0.8 * n, f"only {produced} of {n} ticks produced a signal"
    return percentiles_us(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under a minute")
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts/model"))
    args = parser.parse_args()
    n_ticks = 300_000 if args.quick else 1_000_000
    talipp_ticks = 20_000 if args.quick else 100_000
    latency_n = 20_000 if args.quick else 100_000
    repeats = 5

    ticks, _ = synthetic_ticks(N_SYMBOLS, n_ticks // N_SYMBOLS, seed=42)
    print(f"{len(ticks):,} ticks over {N_SYMBOLS:,} interleaved symbols, medians of {repeats} runs")
    eng = {b: engine_ns_per_tick(ticks, b, repeats) for b in (100, 1000, 10_000)}
    for b, v in eng.items():
        print(f"  engine, batches of {b:>6,}: {v:8.1f} ns/tick ({1e9 / v / 1e6:6.2f} M ticks/s)")
    headline = eng[1000]
    plain = engine_ns_per_tick(ticks, 1000, repeats, plain_engine)
    print(f"  without sessions or gaps, batches of 1,000: {plain:8.1f} ns/tick "
          f"(sessions and gaps cost {headline / plain - 1:+.0%})")  # fmt: skip
    tp = talipp_ns_per_tick(ticks, talipp_ticks)
    print(f"  talipp, tick by tick ({talipp_ticks:,} ticks): {tp:10.1f} ns/tick")
    tl = talib_batch_ns_per_tick(ticks, repeats)
    print(f"  TA-Lib batch over whole series:      {tl:10.1f} ns/tick")
    st = single_tick_latency(ticks, latency_n)
    print(f"  single-tick update: p50 {st[0]:.2f} us  p95 {st[1]:.2f} us  p99 {st[2]:.2f} us")
    ts = tick_to_signal_latency(ticks, latency_n, args.model_dir)
    print(f"  tick -> signal in-process (fp32 model): p50 {ts[0]:.1f} us  p95 {ts[1]:.1f} us  "
          f"p99 {ts[2]:.1f} us")  # fmt: skip
    print(
        f"engine: {headline:.0f} ns/tick streaming (batches of 1,000); "
        f"{tp / headline:.0f}x faster than talipp (target >= 100x); "
        f"{headline / tl:.2f}x TA-Lib batch time per tick (target <= 2x); "
        f"single-tick p95 {st[1]:.1f} us; tick->signal p95 {ts[1]:.1f} us (target < 100 us)"
    )


if __name__ == "__main__":
    main()
