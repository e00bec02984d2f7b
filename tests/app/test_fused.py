"""The fused in-process path (features and the model in one compiled call) against the
reference path: the engine, then ONNX Runtime on the model inputs."""

from __future__ import annotations

import asyncio
import functools
import importlib
import itertools
import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.batcher import MicroBatcher
from app.config import FeatureConfig
from app.features import FeatureEngine
from app.fused import FusedBackend
from app.inference import LocalOnnxBackend, in_process_backend
from app.model.build import VARIANTS, ModelArtifacts, ModelMismatchError
from app.model.contract import INPUT_NAME, N_INPUTS, OUTPUT_NAME, model_inputs
from app.model.train import make_dataset
from app.model.weights import UnsupportedModelError
from app.pipeline import SignalPipeline, last_warm_row_per_symbol, tick_to_signal_sync
from app.signals import signals_from_probabilities
from app.synthetic import synthetic_ticks
from tests.app.conftest import TEST_BUILD

TOLERANCE = 1e-5  # |fused - ONNX Runtime| for every probability
N_SYMBOLS = 24
ENGINE = FeatureConfig(n_symbols=N_SYMBOLS, symbol_venues={s: "XLON" for s in range(0, 24, 3)})


@pytest.fixture(scope="module")
def heldout() -> np.ndarray:
    """The build's held-out samples (its seed + 1000), as the build evaluates them."""
    o = TEST_BUILD
    return make_dataset(o.heldout_symbols, o.ticks_per_symbol, seed=o.seed + 1000,
                        features=o.features, market=o.market, venue=o.venue).x  # fmt: skip


@pytest.fixture(scope="module")
def ticks():
    ticks, _ = synthetic_ticks(N_SYMBOLS, 300, seed=5)
    return ticks


@functools.cache
def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _onnxruntime(path: Path, x: np.ndarray, *, row_by_row: bool) -> np.ndarray:
    session = _session(path)
    if not row_by_row:
        return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])
    return np.concatenate(
        [
            np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 1]})[0])
            for i in range(len(x))
        ]
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_probabilities_equal_onnxruntime_on_the_heldout_samples(
    model: ModelArtifacts, heldout: np.ndarray, variant: str
) -> None:
    fused = FusedBackend(model.path(variant), model.model_version)  # type: ignore[arg-type]
    ours = fused.infer_sync(heldout)
    # int8 quantises each call's activations over the call's range: a one-row call is what
    # a tick's signal is (the fused path evaluates row by row), so compare one-row calls.
    reference = _onnxruntime(model.path(variant), heldout, row_by_row=variant == "int8")  # type: ignore[arg-type]
    assert len(heldout) > 5000
    worst = float(np.abs(ours - reference).max())
    assert worst <= TOLERANCE, f"{variant}: fused differs from ONNX Runtime by {worst:.2e}"
    assert fused.mlp.kinds == (variant,) * 3  # read from that variant's own operators
    local = LocalOnnxBackend(model.path(variant), model.model_version)  # type: ignore[arg-type]
    assert fused.identity == local.identity and fused.identity.variant == variant
    served = asyncio.run(fused.infer(heldout))  # as the batcher calls it (here on a thread)
    np.testing.assert_array_equal(served.probabilities, ours)
    assert (served.identity, served.backend) == (local.identity, "local")


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_one_call_from_ticks_to_signals_equals_the_engine_then_onnxruntime(
    model: ModelArtifacts, ticks, variant: str
) -> None:
    fused = FusedBackend(model.path(variant), model.model_version)  # type: ignore[arg-type]
    a, b = FeatureEngine.from_config(ENGINE), FeatureEngine.from_config(ENGINE)
    threshold = model.direction_threshold
    assert threshold is not None
    cuts = np.r_[0, np.sort(np.random.default_rng(3).choice(len(ticks), 60, replace=False)),
                 len(ticks)]  # fmt: skip
    signals = 0
    for lo, hi in itertools.pairwise(cuts):
        cols = (ticks.symbol[lo:hi], ticks.price[lo:hi], ticks.size[lo:hi], ticks.ts_ns[lo:hi])
        batch = fused.run(a, *cols)
        np.testing.assert_array_equal(batch.symbol, cols[0][batch.rows])
        np.testing.assert_array_equal(batch.ts_ns, cols[3][batch.rows])
        features = b.update(*cols)
        np.testing.assert_array_equal(batch.features, features)  # the engine's own bits
        np.testing.assert_array_equal(batch.reasons, b.last_reasons)
        inputs, warm = model_inputs(features)
        np.testing.assert_array_equal(batch.inputs, inputs)
        np.testing.assert_array_equal(batch.warm, warm)
        rows = last_warm_row_per_symbol(cols[0], warm)
        np.testing.assert_array_equal(batch.rows, rows)  # the pipeline's rule
        if not rows.size:
            continue
        signals += rows.size
        probs = _onnxruntime(model.path(variant), inputs[rows], row_by_row=True)  # type: ignore[arg-type]
        assert float(np.abs(batch.probabilities - probs).max()) <= TOLERANCE
        ref = signals_from_probabilities(cols[0][rows], cols[3][rows], probs, "",
                                         direction_threshold=threshold)  # fmt: skip
        np.testing.assert_allclose(batch.strength, ref.strength, atol=2 * TOLERANCE)
        np.testing.assert_allclose(batch.confidence, ref.confidence, atol=TOLERANCE)
        clear = np.abs(np.abs(ref.strength) - threshold) > 4 * TOLERANCE  # not on the edge
        np.testing.assert_array_equal(batch.direction[clear], ref.direction[clear])
    assert signals > 500


def test_tick_to_signal_names_the_model_and_decides_in_compiled_code(
    model: ModelArtifacts, ticks
) -> None:
    fused = FusedBackend(model.path("int4"), model.model_version)
    local = LocalOnnxBackend(model.path("int4"), model.model_version)
    a, b = FeatureEngine.from_config(ENGINE), FeatureEngine.from_config(ENGINE)
    n = 4000
    cols = (ticks.symbol[:n], ticks.price[:n], ticks.size[:n], ticks.ts_ns[:n])
    ours = tick_to_signal_sync(a, fused, *cols)
    theirs = tick_to_signal_sync(b, local, *cols)
    assert len(ours) == len(theirs) > 0
    np.testing.assert_array_equal(ours.symbol, theirs.symbol)
    np.testing.assert_array_equal(ours.ts_ns, theirs.ts_ns)
    np.testing.assert_allclose(ours.confidence, theirs.confidence, atol=TOLERANCE)
    identity = (ours.model_version, ours.model_variant, ours.model_sha256, ours.backend)
    assert identity == (theirs.model_version, "int4", model.variants["int4"]["sha256"], "local")


def test_the_fused_path_allocates_nothing_per_tick(model: ModelArtifacts, ticks) -> None:
    """100,000 ticks one by one through the compiled path, written into its buffers as a
    decoder would: no memory kept, no more taken at the peak than for 1,000 of them, and not
    one allocation by Numba (the compiled code, or its dispatcher adapting arguments)."""
    from numba.core.runtime.nrt import rtsys

    nrt = importlib.import_module("numba.core.runtime._nrt_python")  # NRT's statistics switch

    fused = FusedBackend(model.path("fp32"), model.model_version)
    engine = FeatureEngine.from_config(ENGINE)
    n = len(ticks)
    fused.run(engine, ticks.symbol, ticks.price, ticks.size, ticks.ts_ns)  # warm, compiled
    path = fused.bind(engine)
    step = int(np.diff(ticks.ts_ns).max()) + 1
    source = (ticks.symbol, ticks.price, ticks.size, ticks.ts_ns)

    def run(count: int, offset: int) -> tuple[int, int, int, int]:
        made = 0
        nrt.memsys_enable_stats()
        before = rtsys.get_allocation_stats()
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            for i in range(count):
                j = i % n
                path.symbol[0], path.price[0], path.size[0] = (
                    source[0][j],
                    source[1][j],
                    source[2][j],
                )
                path.ts_ns[0] = (
                    source[3][j] + offset + (i // n) * (source[3][-1] - source[3][0] + step)
                )
                made += path.step(1)
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            after = rtsys.get_allocation_stats()
            nrt.memsys_disable_stats()
        return current - base, peak - base, after.alloc - before.alloc, made

    span = (ticks.ts_ns[-1] - ticks.ts_ns[0] + step) * 200
    _, peak_small, _, _ = run(1_000, span)
    kept, peak, numba_allocations, made = run(100_000, 2 * span)
    assert made > 50_000  # most ticks made a signal: the model ran for them
    assert numba_allocations == 0
    assert kept <= 1024, f"{kept} bytes kept after 100,000 ticks"
    assert peak <= peak_small + 1024, f"peak {peak} bytes for 100,000 ticks, {peak_small} for 1,000"
    assert not path.last.reasons.any()


def _tanh_model(path: Path) -> None:
    w = numpy_helper.from_array(np.ones((N_INPUTS, 3), np.float32), "w0")
    graph = helper.make_graph(
        [
            helper.make_node("Sub", [INPUT_NAME, "mean"], ["c"]),
            helper.make_node("Div", ["c", "std"], ["h0"]),
            helper.make_node("MatMul", ["h0", "w0"], ["m0"], name="matmul0"),
            helper.make_node("Tanh", ["m0"], ["t0"], name="squash"),
            helper.make_node("Softmax", ["t0"], [OUTPUT_NAME], axis=1),
        ],
        "odd",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", N_INPUTS])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(np.zeros(N_INPUTS, np.float32), "mean"),
                     numpy_helper.from_array(np.ones(N_INPUTS, np.float32), "std"), w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_a_graph_it_cannot_evaluate_is_refused_naming_the_node(tmp_path: Path) -> None:
    path = tmp_path / "odd.onnx"
    _tanh_model(path)
    expected = r"odd\.onnx: node 3 \(Tanh 'squash'\): expected Add.*model\.backend = onnxruntime"
    with pytest.raises(UnsupportedModelError, match=expected):
        FusedBackend(path, "odd/1")
    assert LocalOnnxBackend(path, "odd/1").infer_sync(
        np.zeros((1, N_INPUTS), np.float32)
    ).shape == (1, 3)


def test_input_scaling_other_than_the_manifests_is_refused(
    model: ModelArtifacts, tmp_path: Path
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model.root, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["input_scaling"]["std"][2] *= 2
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelMismatchError, match=r"input_scaling\.std = .* but the ONNX graph"):
        FusedBackend(copy / "fp32" / "model.onnx", model.model_version)


def test_run_refuses_columns_of_other_lengths(model: ModelArtifacts) -> None:
    fused = FusedBackend(model.path("fp32"), model.model_version)
    engine = FeatureEngine(4)
    with pytest.raises(ValueError, match="size: 2 values but symbol has 3: lengths must match"):
        fused.run(engine, np.zeros(3, np.int32), np.ones(3), np.ones(2), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"n = 2000: must be in \[0, 1024\]"):
        fused.bind(engine).step(2000)
    # Other types are converted (int64 symbols, integer prices), as FeatureEngine.update does.
    ints = np.array([0, 1])
    assert len(fused.run(engine, ints, ints + 10, ints + 1, ints + 5).rows) == 0
    assert fused.bind(engine).last.reasons.tolist() == [0, 0]


def test_the_pipeline_serves_the_same_signals_with_either_in_process_backend(
    model: ModelArtifacts, ticks
) -> None:
    async def serve(backend) -> list:
        batcher = MicroBatcher(backend)
        pipeline = SignalPipeline(FeatureEngine.from_config(ENGINE), batcher,
                                  clock_ns=lambda: int(ticks.ts_ns[-1]))  # fmt: skip
        results = []
        for lo in range(0, 3000, 150):
            cols = (ticks.symbol[lo : lo + 150], ticks.price[lo : lo + 150],
                    ticks.size[lo : lo + 150], ticks.ts_ns[lo : lo + 150])  # fmt: skip
            results.append(await pipeline.finish(pipeline.apply(*cols)))
        await batcher.close()
        return results

    fused = in_process_backend(model, "fp32", "fused")
    assert isinstance(fused, FusedBackend)
    ours = asyncio.run(serve(fused))
    theirs = asyncio.run(serve(in_process_backend(model, "fp32", "onnxruntime")))
    assert sum(len(r.signals) for r in ours) > 200
    for a, b in zip(ours, theirs, strict=True):
        assert a.seq == b.seq
        np.testing.assert_array_equal(a.reasons, b.reasons)
        np.testing.assert_array_equal(a.signals.symbol, b.signals.symbol)
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_allclose(a.signals.confidence, b.signals.confidence, atol=TOLERANCE)
        assert (a.signals.backend, a.signals.model_sha256) == (b.signals.backend,
                                                               b.signals.model_sha256)  # fmt: skip
    with pytest.raises(ValueError, match="backend = 'tvm': must be one of fused, onnxruntime"):
        in_process_backend(model, "fp32", "tvm")
