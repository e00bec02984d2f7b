"""The predictive scaler as a service: read each region's request rate every minute, forecast,
export the replicas the HPA should hold.

Each minute, for each configured region, the service reads the last complete minute's
request rate from Prometheus, updates that region's forecaster, and sets
``signal_desired_replicas{region}``, which Managed Prometheus collects and the Custom
Metrics Stackdriver Adapter serves to the HPA as the External metric
``prometheus.googleapis.com|signal_desired_replicas|gauge`` (target AverageValue 1).
On start and every ``refitHours`` it refits the forecaster on ``historyDays`` of history
(trading days only). When Prometheus cannot be read, the last published value stands and
``signal_autoscale_source_up`` drops to 0; the HPA's CPU and request-rate metrics still
scale on what they see.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import structlog
from prometheus_client import CollectorRegistry, Gauge

from app.autoscale.config import AutoscaleConfig
from app.autoscale.forecast import SeasonalForecaster, SmoothingParams
from app.autoscale.prometheus import MINUTE, PrometheusClient, PrometheusError, minute_of
from app.autoscale.scaler import PredictiveScaler, ReplicaDecision

log = structlog.get_logger("app.autoscale")

DAY_MINUTES = 1440
# Smoothing used until there is enough history to fit (a cautious, level-led model).
UNFITTED = SmoothingParams(alpha=0.3, gamma=0.0)


class Exports:
    """The service's metrics."""

    def __init__(self, registry: CollectorRegistry):
        self.desired = Gauge(
            "signal_desired_replicas",
            "Replicas the signal service should run now to serve the forecast load in time.",
            ["region"],
            registry=registry,
        )
        self.forecast = Gauge(
            "signal_forecast_requests_per_second",
            "Highest forecast request rate over the scaler's lead (start-up + lag + margin).",
            ["region"],
            registry=registry,
        )
        self.planned = Gauge(
            "signal_planned_requests_per_second",
            "Request rate the desired replicas are sized for (forecast peak with headroom).",
            ["region"],
            registry=registry,
        )
        self.observed = Gauge(
            "signal_observed_requests_per_second",
            "The last complete minute's request rate, as read from Prometheus.",
            ["region"],
            registry=registry,
        )
        self.error_sigma = Gauge(
            "signal_forecast_log_error",
            "Standard deviation of the one-step forecast error, in log units.",
            ["region"],
            registry=registry,
        )
        self.source_up = Gauge(
            "signal_autoscale_source_up",
            "1 when the last Prometheus read for the region succeeded, else 0.",
            ["region"],
            registry=registry,
        )
        self.fitted = Gauge(
            "signal_autoscale_fit_timestamp_seconds",
            "When the region's forecaster was last fitted (0: not fitted, reactive only).",
            ["region"],
            registry=registry,
        )


@dataclass
class RegionState:
    scaler: PredictiveScaler
    fitted_at: float | None  # None: not enough history yet
    last_minute: int | None = None
    last_fit_attempt: float = 0.0


class ScalerService:
    def __init__(
        self,
        config: AutoscaleConfig,
        client: PrometheusClient,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.client = client
        self.registry = registry if registry is not None else CollectorRegistry()
        self.exports = Exports(self.registry)
        self.clock = clock
        self.regions: dict[str, RegionState] = {}

    def _trading(self, minute: int) -> bool:
        weekday = dt.datetime.fromtimestamp(minute * MINUTE, dt.UTC).weekday()
        return weekday in self.config.trading_weekdays

    # ---- fitting

    def fit(self, region: str, now: float) -> RegionState:
        """Fit the region's forecaster on its history (trading days, whole UTC days from
        ``historyDays`` ago up to the last complete minute)."""
        policy = self.config.policy
        last = minute_of(now) - 1
        first_day = last // DAY_MINUTES - self.config.history_days
        start = first_day * DAY_MINUTES
        state = self.regions.get(region)
        try:
            values = self.client.query_range(
                self.config.query_for(region), start * MINUTE, last * MINUTE, MINUTE
            )
        except PrometheusError as exc:
            log.warning("history_unavailable", region=region, error=str(exc))
            values = np.full(last - start + 1, np.nan)
        whole = len(values) // DAY_MINUTES
        days = [
            values[d * DAY_MINUTES : (d + 1) * DAY_MINUTES]
            for d in range(whole)
            if self._trading(start + d * DAY_MINUTES)
        ]
        today = values[whole * DAY_MINUTES :]  # empty when the last minute ends a day
        # Days with most minutes observed are usable; short gaps are interpolated.
        usable = [d for d in days if np.isfinite(d).mean() >= 0.8]
        if len(usable) >= 2:
            forecaster = SeasonalForecaster.fit(
                _fill(np.concatenate(usable)),
                DAY_MINUTES,
                first_phase=0,
                horizon=policy.lead_minutes,
            )
            # Catch up on today so far (not part of the whole days fitted on).
            trading_today = self._trading(last)
            for phase, value in enumerate(today):
                forecaster.update(float(value), phase, update_season=trading_today)
            fitted_at: float | None = now
        else:
            recent = values[np.isfinite(values)][-60:]
            level = float(np.median(recent)) if len(recent) else 1.0
            forecaster = SeasonalForecaster.flat(DAY_MINUTES, level, UNFITTED)
            fitted_at = None
            log.info("reactive_only", region=region, usable_trading_days=len(usable))
        scaler = PredictiveScaler(policy, forecaster)
        seen = values[np.isfinite(values)]
        if len(seen):
            scaler.last_rate = float(seen[-1])
        elif state is not None:
            scaler.last_rate = state.scaler.last_rate
        new = RegionState(scaler, fitted_at, last_minute=last, last_fit_attempt=now)
        self.regions[region] = new
        self.exports.fitted.labels(region=region).set(fitted_at or 0.0)
        return new

    # ---- the minute loop

    def start(self) -> None:
        """Nothing before the first tick: each region is fitted on its first."""

    def tick(self) -> dict[str, ReplicaDecision]:
        """Observe the last complete minute of every region once and publish replicas."""
        now = self.clock()
        minute = minute_of(now) - 1
        decisions: dict[str, ReplicaDecision] = {}
        for region in self.config.regions:
            state = self.regions.get(region)
            # Unfitted regions (too little history) try again every hour.
            refit_every = (
                3600
                if state is None or state.fitted_at is None
                else (self.config.refit_hours * 3600)
            )
            refit_due = state is not None and now - state.last_fit_attempt >= refit_every
            if state is None or refit_due:
                state = self.fit(region, now)
            if state.last_minute is None or minute > state.last_minute:
                try:
                    rate = self.client.query(self.config.query_for(region), (minute + 1) * MINUTE)
                except PrometheusError as exc:
                    log.warning("rate_unavailable", region=region, error=str(exc))
                    self.exports.source_up.labels(region=region).set(0)
                    continue  # the last published value stands
                self.exports.source_up.labels(region=region).set(1)
                state.scaler.observe(
                    rate, minute % DAY_MINUTES, update_season=self._trading(minute)
                )
                state.last_minute = minute
                if math.isfinite(rate):
                    self.exports.observed.labels(region=region).set(rate)
            decision = state.scaler.decide((minute + 1) % DAY_MINUTES)
            decisions[region] = decision
            self.exports.desired.labels(region=region).set(decision.desired)
            self.exports.forecast.labels(region=region).set(decision.forecast_peak_rps)
            self.exports.planned.labels(region=region).set(decision.planned_rps)
            self.exports.error_sigma.labels(region=region).set(
                state.scaler.forecaster.log_error_sigma
            )
            log.info(
                "replicas",
                region=region,
                desired=decision.desired,
                forecast_rps=decision.forecast_peak_rps,
                planned_rps=decision.planned_rps,
                fitted=state.fitted_at is not None,
            )
        return decisions


def _fill(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN gaps (edges held)."""
    finite = np.isfinite(values)
    if finite.all():
        return values
    index = np.arange(len(values))
    return np.interp(index, index[finite], values[finite])
