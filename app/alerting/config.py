"""The anomaly detector service's configuration: which series, per region, with which settings.

Read from a JSON or YAML file (`--config`, or the file named by `SIGNAL_ALERTING_CONFIG`),
camelCase keys; errors name the file, the key path, the value and what is allowed. The
default series and their settings are the ones `bench/alerting.py` evaluates (thresholds
chosen there on tuning scenarios, never on the evaluated ones).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, field_validator

from app.alerting.detector import DetectorSettings
from app.autoscale.config import (
    LOCATION_MATCHER,
    MetricServiceConfig,
    check_region_query,
    config_path,
)
from app.config_errors import CamelConfigModel as Model
from app.config_errors import load_model, read_config_file

CONFIG_ENV = "SIGNAL_ALERTING_CONFIG"
# gRPC statuses that are the server's fault (as infra/observability.py counts them).
SERVER_ERRORS = "UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS|RESOURCE_EXHAUSTED"


class SeriesConfig(Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    # PromQL returning one value per evaluation; {region} is replaced by each region.
    query: str
    detector: DetectorSettings = DetectorSettings()

    _query = field_validator("query")(check_region_query)


DEFAULT_SERIES: tuple[SeriesConfig, ...] = (
    SeriesConfig(
        name="latency_p99_ms",
        query=(
            "1000 * histogram_quantile(0.99, sum by (le) "
            f"(rate(signal_request_duration_seconds_bucket{{{LOCATION_MATCHER}}}[5m])))"
        ),
        detector=DetectorSettings(
            direction="up", absolute_floor=0.5, slow_threshold=4.0, fast_threshold=8.0
        ),
    ),
    SeriesConfig(
        name="error_ratio",
        # Server-side failures over all requests (app/telemetry.py's request counter).
        query=(
            "sum(rate(signal_requests_total"
            f'{{{LOCATION_MATCHER},code=~"{SERVER_ERRORS}"}}[5m])) / '
            f"sum(rate(signal_requests_total{{{LOCATION_MATCHER}}}[5m]))"
        ),
        detector=DetectorSettings(
            direction="up", absolute_floor=0.0002, slow_threshold=3.0, fast_threshold=8.0
        ),
    ),
    SeriesConfig(
        name="gpu_utilisation",
        # GKE's accelerator duty cycle (percent), read through Managed Prometheus.
        query=(
            "avg(kubernetes_io:container_accelerator_duty_cycle"
            f'{{{LOCATION_MATCHER},container_name="triton"}})'
        ),
        detector=DetectorSettings(
            direction="both", absolute_floor=1.0, slow_threshold=3.0, fast_threshold=8.0
        ),
    ),
)


class AlertingConfig(MetricServiceConfig):
    series: tuple[SeriesConfig, ...] = Field(default=DEFAULT_SERIES, min_length=1)
    # Read each series' history on start so the baseline is ready at once.
    backfill: bool = True
    listen_port: int = Field(default=9465, ge=1, le=65535)  # beside the scaler's 9464

    @field_validator("series")
    @classmethod
    def _unique(cls, value: tuple[SeriesConfig, ...]) -> tuple[SeriesConfig, ...]:
        names = [s.name for s in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"series names must be unique ({', '.join(duplicates)} repeated)")
        return value


def load(path: Path | None = None, env: Mapping[str, str] = os.environ) -> AlertingConfig:
    """The configuration from ``path``, else from the file ``$SIGNAL_ALERTING_CONFIG``."""
    path = config_path(path, env, CONFIG_ENV)
    return load_model(AlertingConfig, str(path), read_config_file(path))
