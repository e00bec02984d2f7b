"""Signals: model probabilities → direction, strength, confidence; the latest per symbol.

The direction follows the model's own rule (``app.model.calibration.decide``: the
strength ``P(up) - P(down)`` against the direction threshold in the model's manifest);
the confidence is the (calibrated) probability of that direction. Every signal names the
model that computed it: ``name/version``, the variant (fp32, int8, int4), the SHA-256 of
its ONNX file and the backend that ran it (``local``, ``kserve``).

``LatestSignals`` is the in-process (L1) store ``GetSignal`` reads: preallocated columns
indexed by symbol, updated by one compiled call per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from app.model.calibration import decide

if TYPE_CHECKING:
    from app.inference import Inference

# Direction codes: the values of signals.v1.Direction.
DIRECTION_DOWN = 1
DIRECTION_FLAT = 2
DIRECTION_UP = 3
CLASS_TO_DIRECTION = np.array([DIRECTION_DOWN, DIRECTION_FLAT, DIRECTION_UP], dtype=np.int8)


@dataclass(frozen=True)
class Signal:
    symbol: int
    ts_ns: int
    direction: int
    strength: float  # P(up) - P(down), in [-1, 1]
    confidence: float  # probability of the predicted direction
    model_version: str
    model_variant: str = ""  # fp32, int8, int4 ("unknown": no manifest described the file)
    model_sha256: str = ""  # of the ONNX file that computed it ("" if the server did not say)
    backend: str = ""  # "local" (in-process) or "kserve" (Triton, MLServer)


@dataclass(frozen=True)
class SignalColumns:
    """Signals of many symbols as columns (the shape of the gRPC SignalBatch)."""

    symbol: np.ndarray  # int32
    ts_ns: np.ndarray  # int64
    direction: np.ndarray  # int8, DIRECTION_*
    strength: np.ndarray  # float32
    confidence: np.ndarray  # float32
    model_version: str
    model_variant: str = ""
    model_sha256: str = ""
    backend: str = ""

    def __len__(self) -> int:
        return int(self.symbol.shape[0])

    def row(self, i: int) -> Signal:
        return Signal(
            int(self.symbol[i]),
            int(self.ts_ns[i]),
            int(self.direction[i]),
            float(self.strength[i]),
            float(self.confidence[i]),
            self.model_version,
            self.model_variant,
            self.model_sha256,
            self.backend,
        )

    @classmethod
    def empty(cls, model_version: str = "") -> SignalColumns:
        return cls(
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, np.int8),
            np.empty(0, np.float32),
            np.empty(0, np.float32),
            model_version,
        )


def signals_from_probabilities(
    symbol: np.ndarray,
    ts_ns: np.ndarray,
    probabilities: np.ndarray,
    model_version: str,
    *,
    direction_threshold: float | None = None,
    model_variant: str = "",
    model_sha256: str = "",
    backend: str = "",
) -> SignalColumns:
    """Direction by the model's rule (the most probable class without a threshold);
    strength = P(up) - P(down); confidence = the probability of the direction."""
    cls, strength, confidence = decide(probabilities, direction_threshold)
    return SignalColumns(
        symbol=np.asarray(symbol, dtype=np.int32),
        ts_ns=np.asarray(ts_ns, dtype=np.int64),
        direction=CLASS_TO_DIRECTION[cls],
        strength=strength,
        confidence=confidence,
        model_version=model_version,
        model_variant=model_variant,
        model_sha256=model_sha256,
        backend=backend,
    )


def signals_from_inference(
    symbol: np.ndarray, ts_ns: np.ndarray, inference: Inference
) -> SignalColumns:
    """The signals of one inference: its model's direction rule, identity and backend."""
    model = inference.identity
    return signals_from_probabilities(
        symbol, ts_ns, inference.probabilities, model.model_version,
        direction_threshold=model.direction_threshold, model_variant=model.variant,
        model_sha256=model.sha256, backend=inference.backend,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def _store(symbol, ts_ns, direction, strength, confidence, seq, model, computed_at_ns,
           seqs, ts_col, direction_col, strength_col, confidence_col, model_col, computed_col):  # fmt: skip
    """Rows of symbols whose stored signal is older than batch ``seq`` into the columns
    (all decided before any is written: a repeated symbol takes its last row); how many."""
    newer = np.empty(symbol.shape[0], np.bool_)
    count = 0
    for i in range(symbol.shape[0]):
        newer[i] = seqs[symbol[i]] < seq
        count += newer[i]
    for i in range(symbol.shape[0]):
        if newer[i]:
            s = symbol[i]
            seqs[s] = seq
            ts_col[s] = ts_ns[i]
            direction_col[s] = direction[i]
            strength_col[s] = strength[i]
            confidence_col[s] = confidence[i]
            model_col[s] = model
            computed_col[s] = computed_at_ns
    return count


class LatestSignals:
    """The newest signal of each symbol, and when it was computed, in preallocated columns.

    Updates carry the sequence number of the tick batch that produced them; an older
    batch whose inference finishes late never overwrites a newer signal.
    """

    def __init__(self, n_symbols: int) -> None:
        self.n_symbols = n_symbols
        self._seq = np.zeros(n_symbols, dtype=np.int64)  # 0: no signal yet
        self._ts = np.zeros(n_symbols, dtype=np.int64)
        self._direction = np.zeros(n_symbols, dtype=np.int8)
        self._strength = np.zeros(n_symbols, dtype=np.float32)
        self._confidence = np.zeros(n_symbols, dtype=np.float32)
        self._model = np.zeros(n_symbols, dtype=np.int32)
        self._computed_at = np.zeros(n_symbols, dtype=np.int64)  # ns
        self._models: list[tuple[str, str, str, str]] = []  # (version, variant, sha256, backend)

    def update(self, signals: SignalColumns, seq: int, computed_at_ns: int = 0) -> int:
        """Store ``signals`` from batch ``seq`` (>= 1), computed at ``computed_at_ns``, where
        newer; returns how many were stored."""
        key = (signals.model_version, signals.model_variant, signals.model_sha256, signals.backend)
        models = self._models
        model = models.index(key) if key in models else len(models)  # listed once stored
        stored = _store(signals.symbol, signals.ts_ns, signals.direction, signals.strength,
                        signals.confidence, seq, model, computed_at_ns, self._seq, self._ts,
                        self._direction, self._strength, self._confidence, self._model,
                        self._computed_at)  # fmt: skip
        if stored and model == len(models):
            models.append(key)
        return stored

    # Reads take each value with ``item``: a Python number straight from the column, without
    # the numpy scalar that indexing makes first.

    def seq_of(self, symbol: int) -> int:
        """The batch of ``symbol``'s stored signal (0: none)."""
        return self._seq.item(symbol)

    def computed_at(self, symbol: int) -> int:
        """When ``symbol``'s stored signal was computed (ns)."""
        return self._computed_at.item(symbol)

    def get(self, symbol: int) -> Signal | None:
        if not 0 <= symbol < self.n_symbols or self._seq.item(symbol) == 0:
            return None
        return Signal(
            symbol,
            self._ts.item(symbol),
            self._direction.item(symbol),
            self._strength.item(symbol),
            self._confidence.item(symbol),
            *self._models[self._model.item(symbol)],
        )
