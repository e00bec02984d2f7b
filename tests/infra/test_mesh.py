"""The Istio mesh of every cluster, as the policy pack sees it in each stack's plan, and the
mesh settings' validation."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, StackConfig
from infra.mesh import (
    GATEWAY_PRINCIPAL,
    WORKLOAD_NAMESPACES,
    locality_setting,
    principal,
    region_shares,
)
from tests.infra.test_config import load, stack_values
from tools.inventory import Inventory, Resource

RELEASE = "kubernetes:helm.sh/v3:Release"
NAMESPACE = "kubernetes:core/v1:Namespace"
PEER_AUTHENTICATION = "kubernetes:security.istio.io/v1:PeerAuthentication"
AUTHORIZATION = "kubernetes:security.istio.io/v1:AuthorizationPolicy"
DESTINATION_RULE = "kubernetes:networking.istio.io/v1:DestinationRule"
VIRTUAL_SERVICE = "kubernetes:networking.istio.io/v1:VirtualService"
GATEWAY = "kubernetes:networking.istio.io/v1:Gateway"
TELEMETRY = "kubernetes:telemetry.istio.io/v1:Telemetry"
SIGNAL_SERVICE_PRINCIPAL = "cluster.local/ns/signals/sa/signal-service"


def config_of(plan: Inventory) -> StackConfig:
    return StackConfig.load(plan.stack, stack_values(plan.stack))


def per_region(plan: Inventory, type_token: str) -> dict[str, list[Resource]]:
    regions = plan.regions()
    found: dict[str, list[Resource]] = {r: [] for r in plan.outputs["regions"]}
    for resource in plan.of_type(type_token):
        found[regions[resource.urn]].append(resource)  # type: ignore[index]
    return found


def named(resources: list[Resource], name: str, namespace: str | None = None) -> Resource:
    (found,) = [
        r
        for r in resources
        if r.inputs["metadata"]["name"] == name
        and (namespace is None or r.inputs["metadata"].get("namespace") == namespace)
    ]
    return found


# ---------------------------------------------------------------- installation


def test_istio_charts_are_pinned_in_every_cluster(stack_plan: Inventory):
    mesh = config_of(stack_plan).mesh
    for region, releases in per_region(stack_plan, RELEASE).items():
        charts = {r.inputs["chart"]: r.inputs for r in releases}
        assert set(charts) == {"base", "cni", "istiod", "gateway"}, region
        for chart in charts.values():
            assert chart["version"] == mesh.istio_version
            assert chart["repositoryOpts"] == {"repo": mesh.chart_repository}
            assert chart["atomic"] is True and chart["createNamespace"] is False
        assert charts["base"]["namespace"] == charts["istiod"]["namespace"] == "istio-system"
        assert charts["cni"]["namespace"] == "kube-system"
        assert charts["gateway"]["namespace"] == "istio-ingress"


def test_istiod_joins_one_mesh_with_cni_and_tracing(stack_plan: Inventory):
    mesh = config_of(stack_plan).mesh
    host, port = mesh.tracing_collector.rsplit(":", 1)
    for region, releases in per_region(stack_plan, RELEASE).items():
        (istiod,) = [r for r in releases if r.inputs["chart"] == "istiod"]
        values = istiod.inputs["values"]
        assert values["global"]["meshID"] == "signal-mesh"
        assert values["global"]["multiCluster"] == {"clusterName": f"signal-{region}"}
        assert values["global"]["network"] == "signal-vpc"
        assert values["pilot"]["cni"] == {"enabled": True}
        assert values["pilot"]["replicaCount"] == mesh.istiod_replicas
        config = values["meshConfig"]
        assert config["enableTracing"] is True
        assert config["defaultProviders"] == {"tracing": ["otel"]}
        assert config["extensionProviders"] == [
            {"name": "otel", "opentelemetry": {"service": host, "port": int(port)}}
        ]
        assert config["defaultConfig"]["holdApplicationUntilProxyStarts"] is True


def test_gateway_is_internal_and_autoscaled(stack_plan: Inventory):
    mesh = config_of(stack_plan).mesh
    for releases in per_region(stack_plan, RELEASE).values():
        (gateway,) = [r for r in releases if r.inputs["chart"] == "gateway"]
        values = gateway.inputs["values"]
        assert values["service"]["annotations"] == {
            "networking.gke.io/load-balancer-type": "Internal"
        }
        assert values["autoscaling"]["minReplicas"] == mesh.gateway_replicas
        assert values["podDisruptionBudget"] == {"maxUnavailable": 1}


def test_tracing_samples_as_configured(stack_plan: Inventory):
    mesh = config_of(stack_plan).mesh
    for region, (telemetry,) in per_region(stack_plan, TELEMETRY).items():
        assert telemetry.inputs["metadata"]["namespace"] == "istio-system", region
        assert telemetry.inputs["spec"]["tracing"] == [
            {
                "providers": [{"name": "otel"}],
                "randomSamplingPercentage": mesh.trace_sampling_percent,
            }
        ]


def test_workload_namespace_is_injected_and_restricted(stack_plan: Inventory):
    for region, namespaces in per_region(stack_plan, NAMESPACE).items():
        signals = named(namespaces, "signals")
        labels = signals.inputs["metadata"]["labels"]
        assert labels["istio-injection"] == "enabled", region
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert (
            named(namespaces, "istio-ingress").inputs["metadata"]["labels"]["istio-injection"]
            == "enabled"
        )


# ---------------------------------------------------------------- mTLS and authorization


def test_mtls_is_strict_mesh_wide_and_in_every_workload_namespace(stack_plan: Inventory):
    for region, policies in per_region(stack_plan, PEER_AUTHENTICATION).items():
        namespaces = {p.inputs["metadata"]["namespace"] for p in policies}
        assert namespaces == {"istio-system", *WORKLOAD_NAMESPACES}, region
        for policy in policies:
            assert policy.inputs["spec"] == {"mtls": {"mode": "STRICT"}}
            assert policy.inputs["metadata"]["name"] == "default"


def test_every_workload_namespace_denies_by_default(stack_plan: Inventory):
    for region, policies in per_region(stack_plan, AUTHORIZATION).items():
        denies = [p for p in policies if p.inputs["metadata"]["name"] == "default-deny"]
        namespaces = {p.inputs["metadata"]["namespace"] for p in denies}
        # + the metrics adapter's and the scaler's and detector's (infra/autoscale.py)
        assert {*WORKLOAD_NAMESPACES, "custom-metrics", "signal-intelligence"} == namespaces, region
        for deny in denies:
            # ALLOW with no rules matches nothing: Istio denies every request.
            assert deny.inputs["spec"] == {}


def test_only_the_gateway_and_its_replicas_call_the_service_and_only_it_calls_triton(
    stack_plan: Inventory,
):
    """The service's callers: the gateway, and its own replicas (a call for a shard another
    replica owns is sent on to the owner, app/shards.py)."""
    for region, policies in per_region(stack_plan, AUTHORIZATION).items():
        allows = {
            p.inputs["spec"]["selector"]["matchLabels"]["app"]: p.inputs["spec"]
            for p in policies
            if p.inputs["spec"]
        }
        assert set(allows) == {"signal-service", "triton"}, region
        for spec in allows.values():
            assert spec["action"] == "ALLOW"
            (rule,) = spec["rules"]
            assert len(rule["from"]) == 1
        service, triton = allows["signal-service"]["rules"][0], allows["triton"]["rules"][0]
        assert service["from"][0]["source"] == {
            "principals": [GATEWAY_PRINCIPAL, SIGNAL_SERVICE_PRINCIPAL]
        }
        assert service["to"] == [{"operation": {"ports": ["50051"]}}]
        assert triton["from"][0]["source"] == {"principals": [SIGNAL_SERVICE_PRINCIPAL]}
        assert triton["to"] == [{"operation": {"ports": ["8001"]}}]


def test_principals_are_spiffe_identities():
    assert principal("signals", "triton") == "cluster.local/ns/signals/sa/triton"
    assert GATEWAY_PRINCIPAL == "cluster.local/ns/istio-ingress/sa/istio-ingressgateway"


# ---------------------------------------------------------------- traffic


def test_destination_rules_keep_persistent_pools_and_mutual_tls(stack_plan: Inventory):
    mesh = config_of(stack_plan).mesh
    pool, outliers = mesh.connection_pool, mesh.outlier_detection
    for region, rules in per_region(stack_plan, DESTINATION_RULE).items():
        hosts = {r.inputs["spec"]["host"] for r in rules}
        assert hosts == {
            "signal-service.signals.svc.cluster.local",
            # one named replica (a shard's owner): pools and mTLS, the caller chose the pod
            "signal-service-replicas.signals.svc.cluster.local",
            "triton.signals.svc.cluster.local",
        }, region
        for rule in rules:
            policy = rule.inputs["spec"]["trafficPolicy"]
            if rule.inputs["spec"]["host"].startswith("signal-service-replicas."):
                assert set(policy) == {"connectionPool", "tls"}
                assert policy["tls"] == {"mode": "ISTIO_MUTUAL"}
                assert policy["connectionPool"]["tcp"]["maxConnections"] == pool.max_connections
                continue
            assert policy["tls"] == {"mode": "ISTIO_MUTUAL"}
            assert policy["connectionPool"]["http"] == {
                "h2UpgradePolicy": "UPGRADE",
                "http2MaxRequests": pool.http2_max_requests,
                "http1MaxPendingRequests": pool.http1_max_pending_requests,
                "maxRequestsPerConnection": 0,
                "idleTimeout": pool.idle_timeout,
            }
            assert policy["connectionPool"]["tcp"]["maxConnections"] == pool.max_connections
            assert policy["connectionPool"]["tcp"]["connectTimeout"] == pool.connect_timeout
            assert policy["outlierDetection"] == {
                "consecutive5xxErrors": outliers.consecutive_errors,
                "interval": outliers.interval,
                "baseEjectionTime": outliers.base_ejection_time,
                "maxEjectionPercent": outliers.max_ejection_percent,
            }
            assert policy["loadBalancer"]["simple"] == "LEAST_REQUEST"
            assert policy["loadBalancer"]["localityLbSetting"]["enabled"] is True


def test_prod_spreads_inference_by_region_weight_and_fails_the_api_over(prod_plan: Inventory):
    weights = config_of(prod_plan).mesh.region_weights
    assert weights == {"us-central1": 50, "us-east4": 30, "europe-west4": 20}
    for region, rules in per_region(prod_plan, DESTINATION_RULE).items():
        by_host = {r.inputs["spec"]["host"].split(".")[0]: r.inputs["spec"] for r in rules}
        triton = by_host["triton"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]
        assert triton["distribute"] == [
            {"from": f"{region}/*", "to": {f"{r}/*": w for r, w in weights.items()}}
        ]
        assert "failover" not in triton, "Istio takes one of distribute or failover"
        api = by_host["signal-service"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]
        preferred = "us-east4" if region == "us-central1" else "us-central1"
        assert api["failover"] == [{"from": region, "to": preferred}]
        assert "distribute" not in api


def test_dev_has_one_region_and_no_cross_region_routing(dev_plan: Inventory):
    for rule in dev_plan.of_type(DESTINATION_RULE):
        if "loadBalancer" not in rule.inputs["spec"]["trafficPolicy"]:
            continue  # a named replica: no balancing, no locality
        assert rule.inputs["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"] == {
            "enabled": True
        }


def test_api_is_routed_from_the_gateway_with_timeouts_and_retries(stack_plan: Inventory):
    api = config_of(stack_plan).mesh.api
    for region, services in per_region(stack_plan, VIRTUAL_SERVICE).items():
        (service,) = services
        spec = service.inputs["spec"]
        assert spec["hosts"] == [api.host, "signal-service.signals.svc.cluster.local"], region
        assert spec["gateways"] == ["istio-ingress/signal-api", "mesh"]
        (route,) = spec["http"]
        assert route["timeout"] == api.timeout
        assert route["retries"] == {
            "attempts": api.retries,
            "perTryTimeout": api.per_try_timeout,
            "retryOn": api.retry_on,
        }
        assert route["route"] == [
            {
                "destination": {
                    "host": "signal-service.signals.svc.cluster.local",
                    "port": {"number": 50051},
                }
            }
        ]
    for gateways in per_region(stack_plan, GATEWAY).values():
        (gateway,) = gateways
        (server,) = gateway.inputs["spec"]["servers"]
        assert server["hosts"] == [api.host]
        assert (
            server["tls"]["mode"] == "SIMPLE" and server["tls"]["credentialName"] == api.tls_secret
        )
        assert server["tls"]["minProtocolVersion"] == "TLSV1_2"


# ---------------------------------------------------------------- locality functions


def test_region_shares_are_configured_or_equal():
    regions = ("a-1", "b-1", "c-1")
    assert region_shares(regions, {}) == {"a-1": 34, "b-1": 33, "c-1": 33}
    assert region_shares(regions[:1], {}) == {"a-1": 100}
    assert region_shares(regions, {"a-1": 70, "b-1": 30, "c-1": 0}) == {
        "a-1": 70,
        "b-1": 30,
        "c-1": 0,
    }


def test_locality_setting_distribute_skips_empty_regions_and_failover_prefers_weight():
    shares = {"a-1": 70, "b-1": 0, "c-1": 30}
    assert locality_setting("distribute", "b-1", shares) == {
        "enabled": True,
        "distribute": [{"from": "b-1/*", "to": {"a-1/*": 70, "c-1/*": 30}}],
    }
    assert locality_setting("failover", "a-1", shares)["failover"] == [{"from": "a-1", "to": "c-1"}]
    assert locality_setting("failover", "c-1", shares)["failover"] == [{"from": "c-1", "to": "a-1"}]
    assert locality_setting("failover", "a-1", {"a-1": 100}) == {"enabled": True}


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("mesh", "fragment"),
    [
        (
            {"regionWeights": {"us-central1": 50, "us-east4": 30, "europe-west4": 10}},
            "signal-platform:mesh.regionWeights: weights must sum to 100 (they sum to 90)",
        ),
        (
            {"regionWeights": {"us-central1": 70, "us-east4": 30}},
            "signal-platform:mesh.regionWeights: no weight for europe-west4",
        ),
        (
            {
                "regionWeights": {
                    "us-central1": 50,
                    "us-east4": 30,
                    "europe-west4": 10,
                    "asia-northeast1": 10,
                }
            },
            "signal-platform:mesh.regionWeights.asia-northeast1: weight for a region the stack does not deploy",
        ),
        ({"istioVersion": "1.27.3"}, "Istio minor without a known Kubernetes support range"),
        ({"istioVersion": "latest"}, "signal-platform:mesh.istioVersion"),
        ({"connectionPool": {"maxRequestsPerConnection": -1}}, "maxRequestsPerConnection"),
        ({"api": {"timeout": "2 seconds"}}, "signal-platform:mesh.api.timeout"),
        ({"traceSamplingPercent": 101}, "signal-platform:mesh.traceSamplingPercent"),
        ({"tracingCollector": "collector"}, "signal-platform:mesh.tracingCollector"),
    ],
)
def test_bad_mesh_settings_name_the_key(mesh: dict, fragment: str):
    with pytest.raises(ConfigError) as exc:
        load("prod", mesh=mesh)
    assert fragment in str(exc.value)


def test_mesh_defaults_apply_without_the_section():
    cfg = load("prod", mesh=None)
    assert cfg.mesh.region_weights == {}
    assert cfg.mesh.connection_pool.max_requests_per_connection == 0
    assert cfg.mesh.istio_version == "1.30.5"
