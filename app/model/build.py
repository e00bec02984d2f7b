"""The model build: train, export fp32/int8/4-bit, check the targets, write the repositories.

``build_model`` is what ``python -m app.model build`` runs. Everything it writes lives
under one output folder, described by ``manifest.json``::

    fp32/model.onnx  int8/model.onnx  int4/model.onnx  manifest.json
    triton/<name>/config.pbtxt  triton/<name>/<version>/model.onnx

The training data is the session-aware synthetic process (``app.synthetic``) through the
real ``FeatureEngine`` with the build's ``FeatureParams``; the manifest records those
parameters and the model-input transform and scaling, and the service refuses to serve
with others (``ModelArtifacts.check_serving``). The teacher is calibrated by temperature
scaling on a held-out calibration set, which also fits the direction threshold; the
expected calibration error on the held-out evaluation set is reported before and after.
The 4-bit variant is quantisation-aware distilled from the calibrated fp32 model (the
plain post-training 4-bit quantisation's agreement is reported next to it).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.model.calibration import (
    ECE_BINS,
    directions,
    expected_calibration_error,
    fit_direction_threshold,
    fit_temperature,
)
from app.model.contract import CLASSES, INPUT_NAME, INPUT_TRANSFORM, MODEL_INPUTS, OUTPUT_NAME
from app.model.export import to_onnx
from app.model.manifest import (
    MANIFEST,
    VARIANTS,
    ModelArtifacts,
    ModelIdentity,
    ModelMismatchError,
    Variant,
    sha256_of,
)
from app.model.quantization import INT4_BLOCK_SIZE, fake_quant_4bit, quantize_int4, quantize_int8
from app.model.train import MLP, accuracy, distill_quantized, make_dataset, train_mlp
from app.model.triton import InstanceGroup, TritonModelConfig, write_model_repository
from app.sessions import check_venue
from app.settings.features import DEFAULT_VENUE, FeatureParams
from app.synthetic import TRAINING_MARKET, MarketParams

DRIFT_BINS = 10  # training deciles of each model input: the reference of the drift statistic
MIN_INT4_REDUCTION = 0.75
MIN_AGREEMENT = 0.99


class BuildOptions(BaseModel):
    """Everything that determines the built model; the same options give the same bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(default="signal_mlp", pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = Field(default=1, ge=1)
    seed: int = 1
    train_symbols: int = Field(default=48, ge=1)
    # Held-out sets: evaluation (accuracy, agreement, ECE) and calibration (temperature and
    # threshold); as broad as training, since symbols differ more than ticks of one symbol.
    heldout_symbols: int = Field(default=48, ge=1)
    calibration_symbols: int = Field(default=48, ge=1)
    ticks_per_symbol: int = Field(default=2500, ge=100)  # ~7 h of trading at the default rate
    features: FeatureParams = FeatureParams()
    venue: str = DEFAULT_VENUE  # the exchange calendar the training series trade on
    market: MarketParams = TRAINING_MARKET
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = Field(default=6, ge=1)
    qat_epochs: int = Field(default=3, ge=1)
    int4_block_size: int = Field(default=INT4_BLOCK_SIZE, ge=16)
    triton_variant: Variant = "int4"
    triton: TritonModelConfig = TritonModelConfig()

    @field_validator("venue")
    @classmethod
    def _known_venue(cls, value: str) -> str:
        return check_venue(value)


class BuildTargetError(RuntimeError):
    """The built model misses a size or agreement target."""


def build_model(out: Path, options: BuildOptions | None = None, *, log=print) -> ModelArtifacts:
    """Train, calibrate, export, quantise and check; write everything under ``out``."""
    opts = options or BuildOptions()
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = {"features": opts.features, "market": opts.market, "venue": opts.venue}
    train = make_dataset(opts.train_symbols, opts.ticks_per_symbol, seed=opts.seed, **data)
    heldout = make_dataset(opts.heldout_symbols, opts.ticks_per_symbol, seed=opts.seed + 1000,
                           **data)  # fmt: skip
    calibration_set = make_dataset(opts.calibration_symbols, opts.ticks_per_symbol,
                                   seed=opts.seed + 2000, **data)  # fmt: skip
    raw = train_mlp(train, hidden=opts.hidden, epochs=opts.epochs, seed=opts.seed)
    temperature = fit_temperature(raw.logits(calibration_set.x), calibration_set.y)
    teacher = _with_temperature(raw, temperature)
    threshold = fit_direction_threshold(teacher.predict_proba(calibration_set.x),
                                        calibration_set.y)  # fmt: skip

    def quant(w: np.ndarray) -> np.ndarray:
        return fake_quant_4bit(w, opts.int4_block_size)

    student = distill_quantized(teacher, train.x, quant, epochs=opts.qat_epochs, seed=opts.seed)

    paths = {v: out / v / "model.onnx" for v in VARIANTS}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    version = str(opts.version)
    onnx.save(to_onnx(teacher, name=opts.name, version=version), paths["fp32"])
    quantize_int8(paths["fp32"], paths["int8"])
    quantize_int4(
        to_onnx(student, name=opts.name, version=version),
        paths["int4"],
        block_size=opts.int4_block_size,
    )
    ptq_path = out / "int4" / "ptq.onnx"  # plain post-training 4-bit, for comparison only
    quantize_int4(to_onnx(teacher, name=opts.name, version=version), ptq_path,
                  block_size=opts.int4_block_size)  # fmt: skip

    probs = {v: run_onnx(paths[v], heldout.x) for v in VARIANTS}
    ptq_probs = run_onnx(ptq_path, heldout.x)
    ptq_path.unlink()
    fp32_class = probs["fp32"].argmax(axis=1)
    sizes = {v: paths[v].stat().st_size for v in VARIANTS}
    agreement = {v: float((probs[v].argmax(axis=1) == fp32_class).mean()) for v in VARIANTS}
    reduction = 1.0 - sizes["int4"] / sizes["fp32"]
    uncalibrated = raw.predict_proba(heldout.x)

    repo_model = write_model_repository(
        out / "triton", paths[opts.triton_variant], opts.triton, version=opts.version
    )
    manifest = {
        "name": opts.name,
        "version": opts.version,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "inputs": list(MODEL_INPUTS),
        "classes": list(CLASSES),
        "features": opts.features.model_dump(mode="json"),
        "input_scaling": {
            "transform": INPUT_TRANSFORM,
            "inputs": list(MODEL_INPUTS),
            "mean": teacher.mean.tolist(),
            "std": teacher.std.tolist(),
        },
        "input_distribution": _input_distribution(train.x),
        "decision": {"rule": "strength", "direction_threshold": threshold},
        "calibration": {
            "method": "temperature",
            "temperature": temperature,
            "fitted_on": {"samples": len(calibration_set), "seed": opts.seed + 2000},
            "ece_bins": ECE_BINS,
            "ece_before": expected_calibration_error(uncalibrated, heldout.y),
            "ece_after": {v: expected_calibration_error(probs[v], heldout.y) for v in VARIANTS},
        },
        "variants": {
            v: {
                "path": f"{v}/model.onnx",
                "bytes": sizes[v],
                "sha256": sha256_of(paths[v].read_bytes()),
            }
            for v in VARIANTS
        },
        "heldout": {
            "samples": len(heldout),
            "accuracy": {v: accuracy(probs[v], heldout.y) for v in VARIANTS},
            "direction_accuracy": {
                v: float((directions(probs[v], threshold) == heldout.y).mean()) for v in VARIANTS
            },
            "agreement_with_fp32": agreement,
            "int4_post_training_agreement": float((ptq_probs.argmax(1) == fp32_class).mean()),
        },
        "int4_size_reduction": reduction,
        "training": {
            "samples": len(train),
            "parameters": teacher.n_parameters,
            **opts.model_dump(mode="json", exclude={"triton"}),
        },
        "triton": {
            "repository": "triton",
            "model": str(repo_model.relative_to(out)),
            "variant": opts.triton_variant,
            "config": opts.triton.model_dump(mode="json"),
        },
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    artifacts = ModelArtifacts(root=out, manifest=manifest)
    log(summary(artifacts))
    failures = []
    if reduction < MIN_INT4_REDUCTION:
        failures.append(f"int4 is {reduction:.1%} smaller than fp32 (target >= 75%)")
    if agreement["int4"] < MIN_AGREEMENT:
        failures.append(f"int4 agrees with fp32 on {agreement['int4']:.2%} (target >= 99%)")
    if failures:
        raise BuildTargetError("; ".join(failures))
    return artifacts


def _with_temperature(mlp: MLP, temperature: float) -> MLP:
    """``mlp`` with its logits divided by ``temperature`` (folded into the last layer)."""
    scaled = copy.deepcopy(mlp)
    scaled.weights[-1] = (scaled.weights[-1] / np.float32(temperature)).astype(np.float32)
    scaled.biases[-1] = (scaled.biases[-1] / np.float32(temperature)).astype(np.float32)
    return scaled


def _input_distribution(x: np.ndarray) -> dict[str, list]:
    """Each model input's training deciles (inner edges) and the share of rows in each bin."""
    qs = np.linspace(0, 1, DRIFT_BINS + 1)[1:-1]
    edges = [np.unique(np.quantile(x[:, i], qs)).tolist() for i in range(x.shape[1])]
    shares = [
        (np.bincount(np.searchsorted(e, x[:, i], side="right"), minlength=len(e) + 1)
         / x.shape[0]).tolist()
        for i, e in enumerate(edges)
    ]  # fmt: skip
    return {"inputs": list(MODEL_INPUTS), "edges": edges, "shares": shares}


def run_onnx(path: Path, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Class probabilities of ``x`` from the ONNX model at ``path`` (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    parts = [
        np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch]})[0])
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(parts)


def summary(artifacts: ModelArtifacts) -> str:
    m = artifacts.manifest
    held = m["heldout"]
    lines = [f"model {artifacts.model_version} in {artifacts.root} ({m['build_seconds']} s)"]
    for v in VARIANTS:
        lines.append(
            f"  {v:<5} {m['variants'][v]['bytes']:>8,} bytes  "
            f"accuracy {held['accuracy'][v]:.2%}  agreement with fp32 {held['agreement_with_fp32'][v]:.2%}"
        )
    lines.append(
        f"  int4 is {m['int4_size_reduction']:.1%} smaller than fp32 (target >= 75%); "
        f"agreement {held['agreement_with_fp32']['int4']:.2%} on {held['samples']:,} held-out "
        f"samples (target >= 99%; plain post-training 4-bit: {held['int4_post_training_agreement']:.2%})"
    )
    cal = m["calibration"]
    lines.append(
        f"  calibration: temperature {cal['temperature']:.3f}; expected calibration error "
        f"{cal['ece_before']:.4f} before, {cal['ece_after']['fp32']:.4f} after (fp32; int8 "
        f"{cal['ece_after']['int8']:.4f}, int4 {cal['ece_after']['int4']:.4f}); direction "
        f"threshold {m['decision']['direction_threshold']:.3f} on P(up) - P(down)"
    )
    lines.append(
        f"  triton repository: {artifacts.root / m['triton']['model']} ({m['triton']['variant']})"
    )
    return "\n".join(lines)


def ensure_model(root: Path, options: BuildOptions | None = None, *, log=print) -> ModelArtifacts:
    """The model at ``root``, built first if it is not there."""
    try:
        return ModelArtifacts.load(root)
    except FileNotFoundError:
        log(f"no model in {root}: building it (about a minute)")
        return build_model(root, options, log=log)


__all__ = [
    "VARIANTS",
    "BuildOptions",
    "BuildTargetError",
    "InstanceGroup",
    "ModelArtifacts",
    "ModelIdentity",
    "ModelMismatchError",
    "TritonModelConfig",
    "Variant",
    "build_model",
    "ensure_model",
    "run_onnx",
]
