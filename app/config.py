"""The service's configuration: pydantic models with embedded defaults, validated once.

``python -m app serve`` with no configuration runs everything in-process (local ONNX
model, no Redis, no cloud). A YAML file and command-line flags override the defaults;
errors name the key, the value given and what is allowed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    FilePath,
    ValidationError,
    field_validator,
    model_validator,
)

from app.config_errors import ConfigError as FileConfigError
from app.config_errors import ConfigModel, Problem, format_problems, problems_from, read_config_file
from app.model import DEFAULT_MODEL_DIR
from app.settings.cache import CacheConfig
from app.settings.features import DEFAULT_VENUE, FeatureParams
from app.settings.ingest import IngestConfig
from app.settings.publish import PublishConfig
from app.settings.shards import ShardingConfig
from app.settings.spool import SpoolConfig
from app.settings.telemetry import TelemetryConfig
from app.settings.warehouse import WarehouseConfig

# A DNS name (RFC 1123 labels; "_" too, as Kubernetes service names may carry it).
_DNS_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?")


def check_host(value: str) -> str:
    """``value`` if it is an IP address (IPv6 with or without brackets) or a DNS name."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(value.removeprefix("[").removesuffix("]"))
        return value
    if _DNS_NAME.fullmatch(value):
        return value
    raise ValueError("not an IP address or a DNS name")


def check_host_port(value: str) -> str:
    """``value`` if it is ``host:port`` with a valid host and a port 1 to 65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("not host:port with a port 1 to 65535")
    check_host(host)
    return value


def _check_venue(name: str) -> str:
    """`app.sessions.check_venue`, imported when there is a venue to check: the calendars
    (exchange_calendars, pandas) stay out of `import app.config`, which the Pulumi program
    runs with its own packages only."""
    from app.sessions import check_venue

    return check_venue(name)


class _Section(ConfigModel):
    """A section of the service's configuration: unknown keys and non-finite numbers refused."""


class FeatureConfig(FeatureParams, ConfigModel):
    """The symbol universe and each symbol's venue; the feature parameters (indicator
    periods in ticks, ``max_gap_s``) are ``FeatureParams``, which the model must match."""

    n_symbols: int = Field(default=1000, ge=1, le=10_000_000)
    venue: str = DEFAULT_VENUE  # exchange calendar code (exchange_calendars) of every symbol
    symbol_venues: dict[int, str] = Field(default_factory=dict)  # symbol id -> another venue

    @field_validator("venue")
    @classmethod
    def _known_venue(cls, value: str) -> str:
        return _check_venue(value)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        for symbol, venue in self.symbol_venues.items():
            where = f"symbol_venues.{symbol}"
            if not 0 <= symbol < self.n_symbols:
                yield Problem(where, "not a symbol id", symbol, f"0 to {self.n_symbols - 1}")
            try:
                _check_venue(venue)
            except ValueError as exc:
                yield Problem(where, str(exc))


class ModelConfig(_Section):
    """Which built model the in-process backend loads, and how it runs it: ``fused`` (compiled
    into the feature path, ``app.fused``) or ``onnxruntime`` (``intra_op_threads`` is its)."""

    dir: Path = Path(DEFAULT_MODEL_DIR)
    variant: Literal["fp32", "int8", "int4"] = "fp32"
    backend: Literal["fused", "onnxruntime"] = "fused"
    intra_op_threads: int = Field(default=1, ge=1, le=256)
    build_if_missing: bool = True


class BatcherConfig(_Section):
    """The dynamic micro-batcher in front of the inference backend."""

    max_batch_size: int = Field(default=256, ge=1, le=65536)
    max_queue_delay_us: int = Field(default=500, ge=0, le=1_000_000)
    max_queue_rows: int = Field(default=16384, ge=1)
    max_concurrent_batches: int = Field(default=2, ge=1, le=64)

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> BatcherConfig:
        if self.max_queue_rows < self.max_batch_size:
            raise ValueError(
                f"max_queue_rows = {self.max_queue_rows}: must be >= max_batch_size "
                f"({self.max_batch_size})"
            )
        return self


class KServeConfig(_Section):
    """A KServe-v2 gRPC inference server (Triton in production, MLServer locally).

    Unset ``url`` means in-process inference only.
    """

    url: str | None = None  # host:port
    model_name: str = "signal_mlp"
    model_version: str = ""
    timeout_s: float = Field(default=0.5, gt=0, le=60)
    failure_threshold: int = Field(default=3, ge=1)
    reset_timeout_s: float = Field(default=2.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        return None if value is None else check_host_port(value)


class TlsConfig(_Section):
    """Server TLS for use outside the mesh (inside it, Istio's mTLS is the default).

    With ``client_ca_file``, mutual TLS: clients must present a certificate it signed.
    """

    cert_file: FilePath  # PEM certificate chain
    key_file: FilePath  # PEM private key
    client_ca_file: FilePath | None = None


class ServerConfig(_Section):
    """The gRPC API."""

    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    max_batch_ticks: int = Field(default=10_000, ge=1, le=1_000_000)
    grace_s: float = Field(default=20.0, ge=0, le=300)  # spot preemption gives ~25 s
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    tls: TlsConfig | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value)


class AppConfig(_Section):
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    batcher: BatcherConfig = BatcherConfig()
    kserve: KServeConfig = KServeConfig()
    server: ServerConfig = ServerConfig()
    # Ingestion: tick bounds, idempotency, deadlines (app.ingest); the spool acks wait for.
    ingest: IngestConfig = IngestConfig()
    spool: SpoolConfig = SpoolConfig()
    # The data path: defaults need nothing running (L1, DuckDB, local files).
    cache: CacheConfig = CacheConfig()
    publish: PublishConfig = PublishConfig()
    warehouse: WarehouseConfig = WarehouseConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    # Symbols in shards, each owned by one replica (app.shards); coordinated through cache.redis.
    sharding: ShardingConfig = ShardingConfig()

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        if self.sharding.enabled and self.cache.redis is None:
            yield Problem(
                "sharding.enabled", "needs cache.redis: the replicas coordinate their shards "
                "(leases, snapshots, journals) through that Redis Cluster", True,
            )  # fmt: skip
        if self.sharding.enabled and self.sharding.forward and self.server.tls is not None:
            yield Problem(
                "sharding.forward", "replicas forward to each other in plaintext (inside the "
                "mesh, Istio's mTLS); with server.tls set, turn forwarding off (clients follow "
                "the refusals to the owners)", True,
            )  # fmt: skip


class ConfigError(ValueError):
    """Invalid configuration; the message names every bad key, its value and what is allowed."""


def format_validation_error(
    exc: ValidationError, source: str, model: type[BaseModel] | None = None
) -> str:
    """One line per problem in the repository's one format (`app.config_errors`):
    ``source: key.path: message (got value); allowed: ...``."""
    return format_problems(source, problems_from(exc, model))


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> AppConfig:
    """Defaults, then the YAML file at ``path``, then ``overrides`` (``{"server.port": 1}``)."""
    data: dict[str, Any] = {}
    source = "configuration"
    if path is not None:
        source = str(path)
        try:
            data = read_config_file(path)
        except FileConfigError as exc:
            raise ConfigError(str(exc)) from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        node = data.setdefault(section, {})
        if not isinstance(node, dict):
            problem = Problem(section, "must be a mapping of keys", node)
            raise ConfigError(format_problems(source, [problem]))
        node[key] = value
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, AppConfig)) from None
