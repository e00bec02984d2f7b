"""ONNX export of the MLP, written with ``onnx.helper`` (no deep-learning framework).

The graph standardises the inputs, then ``MatMul + Add (+ Relu)`` per layer, then
``Softmax``. Weights stay in MatMul nodes, the op both ONNX Runtime quantisers rewrite
(see ``app.model.quantization``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.model.contract import CLASSES, INPUT_NAME, MODEL_INPUTS, N_CLASSES, N_INPUTS, OUTPUT_NAME
from app.model.train import MLP

# Opset 17 runs on every ONNX Runtime the platform deploys (Triton's included).
OPSET = 17
IR_VERSION = 8


def to_onnx(mlp: MLP, *, name: str, version: str) -> onnx.ModelProto:
    """The fp32 graph of ``mlp`` with a dynamic batch dimension."""
    initializers = [
        numpy_helper.from_array(mlp.mean.astype(np.float32), "input_mean"),
        numpy_helper.from_array(mlp.std.astype(np.float32), "input_std"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "input_mean"], ["centred"], name="centre"),
        helper.make_node("Div", ["centred", "input_std"], ["h0"], name="scale"),
    ]
    last = len(mlp.weights) - 1
    for i, (w, b) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
        initializers += [
            numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
            numpy_helper.from_array(b.astype(np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"mm{i}"], name=f"matmul{i}"),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"], name=f"bias{i}"),
        ]
        if i < last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i + 1}"], name=f"relu{i}"))
    nodes.append(helper.make_node("Softmax", [f"z{last}"], [OUTPUT_NAME], axis=1, name="softmax"))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", N_INPUTS])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", N_CLASSES])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="signal-platform",
        producer_version=version,
        model_version=int(version) if version.isdigit() else 0,
        doc_string=f"{name}: features ({', '.join(MODEL_INPUTS)}) -> P({', '.join(CLASSES)})",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"name": name, "version": version})
    onnx.checker.check_model(model, full_check=True)
    return model
