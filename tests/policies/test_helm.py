"""Helm releases of the Istio charts through the real pack: the Kubernetes rules judge the objects
a release's values render (rules/helm_charts.py), reported on the release."""

from __future__ import annotations

import pytest

from tests.policies import test_istio, test_kubernetes
from tests.policies.cases import DELETE, UNKNOWN, Case, assert_case, bad, mutate, ok
from tools.analyzer import PolicyPackProcess

RELEASE = "kubernetes:helm.sh/v3:Release"
REPO = {"repo": "https://istio-release.storage.googleapis.com/charts"}
LEVELS = {**test_kubernetes.LEVELS, **test_istio.LEVELS}

SECCOMP = {"type": "RuntimeDefault"}
GATEWAY = {
    "name": "istio-ingressgateway",
    "chart": "gateway",
    "version": "1.30.5",
    "namespace": "istio-ingress",
    "repositoryOpts": REPO,
    "values": {
        "service": {
            "type": "LoadBalancer",
            "annotations": {"networking.gke.io/load-balancer-type": "Internal"},
        },
        "securityContext": {
            "seccompProfile": SECCOMP,
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
        },
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
    },
}
ISTIOD = {
    "name": "istiod",
    "chart": "istiod",
    "version": "1.30.5",
    "namespace": "istio-system",
    "repositoryOpts": REPO,
    "values": {
        "pilot": {
            "resources": {
                "requests": {"cpu": "500m", "memory": "2Gi"},
                "limits": {"cpu": "2", "memory": "4Gi"},
            }
        },
        "global": {
            "proxy": {
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "512Mi"},
                }
            }
        },
    },
}
CNI = {
    "name": "istio-cni",
    "chart": "cni",
    "version": "1.30.5",
    "namespace": "kube-system",
    "repositoryOpts": REPO,
    "values": {
        "seccompProfile": SECCOMP,
        "resources": {
            "requests": {"cpu": "100m", "memory": "100Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
    },
}
BASE = {**GATEWAY, "name": "istio-base", "chart": "base", "namespace": "istio-system", "values": {}}
# Istio's gateway proxy runs as UID 1337 (its traffic redirection excludes that UID).
PROXY_UID = frozenset({"k8s-high-uid"})
NO_LIMITS = frozenset({"k8s-cpu-limits"})


def release(policy: str, base: dict, label: str, changes: dict, expect: int = 1, **kw) -> Case:
    kw.setdefault("also", PROXY_UID if base is GATEWAY else frozenset())
    return bad(policy, RELEASE, mutate(base, changes), label, expect, **kw)


CASES = [
    ok("k8s-service-internal", RELEASE, GATEWAY, "gateway-release", also=PROXY_UID),
    ok(
        "k8s-service-internal",
        RELEASE,
        mutate(GATEWAY, {"values.service.type": "ClusterIP"}),
        "cluster-ip",
        also=PROXY_UID,
    ),
    ok("k8s-seccomp-runtime-default", RELEASE, ISTIOD, "istiod"),
    ok("k8s-memory-limits", RELEASE, CNI, "cni"),
    ok("k8s-no-privileged", RELEASE, BASE, "base-renders-no-workload"),
    ok(
        "k8s-service-internal",
        RELEASE,
        mutate(GATEWAY, {"repositoryOpts.repo": "https://charts.example.com", "values": {}}),
        "another-vendors-gateway-chart-is-not-modelled",
    ),
    ok("k8s-service-internal", RELEASE, mutate(GATEWAY, {"values": UNKNOWN}), "unknown-values"),
    ok(
        "k8s-service-internal",
        RELEASE,
        mutate(GATEWAY, {"values.service.annotations": UNKNOWN}),
        "unknown-annotations",
        also=PROXY_UID,
    ),
    ok(
        "k8s-memory-limits",
        RELEASE,
        mutate(ISTIOD, {"values.pilot": UNKNOWN}),
        "unknown-pilot-values",
    ),
    release(
        "k8s-service-internal",
        GATEWAY,
        "external-load-balancer",
        {"values.service.annotations": DELETE},
        message="release renders Service istio-ingressgateway: Service type LoadBalancer is external",
    ),
    release(
        "k8s-service-internal",
        GATEWAY,
        "chart-default-service",
        {"values.service": DELETE, "chart": "istio/gateway", "repositoryOpts": DELETE},
    ),
    release(
        "k8s-seccomp-runtime-default",
        GATEWAY,
        "chart-default-pod-security",
        {"values.securityContext": DELETE},
        message='release renders Deployment istio-ingressgateway: container "istio-proxy"',
    ),
    release(
        "k8s-no-privileged",
        GATEWAY,
        "privileged-container-values",
        {
            "values.containerSecurityContext": {
                "privileged": True,
                "runAsNonRoot": True,
                "runAsUser": 1337,
            }
        },
        also=frozenset(
            {
                "k8s-high-uid",
                "k8s-no-privilege-escalation",
                "k8s-read-only-root-fs",
                "k8s-drop-all-capabilities",
            }
        ),
    ),
    release(
        "k8s-no-host-path",
        GATEWAY,
        "host-path-volume",
        {"values.volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
    ),
    release(
        "k8s-memory-limits",
        GATEWAY,
        "no-memory-limit",
        {"values.resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
        also=NO_LIMITS | PROXY_UID,
    ),
    release(
        "istio-sidecar-injection",
        GATEWAY,
        "opted-out",
        {"values.podAnnotations": {"sidecar.istio.io/inject": "false"}},
    ),
    release(
        "k8s-memory-limits",
        ISTIOD,
        "istiod-chart-default-resources",
        {"values.pilot": DELETE},
        also=NO_LIMITS,
    ),
    release(
        "k8s-no-privileged",
        ISTIOD,
        "privileged-sidecars",
        {"values.global.proxy.privileged": True},
        message="release renders injected sidecar istio-proxy",
    ),
    release(
        "k8s-memory-limits",
        ISTIOD,
        "sidecars-without-limits",
        {"values.global.proxy.resources": {"requests": {"cpu": "10m", "memory": "40Mi"}}},
        also=NO_LIMITS,
    ),
    release(
        "k8s-image-tag-pinned",
        ISTIOD,
        "latest-images",
        {"values.global.tag": "latest"},
        message="'docker.io/istio/pilot:latest' uses the mutable tag 'latest'",
        also=frozenset({"k8s-image-digest-every-stack"}),
    ),
    release(
        "k8s-image-digest-every-stack",
        ISTIOD,
        "mirrored-by-tag",
        {"values.global.hub": "us-docker.pkg.dev/p/istio"},
        message="'us-docker.pkg.dev/p/istio/pilot:1.30.5' is not pinned by digest",
        also=frozenset({"k8s-image-pull-policy"}),
    ),
    release(
        "k8s-memory-limits",
        CNI,
        "cni-chart-default-resources",
        {"values.resources": DELETE},
        also=NO_LIMITS,
    ),
    release(
        "k8s-no-host-namespaces",
        CNI,
        "ambient-host-network",
        {"values.ambient": {"enabled": True, "shareHostNetworkNamespace": True}},
        message="release renders DaemonSet istio-cni-node: pod spec sets hostNetwork: true",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_helm_release_values(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)
