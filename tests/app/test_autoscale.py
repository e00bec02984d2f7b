"""Predictive scaling: the forecaster against statsmodels (its oracle) and on a seasonal
series, the scaler's lead, the HPA algorithm and Deployment start-up delay, and the
service against a Prometheus HTTP API on loopback."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from app.autoscale import __main__ as cli
from app.autoscale.cli import run_every_minute
from app.autoscale.config import DEFAULT_RATE_QUERY, AutoscaleConfig, ConfigError, load, load_model
from app.autoscale.forecast import SeasonalForecaster, SmoothingParams
from app.autoscale.hpa import Deployment, HorizontalPodAutoscaler, HpaSpec
from app.autoscale.prometheus import PrometheusClient, PrometheusError
from app.autoscale.scaler import PredictiveScaler, ScalingPolicy
from app.autoscale.service import ScalerService
from tests.app.prometheus_api import serve

M = 288  # a day of 5-minute steps: seasonal, and quick to fit


def seasonal_series(days: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """An open spike, a midday bump, a day-level intensity and multiplicative noise."""
    t = np.arange(M)
    shape = (
        0.3
        + 1.5 * np.exp(-(((t - 100) / 6.0) ** 2))
        + 0.8 * np.exp(-(((t - 200) / 15.0) ** 2))
        + 0.2 * np.sin(2 * np.pi * t / M)
    )
    days_out = [
        1000 * shape * math.exp(rng.normal(0, 0.15)) * np.exp(rng.normal(0, noise, M))
        for _ in range(days)
    ]
    return np.concatenate(days_out)


# --------------------------------------------------------------------------- forecaster


def test_replays_statsmodels_holt_winters_exactly() -> None:
    y = seasonal_series(5, np.random.default_rng(1))
    model = ExponentialSmoothing(
        y, trend=None, seasonal="mul", seasonal_periods=M, initialization_method="heuristic"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.fit(smoothing_level=0.3, smoothing_seasonal=0.2, optimized=False)
    first_phase = 17
    forecaster = SeasonalForecaster.from_statsmodels(result.params, M, first_phase)
    fitted = forecaster.replay(y, first_phase)
    np.testing.assert_allclose(fitted, result.fittedvalues, rtol=1e-10)
    steps = M - 1  # statsmodels reuses a stale index at exactly one season ahead
    ahead = forecaster.forecast((first_phase + len(y)) % M, steps)
    np.testing.assert_allclose(ahead, result.forecast(steps), rtol=1e-10)


def test_five_step_forecast_beats_persistence_and_seasonal_naive() -> None:
    y = seasonal_series(6, np.random.default_rng(3))
    horizon = 5
    forecaster = SeasonalForecaster.fit(y[: 4 * M], M, horizon=horizon)
    ours, persistence, naive = [], [], []
    for i in range(4 * M, 6 * M - horizon):
        target = i + horizon - 1
        predicted = forecaster.forecast(i % M, horizon)[-1]
        ours.append(abs(predicted / y[target] - 1))
        persistence.append(abs(y[i - 1] / y[target] - 1))
        naive.append(abs(y[target - M] / y[target] - 1))
        forecaster.update(float(y[i]), i % M)
    mape = float(np.mean(ours))
    assert mape < 0.08, mape  # the noise alone is 5%
    assert mape < 0.5 * min(np.mean(persistence), np.mean(naive))


def test_fit_uses_grid_parameters_and_keeps_state_after_history() -> None:
    y = seasonal_series(4, np.random.default_rng(5))
    forecaster = SeasonalForecaster.fit(y, M, first_phase=3, horizon=6)
    assert 0 < forecaster.params.alpha <= 0.9
    # The state is the one after the last value: its next forecast is close to the
    # same phase a day earlier, scaled by today's level.
    next_phase = (3 + len(y)) % M
    predicted = forecaster.forecast(next_phase, 1)[0]
    assert 0.5 < predicted / y[-M] < 2.0
    assert forecaster.log_error_sigma > 0


def test_missed_observation_leaves_state_untouched() -> None:
    forecaster = SeasonalForecaster(SmoothingParams(0.5, 0.5), 100.0, np.ones(4))
    forecaster.update(math.nan, 2)
    assert forecaster.level == 100.0
    np.testing.assert_array_equal(forecaster.season, np.ones(4))
    forecaster.update(200.0, 2)
    assert forecaster.level == pytest.approx(150.0)
    assert forecaster.season[2] == pytest.approx(1.5)  # 0.5 * 200 / 100 + 0.5 * 1
    forecaster.update(100.0, 3, update_season=False)
    assert forecaster.season[3] == 1.0


@pytest.mark.parametrize(
    ("history", "message"),
    [(np.ones(M + 5), "at least two seasons"), (np.r_[np.ones(2 * M), np.nan], "finite")],
)
def test_fit_rejects_unusable_history(history: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SeasonalForecaster.fit(history, M)


# --------------------------------------------------------------------------- scaler


def step_scaler(policy: ScalingPolicy) -> PredictiveScaler:
    """1000 rps, four times that over phases 100-199, a perfectly known season."""
    season = np.ones(M)
    season[100:200] = 4.0
    return PredictiveScaler(policy, SeasonalForecaster(SmoothingParams(0.1, 0.0), 1000.0, season))


def test_scaler_asks_for_the_step_one_lead_ahead_and_not_before() -> None:
    policy = ScalingPolicy(
        pod_capacity_rps=500, target_utilisation=0.8, headroom_sigmas=0, min_replicas=1
    )
    scaler = step_scaler(policy)
    lead = policy.lead_minutes  # lag 1 + start-up 4 + margin 1
    assert lead == 6
    # Deciding for next phase p covers p .. p + lead - 1.
    assert scaler.decide(100 - lead).desired == 3  # ceil(1000 / 400)
    assert scaler.decide(100 - lead + 1).desired == 10  # the step enters the lead: 4000 / 400
    assert scaler.decide(150).desired == 10
    assert scaler.decide(200).desired == 3  # after the step, back down


def test_scaler_never_plans_below_the_current_rate_and_respects_bounds() -> None:
    policy = ScalingPolicy(
        pod_capacity_rps=500, target_utilisation=1.0, headroom_sigmas=0, max_replicas=12
    )
    scaler = step_scaler(policy)
    scaler.observe(3000.0, 10)  # a burst the season does not know
    assert scaler.decide(11).desired == 6
    scaler.observe(50_000.0, 11)
    assert scaler.decide(12).desired == 12  # maxReplicas


def test_headroom_grows_with_forecast_error() -> None:
    policy = ScalingPolicy(pod_capacity_rps=100, target_utilisation=1.0, headroom_sigmas=2)
    calm, noisy = step_scaler(policy), step_scaler(policy)
    rng = np.random.default_rng(0)
    for phase in range(20, 60):
        calm.observe(1000.0, phase)
        noisy.observe(1000.0 * math.exp(rng.normal(0, 0.3)), phase)
    assert noisy.decide(60).planned_rps > calm.decide(60).planned_rps * 1.2


def test_policy_validation_names_keys() -> None:
    with pytest.raises(ValueError, match=r"minReplicas \(5\) must be <= maxReplicas \(2\)"):
        ScalingPolicy(min_replicas=5, max_replicas=2)
    with pytest.raises(ValueError, match=r"maxReplicas \(30\) must be <= shards \(16\)"):
        ScalingPolicy(max_replicas=30, shards=16)


def test_scale_in_is_one_step_at_a_time_for_shard_moves() -> None:
    """With scaleInStep, the published replicas fall one per decision (each replica leaving
    hands its shards over), while a rise is published at once."""
    policy = ScalingPolicy(pod_capacity_rps=500, target_utilisation=0.8, headroom_sigmas=0,
                           min_replicas=1, max_replicas=16, shards=16, scale_in_step=1)  # fmt: skip
    scaler = step_scaler(policy)
    lead = policy.lead_minutes
    assert scaler.decide(100 - lead + 1).desired == 10  # up at once
    assert [scaler.decide(200 + i).desired for i in range(9)] == [9, 8, 7, 6, 5, 4, 3, 3, 3]


# --------------------------------------------------------------------------- HPA model


def test_hpa_cpu_scale_up_tolerance_and_unready_pods() -> None:
    hpa = HorizontalPodAutoscaler(HpaSpec(min_replicas=1, max_replicas=50, cpu_target=0.5))
    assert hpa.recommend(4, 4, cpu_utilisation=1.0) == 8  # ceil(4 * 1.0 / 0.5)
    assert hpa.recommend(4, 4, cpu_utilisation=0.54) == 4  # within 10%
    # 4 ready at 100%, 4 starting: counted as idle, the ratio is 1.0, no double scale-up.
    assert hpa.recommend(8, 4, cpu_utilisation=1.0) == 8
    assert hpa.recommend(8, 4, cpu_utilisation=2.0) == 16


def test_hpa_takes_the_largest_proposal_and_clamps() -> None:
    spec = HpaSpec(min_replicas=2, max_replicas=20, cpu_target=0.7, external_target=1.0)
    hpa = HorizontalPodAutoscaler(spec)
    assert hpa.recommend(5, 5, cpu_utilisation=0.7, external_value=12) == 12
    assert hpa.recommend(12, 12, cpu_utilisation=2.0, external_value=12) == 20
    pods = HorizontalPodAutoscaler(HpaSpec(1, 50, cpu_target=None, pods_target=500))
    assert pods.recommend(4, 4, pods_value=1500) == 12  # 6000 rps / 500


def test_hpa_scale_down_waits_for_the_stabilisation_window() -> None:
    hpa = HorizontalPodAutoscaler(HpaSpec(1, 50, cpu_target=None, external_target=1.0))
    assert hpa.recommend(2, 2, external_value=10) == 10
    replicas = [hpa.recommend(10, 10, external_value=3) for _ in range(6)]
    # The window holds 5 recommendations: 10 stays until it has left the window.
    assert replicas == [10, 10, 10, 10, 3, 3]


def test_deployment_start_up_delay_and_scale_down_order() -> None:
    deployment = Deployment(2, startup_minutes=3)
    deployment.scale(5, now=10)
    assert [deployment.ready(t) for t in (10, 12, 13)] == [2, 2, 5]
    deployment.scale(8, now=13)
    deployment.scale(5, now=14)  # the three still starting go first
    assert deployment.ready(20) == 5
    deployment.tick()
    assert deployment.pod_minutes == 5


# --------------------------------------------------------------------------- service

WEDNESDAY_OPEN = dt.datetime(2026, 11, 25, 14, 30, tzinfo=dt.UTC).timestamp()
BASE_RPS, OPEN_RPS = 800.0, 6000.0


def trading_rate(query: str, ts: float) -> float | None:
    """800 rps, 6000 from 14:30 to 15:00 UTC on weekdays; 50 rps at weekends."""
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    if moment.weekday() >= 5:
        return 50.0
    minute = moment.hour * 60 + moment.minute
    return OPEN_RPS if 870 <= minute < 900 else BASE_RPS


def make_config(url: str, **extra: object) -> AutoscaleConfig:
    return load_model(
        AutoscaleConfig,
        "test",
        {"prometheusUrl": url, "regions": ["us-east4"], "historyDays": 3, **extra},
    )


def test_service_publishes_replicas_ahead_of_the_open() -> None:
    clock = [WEDNESDAY_OPEN - 20 * 60 + 30]  # 14:10:30
    with serve(trading_rate) as api:
        registry = CollectorRegistry()
        service = ScalerService(
            make_config(api.url), PrometheusClient(api.url), registry, lambda: clock[0]
        )
        before = service.tick()["us-east4"]
        assert service.regions["us-east4"].fitted_at is not None  # Mon + Tue fitted
        per_pod = 500 * 0.9
        assert before.desired == math.ceil(BASE_RPS / per_pod)  # 2
        clock[0] = WEDNESDAY_OPEN - 5 * 60 + 30  # 14:25:30: the open is inside the lead
        ahead = service.tick()["us-east4"]
        assert ahead.desired == math.ceil(OPEN_RPS / per_pod)  # 14, before any of it is seen
        assert registry.get_sample_value(
            "signal_desired_replicas", {"region": "us-east4"}
        ) == float(ahead.desired)
        assert registry.get_sample_value("signal_autoscale_source_up", {"region": "us-east4"}) == 1

        api.fail = True  # Prometheus down: the last value stands, the source is marked down
        clock[0] += 60
        assert service.tick() == {}
        assert registry.get_sample_value("signal_autoscale_source_up", {"region": "us-east4"}) == 0
        assert registry.get_sample_value(
            "signal_desired_replicas", {"region": "us-east4"}
        ) == float(ahead.desired)
    ranges = [q for path, q in api.queries if path == "/api/v1/query_range"]
    assert (
        ranges
        and ranges[0]["query"]
        == 'sum(rate(signal_requests_total{location=~"us-east4(-[a-z])?"}[2m]))'
    )


def test_default_queries_match_a_regional_or_a_zonal_clusters_location() -> None:
    """Managed Prometheus labels series with the cluster's location: the region, or for a
    zonal cluster (dev's) a zone of it. Every default query takes both, and no other region."""
    import re

    from app.alerting.config import DEFAULT_SERIES

    for query in (DEFAULT_RATE_QUERY, *(series.query for series in DEFAULT_SERIES)):
        concrete = query.replace("{region}", "us-central1")
        matchers = re.findall(r'location=~"([^"]+)"', concrete)
        assert matchers and "location=" not in re.sub(r'location=~"[^"]+"', "", concrete), query
        for pattern in matchers:  # PromQL regexes are anchored at both ends, as fullmatch
            assert re.fullmatch(pattern, "us-central1") and re.fullmatch(pattern, "us-central1-a")
            assert not re.fullmatch(pattern, "us-central10")
            assert not re.fullmatch(pattern, "us-central1-ab")


def test_service_without_history_is_reactive_only() -> None:
    clock = WEDNESDAY_OPEN + 10 * 60
    with serve(lambda q, ts: 3000.0 if ts > clock - 600 else None) as api:
        service = ScalerService(
            make_config(api.url), PrometheusClient(api.url), clock=lambda: clock
        )
        decision = service.tick()["us-east4"]
    assert service.regions["us-east4"].fitted_at is None
    assert decision.desired == math.ceil(3000 / 450)


def test_prometheus_client_aligns_ranges_and_reports_errors() -> None:
    def sparse(query: str, ts: float) -> float | None:
        return None if int(ts) % 180 == 0 else ts / 60

    with serve(sparse) as api:
        client = PrometheusClient(api.url)
        values = client.query_range("up", 600.0, 1200.0, 60.0)
        assert len(values) == 11
        assert values[0] == 10.0 and values[1] == 11.0
        assert math.isnan(values[2]) and math.isnan(values[5])  # 720 s and 900 s: no sample
        assert math.isnan(client.query("up", 900.0))  # no series: nothing to observe
        api.fail = True
        with pytest.raises(PrometheusError, match=r"unavailable: storage is down"):
            client.query("up", 900.0)


def test_prometheus_client_authenticates_with_the_workloads_access_token() -> None:
    """The bearer token comes from app.gcp_auth (tests/app/test_gcp_auth.py runs google-auth
    against a metadata server); one that cannot be had fails the query, not the service."""
    from google.oauth2.credentials import Credentials

    from app.gcp_auth import AccessTokens

    with serve(lambda q, ts: 1.0) as api:
        client = PrometheusClient(api.url, token=AccessTokens(Credentials("token-1")))
        assert client.query("up", 60.0) == 1.0
        client.query_range("up", 0.0, 120.0, 60.0)
        anonymous = PrometheusClient(api.url)
        anonymous.query("up", 60.0)

        def no_token() -> str:
            raise OSError("metadata server unreachable")

        with pytest.raises(PrometheusError, match="no access token: OSError"):
            PrometheusClient(api.url, token=no_token).query("up", 60.0)
    assert api.authorizations == ["Bearer token-1", "Bearer token-1", None]


# --------------------------------------------------------------------------- config and CLI


def test_config_errors_name_file_key_value_and_allowed(tmp_path: Path) -> None:
    path = tmp_path / "scaler.yaml"
    path.write_text(
        "prometheusUrl: http://prometheus:9090\n"
        "regions: [us-east4, us-east4]\n"
        "rateQuery: sum(rate(x[1m]))\n"
        "policy: {targetUtilisation: 1.5}\n"
        "historyDay: 3\n"
    )
    with pytest.raises(ConfigError) as info:
        load(path)
    text = str(info.value)
    assert f"{path}: regions: regions are listed twice" in text
    assert "rateQuery: must contain {region}" in text
    assert "policy.targetUtilisation: Input should be less than or equal to 1 (got 1.5)" in text
    assert "historyDay: unknown key, did you mean historyDays?" in text


@pytest.mark.usefixtures("json_logs")
def test_cli_once_prints_decisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with serve(trading_rate) as api:
        path = tmp_path / "scaler.json"
        path.write_text(json.dumps({"prometheusUrl": api.url, "regions": ["us-east4"]}))
        assert cli.main(["--config", str(path), "--once"]) == 0
    decision = json.loads(capsys.readouterr().out)["us-east4"]
    assert decision["desired"] >= 2
    assert cli.main(["--config", str(tmp_path / "missing.json")]) == 2


def json_lines(text: str) -> list[dict[str, object]]:
    """Every non-empty line, each of which must be one JSON object."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(line, dict) for line in lines), text
    return lines


@pytest.mark.usefixtures("json_logs")
def test_cli_logs_one_json_object_per_line_like_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "scaler.json"
    with serve(trading_rate) as api:
        path.write_text(json.dumps({"prometheusUrl": api.url, "regions": ["us-east4"]}))
        assert cli.main(["--config", str(path), "--once"]) == 0
        out, err = capsys.readouterr()
        json.loads(out)  # --once: stdout holds the decisions alone; the logs go to stderr
        (replicas,) = [line for line in json_lines(err) if line["event"] == "replicas"]
        assert set(replicas) >= {"timestamp", "level", "event", "service", "region", "desired"}
        assert (replicas["service"], replicas["level"], replicas["region"]) == (
            "signal-autoscaler",
            "info",
            "us-east4",
        )
        assert replicas["desired"] == json.loads(out)["us-east4"]["desired"]

        api.fail = True  # Prometheus down: a warning naming the region and the error
        assert cli.main(["--config", str(path), "--once"]) == 0
    events = {line["event"]: line for line in json_lines(capsys.readouterr().err)}
    warning = events["history_unavailable"]
    assert (warning["level"], warning["region"]) == ("warning", "us-east4")
    assert "HTTP 503 unavailable: storage is down" in str(warning["error"])
    assert events["reactive_only"]["usable_trading_days"] == 0


def test_the_minute_loop_outlives_a_failed_tick_and_reads_past_each_boundary() -> None:
    """Both services' loop (app.autoscale.cli): a tick that raises is logged and the next
    minute comes; each read waits for 5 s past the next minute boundary (scrapes land then)."""

    waits: list[float] = []

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            assert timeout is not None
            waits.append(timeout)
            return self.is_set()

    stop = Stop()

    class Service:
        registry = CollectorRegistry()
        ticks = 0

        def clock(self) -> float:
            return 630.0  # half past minute 10

        def start(self) -> None:
            raise AssertionError("run_service starts the service, not the loop")

        def tick(self) -> None:
            self.ticks += 1
            if self.ticks == 1:
                raise RuntimeError("a bad minute")
            if self.ticks == 3:
                stop.set()

    service = Service()
    run_every_minute(service, stop)
    assert service.ticks == 3
    assert waits == [35.0, 35.0, 35.0]  # 11:00 + 5 s, from 10:30
