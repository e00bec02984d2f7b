"""The model build: artefacts, size and agreement targets, Triton repository, quantiser parity."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import structlog
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2

from app.model.__main__ import main as model_cli
from app.model.build import VARIANTS, ModelArtifacts, ModelMismatchError, run_onnx, summary
from app.model.calibration import (
    directions,
    expected_calibration_error,
    fit_direction_threshold,
    fit_temperature,
)
from app.model.contract import (
    CLASSES,
    INPUT_NAME,
    INPUT_TRANSFORM,
    MODEL_INPUTS,
    N_INPUTS,
    OUTPUT_NAME,
    model_inputs,
)
from app.model.quantization import fake_quant_4bit
from app.model.train import make_dataset
from app.model.triton import InstanceGroup, TritonModelConfig, render_config_pbtxt
from app.settings.features import FeatureParams


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
    # Changed on purpose (the signal-quality review): a NaN VWAP used to count as warm.
    assert warm.tolist() == [True, True, False, False, False, False]
    assert (x[2:] == 0).all()
    np.testing.assert_allclose(x[0], x[1], rtol=1e-6)
    np.testing.assert_allclose(x[0], [0.01, 0.5, 0.01, 1.5, 0.01, 0.2], rtol=1e-6)
    assert (x[2] == 0).all() and x[3][4] == 0.0


def test_build_cli_rejects_bad_options_naming_the_field(capsys: pytest.CaptureFixture) -> None:
    code = model_cli(["build", "--out", "/nonexistent/never", "--max-batch-size", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "build options: triton.max_batch_size: Input should be greater than or equal to 1" in err
    assert "(got 0); allowed: >= 1" in err


def test_manifest_is_json_with_the_training_record(model: ModelArtifacts) -> None:
    m = json.loads((model.root / "manifest.json").read_text())
    assert m["training"]["hidden"] == [256, 256]
    assert m["training"]["parameters"] == 6 * 256 + 256 + 256 * 256 + 256 + 256 * 3 + 3
    assert m["triton"]["config"]["max_queue_delay_us"] == 500
    assert ModelArtifacts.load(model.root).model_version == "signal_mlp/1"


def test_manifest_records_the_feature_parameters_and_input_scaling(model: ModelArtifacts) -> None:
    m = model.manifest
    assert m["features"] == FeatureParams().model_dump(mode="json")  # the build's defaults
    scaling = m["input_scaling"]
    assert scaling["transform"] == INPUT_TRANSFORM and scaling["inputs"] == list(MODEL_INPUTS)
    # The scaling recorded is the one inside the served graph (its Sub/Div initialisers).
    graph = {
        i.name: numpy_helper.to_array(i)
        for i in onnx.load(str(model.path("fp32"))).graph.initializer
    }
    np.testing.assert_array_equal(graph["input_mean"], np.float32(scaling["mean"]))
    np.testing.assert_array_equal(graph["input_std"], np.float32(scaling["std"]))
    model.check_serving(FeatureParams())  # the service's defaults fit
    # Training was multi-session: the build says which calendar and tick process.
    assert m["training"]["venue"] == "XNYS" and m["training"]["market"]["halt_rate"] > 0


@pytest.mark.parametrize(
    ("served", "message"),
    [
        (
            {"window": 50},
            "was trained with features.window = 20 but the service is configured with "
            "features.window = 50",
        ),
        (
            {"ema_slow": 100},
            "was trained with features.ema_slow = 26 but the service is configured with "
            "features.ema_slow = 100",
        ),
        (
            {"max_gap_s": 60.0},
            "was trained with features.max_gap_s = 300.0 but the service is configured with "
            "features.max_gap_s = 60.0",
        ),
    ],
)
def test_a_mismatched_manifest_is_refused_naming_both_values(
    model: ModelArtifacts, served: dict, message: str
) -> None:
    with pytest.raises(ModelMismatchError) as err:
        model.check_serving(FeatureParams(**served))
    text = str(err.value)
    assert message in text and str(model.manifest_path) in text and "\n" not in text


def test_a_manifest_without_features_or_with_another_transform_is_refused(
    model: ModelArtifacts,
) -> None:
    old = ModelArtifacts(model.root, {k: v for k, v in model.manifest.items() if k != "features"})
    with pytest.raises(ModelMismatchError, match="records no feature parameters"):
        old.check_serving(FeatureParams())
    other = dict(
        model.manifest, input_scaling={**model.manifest["input_scaling"], "transform": "v1"}
    )
    with pytest.raises(
        ModelMismatchError, match=re.escape("input_scaling.transform is 'v1' but this service")
    ):
        ModelArtifacts(model.root, other).check_serving(FeatureParams())


def test_a_calibrated_models_reported_error_is_reproducible_from_its_files(
    model: ModelArtifacts,
) -> None:
    cal = model.manifest["calibration"]
    heldout = make_dataset(8, 1500, seed=1 + 1000)  # the build's evaluation set (seed + 1000)
    probs = run_onnx(model.path("fp32"), heldout.x)
    assert expected_calibration_error(probs, heldout.y) == pytest.approx(cal["ece_after"]["fp32"])
    # Before: the same model with the temperature taken out again (softmax(T * log p)).
    t = cal["temperature"]
    logits = np.log(probs.astype(np.float64)) * t
    raw = np.exp(logits - logits.max(axis=1, keepdims=True))
    raw /= raw.sum(axis=1, keepdims=True)
    assert expected_calibration_error(raw, heldout.y) == pytest.approx(cal["ece_before"], abs=2e-4)
    # The temperature is the NLL minimiser on the calibration set (fitted there, not here).
    opts = model.manifest["training"]
    calibration = make_dataset(opts["calibration_symbols"], opts["ticks_per_symbol"],
                               seed=opts["seed"] + 2000)  # fmt: skip
    assert len(calibration) == cal["fitted_on"]["samples"]
    z = np.log(run_onnx(model.path("fp32"), calibration.x).astype(np.float64)) * t

    def nll(temperature: float) -> float:
        p = np.exp(z / temperature - (z / temperature).max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return float(-np.log(p[np.arange(len(calibration)), calibration.y]).mean())

    assert nll(t) <= min(nll(t * 1.05), nll(t / 1.05))
    threshold = model.manifest["decision"]["direction_threshold"]
    assert 0.0 <= threshold <= 0.5 and model.direction_threshold == threshold
    text = summary(model)
    assert "expected calibration error" in text and f"{cal['ece_before']:.4f} before" in text


def test_temperature_scaling_repairs_an_overconfident_model() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    true_logits = rng.normal(0, 1.0, (n, 3))
    p = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    overconfident = true_logits * 3.0  # a model three times too sure of itself
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.1)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    before = expected_calibration_error(softmax(overconfident), y)
    after = expected_calibration_error(softmax(overconfident / t), y)
    assert before > 0.1 and after < 0.02


def test_the_direction_rule_uses_the_threshold() -> None:
    # Binary fractions, so the strengths (-0.25, 0.5, 0, 0.25) are exact.
    probs = np.array(
        [[0.5, 0.25, 0.25], [0.125, 0.25, 0.625], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]]
    )
    assert directions(probs, None).tolist() == [0, 2, 1, 2]  # argmax without a threshold
    assert directions(probs, 0.3).tolist() == [1, 2, 1, 1]  # |strength| <= 0.3: flat
    y = np.array([1, 2, 1, 1])
    assert fit_direction_threshold(probs, y) == 0.25  # the smallest of the best


def test_serve_refuses_a_model_trained_with_other_features(
    model: ModelArtifacts, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`python -m app serve` with features.window = 50 and a model trained with 20: exit 2 and
    one line naming both values, before anything listens."""
    from app.__main__ import main as app_cli

    config = tmp_path / "service.yaml"
    config.write_text("features:\n  window: 50\n")
    try:
        code = app_cli(["serve", "--config", str(config), "--model-dir", str(model.root),
                        "--port", "0"])  # fmt: skip
    finally:
        structlog.reset_defaults()  # serve pointed the JSON logs at this test's captured stdout
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "features.window = 20" in err and "features.window = 50" in err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: "{not json", "not a JSON manifest"),
        (lambda m: b"\x89PNG\x00\xff", "not a JSON manifest"),
        (lambda m: "[1, 2]", "needs a string name, an integer version"),
        (lambda m: {**m, "version": "one"}, "needs a string name, an integer version"),
        (lambda m: {**m, "variants": {}}, "non-empty variants object"),
        (lambda m: {**m, "variants": {"int8": {"path": 3}}}, "variants.int8 needs a string"),
    ],
)
def test_a_damaged_manifest_is_one_model_error_naming_it(
    model: ModelArtifacts, tmp_path: Path, damage, message: str
) -> None:
    manifest = json.loads(model.manifest_path.read_text())
    content = damage(manifest)
    target = tmp_path / model.manifest_path.name
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ModelMismatchError, match=re.escape(str(target)) + ".*" + message):
        ModelArtifacts.load(tmp_path)


def test_a_variant_the_build_lacks_is_a_model_error(model: ModelArtifacts, tmp_path: Path) -> None:
    manifest = json.loads(model.manifest_path.read_text())
    manifest["variants"] = {"fp32": manifest["variants"]["fp32"]}
    (tmp_path / model.manifest_path.name).write_text(json.dumps(manifest))
    with pytest.raises(ModelMismatchError, match=r"no int8 variant in this build \(built: fp32\)"):
        ModelArtifacts.load(tmp_path).path("int8")
