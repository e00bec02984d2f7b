"""Anomaly detection: flags injected incidents, stays quiet on quiet days, learns only from
normal data; the service against a Prometheus HTTP API on loopback."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from app.alerting import __main__ as cli
from app.alerting.config import DEFAULT_SERIES, AlertingConfig, load
from app.alerting.detector import AnomalyDetector, DetectorSettings
from app.alerting.service import DetectorService
from app.autoscale.config import ConfigError, load_model
from app.autoscale.prometheus import PrometheusClient
from tests.app.prometheus_api import serve

DAY = 1440


def latency_days(days: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """A p99-latency-like series: 20 ms, a bump over the session, AR(1) noise."""
    minute = np.arange(DAY)
    shape = 20.0 + 12.0 * np.exp(-(((minute - 900) / 120.0) ** 2))
    out = []
    for _ in range(days):
        innovations = rng.normal(0, noise * np.sqrt(1 - 0.36), DAY)
        ar = np.empty(DAY)
        acc = 0.0
        for i in range(DAY):
            acc = 0.6 * acc + innovations[i]
            ar[i] = acc
        out.append(shape * np.exp(rng.normal(0, 0.03)) * np.exp(ar))
    return np.concatenate(out)


def run(detector: AnomalyDetector, values: np.ndarray, first_minute: int = 0) -> np.ndarray:
    return np.array(
        [detector.update(first_minute + i, float(v)).active for i, v in enumerate(values)]
    )


@pytest.fixture(scope="module")
def warm() -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(11)
    return latency_days(7, rng), rng


def trained(history: np.ndarray, **settings: object) -> AnomalyDetector:
    detector = AnomalyDetector(DetectorSettings(**settings))  # type: ignore[arg-type]
    assert not run(detector, history).any()  # nothing is flagged while learning or after
    return detector


def test_quiet_day_raises_nothing(warm: tuple[np.ndarray, np.random.Generator]) -> None:
    history, _ = warm
    detector = trained(history)
    quiet = latency_days(2, np.random.default_rng(12))
    assert run(detector, quiet, len(history)).sum() == 0


def test_level_shift_is_flagged_fast_and_clears_after(
    warm: tuple[np.ndarray, np.random.Generator],
) -> None:
    history, _ = warm
    detector = trained(history)
    day = latency_days(1, np.random.default_rng(13))
    day[600:900] *= 1.4  # +40% for five hours, at a quiet time of day
    active = run(detector, day, len(history))
    first = int(np.flatnonzero(active)[0])
    assert 600 <= first <= 615  # within a quarter of an hour
    assert active[600:900].mean() > 0.9
    assert not active[960:].any()  # cleared once the shift is over


def test_spike_is_flagged_within_minutes_but_one_outlier_is_not(
    warm: tuple[np.ndarray, np.random.Generator],
) -> None:
    history, _ = warm
    detector = trained(history)
    day = latency_days(1, np.random.default_rng(14))
    day[300] *= 3.0  # a single outlier minute
    day[700:706] *= 3.0  # a six-minute spike
    active = run(detector, day, len(history))
    assert not active[290:320].any()
    assert 700 <= int(np.flatnonzero(active)[0]) <= 703


def test_slow_drift_is_flagged_before_it_peaks(
    warm: tuple[np.ndarray, np.random.Generator],
) -> None:
    history, _ = warm
    detector = trained(history)
    day = latency_days(1, np.random.default_rng(15))
    day[300:480] *= 1.0 + 0.6 * np.linspace(0, 1, 180)  # +60% over three hours
    active = run(detector, day, len(history))
    first = int(np.flatnonzero(active)[0])
    assert 300 < first < 420


@pytest.mark.parametrize(
    ("direction", "up", "down"), [("up", True, False), ("down", False, True), ("both", True, True)]
)
def test_direction(
    warm: tuple[np.ndarray, np.random.Generator], direction: str, up: bool, down: bool
) -> None:
    history, _ = warm
    detector = trained(history, direction=direction)
    day = latency_days(1, np.random.default_rng(16))
    day[200:400] *= 1.5
    day[800:1000] *= 0.5
    active = run(detector, day, len(history))
    assert bool(active[200:430].any()) is up
    assert bool(active[800:1030].any()) is down


def test_incident_values_stay_out_of_the_baseline(
    warm: tuple[np.ndarray, np.random.Generator],
) -> None:
    history, _ = warm
    # Two days of memory: had the incident day been learnt, it would be half the baseline.
    detector = AnomalyDetector(DetectorSettings(history_days=2, min_history_days=2))
    run(detector, history)
    incident = latency_days(1, np.random.default_rng(17))
    incident[400:1000] *= 2.0
    active = run(detector, incident, len(history))
    assert active[420:1000].all()
    next_day = latency_days(1, np.random.default_rng(18))
    verdict = detector.update(len(history) + DAY + 700, float(next_day[700]))
    # The median at 11:40 is still the normal level, not between it and the doubled one.
    normal = float(np.median(history[-DAY:][695:706]))
    assert verdict.baseline == pytest.approx(normal, rel=0.08)


def test_learning_period_and_hysteresis() -> None:
    settings = DetectorSettings(min_history_days=2, clear_ratio=0.5)
    detector = AnomalyDetector(settings)
    assert detector.update(10, 1e9).score == 0.0  # day 0: nothing learnt, nothing flagged
    for minute in range(2 * DAY):
        detector.update(minute, 100.0 + (minute % 7))
    assert not detector.baseline.ready  # day 1 is committed when day 2 begins
    scores = [detector.update(2 * DAY + i, 400.0) for i in range(60)]
    assert scores[-1].active and scores[-1].score >= 1.0
    # Back to normal: the slow average decays, the alert clears below half the line.
    after = [detector.update(2 * DAY + 60 + i, 103.0) for i in range(240)]
    cleared = next(i for i, v in enumerate(after) if not v.active)
    assert after[cleared].score < 0.5 <= after[cleared - 1].score


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match=r"minHistoryDays \(9\) must be <= historyDays \(7\)"):
        DetectorSettings(min_history_days=9)
    with pytest.raises(ValueError, match="direction"):
        DetectorSettings.model_validate({"direction": "sideways"})


# --------------------------------------------------------------------------- service

MONDAY = dt.datetime(2026, 11, 23, tzinfo=dt.UTC).timestamp()


def test_service_backfills_and_flags_a_shift_in_one_region() -> None:
    rng = np.random.default_rng(21)
    normal = latency_days(5, rng)
    start_minute = int(MONDAY // 60)
    now = [MONDAY + 4 * 86400 + 10 * 3600 + 30]  # day 4, 10:00:30

    def source(query: str, ts: float) -> float | None:
        index = int(ts // 60) - start_minute
        if not 0 <= index < len(normal) or "gpu" in query or "errors" in query:
            return None
        value = float(normal[index])
        shifted = "us-east4" in query and index >= 4 * DAY + 600
        return value * 1.6 if shifted else value

    latency = DEFAULT_SERIES[0]
    with serve(source) as api:
        config = load_model(
            AlertingConfig,
            "test",
            {
                "prometheusUrl": api.url,
                "regions": ["us-east4", "europe-west4"],
                "series": [latency.model_dump(by_alias=True)],
            },
        )
        registry = CollectorRegistry()
        service = DetectorService(config, PrometheusClient(api.url), registry, lambda: now[0])
        service.backfill()
        for _ in range(20):
            now[0] += 60
            service.tick()
    labels = {"series": "latency_p99_ms"}
    assert registry.get_sample_value("signal_anomaly_active", {**labels, "region": "us-east4"}) == 1
    assert (
        registry.get_sample_value("signal_anomaly_active", {**labels, "region": "europe-west4"})
        == 0
    )
    score = registry.get_sample_value("signal_anomaly_score", {**labels, "region": "us-east4"})
    assert score is not None and score >= 1.0
    baseline = registry.get_sample_value(
        "signal_anomaly_baseline", {**labels, "region": "europe-west4"}
    )
    assert baseline == pytest.approx(20.0, rel=0.15)


def test_config_errors_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text(
        "prometheusUrl: ftp://nope\n"
        "regions: [us-east4]\n"
        "series:\n"
        "  - {name: a, query: up}\n"
        "  - {name: a, query: 'up{x=\"{region}\"}', detector: {fastMinutes: 0}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(path)
    text = str(info.value)
    assert "prometheusUrl: String should match pattern" in text
    assert "series[0].query: must contain {region}" in text
    assert "series[1].detector.fastMinutes: Input should be greater than or equal to 1" in text
    assert cli.main(["--config", str(path)]) == 2
    assert "series[0].query" in capsys.readouterr().err

    good = tmp_path / "good.json"
    good.write_text(
        json.dumps({"prometheusUrl": "http://prometheus:9090", "regions": ["us-east4"]})
    )
    assert cli.main(["--config", str(good), "--check"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in checked["series"]] == [
        "latency_p99_ms",
        "error_ratio",
        "gpu_utilisation",
    ]


@pytest.mark.usefixtures("json_logs")
def test_cli_logs_one_json_object_per_line_like_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alerting.json"
    with serve(lambda query, ts: 20.0) as api:
        path.write_text(json.dumps({"prometheusUrl": api.url, "regions": ["us-east4"]}))
        api.fail = True  # every read fails: one warning per series, as JSON on stderr
        assert cli.main(["--config", str(path), "--once"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {}  # --once: stdout holds the verdicts alone
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    unavailable = [line for line in lines if line["event"] == "series_unavailable"]
    assert {line["series"] for line in unavailable} == {s.name for s in DEFAULT_SERIES}
    for line in unavailable:
        assert set(line) >= {"timestamp", "level", "event", "service", "series", "region", "error"}
        assert (line["service"], line["level"], line["region"]) == (
            "signal-anomaly-detector",
            "warning",
            "us-east4",
        )
