"""Typed stack configuration: the only place the Pulumi program reads configuration.

`Pulumi.<stack>.yaml` → `StackConfig.load(...)` → one validated, frozen model, split by
concern: `cluster` (GKE, node pools), `network`, `mesh`, `workloads`, `intelligence`, `data`
(Redis, BigQuery, Pub/Sub), `observability` (budget, alerts), `cost`, `capacity` (what the
system pool must hold), `images`, `resources` (Kubernetes quantities), the `catalog`, and
`stack` (the whole stack and loading). Each model carries its own cross-field rules; errors
are formatted by the repository's one formatter (`app.config_errors`).
"""

from app.config_errors import Problem
from infra.config.base import DURATION_PATTERN, NAMESPACE, ConfigError, Model
from infra.config.capacity import PodRequests, allocatable, system_pods
from infra.config.catalog import CATALOG_PATH, Catalog, MachineShape, load_catalog
from infra.config.cluster import (
    AuthorizedNetwork,
    ClusterSettings,
    GpuPool,
    MaintenanceWindow,
    NodePoolBase,
    NodePools,
    SystemPool,
)
from infra.config.cost import CostSettings
from infra.config.data import BigQuerySettings, PubSubSettings, RedisSettings
from infra.config.intelligence import (
    AnomalyDetectionSettings,
    IntelligenceSettings,
    PredictiveScalingSettings,
)
from infra.config.mesh import (
    ISTIO_KUBERNETES,
    ApiRoute,
    ConnectionPool,
    MeshSettings,
    OutlierDetection,
)
from infra.config.network import NetworkSettings, RegionNetwork
from infra.config.observability import (
    AlertThresholds,
    Budget,
    NotificationChannel,
    ObservabilitySettings,
)
from infra.config.resources import Resources, parse_quantity
from infra.config.stack import (
    ARTIFACT_REPOSITORY,
    KNOWN_NAMESPACES,
    RegionConfig,
    RegionOverride,
    StackConfig,
)
from infra.config.workloads import (
    GCS_FUSE_SIDECAR,
    SignalServiceWorkload,
    TritonModel,
    TritonWorkload,
    Workload,
    Workloads,
)

__all__ = [
    "ARTIFACT_REPOSITORY",
    "CATALOG_PATH",
    "DURATION_PATTERN",
    "GCS_FUSE_SIDECAR",
    "ISTIO_KUBERNETES",
    "KNOWN_NAMESPACES",
    "NAMESPACE",
    "AlertThresholds",
    "AnomalyDetectionSettings",
    "ApiRoute",
    "AuthorizedNetwork",
    "BigQuerySettings",
    "Budget",
    "Catalog",
    "ClusterSettings",
    "ConfigError",
    "ConnectionPool",
    "CostSettings",
    "GpuPool",
    "IntelligenceSettings",
    "MachineShape",
    "MaintenanceWindow",
    "MeshSettings",
    "Model",
    "NetworkSettings",
    "NodePoolBase",
    "NodePools",
    "NotificationChannel",
    "ObservabilitySettings",
    "OutlierDetection",
    "PodRequests",
    "PredictiveScalingSettings",
    "Problem",
    "PubSubSettings",
    "RedisSettings",
    "RegionConfig",
    "RegionNetwork",
    "RegionOverride",
    "Resources",
    "SignalServiceWorkload",
    "StackConfig",
    "SystemPool",
    "TritonModel",
    "TritonWorkload",
    "Workload",
    "Workloads",
    "allocatable",
    "load_catalog",
    "parse_quantity",
    "system_pods",
]
