"""The feature engine's previous state layout, kept for the benchmark (and the equality test) only.

Before the per-symbol record layout the state was laid out ``[field, symbol]``: 15 float rows, 6 integer rows
and 4 ring rows, so one tick touched ~24 cache lines in as many arrays. This module is
that kernel verbatim (``app/features.py`` and ``app/state.py`` before the change), with a
minimal engine around it, so ``bench/engine.py`` measures the new layout against it in
the same run and ``tests/app/test_features.py`` proves the two compute the same bits.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from app.sessions import SessionTable

# Float fields: rows of SymbolState.floats.
F_LAST_PRICE = 0  # price of the last accepted tick
F_LAST_LOG_PRICE = 1  # log of that price: the next log return's base
F_EMA_FAST = 2  # running SMA sum during warm-up, then the EMA (TA-Lib's seeding)
F_EMA_SLOW = 3
F_RSI_GAIN = 4  # Wilder's average gain (a plain sum during warm-up)
F_RSI_LOSS = 5
F_VOL_SUM = 6  # TA-Lib VAR's running sums of (log return - shift) and its square
F_VOL_SUM_SQ = 7
F_Z_MEAN = 8  # sliding mean and sum of squared deviations of the last `window` prices
F_Z_M2 = 9
F_VWAP_PV = 10  # session sums of price * size and size
F_VWAP_V = 11
F_OFI_SIGNED = 12  # sliding sums of tick-rule signed size and size
F_OFI_TOTAL = 13
F_VOL_SHIFT = 14  # TA-Lib VAR's shift: the window mean at its last exact recomputation
N_FLOAT_FIELDS = 15

# Integer fields: rows of SymbolState.ints.
I_COUNT = 0  # accepted ticks so far: the next tick's index k
I_LAST_TS = 1  # timestamp (ns) of the last accepted tick
I_SESSION_OPEN = 2  # UTC ns of the open of the VWAP sums' session: the session's key
I_LAST_SIGN = 3  # tick-rule sign of the last tick: carried through zero ticks
I_VOL_COUNTDOWN = 4  # TA-Lib VAR's steps left before its periodic exact recomputation
I_SESSION_IDX = 5  # index of that session in the venue's table: a lookup hint, re-checked
N_INT_FIELDS = 6

# Ring buffers: first index of SymbolState.rings.
R_PRICE = 0  # last `window` prices (z-score)
R_LOG_RETURN = 1  # last `window` log returns (volatility)
R_SIGNED_SIZE = 2  # last `window` tick-rule signed sizes (order-flow imbalance)
R_SIZE = 3  # last `window` sizes
N_RINGS = 4

# Sentinel for "no tick yet": any real timestamp is >= it. Also "no session yet".
NO_TIMESTAMP = np.iinfo(np.int64).min
# Session key of ticks before a venue's first known session (distinct from NO_TIMESTAMP).
NO_SESSION = NO_TIMESTAMP + 1

# Integer parameters passed to the kernel as one array (fewer arguments to dispatch).
P_EMA_FAST, P_EMA_SLOW, P_RSI, P_WINDOW, P_SESSION_NS, P_MAX_GAP_NS = range(6)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _ema_step(floats, field, s, k, period, alpha, p):
    """One EMA update as TA-Lib computes it; the EMA after tick ``k``, NaN while seeding."""
    if k < period - 1:
        floats[field, s] += p
        return np.nan
    if k == period - 1:
        seeded = (floats[field, s] + p) / period
        floats[field, s] = seeded
        return seeded
    ema = floats[field, s]
    ema = ((p - ema) * alpha) + ema
    floats[field, s] = ema
    return ema


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _talib_var_step(floats, ints, rings, s, j, w):
    """TA-Lib's VAR after log return ``j`` (already in the ring): the same operations in order.

    TA-Lib keeps sums of ``x - shift`` and ``(x - shift)**2`` and recomputes them exactly
    (with the window mean as the new shift) when cancellation threatens (variance below
    1e-6 of the mean square, or the leaving value dominating the sum of squares) and at
    least every ``32 * window`` steps; a recomputed variance below 1e-12 of the mean
    square is zero. Returns the variance (meaningful once ``j >= w - 1``).
    """
    inv_n = 1.0 / w
    if j == 0:
        floats[F_VOL_SHIFT, s] = rings[R_LOG_RETURN, s, 0]
        floats[F_VOL_SUM, s] = 0.0
        floats[F_VOL_SUM_SQ, s] = 0.0
        ints[I_VOL_COUNTDOWN, s] = 32 * w
    shift = floats[F_VOL_SHIFT, s]
    d = rings[R_LOG_RETURN, s, j % w] - shift
    s1 = floats[F_VOL_SUM, s] + d
    s2 = floats[F_VOL_SUM_SQ, s] + d * d
    if j < w - 1:
        floats[F_VOL_SUM, s] = s1
        floats[F_VOL_SUM_SQ, s] = s2
        return 0.0
    mean1 = inv_n * s1
    var = inv_n * s2 - mean1 * mean1
    first = (j + 1) % w  # slot of the oldest return in the window: the one leaving it
    t = rings[R_LOG_RETURN, s, first] - shift
    t2 = t * t
    s2 -= t2
    countdown = ints[I_VOL_COUNTDOWN, s]
    recompute = (inv_n * s2) * 1e-6 > var or t2 > s2 * 1e6
    if not recompute:
        countdown -= 1
        recompute = countdown == 0
    if recompute:
        acc = 0.0
        for i in range(w):
            acc += rings[R_LOG_RETURN, s, (first + i) % w]
        shift = acc * inv_n
        s1 = 0.0
        s2 = 0.0
        for i in range(w):
            d = rings[R_LOG_RETURN, s, (first + i) % w] - shift
            s1 += d
            s2 += d * d
        mean1 = inv_n * s1
        mean2 = inv_n * s2
        var = mean2 - mean1 * mean1
        if var < mean2 * 1e-12:
            var = 0.0
        t = rings[R_LOG_RETURN, s, first] - shift
        s2 -= t * t
        countdown = 32 * w
        floats[F_VOL_SHIFT, s] = shift
    floats[F_VOL_SUM, s] = s1 - t
    floats[F_VOL_SUM_SQ, s] = s2
    ints[I_VOL_COUNTDOWN, s] = countdown
    return var


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _session_index(opens, v, j, ts):
    """Index of venue ``v``'s last session opened at or before ``ts`` (-1 before the first).

    ``j`` is the symbol's previous answer: time only moves forward per symbol, so the
    answer is almost always ``j`` or ``j + 1``; anything else is a binary search.
    """
    n = opens.shape[1]
    if j >= 0 and j < n - 2 and opens[v, j] <= ts:
        if opens[v, j + 1] > ts:
            return j
        if opens[v, j + 2] > ts:
            return j + 1
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if opens[v, mid] <= ts:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _forget_windows(floats, ints, s):
    """Restart symbol ``s``'s windowed indicators (after a gap); keep its session VWAP."""
    for f in range(floats.shape[0]):
        if f != F_VWAP_PV and f != F_VWAP_V:
            floats[f, s] = 0.0
    ints[I_COUNT, s] = 0
    ints[I_LAST_SIGN, s] = 0
    ints[I_VOL_COUNTDOWN, s] = 0


@njit(cache=True, nogil=True, error_model="numpy")
def _update_kernel(
    symbol, price, size, ts_ns, floats, ints, rings, params, opens, closes, symbol_venue, out,
    reasons,
):  # fmt: skip
    """Apply a batch of ticks in order; write features to ``out`` and verdicts to ``reasons``.

    Returns the number of accepted ticks. Allocates nothing: all state is in
    ``floats``/``ints``/``rings``. ``opens``/``closes``/``symbol_venue`` are the session
    table (``app.sessions``; no venues: fixed ``session_ns`` sessions).
    """
    n_symbols = floats.shape[1]
    p_fast = params[P_EMA_FAST]
    p_slow = params[P_EMA_SLOW]
    p_rsi = params[P_RSI]
    w = params[P_WINDOW]
    session_ns = params[P_SESSION_NS]
    max_gap_ns = params[P_MAX_GAP_NS]
    calendar = opens.shape[0] > 0
    k_fast = 2.0 / (p_fast + 1)
    k_slow = 2.0 / (p_slow + 1)
    nan = np.nan
    accepted = 0

    for t in range(symbol.shape[0]):
        s = symbol[t]
        p = price[t]
        q = size[t]
        ts = ts_ns[t]
        # Validate before touching state: a rejected tick leaves no trace.
        reason = 0
        if s < 0 or s >= n_symbols:
            reason = 1
        elif not (p > 0.0 and p < math.inf):  # also false for NaN
            reason = 2
        elif not (q >= 0.0 and q < math.inf):
            reason = 3
        elif ts < ints[I_LAST_TS, s]:
            reason = 4
        reasons[t] = reason
        if reason != 0:
            for c in range(7):
                out[t, c] = nan
            continue
        accepted += 1

        if max_gap_ns > 0 and ints[I_COUNT, s] > 0 and ts - ints[I_LAST_TS, s] > max_gap_ns:
            _forget_windows(floats, ints, s)
        k = ints[I_COUNT, s]  # this tick's index in the symbol's accepted series
        slot = k % w
        log_p = math.log(p)
        prev_p = floats[F_LAST_PRICE, s]

        # EMA, exactly as TA-Lib: SMA of the first `period` prices, then the recursion.
        out[t, 0] = _ema_step(floats, F_EMA_FAST, s, k, p_fast, k_fast, p)
        out[t, 1] = _ema_step(floats, F_EMA_SLOW, s, k, p_slow, k_slow, p)

        # RSI, exactly as talib.RSI: plain sums over the first period, then Wilder's smoothing.
        out[t, 2] = nan
        if k >= 1:
            diff = p - prev_p
            gain = floats[F_RSI_GAIN, s]
            loss = floats[F_RSI_LOSS, s]
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
            floats[F_RSI_GAIN, s] = gain
            floats[F_RSI_LOSS, s] = loss

        # Volatility: talib.STDDEV(log returns), replaying TA-Lib's VAR step by step.
        out[t, 3] = nan
        if k >= 1:
            j = k - 1  # index of this log return
            rings[R_LOG_RETURN, s, j % w] = log_p - floats[F_LAST_LOG_PRICE, s]
            var = _talib_var_step(floats, ints, rings, s, j, w)
            if j >= w - 1:
                # TA-Lib takes sqrt of whatever VAR gives; its VAR is never negative in practice.
                out[t, 3] = math.sqrt(var) if var > 0.0 else 0.0

        # Z-score against the last `window` prices: sliding Welford, recomputed exactly once
        # per window and whenever the leaving price dwarfs what remains (cancellation).
        mean = floats[F_Z_MEAN, s]
        m2 = floats[F_Z_M2, s]
        resync = slot == w - 1
        if k < w:
            delta = p - mean
            mean += delta / (k + 1)
            m2 += delta * (p - mean)
        else:
            old = rings[R_PRICE, s, slot]
            new_mean = mean + (p - old) / w
            dev_old = old - mean
            m2 += (p - old) * (p - new_mean + dev_old)
            mean = new_mean
            resync = resync or m2 < 0.0 or dev_old * dev_old > m2 * 1e6
        rings[R_PRICE, s, slot] = p
        if resync:
            acc = 0.0
            for i in range(w):
                acc += rings[R_PRICE, s, i]
            mean = acc / w
            m2 = 0.0
            for i in range(w):
                d = rings[R_PRICE, s, i] - mean
                m2 += d * d
        floats[F_Z_MEAN, s] = mean
        floats[F_Z_M2, s] = m2
        if k >= w - 1:
            sd = math.sqrt(m2 / w) if m2 > 0.0 else 0.0
            # A spread below 1e-12 of the price level is rounding residue, not variation.
            out[t, 4] = (p - mean) / sd if sd > 1e-12 * abs(mean) else 0.0
        else:
            out[t, 4] = nan

        # Session VWAP: reset when the tick's session is not the sums' session.
        in_session = True
        if calendar:
            venue = symbol_venue[s]
            j = _session_index(opens, venue, ints[I_SESSION_IDX, s], ts)
            ints[I_SESSION_IDX, s] = j
            if j < 0:
                session = NO_SESSION
                in_session = False
            else:
                session = opens[venue, j]
                in_session = ts < closes[venue, j]
        else:
            session = (ts // session_ns) * session_ns
        pv = floats[F_VWAP_PV, s]
        v = floats[F_VWAP_V, s]
        if session != ints[I_SESSION_OPEN, s]:
            ints[I_SESSION_OPEN, s] = session
            pv = 0.0
            v = 0.0
        if in_session:
            pv += p * q
            v += q
        floats[F_VWAP_PV, s] = pv
        floats[F_VWAP_V, s] = v
        out[t, 5] = pv / v if v > 0.0 else p

        # Order-flow imbalance: tick rule (a zero tick keeps the previous sign).
        sign = ints[I_LAST_SIGN, s]
        if k >= 1:
            if p > prev_p:
                sign = 1
            elif p < prev_p:
                sign = -1
        ints[I_LAST_SIGN, s] = sign
        signed = sign * q
        osum = floats[F_OFI_SIGNED, s] + signed
        otot = floats[F_OFI_TOTAL, s] + q
        if k >= w:
            osum -= rings[R_SIGNED_SIZE, s, slot]
            otot -= rings[R_SIZE, s, slot]
        rings[R_SIGNED_SIZE, s, slot] = signed
        rings[R_SIZE, s, slot] = q
        if slot == w - 1:
            osum = 0.0
            otot = 0.0
            for i in range(w):
                osum += rings[R_SIGNED_SIZE, s, i]
                otot += rings[R_SIZE, s, i]
        floats[F_OFI_SIGNED, s] = osum
        floats[F_OFI_TOTAL, s] = otot
        if k >= w:
            out[t, 6] = osum / otot if otot > 0.0 else 0.0
        else:
            out[t, 6] = nan

        floats[F_LAST_PRICE, s] = p
        floats[F_LAST_LOG_PRICE, s] = log_p
        ints[I_LAST_TS, s] = ts
        ints[I_COUNT, s] = k + 1
    return accepted


class OldLayoutEngine:
    """``FeatureEngine``'s constructor and ``update`` over the old ``[field, symbol]`` arrays."""

    def __init__(self, n_symbols: int, ema_fast: int = 12, ema_slow: int = 26,
                 rsi_period: int = 14, window: int = 20, *, session_ns: int = 86_400 * 10**9,
                 sessions: SessionTable | None = None, max_gap_ns: int = 0) -> None:  # fmt: skip
        self.n_symbols = n_symbols
        self.sessions = sessions if sessions is not None else SessionTable.none(n_symbols)
        self.floats = np.zeros((N_FLOAT_FIELDS, n_symbols))
        self.ints = np.zeros((N_INT_FIELDS, n_symbols), np.int64)
        self.rings = np.zeros((N_RINGS, n_symbols, window))
        self.ints[I_LAST_TS] = NO_TIMESTAMP
        self.ints[I_SESSION_OPEN] = NO_TIMESTAMP
        self.ints[I_SESSION_IDX] = -1
        self._params = np.array(
            [ema_fast, ema_slow, rsi_period, window, session_ns, max_gap_ns], np.int64
        )
        self.last_reasons = np.zeros(0, np.uint8)

    def update(self, symbol, price, size, ts_ns, *, out=None, reasons=None) -> np.ndarray:
        n = symbol.shape[0]
        out = np.empty((n, 7)) if out is None else out
        reasons = np.empty(n, np.uint8) if reasons is None else reasons
        cal = self.sessions
        _update_kernel(symbol, price, size, ts_ns, self.floats, self.ints, self.rings,
                       self._params, cal.opens, cal.closes, cal.symbol_venue, out, reasons)  # fmt: skip
        self.last_reasons = reasons[:n]
        return out
