"""The signal model: contract, training, ONNX export, quantisation and Triton repository.

``python -m app.model build [--out DIR]`` builds it; ``ModelArtifacts.load(DIR)`` reads it.
Heavy imports (onnx, the quantisers) stay in the submodules that need them.
"""

from app.model.tensors import CLASSES, INPUT_NAME, MODEL_INPUTS, N_CLASSES, N_INPUTS, OUTPUT_NAME

DEFAULT_MODEL_DIR = "artifacts/model"

__all__ = [
    "CLASSES",
    "DEFAULT_MODEL_DIR",
    "INPUT_NAME",
    "MODEL_INPUTS",
    "N_CLASSES",
    "N_INPUTS",
    "OUTPUT_NAME",
]
