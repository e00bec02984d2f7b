"""Per-symbol indicator state: one cache-line-aligned record per symbol, reused for every tick.

A tick reads and writes its symbol's state only, so the state is laid out ``[symbol,
word]``: each symbol owns one record of ``record_words`` 8-byte words, 64-byte aligned,
holding

* the hot scalars (words 0-23, three cache lines): the 15 float fields, then the 6
  integer fields (stored as int64 in the same words), then the symbol's venue row (set
  by the engine from its session table, not state), a scratch word of the fused path
  and padding;
* its four rings, interleaved (words ``RING_BASE`` on): slot ``i`` is the four words
  ``price, log_return, signed_size, size`` of one tick, so the slots a tick reads and
  writes share one cache line (two, every other tick, for the log return written into
  the previous slot).

A tick therefore touches three lines of scalars and one or two of rings, all in one
record (one page), wherever its symbol is in a universe of any size. A ring's slot for
a symbol's ``k``-th accepted tick is ``k % window``.

``floats`` / ``ints`` / ``rings`` are views of the records in the ``[field, symbol]`` /
``[ring, symbol, slot]`` orientation (writes go through), and ``export``/``restore`` carry
the state of any set of symbols (a shard) across a restart, session VWAP included, in a
layout-independent format: see ``SNAPSHOT_FORMAT``.
"""

from __future__ import annotations

import json
import struct

import numpy as np

# Float fields: words of a record, and rows of SymbolState.floats.
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

# Integer fields: rows of SymbolState.ints; word INT_BASE + I_* of a record (as int64).
I_COUNT = 0  # accepted ticks so far: the next tick's index k
I_LAST_TS = 1  # timestamp (ns) of the last accepted tick
I_SESSION_OPEN = 2  # UTC ns of the open of the VWAP sums' session: the session's key
I_LAST_SIGN = 3  # tick-rule sign of the last tick: carried through zero ticks
I_VOL_COUNTDOWN = 4  # TA-Lib VAR's steps left before its periodic exact recomputation
I_SESSION_IDX = 5  # index of that session in the venue's table: a lookup hint, re-checked
N_INT_FIELDS = 6

# Ring buffers: rows of SymbolState.rings; word R_* of each interleaved slot.
R_PRICE = 0  # last `window` prices (z-score)
R_LOG_RETURN = 1  # last `window` log returns (volatility)
R_SIGNED_SIZE = 2  # last `window` tick-rule signed sizes (order-flow imbalance)
R_SIZE = 3  # last `window` sizes
N_RINGS = 4

# Record words (the kernels index records with these).
INT_BASE = N_FLOAT_FIELDS
W_COUNT = INT_BASE + I_COUNT
W_LAST_TS = INT_BASE + I_LAST_TS
W_SESSION_OPEN = INT_BASE + I_SESSION_OPEN
W_LAST_SIGN = INT_BASE + I_LAST_SIGN
W_VOL_COUNTDOWN = INT_BASE + I_VOL_COUNTDOWN
W_SESSION_IDX = INT_BASE + I_SESSION_IDX
W_VENUE = INT_BASE + N_INT_FIELDS  # the symbol's row in the session table (configuration)
W_MARK = W_VENUE + 1  # scratch of the fused path (app.fused): 0 between calls
RING_BASE = 24  # the hot scalars fill three cache lines
LINE_WORDS = 8  # 64-byte cache lines

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
int64[int_fields, symbols], rings float64[rings, symbols, window]. Fields are named and
ordered by field, not by this process's memory layout, so a reader in any language (or
another layout) maps them by name.
"""


def record_words(window: int) -> int:
    """Words of one symbol's record: scalars and rings, padded to whole cache lines."""
    words = RING_BASE + N_RINGS * window
    return -(-words // LINE_WORDS) * LINE_WORDS


def _aligned_zeros(rows: int, cols: int) -> np.ndarray:
    """float64 zeros ``[rows, cols]`` whose first element starts a cache line."""
    spare = LINE_WORDS
    buffer = np.zeros(rows * cols + spare, dtype=np.float64)
    skip = (-buffer.ctypes.data % (LINE_WORDS * 8)) // 8
    return buffer[skip : skip + rows * cols].reshape(rows, cols)


class SymbolState:
    """Indicator state of ``n_symbols`` symbols, allocated once and mutated in place."""

    __slots__ = ("floats", "ints", "n_symbols", "records", "rings", "window", "words")

    def __init__(self, n_symbols: int, window: int) -> None:
        if n_symbols < 1:
            raise ValueError(f"n_symbols = {n_symbols}: must be >= 1")
        if window < 2:
            raise ValueError(f"window = {window}: must be >= 2")
        self.n_symbols = n_symbols
        self.window = window
        # The kernels take `records` (float64; integer words through an int64 view of it).
        self.records = _aligned_zeros(n_symbols, record_words(window))
        self.words = words = self.records.view(np.int64)  # the same memory, as integers
        self.floats = self.records[:, :N_FLOAT_FIELDS].T
        self.ints = words[:, INT_BASE : INT_BASE + N_INT_FIELDS].T
        ring_words = self.records[:, RING_BASE : RING_BASE + N_RINGS * window]
        self.rings = ring_words.reshape(n_symbols, window, N_RINGS).transpose(2, 0, 1)
        assert np.shares_memory(self.rings, self.records)  # a view, never a copy
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

    def set_venues(self, symbol_venue: np.ndarray) -> None:
        """Each symbol's row in the engine's session table, kept in its record for the kernel."""
        self.records.view(np.int64)[:, W_VENUE] = symbol_venue

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

        Refuses (ValueError, nothing changed) a snapshot of another version, fields or window.
        """
        if snapshot[:8] != SNAPSHOT_MAGIC or len(snapshot) < 12:
            raise ValueError("snapshot: not a state snapshot (no SIGSTATE header)")
        (hlen,) = struct.unpack_from("<I", snapshot, 8)
        try:
            header = json.loads(snapshot[12 : 12 + hlen])
        except ValueError:
            raise ValueError("snapshot: its header is not JSON") from None
        if not isinstance(header, dict):
            raise ValueError("snapshot: its header is not a JSON object")
        layout = (header.get("float_fields"), header.get("int_fields"), header.get("rings"))
        if header.get("version") != 1 or layout != (list(FLOAT_FIELDS), list(INT_FIELDS),
                                                    list(RINGS)):  # fmt: skip
            raise ValueError(
                f"snapshot: version {header.get('version')} with fields {layout}: "
                f"this build reads version 1 with {(FLOAT_FIELDS, INT_FIELDS, RINGS)}"
            )
        if header.get("window") != self.window:
            raise ValueError(
                f"snapshot: window = {header.get('window')}, but this state's window = {self.window}"
            )
        n, w = header.get("symbols"), self.window
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"snapshot: symbols = {n!r}: must be a count >= 0")
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
        return self.records.nbytes
