"""The tick → signal path: feature state, model inputs, batched inference, latest signals.

One ``SignalPipeline`` owns the ``FeatureEngine`` (not thread-safe: the pipeline runs on
one event loop, and ``engine.update`` never awaits, so batches apply atomically and in
arrival order). Per tick batch it computes one signal per symbol, after that symbol's
last warm tick in the batch: older ticks of the same batch are superseded anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.batcher import MicroBatcher, QueueFullError
from app.features import FeatureEngine
from app.inference import LocalOnnxBackend
from app.model.contract import model_inputs
from app.signals import LatestSignals, SignalColumns, SignalSink, signals_from_probabilities

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    reasons: np.ndarray  # uint8 per tick, 0 = accepted (app.features reason codes)
    signals: SignalColumns

    @property
    def accepted(self) -> int:
        return int((self.reasons == 0).sum())

    @property
    def rejected_index(self) -> np.ndarray:
        return np.flatnonzero(self.reasons)


def last_warm_row_per_symbol(symbol: np.ndarray, warm: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the last warm row of each symbol present among warm rows."""
    candidates = np.flatnonzero(warm)
    if candidates.size <= 1:  # the single-tick path: nothing to deduplicate
        return candidates
    reversed_symbols = symbol[candidates][::-1]
    _, first_in_reversed = np.unique(reversed_symbols, return_index=True)
    return np.sort(candidates[candidates.size - 1 - first_in_reversed])


class SignalPipeline:
    def __init__(
        self,
        engine: FeatureEngine,
        batcher: MicroBatcher,
        *,
        store: LatestSignals | None = None,
        sinks: Sequence[SignalSink] = (),
    ) -> None:
        self.engine = engine
        self.batcher = batcher
        self.store = store or LatestSignals(engine.n_symbols)
        self.sinks = list(sinks)
        self._seq = 0

    @property
    def n_symbols(self) -> int:
        return self.engine.n_symbols

    async def ingest(
        self, symbol: np.ndarray, price: np.ndarray, size: np.ndarray, ts_ns: np.ndarray
    ) -> IngestResult:
        """Apply the ticks, infer the new signals, store and publish them.

        Raises ``QueueFullError`` *before* touching any state when the inference queue
        cannot take this batch's signals, so a client may simply retry the batch.
        """
        needed = min(int(symbol.shape[0]), self.engine.n_symbols)
        if needed > self.batcher.free_rows():
            self.batcher.stats.rejected += 1
            raise QueueFullError(
                f"inference queue full: {self.batcher.queued_rows} rows queued, "
                f"max_queue_rows = {self.batcher.max_queue_rows}; retry the batch later"
            )
        features = self.engine.update(symbol, price, size, ts_ns)
        reasons = self.engine.last_reasons.copy()
        self._seq += 1
        seq = self._seq
        inputs, warm = model_inputs(features)
        rows = last_warm_row_per_symbol(np.asarray(symbol), warm)
        if rows.size == 0:
            return IngestResult(reasons, SignalColumns.empty())
        # Queued synchronously (no await since the room check): the room is still there.
        inference = await self.batcher.submit(inputs[rows])
        signals = signals_from_probabilities(
            np.asarray(symbol)[rows],
            np.asarray(ts_ns)[rows],
            inference.probabilities,
            inference.model_version,
        )
        self.store.update(signals, seq)
        for sink in self.sinks:
            try:
                await sink.publish(signals)
            except Exception:  # a sink's outage must not fail ingestion
                log.exception("signal sink %r failed", sink)
        return IngestResult(reasons, signals)


def tick_to_signal_sync(
    engine: FeatureEngine,
    backend: LocalOnnxBackend,
    symbol: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    ts_ns: np.ndarray,
) -> SignalColumns:
    """The whole path on this thread with the in-process model (no batcher): the latency floor."""
    features = engine.update(symbol, price, size, ts_ns)
    inputs, warm = model_inputs(features)
    rows = last_warm_row_per_symbol(symbol, warm)
    if rows.size == 0:
        return SignalColumns.empty(backend.model_version)
    probs = backend.infer_sync(inputs[rows])
    return signals_from_probabilities(symbol[rows], ts_ns[rows], probs, backend.model_version)
