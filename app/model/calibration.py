"""Calibration: temperature scaling, the direction rule and its threshold, calibration error.

A model's confidence is the probability of the direction it reports; a desk reads it
as "right this often". Temperature scaling divides the logits by one ``T`` fitted on
held-out data (it minimises the negative log-likelihood, so the ranking of classes,
hence accuracy, is unchanged); the build folds ``1/T`` into the last layer, so every
backend serves calibrated probabilities. The direction rule is on the strength
``P(up) - P(down)``: up above ``threshold``, down below ``-threshold``, flat between;
the threshold is fitted on the same held-out data and recorded in the manifest.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

ECE_BINS = 15


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = _softmax(logits.astype(np.float64) / temperature)
    return float(-np.log(np.maximum(p[np.arange(y.shape[0]), y], 1e-300)).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The ``T`` in [0.05, 20] minimising the NLL of ``softmax(logits / T)`` (golden section
    on ``log T``; the NLL is unimodal in it)."""
    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(logits, y, np.exp(a)), _nll(logits, y, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(logits, y, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(logits, y, np.exp(b))
    return float(np.exp((lo + hi) / 2))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def decide_row(down, flat, up, threshold):
    """``(class, strength, confidence)`` of one row of probabilities under the rule (scalars
    in and out, so the fused kernel inlines it); ``threshold`` NaN: the most probable class
    (the first on ties)."""
    st = up - down
    if math.isnan(threshold):
        c = 0
        best = down
        if flat > best:
            c = 1
            best = flat
        if up > best:
            c = 2
    elif st > threshold:
        c = 2
    elif st < -threshold:
        c = 0
    else:
        c = 1
    confidence = down if c == 0 else (flat if c == 1 else up)
    return c, st, confidence


@njit(cache=True, nogil=True, error_model="numpy")
def _decide(probabilities, threshold, cls, strength, confidence):
    """The rule, row by row: one pass, no temporaries (a signal's hot path is one row)."""
    for i in range(probabilities.shape[0]):
        c, st, conf = decide_row(probabilities[i, 0], probabilities[i, 1], probabilities[i, 2],
                                 threshold)  # fmt: skip
        cls[i] = c
        strength[i] = st
        confidence[i] = conf


def decide(
    probabilities: np.ndarray, threshold: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(class int64, strength float32, confidence float32)`` per row: the strength rule at
    ``threshold``, or the most probable class when the model has no threshold (built before
    it was recorded); the confidence is the probability of the chosen class."""
    n = probabilities.shape[0]
    cls = np.empty(n, np.int64)
    strength = np.empty(n, np.float32)
    confidence = np.empty(n, np.float32)
    rule = math.nan if threshold is None else float(threshold)
    _decide(np.ascontiguousarray(probabilities), rule, cls, strength, confidence)
    return cls, strength, confidence


def directions(probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
    """Class index (0 down, 1 flat, 2 up) per row under the model's rule (see ``decide``)."""
    return decide(probabilities, threshold)[0]


def fit_direction_threshold(probabilities: np.ndarray, y: np.ndarray) -> float:
    """The strength threshold in [0, 0.5] (steps of 0.005) with the best accuracy on ``y``."""
    grid = np.round(np.arange(0.0, 0.5001, 0.005), 3)
    accuracy = [float((directions(probabilities, t) == y).mean()) for t in grid]
    return float(grid[int(np.argmax(accuracy))])


def expected_calibration_error(
    probabilities: np.ndarray, y: np.ndarray, threshold: float | None = None, bins: int = ECE_BINS
) -> float:
    """ECE of the reported direction: the mean |accuracy - confidence| over ``bins`` equal-width
    confidence bins, weighted by their share of rows. The direction is the rule's at
    ``threshold`` (the most probable class without one); its confidence is its probability."""
    cls = directions(probabilities, threshold)
    confidence = probabilities[np.arange(cls.shape[0]), cls]
    correct = (cls == y).astype(np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            total += rows.mean() * abs(correct[rows].mean() - confidence[rows].mean())
    return float(total)
