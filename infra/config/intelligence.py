"""Predictive scaling and anomaly-based alerting: the per-region services in app/autoscale and
app/alerting, and the alert policy on the detector's verdicts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from infra.config.base import Model
from infra.config.resources import Resources, missing_resources


class PredictiveScalingSettings(Model):
    """The predictive scaler (app/autoscale) beside each region's signal service HPA."""

    enabled: bool = True
    # Share of a pod's SLO capacity (workloads.signalService.targetRequestsPerSecond) the
    # forecast peak may use.
    target_utilisation: float = Field(default=0.9, gt=0, le=1)
    # Standard deviations of forecast error added as headroom.
    headroom_sigmas: float = Field(default=1.5, ge=0, le=6)
    # Scheduling, image pull, model load, readiness: how far ahead replicas are asked for.
    startup_minutes: int = Field(default=4, ge=0, le=60)
    history_days: int = Field(default=7, ge=2, le=28)
    # The HPA's CPU target while the scaler runs: a backstop for bursts no forecast sees
    # (bench/autoscale.py measures the pair at 80%).
    cpu_backstop_percent: int = Field(default=80, ge=10, le=95)


class AnomalyDetectionSettings(Model):
    """The anomaly detector (app/alerting) and the alert policy on its verdicts."""

    enabled: bool = True
    severity: Literal["WARNING", "ERROR", "CRITICAL"] = "WARNING"
    # How long a series must stay anomalous before the alert fires (Cloud Monitoring
    # durations are whole seconds).
    alert_after: str = Field(default="60s", pattern=r"^\d+s$")
    # The detector's series that page.
    alert_series: tuple[Literal["latency_p99_ms", "error_ratio", "gpu_utilisation"], ...] = Field(
        default=("latency_p99_ms", "error_ratio", "gpu_utilisation"), min_length=1
    )

    @field_validator("alert_series")
    @classmethod
    def _unique_series(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("series are listed twice")
        return value


class IntelligenceSettings(Model):
    """Predictive scaling and anomaly-based alerting: per-region services."""

    predictive_scaling: PredictiveScalingSettings = PredictiveScalingSettings()
    anomaly_detection: AnomalyDetectionSettings = AnomalyDetectionSettings()
    # Two replicas of each service, in different zones, compute the same thing.
    replicas: int = Field(default=2, ge=1, le=5)
    resources: Resources = Resources(
        requests={"cpu": "100m", "memory": "384Mi"}, limits={"cpu": "1", "memory": "768Mi"}
    )

    @field_validator("resources")
    @classmethod
    def _sized(cls, value: Resources) -> Resources:
        missing = [f"{kind}.{name}" for kind, name in missing_resources(value)]
        if missing:
            raise ValueError(f"resources need {', '.join(missing)}")
        return value

    @property
    def services(self) -> int:
        """How many of the two services (scaler, detector) run."""
        return int(self.predictive_scaling.enabled) + int(self.anomaly_detection.enabled)
