"""MLServer custom runtime: the signal ONNX model over the KServe-v2 protocol (MLServer only).

Loaded by MLServer from ``model-settings.json`` (``implementation:
app.serving.runtime.OnnxSignalRuntime``, ``parameters.uri``: the ONNX file). It answers
the same tensors as Triton's ONNX Runtime backend: input ``features`` FP32
``[n, N_INPUTS]``, output ``probabilities`` FP32 ``[n, N_CLASSES]``. Every response names
the model file that answered in its parameters (``model_sha256`` of the bytes loaded,
``model_variant`` from the build's manifest beside it), and, like Triton, a request of
more than ``parameters.extra.max_batch_size`` rows is refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters

from app.model.contract import INPUT_NAME, N_INPUTS, OUTPUT_NAME
from app.model.manifest import (
    SHA256_PARAMETER,
    UNKNOWN_VARIANT,
    VARIANT_PARAMETER,
    ModelArtifacts,
    sha256_of,
)


class BadInputError(MLServerError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=400)


class OnnxSignalRuntime(MLModel):
    """ONNX Runtime session per model; inference runs in a worker thread (it drops the GIL)."""

    async def load(self) -> bool:
        params = self.settings.parameters
        if params is None or not params.uri:
            raise MLServerError(f"model {self.name}: parameters.uri must name the ONNX file")
        extra = params.extra or {}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(extra.get("intra_op_threads", 1))
        path = Path(params.uri)
        data = path.read_bytes()
        self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        sha = sha256_of(data)
        artifacts = ModelArtifacts.beside(path)  # a file no manifest knows: its hash says it all
        known = artifacts.identity_of_sha(sha) if artifacts is not None else None
        variant = known.variant if known is not None else UNKNOWN_VARIANT
        # Parameters allows extra fields: they travel as the response's KServe-v2 parameters.
        self._identity = Parameters.model_validate(
            {SHA256_PARAMETER: sha, VARIANT_PARAMETER: variant}
        )
        limit = extra.get("max_batch_size")
        self._max_batch_size = None if limit is None else int(limit)
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
        if self._max_batch_size is not None and x.shape[0] > self._max_batch_size:
            raise BadInputError(  # Triton's words for the same refusal
                f"inference request batch-size must be <= {self._max_batch_size} for "
                f"'{self.name}', got {x.shape[0]}"
            )
        if x.shape[0] >= 1024:
            probs = await asyncio.to_thread(self._run, x)
        else:
            probs = self._run(x)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(OUTPUT_NAME, probs)],
            parameters=self._identity,
        )

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], dtype=np.float32)
