"""The Istio mesh of every cluster, as the policy pack sees it in each stack's plan, and the
mesh settings' validation."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, StackConfig
from infra.mesh import (
    EXTERNAL_CREDENTIALS,
    GATEWAY_PRINCIPAL,
    WORKLOAD_NAMESPACES,
    baseline_policies,
    principal,
)
from tests.conftest import REPO
from tests.infra.test_apply_order import waits_for
from tests.infra.test_config import load, stack_values
from tools.engine import plan as plan_stack
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


def test_istiod_runs_one_mesh_per_cluster_with_cni_and_no_tracing_by_default(
    stack_plan: Inventory,
):
    """One mesh per region (review.md #9): no shared mesh ID or network, which without a
    shared root and remote secrets would only claim a mesh that does not exist; and no spans
    are exported unless a collector is configured (review.md #11: none is deployed)."""
    mesh = config_of(stack_plan).mesh
    assert mesh.tracing_collector is None
    for region, releases in per_region(stack_plan, RELEASE).items():
        (istiod,) = [r for r in releases if r.inputs["chart"] == "istiod"]
        values = istiod.inputs["values"]
        assert "meshID" not in values["global"] and "network" not in values["global"]
        assert values["global"]["multiCluster"] == {"clusterName": f"signal-{region}"}
        assert values["pilot"]["cni"] == {"enabled": True}
        assert values["pilot"]["replicaCount"] == mesh.istiod_replicas
        config = values["meshConfig"]
        assert config["enableTracing"] is False
        assert "extensionProviders" not in config and "defaultProviders" not in config
        assert config["defaultConfig"]["holdApplicationUntilProxyStarts"] is True
    assert not stack_plan.of_type(TELEMETRY)


COLLECTOR = "otel-collector.tracing.svc.cluster.local:4317"


def test_a_configured_collector_gets_the_spans_and_only_it_is_reachable():
    traced = plan_stack(
        REPO, "dev", {"signal-platform:mesh": f'{{"tracingCollector": "{COLLECTOR}"}}'}
    )
    mesh = config_of(traced).mesh
    (istiod,) = [r for r in traced.of_type(RELEASE) if r.inputs["chart"] == "istiod"]
    config = istiod.inputs["values"]["meshConfig"]
    assert config["enableTracing"] is True
    assert config["defaultProviders"] == {"tracing": ["otel"]}
    assert config["extensionProviders"] == [
        {
            "name": "otel",
            "opentelemetry": {"service": "otel-collector.tracing.svc.cluster.local", "port": 4317},
        }
    ]
    (telemetry,) = traced.of_type(TELEMETRY)
    assert telemetry.inputs["spec"]["tracing"] == [
        {"providers": [{"name": "otel"}], "randomSamplingPercentage": mesh.trace_sampling_percent}
    ]
    egress = baseline_policies(COLLECTOR)["allow-platform"]["egress"]
    assert egress[-1] == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tracing"}}}],
        "ports": [{"protocol": "TCP", "port": 4317}],
    }
    # Without a collector, no namespace is reachable for it.
    assert len(baseline_policies(None)["allow-platform"]["egress"]) == len(egress) - 1


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


def test_nothing_routes_or_is_admitted_across_regions(stack_plan: Inventory):
    """One mesh per region: locality balancing prefers the caller's zone and fails over
    within the region; no DestinationRule names another region, and no NetworkPolicy admits
    another region's pods (review.md #9)."""
    config = config_of(stack_plan)
    for rule in stack_plan.of_type(DESTINATION_RULE):
        policy = rule.inputs["spec"]["trafficPolicy"]
        if "loadBalancer" not in policy:
            continue  # a named replica: no balancing, no locality
        assert policy["loadBalancer"]["localityLbSetting"] == {"enabled": True}
    pod_ranges = {config.region(r).network.pods_cidr for r in config.regions}
    for netpol in stack_plan.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy"):
        spec = netpol.inputs["spec"]
        peers = [
            peer
            for rule in (*spec.get("ingress", ()), *spec.get("egress", ()))
            for peer in (*rule.get("from", ()), *rule.get("to", ()))
        ]
        assert not any(peer.get("ipBlock", {}).get("cidr") in pod_ranges for peer in peers)


def test_mesh_objects_wait_for_their_namespace(stack_plan: Inventory):
    namespaces = {
        (n.provider, n.inputs["metadata"]["name"]): n for n in stack_plan.of_type(NAMESPACE)
    }
    checked = 0
    for type_token in (PEER_AUTHENTICATION, AUTHORIZATION, DESTINATION_RULE, VIRTUAL_SERVICE):
        for resource in stack_plan.of_type(type_token):
            key = (resource.provider, resource.inputs["metadata"]["namespace"])
            if key in namespaces:
                checked += 1
                assert namespaces[key].urn in waits_for(stack_plan, resource), resource.name
    assert checked >= 8


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
        # Not issued by the program: an operator prerequisite, said so (review.md #10).
        assert gateway.inputs["metadata"]["annotations"] == {EXTERNAL_CREDENTIALS: api.tls_secret}


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("mesh", "fragment"),
    [
        # Cross-region weights are gone with the one mesh per region: refused, not ignored.
        (
            {"regionWeights": {"us-central1": 50, "us-east4": 30, "europe-west4": 20}},
            "signal-platform:mesh.regionWeights",
        ),
        ({"istioVersion": "1.27.3"}, "Istio minor without a known Kubernetes support range"),
        ({"istioVersion": "latest"}, "signal-platform:mesh.istioVersion"),
        ({"connectionPool": {"maxRequestsPerConnection": -1}}, "maxRequestsPerConnection"),
        ({"api": {"timeout": "2 seconds"}}, "signal-platform:mesh.api.timeout"),
        ({"traceSamplingPercent": 101}, "signal-platform:mesh.traceSamplingPercent"),
        ({"tracingCollector": "collector"}, "signal-platform:mesh.tracingCollector"),
        # Not a Service's in-cluster name: the pack could not tell which Service it means.
        ({"tracingCollector": "otel.example.com:4317"}, "signal-platform:mesh.tracingCollector"),
    ],
)
def test_bad_mesh_settings_name_the_key(mesh: dict, fragment: str):
    with pytest.raises(ConfigError) as exc:
        load("prod", mesh=mesh)
    assert fragment in str(exc.value)


def test_mesh_defaults_apply_without_the_section():
    cfg = load("prod", mesh=None)
    assert cfg.mesh.tracing_collector is None
    assert cfg.mesh.connection_pool.max_requests_per_connection == 0
    assert cfg.mesh.istio_version == "1.30.5"
