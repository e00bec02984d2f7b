"""Synthetic market ticks with a planted, learnable signal (model training, replay, benchmarks).

Each symbol's log price is a fundamental random walk with a slowly varying drift (a
trend the EMAs and order flow reveal) plus a mean-reverting deviation (which the
z-score and RSI reveal): ``log p = f + d``, ``f += g + noise``, ``g`` and ``d`` AR(1).
The future return over a few ticks therefore depends on the current features, which
is the signal the model learns. Prices sit on a 0.01 grid and sizes are whole lots,
as a feed would send them. Ticks of all symbols are interleaved in time order.

Time follows the exchange, as the service sees it: each symbol ticks (Poisson, at its
own rate) only while its venue's session is open, so a series runs for hours across
session boundaries; the price gaps at each open (the overnight move), and trading
halts now and then for minutes and resumes with a jump. The training set and
``python -m app replay`` draw from this same process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from app.sessions import NO_OPEN, SessionTable

DEFAULT_START_NS = 1_699_984_800_000_000_000  # 2023-11-14T18:00Z: 13:00 in New York, in session


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
    mean_interval_ns: int = 10_000_000_000  # mean time between ticks of one symbol ...
    interval_spread: float = 0.5  # ... times a per-symbol lognormal factor of this sigma
    open_jump_sd: float = 5e-3  # the overnight move: log-price jump at each session open
    halt_rate: float = 3e-4  # chance per tick that trading halts after it
    halt_min_ns: int = 300_000_000_000  # halts last 5 to 30 minutes
    halt_max_ns: int = 1_800_000_000_000
    halt_jump_sd: float = 3e-3  # log-price jump when trading resumes
    # Each symbol starts at a uniformly random point of the session in progress at (or next
    # after) the start time, so a set of series covers every phase of a session (the VWAP
    # gap grows with the time since the open) rather than the same few hours. Training
    # samples so (TRAINING_MARKET); a replayed stream starts every symbol together.
    random_start_phase: bool = False


TRAINING_MARKET = MarketParams(random_start_phase=True)


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


@njit(cache=True, nogil=True)
def _session_clock(
    opens, closes, symbol_venue, start_ns, random_phase, intervals, halt_rate, halt_min,
    halt_max, open_jump_sd, halt_jump_sd, seed, times, jumps, breaks,
):  # fmt: skip
    """Tick times of each symbol inside its venue's sessions, and the log-price jump and
    break (1: session open, 2: halt resumption) before each tick."""
    np.random.seed(seed)
    n_symbols, n_steps = times.shape
    for s in range(n_symbols):
        v = symbol_venue[s]
        j = 0
        while closes[v, j] <= start_ns:  # the session in progress at start, or the next one
            j += 1
        t = max(start_ns, opens[v, j])
        if random_phase:
            t += np.int64(np.random.random() * (closes[v, j] - t))
        brk = 0
        for k in range(n_steps):
            t += np.int64(np.random.exponential(intervals[s])) + 1
            if t >= closes[v, j]:
                j += 1
                if opens[v, j] == NO_OPEN:
                    raise ValueError("synthetic ticks run past the end of the session calendar")
                t = opens[v, j] + np.int64(np.random.exponential(intervals[s]))
                brk = 1
            times[s, k] = t
            breaks[s, k] = brk
            jumps[s, k] = 0.0
            if brk == 1:
                jumps[s, k] = np.random.normal() * open_jump_sd
            elif brk == 2:
                jumps[s, k] = np.random.normal() * halt_jump_sd
            brk = 0
            if np.random.random() < halt_rate:
                t += halt_min + np.int64(np.random.random() * (halt_max - halt_min))
                brk = 2


@dataclass(frozen=True)
class SyntheticMarket:
    """Interleaved ticks and, per symbol and tick index, what training needs besides them."""

    ticks: TickColumns
    log_price: np.ndarray  # [symbol, k]: the unrounded log price of symbol's k-th tick
    breaks: np.ndarray  # [symbol, k]: 1 if a session opened before tick k, 2 after a halt


def synthetic_market(
    n_symbols: int,
    ticks_per_symbol: int,
    *,
    seed: int = 0,
    params: MarketParams | None = None,
    start_ns: int = DEFAULT_START_NS,
    sessions: SessionTable | None = None,
) -> SyntheticMarket:
    """``ticks_per_symbol`` ticks of each of ``n_symbols`` symbols on ``sessions``' venues
    (default: every symbol on the default venue), from ``start_ns`` on."""
    if n_symbols < 1 or ticks_per_symbol < 1:
        raise ValueError(
            f"n_symbols = {n_symbols}, ticks_per_symbol = {ticks_per_symbol}: both must be >= 1"
        )
    mp = params or MarketParams()
    table = sessions if sessions is not None else SessionTable.for_symbols(n_symbols)
    if table.n_symbols != n_symbols or not table.venues:
        raise ValueError(f"sessions: need a venue calendar for each of the {n_symbols} symbols")
    rng = np.random.default_rng(seed)
    levels = 10.0 ** rng.uniform(1.0, 3.0, n_symbols)  # prices from 10 to 1000
    intervals = mp.mean_interval_ns * rng.lognormal(0.0, mp.interval_spread, n_symbols)
    log_price = np.empty((n_symbols, ticks_per_symbol))
    sizes = np.empty((n_symbols, ticks_per_symbol))
    _simulate(n_symbols, ticks_per_symbol, levels, mp.trend_phi, mp.trend_sd,
              mp.deviation_phi, mp.deviation_sd, mp.noise_sd, seed, log_price, sizes)  # fmt: skip
    times = np.empty((n_symbols, ticks_per_symbol), np.int64)
    jumps = np.empty((n_symbols, ticks_per_symbol))
    breaks = np.empty((n_symbols, ticks_per_symbol), np.int8)
    _session_clock(table.opens, table.closes, table.symbol_venue, start_ns,
                   mp.random_start_phase, intervals, mp.halt_rate, mp.halt_min_ns,
                   mp.halt_max_ns, mp.open_jump_sd, mp.halt_jump_sd, seed + 1, times, jumps,
                   breaks)  # fmt: skip
    log_price += np.cumsum(jumps, axis=1)
    prices = np.maximum(np.round(np.exp(log_price) / mp.tick_size), 1.0) * mp.tick_size

    # Each symbol ticks at its own times; merging them interleaves the symbols.
    order = np.argsort(times, axis=None, kind="stable")
    sym_idx, tick_idx = np.unravel_index(order, times.shape)
    ticks = TickColumns(
        symbol=sym_idx.astype(np.int32),
        price=prices[sym_idx, tick_idx],
        size=sizes[sym_idx, tick_idx],
        ts_ns=times[sym_idx, tick_idx],
    )
    return SyntheticMarket(ticks, log_price, breaks)


def synthetic_ticks(
    n_symbols: int,
    ticks_per_symbol: int,
    *,
    seed: int = 0,
    params: MarketParams | None = None,
    start_ns: int = DEFAULT_START_NS,
    sessions: SessionTable | None = None,
) -> tuple[TickColumns, np.ndarray]:
    """Interleaved ticks of ``n_symbols`` symbols, and each symbol's log-price path.

    Returns ``(ticks, log_price)`` where ``log_price[s, k]`` is the unrounded log price of
    symbol ``s``'s ``k``-th tick (training uses it for forward returns).
    """
    market = synthetic_market(n_symbols, ticks_per_symbol, seed=seed, params=params,
                              start_ns=start_ns, sessions=sessions)  # fmt: skip
    return market.ticks, market.log_price
