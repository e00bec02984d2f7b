"""Synthetic market ticks with a planted, learnable signal (model training, replay, benchmarks).

Each symbol's log price is a fundamental random walk with a slowly varying drift (a
trend the EMAs and order flow reveal) plus a mean-reverting deviation (which the
z-score and RSI reveal): ``log p = f + d``, ``f += g + noise``, ``g`` and ``d`` AR(1).
The future return over a few ticks therefore depends on the current features, which
is the signal the model learns. Prices sit on a 0.01 grid and sizes are whole lots,
as a feed would send them. Ticks of all symbols are interleaved in time order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

DEFAULT_START_NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z


@dataclass(frozen=True)
class TickColumns:
    """A batch of ticks as columns (the shape of the gRPC TickBatch and FeatureEngine.update)."""

    symbol: np.ndarray  # int32
    price: np.ndarray  # float64
    size: np.ndarray  # float64
    ts_ns: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.symbol.shape[0])

    def slice(self, lo: int, hi: int) -> TickColumns:
        return TickColumns(
            self.symbol[lo:hi], self.price[lo:hi], self.size[lo:hi], self.ts_ns[lo:hi]
        )


@dataclass(frozen=True)
class MarketParams:
    """The planted process; the defaults give a signal an MLP learns to well above chance."""

    trend_phi: float = 0.995
    trend_sd: float = 4e-4  # stationary standard deviation of g (per tick)
    deviation_phi: float = 0.8  # persistence of the mean-reverting deviation d
    deviation_sd: float = 1e-3  # stationary standard deviation of d
    noise_sd: float = 3e-4  # per-tick noise of the fundamental
    tick_size: float = 0.01
    mean_interval_ns: int = 2_000_000  # mean time between ticks of one symbol


@njit(cache=True, nogil=True)
def _simulate(n_symbols, n_steps, levels, phi_g, sd_g, phi_d, sd_d, sd_f, seed, log_price, sizes):
    np.random.seed(seed)
    eps_g = sd_g * np.sqrt(1.0 - phi_g * phi_g)
    eps_d = sd_d * np.sqrt(1.0 - phi_d * phi_d)
    for s in range(n_symbols):
        g = np.random.normal() * sd_g
        d = np.random.normal() * sd_d
        f = np.log(levels[s])
        for t in range(n_steps):
            g = phi_g * g + eps_g * np.random.normal()
            d = phi_d * d + eps_d * np.random.normal()
            f += g + sd_f * np.random.normal()
            log_price[s, t] = f + d
            # Informed flow: bigger prints when the drift is strong.
            sizes[s, t] = np.floor(np.random.lognormal(3.0, 1.0) * (1.0 + 50.0 * abs(g))) + 1.0


def synthetic_ticks(
    n_symbols: int,
    ticks_per_symbol: int,
    *,
    seed: int = 0,
    params: MarketParams | None = None,
    start_ns: int = DEFAULT_START_NS,
) -> tuple[TickColumns, np.ndarray]:
    """Interleaved ticks of ``n_symbols`` symbols, and each symbol's log-price path.

    Returns ``(ticks, log_price)`` where ``log_price[s, k]`` is the unrounded log price of
    symbol ``s``'s ``k``-th tick (training uses it for forward returns).
    """
    if n_symbols < 1 or ticks_per_symbol < 1:
        raise ValueError(
            f"n_symbols = {n_symbols}, ticks_per_symbol = {ticks_per_symbol}: both must be >= 1"
        )
    mp = params or MarketParams()
    rng = np.random.default_rng(seed)
    levels = 10.0 ** rng.uniform(1.0, 3.0, n_symbols)  # prices from 10 to 1000
    log_price = np.empty((n_symbols, ticks_per_symbol))
    sizes = np.empty((n_symbols, ticks_per_symbol))
    _simulate(n_symbols, ticks_per_symbol, levels, mp.trend_phi, mp.trend_sd,
              mp.deviation_phi, mp.deviation_sd, mp.noise_sd, seed, log_price, sizes)  # fmt: skip
    prices = np.maximum(np.round(np.exp(log_price) / mp.tick_size), 1.0) * mp.tick_size

    # Each symbol ticks at its own Poisson times; merging them interleaves the symbols.
    gaps = rng.exponential(mp.mean_interval_ns, (n_symbols, ticks_per_symbol)).astype(np.int64) + 1
    times = start_ns + np.cumsum(gaps, axis=1)
    order = np.argsort(times, axis=None, kind="stable")
    sym_idx, tick_idx = np.unravel_index(order, times.shape)
    ticks = TickColumns(
        symbol=sym_idx.astype(np.int32),
        price=prices[sym_idx, tick_idx],
        size=sizes[sym_idx, tick_idx],
        ts_ns=times[sym_idx, tick_idx],
    )
    return ticks, log_price
