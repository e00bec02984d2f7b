"""The predictive scaler and the anomaly detector on every cluster, the HPA metric the scaler
feeds, the alert policy on the detectors, and the `intelligence` settings' validation."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from app.alerting.config import AlertingConfig
from app.autoscale.config import AutoscaleConfig, load_model
from infra.autoscale import DESIRED_REPLICAS_METRIC, NAMESPACE
from infra.config import ConfigError, StackConfig
from infra.workloads import SHARDS
from tests.conftest import REPO
from tests.infra.test_config import load, stack_values
from tools.engine import plan
from tools.inventory import Inventory, Resource

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
POD_MONITORING = "kubernetes:monitoring.googleapis.com/v1:PodMonitoring"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
APPS = {"signal-autoscaler": "app.autoscale", "signal-anomaly-detector": "app.alerting"}


def config_of(inventory: Inventory) -> StackConfig:
    return StackConfig.load(inventory.stack, stack_values(inventory.stack))


def in_namespace(inventory: Inventory, type_token: str) -> dict[str, dict[str, Resource]]:
    """region → name → object, for the objects of the intelligence namespace."""
    regions = inventory.regions()
    found: dict[str, dict[str, Resource]] = {r: {} for r in inventory.outputs["regions"]}
    for resource in inventory.of_type(type_token):
        if resource.inputs["metadata"].get("namespace") == NAMESPACE:
            region = regions[resource.urn]
            assert region is not None
            found[region][resource.inputs["metadata"]["name"]] = resource
    return found


def test_scaler_and_detector_run_on_every_cluster(stack_plan: Inventory):
    cfg = config_of(stack_plan)
    for type_token in (DEPLOYMENT, PDB, POD_MONITORING):
        for region, objects in in_namespace(stack_plan, type_token).items():
            assert set(objects) == set(APPS), (type_token, region)
    for deployments in in_namespace(stack_plan, DEPLOYMENT).values():
        for app, module in APPS.items():
            spec = deployments[app].inputs["spec"]
            assert spec["replicas"] == cfg.intelligence.replicas == 2
            pod = spec["template"]["spec"]
            (container,) = pod["containers"]
            # The signal service's image (pinned by digest in prod), another entry point.
            assert container["image"] == cfg.workloads.signal_service.image
            assert container["command"] == ["/usr/bin/python3", "-m", module]
            config_file = container["args"][1]
            assert config_file.startswith("/etc/signal-intelligence/")
            assert pod["serviceAccountName"] == "signal-intelligence"
            assert pod["topologySpreadConstraints"][0]["topologyKey"] == (
                "topology.kubernetes.io/zone"
            )
            annotations = spec["template"]["metadata"]["annotations"]
            port = container["ports"][0]["containerPort"]
            assert annotations["prometheus.io/port"] == str(port)
            assert container["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": port}


def test_config_files_are_what_the_services_accept(stack_plan: Inventory):
    """The ConfigMap's files validate against the services' own models: a key the app
    renamed or a bound it tightened fails here, not in the cluster."""
    cfg = config_of(stack_plan)
    signal = cfg.workloads.signal_service
    for region, maps in in_namespace(stack_plan, CONFIG_MAP).items():
        files = maps[NAMESPACE].inputs["data"]
        scaler = load_model(AutoscaleConfig, "autoscale.json", json.loads(files["autoscale.json"]))
        assert scaler.regions == (region,)
        assert scaler.prometheus_url == (
            f"https://monitoring.googleapis.com/v1/projects/{cfg.project_id}"
            "/location/global/prometheus"
        )
        assert scaler.prometheus_auth == "google"
        assert f'cluster="signal-{region}"' in scaler.query_for(region)
        # Managed Prometheus's `location` is the cluster's: a zone of a zonal cluster (dev's).
        matcher = re.search(r'location=~"([^"]+)"', scaler.query_for(region))
        assert matcher and re.fullmatch(matcher.group(1), cfg.region(region).location)
        assert re.fullmatch(matcher.group(1), region)
        # The request counter, which the HPA and the SLO count too (app/telemetry.py).
        assert scaler.query_for(region).startswith("sum(rate(signal_requests_total{")
        policy = scaler.policy
        assert policy.pod_capacity_rps == signal.target_requests_per_second
        assert (policy.min_replicas, policy.max_replicas) == (signal.replicas, signal.max_replicas)
        assert policy.target_utilisation == cfg.intelligence.predictive_scaling.target_utilisation
        # Shard moves: never more replicas than the service's shards, one fewer a minute.
        assert (policy.shards, policy.scale_in_step) == (SHARDS, 1)
        detector = load_model(AlertingConfig, "alerting.json", json.loads(files["alerting.json"]))
        assert detector.regions == (region,)
        assert [s.name for s in detector.series] == [
            "latency_p99_ms",
            "error_ratio",
            "gpu_utilisation",
        ]


def test_signal_hpa_follows_the_scaler_with_cpu_as_backstop(stack_plan: Inventory):
    cfg = config_of(stack_plan)
    regions = stack_plan.regions()
    hpas = [h for h in stack_plan.of_type(HPA) if h.inputs["metadata"]["name"] == "signal-service"]
    assert len(hpas) == len(stack_plan.outputs["regions"])
    for hpa in hpas:
        region = regions[hpa.urn]
        metrics: list[dict[str, Any]] = hpa.inputs["spec"]["metrics"]
        cpu = next(m for m in metrics if m["type"] == "Resource")
        assert cpu["resource"]["target"]["averageUtilization"] == (
            cfg.intelligence.predictive_scaling.cpu_backstop_percent
        )
        (external,) = [m for m in metrics if m["type"] == "External"]
        metric = external["external"]["metric"]
        assert metric["name"] == DESIRED_REPLICAS_METRIC
        assert metric["selector"]["matchLabels"] == {
            "metric.labels.region": region,
            "resource.labels.cluster": f"signal-{region}",
            "resource.labels.namespace": NAMESPACE,
            "reducer": "REDUCE_MAX",  # two scaler replicas: their value once, not the sum
        }
        # AverageValue 1: the HPA's desired replicas are the published value.
        assert external["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}


def test_namespace_denies_all_but_scraping_and_the_platform(stack_plan: Inventory):
    for region, policies in in_namespace(stack_plan, NETWORK_POLICY).items():
        assert set(policies) == {
            "default-deny",
            "allow-dns",
            "allow-platform",
            "allow-metrics-scraping",
        }, region
        scraping = policies["allow-metrics-scraping"].inputs["spec"]["ingress"]
        assert scraping[0]["ports"] == [{"protocol": "TCP", "port": 15020}]


def test_monitoring_read_grant_and_anomaly_alert(stack_plan: Inventory):
    cfg = config_of(stack_plan)
    grants = [
        g for g in stack_plan.of_type(PROJECT_IAM) if g.name == "intelligence-monitoring-viewer"
    ]
    (grant,) = grants
    assert grant.inputs["role"] == "roles/monitoring.viewer"
    assert grant.inputs["member"].endswith(f"/ns/{NAMESPACE}/sa/signal-intelligence")
    (alert,) = [
        p for p in stack_plan.of_type(POLICY) if p.inputs["displayName"] == "signal-anomaly"
    ]
    (condition,) = alert.inputs["conditions"]
    promql = condition["conditionPrometheusQueryLanguage"]
    assert promql["query"] == (
        "max by (region, series) "
        '(signal_anomaly_active{series=~"latency_p99_ms|error_ratio|gpu_utilisation"}) > 0'
    )
    assert promql["duration"] == cfg.intelligence.anomaly_detection.alert_after
    assert alert.inputs["severity"] == "WARNING"


def test_disabled_intelligence_leaves_the_hpa_as_it_was():
    overrides = {
        "signal-platform:intelligence": json.dumps(
            {"predictiveScaling": {"enabled": False}, "anomalyDetection": {"enabled": False}}
        )
    }
    inventory = plan(REPO, "dev", overrides)
    assert not any(in_namespace(inventory, DEPLOYMENT).values())
    assert not [p for p in inventory.of_type(POLICY) if p.inputs["displayName"] == "signal-anomaly"]
    assert not [g for g in inventory.of_type(PROJECT_IAM) if g.name.startswith("intelligence")]
    (hpa,) = [h for h in inventory.of_type(HPA) if h.inputs["metadata"]["name"] == "signal-service"]
    types = [m["type"] for m in hpa.inputs["spec"]["metrics"]]
    assert types == ["Resource", "Pods"]
    cpu = hpa.inputs["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
    assert cpu == config_of(inventory).workloads.signal_service.target_cpu_percent


@pytest.mark.parametrize(
    ("section", "path", "allowed"),
    [
        ({"predictiveScaling": {"targetUtilisation": 1.5}},
         "intelligence.predictiveScaling.targetUtilisation", "<= 1"),
        ({"predictiveScaling": {"cpuBackstopPercent": 99}},
         "intelligence.predictiveScaling.cpuBackstopPercent", "<= 95"),
        ({"anomalyDetection": {"alertAfter": "500ms"}},
         "intelligence.anomalyDetection.alertAfter", r"matching ^\d+s$"),
        ({"anomalyDetection": {"alertSeries": ["latency_p99_ms", "latency_p99_ms"]}},
         "intelligence.anomalyDetection.alertSeries", "series are listed twice"),
        ({"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}},
         "intelligence.resources", "requests.memory, limits.memory"),
        ({"replicas": 0}, "intelligence.replicas", ">= 1"),
        ({"predictiveScaling": {"enable": False}},
         "intelligence.predictiveScaling.enable", "unknown key"),
    ],
)  # fmt: skip
def test_settings_errors_name_the_key_and_what_is_allowed(
    section: dict[str, Any], path: str, allowed: str
):
    with pytest.raises(ConfigError) as info:
        load("dev", intelligence=section)
    text = str(info.value)
    assert f"signal-platform:{path}" in text
    assert allowed in text
