"""Signals: model probabilities → direction, strength, confidence; the latest per symbol.

``LatestSignals`` is the in-process (L1) store ``GetSignal`` reads: preallocated columns
indexed by symbol. ``SignalSink`` is the seam where published signals leave the
process (Pub/Sub, the warehouse, an L2 cache): the pipeline hands every batch of new
signals to each sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

# Direction codes: the values of signals.v1.Direction.
DIRECTION_DOWN = 1
DIRECTION_FLAT = 2
DIRECTION_UP = 3
_CLASS_TO_DIRECTION = np.array([DIRECTION_DOWN, DIRECTION_FLAT, DIRECTION_UP], dtype=np.int8)


@dataclass(frozen=True)
class Signal:
    symbol: int
    ts_ns: int
    direction: int
    strength: float  # P(up) - P(down), in [-1, 1]
    confidence: float  # probability of the predicted direction
    model_version: str


@dataclass(frozen=True)
class SignalColumns:
    """Signals of many symbols as columns (the shape of the gRPC SignalBatch)."""

    symbol: np.ndarray  # int32
    ts_ns: np.ndarray  # int64
    direction: np.ndarray  # int8, DIRECTION_*
    strength: np.ndarray  # float32
    confidence: np.ndarray  # float32
    model_version: str

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
    symbol: np.ndarray, ts_ns: np.ndarray, probabilities: np.ndarray, model_version: str
) -> SignalColumns:
    """Direction = most probable class; strength = P(up) - P(down); confidence = its probability."""
    cls = probabilities.argmax(axis=1)
    return SignalColumns(
        symbol=np.asarray(symbol, dtype=np.int32),
        ts_ns=np.asarray(ts_ns, dtype=np.int64),
        direction=_CLASS_TO_DIRECTION[cls],
        strength=(probabilities[:, 2] - probabilities[:, 0]).astype(np.float32),
        confidence=probabilities[np.arange(probabilities.shape[0]), cls].astype(np.float32),
        model_version=model_version,
    )


class LatestSignals:
    """The newest signal of each symbol, in preallocated columns.

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
        self._version = np.zeros(n_symbols, dtype=np.int32)
        self._versions: list[str] = []

    def update(self, signals: SignalColumns, seq: int) -> int:
        """Store ``signals`` from batch ``seq`` (>= 1) where newer; returns how many were stored."""
        newer = self._seq[signals.symbol] < seq
        s = signals.symbol[newer]
        if s.size == 0:
            return 0
        try:
            version = self._versions.index(signals.model_version)
        except ValueError:
            self._versions.append(signals.model_version)
            version = len(self._versions) - 1
        self._seq[s] = seq
        self._ts[s] = signals.ts_ns[newer]
        self._direction[s] = signals.direction[newer]
        self._strength[s] = signals.strength[newer]
        self._confidence[s] = signals.confidence[newer]
        self._version[s] = version
        return int(s.size)

    def get(self, symbol: int) -> Signal | None:
        if not 0 <= symbol < self.n_symbols or self._seq[symbol] == 0:
            return None
        return Signal(
            symbol,
            int(self._ts[symbol]),
            int(self._direction[symbol]),
            float(self._strength[symbol]),
            float(self._confidence[symbol]),
            self._versions[int(self._version[symbol])],
        )


class SignalSink(Protocol):
    """Where new signals go besides the in-process store (publish/cache seam)."""

    async def publish(self, signals: SignalColumns) -> None: ...
