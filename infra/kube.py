"""Kubernetes object parts every module declares the same way: labels, the restricted container,
NetworkPolicy building blocks, PodDisruptionBudgets and Managed Prometheus PodMonitorings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

# The container security context every container of this repository runs with.
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# Google's metadata server (Workload Identity tokens): the classic address and GKE's own.
METADATA_SERVER = (("169.254.169.254/32", 80), ("169.254.169.252/32", 988))
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
MONITORING_NAMESPACE = "gmp-system"  # Managed Prometheus collectors
# Istio's sidecar serves the pod's metrics merged with its own here, outside mTLS.
MERGED_METRICS_PORT = 15020


# Always: a tag can move, so each start asks the registry what the reference names now (for
# a digest that is a manifest check; the node's cached layers are reused). Checkov
# CKV_K8S_15; Kubernetes docs, 'Images: image pull policy'.
PULL_POLICY = "Always"


def accepted_unpinned(image: str, unpinned: Mapping[str, str]) -> dict[str, str]:
    """Annotations of an object whose image the stack accepts without a digest
    (`unpinnedImages`): the exemption and its reason, as Checkov's skip comment carries it,
    so the policy pack reports it as accepted instead of unpinned."""
    reason = unpinned.get(image)
    return {"checkov.io/skip1": f"CKV_K8S_43={reason}"} if reason else {}


def object_metadata(
    name: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> k8s.meta.v1.ObjectMetaArgsDict:
    """An object's metadata; `annotations` only where there are some."""
    metadata: k8s.meta.v1.ObjectMetaArgsDict = {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels),
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    return metadata


def k8s_labels(labels: Mapping[str, str], app: str | None = None) -> dict[str, str]:
    """The stack's cost labels on Kubernetes objects (GKE cost allocation reads them), and
    the app's name on an app's objects."""
    common = {"app.kubernetes.io/part-of": "signal-platform", **labels}
    return common if app is None else {**common, "app": app}


def api_object(value: Any) -> Any:
    """A part of a Kubernetes object, spelled as the Kubernetes API spells it (camelCase).

    The SDK passes such dictionaries through unchanged, but its TypedDicts only know the
    snake_case spelling; type checking stops here, and the tests validate every object against
    the official Kubernetes schema instead (`tests/infra/test_kubernetes_schema.py`).
    """
    return value


def role_ref(kind: str, name: str) -> Any:
    """An RBAC binding's reference to a Role or ClusterRole."""
    return api_object({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name})


def namespace_peer(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def app_peer(name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {"app": name}}}


def tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


# Managed Prometheus scrapes each pod's merged metrics from its own namespace.
METRICS_SCRAPING_POLICY: dict[str, Any] = {
    "podSelector": {},
    "policyTypes": ["Ingress"],
    "ingress": [
        {"from": [namespace_peer(MONITORING_NAMESPACE)], "ports": tcp(MERGED_METRICS_PORT)}
    ],
}


def network_policy(
    resource: str,
    name: str,
    namespace: str,
    spec: Mapping[str, Any],
    labels: Mapping[str, str],
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
) -> k8s.networking.v1.NetworkPolicy:
    """A NetworkPolicy; `depends_on`: its Namespace, where the stack declares it (an object
    sent before its namespace exists is refused)."""
    return k8s.networking.v1.NetworkPolicy(
        resource,
        metadata={"name": name, "namespace": namespace, "labels": k8s_labels(labels)},
        spec=api_object(dict(spec)),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on)),
    )


# GKE's API server reaches webhooks and aggregated APIs through its konnectivity agents (pods
# in kube-system), so such a call arrives from a pod address, not the control plane's range
# (tigera/operator#5212: "On AKS and GKE the API server reaches in-cluster webhooks through
# konnectivity agent pods"). A backend's ingress admits both.
KONNECTIVITY_AGENTS: dict[str, Any] = {
    **namespace_peer("kube-system"),
    "podSelector": {"matchLabels": {"k8s-app": "konnectivity-agent"}},
}


def disruption_budget(
    resource: str,
    app: str,
    namespace: str,
    labels: Mapping[str, str],
    opts: pulumi.ResourceOptions,
    selector: Mapping[str, str] | None = None,
) -> k8s.policy.v1.PodDisruptionBudget:
    """One pod of `app` at a time may be evicted (node drains, upgrades, spot replacement)."""
    match = dict(selector) if selector is not None else {"app": app}
    return k8s.policy.v1.PodDisruptionBudget(
        resource,
        metadata={"name": app, "namespace": namespace, "labels": k8s_labels(labels, app)},
        spec=api_object({"maxUnavailable": 1, "selector": {"matchLabels": match}}),
        opts=opts,
    )


def pod_monitoring(
    resource: str,
    app: str,
    namespace: str,
    labels: Mapping[str, str],
    interval: str,
    opts: pulumi.ResourceOptions,
) -> k8s.apiextensions.CustomResource:
    """Managed Prometheus collects `app`'s metrics from its sidecar's merged endpoint: the app's
    own metrics and Envoy's, scraped outside mTLS (Istio's metrics merging)."""
    return k8s.apiextensions.CustomResource(
        resource,
        api_version="monitoring.googleapis.com/v1",
        kind="PodMonitoring",
        metadata={"name": app, "namespace": namespace, "labels": k8s_labels(labels, app)},
        spec={
            "selector": {"matchLabels": {"app": app}},
            "endpoints": [
                {"port": MERGED_METRICS_PORT, "path": "/stats/prometheus", "interval": interval}
            ],
        },
        opts=opts,
    )
