"""The metrics adapter's reachability: the API server calls it through GKE's konnectivity
agents, and its objects wait for its namespace."""

from __future__ import annotations

from infra.kube import KONNECTIVITY_AGENTS
from infra.metrics_adapter import METRICS_NAMESPACE, SECURE_PORT
from tests.infra.test_apply_order import waits_for
from tools.inventory import Inventory

NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
NAMESPACE = "kubernetes:core/v1:Namespace"


def test_the_api_server_reaches_the_adapter_directly_or_through_konnectivity(
    stack_plan: Inventory,
):
    """On GKE aggregated-API calls arrive from the konnectivity agents' pod addresses, so a
    policy admitting only the control-plane range leaves custom.metrics.k8s.io unavailable
    and every HPA on Pods or External metrics blind (review.md #8)."""
    policies = [
        p
        for p in stack_plan.of_type(NETWORK_POLICY)
        if p.inputs["metadata"]["name"] == "api-server"
        and p.inputs["metadata"]["namespace"] == METRICS_NAMESPACE
    ]
    assert len(policies) == len(stack_plan.outputs["regions"])
    for policy in policies:
        (rule,) = policy.inputs["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": SECURE_PORT}]
        assert KONNECTIVITY_AGENTS in rule["from"]
        assert KONNECTIVITY_AGENTS == {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "konnectivity-agent"}},
        }
        (block,) = [peer["ipBlock"]["cidr"] for peer in rule["from"] if "ipBlock" in peer]
        assert block.endswith("/28")  # the control plane's range, for clusters without it


def test_the_adapters_policies_wait_for_its_namespace(stack_plan: Inventory):
    namespaces = {
        (n.provider, n.inputs["metadata"]["name"]): n for n in stack_plan.of_type(NAMESPACE)
    }
    policies = [
        p
        for p in stack_plan.of_type(NETWORK_POLICY)
        if p.inputs["metadata"]["namespace"] == METRICS_NAMESPACE
    ]
    assert policies
    for policy in policies:
        namespace = namespaces[policy.provider, METRICS_NAMESPACE]
        assert namespace.urn in waits_for(stack_plan, policy), policy.name
