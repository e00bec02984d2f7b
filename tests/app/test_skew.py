"""Training/serving skew: PSI per model input against the manifest's training distribution,
through the micro-batcher the service sends every row through, and sampled row logs."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from app.batcher import MicroBatcher
from app.inference import LocalOnnxBackend
from app.model.build import ModelArtifacts
from app.model.contract import MODEL_INPUTS
from app.model.train import make_dataset
from app.settings.telemetry import TelemetryConfig
from app.skew import SkewMonitor
from app.telemetry import Metrics, configure_logging
from tests.app.conftest import run

VWAP_GAP = MODEL_INPUTS.index("vwap_gap")


@pytest.fixture(autouse=True)
def log_stream() -> io.StringIO:
    """JSON logs into a buffer of this test's own (an earlier test may have closed its stream)."""
    stream = io.StringIO()
    configure_logging(TelemetryConfig(), stream)
    return stream


@pytest.fixture(scope="module")
def served() -> np.ndarray:
    """Rows from the same process the model trained on (another seed)."""
    return make_dataset(16, 1500, seed=78).x


def _psi(model: ModelArtifacts, rows: np.ndarray) -> tuple[dict[str, float], Metrics]:
    metrics = Metrics(CollectorRegistry())
    monitor = SkewMonitor(model, window_rows=rows.shape[0], log_every=10**9, metrics=metrics)
    monitor.observe(rows[: rows.shape[0] // 2])
    assert monitor.last_psi == {}  # the window is not full yet
    monitor.observe(rows[rows.shape[0] // 2 :])
    return monitor.last_psi, metrics


def test_rows_like_training_have_no_drift(model: ModelArtifacts, served: np.ndarray) -> None:
    psi, metrics = _psi(model, served)
    assert set(psi) == set(MODEL_INPUTS)
    assert max(psi.values()) < 0.05, psi
    gauge = metrics.registry.get_sample_value("signal_feature_drift_psi", {"input": "vwap_gap"})
    assert gauge == pytest.approx(psi["vwap_gap"])


def test_a_skewed_input_shows_in_its_own_drift_statistic(
    model: ModelArtifacts, served: np.ndarray
) -> None:
    skewed = served.copy()
    skewed[:, VWAP_GAP] *= 10  # VWAP far from the price: the finding's skew, by construction
    psi, _ = _psi(model, skewed)
    assert psi["vwap_gap"] > 0.25
    assert max(v for k, v in psi.items() if k != "vwap_gap") < 0.05


def test_the_batcher_feeds_the_monitor_and_one_served_row_in_n_is_logged(
    model: ModelArtifacts, served: np.ndarray, log_stream: io.StringIO
) -> None:
    local = LocalOnnxBackend(model.path("fp32"), model.model_version)
    metrics = Metrics(CollectorRegistry())
    monitor = SkewMonitor(model, window_rows=400, log_every=100, metrics=metrics)

    async def scenario() -> None:
        batcher = MicroBatcher(local, max_batch_size=64, max_queue_delay_us=200, monitor=monitor)
        await asyncio.gather(*(batcher.infer(served[i : i + 4]) for i in range(0, 400, 4)))
        await batcher.close()

    run(scenario())
    assert set(monitor.last_psi) == set(MODEL_INPUTS)  # 400 rows: one window closed
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    rows = [line for line in lines if line["event"] == "served_features"]
    assert len(rows) == 4  # rows 0, 100, 200, 300
    assert rows[0]["model_sha256"] == model.manifest["variants"]["fp32"]["sha256"]
    assert {name: rows[0][name] for name in MODEL_INPUTS} == pytest.approx(
        dict(zip(MODEL_INPUTS, served[0].tolist(), strict=True)), rel=1e-6
    )
    # A batcher over a backend whose build records a training distribution watches by itself.
    assert MicroBatcher(local).monitor is not None
