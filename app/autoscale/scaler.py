"""Desired replicas ahead of load: the forecast peak over the pod start-up lead, with headroom.

A pod asked for now serves only after the metric pipeline has carried the request to the
HPA (``metric_lag_minutes``) and the pod has started (``startup_minutes``: scheduling,
image pull, model load, readiness). So the replicas published now must already cover the
highest rate forecast over that whole lead, plus a margin. Headroom for forecast error
grows with the horizon as the level's random walk does (``1 + (h - 1) * alpha**2`` in
variance), and the current rate is a floor: a burst the forecast did not see is still
served at least as a reactive scaler would serve it.

The signal service's replicas own its symbols' shards (app/shards.py), so the published
count respects their moves: never above the shard count (a replica beyond it owns nothing),
and, with ``scaleInStep``, falling at most that many replicas per decision (each replica
leaving hands its shards over; the HPA's scale-down policy paces the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import Field, model_validator

from app.autoscale.forecast import SeasonalForecaster
from app.config_errors import CamelConfigModel


class ScalingPolicy(CamelConfigModel):
    """How forecasts become replicas (camelCase keys, as in the service's config file)."""

    # Requests per second one pod serves within the latency SLO.
    pod_capacity_rps: float = Field(default=500.0, gt=0)
    # Fraction of that capacity the forecast peak may use (the rest absorbs surprises).
    target_utilisation: float = Field(default=0.9, gt=0, le=1)
    startup_minutes: int = Field(default=4, ge=0, le=60)
    metric_lag_minutes: int = Field(default=1, ge=0, le=15)
    margin_minutes: int = Field(default=1, ge=0, le=30)
    # Standard deviations of forecast error added as headroom.
    headroom_sigmas: float = Field(default=1.5, ge=0, le=6)
    min_replicas: int = Field(default=2, ge=1, le=1000)
    max_replicas: int = Field(default=30, ge=1, le=1000)
    # The service's shard count (sharding.shards): replicas beyond it would own nothing.
    shards: int | None = Field(default=None, ge=1, le=4096)
    # At most this many replicas fewer per decision (None: no limit).
    scale_in_step: int | None = Field(default=None, ge=1, le=1000)

    @model_validator(mode="after")
    def _bounds(self) -> ScalingPolicy:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        if self.shards is not None and self.max_replicas > self.shards:
            raise ValueError(
                f"maxReplicas ({self.max_replicas}) must be <= shards ({self.shards}): a "
                "replica beyond the shard count would own nothing"
            )
        return self

    @property
    def lead_minutes(self) -> int:
        """How far ahead the published replicas must look."""
        return self.metric_lag_minutes + self.startup_minutes + self.margin_minutes


@dataclass(frozen=True)
class ReplicaDecision:
    desired: int
    forecast_peak_rps: float  # the point forecast's peak over the lead
    planned_rps: float  # what the replicas are sized for (peak with headroom, or current)


class PredictiveScaler:
    """One region's forecaster and policy: observe each minute, publish desired replicas."""

    def __init__(self, policy: ScalingPolicy, forecaster: SeasonalForecaster):
        self.policy = policy
        self.forecaster = forecaster
        self.last_rate: float | None = None
        self.published: int | None = None  # the last decision's replicas

    def observe(self, rate: float, phase: int, update_season: bool = True) -> None:
        self.forecaster.update(rate, phase, update_season)
        if math.isfinite(rate):
            self.last_rate = rate

    def decide(self, next_phase: int) -> ReplicaDecision:
        """Replicas to publish now, the next observation being at ``next_phase``."""
        p = self.policy
        lead = max(p.lead_minutes, 1)
        forecast = self.forecaster.forecast(next_phase, lead)
        peak_index = int(forecast.argmax())
        peak = float(forecast[peak_index])
        alpha = self.forecaster.params.alpha
        sigma = self.forecaster.log_error_sigma * math.sqrt(1.0 + peak_index * alpha * alpha)
        planned = peak * math.exp(p.headroom_sigmas * sigma)
        current = self.last_rate or 0.0
        planned = max(planned, current)
        replicas = math.ceil(planned / (p.pod_capacity_rps * p.target_utilisation) - 1e-9)
        desired = min(max(replicas, p.min_replicas), p.max_replicas)
        if p.scale_in_step is not None and self.published is not None:
            desired = max(desired, self.published - p.scale_in_step)  # shards move one by one
        self.published = desired
        return ReplicaDecision(desired=desired, forecast_peak_rps=peak, planned_rps=planned)
