"""Intelligence on each cluster: the predictive scaler and the anomaly detector (app/autoscale,
app/alerting), the HPA metric the scaler feeds, and the alert policy on the detector.

Per region (`Intelligence`, in its own mesh namespace like the metrics adapter): one
ConfigMap with both services' configuration, two Deployments running the signal service's
image with `python -m app.autoscale` and `python -m app.alerting` (two replicas each, spread
across zones), their PodDisruptionBudgets, PodMonitorings so Managed Prometheus collects
their metrics, and the namespace's default-deny mesh and network policies. They read
Managed Prometheus data through Cloud Monitoring's Prometheus API as their Kubernetes
service account (`identity.monitoring_viewer`: Workload Identity Federation, no key).

The signal service's HPA reads the scaler's `signal_desired_replicas{region}` as the
External metric `desired_replicas_metric` builds (target AverageValue 1: the metric is the
replica count). The selector's `reducer: REDUCE_MAX` makes the adapter take the largest of
the two scaler replicas' identical series instead of their sum.

Stack-wide (`AnomalyAlerts`): a Cloud Monitoring alert policy that fires while any
detector reports `signal_anomaly_active` for a series and region.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from infra.config import IntelligenceSettings, SignalServiceWorkload
from infra.kube import (
    METADATA_SERVER,
    METRICS_SCRAPING_POLICY,
    PULL_POLICY,
    RESTRICTED_CONTAINER,
    accepted_unpinned,
    api_object,
    disruption_budget,
    k8s_labels,
    network_policy,
    object_metadata,
    pod_monitoring,
)
from infra.mesh import baseline_policies, default_deny
from infra.observability import alert_documentation
from infra.workloads import AFTER_IMAGE_AND_MODEL, SHARDS

NAMESPACE = "signal-intelligence"
SERVICE_ACCOUNT = "signal-intelligence"
SCALER = "signal-autoscaler"
DETECTOR = "signal-anomaly-detector"
SCALER_PORT = 9464
DETECTOR_PORT = 9465
CONFIG_DIR = "/etc/signal-intelligence"
DESIRED_REPLICAS = "signal_desired_replicas"
DESIRED_REPLICAS_METRIC = f"prometheus.googleapis.com|{DESIRED_REPLICAS}|gauge"
ANOMALY_ACTIVE = "signal_anomaly_active"
RUN_AS = 65532  # the distroless image's nonroot user


def prometheus_api(project_id: str) -> str:
    """Cloud Monitoring's Prometheus HTTP API for the project's Managed Prometheus data."""
    return f"https://monitoring.googleapis.com/v1/projects/{project_id}/location/global/prometheus"


def request_rate_query(cluster: str) -> str:
    """The signal service's request rate in one region's cluster ({region}: the scaler's).
    Managed Prometheus labels series with the cluster's location: the region, or for a zonal
    cluster one of its zones."""
    return (
        f'sum(rate(signal_requests_total{{location=~"{{region}}(-[a-z])?",cluster="{cluster}"}}'
        "[2m]))"
    )


def scaler_config(
    project_id: str,
    region: str,
    cluster: str,
    settings: IntelligenceSettings,
    workload: SignalServiceWorkload,
) -> dict[str, Any]:
    """`app.autoscale.config.AutoscaleConfig`, camelCase, for one region's scaler."""
    scaling = settings.predictive_scaling
    return {
        "prometheusUrl": prometheus_api(project_id),
        "prometheusAuth": "google",
        "regions": [region],
        "rateQuery": request_rate_query(cluster),
        "historyDays": scaling.history_days,
        "policy": {
            "podCapacityRps": float(workload.target_requests_per_second),
            "targetUtilisation": scaling.target_utilisation,
            "startupMinutes": scaling.startup_minutes,
            "headroomSigmas": scaling.headroom_sigmas,
            "minReplicas": workload.replicas,
            "maxReplicas": workload.max_replicas,
            # Shard moves (app/shards.py): never more replicas than shards, and one fewer a
            # minute at most, as the HPA's scale-down policy (infra/workloads.py).
            "shards": SHARDS,
            "scaleInStep": 1,
        },
        "listenPort": SCALER_PORT,
    }


def detector_config(project_id: str, region: str) -> dict[str, Any]:
    """`app.alerting.config.AlertingConfig`, camelCase: the default series (p99 latency,
    error ratio, GPU duty cycle) with the thresholds bench/alerting.py chose."""
    return {
        "prometheusUrl": prometheus_api(project_id),
        "prometheusAuth": "google",
        "regions": [region],
        "listenPort": DETECTOR_PORT,
    }


def desired_replicas_metric(region: str, cluster: str) -> dict[str, Any]:
    """The HPA metric of the signal service that follows the predictive scaler."""
    return {
        "type": "External",
        "external": {
            "metric": {
                "name": DESIRED_REPLICAS_METRIC,
                "selector": {
                    "matchLabels": {
                        "metric.labels.region": region,
                        "resource.labels.cluster": cluster,
                        "resource.labels.namespace": NAMESPACE,
                        # Two scaler replicas publish the same value: take it once.
                        "reducer": "REDUCE_MAX",
                    }
                },
            },
            "target": {"type": "AverageValue", "averageValue": "1"},
        },
    }


class Intelligence(pulumi.ComponentResource):
    """The predictive scaler and the anomaly detector on one cluster."""

    def __init__(
        self,
        name: str,
        project_id: str,
        region: str,
        cluster: str,
        image: str,
        settings: IntelligenceSettings,
        workload: SignalServiceWorkload,
        tracing_collector: str | None,
        labels: Mapping[str, str],
        # References the stack accepts without a digest, with the reason (`unpinnedImages`).
        unpinned_images: Mapping[str, str] = MappingProxyType({}),
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:Intelligence", name, None, opts)
        self._name = name
        self._labels = labels
        self._settings = settings
        self._unpinned = unpinned_images
        meta = k8s_labels(labels, NAMESPACE)
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={
                "name": NAMESPACE,
                "labels": meta
                | {
                    "istio-injection": "enabled",
                    "pod-security.kubernetes.io/enforce": "restricted",
                },
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={"name": SERVICE_ACCOUNT, "namespace": NAMESPACE, "labels": meta},
            automount_service_account_token=False,  # it never calls the Kubernetes API
            opts=in_namespace,
        )
        files: dict[str, str] = {}
        apps: list[tuple[str, int, str]] = []
        if settings.predictive_scaling.enabled:
            config = scaler_config(project_id, region, cluster, settings, workload)
            files["autoscale.json"] = json.dumps(config, indent=2, sort_keys=True)
            apps.append((SCALER, SCALER_PORT, "app.autoscale"))
        if settings.anomaly_detection.enabled:
            files["alerting.json"] = json.dumps(
                detector_config(project_id, region), indent=2, sort_keys=True
            )
            apps.append((DETECTOR, DETECTOR_PORT, "app.alerting"))
        self.config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"name": NAMESPACE, "namespace": NAMESPACE, "labels": meta},
            data=files,
            opts=in_namespace,
        )
        after_config = pulumi.ResourceOptions(
            parent=self, depends_on=[self.namespace, self.service_account, self.config_map]
        )
        self.deployments: dict[str, k8s.apps.v1.Deployment] = {}
        self.disruption_budgets: dict[str, k8s.policy.v1.PodDisruptionBudget] = {}
        self.pod_monitors: dict[str, k8s.apiextensions.CustomResource] = {}
        for app, port, module in apps:
            config_file = "autoscale.json" if app == SCALER else "alerting.json"
            self.deployments[app] = self._deployment(
                app, port, module, config_file, image, after_config
            )
            self.disruption_budgets[app] = disruption_budget(
                f"{name}-pdb-{app}", app, NAMESPACE, labels, in_namespace
            )
            self.pod_monitors[app] = pod_monitoring(
                f"{name}-monitor-{app}", app, NAMESPACE, labels, "30s", in_namespace
            )
        # Mesh: nothing calls these services; deny every request to them.
        self.default_deny = default_deny(f"{name}-deny", NAMESPACE, meta, in_namespace)
        policies: dict[str, dict[str, Any]] = {
            # DNS, istiod, the metadata server (tokens) and Google APIs (Cloud Monitoring).
            **baseline_policies(tracing_collector),
            "allow-metrics-scraping": METRICS_SCRAPING_POLICY,
        }
        self.network_policies = {
            policy: network_policy(
                f"{name}-netpol-{policy}",
                policy,
                NAMESPACE,
                spec,
                labels,
                self,
                depends_on=[self.namespace],
            )
            for policy, spec in policies.items()
        }
        self.register_outputs({"namespace": self.namespace.metadata.name})

    def _deployment(
        self,
        app: str,
        port: int,
        module: str,
        config_file: str,
        image: str,
        opts: pulumi.ResourceOptions,
    ) -> k8s.apps.v1.Deployment:
        labels = k8s_labels(self._labels, app)
        selector = {"matchLabels": {"app": app}}
        resources = self._settings.resources
        probe = {"httpGet": {"path": "/metrics", "port": port}, "timeoutSeconds": 5}
        template = {
            "metadata": {
                "labels": labels,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(port),
                    "prometheus.io/path": "/metrics",
                    # Workload Identity tokens come from the metadata server, not through Envoy.
                    "traffic.sidecar.istio.io/excludeOutboundIPRanges": ",".join(
                        cidr for cidr, _ in METADATA_SERVER
                    ),
                },
            },
            "spec": {
                "serviceAccountName": SERVICE_ACCOUNT,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": 10,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS,
                    "runAsGroup": RUN_AS,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": selector,
                    }
                ],
                "containers": [
                    {
                        "name": app,
                        "image": image,
                        "imagePullPolicy": PULL_POLICY,
                        "command": ["/usr/bin/python3", "-m", module],
                        "args": ["--config", f"{CONFIG_DIR}/{config_file}"],
                        "ports": [{"name": "http-metrics", "containerPort": port}],
                        "resources": {
                            "requests": dict(resources.requests),
                            "limits": dict(resources.limits),
                        },
                        "securityContext": RESTRICTED_CONTAINER,
                        # Ready once it serves metrics; it fits its model before it does.
                        "readinessProbe": {**probe, "periodSeconds": 10},
                        "livenessProbe": {
                            **probe,
                            "initialDelaySeconds": 60,
                            "periodSeconds": 30,
                            "failureThreshold": 3,
                        },
                        "volumeMounts": [
                            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "config", "configMap": {"name": NAMESPACE}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                ],
            },
        }
        return k8s.apps.v1.Deployment(
            f"{self._name}-{app}",
            # The signal service's image: deployed from stage `workloads` only.
            metadata=object_metadata(
                app,
                NAMESPACE,
                labels,
                {**accepted_unpinned(image, self._unpinned), **AFTER_IMAGE_AND_MODEL},
            ),
            spec=api_object(
                {
                    # Two replicas compute the same thing from the same data; the HPA metric
                    # reduces them with REDUCE_MAX, the alert policy with max.
                    "replicas": self._settings.replicas,
                    "selector": selector,
                    "template": template,
                }
            ),
            opts=opts,
        )


def anomaly_query(series: Sequence[str]) -> str:
    """PromQL that is non-empty while a detector flags one of ``series`` in a region."""
    names = "|".join(series)
    return f'max by (region, series) ({ANOMALY_ACTIVE}{{series=~"{names}"}}) > 0'


class AnomalyAlerts(pulumi.ComponentResource):
    """The alert policy on every region's anomaly detectors."""

    def __init__(
        self,
        name: str,
        settings: IntelligenceSettings,
        series: Sequence[str],
        notification_channels: Sequence[pulumi.Input[str]],
        labels: Mapping[str, str],
        dashboard_url: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:AnomalyAlerts", name, None, opts)
        detection = settings.anomaly_detection
        condition: gcp.monitoring.AlertPolicyConditionArgsDict = {
            "display_name": "a signal series left its seasonal baseline",
            "condition_prometheus_query_language": {
                "query": anomaly_query(series),
                "duration": detection.alert_after,
                "evaluation_interval": "60s",
            },
        }
        documentation = alert_documentation(
            "The anomaly detector (app/alerting) scores each series against a robust "
            "per-minute-of-day baseline (median and MAD of the last days). The `series` "
            "and `region` labels name what moved; `signal_anomaly_score` and "
            "`signal_anomaly_baseline` show how far, and from what.",
            "open the dashboard's chart of the moved series (latency, server errors or GPU duty "
            "cycle) for that region, then follow that alert's runbook.",
            dashboard_url,
        )
        self.policy = gcp.monitoring.AlertPolicy(
            f"{name}-policy",
            display_name="signal-anomaly",
            combiner="OR",
            conditions=[condition],
            severity=detection.severity,
            notification_channels=list(notification_channels),
            documentation=documentation,
            alert_strategy={"auto_close": "86400s"},
            user_labels=dict(labels),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"policy": self.policy.name})
