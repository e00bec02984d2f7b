"""Per-symbol indicator state as a preallocated struct-of-arrays, reused for every tick.

Each field is one contiguous row of a 2-D array indexed ``[field, symbol]`` so the
Numba kernel receives the whole state in three arguments and touches no Python
object per tick. Ring buffers hold the last ``window`` values a sliding indicator
must subtract again; a ring's slot for a symbol's ``k``-th accepted tick is
``k % window``.

``export``/``restore`` carry the state of any set of symbols (a shard) across a
restart, session VWAP included: see ``SNAPSHOT_FORMAT``.
"""

from __future__ import annotations

import json
import struct

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

FLOAT_FIELDS: tuple[str, ...] = (
    "last_price", "last_log_price", "ema_fast", "ema_slow", "rsi_gain", "rsi_loss",
    "vol_sum", "vol_sum_sq", "z_mean", "z_m2", "vwap_pv", "vwap_v", "ofi_signed",
    "ofi_total", "vol_shift",
)  # fmt: skip
INT_FIELDS: tuple[str, ...] = (
    "count",
    "last_ts",
    "session_open",
    "last_sign",
    "vol_countdown",
    "session_idx",
)
RINGS: tuple[str, ...] = ("price", "log_return", "signed_size", "size")

SNAPSHOT_MAGIC = b"SIGSTATE"
SNAPSHOT_FORMAT = """\
A state snapshot is bytes: ``SIGSTATE``, a little-endian uint32 header length, the
header (UTF-8 JSON: ``version`` 1, ``window``, ``symbols`` (count), ``float_fields``,
``int_fields``, ``rings``: the names of each row, in order), then little-endian C-order
arrays: symbol ids int64[symbols], floats float64[float_fields, symbols], ints
int64[int_fields, symbols], rings float64[rings, symbols, window]. Fields are named,
so a reader in any language (or a later layout) maps them by name.
"""


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
        self.ints[I_SESSION_OPEN, cols] = NO_TIMESTAMP
        self.ints[I_SESSION_IDX, cols] = -1
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

    def export(self, symbols: np.ndarray | None = None) -> bytes:
        """The state of ``symbols`` (default: all) as a snapshot (``SNAPSHOT_FORMAT``)."""
        ids = np.arange(self.n_symbols) if symbols is None else np.asarray(symbols)
        if ids.ndim != 1 or ((ids < 0) | (ids >= self.n_symbols)).any():
            raise ValueError(f"symbols: must be ids in [0, {self.n_symbols})")
        header = json.dumps(
            {
                "version": 1,
                "window": self.window,
                "symbols": int(ids.shape[0]),
                "float_fields": FLOAT_FIELDS,
                "int_fields": INT_FIELDS,
                "rings": RINGS,
            }
        ).encode()
        parts = [
            SNAPSHOT_MAGIC,
            struct.pack("<I", len(header)),
            header,
            ids.astype("<i8").tobytes(),
            np.ascontiguousarray(self.floats[:, ids], dtype="<f8").tobytes(),
            np.ascontiguousarray(self.ints[:, ids], dtype="<i8").tobytes(),
            np.ascontiguousarray(self.rings[:, ids, :], dtype="<f8").tobytes(),
        ]
        return b"".join(parts)

    def restore(self, snapshot: bytes) -> np.ndarray:
        """Overwrite the symbols a snapshot holds with its state; returns their ids.

        Refuses (ValueError, nothing changed) a snapshot of another layout or window.
        """
        if snapshot[:8] != SNAPSHOT_MAGIC or len(snapshot) < 12:
            raise ValueError("snapshot: not a state snapshot (no SIGSTATE header)")
        (hlen,) = struct.unpack_from("<I", snapshot, 8)
        header = json.loads(snapshot[12 : 12 + hlen])
        layout = (header.get("float_fields"), header.get("int_fields"), header.get("rings"))
        if header.get("version") != 1 or layout != (list(FLOAT_FIELDS), list(INT_FIELDS),
                                                    list(RINGS)):  # fmt: skip
            raise ValueError(
                f"snapshot: version {header.get('version')} with fields {layout}: "
                f"this build reads version 1 with {(FLOAT_FIELDS, INT_FIELDS, RINGS)}"
            )
        if header["window"] != self.window:
            raise ValueError(
                f"snapshot: window = {header['window']}, but this state's window = {self.window}"
            )
        n, w = int(header["symbols"]), self.window
        shapes = (
            ("<i8", (n,)),
            ("<f8", (N_FLOAT_FIELDS, n)),
            ("<i8", (N_INT_FIELDS, n)),
            ("<f8", (N_RINGS, n, w)),
        )
        expected = 12 + hlen + 8 * sum(int(np.prod(shape)) for _, shape in shapes)
        if expected != len(snapshot):
            raise ValueError(f"snapshot: {len(snapshot)} bytes, expected {expected}")
        arrays = []
        offset = 12 + hlen
        for dtype, shape in shapes:
            count = int(np.prod(shape))
            arrays.append(np.frombuffer(snapshot, dtype, count, offset).reshape(shape))
            offset += count * 8
        ids, floats, ints, rings = arrays
        if ((ids < 0) | (ids >= self.n_symbols)).any():
            raise ValueError(f"snapshot: symbol ids outside [0, {self.n_symbols})")
        self.floats[:, ids] = floats
        self.ints[:, ids] = ints
        self.rings[:, ids, :] = rings
        return ids.astype(np.int64)

    @property
    def nbytes(self) -> int:
        return self.floats.nbytes + self.ints.nbytes + self.rings.nbytes
