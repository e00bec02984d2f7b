"""The model's interface: input and output tensors, classes, and features → model inputs.

The engine's features are in price units (EMAs, VWAP) or bounded scales (RSI, OFI);
the model sees scale-free transforms of them so one model serves every symbol,
whatever its price level. Every backend (in-process ONNX Runtime, Triton, MLServer)
takes ``INPUT_NAME`` as float32 ``[batch, len(MODEL_INPUTS)]`` and returns
``OUTPUT_NAME`` as float32 ``[batch, len(CLASSES)]`` class probabilities.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from app.model.tensors import (  # noqa: F401  (re-exported: the contract's names)
    CLASSES,
    INPUT_NAME,
    INPUT_TRANSFORM,
    MODEL_INPUTS,
    N_CLASSES,
    N_INPUTS,
    OUTPUT_NAME,
)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def input_row(ema_fast, ema_slow, rsi, volatility, zscore, vwap, ofi):
    """``(warm, x0, ..., x5)``: one row of features → float32 model inputs (scalars in and out,
    so compiled callers inline it for free). Warm: every feature is a finite number (past
    its warm-up: NaN before; none infinite) and so is every input (float32 overflow of
    extreme prices is not an input); cold rows' inputs are zeros."""
    zero = np.float32(0.0)
    ok = (
        math.isfinite(ema_fast) and math.isfinite(ema_slow) and math.isfinite(rsi)
        and math.isfinite(volatility) and math.isfinite(zscore) and math.isfinite(vwap)
        and math.isfinite(ofi)
    )  # fmt: skip
    if not ok:
        return False, zero, zero, zero, zero, zero, zero
    x0 = np.float32((ema_fast - ema_slow) / ema_slow)
    x1 = np.float32((rsi - 50.0) / 50.0)
    x2 = np.float32(volatility)
    x3 = np.float32(zscore)
    x4 = np.float32((ema_fast - vwap) / vwap)
    x5 = np.float32(ofi)
    ok = (
        math.isfinite(x0) and math.isfinite(x1) and math.isfinite(x2) and math.isfinite(x3)
        and math.isfinite(x4) and math.isfinite(x5)
    )  # fmt: skip
    if not ok:
        return False, zero, zero, zero, zero, zero, zero
    return True, x0, x1, x2, x3, x4, x5


@njit(cache=True, nogil=True, error_model="numpy")
def inputs_into(features, out, warm, n):
    """Model inputs of ``features[:n]`` into ``out[:n]`` and ``warm[:n]`` (compiled callers
    pass their own buffers: the fused path)."""
    for t in range(n):
        ok, x0, x1, x2, x3, x4, x5 = input_row(
            features[t, 0], features[t, 1], features[t, 2], features[t, 3], features[t, 4],
            features[t, 5], features[t, 6],
        )  # fmt: skip
        out[t, 0] = x0
        out[t, 1] = x1
        out[t, 2] = x2
        out[t, 3] = x3
        out[t, 4] = x4
        out[t, 5] = x5
        warm[t] = ok


def model_inputs(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs float32[n, N_INPUTS], warm bool[n])`` from engine features ``float64[n, 7]``.

    A row is warm when every feature is a finite number (past its warm-up) and so is every
    model input: no NaN or infinity ever reaches the model. Cold rows are zeros and must
    not be sent to the model.
    """
    if features.ndim != 2 or features.shape[1] != 7:
        raise ValueError(f"features: shape {features.shape}: must be (n, 7)")
    out = np.empty((features.shape[0], N_INPUTS), dtype=np.float32)
    warm = np.empty(features.shape[0], dtype=np.bool_)
    inputs_into(np.ascontiguousarray(features, dtype=np.float64), out, warm, features.shape[0])
    return out, warm
