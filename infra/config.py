"""Typed stack configuration: the only place the Pulumi program reads configuration.

`Pulumi.<stack>.yaml` → `StackConfig.load(...)` → one validated, frozen model. Keys are
camelCase in YAML (Pulumi's convention) and snake_case in Python. Every error names the
stack file, the key path, the bad value and what is allowed, and all errors of a file are
reported together.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

NAMESPACE = "signal-platform"
CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
REQUIRED_LABELS = ("cost-center", "env", "owner")
DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
PROJECT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
PUBSUB_TOPIC_RE = re.compile(
    r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/topics/[A-Za-z][\w.~+%-]{2,254}$"
)
# Pub/Sub topic ids: 3-255 characters, starting with a letter, not starting with "goog".
TOPIC_ID_RE = re.compile(r"^(?!goog)[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")
# A protobuf duration as Istio and Envoy take it: "500ms", "2s", "3600s".
DURATION_PATTERN = r"^\d+(ms|s)$"


class ConfigError(ValueError):
    """Every problem found in one stack's configuration, each on its own line."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: {p}" for p in problems]
        super().__init__(
            f"invalid stack configuration ({len(problems)} problem(s)):\n" + "\n".join(lines)
        )


@dataclass(frozen=True)
class Problem:
    path: str
    value: Any
    message: str
    allowed: str = ""

    def __str__(self) -> str:
        text = f"{self.path}: {self.message} (got {self.value!r})"
        return f"{text}; allowed: {self.allowed}" if self.allowed else text


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Catalog:
    """The dated GPU catalogue (`infra/catalog.yaml`)."""

    as_of: str
    source: str
    zones: Mapping[str, tuple[str, ...]]
    gpu_zones: Mapping[str, Mapping[str, tuple[str, ...]]]
    machines: Mapping[str, Mapping[str, Any]]

    def gpus_in(self, region: str) -> Mapping[str, tuple[str, ...]]:
        return self.gpu_zones.get(region, {})


@cache
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    raw = yaml.safe_load(path.read_text())
    regions = raw["regions"]
    return Catalog(
        as_of=str(raw["as_of"]),
        source=raw["source"],
        zones={r: tuple(v["zones"]) for r, v in regions.items()},
        gpu_zones={
            r: {g: tuple(z) for g, z in (v.get("gpus") or {}).items()} for r, v in regions.items()
        },
        machines=raw["machines"],
    )


# --------------------------------------------------------------------------- models


class Model(BaseModel):
    """Base for every config section: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class AuthorizedNetwork(Model):
    cidr: str
    name: str

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        network = ipaddress.ip_network(value, strict=False)
        if network.prefixlen == 0:
            raise ValueError("0.0.0.0/0 would expose the control plane to the internet")
        return str(network)


class MaintenanceWindow(Model):
    # RFC 5545 recurrence, in UTC: weekends, outside trading hours.
    start_time: str = "2026-01-03T04:00:00Z"
    end_time: str = "2026-01-03T10:00:00Z"
    recurrence: str = "FREQ=WEEKLY;BYDAY=SA,SU"


class ClusterSettings(Model):
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = "REGULAR"
    kubernetes_minor_version: str = "1.33"
    private_endpoint: bool = False
    master_authorized_networks: tuple[AuthorizedNetwork, ...] = (
        AuthorizedNetwork(cidr="10.0.0.0/8", name="internal"),
    )
    maintenance: MaintenanceWindow = MaintenanceWindow()
    deletion_protection: bool | None = None  # None: on in prod, off elsewhere
    # GKE security posture: BASIC is free; ENTERPRISE adds fleet-wide findings at a cost.
    security_posture: Literal["BASIC", "ENTERPRISE"] = "BASIC"
    vulnerability_scanning: Literal["VULNERABILITY_BASIC", "VULNERABILITY_ENTERPRISE"] = (
        "VULNERABILITY_BASIC"
    )
    # Zones the cluster's nodes run in (the first N of the region's); the system pool's
    # min/max node counts are per zone, GPU pools' counts are totals across their zones.
    node_zones: int = Field(default=3, ge=1, le=4)
    # Serves Cloud Monitoring metrics (GPU duty cycle, request rates) to the HPAs.
    metrics_adapter_image: str = Field(
        default="gcr.io/gke-release/custom-metrics-stackdriver-adapter:v0.14.2-gke.0",
        min_length=1,
    )

    @field_validator("kubernetes_minor_version")
    @classmethod
    def _minor(cls, value: str) -> str:
        if not re.fullmatch(r"1\.\d{2}", value):
            raise ValueError("must be a Kubernetes minor version such as 1.33")
        return value


# Istio minor → the Kubernetes minors it supports (istio.io/latest/docs/releases/supported-releases).
ISTIO_KUBERNETES: Mapping[str, tuple[str, ...]] = {
    "1.28": ("1.30", "1.31", "1.32", "1.33", "1.34"),
    "1.29": ("1.31", "1.32", "1.33", "1.34", "1.35"),
    "1.30": ("1.32", "1.33", "1.34", "1.35", "1.36"),
}


class ConnectionPool(Model):
    """Envoy connection pool toward a service: persistent HTTP/2, bounded queues."""

    max_connections: int = Field(default=1024, ge=1, le=100_000)
    http2_max_requests: int = Field(default=4096, ge=1, le=1_000_000)
    http1_max_pending_requests: int = Field(default=1024, ge=1, le=100_000)
    # 0 = unlimited: connections stay open and are reused (no per-request TLS handshakes).
    max_requests_per_connection: int = Field(default=0, ge=0)
    connect_timeout: str = Field(default="1s", pattern=DURATION_PATTERN)
    idle_timeout: str = Field(default="3600s", pattern=DURATION_PATTERN)
    tcp_keepalive: str = Field(default="300s", pattern=DURATION_PATTERN)


class OutlierDetection(Model):
    consecutive_errors: int = Field(default=5, ge=1, le=1000)  # consecutive 5xx / gRPC errors
    interval: str = Field(default="10s", pattern=DURATION_PATTERN)
    base_ejection_time: str = Field(default="30s", pattern=DURATION_PATTERN)
    max_ejection_percent: int = Field(default=50, ge=1, le=100)


class ApiRoute(Model):
    """Timeouts and retries of the public gRPC API at the gateway."""

    host: str = Field(default="api.signals.internal", pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
    tls_secret: str = Field(default="signal-api-tls", pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    timeout: str = Field(default="2s", pattern=DURATION_PATTERN)
    retries: int = Field(default=2, ge=0, le=10)
    per_try_timeout: str = Field(default="500ms", pattern=DURATION_PATTERN)
    retry_on: str = "connect-failure,refused-stream,unavailable,cancelled,resource-exhausted"


class MeshSettings(Model):
    """The Istio mesh of every cluster: versions, traffic policy, cost-aware locality."""

    istio_version: str = Field(default="1.30.5", pattern=r"^\d+\.\d+\.\d+$")
    chart_repository: str = Field(
        default="https://istio-release.storage.googleapis.com/charts", pattern=r"^https://"
    )
    istiod_replicas: int = Field(default=2, ge=1, le=10)
    gateway_replicas: int = Field(default=2, ge=1, le=50)
    trace_sampling_percent: float = Field(default=1.0, ge=0, le=100)
    # OpenTelemetry collector (host:port) the sidecars send spans to.
    tracing_collector: str = Field(
        default="opentelemetry-collector.observability.svc.cluster.local:4317",
        pattern=r"^[a-z0-9.-]+:\d+$",
    )
    connection_pool: ConnectionPool = ConnectionPool()
    outlier_detection: OutlierDetection = OutlierDetection()
    api: ApiRoute = ApiRoute()
    # Share (percent) of GPU inference each region receives, e.g. the cheapest spot region
    # the most; every deployed region, summing to 100. Empty: equal shares.
    region_weights: dict[str, int] = {}

    @field_validator("region_weights")
    @classmethod
    def _weights(cls, value: dict[str, int]) -> dict[str, int]:
        for region, weight in value.items():
            if not 0 <= weight <= 100:
                raise ValueError(f"weight of {region} must be between 0 and 100")
        if value and sum(value.values()) != 100:
            raise ValueError(f"weights must sum to 100 (they sum to {sum(value.values())})")
        return value


class NodePoolBase(Model):
    machine_type: str
    min_nodes: int = Field(default=0, ge=0)
    max_nodes: int = Field(default=3, ge=1)
    disk_size_gb: int = Field(default=100, ge=20)
    disk_type: Literal["pd-balanced", "pd-ssd", "pd-standard"] = "pd-balanced"


class SystemPool(NodePoolBase):
    machine_type: str = "e2-standard-4"
    min_nodes: int = Field(default=1, ge=1)
    max_nodes: int = Field(default=3, ge=1)


class GpuPool(NodePoolBase):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,20}$")
    machine_type: str = "g2-standard-8"
    accelerator_type: str = "nvidia-l4"
    accelerator_count: int = Field(default=1, ge=1)
    spot: bool = True
    max_nodes: int = Field(default=4, ge=1)
    max_shared_clients_per_gpu: int = Field(default=2, ge=1, le=48)
    sharing_strategy: Literal["TIME_SHARING", "MPS"] = "TIME_SHARING"
    driver_version: Literal["DEFAULT", "LATEST"] = "LATEST"


class NodePools(Model):
    system: SystemPool = SystemPool()
    gpu: tuple[GpuPool, ...] = (GpuPool(name="l4-spot"),)


class NetworkSettings(Model):
    flow_log_sampling: float = Field(default=0.5, gt=0, le=1)
    nat_log_filter: Literal["ERRORS_ONLY", "TRANSLATIONS_ONLY", "ALL"] = "ERRORS_ONLY"


class RegionNetwork(Model):
    """Address plan of one region; derived from the region's position unless overridden."""

    nodes_cidr: str
    pods_cidr: str
    services_cidr: str
    master_cidr: str

    @field_validator("nodes_cidr", "pods_cidr", "services_cidr", "master_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        return str(ipaddress.ip_network(value, strict=True))

    @classmethod
    def for_index(cls, index: int) -> RegionNetwork:
        return cls(
            nodes_cidr=f"10.{index}.0.0/20",
            pods_cidr=f"10.{64 + 4 * index}.0.0/14",
            services_cidr=f"10.{128 + index}.0.0/20",
            master_cidr=f"172.16.{index}.0/28",
        )


class RedisSettings(Model):
    shard_count: int = Field(default=3, ge=1, le=250)
    replica_count: int = Field(default=1, ge=0, le=5)
    node_type: Literal[
        "REDIS_SHARED_CORE_NANO",
        "REDIS_STANDARD_SMALL",
        "REDIS_HIGHMEM_MEDIUM",
        "REDIS_HIGHMEM_XLARGE",
    ] = "REDIS_HIGHMEM_MEDIUM"
    persistence: Literal["AOF", "RDB", "DISABLED"] = "AOF"
    aof_append_fsync: Literal["EVERYSEC", "ALWAYS", "NO"] = "EVERYSEC"
    rdb_snapshot_period: Literal["ONE_HOUR", "SIX_HOURS", "TWELVE_HOURS", "TWENTY_FOUR_HOURS"] = (
        "ONE_HOUR"
    )
    # Weekly maintenance window (UTC start hour, one hour long): a weekend, outside trading.
    maintenance_day: Literal[
        "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"
    ] = "SUNDAY"
    maintenance_hour: int = Field(default=5, ge=0, le=23)


class BigQuerySettings(Model):
    location: str = "US"
    partition_expiration_days: int = Field(default=90, ge=1)
    time_travel_hours: int = Field(default=168, ge=48, le=168)
    tables: tuple[Literal["ticks", "features", "signals"], ...] = ("ticks", "features", "signals")
    view_refresh_minutes: int = Field(default=30, ge=1, le=10080)
    dataset_id: str = Field(default="signals", pattern=r"^[a-z][a-z0-9_]{0,1023}$")


class PubSubSettings(Model):
    ticks_topic: str = "ticks"
    signals_topic: str = "signals"
    message_retention_days: int = Field(default=7, ge=1, le=31)
    max_delivery_attempts: int = Field(default=10, ge=5, le=100)
    ack_deadline_seconds: int = Field(default=30, ge=10, le=600)
    # `<topic><batchSuffix>`: the compressed batch frames of each stream, opaque bytes to
    # Pub/Sub, so topics without a schema (infra/messaging.py says why).
    batch_suffix: str = Field(default="-batches", pattern=r"^[A-Za-z0-9._~+%-]{1,32}$")
    dead_letter_topic: str = "signals-dead-letter"
    min_retry_backoff_seconds: int = Field(default=10, ge=0, le=600)
    max_retry_backoff_seconds: int = Field(default=600, ge=0, le=600)


class Resources(Model):
    requests: dict[str, str]
    limits: dict[str, str]


class Workload(Model):
    image: str = Field(min_length=1)
    replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=20, ge=1)
    resources: Resources
    # Spot VMs get 30 s notice before preemption: drain and exit inside it.
    termination_grace_seconds: int = Field(default=25, ge=5, le=25)


class SignalServiceWorkload(Workload):
    target_cpu_percent: int = Field(default=70, ge=10, le=95)
    # gRPC requests per second one pod serves at its target latency.
    target_requests_per_second: int = Field(default=500, ge=1)


class TritonModel(Model):
    """The model Triton serves and its dynamic batching: the values of its `config.pbtxt`
    (app.model.triton renders it); the service's micro-batcher never exceeds maxBatchSize."""

    # The name `python -m app.model build` gives the model (app.model.triton).
    name: str = Field(default="signal_mlp", pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    max_batch_size: int = Field(default=256, ge=1, le=4096)
    preferred_batch_sizes: tuple[int, ...] = (64, 128, 256)
    max_queue_delay_microseconds: int = Field(default=500, ge=0, le=1_000_000)
    instance_count: int = Field(default=2, ge=1, le=16)


class TritonWorkload(Workload):
    # Bounded by GPU capacity: the default GPU pool holds 4 nodes x 2 shared clients.
    max_replicas: int = Field(default=8, ge=1)
    # The GPU utilisation target: scale out when the average duty cycle passes it.
    target_gpu_duty_cycle: int = Field(default=85, ge=10, le=100)
    model: TritonModel = TritonModel()


class Workloads(Model):
    signal_service: SignalServiceWorkload = SignalServiceWorkload(
        image="signal-service:dev",
        resources=Resources(
            requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "2", "memory": "2Gi"}
        ),
    )
    triton: TritonWorkload = TritonWorkload(
        image="tritonserver:24.08-py3",
        resources=Resources(
            requests={"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
            limits={"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        ),
    )


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
    """Predictive scaling and anomaly-based alerting (issue 9): per-region services."""

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
        missing = [f"requests.{r}" for r in ("cpu", "memory") if r not in value.requests]
        missing += [] if "memory" in value.limits else ["limits.memory"]
        if missing:
            raise ValueError(f"resources need {', '.join(missing)}")
        return value


class Budget(Model):
    monthly_usd: float
    alert_thresholds: tuple[float, ...] = (0.5, 0.9, 1.0)
    # The Cloud Billing account the budget watches; without one no budget is declared.
    billing_account: str | None = Field(
        default=None, pattern=r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$"
    )


class NotificationChannel(Model):
    """Where alerts go: an email address, an HTTPS webhook or a Pub/Sub topic."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")
    type: Literal["email", "webhook_tokenauth", "pubsub"]
    address: str

    @field_validator("address")
    @classmethod
    def _address(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("type")
        if kind == "email" and not EMAIL_RE.match(value):
            raise ValueError("not an email address")
        if kind == "webhook_tokenauth" and not value.startswith("https://"):
            raise ValueError("webhooks must be https:// URLs")
        if kind == "pubsub" and not PUBSUB_TOPIC_RE.match(value):
            raise ValueError("must be projects/<project>/topics/<topic>")
        return value


class AlertThresholds(Model):
    latency_p95_ms: float = Field(default=100, gt=0)
    error_rate: float = Field(default=0.001, gt=0, lt=1)
    triton_queue_ms: float = Field(default=20, gt=0)
    gpu_duty_cycle_min: float = Field(default=60, ge=0, le=100)
    gpu_duty_cycle_max: float = Field(default=95, ge=0, le=100)
    spot_preemptions_per_hour: int = Field(default=5, ge=1)
    redis_memory_utilization: float = Field(default=0.85, gt=0, lt=1)


class ObservabilitySettings(Model):
    notification_channels: tuple[NotificationChannel, ...] = ()
    alerts: AlertThresholds = AlertThresholds()
    slo_goal: float = Field(default=0.9995, gt=0.9, lt=1)
    slo_window_days: int = Field(default=30, ge=1, le=30)
    audit_log_retention_days: int = Field(default=400, ge=1, le=3650)


POOL_USAGE_KEY_RE = re.compile(r"^(?:([a-z]+-[a-z]+\d+)/)?([a-z][a-z0-9-]{0,20})$")


class CostSettings(Model):
    """Usage assumptions `python -m tools cost` prices the plan with: the plan says what
    exists, these say how much of it runs and how much data flows through it."""

    # Share of a spot pool's node-hours that get spot capacity; the rest runs on-demand in the
    # fallback pool (the spot-first ComputeClass targets 95%).
    spot_share: float = Field(default=0.95, ge=0, le=1)
    # Where an autoscaled pool averages between its min and max nodes (0 = always at min),
    # for pools without an averageNodes entry.
    utilisation: float = Field(default=0.25, ge=0, le=1)
    # Average nodes of a pool across its zones, by pool name ("l4-spot") or for one region's
    # pool ("europe-west4/l4-spot", which wins over the plain name).
    average_nodes: dict[str, float] = {}
    signals_per_month: int = Field(default=100_000, ge=1)
    bigquery_storage_gib: float = Field(default=100, ge=0)
    bigquery_scanned_tib_per_month: float = Field(default=1, ge=0)
    pubsub_gib_per_month: float = Field(default=50, ge=0)  # published + delivered
    nat_gib_per_month: float = Field(default=50, ge=0)  # through each region's NAT
    logging_gib_per_month: float = Field(default=50, ge=0)
    bucket_storage_gib: float = Field(default=10, ge=0)  # in each bucket
    artifact_storage_gib: float = Field(default=20, ge=0)  # in each registry

    @field_validator("average_nodes")
    @classmethod
    def _average_nodes(cls, value: dict[str, float]) -> dict[str, float]:
        for key, nodes in value.items():
            if not POOL_USAGE_KEY_RE.match(key):
                raise ValueError(f"{key!r} is not a pool name or region/pool")
            if nodes < 0:
                raise ValueError(f"average nodes of {key} must be >= 0")
        return value


class RegionOverride(Model):
    node_pools: NodePools | None = None
    cluster: ClusterSettings | None = None
    redis: RedisSettings | None = None
    network: RegionNetwork | None = None


class StackConfig(Model):
    """The whole stack, as validated once at program start."""

    stack: str
    project_id: str
    environment: Literal["dev", "staging", "prod"]
    regions: tuple[str, ...] = Field(min_length=1)
    labels: dict[str, str]
    budget: Budget
    network: NetworkSettings = NetworkSettings()
    cluster: ClusterSettings = ClusterSettings()
    node_pools: NodePools = NodePools()
    region_overrides: dict[str, RegionOverride] = {}
    redis: RedisSettings = RedisSettings()
    bigquery: BigQuerySettings = BigQuerySettings()
    pubsub: PubSubSettings = PubSubSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    workloads: Workloads = Workloads()
    mesh: MeshSettings = MeshSettings()
    intelligence: IntelligenceSettings = IntelligenceSettings()
    cost: CostSettings = CostSettings()

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def deletion_protection(self) -> bool:
        setting = self.cluster.deletion_protection
        return self.is_prod if setting is None else setting

    def region(self, name: str) -> RegionConfig:
        """The settings of one region: the stack's, with that region's overrides applied."""
        override = self.region_overrides.get(name) or RegionOverride()
        index = self.regions.index(name)
        return RegionConfig(
            name=name,
            index=index,
            zones=load_catalog().zones[name],
            network=override.network or RegionNetwork.for_index(index),
            cluster=override.cluster or self.cluster,
            node_pools=override.node_pools or self.node_pools,
            redis=override.redis or self.redis,
        )

    # ---- loading

    @classmethod
    def load(cls, stack: str, values: Mapping[str, Any], source: str | None = None) -> StackConfig:
        """Validate a Pulumi config map (`{"signal-platform:regions": "[...]", ...}`)."""
        source = source or f"Pulumi.{stack}.yaml"
        data, problems = _namespace_values(values)
        model: StackConfig | None = None
        try:
            model = cls.model_validate({"stack": stack, **data})
        except ValidationError as exc:
            problems += [_from_pydantic(err) for err in exc.errors()]
        if model is not None:
            problems += _semantic_problems(model, load_catalog())
        if problems:
            raise ConfigError(source, problems)
        assert model is not None
        return model

    @classmethod
    def from_stack_file(cls, path: Path, overrides: Mapping[str, str] | None = None) -> StackConfig:
        """Read `Pulumi.<stack>.yaml` the way `pulumi config` hands it to the program."""
        stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        values = read_stack_file(path, project=NAMESPACE)
        return cls.load(stack, {**values, **(overrides or {})}, source=path.name)

    @classmethod
    def from_pulumi(cls) -> StackConfig:
        """Read the running program's configuration (what the language host passed in)."""
        import pulumi
        from pulumi.runtime import config as runtime_config

        # The SDK has no public "all keys" accessor; its config map and the env fallback are
        # what pulumi.Config reads, so reading them sees exactly the same values.
        values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
        return cls.load(pulumi.get_stack(), values)


@dataclass(frozen=True)
class RegionConfig:
    name: str
    index: int
    zones: tuple[str, ...]
    network: RegionNetwork
    cluster: ClusterSettings
    node_pools: NodePools
    redis: RedisSettings


# --------------------------------------------------------------------------- helpers


def read_stack_file(path: Path, project: str) -> dict[str, str]:
    """`config:` of a stack file as Pulumi's language host passes it: `ns:key` → string
    (objects and lists JSON-encoded); keys without a namespace belong to the project."""
    raw = yaml.safe_load(path.read_text()) or {}
    config = raw.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(path.name, [Problem("config", config, "must be a mapping of keys")])
    values: dict[str, str] = {}
    for key, value in config.items():
        full = key if ":" in key else f"{project}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            raise ConfigError(
                path.name, [Problem(full, "<secure>", "secrets need the Pulumi CLI to decrypt")]
            )
        values[full] = value if isinstance(value, str) else json.dumps(value)
    return values


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _namespace_values(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Our namespace's keys, decoded; unknown keys are problems with the closest valid name."""
    known = {field.alias or name for name, field in StackConfig.model_fields.items()} - {"stack"}
    data: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in values.items():
        namespace, _, name = key.partition(":")
        if namespace != NAMESPACE:
            continue
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {NAMESPACE}:{close[0]}?" if close else "no such key"
            problems.append(Problem(key, value, f"unknown key, {hint}", ", ".join(sorted(known))))
            continue
        data[name] = _decode(value)
    if "projectId" not in data and "gcp:project" in values:
        data["projectId"] = values["gcp:project"]
    return data, problems


def _from_pydantic(err: Any) -> Problem:
    loc = [str(p) for p in err["loc"]]
    path = NAMESPACE + ":" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".")
    allowed = ""
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        allowed = str(ctx["expected"])
    elif err["type"] == "extra_forbidden":
        return Problem(path, err.get("input"), "unknown key")
    elif err["type"] == "missing":
        return Problem(path, None, "required key is missing")
    elif "ge" in ctx or "gt" in ctx or "le" in ctx or "lt" in ctx:
        bounds = {k: ctx[k] for k in ("ge", "gt", "le", "lt") if k in ctx}
        allowed = ", ".join(f"{_OPS[k]} {v}" for k, v in bounds.items())
    elif "pattern" in ctx:
        allowed = f"matching {ctx['pattern']}"
    message = err["msg"].removeprefix("Value error, ")
    return Problem(path, err.get("input"), message, allowed)


_OPS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _semantic_problems(cfg: StackConfig, catalog: Catalog) -> list[Problem]:
    """Rules that span fields, or need the catalogue."""
    ns = NAMESPACE
    problems: list[Problem] = _data_platform_problems(cfg)

    if not PROJECT_ID_RE.match(cfg.project_id):
        problems.append(
            Problem(
                f"{ns}:projectId",
                cfg.project_id,
                "not a valid GCP project id",
                "6-30 chars, lowercase letters, digits, hyphens, starting with a letter",
            )
        )

    for label in REQUIRED_LABELS:
        if not cfg.labels.get(label):
            problems.append(
                Problem(
                    f"{ns}:labels.{label}",
                    cfg.labels.get(label),
                    "required cost label is missing",
                    ", ".join(REQUIRED_LABELS) + " all set",
                )
            )
    for key, value in cfg.labels.items():
        if not LABEL_KEY_RE.match(key) or not LABEL_VALUE_RE.match(value):
            problems.append(
                Problem(
                    f"{ns}:labels.{key}",
                    value,
                    "not a valid GCP label",
                    "lowercase letters, digits, '_' and '-', at most 63 characters",
                )
            )
    if cfg.labels.get("env") and cfg.labels["env"] != cfg.environment:
        problems.append(
            Problem(
                f"{ns}:labels.env",
                cfg.labels["env"],
                "must equal the stack's environment",
                cfg.environment,
            )
        )

    if cfg.budget.monthly_usd <= 0:
        problems.append(
            Problem(
                f"{ns}:budget.monthlyUsd", cfg.budget.monthly_usd, "budget must be positive", "> 0"
            )
        )

    known_regions = sorted(catalog.zones)
    if len(set(cfg.regions)) != len(cfg.regions):
        problems.append(
            Problem(
                f"{ns}:regions", list(cfg.regions), "regions are listed twice", "unique regions"
            )
        )
    for i, region in enumerate(cfg.regions):
        if region not in catalog.zones:
            close = difflib.get_close_matches(region, known_regions, n=1)
            hint = f"unknown region (did you mean {close[0]}?)" if close else "unknown region"
            problems.append(Problem(f"{ns}:regions[{i}]", region, hint, ", ".join(known_regions)))
    for region in cfg.region_overrides:
        if region not in cfg.regions:
            problems.append(
                Problem(
                    f"{ns}:regionOverrides.{region}",
                    region,
                    "override for a region the stack does not deploy",
                    ", ".join(cfg.regions),
                )
            )

    for region in cfg.regions:
        if region not in catalog.zones:
            continue
        base = (
            f"{ns}:regionOverrides.{region}.nodePools"
            if region in cfg.region_overrides and cfg.region_overrides[region].node_pools
            else f"{ns}:nodePools"
        )
        problems += _pool_problems(cfg, cfg.region(region), base, catalog)

    images = {"signalService": cfg.workloads.signal_service, "triton": cfg.workloads.triton}
    if cfg.is_prod:
        for name, workload in images.items():
            if not DIGEST_RE.search(workload.image):
                problems.append(
                    Problem(
                        f"{ns}:workloads.{name}.image",
                        workload.image,
                        "prod images must be pinned by digest",
                        "name@sha256:<64 hex digits>",
                    )
                )
    for name, workload in images.items():
        if workload.replicas > workload.max_replicas:
            problems.append(
                Problem(
                    f"{ns}:workloads.{name}.replicas",
                    workload.replicas,
                    "replicas exceed maxReplicas",
                    f"<= {workload.max_replicas}",
                )
            )
    if cfg.is_prod and cfg.workloads.signal_service.replicas < 2:
        problems.append(
            Problem(
                f"{ns}:workloads.signalService.replicas",
                cfg.workloads.signal_service.replicas,
                "prod needs at least two replicas across zones",
                ">= 2",
            )
        )
    problems += _compute_problems(cfg, catalog)
    problems += _cost_problems(cfg)
    return problems


def _cost_problems(cfg: StackConfig) -> list[Problem]:
    """averageNodes entries must name a pool (and region) the stack deploys."""
    problems: list[Problem] = []
    for key in cfg.cost.average_nodes:
        match = POOL_USAGE_KEY_RE.match(key)
        if match is None:
            continue
        region, pool = match.groups()
        regions = [region] if region else list(cfg.regions)
        if region and region not in cfg.regions:
            problems.append(
                Problem(
                    f"{NAMESPACE}:cost.averageNodes.{key}",
                    key,
                    "region the stack does not deploy",
                    ", ".join(cfg.regions),
                )
            )
            continue
        known = load_catalog().zones
        pools = {
            name
            for r in regions
            if r in known
            for name in ("system", *(p.name for p in cfg.region(r).node_pools.gpu))
        }
        if pool not in pools:
            problems.append(
                Problem(
                    f"{NAMESPACE}:cost.averageNodes.{key}",
                    key,
                    "no such node pool",
                    ", ".join(sorted(pools)),
                )
            )
    return problems


def _pool_problems(
    cfg: StackConfig, region: RegionConfig, base: str, catalog: Catalog
) -> list[Problem]:
    problems: list[Problem] = []
    pools = region.node_pools
    if pools.system.min_nodes > pools.system.max_nodes:
        problems.append(
            Problem(
                f"{base}.system.minNodes",
                pools.system.min_nodes,
                f"minNodes is greater than maxNodes ({pools.system.max_nodes})",
                "minNodes <= maxNodes",
            )
        )
    offered = catalog.gpus_in(region.name)
    names = [p.name for p in pools.gpu]
    for i, pool in enumerate(pools.gpu):
        path = f"{base}.gpu[{i}]"
        if names.count(pool.name) > 1:
            problems.append(
                Problem(f"{path}.name", pool.name, "pool names must be unique", "unique names")
            )
        if pool.min_nodes > pool.max_nodes:
            problems.append(
                Problem(
                    f"{path}.minNodes",
                    pool.min_nodes,
                    f"minNodes is greater than maxNodes ({pool.max_nodes})",
                    "minNodes <= maxNodes",
                )
            )
        if pool.accelerator_type not in offered:
            problems.append(
                Problem(
                    f"{path}.acceleratorType",
                    pool.accelerator_type,
                    f"GPU type not offered in {region.name} (catalogue of {catalog.as_of})",
                    ", ".join(sorted(offered)) or "none: this region offers no GPUs",
                )
            )
        machine = catalog.machines.get(pool.machine_type)
        if machine is None:
            problems.append(
                Problem(
                    f"{path}.machineType",
                    pool.machine_type,
                    "not a GPU machine type",
                    ", ".join(sorted(catalog.machines)),
                )
            )
        elif machine["accelerator"] != pool.accelerator_type:
            problems.append(
                Problem(
                    f"{path}.acceleratorType",
                    pool.accelerator_type,
                    f"{pool.machine_type} carries {machine['accelerator']}",
                    machine["accelerator"],
                )
            )
        else:
            counts = machine.get("counts") or [machine["count"]]
            if pool.accelerator_count not in counts:
                problems.append(
                    Problem(
                        f"{path}.acceleratorCount",
                        pool.accelerator_count,
                        f"{pool.machine_type} takes a fixed number of GPUs",
                        ", ".join(map(str, counts)),
                    )
                )
    if cfg.is_prod:
        for i, pool in enumerate(pools.gpu):
            has_fallback = any(
                not other.spot and other.accelerator_type == pool.accelerator_type
                for other in pools.gpu
            )
            if pool.spot and not has_fallback:
                problems.append(
                    Problem(
                        f"{base}.gpu[{i}].spot",
                        True,
                        f"spot pool {pool.name!r} in {region.name} has no on-demand fallback",
                        f"an on-demand (spot: false) {pool.accelerator_type} pool beside it",
                    )
                )
    return problems


def _compute_problems(cfg: StackConfig, catalog: Catalog) -> list[Problem]:
    """Rules of the cluster, mesh and workload settings that span sections."""
    ns = NAMESPACE
    problems: list[Problem] = []
    mesh = cfg.mesh
    istio_minor = ".".join(mesh.istio_version.split(".")[:2])
    supported = ISTIO_KUBERNETES.get(istio_minor)
    if supported is None:
        problems.append(
            Problem(
                f"{ns}:mesh.istioVersion",
                mesh.istio_version,
                "Istio minor without a known Kubernetes support range",
                ", ".join(f"{m}.x" for m in ISTIO_KUBERNETES),
            )
        )
    for region in cfg.regions:
        if region not in catalog.zones:
            continue
        minor = cfg.region(region).cluster.kubernetes_minor_version
        if supported is not None and minor not in supported:
            override = cfg.region_overrides.get(region)
            where = (
                f"regionOverrides.{region}.cluster"
                if override is not None and override.cluster is not None
                else "cluster"
            )
            problems.append(
                Problem(
                    f"{ns}:{where}.kubernetesMinorVersion",
                    minor,
                    f"Istio {mesh.istio_version} does not support this Kubernetes version",
                    ", ".join(supported),
                )
            )

    if cfg.is_prod:
        settings = {"cluster": cfg.cluster} | {
            f"regionOverrides.{r}.cluster": o.cluster
            for r, o in cfg.region_overrides.items()
            if o.cluster is not None
        }
        for where, cluster in settings.items():
            if not DIGEST_RE.search(cluster.metrics_adapter_image):
                problems.append(
                    Problem(
                        f"{ns}:{where}.metricsAdapterImage",
                        cluster.metrics_adapter_image,
                        "prod images must be pinned by digest",
                        "name@sha256:<64 hex digits>",
                    )
                )

    for region in mesh.region_weights:
        if region not in cfg.regions:
            problems.append(
                Problem(
                    f"{ns}:mesh.regionWeights.{region}",
                    region,
                    "weight for a region the stack does not deploy",
                    ", ".join(cfg.regions),
                )
            )
    if mesh.region_weights and set(cfg.regions) - set(mesh.region_weights):
        missing = [r for r in cfg.regions if r not in mesh.region_weights]
        problems.append(
            Problem(
                f"{ns}:mesh.regionWeights",
                dict(mesh.region_weights),
                f"no weight for {', '.join(missing)}",
                "a weight for every deployed region",
            )
        )

    workloads = {"signalService": cfg.workloads.signal_service, "triton": cfg.workloads.triton}
    for name, workload in workloads.items():
        for kind, needed in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
            present = getattr(workload.resources, kind)
            for resource in needed:
                if resource not in present:
                    problems.append(
                        Problem(
                            f"{ns}:workloads.{name}.resources.{kind}",
                            dict(present),
                            f"{kind} lack {resource}",
                            f"{', '.join(needed)} set",
                        )
                    )
        if cfg.is_prod and workload.max_replicas < 10 * workload.replicas:
            problems.append(
                Problem(
                    f"{ns}:workloads.{name}.maxReplicas",
                    workload.max_replicas,
                    "prod must be able to scale to 10x its baseline replicas",
                    f">= {10 * workload.replicas}",
                )
            )

    triton = cfg.workloads.triton
    gpu_request = triton.resources.requests.get("nvidia.com/gpu")
    gpu_limit = triton.resources.limits.get("nvidia.com/gpu")
    if gpu_request is None or gpu_request != gpu_limit:
        problems.append(
            Problem(
                f"{ns}:workloads.triton.resources",
                {"requests": gpu_request, "limits": gpu_limit},
                "Triton must request and limit the same number of nvidia.com/gpu",
                'requests and limits both "1"',
            )
        )
    model = triton.model
    for i, size in enumerate(model.preferred_batch_sizes):
        if not 1 <= size <= model.max_batch_size:
            problems.append(
                Problem(
                    f"{ns}:workloads.triton.model.preferredBatchSizes[{i}]",
                    size,
                    "preferred batch size outside 1..maxBatchSize",
                    f"1 to {model.max_batch_size}",
                )
            )
    if list(model.preferred_batch_sizes) != sorted(set(model.preferred_batch_sizes)):
        problems.append(
            Problem(
                f"{ns}:workloads.triton.model.preferredBatchSizes",
                list(model.preferred_batch_sizes),
                "preferred batch sizes must be unique and ascending",
                "e.g. [64, 128, 256]",
            )
        )

    regions = [cfg.region(r) for r in cfg.regions if r in catalog.zones]
    shared = any(p.max_shared_clients_per_gpu > 1 for r in regions for p in r.node_pools.gpu)
    # GKE's GPU sharing gives each container one shared GPU: a request of 1 is one slot.
    if shared and gpu_request not in (None, "1"):
        problems.append(
            Problem(
                f"{ns}:workloads.triton.resources.requests.nvidia.com/gpu",
                gpu_request,
                "containers on shared GPUs can request only one GPU",
                '"1"',
            )
        )
    for region in regions:
        pools = region.node_pools.gpu
        slots = sum(p.max_nodes * p.accelerator_count * p.max_shared_clients_per_gpu for p in pools)
        if triton.max_replicas > slots:
            problems.append(
                Problem(
                    f"{ns}:workloads.triton.maxReplicas",
                    triton.max_replicas,
                    f"more Triton replicas than the GPU pools of {region.name} can hold ({slots})",
                    f"<= {slots}, or larger GPU pools",
                )
            )
    return problems


def _data_platform_problems(cfg: StackConfig) -> list[Problem]:
    """Redis, Pub/Sub, budget and observability rules that span fields."""
    ns = NAMESPACE
    problems: list[Problem] = []
    if cfg.is_prod:
        for region in cfg.regions:
            if region not in load_catalog().zones:
                continue
            redis = cfg.region(region).redis
            base = (
                f"{ns}:regionOverrides.{region}.redis"
                if region in cfg.region_overrides and cfg.region_overrides[region].redis
                else f"{ns}:redis"
            )
            if redis.replica_count < 1:
                problems.append(
                    Problem(
                        f"{base}.replicaCount",
                        redis.replica_count,
                        f"prod Redis in {region} needs a replica per shard to fail over",
                        ">= 1",
                    )
                )
            if redis.persistence == "DISABLED":
                problems.append(
                    Problem(
                        f"{base}.persistence",
                        redis.persistence,
                        f"prod Redis in {region} must persist its data",
                        "AOF or RDB",
                    )
                )

    pubsub = cfg.pubsub
    topics = {
        "ticksTopic": pubsub.ticks_topic,
        "signalsTopic": pubsub.signals_topic,
        "deadLetterTopic": pubsub.dead_letter_topic,
    }
    batch_topics = [f"{pubsub.ticks_topic}{pubsub.batch_suffix}"]
    batch_topics.append(f"{pubsub.signals_topic}{pubsub.batch_suffix}")
    for topic in batch_topics:
        if topic in topics.values():
            problems.append(
                Problem(
                    f"{ns}:pubsub.batchSuffix",
                    pubsub.batch_suffix,
                    f"makes the batch topic {topic!r}, which is already a topic",
                    "a suffix that names new topics",
                )
            )
    for key, topic in topics.items():
        if not TOPIC_ID_RE.match(topic):
            problems.append(
                Problem(
                    f"{ns}:pubsub.{key}",
                    topic,
                    "not a valid Pub/Sub topic id",
                    "3-255 of letters, digits and ._~+%-, starting with a letter, not 'goog'",
                )
            )
        elif list(topics.values()).count(topic) > 1:
            problems.append(
                Problem(f"{ns}:pubsub.{key}", topic, "topic used twice", "distinct topics")
            )
    if pubsub.min_retry_backoff_seconds > pubsub.max_retry_backoff_seconds:
        problems.append(
            Problem(
                f"{ns}:pubsub.minRetryBackoffSeconds",
                pubsub.min_retry_backoff_seconds,
                f"greater than maxRetryBackoffSeconds ({pubsub.max_retry_backoff_seconds})",
                "minRetryBackoffSeconds <= maxRetryBackoffSeconds",
            )
        )

    thresholds = cfg.budget.alert_thresholds
    for i, threshold in enumerate(thresholds):
        if not 0 < threshold <= 2:
            problems.append(
                Problem(
                    f"{ns}:budget.alertThresholds[{i}]",
                    threshold,
                    "a budget threshold is a fraction of the budget",
                    "> 0 and <= 2 (e.g. 0.5 for 50%)",
                )
            )
    if list(thresholds) != sorted(set(thresholds)):
        problems.append(
            Problem(
                f"{ns}:budget.alertThresholds",
                list(thresholds),
                "thresholds must be increasing and distinct",
                "e.g. [0.5, 0.9, 1.0]",
            )
        )
    if cfg.is_prod and not cfg.budget.billing_account:
        problems.append(
            Problem(
                f"{ns}:budget.billingAccount",
                None,
                "prod needs a billing account for its budget",
                "XXXXXX-XXXXXX-XXXXXX",
            )
        )

    obs = cfg.observability
    alerts = obs.alerts
    if alerts.gpu_duty_cycle_min >= alerts.gpu_duty_cycle_max:
        problems.append(
            Problem(
                f"{ns}:observability.alerts.gpuDutyCycleMin",
                alerts.gpu_duty_cycle_min,
                f"not below gpuDutyCycleMax ({alerts.gpu_duty_cycle_max:g})",
                "gpuDutyCycleMin < gpuDutyCycleMax",
            )
        )
    names = [c.name for c in obs.notification_channels]
    for i, name in enumerate(names):
        if names.count(name) > 1:
            problems.append(
                Problem(
                    f"{ns}:observability.notificationChannels[{i}].name",
                    name,
                    "channel names must be unique",
                    "unique names",
                )
            )
    if cfg.is_prod and not names:
        problems.append(
            Problem(
                f"{ns}:observability.notificationChannels",
                [],
                "prod alerts need somewhere to go",
                "at least one channel",
            )
        )
    return problems
