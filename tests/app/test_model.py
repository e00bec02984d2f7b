"""The model build: artefacts, size and agreement targets, Triton repository, quantiser parity."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2

from app.model.__main__ import main as model_cli
from app.model.build import VARIANTS, ModelArtifacts, run_onnx
from app.model.contract import CLASSES, INPUT_NAME, N_INPUTS, OUTPUT_NAME, model_inputs
from app.model.quantization import fake_quant_4bit
from app.model.train import make_dataset
from app.model.triton import InstanceGroup, TritonModelConfig, render_config_pbtxt


def test_build_writes_three_variants_that_meet_the_targets(model: ModelArtifacts) -> None:
    m = model.manifest
    sizes = {v: model.path(v).stat().st_size for v in VARIANTS}
    assert sizes == {v: m["variants"][v]["bytes"] for v in VARIANTS}
    assert 1 - sizes["int4"] / sizes["fp32"] >= 0.75
    assert sizes["int8"] < sizes["fp32"] / 2
    assert m["heldout"]["agreement_with_fp32"]["int4"] >= 0.99
    assert m["heldout"]["agreement_with_fp32"]["int8"] >= 0.98
    # The planted signal is learnt: well above the 1/3 of guessing.
    assert m["heldout"]["accuracy"]["fp32"] > 0.5
    ops = {v: {n.op_type for n in onnx.load(str(model.path(v))).graph.node} for v in VARIANTS}
    assert "MatMul" in ops["fp32"] and "MatMulNBits" not in ops["fp32"]
    assert "MatMulInteger" in ops["int8"]
    assert "MatMulNBits" in ops["int4"] and "MatMul" not in ops["int4"]


def test_manifest_agreement_is_reproducible_from_the_files(model: ModelArtifacts) -> None:
    heldout = make_dataset(8, 1500, seed=1 + 1000)  # the build's held-out set (seed + 1000)
    fp32 = run_onnx(model.path("fp32"), heldout.x).argmax(axis=1)
    int4 = run_onnx(model.path("int4"), heldout.x).argmax(axis=1)
    agreement = float((fp32 == int4).mean())
    assert agreement == pytest.approx(model.manifest["heldout"]["agreement_with_fp32"]["int4"])


def test_models_take_the_contract_tensors(model: ModelArtifacts) -> None:
    for variant in VARIANTS:
        session = ort.InferenceSession(str(model.path(variant)), providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        (out,) = session.get_outputs()
        assert (inp.name, inp.shape[1], out.name, out.shape[1]) == (
            INPUT_NAME, N_INPUTS, OUTPUT_NAME, len(CLASSES)
        )  # fmt: skip
        probs = session.run(None, {INPUT_NAME: np.zeros((5, N_INPUTS), np.float32)})[0]
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_triton_repository_layout_and_config(model: ModelArtifacts) -> None:
    repo = model.triton_repository / model.name
    assert sorted(p.name for p in repo.iterdir()) == ["1", "config.pbtxt"]
    assert (repo / "1" / "model.onnx").read_bytes() == model.path("int4").read_bytes()
    parsed = text_format.Parse((repo / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert parsed.name == model.name and parsed.platform == "onnxruntime_onnx"
    assert parsed.max_batch_size == 256
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(i.name, list(i.dims)) for i in parsed.input] == [(INPUT_NAME, [N_INPUTS])]
    assert [(o.name, list(o.dims)) for o in parsed.output] == [(OUTPUT_NAME, [len(CLASSES)])]


def test_render_config_pbtxt_takes_every_argument() -> None:
    config = TritonModelConfig(
        name="m1",
        max_batch_size=64,
        max_queue_delay_us=250,
        preferred_batch_sizes=(16, 64),
        instance_groups=(
            InstanceGroup(kind="KIND_GPU", count=2, gpus=(0, 1)),
            InstanceGroup(kind="KIND_CPU", count=3),
        ),
    )
    parsed = text_format.Parse(render_config_pbtxt(config), model_config_pb2.ModelConfig())
    assert parsed.max_batch_size == 64
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 250
    assert list(parsed.dynamic_batching.preferred_batch_size) == [16, 64]
    kinds = model_config_pb2.ModelInstanceGroup.Kind
    assert [(g.kind, g.count, list(g.gpus)) for g in parsed.instance_group] == [
        (kinds.Value("KIND_GPU"), 2, [0, 1]),
        (kinds.Value("KIND_CPU"), 3, []),
    ]
    assert parsed.version_policy.latest.num_versions == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_queue_delay_us": -1}, "max_queue_delay_us"),
        ({"preferred_batch_sizes": (512,)}, "preferred_batch_sizes = [512]"),
        ({"instance_groups": ()}, "instance_groups"),
        ({"name": "bad name"}, "name"),
        ({"instance_groups": ({"kind": "KIND_CPU", "gpus": (0,)},)}, "only allowed with kind"),
    ],
)
def test_triton_config_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        TritonModelConfig.model_validate(kwargs)


def _dequantized_by_onnxruntime(w: np.ndarray, block_size: int) -> np.ndarray:
    """What MatMulNBits multiplies by: run the quantised MatMul on the identity matrix."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    k, n = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    q = MatMulNBitsQuantizer(m, bits=4, block_size=block_size, is_symmetric=True)
    q.process()
    session = ort.InferenceSession(
        q.model.model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": np.eye(k, dtype=np.float32)})[0]


@pytest.mark.parametrize("shape", [(6, 40), (128, 128), (100, 3)])
def test_fake_quant_is_exactly_what_matmulnbits_computes(shape: tuple[int, int]) -> None:
    w = (np.random.default_rng(0).standard_normal(shape) * 0.2).astype(np.float32)
    ours = fake_quant_4bit(w, 32)
    np.testing.assert_array_equal(ours, _dequantized_by_onnxruntime(w, 32))
    np.testing.assert_array_equal(fake_quant_4bit(ours, 32), ours)  # snapping is idempotent
    assert np.unique(ours[:32, 0]).size <= 16  # at most 16 levels per block


def test_model_inputs_are_scale_free_and_mark_cold_rows() -> None:
    feats = np.array(
        [
            [101.0, 100.0, 75.0, 0.01, 1.5, 100.0, 0.2],
            [1010.0, 1000.0, 75.0, 0.01, 1.5, 1000.0, 0.2],  # same market, 10x the price
            [101.0, np.nan, 75.0, 0.01, 1.5, 100.0, 0.2],  # ema_slow still warming up
            [101.0, 100.0, 75.0, 0.01, 1.5, np.nan, 0.2],  # any NaN feature: not warm
            [101.0, 100.0, 75.0, np.inf, 1.5, 100.0, 0.2],  # nor an infinite one
            [1e300, 1e-300, 75.0, 0.01, 1.5, 100.0, 0.2],  # nor an input float32 cannot hold
        ]
    )
    x, warm = model_inputs(feats)
    # Changed on purpose (issue 20, finding 4): a NaN VWAP used to count as warm.
    assert warm.tolist() == [True, True, False, False, False, False]
    assert (x[2:] == 0).all()
    np.testing.assert_allclose(x[0], x[1], rtol=1e-6)
    np.testing.assert_allclose(x[0], [0.01, 0.5, 0.01, 1.5, 0.01, 0.2], rtol=1e-6)
    assert (x[2] == 0).all() and x[3][4] == 0.0


def test_build_cli_rejects_bad_options_naming_the_field(capsys: pytest.CaptureFixture) -> None:
    code = model_cli(["build", "--out", "/nonexistent/never", "--max-batch-size", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "triton.max_batch_size = 0" in err and "greater than or equal to 1" in err


def test_manifest_is_json_with_the_training_record(model: ModelArtifacts) -> None:
    m = json.loads((model.root / "manifest.json").read_text())
    assert m["training"]["hidden"] == [256, 256]
    assert m["training"]["parameters"] == 6 * 256 + 256 + 256 * 256 + 256 + 256 * 3 + 3
    assert m["triton"]["config"]["max_queue_delay_us"] == 500
    assert ModelArtifacts.load(model.root).model_version == "signal_mlp/1"
