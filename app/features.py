"""Streaming indicators: one Numba call updates the state and emits the features of a batch.

``FeatureEngine.update`` takes ticks of many symbols interleaved and returns, for each
tick, the features right after it. Every indicator is O(1) per tick (the sliding ones
also recompute exactly from their ring once per ``window`` ticks, and whenever
cancellation threatens: amortised O(1), and no floating-point drift survives). The
TA-Lib-compatible indicators replay TA-Lib's own arithmetic in the same order, so they
agree with ``talib`` far inside the 1e-9 the tests demand (EMA and RSI to ~1e-15
relative, volatility bit for bit):

* ``ema_fast``/``ema_slow``: ``talib.EMA`` (seeded with the SMA of the first period).
* ``rsi``: ``talib.RSI`` (Wilder smoothing), except on a tape with no movement at all
  in its window, where it is 50 (neutral) and TA-Lib says 0 (maximally oversold).
* ``volatility``: ``talib.STDDEV(log returns, window, nbdev=1)`` — population
  standard deviation from TA-Lib's shifted running sums, including its exact
  recomputations (see ``_talib_var_step``).

The others: ``zscore`` is the price against the mean and population standard deviation
of its last ``window`` prices (0 when they do not vary); ``vwap`` is the session VWAP;
``ofi`` is the tick-rule order-flow imbalance over the last ``window`` ticks, signed
size over size, in [-1, 1]. Every feature is NaN before its warm-up, and only then.

Sessions: with a ``SessionTable`` (``app.sessions``: the symbol's exchange calendar)
the VWAP resets at the session open and sums only ticks before the session's close;
without one, sessions are fixed ``session_ns`` periods (UTC days by default). A session
with no volume yet (a zero-size opening tick, a tick before the open) has the tick's
price as its VWAP, never NaN.

Gaps and halts: windows count ticks, so a gap longer than ``max_gap_ns`` between two
accepted ticks of a symbol *resets* its windowed indicators (EMAs, RSI, volatility,
z-score, OFI): they warm up again from the first tick after the gap, no return is
computed across it, and no pre-gap tick stays in a post-gap window. The session VWAP is
kept (it belongs to the session). Reset rather than decay: features stay exact (TA-Lib
agreement holds on every stretch between gaps) and the model never sees a half-stale
window; the cost is one warm-up per gap with no signals for that symbol.

Bad ticks are rejected before they touch any state; ``last_reasons`` says why per tick.

Cost: a symbol's state is one cache-line-aligned record (``app.state``), so a tick
touches four or five cache lines whatever the universe's size; once the state outgrows
the core's caches, the batch loop prefetches the records of the ticks a few positions
ahead, so their misses overlap (bench/engine.py: the curve from 1k to 100k symbols). The
compiled signature takes int32 / float64 / float64 / int64 columns as they are; any
other column is converted first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from numba import njit

from app.intrinsics import as_float, as_int, prefetch
from app.sessions import SessionTable
from app.settings.features import FeatureParams
from app.state import (
    F_EMA_FAST,
    F_EMA_SLOW,
    F_LAST_LOG_PRICE,
    F_LAST_PRICE,
    F_OFI_SIGNED,
    F_OFI_TOTAL,
    F_RSI_GAIN,
    F_RSI_LOSS,
    F_VOL_SHIFT,
    F_VOL_SUM,
    F_VOL_SUM_SQ,
    F_VWAP_PV,
    F_VWAP_V,
    F_Z_M2,
    F_Z_MEAN,
    N_FLOAT_FIELDS,
    N_RINGS,
    NO_SESSION,
    R_LOG_RETURN,
    R_PRICE,
    R_SIGNED_SIZE,
    R_SIZE,
    RING_BASE,
    W_COUNT,
    W_LAST_SIGN,
    W_LAST_TS,
    W_SESSION_IDX,
    W_SESSION_OPEN,
    W_VENUE,
    W_VOL_COUNTDOWN,
    SymbolState,
)

FEATURES: tuple[str, ...] = ("ema_fast", "ema_slow", "rsi", "volatility", "zscore", "vwap", "ofi")

# Why a tick was rejected; 0 means accepted. The gRPC API reuses these numbers.
ACCEPTED = 0
REJECT_UNKNOWN_SYMBOL = 1
REJECT_BAD_PRICE = 2  # NaN, infinite, zero or negative
REJECT_BAD_SIZE = 3  # NaN, infinite or negative
REJECT_STALE_TIMESTAMP = 4  # earlier than the symbol's last accepted tick
REJECT_REASONS: dict[int, str] = {
    ACCEPTED: "accepted",
    REJECT_UNKNOWN_SYMBOL: "unknown symbol",
    REJECT_BAD_PRICE: "price must be finite and > 0",
    REJECT_BAD_SIZE: "size must be finite and >= 0",
    REJECT_STALE_TIMESTAMP: "timestamp earlier than the symbol's last tick",
}

DEFAULT_SESSION_NS = 86_400 * 1_000_000_000  # one UTC day

# Integer parameters passed to the kernel as one array (fewer arguments to dispatch).
P_EMA_FAST, P_EMA_SLOW, P_RSI, P_WINDOW, P_SESSION_NS, P_MAX_GAP_NS = range(6)

# How far ahead the batch loop prefetches: the scalar lines of the symbol PREFETCH_RECORD
# ticks ahead, the ring lines of the one PREFETCH_RING ticks ahead (by then its count is in
# cache). Only when the state outgrows the core's private caches: below that, the
# prefetches are pure overhead.
PREFETCH_RECORD = 8
PREFETCH_RING = 4
PREFETCH_ABOVE_BYTES = 1 << 20

# Why an update call was refused before touching anything (the kernel's negative answers).
BAD_PRICE_LENGTH, BAD_SIZE_LENGTH, BAD_TS_LENGTH, BAD_OUT_SHAPE, BAD_REASONS_LENGTH = range(
    -1, -6, -1
)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _ring(slot, ring):
    """Word of ``ring`` in interleaved ring slot ``slot`` of a record."""
    return RING_BASE + slot * N_RINGS + ring


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _ema_step(rec, field, s, k, period, alpha, p):
    """One EMA update as TA-Lib computes it; the EMA after tick ``k``, NaN while seeding."""
    if k < period - 1:
        rec[s, field] += p
        return np.nan
    if k == period - 1:
        seeded = (rec[s, field] + p) / period
        rec[s, field] = seeded
        return seeded
    ema = rec[s, field]
    ema = ((p - ema) * alpha) + ema
    rec[s, field] = ema
    return ema


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _talib_var_step(rec, s, j, w, inv_n, last, first):
    """TA-Lib's VAR after log return ``j`` (already in the ring): the same operations in order.

    ``inv_n`` is ``1 / w``; ``last`` and ``first`` are the ring slots ``j % w`` and
    ``(j + 1) % w`` (the caller knows them without dividing).

    TA-Lib keeps sums of ``x - shift`` and ``(x - shift)**2`` and recomputes them exactly
    (with the window mean as the new shift) when cancellation threatens (variance below
    1e-6 of the mean square, or the leaving value dominating the sum of squares) and at
    least every ``32 * window`` steps; a recomputed variance below 1e-12 of the mean
    square is zero. Returns the variance (meaningful once ``j >= w - 1``).
    """
    if j == 0:
        rec[s, F_VOL_SHIFT] = rec[s, _ring(0, R_LOG_RETURN)]
        rec[s, F_VOL_SUM] = 0.0
        rec[s, F_VOL_SUM_SQ] = 0.0
        rec[s, W_VOL_COUNTDOWN] = as_float(32 * w)
    shift = rec[s, F_VOL_SHIFT]
    d = rec[s, _ring(last, R_LOG_RETURN)] - shift
    s1 = rec[s, F_VOL_SUM] + d
    s2 = rec[s, F_VOL_SUM_SQ] + d * d
    if j < w - 1:
        rec[s, F_VOL_SUM] = s1
        rec[s, F_VOL_SUM_SQ] = s2
        return 0.0
    mean1 = inv_n * s1
    var = inv_n * s2 - mean1 * mean1
    t = rec[s, _ring(first, R_LOG_RETURN)] - shift
    t2 = t * t
    s2 -= t2
    countdown = as_int(rec[s, W_VOL_COUNTDOWN])
    recompute = (inv_n * s2) * 1e-6 > var or t2 > s2 * 1e6
    if not recompute:
        countdown -= 1
        recompute = countdown == 0
    if recompute:
        acc = 0.0
        for i in range(w):
            acc += rec[s, _ring((first + i) % w, R_LOG_RETURN)]
        shift = acc * inv_n
        s1 = 0.0
        s2 = 0.0
        for i in range(w):
            d = rec[s, _ring((first + i) % w, R_LOG_RETURN)] - shift
            s1 += d
            s2 += d * d
        mean1 = inv_n * s1
        mean2 = inv_n * s2
        var = mean2 - mean1 * mean1
        if var < mean2 * 1e-12:
            var = 0.0
        t = rec[s, _ring(first, R_LOG_RETURN)] - shift
        s2 -= t * t
        countdown = 32 * w
        rec[s, F_VOL_SHIFT] = shift
    rec[s, F_VOL_SUM] = s1 - t
    rec[s, F_VOL_SUM_SQ] = s2
    rec[s, W_VOL_COUNTDOWN] = as_float(countdown)
    return var


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _session_index(cal, v, j, ts):
    """Index of venue ``v``'s last session opened at or before ``ts`` (-1 before the first).

    ``cal[0]`` holds the opens (``SessionTable.table``; indexed whole: a view would cost
    reference counting per tick). ``j`` is the symbol's previous answer: time only moves
    forward per symbol, so the answer is almost always ``j`` or ``j + 1``; anything else
    is a binary search.
    """
    n = cal.shape[2]
    if j >= 0 and j < n - 2 and cal[0, v, j] <= ts:
        if cal[0, v, j + 1] > ts:
            return j
        if cal[0, v, j + 2] > ts:
            return j + 1
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if cal[0, v, mid] <= ts:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _forget_windows(rec, s):
    """Restart symbol ``s``'s windowed indicators (after a gap); keep its session VWAP."""
    for f in range(N_FLOAT_FIELDS):
        if f != F_VWAP_PV and f != F_VWAP_V:
            rec[s, f] = 0.0
    rec[s, W_COUNT] = as_float(0)
    rec[s, W_LAST_SIGN] = as_float(0)
    rec[s, W_VOL_COUNTDOWN] = as_float(0)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def check_columns(symbol, price, size, ts_ns):
    """0, or the BAD_* code of the first tick column whose length is not the symbols'."""
    n = symbol.shape[0]
    if price.shape[0] != n:
        return BAD_PRICE_LENGTH
    if size.shape[0] != n:
        return BAD_SIZE_LENGTH
    if ts_ns.shape[0] != n:
        return BAD_TS_LENGTH
    return 0


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _check_batch(symbol, price, size, ts_ns, out, reasons):
    """0, or the BAD_* code of the first column or buffer that does not fit the batch."""
    n = symbol.shape[0]
    bad = check_columns(symbol, price, size, ts_ns)
    if bad != 0:
        return bad
    if out.shape[0] != n or out.shape[1] != 7:
        return BAD_OUT_SHAPE
    if reasons.shape[0] < n:
        return BAD_REASONS_LENGTH
    return 0


@njit(cache=True, nogil=True, error_model="numpy")
def apply_batch(symbol, price, size, ts_ns, rec, params, cal, out, reasons):
    """Apply a batch of ticks in order; write features to ``out`` and verdicts to ``reasons``.

    Returns the number of accepted ticks. A rejected tick leaves no trace in the state and
    gets a NaN row. ``cal`` is the session table (``app.sessions``; no venues: fixed
    ``session_ns`` sessions). Allocates nothing: all state is in the records. The loop
    body calls only scalar-or-inlined helpers: an inlined helper taking arrays would cost
    reference counting per tick.
    """
    n = symbol.shape[0]
    n_symbols = rec.shape[0]
    p_fast = params[P_EMA_FAST]
    p_slow = params[P_EMA_SLOW]
    p_rsi = params[P_RSI]
    w = params[P_WINDOW]
    session_ns = params[P_SESSION_NS]
    max_gap_ns = params[P_MAX_GAP_NS]
    k_fast = 2.0 / (p_fast + 1)
    k_slow = 2.0 / (p_slow + 1)
    inv_w = 1.0 / w
    prefetching = n_symbols * rec.shape[1] * 8 > PREFETCH_ABOVE_BYTES
    accepted = 0
    for t in range(n):
        if prefetching:  # the state ticks t + PREFETCH_RECORD and t + PREFETCH_RING touch
            u = t + PREFETCH_RECORD
            if u < n:
                s = symbol[u]
                if s >= 0 and s < n_symbols:
                    prefetch(rec, s, 0)
                    prefetch(rec, s, 8)
                    prefetch(rec, s, 16)
            u = t + PREFETCH_RING
            if u < n:
                s = symbol[u]
                if s >= 0 and s < n_symbols:
                    slot = (
                        as_int(rec[s, W_COUNT]) % w
                    )  # the tick's slot, and the one before it (log return)
                    prefetch(rec, s, _ring(slot, 0))
                    prefetch(rec, s, _ring(slot - 1 if slot > 0 else w - 1, 0))

        s = symbol[t]
        p = price[t]
        q = size[t]
        ts = ts_ns[t]
        nan = np.nan
        # Validate before touching state: a rejected tick leaves no trace.
        reason = 0
        if s < 0 or s >= n_symbols:
            reason = 1
        elif not (p > 0.0 and p < math.inf):  # also false for NaN
            reason = 2
        elif not (q >= 0.0 and q < math.inf):
            reason = 3
        elif ts < as_int(rec[s, W_LAST_TS]):
            reason = 4
        reasons[t] = reason
        if reason != 0:
            for c in range(7):
                out[t, c] = nan
            continue
        accepted += 1

        if (
            max_gap_ns > 0
            and as_int(rec[s, W_COUNT]) > 0
            and ts - as_int(rec[s, W_LAST_TS]) > max_gap_ns
        ):
            _forget_windows(rec, s)
        k = as_int(rec[s, W_COUNT])  # this tick's index in the symbol's accepted series
        slot = k % w
        log_p = math.log(p)
        prev_p = rec[s, F_LAST_PRICE]

        # EMA, exactly as TA-Lib: SMA of the first `period` prices, then the recursion.
        out[t, 0] = _ema_step(rec, F_EMA_FAST, s, k, p_fast, k_fast, p)
        out[t, 1] = _ema_step(rec, F_EMA_SLOW, s, k, p_slow, k_slow, p)

        # RSI, exactly as talib.RSI: plain sums over the first period, then Wilder's smoothing.
        out[t, 2] = nan
        if k >= 1:
            diff = p - prev_p
            gain = rec[s, F_RSI_GAIN]
            loss = rec[s, F_RSI_LOSS]
            if k > p_rsi:
                loss *= p_rsi - 1
                gain *= p_rsi - 1
            if diff < 0:
                loss -= diff
            else:
                gain += diff
            if k >= p_rsi:
                loss /= p_rsi
                gain /= p_rsi
                total = gain + loss
                # No movement in the window: neutral (TA-Lib says 0, "maximally oversold").
                out[t, 2] = 100.0 * (gain / total) if total != 0.0 else 50.0
            rec[s, F_RSI_GAIN] = gain
            rec[s, F_RSI_LOSS] = loss

        # Volatility: talib.STDDEV(log returns), replaying TA-Lib's VAR step by step.
        out[t, 3] = nan
        if k >= 1:
            j = k - 1  # index of this log return, in the slot before this tick's
            last = slot - 1 if slot > 0 else w - 1
            rec[s, _ring(last, R_LOG_RETURN)] = log_p - rec[s, F_LAST_LOG_PRICE]
            # The oldest return in the window, the one leaving it, is in this tick's slot.
            var = _talib_var_step(rec, s, j, w, inv_w, last, slot)
            if j >= w - 1:
                # TA-Lib takes sqrt of whatever VAR gives; its VAR is never negative in practice.
                out[t, 3] = math.sqrt(var) if var > 0.0 else 0.0

        # Z-score against the last `window` prices: sliding Welford, recomputed exactly once
        # per window and whenever the leaving price dwarfs what remains (cancellation).
        mean = rec[s, F_Z_MEAN]
        m2 = rec[s, F_Z_M2]
        resync = slot == w - 1
        if k < w:
            delta = p - mean
            mean += delta / (k + 1)
            m2 += delta * (p - mean)
        else:
            old = rec[s, _ring(slot, R_PRICE)]
            new_mean = mean + (p - old) / w
            dev_old = old - mean
            m2 += (p - old) * (p - new_mean + dev_old)
            mean = new_mean
            resync = resync or m2 < 0.0 or dev_old * dev_old > m2 * 1e6
        rec[s, _ring(slot, R_PRICE)] = p
        if resync:
            acc = 0.0
            for i in range(w):
                acc += rec[s, _ring(i, R_PRICE)]
            mean = acc / w
            m2 = 0.0
            for i in range(w):
                d = rec[s, _ring(i, R_PRICE)] - mean
                m2 += d * d
        rec[s, F_Z_MEAN] = mean
        rec[s, F_Z_M2] = m2
        if k >= w - 1:
            sd = math.sqrt(m2 / w) if m2 > 0.0 else 0.0
            # A spread below 1e-12 of the price level is rounding residue, not variation.
            out[t, 4] = (p - mean) / sd if sd > 1e-12 * abs(mean) else 0.0
        else:
            out[t, 4] = nan

        # Session VWAP: reset when the tick's session is not the sums' session.
        in_session = True
        if cal.shape[1] > 0:
            venue = as_int(rec[s, W_VENUE])
            j = _session_index(cal, venue, as_int(rec[s, W_SESSION_IDX]), ts)
            rec[s, W_SESSION_IDX] = as_float(j)
            if j < 0:
                session = NO_SESSION
                in_session = False
            else:
                session = cal[0, venue, j]
                in_session = ts < cal[1, venue, j]
        else:
            session = (ts // session_ns) * session_ns
        pv = rec[s, F_VWAP_PV]
        v = rec[s, F_VWAP_V]
        if session != as_int(rec[s, W_SESSION_OPEN]):
            rec[s, W_SESSION_OPEN] = as_float(session)
            pv = 0.0
            v = 0.0
        if in_session:
            pv += p * q
            v += q
        rec[s, F_VWAP_PV] = pv
        rec[s, F_VWAP_V] = v
        out[t, 5] = pv / v if v > 0.0 else p

        # Order-flow imbalance: tick rule (a zero tick keeps the previous sign).
        sign = as_int(rec[s, W_LAST_SIGN])
        if k >= 1:
            if p > prev_p:
                sign = 1
            elif p < prev_p:
                sign = -1
        rec[s, W_LAST_SIGN] = as_float(sign)
        signed = sign * q
        osum = rec[s, F_OFI_SIGNED] + signed
        otot = rec[s, F_OFI_TOTAL] + q
        if k >= w:
            osum -= rec[s, _ring(slot, R_SIGNED_SIZE)]
            otot -= rec[s, _ring(slot, R_SIZE)]
        rec[s, _ring(slot, R_SIGNED_SIZE)] = signed
        rec[s, _ring(slot, R_SIZE)] = q
        if slot == w - 1:
            osum = 0.0
            otot = 0.0
            for i in range(w):
                osum += rec[s, _ring(i, R_SIGNED_SIZE)]
                otot += rec[s, _ring(i, R_SIZE)]
        rec[s, F_OFI_SIGNED] = osum
        rec[s, F_OFI_TOTAL] = otot
        if k >= w:
            out[t, 6] = osum / otot if otot > 0.0 else 0.0
        else:
            out[t, 6] = nan

        rec[s, F_LAST_PRICE] = p
        rec[s, F_LAST_LOG_PRICE] = log_p
        rec[s, W_LAST_TS] = as_float(ts)
        rec[s, W_COUNT] = as_float(k + 1)
    return accepted


# The columns' types: anything else is converted first (FeatureEngine.update).
TICK_COLUMNS = "int32[::1], float64[::1], float64[::1], int64[::1]"
STATE_ARGS = "float64[:, ::1], int64[::1], int64[:, :, ::1]"


@njit(
    f"int64({TICK_COLUMNS}, {STATE_ARGS}, float64[:, ::1], uint8[::1])",
    cache=True, nogil=True, error_model="numpy",
)  # fmt: skip
def _update_kernel(symbol, price, size, ts_ns, rec, params, cal, out, reasons):
    """Check the batch's shapes (a BAD_* code: nothing done), then apply it (see ``apply_batch``)."""
    bad = _check_batch(symbol, price, size, ts_ns, out, reasons)
    if bad != 0:
        return bad
    return apply_batch(symbol, price, size, ts_ns, rec, params, cal, out, reasons)


class FeatureSettings(Protocol):
    """A configuration the service builds its engine from (``app.config.FeatureConfig``)."""

    @property
    def n_symbols(self) -> int: ...
    @property
    def venue(self) -> str: ...
    @property
    def symbol_venues(self) -> Mapping[int, str]: ...
    def only(self) -> FeatureParams: ...


class FeatureEngine:
    """Streaming features for ``n_symbols`` symbols; not thread-safe (one owner per engine)."""

    def __init__(
        self,
        n_symbols: int,
        ema_fast: int = 12,
        ema_slow: int = 26,
        rsi_period: int = 14,
        window: int = 20,
        *,
        session_ns: int = DEFAULT_SESSION_NS,
        sessions: SessionTable | None = None,
        max_gap_ns: int = 0,
    ) -> None:
        for name, value, low in (
            ("n_symbols", n_symbols, 1),
            ("ema_fast", ema_fast, 2),
            ("ema_slow", ema_slow, 2),
            ("rsi_period", rsi_period, 2),
            ("window", window, 2),
            ("session_ns", session_ns, 1),
            ("max_gap_ns", max_gap_ns, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} = {value!r}: must be an integer >= {low}")
        if ema_fast >= ema_slow:
            raise ValueError(
                f"ema_fast = {ema_fast}, ema_slow = {ema_slow}: ema_fast must be < ema_slow"
            )
        self.n_symbols = n_symbols
        self.ema_fast = ema_fast
        self.ema_slow = ema_slow
        self.rsi_period = rsi_period
        self.window = window
        if sessions is not None and sessions.n_symbols != n_symbols:
            raise ValueError(
                f"sessions: a table for {sessions.n_symbols} symbols; the engine has {n_symbols}"
            )
        self.session_ns = session_ns
        self.max_gap_ns = max_gap_ns
        self.sessions = sessions if sessions is not None else SessionTable.none(n_symbols)
        self.state = SymbolState(n_symbols, window)
        self.state.set_venues(self.sessions.symbol_venue)
        self._params = np.array(
            [ema_fast, ema_slow, rsi_period, window, session_ns, max_gap_ns], np.int64
        )
        # The arrays every compiled kernel over this engine takes, fixed for its life.
        self.kernel_state = (self.state.records, self._params, self.sessions.table)
        self._reasons = np.zeros(0, dtype=np.uint8)
        self._n_last = 0

    def update(
        self,
        symbol: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        ts_ns: np.ndarray,
        *,
        out: np.ndarray | None = None,
        reasons: np.ndarray | None = None,
    ) -> np.ndarray:
        """Apply ticks in order; return ``float64[n, len(FEATURES)]``, the features after each.

        Rejected ticks change nothing and get a NaN row; their reasons are in
        ``last_reasons`` (or in ``reasons`` when given). Pass ``out``/``reasons`` to
        reuse buffers: then the call allocates nothing.
        """
        n = len(symbol)
        if out is None:
            out = np.empty((n, len(FEATURES)), dtype=np.float64)
        if reasons is None:
            if self._reasons.shape[0] < n:  # grows to the largest batch seen, then reused
                self._reasons = np.zeros(max(n, 2 * self._reasons.shape[0]), dtype=np.uint8)
            reasons = self._reasons
        records, params, table = self.kernel_state
        try:  # columns of the kernel's types go straight in: nothing checked twice
            status = _update_kernel(symbol, price, size, ts_ns, records, params, table, out,
                                    reasons)  # fmt: skip
        except TypeError:  # another type or layout: convert what can be, refuse the rest
            symbol, price, size, ts_ns = kernel_columns(symbol, price, size, ts_ns)
            n = symbol.shape[0]
            _check_buffer("out", out, np.float64, (n, len(FEATURES)))
            _check_buffer("reasons", reasons, np.uint8, (n,))
            status = _update_kernel(symbol, price, size, ts_ns, records, params, table, out,
                                    reasons)  # fmt: skip
        if status < 0:
            raise kernel_refusal(status, n, price, size, ts_ns, out, reasons)
        self._reasons = reasons
        self._n_last = n
        return out

    @classmethod
    def from_params(
        cls, n_symbols: int, params: FeatureParams, sessions: SessionTable | None = None
    ) -> FeatureEngine:
        return cls(
            n_symbols, params.ema_fast, params.ema_slow, params.rsi_period, params.window,
            sessions=sessions, max_gap_ns=params.max_gap_ns,
        )  # fmt: skip

    @classmethod
    def from_config(cls, config: FeatureSettings) -> FeatureEngine:
        """The service's engine: ``config``'s parameters, sessions from each symbol's venue."""
        sessions = SessionTable.for_symbols(config.n_symbols, config.venue, config.symbol_venues)
        return cls.from_params(config.n_symbols, config.only(), sessions)

    @property
    def params(self) -> FeatureParams:
        """The parameters this engine computes its features with (what a manifest records)."""
        return FeatureParams(
            ema_fast=self.ema_fast, ema_slow=self.ema_slow, rsi_period=self.rsi_period,
            window=self.window, max_gap_s=self.max_gap_ns / 1e9,
        )  # fmt: skip

    @property
    def last_reasons(self) -> np.ndarray:
        """uint8 reason per tick of the last update (0 = accepted); valid until the next update."""
        return self._reasons[: self._n_last]

    def reset(self, symbol: int | None = None) -> None:
        self.state.reset(symbol)


def tick_column(name: str, values: np.ndarray, dtype: type, n: int | None = None) -> np.ndarray:
    """The column as a contiguous, writable 1-D array of ``dtype``; copies only when it must."""
    arr = np.ascontiguousarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name}: shape {arr.shape}: must be 1-D")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: {arr.shape[0]} values but symbol has {n}: lengths must match")
    return arr if arr.flags.writeable else arr.copy()  # the kernel's types are writable arrays


def kernel_columns(symbol: np.ndarray, price: np.ndarray, size: np.ndarray, ts_ns: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """A batch's columns as the compiled kernels take them (`tick_column`), each as long as
    ``symbol``; ValueError naming the first that is not."""
    symbol = tick_column("symbol", symbol, np.int32)
    n = symbol.shape[0]
    return (symbol, tick_column("price", price, np.float64, n),
            tick_column("size", size, np.float64, n), tick_column("ts_ns", ts_ns, np.int64, n))  # fmt: skip


def _check_buffer(name: str, buffer: np.ndarray, dtype: type, shape: tuple[int, ...]) -> None:
    """ValueError unless ``buffer`` is a C-contiguous, writable ``dtype`` array of ``shape``
    (a 1-D buffer may be longer)."""
    fits = (
        isinstance(buffer, np.ndarray)
        and buffer.dtype == dtype
        and buffer.flags.c_contiguous
        and buffer.flags.writeable
        and buffer.ndim == len(shape)
        and (buffer.shape == shape or (len(shape) == 1 and buffer.shape[0] >= shape[0]))
    )
    if not fits:
        what = f"shape {buffer.shape} dtype {buffer.dtype}" if isinstance(buffer, np.ndarray) \
            else type(buffer).__name__  # fmt: skip
        need = f"of >= {shape[0]}" if len(shape) == 1 else str(shape)
        raise ValueError(
            f"{name}: {what}: must be a C-contiguous, writable {np.dtype(dtype).name} array {need}"
        )


def kernel_refusal(status: int, n: int, price: Any, size: Any, ts_ns: Any, out: Any, reasons: Any
             ) -> ValueError:  # fmt: skip
    """The error the kernel's BAD_* answer ``status`` stands for."""
    if status == BAD_OUT_SHAPE:
        return ValueError(f"out: shape {np.shape(out)}: must be ({n}, {len(FEATURES)}) float64")
    if status == BAD_REASONS_LENGTH:
        return ValueError(f"reasons: shape {np.shape(reasons)}: must be uint8 of >= {n}")
    name, values = {
        BAD_PRICE_LENGTH: ("price", price),
        BAD_SIZE_LENGTH: ("size", size),
        BAD_TS_LENGTH: ("ts_ns", ts_ns),
    }[status]
    return ValueError(f"{name}: {len(values)} values but symbol has {n}: lengths must match")


def explain(reasons: np.ndarray) -> list[tuple[int, str]]:
    """(index, reason) of every rejected tick in ``reasons``."""
    idx = np.flatnonzero(reasons)
    return [(int(i), REJECT_REASONS[int(reasons[i])]) for i in idx]
