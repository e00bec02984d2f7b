"""Per-symbol indicator state as a preallocated struct-of-arrays, reused for every tick.

Each field is one contiguous row of a 2-D array indexed ``[field, symbol]`` so the
Numba kernel receives the whole state in three arguments and touches no Python
object per tick. Ring buffers hold the last ``window`` values a sliding indicator
must subtract again; a ring's slot for a symbol's ``k``-th accepted tick is
``k % window``.
"""

from __future__ import annotations

import numpy as np

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
I_SESSION = 2  # session number of the VWAP sums (ts_ns // session_ns)
I_LAST_SIGN = 3  # tick-rule sign of the last tick: carried through zero ticks
I_VOL_COUNTDOWN = 4  # TA-Lib VAR's steps left before its periodic exact recomputation
N_INT_FIELDS = 5

# Ring buffers: first index of SymbolState.rings.
R_PRICE = 0  # last `window` prices (z-score)
R_LOG_RETURN = 1  # last `window` log returns (volatility)
R_SIGNED_SIZE = 2  # last `window` tick-rule signed sizes (order-flow imbalance)
R_SIZE = 3  # last `window` sizes
N_RINGS = 4

# Sentinel for "no tick yet": any real timestamp is >= it.
NO_TIMESTAMP = np.iinfo(np.int64).min


class SymbolState:
    """Indicator state of ``n_symbols`` symbols, allocated once and mutated in place."""

    __slots__ = ("floats", "ints", "n_symbols", "rings", "window")

    def __init__(self, n_symbols: int, window: int) -> None:
        if n_symbols < 1:
            raise ValueError(f"n_symbols = {n_symbols}: must be >= 1")
        if window < 2:
            raise ValueError(f"window = {window}: must be >= 2")
        self.n_symbols = n_symbols
        self.window = window
        self.floats = np.zeros((N_FLOAT_FIELDS, n_symbols), dtype=np.float64)
        self.ints = np.zeros((N_INT_FIELDS, n_symbols), dtype=np.int64)
        self.rings = np.zeros((N_RINGS, n_symbols, window), dtype=np.float64)
        self.reset()

    def reset(self, symbol: int | None = None) -> None:
        """Forget everything about one symbol (or all): its next tick starts warm-up again."""
        cols = slice(None) if symbol is None else slice(symbol, symbol + 1)
        self.floats[:, cols] = 0.0
        self.ints[:, cols] = 0
        self.ints[I_LAST_TS, cols] = NO_TIMESTAMP
        self.rings[:, cols, :] = 0.0

    def tick_count(self, symbol: int) -> int:
        """Accepted ticks of ``symbol`` since the last reset."""
        return int(self.ints[I_COUNT, symbol])

    def last_timestamp(self, symbol: int) -> int | None:
        """Timestamp of the last accepted tick of ``symbol``, or None before its first."""
        ts = int(self.ints[I_LAST_TS, symbol])
        return None if ts == NO_TIMESTAMP else ts

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of all state arrays (tests compare them to prove rejected ticks change nothing)."""
        return self.floats.copy(), self.ints.copy(), self.rings.copy()

    @property
    def nbytes(self) -> int:
        return self.floats.nbytes + self.ints.nbytes + self.rings.nbytes
