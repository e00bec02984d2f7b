"""Telemetry's configuration (section ``telemetry``; metrics, logs and traces are
`app.telemetry`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from app.config_errors import ConfigModel

# Events logged per tick, per request or per cache lookup: sampled unless configured otherwise.
DEFAULT_LOG_SAMPLING: dict[str, int] = {
    "ticks_ingested": 100,
    "signal_served": 100,
    "cache_lookup": 1000,
    "warehouse_flush": 10,
    "request_rejected": 100,
}


class TelemetryConfig(ConfigModel):
    """Where metrics are served, how logs are sampled, whether and where traces go."""

    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=9464, ge=0, le=65535)  # None: no HTTP endpoint
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_sampling: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_LOG_SAMPLING))
    service_name: str = Field(default="signal-service", min_length=1)
    trace_sample_ratio: float = Field(default=0.01, ge=0.0, le=1.0)
    otlp_endpoint: str | None = None  # e.g. "otel-collector:4317"; None: spans not exported

    @field_validator("log_sampling")
    @classmethod
    def _one_in_n(cls, value: dict[str, int]) -> dict[str, int]:
        for event, every in value.items():
            if every < 1:
                raise ValueError(f"log_sampling.{event} = {every}: must be >= 1 (keep one in N)")
        return value
