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


@njit(cache=True, nogil=True, error_model="numpy")
def _model_inputs_kernel(features, out, warm):
    n = features.shape[0]
    n_features = features.shape[1]
    for i in range(n):
        ok = True
        for c in range(n_features):  # every feature past its warm-up (NaN before), none infinite
            if not math.isfinite(features[i, c]):
                ok = False
        if ok:
            ema_fast = features[i, 0]
            ema_slow = features[i, 1]
            vwap = features[i, 5]
            out[i, 0] = (ema_fast - ema_slow) / ema_slow
            out[i, 1] = (features[i, 2] - 50.0) / 50.0
            out[i, 2] = features[i, 3]
            out[i, 3] = features[i, 4]
            out[i, 4] = (ema_fast - vwap) / vwap
            out[i, 5] = features[i, 6]
            for c in range(out.shape[1]):  # float32 overflow (extreme prices) is not an input
                if not math.isfinite(out[i, c]):
                    ok = False
        warm[i] = ok
        if not ok:
            for c in range(out.shape[1]):
                out[i, c] = 0.0


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
    _model_inputs_kernel(np.ascontiguousarray(features, dtype=np.float64), out, warm)
    return out, warm
