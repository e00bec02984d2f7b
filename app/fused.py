"""The fused in-process path: ticks → features → model → signals in one compiled call.

``FusedBackend`` evaluates the built model's MLP in Numba (weights from the ONNX file's
initializers, ``app.model.weights``; int8 and 4-bit dequantised at load) and is the
in-process backend of ``model.backend: fused``:

* ``bind(engine)`` gives a ``FusedPath``: one call (``step``/``run``) applies a batch of
  ticks to the engine's state and makes their signals: the features of every tick, the
  model inputs, one signal per symbol (after its last warm tick in the batch, as the
  pipeline does), its probabilities, and the manifest's direction rule (strength
  ``P(up) - P(down)`` against the threshold) and confidence. Everything lands in buffers
  the path owns (grown to the largest batch, then reused): ``step`` allocates nothing,
  not even the small structure Numba's dispatcher makes per array argument (the path
  passes one structref holding them all).
* ``infer`` / ``infer_sync`` evaluate model inputs only, as any ``InferenceBackend``
  (the batcher, the fallback behind a KServe server).

ONNX Runtime stays the reference: the probabilities agree with it within 1e-5 for every
variant (tests/app/test_fused.py). Signals name the same model identity (variant, SHA-256
of the ONNX file read) and the backend ``local`` (in this process).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit, types
from numba.experimental import structref

from app.features import (
    BAD_OUT_SHAPE,
    STATE_ARGS,
    TICK_COLUMNS,
    FeatureEngine,
    apply_batch,
    check_columns,
    kernel_columns,
    kernel_refusal,
)
from app.inference import Inference, InferenceBackend, check_inputs, model_identity
from app.intrinsics import as_float, as_int
from app.model.calibration import decide_row
from app.model.contract import N_CLASSES, N_INPUTS, inputs_into
from app.model.manifest import ModelMismatchError
from app.model.weights import (
    L_BIAS,
    L_FAN_IN,
    L_FAN_OUT,
    L_INT8,
    L_RELU,
    L_SCALE,
    L_WEIGHTS,
    MLPArrays,
    read_mlp,
)
from app.signals import CLASS_TO_DIRECTION, SignalColumns
from app.skew import SkewMonitor
from app.state import W_MARK
from app.telemetry import default_metrics

# Columns of FusedBackend.signal: the probabilities, then strength and confidence.
S_STRENGTH = N_CLASSES
S_CONFIDENCE = N_CLASSES + 1
SIGNAL_COLUMNS = N_CLASSES + 2

_F32_255 = np.float32(255.0)
OFFLOAD_ROWS = 1024  # model-only calls of this many rows run on a worker thread
SCRATCH_ROWS = 4  # `_mlp_row`'s working rows: two of activations, int8 activations, inputs


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _mlp_row(x, i, values, layers, scratch, probs, r):
    """The model's probabilities of input row ``x[i]`` into ``probs[r, :N_CLASSES]``.

    float32 throughout, as ONNX Runtime computes. ``scratch`` is float32 ``[SCRATCH_ROWS, width]``:
    two rows of activations in turn, the quantised activations of an int8 layer
    (``DynamicQuantizeLinear``: uint8 over the row's range, 0 included, minus the zero
    point, so the integer sums are ONNX Runtime's exactly), and the positions of a layer's
    non-zero inputs.

    Each output is summed over the non-zero inputs in their order, whatever the batch (so a
    signal never depends on how its ticks were batched); eight inputs at a time per pass
    over the outputs (the last few one at a time), each added in turn, so the sums are the
    same, with an eighth of the loads and stores of the outputs (four at a time was 1.7x
    faster than one; eight is 1.1x faster than four on fp32 and int8).
    """
    n_in = x.shape[1]
    for c in range(n_in):
        scratch[0, c] = (x[i, c] - values[c]) / values[n_in + c]
    a = 0
    for layer in range(layers.shape[0]):
        w0 = layers[layer, L_WEIGHTS]
        b0 = layers[layer, L_BIAS]
        s0 = layers[layer, L_SCALE]
        k_in = layers[layer, L_FAN_IN]
        n_out = layers[layer, L_FAN_OUT]
        b = 1 - a
        src = a
        x_scale = np.float32(1.0)
        if layers[layer, L_INT8]:
            lo = np.float32(0.0)
            hi = np.float32(0.0)
            for k in range(k_in):
                lo = min(lo, scratch[a, k])
                hi = max(hi, scratch[a, k])
            if hi != lo:
                x_scale = (hi - lo) / _F32_255
            # The zero point: -lo / scale clamped to [0, 255], rounded half away from zero.
            zero = min(max(-lo / x_scale, np.float32(0.0)), _F32_255)
            zero = np.float32(math.floor(zero + np.float32(0.5)))
            for k in range(k_in):
                v = scratch[a, k] / x_scale
                v = min(max(v, -zero), _F32_255 - zero)
                scratch[2, k] = np.float32(np.rint(v))  # = quantised value - zero point
            src = 2
        for j in range(n_out):
            scratch[b, j] = 0.0
        m = 0  # ReLU leaves about half the activations at zero: skip them, without a branch
        for k in range(k_in):
            scratch[3, m] = k  # exact: k < 2**24
            m += scratch[src, k] != 0.0
        # Unsigned offsets: a signed index costs a negative-index check that keeps the loops
        # from vectorising.
        q = 0
        while q + 8 <= m:
            k1, k2, k3, k4 = (int(scratch[3, q]), int(scratch[3, q + 1]), int(scratch[3, q + 2]),
                              int(scratch[3, q + 3]))  # fmt: skip
            k5, k6, k7, k8 = (int(scratch[3, q + 4]), int(scratch[3, q + 5]),
                              int(scratch[3, q + 6]), int(scratch[3, q + 7]))  # fmt: skip
            h1, h2, h3, h4 = scratch[src, k1], scratch[src, k2], scratch[src, k3], scratch[src, k4]
            h5, h6, h7, h8 = scratch[src, k5], scratch[src, k6], scratch[src, k7], scratch[src, k8]
            r1, r2 = np.uint64(w0 + k1 * n_out), np.uint64(w0 + k2 * n_out)
            r3, r4 = np.uint64(w0 + k3 * n_out), np.uint64(w0 + k4 * n_out)
            r5, r6 = np.uint64(w0 + k5 * n_out), np.uint64(w0 + k6 * n_out)
            r7, r8 = np.uint64(w0 + k7 * n_out), np.uint64(w0 + k8 * n_out)
            for j in range(n_out):
                acc = scratch[b, j]
                acc += h1 * values[r1 + np.uint64(j)]
                acc += h2 * values[r2 + np.uint64(j)]
                acc += h3 * values[r3 + np.uint64(j)]
                acc += h4 * values[r4 + np.uint64(j)]
                acc += h5 * values[r5 + np.uint64(j)]
                acc += h6 * values[r6 + np.uint64(j)]
                acc += h7 * values[r7 + np.uint64(j)]
                acc += h8 * values[r8 + np.uint64(j)]
                scratch[b, j] = acc
            q += 8
        while q < m:
            k = int(scratch[3, q])
            h = scratch[src, k]
            row = np.uint64(w0 + k * n_out)
            for j in range(n_out):
                scratch[b, j] += h * values[row + np.uint64(j)]
            q += 1
        relu = layers[layer, L_RELU]
        for j in range(n_out):
            z = scratch[b, j]
            if layers[layer, L_INT8]:
                z = z * (x_scale * values[s0 + j])
            z += values[b0 + j]
            if relu and z < 0.0:
                z = np.float32(0.0)
            scratch[b, j] = z
        a = b
    top = scratch[a, 0]
    for c in range(1, N_CLASSES):
        top = max(top, scratch[a, c])
    total = np.float32(0.0)
    for c in range(N_CLASSES):
        e = np.float32(math.exp(scratch[a, c] - top))
        probs[r, c] = e
        total += e
    for c in range(N_CLASSES):
        probs[r, c] = probs[r, c] / total


@njit(cache=True, nogil=True, error_model="numpy")
def _mlp_rows(x, values, layers, scratch, probs):
    for i in range(x.shape[0]):
        _mlp_row(x, i, values, layers, scratch, probs, i)


BAD_BUFFERS = -10  # a result buffer is smaller than the batch


@njit(
    f"int64({TICK_COLUMNS}, {STATE_ARGS}, float64[:, ::1], uint8[::1], float32[::1], "
    "int64[:, ::1], float32[:, ::1], float64, float32[:, ::1], boolean[::1], int64[::1], "
    "float32[:, ::1], int8[::1], int32[::1], int64[::1])",
    cache=True, nogil=True, error_model="numpy",
)  # fmt: skip
def _fused_kernel(
    symbol, price, size, ts_ns, rec, params, cal, out, reasons, values, layers, scratch,
    threshold, inputs, warm, rows, signal, direction, signal_symbol, signal_ts,
):  # fmt: skip
    """Features of every tick, model inputs, one signal per symbol (its last warm row);
    returns the number of signals, or a BAD_* code (nothing done)."""
    n = symbol.shape[0]
    bad = check_columns(symbol, price, size, ts_ns)
    if bad != 0:
        return bad
    if out.shape[0] < n or out.shape[1] != 7:
        return BAD_OUT_SHAPE
    if (reasons.shape[0] < n or inputs.shape[0] < n or warm.shape[0] < n or rows.shape[0] < n
            or signal.shape[0] < n or direction.shape[0] < n or signal_symbol.shape[0] < n
            or signal_ts.shape[0] < n):  # fmt: skip
        return BAD_BUFFERS
    apply_batch(symbol, price, size, ts_ns, rec, params, cal, out, reasons)
    inputs_into(out, inputs, warm, n)  # only accepted ticks have finite features: warm
    # The last warm row of each symbol, found from the end; the mark word is 0 between calls.
    m = 0
    for t in range(n - 1, -1, -1):
        if warm[t] and as_int(rec[symbol[t], W_MARK]) == 0:
            rec[symbol[t], W_MARK] = as_float(1)
            rows[m] = t
            m += 1
    for r in range(m // 2):  # ascending, as the ticks came
        rows[r], rows[m - 1 - r] = rows[m - 1 - r], rows[r]
    for r in range(m):
        t = rows[r]
        rec[symbol[t], W_MARK] = as_float(0)
        signal_symbol[r] = symbol[t]
        signal_ts[r] = ts_ns[t]
        _mlp_row(inputs, t, values, layers, scratch, signal, r)
        c, strength, confidence = decide_row(signal[r, 0], signal[r, 1], signal[r, 2], threshold)
        signal[r, S_STRENGTH] = strength
        signal[r, S_CONFIDENCE] = confidence
        direction[r] = CLASS_TO_DIRECTION[c]
    return m


# Everything one fused call reads and writes, as one object: the dispatcher adapts every
# numpy array it is passed (a small allocation each, per call); a structref it passes as is.
_WORK_FIELDS = (
    "symbol", "price", "size", "ts_ns", "rec", "params", "cal", "out", "reasons",
    "values", "layers", "scratch", "threshold", "inputs", "warm", "rows", "signal",
    "direction", "signal_symbol", "signal_ts",
)  # fmt: skip


@structref.register
class _WorkType(types.StructRef):
    pass


class _Work(structref.StructRefProxy):
    """A ``FusedPath``'s buffers, its engine's state and its model, for ``step_work``."""


structref.define_proxy(_Work, _WorkType, list(_WORK_FIELDS))


def _c(dtype: types.Type, ndim: int) -> types.Array:
    return types.Array(dtype, ndim, "C")


_I32, _I64, _F32, _F64 = (
    _c(types.int32, 1),
    _c(types.int64, 1),
    _c(types.float32, 1),
    _c(types.float64, 1),
)
WORK_TYPE = _WorkType(list(zip(_WORK_FIELDS, (
    _I32, _F64, _F64, _I64, _c(types.float64, 2), _I64, _c(types.int64, 3),
    _c(types.float64, 2), _c(types.uint8, 1), _F32, _c(types.int64, 2), _c(types.float32, 2),
    types.float64, _c(types.float32, 2), _c(types.boolean, 1), _I64, _c(types.float32, 2),
    _c(types.int8, 1), _I32, _I64,
), strict=True)))  # fmt: skip


@njit(cache=True)
def _new_work(
    symbol, price, size, ts_ns, rec, params, cal, out, reasons, values, layers, scratch,
    threshold, inputs, warm, rows, signal, direction, signal_symbol, signal_ts,
):  # fmt: skip
    return _Work(
        symbol, price, size, ts_ns, rec, params, cal, out, reasons, values, layers, scratch,
        threshold, inputs, warm, rows, signal, direction, signal_symbol, signal_ts,
    )  # fmt: skip


# Explicit signatures: columns of other types raise TypeError at once (then converted).
@njit(types.int64(WORK_TYPE, _I32, _F64, _F64, _I64), cache=True, nogil=True,
      error_model="numpy")  # fmt: skip
def _step_columns(w, symbol, price, size, ts_ns):
    """The fused kernel over the given tick columns, into the work's buffers."""
    return _fused_kernel(
        symbol, price, size, ts_ns, w.rec, w.params, w.cal, w.out, w.reasons, w.values,
        w.layers, w.scratch, w.threshold, w.inputs, w.warm, w.rows, w.signal, w.direction,
        w.signal_symbol, w.signal_ts,
    )  # fmt: skip


@njit(types.int64(WORK_TYPE, types.int64), cache=True, nogil=True, error_model="numpy")
def step_work(w, n):
    """The fused kernel over the first ``n`` ticks of the work's own tick buffers."""
    return _step_columns(w, w.symbol[:n], w.price[:n], w.size[:n], w.ts_ns[:n])


@dataclass(frozen=True)
class FusedBatch:
    """One call's results: views of the path's buffers, valid until its next call."""

    features: np.ndarray  # float64 [n, 7]: every tick's features (NaN rows: rejected or cold)
    reasons: np.ndarray  # uint8 [n]: 0 accepted, else the reject reason
    inputs: np.ndarray  # float32 [n, N_INPUTS]: every tick's model inputs
    warm: np.ndarray  # bool [n]: whether the tick's inputs may reach the model
    rows: np.ndarray  # int64 [m]: the ticks that made a signal (each symbol's last warm one)
    symbol: np.ndarray  # int32 [m]: their symbols
    ts_ns: np.ndarray  # int64 [m]: their timestamps
    probabilities: np.ndarray  # float32 [m, N_CLASSES]
    strength: np.ndarray  # float32 [m]: P(up) - P(down)
    confidence: np.ndarray  # float32 [m]: the probability of the direction
    direction: np.ndarray  # int8 [m]: signals.v1 Direction


class FusedPath:
    """One engine and one model, with the buffers of their fused calls.

    The zero-allocation way in: write ``n`` ticks into ``symbol``/``price``/``size``/``ts_ns``
    (at least ``capacity`` long) and call ``step(n)``. ``apply``/``run``/``signals`` take
    columns (the result buffers grow to the largest batch seen). Not thread-safe.
    """

    def __init__(self, engine: FeatureEngine, backend: FusedBackend, capacity: int = 1024) -> None:
        self.engine = engine
        self.backend = backend
        self._n = self._m = 0
        self._allocate(max(1, capacity))

    def _allocate(self, capacity: int) -> None:
        self.capacity = capacity
        self.symbol = np.zeros(capacity, np.int32)
        self.price = np.zeros(capacity, np.float64)
        self.size = np.zeros(capacity, np.float64)
        self.ts_ns = np.zeros(capacity, np.int64)
        self._out = np.zeros((capacity, 7), np.float64)
        self._reasons = np.zeros(capacity, np.uint8)
        self._inputs = np.zeros((capacity, N_INPUTS), np.float32)
        self._warm = np.zeros(capacity, np.bool_)
        self._rows = np.zeros(capacity, np.int64)
        self._signal = np.zeros((capacity, SIGNAL_COLUMNS), np.float32)
        self._direction = np.zeros(capacity, np.int8)
        self._signal_symbol = np.zeros(capacity, np.int32)
        self._signal_ts = np.zeros(capacity, np.int64)
        model = self.backend
        records, params, table = self.engine.kernel_state
        self._work = _new_work(
            self.symbol, self.price, self.size, self.ts_ns, records, params, table,
            self._out, self._reasons, model.mlp.values, model.mlp.layers,
            np.zeros((SCRATCH_ROWS, model.mlp.width), np.float32), model.threshold, self._inputs,
            self._warm, self._rows, self._signal, self._direction, self._signal_symbol,
            self._signal_ts,
        )  # fmt: skip

    @property
    def work(self) -> _Work:
        """The path's buffers, state and model as one object (compiled callers: `step_work`)."""
        return self._work

    def reserve(self, n: int) -> None:
        """Room for batches of ``n`` ticks (the buffers grow, at least doubling)."""
        if n > self.capacity:
            self._allocate(max(n, 2 * self.capacity))

    def step(self, n: int) -> int:
        """Apply the first ``n`` ticks of the buffers and make their signals; returns how many
        signals (``last`` has the results). Allocates nothing."""
        if not 0 <= n <= self.capacity:
            raise ValueError(f"n = {n}: must be in [0, {self.capacity}] (the buffers' capacity)")
        m = step_work(self._work, n)
        self._n, self._m = n, m
        return m

    def apply(
        self, symbol: np.ndarray, price: np.ndarray, size: np.ndarray, ts_ns: np.ndarray
    ) -> int:
        """Apply the given columns (converted as ``FeatureEngine.update`` does) and make their
        signals; returns how many (``last`` has the results)."""
        n = len(symbol)
        self.reserve(n)
        try:  # columns of the kernel's types go straight in
            m = _step_columns(self._work, symbol, price, size, ts_ns)
        except TypeError:  # another type or layout: convert what can be, refuse the rest
            symbol, price, size, ts_ns = kernel_columns(symbol, price, size, ts_ns)
            m = _step_columns(self._work, symbol, price, size, ts_ns)
        if m < 0:
            raise kernel_refusal(m, n, price, size, ts_ns, self._out, self._reasons)
        self._n, self._m = n, m
        return m

    def run(
        self, symbol: np.ndarray, price: np.ndarray, size: np.ndarray, ts_ns: np.ndarray
    ) -> FusedBatch:
        """``apply``, then ``last``."""
        self.apply(symbol, price, size, ts_ns)
        return self.last

    def signals(
        self, symbol: np.ndarray, price: np.ndarray, size: np.ndarray, ts_ns: np.ndarray
    ) -> SignalColumns:
        """The signals of a batch of ticks (each symbol's last warm tick), decided in the
        compiled call: the whole in-process tick → signal path."""
        return self.signal_columns(self.apply(symbol, price, size, ts_ns))

    def signal_columns(self, m: int) -> SignalColumns:
        """Copies of the first ``m`` signals of the last call, naming the model."""
        model = self.backend.identity
        return SignalColumns(
            self._signal_symbol[:m].copy(), self._signal_ts[:m].copy(), self._direction[:m].copy(),
            self._signal[:m, S_STRENGTH].copy(), self._signal[:m, S_CONFIDENCE].copy(),
            model.model_version, model.variant, model.sha256, self.backend.name,
        )  # fmt: skip

    @property
    def last(self) -> FusedBatch:
        """The results of the last call (views, valid until the next)."""
        n, m = self._n, self._m
        signal = self._signal[:m]
        return FusedBatch(
            self._out[:n], self._reasons[:n], self._inputs[:n], self._warm[:n], self._rows[:m],
            self._signal_symbol[:m], self._signal_ts[:m], signal[:, :N_CLASSES],
            signal[:, S_STRENGTH], signal[:, S_CONFIDENCE], self._direction[:m],
        )  # fmt: skip


class FusedBackend(InferenceBackend):
    """The built model evaluated by compiled code in this process (see the module docstring).

    ``bind(engine)`` gives the fused tick → signal path over that engine's state; ``run``
    and ``signals`` use the path of the engine they are given (one at a time: one
    pipeline). ``infer_sync`` may run on any thread (its scratch is its own).
    """

    name = "local"

    def __init__(self, model_path: Path, model_version: str) -> None:
        """Load ``model_path``; its identity as ``LocalOnnxBackend`` finds it. Refuses a graph
        it cannot evaluate (``UnsupportedModelError``) or whose input scaling is not the
        manifest's (``ModelMismatchError``)."""
        data = model_path.read_bytes()
        self.artifacts, self.identity = model_identity(model_path, data, model_version)
        self.mlp = read_mlp(data, str(model_path))
        if self.artifacts is not None:
            _check_scaling(self.mlp, self.artifacts.manifest.get("input_scaling") or {},
                           str(self.artifacts.manifest_path))  # fmt: skip
        self.model_version = self.identity.model_version
        self.model_path = model_path
        threshold = self.identity.direction_threshold
        self.threshold = math.nan if threshold is None else float(threshold)
        self._path: FusedPath | None = None

    def bind(self, engine: FeatureEngine, capacity: int = 1024) -> FusedPath:
        """The fused path over ``engine`` (the last one bound is kept for ``run``)."""
        if self._path is None or self._path.engine is not engine:
            self._path = FusedPath(engine, self, capacity)
        return self._path

    def run(
        self,
        engine: FeatureEngine,
        symbol: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        ts_ns: np.ndarray,
    ) -> FusedBatch:
        """Apply the ticks to ``engine`` and make their signals, in one compiled call."""
        return self.bind(engine).run(symbol, price, size, ts_ns)

    def served(self, inputs: np.ndarray, monitor: SkewMonitor | None) -> None:
        """Count the model inputs a fused call made signals of (float32 ``[m, N_INPUTS]``),
        as the batcher counts those it sends a backend: the batch size, and the skew
        ``monitor``'s rows."""
        default_metrics().inference_batch_size.observe(inputs.shape[0])
        if monitor is not None:
            monitor.observe(inputs, self.identity.sha256)

    def signals(
        self,
        engine: FeatureEngine,
        symbol: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        ts_ns: np.ndarray,
    ) -> SignalColumns:
        """The signals of a batch of ticks on ``engine`` (see ``FusedPath.signals``)."""
        return self.bind(engine).signals(symbol, price, size, ts_ns)

    def infer_sync(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities for model inputs (float32 ``[n, N_INPUTS]``), on this thread."""
        x = check_inputs(inputs)
        probs = np.empty((x.shape[0], N_CLASSES), np.float32)
        scratch = np.empty((SCRATCH_ROWS, self.mlp.width), np.float32)
        _mlp_rows(x, self.mlp.values, self.mlp.layers, scratch, probs)
        return probs

    async def infer(self, inputs: np.ndarray) -> Inference:
        """As ``LocalOnnxBackend``: small batches inline, ``OFFLOAD_ROWS`` or more on a thread
        (the kernel releases the GIL), so a fallback's large batch does not stall the loop."""
        if inputs.shape[0] >= OFFLOAD_ROWS:
            probs = await asyncio.to_thread(self.infer_sync, inputs)
        else:
            probs = self.infer_sync(inputs)
        return Inference(probs, self.identity, self.name)


def _check_scaling(mlp: MLPArrays, scaling: dict, manifest: str) -> None:
    """The graph's input mean/std must be the manifest's ``input_scaling`` (as float32)."""
    for i, key in enumerate(("mean", "std")):
        graph = mlp.values[i * N_INPUTS : (i + 1) * N_INPUTS]
        recorded = np.asarray(scaling.get(key, []), dtype=np.float32)
        if recorded.shape != graph.shape or not np.array_equal(recorded, graph):
            raise ModelMismatchError(
                f"{manifest}: input_scaling.{key} = {recorded.tolist()} but the ONNX graph "
                f"scales by {graph.tolist()}; rebuild the model"
            )
