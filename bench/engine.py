"""Feature-engine benchmark: cost per tick against the universe's size, and tick → signal latency.

Measured in one run, on the same ticks:

* **Curve** (``--symbols``, default 1000,10000,100000): ns per tick of the engine as the
  service builds it (``FeatureEngine.from_config``: exchange-calendar sessions, a quarter
  of the symbols on London's, gap resets), streaming batches of 1,000 ticks whose symbols
  are drawn at random, in steady state (every symbol past warm-up). Beside it: the old
  ``[field, symbol]`` layout (``bench/old_layout.py``) and a C reference of the same kernel
  on the same layout (``bench/engine_ref.c``, built now with the machine's gcc ``-O3
  -march=native``): the ratio to what the machine does with compiled C. Targets (those of
  the record layout): <= 30 / 60 / 150 ns per tick at 1k / 10k / 100k symbols.
* **Latency** at 1,000 symbols on session-aware synthetic ticks: a single-tick ``update``
  (target p95 <= 1.5 us), and tick → signal in-process with the fused backend (features
  and model in one compiled call; target p95 <= 20 us, goal 10) beside the ONNX Runtime
  path, timing only ticks that make a signal.
* **Throughput** at 1,000 symbols: talipp tick by tick (target: the engine >= 100x faster)
  and TA-Lib in batch over each symbol's series (target: streaming within 2x).

Medians of repeated runs (and their CPU time: the figure a busy machine distorts least).
The last line is the headline. ``--json PATH`` writes the curve, the latencies (percentiles
and a histogram of each path's samples) and the targets there, which ``bench/plots.py`` draws.

    .venv/bin/python bench/engine.py [--quick] [--symbols 1000,10000,100000] [--json PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import FeatureConfig
from app.features import FEATURES, FeatureEngine
from app.fused import FusedBackend
from app.inference import LocalOnnxBackend
from app.model.build import ensure_model
from app.pipeline import tick_to_signal_sync
from app.sessions import SessionTable
from app.synthetic import synthetic_ticks
from bench.old_layout import OldLayoutEngine

BENCH = Path(__file__).resolve().parent
SECOND = 1_000_000_000
BATCH = 1000
N_SYMBOLS = 1000  # latency and throughput sections
CURVE_START_NS = 1_710_252_000 * SECOND  # 2024-03-12 14:00 UTC: New York and London both open
SYMBOL_SPACING_NS = 5 * SECOND  # each symbol ticks every ~5 s: in session, under max_gap_s
WARM_TICKS_PER_SYMBOL = 30  # past every warm-up (26 ticks) before timing
# The targets above, written to --json beside the figures for the pictures.
CURVE_TARGET_NS = {1_000: 30.0, 10_000: 60.0, 100_000: 150.0}
LATENCY_TARGET_P95_US = {"single_tick_update": 1.5, "tick_to_signal_fused": 20.0}
LATENCY_GOAL_P95_US = {"tick_to_signal_fused": 10.0}
HISTOGRAM_BINS_PER_DECADE = 20


def service_config(n_symbols: int) -> FeatureConfig:
    """The service's engine: its defaults, a quarter of the symbols on London's calendar."""
    return FeatureConfig(n_symbols=n_symbols,
                         symbol_venues={s: "XLON" for s in range(0, n_symbols, 4)})  # fmt: skip


def service_engine(n_symbols: int = N_SYMBOLS) -> FeatureEngine:
    return FeatureEngine.from_config(service_config(n_symbols))


def old_layout_engine(n_symbols: int) -> OldLayoutEngine:
    config = service_config(n_symbols)
    sessions = SessionTable.for_symbols(n_symbols, config.venue, config.symbol_venues)
    return OldLayoutEngine(n_symbols, sessions=sessions, max_gap_ns=config.max_gap_ns)


# --- the C reference ---------------------------------------------------------------------------


class CReference:
    """``bench/engine_ref.c`` over a fresh service engine's own records (the same layout)."""

    def __init__(self, library: ctypes.CDLL, n_symbols: int) -> None:
        self.engine = service_engine(n_symbols)
        self._update = library.update
        self._update.restype = ctypes.c_int64
        self._update.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 2 \
            + [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2 + [ctypes.c_void_p] * 2  # fmt: skip
        records, params, table = self.engine.kernel_state
        self._state = (records.ctypes.data, n_symbols, records.shape[1], params.ctypes.data,
                       table.ctypes.data, table.shape[1], table.shape[2])  # fmt: skip
        self._keep = (records, params, table)

    def update(self, symbol, price, size, ts_ns, *, out, reasons) -> np.ndarray:
        rec, n_symbols, rw, params, cal, venues, width = self._state
        self._update(symbol.shape[0], symbol.ctypes.data, price.ctypes.data, size.ctypes.data,
                     ts_ns.ctypes.data, rec, n_symbols, rw, params, cal, venues, width,
                     out.ctypes.data, reasons.ctypes.data)  # fmt: skip
        return out


def build_reference(workdir: Path) -> tuple[ctypes.CDLL, str]:
    """Compile engine_ref.c with the machine's gcc; the library and the compiler's version."""
    library = workdir / "engine_ref.so"
    flags = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC"]
    subprocess.run(["gcc", *flags, str(BENCH / "engine_ref.c"), "-o", str(library), "-lm"],
                   check=True)  # fmt: skip
    version = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
    return ctypes.CDLL(str(library)), f"gcc {version} {' '.join(flags[:4])}"


# --- the curve -------------------------------------------------------------------------------


def curve_ticks(n_symbols: int, n: int, seed: int) -> tuple[np.ndarray, ...]:
    """``n`` ticks, each of a symbol drawn at random; prices around each symbol's level."""
    rng = np.random.default_rng(seed)
    symbol = rng.integers(0, n_symbols, n, dtype=np.int32)
    level = 10.0 ** rng.uniform(0, 3, n_symbols)
    price = level[symbol] * np.exp(rng.normal(0, 1e-3, n))
    size = rng.integers(1, 500, n).astype(np.float64)
    ts = CURVE_START_NS + np.arange(n, dtype=np.int64) * (SYMBOL_SPACING_NS // n_symbols)
    return symbol, price, size, ts


def time_batches(engine, columns, start: int, count: int) -> tuple[float, float, np.ndarray]:
    """Wall and CPU ns per tick streaming ``count`` ticks from ``start`` in batches; and the
    features of the last batch."""
    out = np.empty((BATCH, 7))
    reasons = np.empty(BATCH, np.uint8)
    symbol, price, size, ts = columns
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    for lo in range(start, start + count, BATCH):
        hi = lo + BATCH
        engine.update(symbol[lo:hi], price[lo:hi], size[lo:hi], ts[lo:hi], out=out,
                      reasons=reasons)  # fmt: skip
    wall, cpu = time.perf_counter_ns() - wall, time.process_time_ns() - cpu
    assert not reasons.any(), "the curve's ticks are all valid"
    return wall / count, cpu / count, out


def curve_point(n_symbols: int, library: ctypes.CDLL, timed: int, repeats: int) -> dict:
    warm = WARM_TICKS_PER_SYMBOL * n_symbols // BATCH * BATCH
    columns = curve_ticks(n_symbols, warm + repeats * timed, seed=n_symbols)
    contenders = {
        "engine": service_engine(n_symbols),
        "old_layout": old_layout_engine(n_symbols),
        "c_reference": CReference(library, n_symbols),
    }
    for engine in contenders.values():  # steady state: every symbol past its warm-up
        time_batches(engine, columns, 0, warm)
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    last: dict[str, np.ndarray] = {}
    for r in range(repeats):  # interleaved, so load on the machine hits all alike
        for name, engine in contenders.items():
            wall, cpu, last[name] = time_batches(engine, columns, warm + r * timed, timed)
            walls[name].append(wall)
            cpus[name].append(cpu)
    for name in ("old_layout", "c_reference"):  # the same features, or the comparison is void
        np.testing.assert_array_equal(last[name], last["engine"], err_msg=name)
    point: dict = {"symbols": n_symbols, "ticks_timed": repeats * timed}
    for name in contenders:
        point[f"{name}_ns"] = round(statistics.median(walls[name]), 1)
        point[f"{name}_cpu_ns"] = round(statistics.median(cpus[name]), 1)
    point["state_bytes"] = contenders["engine"].state.nbytes  # type: ignore[union-attr]
    return point


# --- latency -----------------------------------------------------------------------------------


def distribution_us(samples_ns: list[int]) -> dict:
    """p50 / p95 / p99 in microseconds, and the samples' histogram over log-spaced bins
    (``HISTOGRAM_BINS_PER_DECADE``, on a grid anchored at 1 us, so runs compare bin by bin)."""
    a = np.maximum(np.asarray(samples_ns) / 1e3, 1e-3)
    logs = np.log10(a) * HISTOGRAM_BINS_PER_DECADE
    grid = np.arange(math.floor(logs.min()) - 1, math.ceil(logs.max()) + 2)
    edges = 10.0 ** (grid / HISTOGRAM_BINS_PER_DECADE)
    counts, _ = np.histogram(a, edges)
    out: dict = {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 95, 99)}
    out["histogram"] = {"edges_us": [float(f"{e:.4g}") for e in edges],
                        "counts": counts.tolist()}  # fmt: skip
    return out


def warmed_engine(ticks, warm: int) -> FeatureEngine:
    engine = service_engine()
    engine.update(ticks.symbol[:warm], ticks.price[:warm], ticks.size[:warm], ticks.ts_ns[:warm])
    return engine


def one_by_one(ticks, first: int, n: int):
    """Ticks ``first`` to ``first + n``, each as the four one-element columns a decoded
    request of one tick holds."""
    for i in range(first, first + n):
        sl = slice(i, i + 1)
        yield ticks.symbol[sl], ticks.price[sl], ticks.size[sl], ticks.ts_ns[sl]


def single_tick_latency(ticks, warm: int, n: int) -> dict:
    engine = warmed_engine(ticks, warm)
    out = np.empty((1, len(FEATURES)))
    reasons = np.empty(1, np.uint8)
    samples = []
    for tick in one_by_one(ticks, warm, n):
        t = time.perf_counter_ns()
        engine.update(*tick, out=out, reasons=reasons)
        samples.append(time.perf_counter_ns() - t)
    return distribution_us(samples)


def tick_to_signal_latency(ticks, warm: int, n: int, backend) -> dict:
    """tick -> SignalColumns through ``tick_to_signal_sync``, timing ticks that make one."""
    engine = warmed_engine(ticks, warm)
    samples = []
    for tick in one_by_one(ticks, warm, n):
        t = time.perf_counter_ns()
        signals = tick_to_signal_sync(engine, backend, *tick)
        if len(signals):  # ticks still warming up after a halt make no signal: not timed
            samples.append(time.perf_counter_ns() - t)
    assert len(samples) >= 0.8 * n, f"only {len(samples)} of {n} ticks produced a signal"
    return distribution_us(samples)


def fused_step_latency(ticks, warm: int, n: int, backend: FusedBackend) -> dict:
    """The zero-allocation entry: the tick written into the path's buffers, one ``step``."""
    path = backend.bind(warmed_engine(ticks, warm))
    samples = []
    for i in range(warm, warm + n):
        path.symbol[0], path.price[0] = ticks.symbol[i], ticks.price[i]
        path.size[0], path.ts_ns[0] = ticks.size[i], ticks.ts_ns[i]
        t = time.perf_counter_ns()
        made = path.step(1)
        if made:
            samples.append(time.perf_counter_ns() - t)
    return distribution_us(samples)


# --- throughput against talipp and TA-Lib ------------------------------------------------------


def engine_ns_per_tick(ticks, batch: int, repeats: int) -> float:
    n = len(ticks)
    out = np.empty((batch, 7))
    reasons = np.empty(batch, np.uint8)
    runs = []
    for _ in range(repeats):
        engine = service_engine()
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


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under a minute")
    parser.add_argument("--symbols", default="1000,10000,100000",
                        help="universe sizes of the curve, comma-separated")  # fmt: skip
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts/model"))
    parser.add_argument("--json", type=Path, help="write the curve and latencies here")
    args = parser.parse_args()
    try:
        universes = [int(s) for s in args.symbols.split(",")]
        if not universes or min(universes) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--symbols {args.symbols!r}: must be positive integers, comma-separated")
    timed, repeats = (100_000, 3) if args.quick else (200_000, 5)
    latency_n = 20_000 if args.quick else 100_000
    talipp_ticks = 20_000 if args.quick else 100_000
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        library, compiler = build_reference(Path(tmp))
        print(f"curve: batches of {BATCH:,} ticks, symbols drawn at random, steady state; "
              f"medians of {repeats} x {timed:,} ticks; C reference: {compiler}")  # fmt: skip
        print(f"  {'symbols':>8}  {'engine ns/tick (cpu)':>21}  {'old layout':>17}  "
              f"{'C reference':>17}  {'old/engine':>10}  {'engine/C':>8}")  # fmt: skip
        curve = []
        for n_symbols in universes:
            p = curve_point(n_symbols, library, timed, repeats)
            curve.append(p)
            print(f"  {n_symbols:>8,}  {p['engine_ns']:>10.1f} ({p['engine_cpu_ns']:>7.1f})  "
                  f"{p['old_layout_ns']:>7.1f} ({p['old_layout_cpu_ns']:>6.1f})  "
                  f"{p['c_reference_ns']:>7.1f} ({p['c_reference_cpu_ns']:>6.1f})  "
                  f"{p['old_layout_ns'] / p['engine_ns']:>9.2f}x  "
                  f"{p['engine_ns'] / p['c_reference_ns']:>7.2f}x", flush=True)  # fmt: skip

    ticks, _ = synthetic_ticks(N_SYMBOLS, (300_000 if args.quick else 1_000_000) // N_SYMBOLS,
                               seed=42)  # fmt: skip
    warm = len(ticks) - latency_n
    artifacts = ensure_model(args.model_dir)
    fused = FusedBackend(artifacts.path("fp32"), artifacts.model_version)
    local = LocalOnnxBackend(artifacts.path("fp32"), artifacts.model_version)
    latency = {
        "single_tick_update": single_tick_latency(ticks, warm, latency_n),
        "tick_to_signal_fused": tick_to_signal_latency(ticks, warm, latency_n, fused),
        "tick_to_signal_fused_step": fused_step_latency(ticks, warm, latency_n, fused),
        "tick_to_signal_onnxruntime": tick_to_signal_latency(ticks, warm, latency_n, local),
    }
    print(f"latency at {N_SYMBOLS:,} symbols (session-aware synthetic ticks; fp32 model "
          f"{artifacts.model_version}), {latency_n:,} ticks each:")  # fmt: skip
    labels = {
        "single_tick_update": "single-tick update",
        "tick_to_signal_fused": "tick -> signal, fused (tick_to_signal_sync)",
        "tick_to_signal_fused_step": "tick -> signal, fused, zero-allocation step",
        "tick_to_signal_onnxruntime": "tick -> signal, engine + ONNX Runtime",
    }
    for key, label in labels.items():
        q = latency[key]
        print(f"  {label:<46} p50 {q['p50']:7.2f} us  p95 {q['p95']:7.2f} us  "
              f"p99 {q['p99']:7.2f} us")  # fmt: skip

    streaming = engine_ns_per_tick(ticks, BATCH, 3)
    tp = talipp_ns_per_tick(ticks, talipp_ticks)
    tl = talib_batch_ns_per_tick(ticks, 3)
    print(f"throughput at {N_SYMBOLS:,} symbols on the same ticks: engine {streaming:.1f} ns/tick; "
          f"talipp {tp:,.0f} ns/tick ({tp / streaming:,.0f}x; target >= 100x); TA-Lib batch "
          f"{tl:.1f} ns/tick (engine {streaming / tl:.2f}x its time; target <= 2x)")  # fmt: skip
    load_after = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after (1 min)")  # fmt: skip

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": "bench/engine.py " + " ".join(sys.argv[1:]),
            "unit": "ns per tick (wall, median); *_cpu_ns: process CPU time",
            "batch": BATCH, "compiler": compiler,
            "curve": [{**p, "target_ns": CURVE_TARGET_NS.get(p["symbols"])} for p in curve],
            "latency_us": latency, "latency_samples": latency_n,
            "targets": {"latency_p95_us": LATENCY_TARGET_P95_US,
                        "latency_goal_p95_us": LATENCY_GOAL_P95_US},
            "throughput_ns": {"engine": round(streaming, 1), "talipp": round(tp, 1),
                              "talib_batch": round(tl, 1)},
            "load_average": {"before": load_before[0], "after": load_after[0]},
        }, indent=2) + "\n")  # fmt: skip

    figures = " / ".join(f"{p['engine_ns']:.0f}" for p in curve)
    old = " / ".join(f"{p['old_layout_ns']:.0f}" for p in curve)
    c_ref = " / ".join(f"{p['c_reference_ns']:.0f}" for p in curve)
    sizes = " / ".join(f"{n // 1000}k" if n >= 1000 else str(n) for n in universes)
    print(
        f"engine: {figures} ns/tick at {sizes} symbols (targets <= 30 / 60 / 150; old layout "
        f"{old}; C reference {c_ref}); single-tick p95 "
        f"{latency['single_tick_update']['p95']:.2f} us (target <= 1.5); onnxruntime path p95 "
        f"{latency['tick_to_signal_onnxruntime']['p95']:.1f} us; "
        f"tick->signal p95 {latency['tick_to_signal_fused']['p95']:.1f} us (target <= 20, goal 10)"
    )


if __name__ == "__main__":
    main()
