"""The predictive scaler's configuration: one typed, validated, frozen model.

Read from a JSON or YAML file (`--config`, or the file named by `SIGNAL_AUTOSCALE_CONFIG`),
camelCase keys. Every error names the file, the key path, the value and what is allowed, in
the repository's one format (`app.config_errors`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from app.autoscale.prometheus import PrometheusClient
from app.autoscale.scaler import ScalingPolicy
from app.config_errors import CamelConfigModel as Model
from app.config_errors import ConfigError, Problem, load_model, read_config_file
from app.gcp_auth import AccessTokens

__all__ = ["ConfigError", "Model", "load_model", "read_config_file"]

CONFIG_ENV = "SIGNAL_AUTOSCALE_CONFIG"
REGION_PLACEHOLDER = "{region}"
# Managed Prometheus labels every series with its cluster's `location`: the region, or a zone
# of it for a zonal cluster (dev's); this label matcher takes either.
LOCATION_MATCHER = 'location=~"{region}(-[a-z])?"'
# Requests per second the signal service receives in one region: its request counter
# (app/telemetry.py; the HPA's metric too), summed over pods, methods and codes.
DEFAULT_RATE_QUERY = f"sum(rate(signal_requests_total{{{LOCATION_MATCHER}}}[2m]))"
URL_PATTERN = r"^https?://[A-Za-z0-9.\-\[\]:]+(/\S*)?$"


def check_region_query(cls: type, value: str) -> str:
    """A PromQL query for one region at a time: {region} stands where each region goes."""
    if REGION_PLACEHOLDER not in value:
        raise ValueError(f"must contain {REGION_PLACEHOLDER} (replaced by each region)")
    return value


def for_region(query: str, region: str) -> str:
    """``query`` as asked of one region."""
    return query.replace(REGION_PLACEHOLDER, region)


class MetricServiceConfig(Model):
    """What both metric services (this scaler, the anomaly detector) are configured with
    alike: the Prometheus they read, the regions they read it for, where they serve their
    own metrics."""

    # The Prometheus HTTP API: Cloud Monitoring's for Managed Prometheus data
    # (https://monitoring.googleapis.com/v1/projects/<project>/location/global/prometheus,
    # auth "google"), or any Prometheus (auth "none").
    prometheus_url: str = Field(pattern=URL_PATTERN)
    prometheus_auth: Literal["none", "google"] = "none"
    regions: tuple[str, ...] = Field(min_length=1)
    listen_host: str = "0.0.0.0"
    listen_port: int = Field(default=9464, ge=1, le=65535)
    query_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Region names as Google Cloud spells them (``us-east4``), each once."""
        if len(set(value)) != len(value):
            raise ValueError("regions are listed twice")
        for region in value:
            if not re.fullmatch(r"[a-z]+-[a-z]+[0-9]+", region):
                raise ValueError(f"{region!r} is not a region name such as us-east4")
        return value

    def prometheus_client(self) -> PrometheusClient:
        """The client the configuration asks for ("google": the workload's Google access
        token)."""
        tokens = AccessTokens() if self.prometheus_auth == "google" else None
        return PrometheusClient(self.prometheus_url, self.query_timeout_seconds, tokens)


class AutoscaleConfig(MetricServiceConfig):
    rate_query: str = DEFAULT_RATE_QUERY
    policy: ScalingPolicy = ScalingPolicy()
    history_days: int = Field(default=7, ge=2, le=28)
    refit_hours: int = Field(default=24, ge=1, le=168)
    # Days of the week (Monday = 0) that teach the intraday shape; other days move only
    # the level (markets are closed, the shape would be wrong).
    trading_weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)

    _query = field_validator("rate_query")(check_region_query)

    @field_validator("trading_weekdays")
    @classmethod
    def _weekdays(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 0 <= d <= 6 for d in value) or len(set(value)) != len(value):
            raise ValueError("weekdays must be unique, 0 (Monday) to 6 (Sunday)")
        return value

    def query_for(self, region: str) -> str:
        return for_region(self.rate_query, region)


def load(path: Path | None = None, env: Mapping[str, str] = os.environ) -> AutoscaleConfig:
    """The configuration from ``path``, else from the file ``$SIGNAL_AUTOSCALE_CONFIG``."""
    path = config_path(path, env, CONFIG_ENV)
    return load_model(AutoscaleConfig, str(path), read_config_file(path))


def config_path(path: Path | None, env: Mapping[str, str], variable: str) -> Path:
    """``path``, else the file the environment variable names."""
    if path is not None:
        return path
    named = env.get(variable)
    if not named:
        raise ConfigError(
            variable, [Problem("", f"no configuration: pass --config FILE or set {variable}")]
        )
    return Path(named)
