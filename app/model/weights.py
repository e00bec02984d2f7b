"""A built ONNX model's MLP as flat arrays a compiled kernel evaluates (the fused path).

``read_mlp`` walks the graph the build writes (``app.model.export``, then the
quantisers of ``app.model.quantization``) and takes every number from its initializers:

* the input scaling ``(x - input_mean) / input_std`` (``Sub``, ``Div``);
* per layer, the weights, the bias and whether a ``Relu`` follows:

  - fp32 ``MatMul``: the weights as they are;
  - int8 ``DynamicQuantizeLinear`` + ``MatMulInteger`` (``quantize_dynamic``): the
    integer weights minus their zero point, kept as integer-valued float32 with the
    weight scale beside them; the kernel quantises each row's activations as
    ``DynamicQuantizeLinear`` does (uint8, range including 0), so its sums are the
    integer sums ONNX Runtime computes (exact in float32, checked here);
  - 4-bit ``MatMulNBits`` (symmetric, blockwise): dequantised once, here, to float32;

* the final ``Softmax``.

Subnormal numbers (below 1.2e-38: training's rounding residue, a few hundred of them)
are read as 0: no probability moves by 1e-30, and arithmetic on subnormals costs the
CPU about a hundred cycles an operation (it made the fp32 model four times slower).

The calibration temperature is already in the last layer (the build folds ``1/T`` into
its weights), so the kernel's probabilities are the calibrated ones. A graph of any
other shape is refused with ``UnsupportedModelError`` naming the node.

The arrays (``MLPArrays``): ``values`` float32 holds every number, ``layers`` int64
``[n_layers, LAYER_FIELDS]`` says where each layer's are and how to evaluate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from app.model.contract import INPUT_NAME, N_CLASSES, N_INPUTS, OUTPUT_NAME

# Columns of MLPArrays.layers.
L_WEIGHTS, L_BIAS, L_SCALE, L_FAN_IN, L_FAN_OUT, L_RELU, L_INT8 = range(7)
LAYER_FIELDS = 7
FLOAT32_EXACT = 2**24  # integers up to this add exactly in float32


class UnsupportedModelError(ValueError):
    """The ONNX graph is not an MLP the fused kernel can evaluate."""


@dataclass(frozen=True)
class MLPArrays:
    """An MLP as flat arrays; ``values[0:N_INPUTS]`` is the input mean, then the input std."""

    values: (
        np.ndarray
    )  # float32: mean, std, then each layer's weights [fan_in, fan_out], bias, scale
    layers: np.ndarray  # int64 [n_layers, LAYER_FIELDS]: offsets into values, sizes, flags
    kinds: tuple[str, ...]  # per layer: "fp32", "int8" or "int4" (what its weights came from)

    @property
    def width(self) -> int:
        """The widest layer (the kernel's scratch holds two rows of it)."""
        return int(max(N_INPUTS, self.layers[:, L_FAN_OUT].max()))


def read_mlp(model: onnx.ModelProto | Path | bytes, source: str = "model") -> MLPArrays:
    """The MLP in ``model`` (a ModelProto, a file or its bytes); ``source`` names it in errors."""
    if isinstance(model, Path):
        source = str(model)
        model = model.read_bytes()
    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    return _Reader(model, source).read()


class _Reader:
    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        self.source = source
        self.nodes = list(model.graph.node)
        self.init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.pos = 0

    def fail(self, what: str) -> UnsupportedModelError:
        node = self.nodes[self.pos] if self.pos < len(self.nodes) else None
        where = f"node {self.pos} ({node.op_type} {node.name!r})" if node else "the graph's end"
        return UnsupportedModelError(
            f"{self.source}: {where}: {what}; the fused backend evaluates the MLPs this build "
            "writes (fp32 MatMul, int8 MatMulInteger, 4-bit MatMulNBits): use "
            "model.backend = onnxruntime for this model"
        )

    def take(self, op: str, first_input: str | None = None) -> onnx.NodeProto:
        if self.pos >= len(self.nodes) or self.nodes[self.pos].op_type != op:
            raise self.fail(f"expected {op}")
        node = self.nodes[self.pos]
        if first_input is not None and node.input[0] != first_input:
            raise self.fail(f"expected {op} of {first_input!r}, got one of {node.input[0]!r}")
        self.pos += 1
        return node

    def peek(self) -> str:
        return self.nodes[self.pos].op_type if self.pos < len(self.nodes) else ""

    def const(self, name: str, dtype: type | None = None) -> np.ndarray:
        if name not in self.init:
            raise self.fail(f"{name!r} is not an initializer")
        value = self.init[name]
        return value if dtype is None else value.astype(dtype)

    def read(self) -> MLPArrays:
        sub = self.take("Sub", INPUT_NAME)
        div = self.take("Div", sub.output[0])
        mean = self.const(sub.input[1], np.float32).reshape(-1)
        std = self.const(div.input[1], np.float32).reshape(-1)
        if mean.shape != (N_INPUTS,) or std.shape != (N_INPUTS,):
            raise self.fail(f"input scaling of shape {mean.shape}, {std.shape}: need ({N_INPUTS},)")
        current = div.output[0]
        values: list[np.ndarray] = [mean, std]
        offset = 2 * N_INPUTS
        layers: list[list[int]] = []
        kinds: list[str] = []
        fan_in = N_INPUTS
        while self.peek() != "Softmax":
            kind, weights, scale, current = self.matmul(current)
            if weights.shape[0] != fan_in:
                raise self.fail(f"weights of shape {weights.shape} after a layer of {fan_in}")
            add = self.take("Add", current)
            bias = self.const(add.input[1], np.float32).reshape(-1)
            if bias.shape != (weights.shape[1],):
                raise self.fail(f"bias of shape {bias.shape} for {weights.shape[1]} outputs")
            current = add.output[0]
            relu = self.peek() == "Relu"
            if relu:
                current = self.take("Relu", current).output[0]
            fan_out = weights.shape[1]
            layer = [0] * LAYER_FIELDS
            layer[L_WEIGHTS] = offset
            layer[L_BIAS] = offset + weights.size
            layer[L_SCALE] = offset + weights.size + fan_out
            layer[L_FAN_IN], layer[L_FAN_OUT] = fan_in, fan_out
            layer[L_RELU], layer[L_INT8] = int(relu), int(kind == "int8")
            values += [weights.reshape(-1), bias, scale]
            offset += weights.size + 2 * fan_out
            layers.append(layer)
            kinds.append(kind)
            fan_in = fan_out
        softmax = self.take("Softmax", current)
        axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
        if axis not in (1, -1) or softmax.output[0] != OUTPUT_NAME or fan_in != N_CLASSES:
            raise self.fail(f"a softmax over {fan_in} outputs (axis {axis}) into "
                            f"{softmax.output[0]!r}: need {N_CLASSES} into {OUTPUT_NAME!r}")  # fmt: skip
        if self.pos != len(self.nodes) or not layers:
            raise self.fail("nodes after the softmax, or no layer")
        numbers = np.concatenate(values).astype(np.float32)
        numbers[np.abs(numbers) < np.finfo(np.float32).tiny] = 0.0  # subnormals: see module doc
        return MLPArrays(
            numbers,
            np.asarray(layers, dtype=np.int64).reshape(-1, LAYER_FIELDS),
            tuple(kinds),
        )

    def matmul(self, current: str) -> tuple[str, np.ndarray, np.ndarray, str]:
        """(kind, weights float32 [K, N], per-column scale float32 [N], output) of one layer."""
        op = self.peek()
        if op == "MatMul":
            node = self.take("MatMul", current)
            w = self.const(node.input[1], np.float32)
            return "fp32", w, np.ones(w.shape[1], np.float32), node.output[0]
        if op == "MatMulNBits":
            node = self.take("MatMulNBits", current)
            return "int4", self.dequantize_nbits(node), np.ones(self._n(node), np.float32), \
                node.output[0]  # fmt: skip
        if op == "DynamicQuantizeLinear":
            return self.matmul_integer(current)
        raise self.fail("expected MatMul, MatMulNBits or DynamicQuantizeLinear")

    def _n(self, node: onnx.NodeProto) -> int:
        return int(next(a.i for a in node.attribute if a.name == "N"))

    def dequantize_nbits(self, node: onnx.NodeProto) -> np.ndarray:
        """``com.microsoft.MatMulNBits`` weights as float32 [K, N]: ``(q - zero) * scale`` per
        ``block_size`` rows of K, low nibble first; zero point 8 unless given."""
        attrs = {a.name: a.i for a in node.attribute}
        k, n, bits, block = (
            attrs.get("K"),
            attrs.get("N"),
            attrs.get("bits"),
            attrs.get("block_size"),
        )
        if bits != 4 or k is None or n is None or block is None:
            raise self.fail(f"MatMulNBits with bits = {bits}: only 4-bit weights")
        blocks = -(-k // block)
        packed = self.const(node.input[1], np.uint8).reshape(n, blocks, block // 2)
        scales = self.const(node.input[2], np.float32).reshape(n, blocks)
        q = np.empty((n, blocks, block), np.float32)
        q[:, :, 0::2] = packed & 0x0F
        q[:, :, 1::2] = packed >> 4
        if len(node.input) > 3 and node.input[3]:
            zp = self.const(node.input[3], np.uint8).reshape(n, -1)
            zero = np.empty((n, zp.shape[1] * 2), np.float32)
            zero[:, 0::2], zero[:, 1::2] = zp & 0x0F, zp >> 4
            zero = zero[:, :blocks]
        else:
            zero = np.full((n, blocks), 8.0, np.float32)
        w = (q - zero[:, :, None]) * scales[:, :, None]  # float32, as ONNX Runtime dequantises
        return np.ascontiguousarray(w.reshape(n, blocks * block)[:, :k].T)

    def matmul_integer(self, current: str) -> tuple[str, np.ndarray, np.ndarray, str]:
        """``DynamicQuantizeLinear`` -> ``Mul`` (scales) -> ``MatMulInteger`` -> ``Cast`` -> ``Mul``."""
        dql = self.take("DynamicQuantizeLinear", current)
        scales = self.take("Mul")
        if dql.output[1] not in scales.input:
            raise self.fail("expected the product of the activation and weight scales")
        w_scale_name = next(i for i in scales.input if i != dql.output[1])
        mm = self.take("MatMulInteger", dql.output[0])
        if list(mm.input[2:3]) != [dql.output[2]]:
            raise self.fail("MatMulInteger without the activations' zero point")
        wq = self.const(mm.input[1], np.int64)
        w_zero = self.const(mm.input[3], np.int64) if len(mm.input) > 3 else np.zeros(1, np.int64)
        w = (wq - w_zero.reshape(1, -1)).astype(np.float32)  # broadcast: per tensor or column
        cast = self.take("Cast", mm.output[0])
        mul = self.take("Mul", cast.output[0])
        if scales.output[0] not in mul.input:
            raise self.fail("expected the integer sums times the scales' product")
        bound = 255 * float(np.abs(w).max(initial=0.0)) * w.shape[0]
        if bound >= FLOAT32_EXACT:
            raise self.fail(f"integer sums up to {bound:.0f} (not exact in float32)")
        w_scale = self.const(w_scale_name, np.float32).reshape(-1)
        scale = np.broadcast_to(w_scale, (w.shape[1],)).astype(np.float32)
        return "int8", w, scale, mul.output[0]
