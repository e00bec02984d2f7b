"""MLServer custom runtime: the signal ONNX model over the KServe-v2 protocol (MLServer only).

Loaded by MLServer from ``model-settings.json`` (``implementation:
app.serving.runtime.OnnxSignalRuntime``, ``parameters.uri``: the ONNX file). It answers
the same tensors as Triton's ONNX Runtime backend: input ``features`` FP32
``[n, N_INPUTS]``, output ``probabilities`` FP32 ``[n, N_CLASSES]``.
"""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse

from app.model.contract import INPUT_NAME, N_INPUTS, OUTPUT_NAME


class BadInputError(MLServerError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=400)


class OnnxSignalRuntime(MLModel):
    """ONNX Runtime session per model; inference runs in a worker thread (it drops the GIL)."""

    async def load(self) -> bool:
        params = self.settings.parameters
        if params is None or not params.uri:
            raise MLServerError(f"model {self.name}: parameters.uri must name the ONNX file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int((params.extra or {}).get("intra_op_threads", 1))
        self._session = ort.InferenceSession(
            params.uri, options, providers=["CPUExecutionProvider"]
        )
        self.ready = True
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensor = next((t for t in payload.inputs if t.name == INPUT_NAME), None)
        if tensor is None:
            names = [t.name for t in payload.inputs]
            raise BadInputError(f"inputs {names}: expected a tensor named {INPUT_NAME!r}")
        x = np.ascontiguousarray(NumpyCodec.decode_input(tensor), dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != N_INPUTS or x.shape[0] < 1:
            raise BadInputError(
                f"{INPUT_NAME}: shape {list(x.shape)}: must be [n >= 1, {N_INPUTS}]"
            )
        if x.shape[0] >= 1024:
            probs = await asyncio.to_thread(self._run, x)
        else:
            probs = self._run(x)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(OUTPUT_NAME, probs)],
        )

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], dtype=np.float32)
