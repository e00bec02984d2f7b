"""Quantised variants of the fp32 ONNX model: int8 dynamic and 4-bit weight-only.

``fake_quant_4bit`` computes exactly the weights ONNX Runtime's ``MatMulNBits`` sees
after ``MatMulNBitsQuantizer`` (symmetric, blockwise along the input dimension): the
tests check it against the real quantiser. Training uses it for quantisation-aware
distillation; since symmetric 4-bit quantisation of already-snapped weights is
idempotent, the quantiser then packs the student without further loss.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

INT4_BLOCK_SIZE = 32


def fake_quant_4bit(w: np.ndarray, block_size: int = INT4_BLOCK_SIZE) -> np.ndarray:
    """``w`` [K, N] quantised to signed 4 bits per ``block_size`` rows of K and back."""
    k, n = w.shape
    blocks = -(-k // block_size)
    padded = np.zeros((blocks * block_size, n), dtype=np.float32)
    padded[:k] = w
    b = padded.reshape(blocks, block_size, n)
    # MatMulNBits symmetric: scale = (the value of largest magnitude) / -8, q in [0, 15].
    extreme = np.take_along_axis(b, np.abs(b).argmax(axis=1)[:, None, :], axis=1)[:, 0, :]
    scale = (extreme / np.float32(-8.0)).astype(np.float32)
    safe = np.where(scale == 0, np.float32(1.0), scale)
    q = np.clip(np.round(b / safe[:, None, :]) + 8, 0, 15)
    return ((q - 8) * scale[:, None, :]).reshape(blocks * block_size, n)[:k].astype(np.float32)


class _DropPreprocessingAdvice(logging.Filter):
    """quantize_dynamic advises shape pre-processing on every call; this graph has no use for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    """int8 weights, activations quantised per call (``quantize_dynamic``).

    Weights use 7 bits (``reduce_range``): on x86 CPUs without VNNI, ONNX Runtime's u8 x s8
    kernel (vpmaddubsw) adds each pair of products in a saturating int16, which 8-bit weights
    overflow (255 * 127 * 2 > 32767); with 7 bits every sum is exact on every CPU, as the fused
    path computes it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    advice = _DropPreprocessingAdvice()
    root.addFilter(advice)
    try:
        quantize_dynamic(
            fp32_path,
            out_path,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            reduce_range=True,
        )
    finally:
        root.removeFilter(advice)


def quantize_int4(
    model: onnx.ModelProto, out_path: Path, *, block_size: int = INT4_BLOCK_SIZE
) -> None:
    """Every MatMul of ``model`` as a 4-bit ``com.microsoft.MatMulNBits`` node."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # The quantiser logs each node at INFO; the build prints its own summary.
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True)
    quantizer.process()
    with tempfile.TemporaryDirectory() as tmp:  # the quantiser may write side files
        staged = Path(tmp) / "model.onnx"
        # process() leaves an ONNXModel wrapper (typed as ModelProto upstream) in .model.
        wrapper: Any = quantizer.model
        wrapper.save_model_to_file(str(staged), use_external_data_format=False)
        out_path.write_bytes(staged.read_bytes())
