"""The deployed workloads: the signal service and Triton on each cluster, with their identities,
autoscaling, disruption budgets and network policy, and Triton's model configuration.

Both run on spot capacity and are built for it: at least two replicas spread across zones in
prod, a preStop pause so endpoints are withdrawn before SIGTERM, a grace period inside the 30 s
spot notice, and PodDisruptionBudgets for voluntary disruptions. Every pod is restricted:
non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp, no token.

The signal service is a StatefulSet whose replicas share its symbols as `SHARDS` shards (one
owner each, leases in the region's Redis Cluster: `app.shards`). Each pod has a stable name
and a DNS name under the headless Service `signal-service-replicas`, which it advertises as
its address: clients and the other replicas reach a shard's owner there, and a replica sends
a call for another's shard on to it (so callers through the ClusterIP Service or the ingress
gateway need not know owners). Each pod keeps its spool on its own PersistentVolumeClaim, so
an acknowledged batch survives a reschedule. SIGTERM leaves time to hand the shards over
(snapshot, release) inside the grace period; readiness waits until the replica's first shards
are loaded; the HPA scales in one pod a minute, so a scale-in never overlaps a handover.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pydantic import ValidationError

from app.config import AppConfig
from app.config_errors import Problem, problems_from
from app.model.triton import TritonModelConfig, render_config_pbtxt
from app.settings.ingest import BIGQUERY_MAX_PAST_AGE_S
from infra.cluster import (
    ACCELERATOR_KEY,
    CMEK_STORAGE_CLASS,
    COMPUTE_CLASS_KEY,
    GPU_TAINT,
    GPU_UTILIZATION,
    SPOT_TAINT,
)
from infra.config import NAMESPACE as CONFIG_NAMESPACE
from infra.config import (
    ConfigError,
    SignalServiceWorkload,
    StackConfig,
    TritonModel,
    TritonWorkload,
    Workload,
    Workloads,
)
from infra.identity import WORKLOADS
from infra.kube import (
    METADATA_SERVER,
    METRICS_SCRAPING_POLICY,
    PULL_POLICY,
    RESTRICTED_CONTAINER,
    accepted_unpinned,
    api_object,
    app_peer,
    disruption_budget,
    k8s_labels,
    namespace_peer,
    network_policy,
    object_metadata,
    pod_monitoring,
    tcp,
)
from infra.mesh import (
    GATEWAY,
    GATEWAY_NAMESPACE,
    GATEWAY_PRINCIPAL,
    MeshService,
    baseline_policies,
    principal,
)

SIGNAL_SERVICE = "signal-service"
# What runs the stack's own image and the model in its bucket: deployed only from stage
# `workloads` (infra/signal_platform.py), said on the object for the policy pack.
AFTER_IMAGE_AND_MODEL = {"signal-platform/stage": "workloads"}
TRITON = "triton"
GRPC_PORT = 50051  # the signal service's gRPC API (and gRPC health)
METRICS_PORT = 9464  # the signal service's Prometheus metrics (the image exposes it)
TRITON_HTTP_PORT = 8000  # KServe v2 HTTP: health probes only
TRITON_GRPC_PORT = 8001  # KServe v2 gRPC: inference
TRITON_METRICS_PORT = 8002
# The models bucket holds the output of `python -m app.model build` (app.model.build): the
# service's in-process fallback model at its root, Triton's repository under `triton/`.
MODELS_DIR = "/models"
MODEL_REPOSITORY = f"{MODELS_DIR}/triton"
CONFIG_DIR = "/etc/signal-service"  # the service's config file and Redis CA, from a ConfigMap
CONFIG_FILE = "config.yaml"
REDIS_CA = "redis-ca.pem"
PRESTOP_SECONDS = 5  # endpoints are withdrawn mesh-wide before the process sees SIGTERM
# Sharding (app.shards): a fixed shard count, never changed for a deployment (it moves almost
# every symbol); a replica beyond it would own nothing, so maxReplicas may not exceed it.
SHARDS = 64
SIGNAL_REPLICAS = f"{SIGNAL_SERVICE}-replicas"  # headless: one DNS name per pod
HANDOVER_SECONDS = 5  # of the drain budget: snapshots and lease releases after the calls end
SCALE_IN_PERIOD_SECONDS = 60  # the HPA removes at most one replica per period
# The spool (app.spool) on the pod's own volume: acknowledged batches survive a reschedule.
SPOOL_DIR = "/var/lib/signal-service/spool"
SPOOL_VOLUME = "spool"
SPOOL_VOLUME_SIZE = "4Gi"
SPOOL_MAX_BYTES = 3 * 1024**3  # below the volume's size: the spool refuses before it is full

# Cloud Monitoring metrics the HPAs read through the custom metrics adapter.
# `signal_requests_total` is the service's own request counter (a contract with app/).
REQUEST_RATE_METRIC = "prometheus.googleapis.com|signal_requests_total|counter"
# GKE's managed DCGM metrics (the cluster's monitoring config collects them): GPU utilisation
# per GPU, reported for time-shared GPUs too, unlike kubernetes.io/container/accelerator/duty_cycle.
GPU_UTILIZATION_METRIC = f"prometheus.googleapis.com|{GPU_UTILIZATION}|gauge"
# Memorystore for Redis Cluster: its endpoints sit in the VPC's 10/8 plan; discovery and
# shard ports.
REDIS_RANGE = "10.0.0.0/8"
REDIS_PORTS = ((6379, None), (11000, 13047))
# GKE injects the GCS FUSE sidecar; it fetches tokens from the metadata server, which must
# bypass the Istio proxy (GKE docs, "GCS FUSE CSI driver with Istio").
GCS_FUSE_ANNOTATIONS = {
    "gke-gcsfuse/volumes": "true",
    "gke-gcsfuse/cpu-limit": "1",
    "gke-gcsfuse/memory-limit": "1Gi",
    "gke-gcsfuse/ephemeral-storage-limit": "1Gi",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": ",".join(
        cidr for cidr, _ in METADATA_SERVER
    ),
}


@dataclass(frozen=True)
class ServiceEndpoints:
    """Where the signal service finds the platform's data services (its environment)."""

    project_id: str
    ticks_topic: str
    signals_topic: str
    dataset: str
    # Redis Cluster discovery endpoint ("host:port"); None: the service runs on its L1 cache.
    redis: pulumi.Input[str] | None = None
    # PEM bundle of the cluster's server CA (Memorystore's TLS is server-authenticated).
    redis_ca: pulumi.Input[str] | None = None

    @classmethod
    def of(
        cls, stack: StackConfig, redis: pulumi.Input[str], redis_ca: pulumi.Input[str]
    ) -> ServiceEndpoints:
        """The stack's data services, with its region's Redis Cluster."""
        return cls(
            project_id=stack.project_id,
            ticks_topic=stack.pubsub.ticks_topic,
            signals_topic=stack.pubsub.signals_topic,
            dataset=stack.bigquery.dataset_id,
            redis=redis,
            redis_ca=redis_ca,
        )


@dataclass(frozen=True)
class Placement:
    """What a cluster offers the workloads: where GPU pods go and how they rank.
    `gpu_on_demand`: some GPU pool is on-demand, so a GPU pod finds a node whatever spot
    capacity there is."""

    compute_class: str
    priority_class: str
    accelerator: str | None
    gpu_on_demand: bool = True


def mesh_services() -> list[MeshService]:
    """The services of the workload namespace and who may call them."""
    namespace = WORKLOADS[SIGNAL_SERVICE].namespace
    return [
        MeshService(
            SIGNAL_SERVICE,
            GRPC_PORT,
            # The gateway, and the other replicas sending on a call for a shard they do not own.
            (GATEWAY_PRINCIPAL, principal(namespace, WORKLOADS[SIGNAL_SERVICE].ksa)),
            public=True,
            replicas=SIGNAL_REPLICAS,
        ),
        MeshService(
            TRITON,
            TRITON_GRPC_PORT,
            (principal(namespace, WORKLOADS[SIGNAL_SERVICE].ksa),),
        ),
    ]


def replica_address(namespace: str) -> str:
    """The address each pod advertises (`sharding.advertise`): its name under the headless
    Service; `$(POD_NAME)` is expanded by the kubelet from the container's environment."""
    return f"$(POD_NAME).{SIGNAL_REPLICAS}.{namespace}.svc.cluster.local:{GRPC_PORT}"


# The stack keys (under `signal-platform:`) each part of the service's file is derived from,
# by the file's key path (the longest prefix wins): a refusal names the key to change. What
# is not listed is the program's own (ports, paths, sharding), reported at the workload.
SERVICE_CONFIG_KEYS: Mapping[str, str] = {
    "server.grace_s": "workloads.signalService.terminationGraceSeconds",
    "kserve.model_name": "workloads.triton.model.name",
    "batcher": "workloads.triton.model",
    "batcher.max_batch_size": "workloads.triton.model.maxBatchSize",
    "batcher.max_queue_delay_us": "workloads.triton.model.maxQueueDelayMicroseconds",
    "publish.project": "projectId",
    "publish.ticks_topic": "pubsub.ticksTopic",
    "publish.signals_topic": "pubsub.signalsTopic",
    "warehouse.project": "projectId",
    "warehouse.dataset": "bigquery.datasetId",
    "telemetry.otlp_endpoint": "mesh.tracingCollector",
    "telemetry.trace_sample_ratio": "mesh.traceSamplingPercent",
}
# How long pulumi-kubernetes waits for a workload's rollout (its default: 10 minutes). A first
# GPU rollout scales a node from zero (capacity, boot, the driver installer), pulls Triton's
# image (about 10 GB) and loads the model, and Triton's startupProbe alone allows 10 minutes;
# the service's pods wait for their spool disks and shards.
# (pulumi-kubernetes reads it from the object's annotation, which the plan shows.)
ROLLOUT_TIMEOUT = {"pulumi.com/timeoutSeconds": str(45 * 60)}
SKIP_AWAIT = "pulumi.com/skipAwait"

# Any `host:port` and CA stand in for Memorystore's, unknown until a cluster exists, when the
# file is checked before anything is declared: its validity does not depend on them.
PLANNED_REDIS = "redis-discovery.invalid:6379"
PLANNED_REDIS_CA = "the cluster's server CA"


def signal_service_config(
    endpoints: ServiceEndpoints,
    model: TritonModel,
    grace_seconds: int,
    tracing_collector: str | None,
    trace_sampling_percent: float,
    redis: str | None,
) -> dict[str, Any]:
    """The signal service's own configuration file (sections of `app.config.AppConfig`):
    Triton over KServe-v2 gRPC, Redis Cluster as L2 and for the shards' leases, snapshots
    and journals, Pub/Sub and BigQuery as sinks, the spool on the pod's volume. Validated as
    the service validates it (`check_service_config`): a file it would refuse at start is a
    configuration error of the stack."""
    # With shards, the drain budget ends with their handover.
    drain = grace_seconds - HANDOVER_SECONDS if redis is not None else grace_seconds
    config: dict[str, Any] = {
        "server": {"host": "0.0.0.0", "port": GRPC_PORT, "grace_s": drain},
        "spool": {"dir": SPOOL_DIR, "max_bytes": SPOOL_MAX_BYTES},
        # The built model from the bucket, never built in the pod.
        "model": {"dir": MODELS_DIR, "build_if_missing": False},
        "kserve": {
            "url": f"{TRITON}.{WORKLOADS[TRITON].namespace}.svc.cluster.local:{TRITON_GRPC_PORT}",
            "model_name": model.name,
        },
        # Triton rejects batches above its max_batch_size: the micro-batcher stays within it.
        "batcher": {
            "max_batch_size": model.max_batch_size,
            "max_queue_delay_us": model.max_queue_delay_microseconds,
        },
        # Ticks BigQuery would refuse to stream (dated too far back) are rejected at the ack.
        "ingest": {"max_past_age_s": BIGQUERY_MAX_PAST_AGE_S},
        "publish": {
            "sink": "pubsub",
            "project": endpoints.project_id,
            "ticks_topic": endpoints.ticks_topic,
            "signals_topic": endpoints.signals_topic,
        },
        "warehouse": {
            "backend": "bigquery",
            "project": endpoints.project_id,
            "dataset": endpoints.dataset,
        },
        # Spans are exported only to a configured collector (mesh.tracingCollector).
        "telemetry": {
            "metrics_host": "0.0.0.0",
            "metrics_port": METRICS_PORT,
            **(
                {
                    "otlp_endpoint": tracing_collector,
                    "trace_sample_ratio": trace_sampling_percent / 100,
                }
                if tracing_collector is not None
                else {}
            ),
        },
    }
    if redis is not None:
        # Memorystore: TLS with server authentication, IAM tokens (no password exists).
        config["cache"] = {
            "redis": {
                "nodes": [redis],
                "tls": True,
                "auth": "iam",
                **({"ca_file": f"{CONFIG_DIR}/{REDIS_CA}"} if endpoints.redis_ca else {}),
            }
        }
        config["sharding"] = {
            "enabled": True,
            "shards": SHARDS,
            "handover_timeout_s": HANDOVER_SECONDS,
        }
    return check_service_config(config)


def check_planned_service_config(stack: StackConfig) -> None:
    """The file every region's signal service will get, checked before the program declares
    anything (a configuration error raised among declared resources can leave the update
    waiting on outputs that never resolve): a stack whose values give a file the service
    refuses fails here, one line per problem."""
    if not stack.deploys_workloads:
        return
    service = stack.workloads.signal_service
    signal_service_config(
        ServiceEndpoints.of(stack, PLANNED_REDIS, PLANNED_REDIS_CA),
        stack.workloads.triton.model,
        service_grace_seconds(service),
        stack.mesh.tracing_collector,
        stack.mesh.trace_sampling_percent,
        PLANNED_REDIS,
    )


def check_service_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config`, if `app.config.AppConfig` accepts it; else the stack's `ConfigError`, one
    line per problem at the stack key it comes from (`SERVICE_CONFIG_KEYS`).

    `app.config` needs only pydantic, PyYAML and the service's config models (`app.settings`),
    not its runtime packages: the file is checked wherever the program runs, the deploy's
    virtualenv (requirements.lock) and `pulumi up` included."""
    try:
        AppConfig.model_validate(config)
    except ValidationError as exc:
        problems = [
            Problem(
                f"{CONFIG_NAMESPACE}:{_stack_key(found.path)}",
                f"the signal service would refuse the config file this gives it: {found}",
            )
            for found in problems_from(exc, AppConfig)
        ]
        raise ConfigError(f"Pulumi.{pulumi.get_stack()}.yaml", problems) from None
    return config


def _stack_key(path: str) -> str:
    sources = [
        prefix for prefix in SERVICE_CONFIG_KEYS if path == prefix or path.startswith(f"{prefix}.")
    ]
    return SERVICE_CONFIG_KEYS[max(sources, key=len)] if sources else "workloads.signalService"


def service_grace_seconds(workload: Workload) -> int:
    """How long the service drains in-flight calls on SIGTERM: the pod's grace period less the
    preStop pause and a margin."""
    return workload.termination_grace_seconds - PRESTOP_SECONDS - 2


def render_service_config(config: Mapping[str, Any]) -> str:
    """The service's config file as the ConfigMap carries it (and its hash rolls the pods)."""
    return yaml.safe_dump(dict(config), sort_keys=True)


def server_ca_bundle(cas: Sequence[Any] | None) -> str:
    """The PEM bundle of a Memorystore cluster's `managed_server_cas` output."""
    certificates = [
        certificate
        for ca in cas or []
        for ca_cert in ca.ca_certs or []
        for certificate in ca_cert.certificates or []
    ]
    return "\n".join(c.strip() for c in certificates) + ("\n" if certificates else "")


def models_volume(bucket: pulumi.Input[str]) -> dict[str, Any]:
    """The models bucket, read-only through the GCS FUSE CSI driver."""
    return {
        "name": "models",
        "csi": {
            "driver": "gcsfuse.csi.storage.gke.io",
            "readOnly": True,
            "volumeAttributes": {"bucketName": bucket, "mountOptions": "implicit-dirs"},
        },
    }


def triton_model_config(model: TritonModel) -> dict[str, Any]:
    """The stack's Triton settings as `app.model.triton.TritonModelConfig` takes them: what the
    model build renders into `config.pbtxt` (exported as the stack output `tritonModel`)."""
    return {
        "name": model.name,
        "max_batch_size": model.max_batch_size,
        "max_queue_delay_us": model.max_queue_delay_microseconds,
        "preferred_batch_sizes": list(model.preferred_batch_sizes),
        "instance_groups": [{"kind": "KIND_GPU", "count": model.instance_count}],
    }


def triton_model_files(model: TritonModel) -> dict[str, str]:
    """`config.pbtxt` of the stack's Triton model, rendered by the app's model build code,
    keyed by its path in the models bucket."""
    config = TritonModelConfig.model_validate(triton_model_config(model))
    relative = Path(MODEL_REPOSITORY).relative_to(MODELS_DIR)
    return {f"{relative}/{config.name}/config.pbtxt": render_config_pbtxt(config)}


class WorkloadSet(pulumi.ComponentResource):
    """The signal service and Triton on one cluster."""

    def __init__(
        self,
        name: str,
        cluster: str,
        namespace: str,
        settings: Workloads,
        google_accounts: Mapping[str, pulumi.Input[str]],
        placement: Placement,
        model_bucket: pulumi.Input[str],
        endpoints: ServiceEndpoints,
        storage_class: k8s.storage.v1.StorageClass,
        tracing_collector: str | None,
        trace_sampling_percent: float,
        labels: Mapping[str, str],
        # More metrics for the signal service's HPA (the predictive scaler's, infra/autoscale.py).
        signal_metrics: Sequence[Mapping[str, Any]] = (),
        # References the stack accepts without a digest, with the reason (`unpinnedImages`).
        unpinned_images: Mapping[str, str] = MappingProxyType({}),
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`storage_class`: the cluster's CMEK StorageClass, which the spool volumes use."""
        super().__init__("signal:infra:Workloads", name, None, opts)
        self.namespace = namespace
        self.cluster = cluster
        self._storage_class = storage_class
        self._name = name
        self._labels = labels
        self._unpinned = unpinned_images

        # ---- identities: each KSA acts as its Google service account (Workload Identity)
        self.service_accounts = {
            key: k8s.core.v1.ServiceAccount(
                f"{name}-ksa-{key}",
                metadata={
                    "name": WORKLOADS[key].ksa,
                    "namespace": namespace,
                    "labels": k8s_labels(labels, key),
                    "annotations": {"iam.gke.io/gcp-service-account": google_accounts[key]},
                },
                automount_service_account_token=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for key in (SIGNAL_SERVICE, TRITON)
        }

        signal = settings.signal_service
        triton = settings.triton
        if signal.max_replicas > SHARDS:
            raise ValueError(
                f"workloads.signalService.maxReplicas = {signal.max_replicas}: at most {SHARDS} "
                f"(the service's shards; a replica beyond them would own nothing)"
            )
        self.deployments: dict[str, k8s.apps.v1.Deployment | k8s.apps.v1.StatefulSet] = {
            SIGNAL_SERVICE: self._signal_service(
                signal,
                triton.model,
                endpoints,
                placement,
                model_bucket,
                tracing_collector,
                trace_sampling_percent,
            ),
            TRITON: self._triton(triton, placement, model_bucket),
        }
        self.services = {
            SIGNAL_SERVICE: self._service(
                SIGNAL_SERVICE,
                [("grpc", GRPC_PORT, "grpc"), ("http-metrics", METRICS_PORT, "http")],
            ),
            # Each replica's own DNS name (the StatefulSet's serviceName), also while it is
            # not ready yet: a replica owns shards (and is named their owner) while loading.
            SIGNAL_REPLICAS: self._service(
                SIGNAL_REPLICAS,
                [("grpc", GRPC_PORT, "grpc")],
                selector=SIGNAL_SERVICE,
                headless=True,
            ),
            TRITON: self._service(
                TRITON,
                [
                    ("grpc", TRITON_GRPC_PORT, "grpc"),
                    ("http", TRITON_HTTP_PORT, "http"),
                    ("http-metrics", TRITON_METRICS_PORT, "http"),
                ],
            ),
        }
        self.autoscalers = {
            SIGNAL_SERVICE: self._autoscaler(
                SIGNAL_SERVICE,
                signal,
                [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": signal.target_cpu_percent,
                            },
                        },
                    },
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": REQUEST_RATE_METRIC},
                            "target": {
                                "type": "AverageValue",
                                "averageValue": str(signal.target_requests_per_second),
                            },
                        },
                    },
                    *(dict(metric) for metric in signal_metrics),
                ],
                scale_up_window=0,
                scale_down_window=300,
                # One replica at a time: its shards move (snapshot, release, load) well
                # within the period, so scale-ins never overlap a handover.
                scale_down_policy={
                    "type": "Pods",
                    "value": 1,
                    "periodSeconds": SCALE_IN_PERIOD_SECONDS,
                },
                kind="StatefulSet",
            ),
            TRITON: self._autoscaler(
                TRITON,
                triton,
                [
                    {
                        "type": "External",
                        "external": {
                            "metric": {
                                "name": GPU_UTILIZATION_METRIC,
                                # Cloud Monitoring is project-wide: this cluster's GPUs, which
                                # only Triton uses (the inference ComputeClass), averaged.
                                "selector": {
                                    "matchLabels": {
                                        "resource.labels.cluster": cluster,
                                        "reducer": "REDUCE_MEAN",
                                    }
                                },
                            },
                            "target": {
                                "type": "Value",
                                "value": str(triton.target_gpu_duty_cycle),
                            },
                        },
                    }
                ],
                # GPU nodes take minutes to arrive: scale early, release slowly.
                scale_up_window=30,
                scale_down_window=600,
            ),
        }
        child = pulumi.ResourceOptions(parent=self)
        self.disruption_budgets = {
            app: disruption_budget(f"{name}-pdb-{app}", app, namespace, labels, child)
            for app in (SIGNAL_SERVICE, TRITON)
        }
        self.pod_monitors = {
            app: pod_monitoring(f"{name}-monitor-{app}", app, namespace, labels, "15s", child)
            for app in (SIGNAL_SERVICE, TRITON)
        }
        self.network_policies = self._network_policies(tracing_collector)
        self.register_outputs(
            {"namespace": namespace, "deployments": list(self.deployments), "cluster": cluster}
        )

    # ------------------------------------------------------------------ deployments

    def _pod_template(
        self,
        app: str,
        workload: Workload,
        container: dict[str, Any],
        spec: dict[str, Any],
        annotations: Mapping[str, pulumi.Input[str]],
        run_as: int,
        zone_spread: str,
    ) -> dict[str, Any]:
        selector = {"matchLabels": {"app": app}}
        return {
            "metadata": {"labels": k8s_labels(self._labels, app), "annotations": dict(annotations)},
            "spec": {
                "serviceAccountName": WORKLOADS[app].ksa,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": workload.termination_grace_seconds,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": run_as,
                    "runAsGroup": run_as,
                    "fsGroup": run_as,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": zone_spread,
                        "labelSelector": selector,
                    },
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": selector,
                    },
                ],
                "containers": [
                    {
                        **container,
                        "imagePullPolicy": PULL_POLICY,
                        "resources": {
                            "requests": dict(workload.resources.requests),
                            "limits": dict(workload.resources.limits),
                        },
                        "securityContext": RESTRICTED_CONTAINER,
                        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
                    }
                ],
                **spec,
            },
        }

    def _workload_metadata(
        self, app: str, workload: Workload, annotations: Mapping[str, str] = MappingProxyType({})
    ) -> k8s.meta.v1.ObjectMetaArgsDict:
        return object_metadata(
            app,
            self.namespace,
            k8s_labels(self._labels, app),
            {
                **accepted_unpinned(workload.image, self._unpinned),
                **AFTER_IMAGE_AND_MODEL,
                **ROLLOUT_TIMEOUT,
                **annotations,
            },
        )

    def _deployment(
        self,
        app: str,
        workload: Workload,
        template: dict[str, Any],
        annotations: Mapping[str, str] = MappingProxyType({}),
    ):
        return k8s.apps.v1.Deployment(
            f"{self._name}-{app}",
            metadata=self._workload_metadata(app, workload, annotations),
            # No `replicas`: the HPA owns the count (its minReplicas is the floor). Set here, it
            # would be applied over the HPA's on the next update: refused as a conflict with
            # kube-controller-manager's field (Server-Side Apply), or, forced, reset at peak.
            spec=api_object(
                {
                    "revisionHistoryLimit": 5,
                    "selector": {"matchLabels": {"app": app}},
                    # Never below the serving count during a rollout.
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                    },
                    "template": template,
                }
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.service_accounts[app]],
            ),
        )

    def _signal_service(
        self,
        workload: SignalServiceWorkload,
        model: TritonModel,
        endpoints: ServiceEndpoints,
        placement: Placement,
        model_bucket: pulumi.Input[str],
        tracing_collector: str | None,
        trace_sampling_percent: float,
    ) -> k8s.apps.v1.StatefulSet:
        # The service drains in-flight calls on SIGTERM, after the preStop pause.
        grace = service_grace_seconds(workload)
        # Memorystore assigns the endpoint: the file is known once the cluster exists.
        rendered = pulumi.Output.from_input(endpoints.redis).apply(
            lambda redis: render_service_config(
                signal_service_config(
                    endpoints, model, grace, tracing_collector, trace_sampling_percent, redis
                )
            )
        )
        data: dict[str, pulumi.Input[str]] = {CONFIG_FILE: rendered}
        if endpoints.redis_ca is not None:
            data[REDIS_CA] = endpoints.redis_ca
        self.config_map = k8s.core.v1.ConfigMap(
            f"{self._name}-config-{SIGNAL_SERVICE}",
            metadata={
                "name": f"{SIGNAL_SERVICE}-config",
                "namespace": self.namespace,
                "labels": k8s_labels(self._labels, SIGNAL_SERVICE),
            },
            data=data,
            immutable=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        grpc_probe = {"grpc": {"port": GRPC_PORT}}
        container = {
            "name": SIGNAL_SERVICE,
            "image": workload.image,
            # The image's entrypoint is `python -m app`.
            "args": [
                "serve",
                "--config",
                f"{CONFIG_DIR}/{CONFIG_FILE}",
                "--advertise",
                replica_address(self.namespace),
            ],
            "ports": [
                {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                {"name": "http-metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            ],
            "env": [
                {"name": "GOOGLE_CLOUD_PROJECT", "value": endpoints.project_id},
                {"name": "NUMBA_CACHE_DIR", "value": "/var/cache/numba"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            # Numba compiles its kernels on start: give it time before liveness counts.
            "startupProbe": {**grpc_probe, "periodSeconds": 2, "failureThreshold": 60},
            "readinessProbe": {**grpc_probe, "periodSeconds": 5, "failureThreshold": 2},
            "livenessProbe": {**grpc_probe, "periodSeconds": 10, "failureThreshold": 3},
            "volumeMounts": [
                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                # The in-process model the service falls back to when Triton is unavailable.
                {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "numba-cache", "mountPath": "/var/cache/numba"},
                {"name": SPOOL_VOLUME, "mountPath": SPOOL_DIR},
            ],
        }
        template = self._pod_template(
            SIGNAL_SERVICE,
            workload,
            container,
            {
                "priorityClassName": placement.priority_class,
                "volumes": [
                    {"name": "config", "configMap": {"name": f"{SIGNAL_SERVICE}-config"}},
                    models_volume(model_bucket),
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    {"name": "numba-cache", "emptyDir": {"sizeLimit": "512Mi"}},
                ],
            },
            {
                **GCS_FUSE_ANNOTATIONS,
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/metrics",
                # A new configuration rolls the pods.
                "signal-platform/config-sha256": rendered.apply(
                    lambda text: hashlib.sha256(text.encode()).hexdigest()
                ),
            },
            run_as=65532,  # distroless "nonroot"
            # The system pool spans the cluster's zones: replicas must too.
            zone_spread="DoNotSchedule",
        )
        return self._stateful_set(SIGNAL_SERVICE, workload, template)

    def _stateful_set(
        self, app: str, workload: Workload, template: dict[str, Any]
    ) -> k8s.apps.v1.StatefulSet:
        """Stable pod names (each replica's address) and one spool volume per pod."""
        return k8s.apps.v1.StatefulSet(
            f"{self._name}-{app}",
            metadata=self._workload_metadata(app, workload),
            # No `replicas`: the HPA owns the count (see _deployment).
            spec=api_object(
                {
                    "serviceName": SIGNAL_REPLICAS,
                    # Pods start (and scale up) together; the HPA paces scale-in, and a
                    # rolling update replaces one pod at a time, each ready before the next.
                    "podManagementPolicy": "Parallel",
                    "revisionHistoryLimit": 5,
                    "selector": {"matchLabels": {"app": app}},
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                    # A scaled-in replica's spool stays for when its ordinal returns.
                    "persistentVolumeClaimRetentionPolicy": {
                        "whenDeleted": "Retain",
                        "whenScaled": "Retain",
                    },
                    "template": template,
                    "volumeClaimTemplates": [
                        {
                            # The template is immutable (a change replaces the StatefulSet,
                            # every pod at once): constant labels only, never the stack's.
                            "metadata": {"name": SPOOL_VOLUME, "labels": {"app": app}},
                            "spec": {
                                "accessModes": ["ReadWriteOnce"],
                                # Balanced PD with the region's disks key (CMEK, as every
                                # other disk of the cluster), bound where the pod runs.
                                "storageClassName": CMEK_STORAGE_CLASS,
                                "resources": {"requests": {"storage": SPOOL_VOLUME_SIZE}},
                            },
                        }
                    ],
                }
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.service_accounts[app], self._storage_class],
            ),
        )

    def _triton(
        self, workload: TritonWorkload, placement: Placement, model_bucket: pulumi.Input[str]
    ) -> k8s.apps.v1.Deployment:
        http = {"port": TRITON_HTTP_PORT}
        container = {
            "name": TRITON,
            "image": workload.image,
            "command": ["tritonserver"],
            "args": [
                f"--model-repository={MODEL_REPOSITORY}",
                "--model-control-mode=none",
                "--strict-readiness=true",
                f"--http-port={TRITON_HTTP_PORT}",
                f"--grpc-port={TRITON_GRPC_PORT}",
                f"--metrics-port={TRITON_METRICS_PORT}",
                "--allow-gpu-metrics=true",
                # Finish in-flight inferences on SIGTERM, inside the grace period.
                f"--exit-timeout-secs={service_grace_seconds(workload)}",
            ],
            "ports": [
                {"name": "http", "containerPort": TRITON_HTTP_PORT, "protocol": "TCP"},
                {"name": "grpc", "containerPort": TRITON_GRPC_PORT, "protocol": "TCP"},
                {"name": "http-metrics", "containerPort": TRITON_METRICS_PORT, "protocol": "TCP"},
            ],
            # Loading models from the bucket takes a while; only then do the others count.
            "startupProbe": {
                "httpGet": {**http, "path": "/v2/health/ready"},
                "periodSeconds": 5,
                "failureThreshold": 120,
            },
            "readinessProbe": {
                "httpGet": {**http, "path": "/v2/health/ready"},
                "periodSeconds": 5,
                "failureThreshold": 2,
            },
            "livenessProbe": {
                "httpGet": {**http, "path": "/v2/health/live"},
                "periodSeconds": 10,
                "failureThreshold": 3,
            },
            "volumeMounts": [
                {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "shm", "mountPath": "/dev/shm"},
            ],
        }
        node_selector = {COMPUTE_CLASS_KEY: placement.compute_class}
        if placement.accelerator:
            node_selector[ACCELERATOR_KEY] = placement.accelerator
        tolerations = [
            {"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"},
            {
                "key": SPOT_TAINT["key"],
                "operator": "Equal",
                "value": "true",
                "effect": "NoSchedule",
            },
            {
                "key": COMPUTE_CLASS_KEY,
                "operator": "Equal",
                "value": placement.compute_class,
                "effect": "NoSchedule",
            },
        ]
        template = self._pod_template(
            TRITON,
            workload,
            container,
            {
                "priorityClassName": placement.priority_class,
                "nodeSelector": node_selector,
                "tolerations": tolerations,
                "volumes": [
                    models_volume(model_bucket),
                    {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
                ],
            },
            {
                **GCS_FUSE_ANNOTATIONS,
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(TRITON_METRICS_PORT),
                "prometheus.io/path": "/metrics",
            },
            run_as=1000,  # the image's triton-server user
            # GPU capacity is where spot is: prefer spreading, never wait for it.
            zone_spread="ScheduleAnyway",
        )
        # Without an on-demand GPU pool Triton runs only while spot capacity lasts: a deploy
        # does not wait for it (the service serves from its in-process model meanwhile).
        spot_only = {} if placement.gpu_on_demand else {SKIP_AWAIT: "true"}
        return self._deployment(TRITON, workload, template, spot_only)

    # ------------------------------------------------------------------ services, scaling

    def _service(
        self,
        name: str,
        ports: Sequence[tuple[str, int, str]],
        selector: str | None = None,
        headless: bool = False,
    ) -> k8s.core.v1.Service:
        app = selector or name
        return k8s.core.v1.Service(
            f"{self._name}-svc-{name}",
            metadata={
                "name": name,
                "namespace": self.namespace,
                "labels": k8s_labels(self._labels, app),
            },
            spec=api_object(
                {
                    "type": "ClusterIP",
                    **({"clusterIP": "None", "publishNotReadyAddresses": True} if headless else {}),
                    "selector": {"app": app},
                    "ports": [
                        {
                            "name": port_name,
                            "port": port,
                            "targetPort": port_name,
                            "protocol": "TCP",
                            "appProtocol": protocol,
                        }
                        for port_name, port, protocol in ports
                    ],
                }
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _autoscaler(
        self,
        app: str,
        workload: Workload,
        metrics: list[dict[str, Any]],
        scale_up_window: int,
        scale_down_window: int,
        scale_down_policy: Mapping[str, Any] = MappingProxyType(
            {"type": "Percent", "value": 10, "periodSeconds": 60}
        ),
        kind: str = "Deployment",
    ) -> k8s.autoscaling.v2.HorizontalPodAutoscaler:
        return k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{self._name}-hpa-{app}",
            metadata={
                "name": app,
                "namespace": self.namespace,
                "labels": k8s_labels(self._labels, app),
            },
            spec=api_object(
                {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": app},
                    "minReplicas": workload.replicas,
                    "maxReplicas": workload.max_replicas,
                    "metrics": metrics,
                    "behavior": {
                        "scaleUp": {
                            "stabilizationWindowSeconds": scale_up_window,
                            "selectPolicy": "Max",
                            "policies": [
                                {"type": "Percent", "value": 100, "periodSeconds": 15},
                                {"type": "Pods", "value": 4, "periodSeconds": 15},
                            ],
                        },
                        "scaleDown": {
                            "stabilizationWindowSeconds": scale_down_window,
                            "selectPolicy": "Min",
                            "policies": [dict(scale_down_policy)],
                        },
                    },
                }
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.deployments[app]]),
        )

    # ------------------------------------------------------------------ network policy

    def _network_policies(
        self, tracing_collector: str | None
    ) -> dict[str, k8s.networking.v1.NetworkPolicy]:
        """Default deny in both directions, then each flow the workloads need, by name. Only
        this cluster's pods: one mesh per region (infra/mesh.py), nothing crosses regions."""
        policies: dict[str, dict[str, Any]] = {
            **baseline_policies(tracing_collector),
            "allow-metrics-scraping": METRICS_SCRAPING_POLICY,
            f"{SIGNAL_SERVICE}-ingress": {
                # The region's ingress gateway.
                "podSelector": app_peer(SIGNAL_SERVICE)["podSelector"],
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {**namespace_peer(GATEWAY_NAMESPACE), **app_peer(GATEWAY)},
                            # The other replicas: a call for a shard they do not own.
                            app_peer(SIGNAL_SERVICE),
                        ],
                        "ports": tcp(GRPC_PORT),
                    }
                ],
            },
            f"{SIGNAL_SERVICE}-egress": {
                "podSelector": app_peer(SIGNAL_SERVICE)["podSelector"],
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [app_peer(TRITON)], "ports": tcp(TRITON_GRPC_PORT)},
                    {
                        "to": [{"ipBlock": {"cidr": REDIS_RANGE}}],
                        "ports": [
                            {"protocol": "TCP", "port": port, **({"endPort": end} if end else {})}
                            for port, end in REDIS_PORTS
                        ],
                    },
                    # The other replicas: a call for a shard they own, sent on to them.
                    {"to": [app_peer(SIGNAL_SERVICE)], "ports": tcp(GRPC_PORT)},
                ],
            },
            f"{TRITON}-ingress": {
                "podSelector": app_peer(TRITON)["podSelector"],
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [app_peer(SIGNAL_SERVICE)], "ports": tcp(TRITON_GRPC_PORT)}],
            },
        }
        return {
            policy: network_policy(
                f"{self._name}-netpol-{policy}", policy, self.namespace, spec, self._labels, self
            )
            for policy, spec in policies.items()
        }
