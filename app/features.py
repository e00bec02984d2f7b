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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import numpy as np
from numba import njit
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.sessions import SessionTable
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
    I_COUNT,
    I_LAST_SIGN,
    I_LAST_TS,
    I_SESSION_IDX,
    I_SESSION_OPEN,
    I_VOL_COUNTDOWN,
    NO_SESSION,
    R_LOG_RETURN,
    R_PRICE,
    R_SIGNED_SIZE,
    R_SIZE,
    SymbolState,
)

FEATURES: tuple[str, ...] = ("ema_fast", "ema_slow", "rsi", "volatility", "zscore", "vwap", "ofi")
COL_EMA_FAST, COL_EMA_SLOW, COL_RSI, COL_VOLATILITY, COL_ZSCORE, COL_VWAP, COL_OFI = range(7)

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


class FeatureParams(BaseModel):
    """What defines the features a model sees: recorded in its manifest, checked when serving.

    Periods and windows count ticks; ``max_gap_s`` is the longest silence between two
    ticks of a symbol that keeps its windows (0: never reset).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    ema_fast: int = Field(default=12, ge=2)
    ema_slow: int = Field(default=26, ge=2)
    rsi_period: int = Field(default=14, ge=2)
    window: int = Field(default=20, ge=2)
    max_gap_s: float = Field(default=300.0, ge=0, le=7 * 86_400)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> FeatureParams:
        if self.ema_fast >= self.ema_slow:
            raise ValueError(
                f"ema_fast = {self.ema_fast}, ema_slow = {self.ema_slow}: "
                "ema_fast must be smaller than ema_slow"
            )
        return self

    @property
    def max_gap_ns(self) -> int:
        return round(self.max_gap_s * 1e9)

    def only(self) -> FeatureParams:
        """These parameters alone (a subclass's extra settings, e.g. venues, dropped)."""
        return FeatureParams.model_validate(
            self.model_dump(include=set(FeatureParams.model_fields))
        )


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
        self._params = np.array(
            [ema_fast, ema_slow, rsi_period, window, session_ns, max_gap_ns], np.int64
        )
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
        symbol = _column("symbol", symbol, np.int32)
        n = symbol.shape[0]
        price = _column("price", price, np.float64, n)
        size = _column("size", size, np.float64, n)
        ts_ns = _column("ts_ns", ts_ns, np.int64, n)
        if out is None:
            out = np.empty((n, len(FEATURES)), dtype=np.float64)
        elif out.shape != (n, len(FEATURES)) or out.dtype != np.float64:
            raise ValueError(
                f"out: shape {out.shape} dtype {out.dtype}: must be ({n}, {len(FEATURES)}) float64"
            )
        if reasons is None:
            if self._reasons.shape[0] < n:  # grows to the largest batch seen, then reused
                self._reasons = np.zeros(max(n, 2 * self._reasons.shape[0]), dtype=np.uint8)
            reasons = self._reasons
        elif reasons.shape[0] < n or reasons.dtype != np.uint8:
            raise ValueError(
                f"reasons: shape {reasons.shape} dtype {reasons.dtype}: must be uint8 of >= {n}"
            )
        else:
            self._reasons = reasons
        st, cal = self.state, self.sessions
        _update_kernel(symbol, price, size, ts_ns, st.floats, st.ints, st.rings, self._params,
                       cal.opens, cal.closes, cal.symbol_venue, out, reasons)  # fmt: skip
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


def _column(name: str, values: np.ndarray, dtype: type, n: int | None = None) -> np.ndarray:
    """The column as a contiguous 1-D array of ``dtype``; copies only when it must."""
    arr = np.ascontiguousarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name}: shape {arr.shape}: must be 1-D")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: {arr.shape[0]} values but symbol has {n}: lengths must match")
    return arr


def explain(reasons: np.ndarray) -> list[tuple[int, str]]:
    """(index, reason) of every rejected tick in ``reasons``."""
    idx = np.flatnonzero(reasons)
    return [(int(i), REJECT_REASONS[int(reasons[i])]) for i in idx]
