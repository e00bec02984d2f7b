"""The tick → signal path: screening, feature state, model inputs, batched inference, latest signals.

One ``SignalPipeline`` owns the ``FeatureEngine`` (not thread-safe: the pipeline runs on
one event loop). A batch is handled in two steps:

* `apply` (synchronous, never awaits, so batches apply atomically and in arrival order):
  screens each tick against the configured bounds (`TickBounds`: values the arithmetic
  can carry, timestamps not beyond the allowed skew ahead of the server's clock), updates
  the feature state, and queues one inference row per symbol (after that symbol's last
  warm tick in the batch; older ticks of the same batch are superseded anyway). Anything
  that refuses the batch (no room in the inference queue, shutting down, a tick whose
  features would overflow) raises before any state has changed, or, for an overflow
  found after the update, with the batch's symbols restored to their state before it: a
  failed call never changes state. An applied batch gets the next sequence number.
* `finish` (awaits the inference): the batch's signals. A failed inference leaves the
  (valid, applied) ticks applied and yields no signals; it is counted, never raised, so
  a batch that changed state always completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit, types

from app.batcher import BatcherClosedError, MicroBatcher, QueueFullError
from app.features import (
    FEATURES,
    FeatureEngine,
    check_columns,
    kernel_columns,
    kernel_refusal,
    tick_column,
)
from app.fused import BAD_BUFFERS, WORK_TYPE, FusedBackend, step_work
from app.inference import Inference, LocalOnnxBackend
from app.model.contract import N_INPUTS, model_inputs
from app.proto import reject_reason_name
from app.settings.ingest import TickBounds
from app.signals import (
    LatestSignals,
    Signal,
    SignalColumns,
    signals_from_inference,
    signals_from_probabilities,
)
from app.telemetry import Metrics, default_metrics

log = logging.getLogger(__name__)

# Reasons of the screen, after app.features' 1-4 (the gRPC RejectReason enum's numbers).
REJECT_PRICE_OUT_OF_RANGE = 5
REJECT_SIZE_OUT_OF_RANGE = 6
REJECT_FUTURE_TIMESTAMP = 7
REJECT_PAST_TIMESTAMP = 8


class TickOverflowError(ValueError):
    """A tick's features are not finite numbers; the batch was refused and nothing changed."""


@dataclass(frozen=True)
class IngestResult:
    reasons: np.ndarray  # uint8 per tick of the request, 0 = accepted (RejectReason numbers)
    signals: SignalColumns
    seq: int = 0  # the batch's sequence number; 0: nothing was applied
    features: np.ndarray | None = None  # float64[len(signals), len(FEATURES)]: the rows behind them

    @property
    def accepted(self) -> int:
        return int((self.reasons == 0).sum())

    @property
    def rejected_index(self) -> np.ndarray:
        return np.flatnonzero(self.reasons)


@dataclass
class AppliedBatch:
    """A batch `apply` took: its verdicts, and the inference that makes its signals."""

    seq: int  # 0: every tick was rejected, nothing changed
    reasons: np.ndarray
    accepted: np.ndarray  # bool per tick of the request
    signal_symbol: np.ndarray
    signal_ts_ns: np.ndarray
    signal_features: np.ndarray
    inference: asyncio.Future[Inference] | None
    signals: SignalColumns | None = None  # made while applying (the fused model): no inference


def last_warm_row_per_symbol(symbol: np.ndarray, warm: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the last warm row of each symbol present among warm rows."""
    candidates = np.flatnonzero(warm)
    if candidates.size <= 1:  # the single-tick path: nothing to deduplicate
        return candidates
    reversed_symbols = symbol[candidates][::-1]
    _, first_in_reversed = np.unique(reversed_symbols, return_index=True)
    return np.sort(candidates[candidates.size - 1 - first_in_reversed])


NO_EARLIEST = np.iinfo(np.int64).min  # the screen's earliest stamp without a past limit


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _screen_tick(price, size, ts, latest, earliest, size_max, price_min, price_max):
    """0, or the reason a tick is outside the bounds (the last rule that applies wins)."""
    reason = 0
    if ts > latest:
        reason = REJECT_FUTURE_TIMESTAMP
    if ts < earliest:
        reason = REJECT_PAST_TIMESTAMP
    if size > size_max:
        reason = REJECT_SIZE_OUT_OF_RANGE
    if price > 0 and (price < price_min or price > price_max):  # else the engine's BAD_PRICE
        reason = REJECT_PRICE_OUT_OF_RANGE
    return reason


@njit(cache=True, nogil=True, error_model="numpy")
def _screen(price, size, ts_ns, latest, earliest, size_max, price_min, price_max, reasons):
    for t in range(price.shape[0]):
        reasons[t] = _screen_tick(price[t], size[t], ts_ns[t], latest, earliest, size_max,
                                  price_min, price_max)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def _track_warm_up(symbol, reasons, warm, n, seen, warm_now):
    """Each symbol's last applied tick (reason 0) among the first ``n`` decides: seen, and
    whether its row was warm."""
    for t in range(n):
        if reasons[t] == 0:
            seen[symbol[t]] = True
            warm_now[symbol[t]] = warm[t]


OVERFLOW = -20  # `_ingest`: a tick's features would not be finite; the batch was undone
# `_ingest`'s ``found``: accepted ticks; and of an overflow, the tick, its row, the column
FOUND_ACCEPTED, FOUND_TICK, FOUND_ROW, FOUND_COLUMN = range(4)


@njit(
    types.int64(WORK_TYPE, types.int32[::1], types.float64[::1], types.float64[::1],
                types.int64[::1], types.int64, types.int64, types.float64, types.float64,
                types.float64, types.uint8[::1], types.boolean[::1], types.boolean[::1],
                types.float64[:, ::1], types.float32[:, ::1], types.float64[:, ::1],
                types.int64[::1]),
    cache=True, nogil=True, error_model="numpy",
)  # fmt: skip
def _ingest(w, symbol, price, size, ts_ns, latest, earliest, size_max, price_min, price_max,
            reasons, seen, warm_now, saved, signal_inputs, signal_features, found):  # fmt: skip
    """`SignalPipeline.apply` on the fused path in one call: screen the ticks into
    ``reasons``, apply those passing (`step_work` over the path's tick buffers, their
    symbols' records saved first), undo it all if a tick's features are not finite
    (``OVERFLOW``, ``found`` says where, ``signal_features[0]`` holds its row), else the
    engine's reasons into ``reasons``, the warm-up tracked, and each signal's model inputs
    and features gathered. Returns the number of signals, or a negative code."""
    n = symbol.shape[0]
    bad = check_columns(symbol, price, size, ts_ns)
    if bad != 0:
        return bad
    if w.symbol.shape[0] < n or saved.shape[0] < n or reasons.shape[0] < n:
        return BAD_BUFFERS
    rec = w.rec
    k = 0
    for t in range(n):
        reasons[t] = _screen_tick(price[t], size[t], ts_ns[t], latest, earliest, size_max,
                                  price_min, price_max)  # fmt: skip
        if reasons[t] == 0:
            w.symbol[k] = symbol[t]
            w.price[k] = price[t]
            w.size[k] = size[t]
            w.ts_ns[k] = ts_ns[t]
            if 0 <= symbol[t] < rec.shape[0]:  # else the engine refuses it, touching nothing
                saved[k, :] = rec[symbol[t], :]
            k += 1
    m = step_work(w, k)
    if m < 0:
        return m
    out = w.out
    verdicts = w.reasons
    for j in range(k):
        for c in range(out.shape[1]):
            if verdicts[j] == 0 and np.isinf(out[j, c]):
                for i in range(k):  # a repeated symbol gets its same row again
                    if 0 <= w.symbol[i] < rec.shape[0]:
                        rec[w.symbol[i], :] = saved[i, :]
                t = -1
                passing = -1
                while passing < j:  # the request's index of the j-th passing tick
                    t += 1
                    passing += reasons[t] == 0
                found[FOUND_TICK] = t
                found[FOUND_ROW] = j
                found[FOUND_COLUMN] = c
                signal_features[0, :] = out[j, :]
                return OVERFLOW
    accepted = 0
    j = 0
    for t in range(n):
        if reasons[t] == 0:
            reasons[t] = verdicts[j]
            j += 1
        accepted += reasons[t] == 0
    found[FOUND_ACCEPTED] = accepted
    _track_warm_up(w.symbol, verdicts, w.warm, k, seen, warm_now)
    for r in range(m):
        signal_inputs[r, :] = w.inputs[w.rows[r], :]
        signal_features[r, :] = out[w.rows[r], :]
    return m


class SignalPipeline:
    def __init__(
        self,
        engine: FeatureEngine,
        batcher: MicroBatcher,
        *,
        bounds: TickBounds | None = None,
        store: LatestSignals | None = None,
        metrics: Metrics | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.engine = engine
        self.batcher = batcher
        self.bounds = bounds or TickBounds()
        self.store = store or LatestSignals(engine.n_symbols)
        self.metrics = metrics or default_metrics()
        self._clock_ns = clock_ns
        self._seq = 0
        self._closing = False
        n = engine.n_symbols
        # Per symbol: whether it had a tick since start, and whether its last tick's row was warm.
        self._seen = np.zeros(n, dtype=np.bool_)
        self._warm = np.zeros(n, dtype=np.bool_)
        # Sharding: signals stored up to a symbol's floor were computed before its shard last
        # moved here and are not answered; `adopt_signals` gives those it brought along.
        self._floor = np.zeros(n, dtype=np.int64)
        self._adopted: dict[int, tuple[Signal, int]] = {}
        # The fused backend (app.fused) makes features and signals in one compiled call: apply
        # then uses it (`_ingest`) in place of the engine's update and the batcher's queue.
        fused = batcher.backend
        self._fused = fused if isinstance(fused, FusedBackend) else None
        if self._fused is not None:
            self._path = self._fused.bind(engine)
            self._found = np.zeros(4, np.int64)
            self._saved = np.empty((0, engine.state.records.shape[1]), np.float64)
            self._grow(64)

    @property
    def n_symbols(self) -> int:
        return self.engine.n_symbols

    @property
    def seq(self) -> int:
        """The last sequence number given to an applied batch."""
        return self._seq

    def resume_after(self, seq: int) -> None:
        """Number the next applied batch ``seq + 1`` (after a restart: above the spool's)."""
        self._seq = max(self._seq, seq)

    def close(self) -> None:
        """Take no more batches (the batcher is about to close)."""
        self._closing = True

    def warm_up(self) -> None:
        """Call the unfused apply's kernels once, on scratch arrays (no state changes): each is
        loaded from Numba's cache on its first call, which a request would otherwise wait for."""
        one = np.ones(1)
        self.screen(one, one, np.zeros(1, np.int64), 0)
        flags = np.zeros((3, 1), np.bool_)
        _track_warm_up(np.zeros(1, np.int32), np.zeros(1, np.uint8), flags[0], 1, flags[1],
                       flags[2])  # fmt: skip

    # --- screening -------------------------------------------------------------------------

    def screen(
        self, price: np.ndarray, size: np.ndarray, ts_ns: np.ndarray, now_ns: int
    ) -> np.ndarray:
        """uint8 per tick: 0, or the reason it is outside the configured bounds."""
        price, size, ts_ns = (tick_column(name, c, dtype) for name, c, dtype in (
            ("price", price, np.float64), ("size", size, np.float64), ("ts_ns", ts_ns, np.int64)))  # fmt: skip
        reasons = np.zeros(price.shape[0], dtype=np.uint8)
        _screen(price, size, ts_ns, *self._limits(now_ns), reasons)
        return reasons

    def _limits(self, now_ns: int) -> tuple[int, int, float, float, float]:
        """The screen's bounds at ``now_ns``: latest and earliest stamp, largest size, price
        range."""
        b = self.bounds
        earliest = now_ns - int(b.max_past_age_s * 1e9) if b.max_past_age_s > 0 else NO_EARLIEST
        return (now_ns + int(b.max_future_skew_s * 1e9), earliest, b.size_max, b.price_min,
                b.price_max)  # fmt: skip

    # --- apply -------------------------------------------------------------------------------

    def apply(
        self, symbol: np.ndarray, price: np.ndarray, size: np.ndarray, ts_ns: np.ndarray
    ) -> AppliedBatch:
        """Screen and apply the ticks, queue their inference; see the module docstring."""
        if self._closing:
            raise BatcherClosedError("the service is shutting down")
        n = int(symbol.shape[0])
        needed = min(n, self.engine.n_symbols)
        if needed > self.batcher.free_rows():
            self.batcher.stats.rejected += 1
            raise QueueFullError(
                f"inference queue full: {self.batcher.queued_rows} rows queued, "
                f"max_queue_rows = {self.batcher.max_queue_rows}; retry the batch later"
            )
        if self._fused is not None:
            return self._apply_fused(symbol, price, size, ts_ns)
        reasons = self.screen(price, size, ts_ns, self._clock_ns())
        passing = np.flatnonzero(reasons == 0)
        if passing.size < n:
            symbol, price, size, ts_ns = (c[passing] for c in (symbol, price, size, ts_ns))
        saved = self._save(symbol)
        try:
            features = self.engine.update(symbol, price, size, ts_ns)
            engine_reasons = self.engine.last_reasons
            overflow = np.flatnonzero(np.isinf(features).any(axis=1) & (engine_reasons == 0))
            if overflow.size:
                i = int(overflow[0])
                column = FEATURES[int(np.flatnonzero(np.isinf(features[i]))[0])]
                raise TickOverflowError(
                    f"ticks[{int(passing[i])}]: {column} would be {features[i][FEATURES.index(column)]}"
                    f" (price {float(price[i]):g}, size {float(size[i]):g}); the batch was refused"
                )
        except BaseException:
            self._restore(symbol, saved)
            raise
        reasons[passing] = engine_reasons
        accepted = reasons == 0
        if not accepted.all():
            self._count_rejected(reasons)
        ok = engine_reasons == 0
        if not ok.any():
            return self._nothing_applied(reasons)
        self._seq += 1
        inputs, warm = model_inputs(features)
        _track_warm_up(symbol, engine_reasons, warm, symbol.shape[0], self._seen, self._warm)
        rows = last_warm_row_per_symbol(symbol, warm & ok)
        # Queued synchronously (no await since the room check): the room is still there.
        inference = self.batcher.submit(inputs[rows]) if rows.size else None
        return AppliedBatch(self._seq, reasons, accepted, symbol[rows].astype(np.int32),
                            ts_ns[rows].astype(np.int64), features[rows], inference)  # fmt: skip

    def _apply_fused(
        self, symbol: np.ndarray, price: np.ndarray, size: np.ndarray, ts_ns: np.ndarray
    ) -> AppliedBatch:
        """`apply` with the fused model: one compiled call (`_ingest`) does it all."""
        n = symbol.shape[0]
        self._grow(n)
        reasons = np.empty(n, np.uint8)
        limits = self._limits(self._clock_ns())
        buffers = (reasons, self._seen, self._warm, self._saved, self._signal_inputs,
                   self._signal_features, self._found)  # fmt: skip
        try:  # columns of the kernel's types go straight in
            m = _ingest(self._path.work, symbol, price, size, ts_ns, *limits, *buffers)
        except TypeError:  # another type or layout: convert what can be, refuse the rest
            symbol, price, size, ts_ns = kernel_columns(symbol, price, size, ts_ns)
            m = _ingest(self._path.work, symbol, price, size, ts_ns, *limits, *buffers)
        found = self._found
        if m == OVERFLOW:
            t, row = int(found[FOUND_TICK]), self._signal_features[0]
            column = FEATURES[int(found[FOUND_COLUMN])]
            raise TickOverflowError(
                f"ticks[{t}]: {column} would be {row[FEATURES.index(column)]} (price "
                f"{float(price[t]):g}, size {float(size[t]):g}); the batch was refused"
            )
        if m < 0:
            raise kernel_refusal(m, n, price, size, ts_ns, None, None)
        accepted = int(found[FOUND_ACCEPTED])
        if accepted < n:
            self._count_rejected(reasons)
            if accepted == 0:
                return self._nothing_applied(reasons)
        self._seq += 1
        if m == 0:
            signals, features = SignalColumns.empty(), np.empty((0, len(FEATURES)))
        else:
            self._path.backend.served(self._signal_inputs[:m], self.batcher.monitor)
            signals, features = self._path.signal_columns(m), self._signal_features[:m].copy()
        return AppliedBatch(self._seq, reasons, reasons == 0, signals.symbol, signals.ts_ns,
                            features, None, signals)  # fmt: skip

    def _grow(self, n: int) -> None:
        """Room in the fused path and in `_ingest`'s buffers for a batch of ``n`` ticks."""
        self._path.reserve(n)
        if n > self._saved.shape[0]:
            rows = max(n, 2 * self._saved.shape[0])
            self._saved = np.empty((rows, self._saved.shape[1]), np.float64)
            self._signal_inputs = np.empty((rows, N_INPUTS), np.float32)
            self._signal_features = np.empty((rows, len(FEATURES)), np.float64)

    def _count_rejected(self, reasons: np.ndarray) -> None:
        """The rejected ticks' metric, by reason."""
        for code in np.unique(reasons[reasons != 0]):
            self.metrics.ticks_rejected.labels(reject_reason_name(int(code))).inc(
                int((reasons == code).sum())
            )

    @staticmethod
    def _nothing_applied(reasons: np.ndarray) -> AppliedBatch:
        """Every tick was rejected: nothing changed."""
        empty = np.empty(0, np.int64)
        return AppliedBatch(0, reasons, reasons == 0, empty.astype(np.int32), empty,
                            np.empty((0, len(FEATURES))), None)  # fmt: skip

    def _save(self, symbols: np.ndarray) -> np.ndarray:
        """The whole records of ``symbols`` (repeats included: one gather of rows costs less
        than finding the distinct ones first)."""
        return np.take(self.engine.state.records, symbols, axis=0)

    def _restore(self, symbols: np.ndarray, saved: np.ndarray) -> None:
        self.engine.state.records[symbols] = saved  # a repeated symbol gets its same row again

    def warming_up(self, symbol: int) -> bool:
        """Whether ``symbol`` has ticks since this process started but no warm features yet
        (GetSignal then answers NOT_FOUND rather than an older signal)."""
        return bool(self._seen[symbol]) and not bool(self._warm[symbol])

    # --- finish ------------------------------------------------------------------------------

    async def finish(self, applied: AppliedBatch) -> IngestResult:
        """The applied batch's signals (none when its inference failed: counted, not raised)."""
        if applied.inference is not None and not applied.inference.done():
            with contextlib.suppress(Exception):  # `finished` counts it
                await applied.inference
        return self.finished(applied)

    def finished(self, applied: AppliedBatch) -> IngestResult:
        """`finish`, for a batch whose inference is done (or that has none)."""
        if applied.signals is not None:
            return IngestResult(applied.reasons, applied.signals, applied.seq,
                                applied.signal_features)  # fmt: skip
        signals = SignalColumns.empty()
        features = applied.signal_features
        if applied.inference is not None:
            try:
                inference = applied.inference.result()
                signals = signals_from_inference(applied.signal_symbol, applied.signal_ts_ns,
                                                 inference)  # fmt: skip
            except Exception as exc:
                self.metrics.signal_failures.inc()
                log.error("batch %d: inference failed, ticks applied without signals: %s",
                          applied.seq, exc)  # fmt: skip
                features = features[:0]
        return IngestResult(applied.reasons, signals, applied.seq, features)

    def store_signals(self, signals: SignalColumns, seq: int, computed_at_ns: int) -> None:
        """Make batch ``seq``'s signals the latest where no later batch's already are."""
        if len(signals):
            self.store.update(signals, seq, computed_at_ns)

    def latest(self, symbol: int) -> tuple[Signal, int] | None:
        """The latest signal of ``symbol`` computed here, and when (ns), or None."""
        store = self.store
        if store.seq_of(symbol) <= self._floor[symbol]:
            return self._adopted.get(symbol)
        found = store.get(symbol)
        return None if found is None else (found, store.computed_at(symbol))

    # --- shards: state that moves between replicas (app.shards) ---------------------------------

    def forget(self, symbols: np.ndarray) -> None:
        """Start ``symbols`` afresh: no feature state, no warm-up seen, no latest signal."""
        for symbol in symbols.tolist():
            self.engine.reset(symbol)
            self._adopted.pop(symbol, None)
        self._floor[symbols] = self._seq
        self._seen[symbols] = False
        self._warm[symbols] = False

    def export_state(self, symbols: np.ndarray) -> tuple[bytes, list[tuple[Signal, int]]]:
        """The feature state of ``symbols`` (``app.state`` snapshot) and each one's latest
        signal with when it was computed."""
        latest = (self.latest(s) for s in symbols.tolist())
        return self.engine.state.export(symbols), [found for found in latest if found is not None]

    def restore_state(self, snapshot: bytes) -> None:
        """Overwrite the state of the snapshot's symbols (ValueError: nothing changed)."""
        self.engine.state.restore(snapshot)

    def replay(self, symbol: np.ndarray, price: np.ndarray, size: np.ndarray,
               ts_ns: np.ndarray) -> None:  # fmt: skip
        """Apply ticks accepted before (another replica's journal) to the state only: no
        screening, no inference, no sequence number."""
        features = self.engine.update(symbol, price, size, ts_ns)
        _, warm = model_inputs(features)
        _track_warm_up(symbol, self.engine.last_reasons, warm, symbol.shape[0], self._seen,
                       self._warm)  # fmt: skip

    def adopt_signals(self, signals: list[tuple[Signal, int]]) -> None:
        """Take latest signals computed elsewhere (in order: a later one replaces an earlier)."""
        for signal, computed_at in signals:
            if self.store.seq_of(signal.symbol) <= self._floor[signal.symbol]:
                self._adopted[signal.symbol] = (signal, computed_at)


def tick_to_signal_sync(
    engine: FeatureEngine,
    backend: LocalOnnxBackend | FusedBackend,
    symbol: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    ts_ns: np.ndarray,
) -> SignalColumns:
    """The whole path on this thread with the in-process model (no batcher): the latency floor.
    The fused backend runs all of it in one compiled call."""
    if isinstance(backend, FusedBackend):
        return backend.signals(engine, symbol, price, size, ts_ns)
    features = engine.update(symbol, price, size, ts_ns)
    inputs, warm = model_inputs(features)
    rows = last_warm_row_per_symbol(symbol, warm)
    if rows.size == 0:
        return SignalColumns.empty(backend.model_version)
    probs = backend.infer_sync(inputs[rows])
    model = backend.identity
    return signals_from_probabilities(
        symbol[rows], ts_ns[rows], probs, backend.model_version,
        direction_threshold=model.direction_threshold, model_variant=model.variant,
        model_sha256=model.sha256, backend=backend.name,
    )  # fmt: skip
