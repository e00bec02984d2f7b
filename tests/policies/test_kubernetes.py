"""Kubernetes object rules through the real pack: golden Deployment, GPU Deployment, Job, CronJob,
Service and PDB, and mutations of them."""

from __future__ import annotations

import pytest

from tests.policies.cases import (
    DELETE,
    K8S_PROVIDER,
    UNKNOWN,
    Case,
    StackCase,
    assert_case,
    assert_stack_case,
    bad,
    mutate,
    ok,
    resource,
)
from tools.analyzer import PolicyPackProcess

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
JOB = "kubernetes:batch/v1:Job"
CRONJOB = "kubernetes:batch/v1:CronJob"
SERVICE = "kubernetes:core/v1:Service"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
NAMESPACE = "kubernetes:core/v1:Namespace"
DIGEST = "sha256:" + "ab" * 32
TAGGED = "us-docker.pkg.dev/signal-test/images/signal:1.4.2"
IMAGE = f"us-docker.pkg.dev/signal-test/images/signal@{DIGEST}"

LEVELS = {
    "k8s-no-privileged": "mandatory",
    "k8s-no-privilege-escalation": "mandatory",
    "k8s-run-as-non-root": "mandatory",
    "k8s-read-only-root-fs": "mandatory",
    "k8s-drop-all-capabilities": "mandatory",
    "k8s-no-host-namespaces": "mandatory",
    "k8s-no-host-ports": "mandatory",
    "k8s-no-host-path": "mandatory",
    "k8s-seccomp-runtime-default": "mandatory",
    "k8s-resource-requests": "mandatory",
    "k8s-memory-limits": "mandatory",
    "k8s-cpu-limits": "advisory",
    "k8s-security-context": "advisory",
    "k8s-image-pull-policy": "advisory",
    "k8s-gpu-requests-equal-limits": "mandatory",
    "k8s-gpu-node-selector": "mandatory",
    "k8s-image-tag-pinned": "mandatory",
    "k8s-image-digest": "mandatory",
    "k8s-image-digest-every-stack": "advisory",
    "k8s-service-account-token": "advisory",
    "k8s-high-uid": "advisory",
    "k8s-probes": "mandatory",
    "k8s-no-default-namespace": "mandatory",
    "k8s-no-default-service-account": "mandatory",
    "k8s-no-plaintext-secrets": "mandatory",
    "k8s-service-internal": "mandatory",
    "k8s-pdb-allows-disruption": "mandatory",
    "k8s-replicas-or-hpa": "advisory",
}

PROBE = {"grpc": {"port": 50051}, "periodSeconds": 10}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
SERVER = {
    "name": "server",
    "image": IMAGE,
    "ports": [{"name": "grpc", "containerPort": 50051}],
    "resources": {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    },
    "securityContext": CONTAINER_SECURITY,
    "readinessProbe": PROBE,
    "livenessProbe": PROBE,
    "env": [
        {"name": "LOG_LEVEL", "value": "info"},
        {
            "name": "REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}},
        },
    ],
}
MIGRATE = {
    "name": "warm-cache",
    "image": IMAGE,
    "resources": {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "100m", "memory": "64Mi"},
    },
    "securityContext": CONTAINER_SECURITY,
}
POD_SPEC = {
    "serviceAccountName": "signal",
    "automountServiceAccountToken": False,
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "initContainers": [MIGRATE],
    "containers": [SERVER],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}
LABELS = {"app": "signal"}
SKIP_43 = ("metadata", "annotations", "checkov.io/skip1")
GOLDEN = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "signal", "namespace": "signal", "labels": LABELS},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": LABELS},
        "template": {"metadata": {"labels": LABELS}, "spec": POD_SPEC},
    },
}
GPU = mutate(
    GOLDEN,
    {
        "metadata.name": "inference",
        ("spec", "template", "spec", "containers", 0, "resources"): {
            "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
            "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
        },
        "spec.template.spec.nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "spec.template.spec.tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ],
    },
)
JOB_SPEC = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "backfill", "namespace": "signal"},
    "spec": {
        "template": {
            "spec": mutate(
                POD_SPEC,
                {
                    "containers": [
                        mutate(SERVER, {"readinessProbe": DELETE, "livenessProbe": DELETE})
                    ],
                    "restartPolicy": "Never",
                },
            )
        }
    },
}
CRON = {
    "apiVersion": "batch/v1",
    "kind": "CronJob",
    "metadata": {"name": "rollup", "namespace": "signal"},
    "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": JOB_SPEC["spec"]}},
}
SVC = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "signal", "namespace": "signal"},
    "spec": {"type": "ClusterIP", "selector": LABELS, "ports": [{"name": "grpc", "port": 50051}]},
}
BUDGET = {
    "apiVersion": "policy/v1",
    "kind": "PodDisruptionBudget",
    "metadata": {"name": "signal", "namespace": "signal"},
    "spec": {"maxUnavailable": 1, "selector": {"matchLabels": LABELS}},
}
SERVER_PATH = ("spec", "template", "spec", "containers", 0)
INIT_PATH = ("spec", "template", "spec", "initContainers", 0)
POD_PATH = ("spec", "template", "spec")
TAGGED_BOTH = {(*SERVER_PATH, "image"): TAGGED, (*INIT_PATH, "image"): TAGGED}


def d(policy: str, label: str, changes: dict, expect: int = 1, **kw: object) -> Case:
    """A violating mutation of the golden Deployment."""
    return bad(policy, DEPLOYMENT, mutate(GOLDEN, changes), label, expect, **kw)


def at(base: tuple, *path: str | int) -> tuple:
    return (*base, *path)


CASES = [
    ok("k8s-no-privileged", DEPLOYMENT, GOLDEN),
    ok("k8s-no-privileged", JOB, JOB_SPEC, "job"),
    d("k8s-no-privileged", "server", {at(SERVER_PATH, "securityContext", "privileged"): True}),
    d(
        "k8s-no-privileged",
        "init",
        {at(INIT_PATH, "securityContext", "privileged"): True},
        message='initContainer container "warm-cache"',
    ),
    bad(
        "k8s-no-privileged",
        CRONJOB,
        mutate(
            CRON,
            {
                (
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "containers",
                    0,
                    "securityContext",
                    "privileged",
                ): True
            },
        ),
        "cronjob",
    ),
    ok("k8s-no-privilege-escalation", DEPLOYMENT, GOLDEN),
    d(
        "k8s-no-privilege-escalation",
        "unset",
        {at(SERVER_PATH, "securityContext", "allowPrivilegeEscalation"): DELETE},
    ),
    d(
        "k8s-no-privilege-escalation",
        "true",
        {at(INIT_PATH, "securityContext", "allowPrivilegeEscalation"): True},
    ),
    ok("k8s-run-as-non-root", DEPLOYMENT, GOLDEN),
    ok(
        "k8s-run-as-non-root",
        DEPLOYMENT,
        mutate(GOLDEN, {at(POD_PATH, "securityContext", "runAsNonRoot"): DELETE}),
        "uid-only",
    ),
    d(
        "k8s-run-as-non-root",
        "unset",
        {at(POD_PATH, "securityContext"): {"seccompProfile": {"type": "RuntimeDefault"}}},
        expect=2,
        also=frozenset({"k8s-high-uid"}),
    ),
    d(
        "k8s-run-as-non-root",
        "container-root",
        {at(SERVER_PATH, "securityContext", "runAsUser"): 0},
        message="runAsUser is 0",
        also=frozenset({"k8s-high-uid"}),
    ),
    ok("k8s-read-only-root-fs", DEPLOYMENT, GOLDEN),
    d(
        "k8s-read-only-root-fs",
        "writable",
        {at(SERVER_PATH, "securityContext", "readOnlyRootFilesystem"): False},
    ),
    ok("k8s-drop-all-capabilities", DEPLOYMENT, GOLDEN),
    ok(
        "k8s-drop-all-capabilities",
        DEPLOYMENT,
        mutate(
            GOLDEN,
            {at(SERVER_PATH, "securityContext", "capabilities", "add"): ["NET_BIND_SERVICE"]},
        ),
        "bind-low-port",
    ),
    d(
        "k8s-drop-all-capabilities",
        "drops-net-raw-only",
        {at(SERVER_PATH, "securityContext", "capabilities", "drop"): ["NET_RAW"]},
    ),
    d(
        "k8s-drop-all-capabilities",
        "adds-sys-admin",
        {at(SERVER_PATH, "securityContext", "capabilities", "add"): ["SYS_ADMIN"]},
        message="SYS_ADMIN",
    ),
    ok("k8s-no-host-namespaces", DEPLOYMENT, GOLDEN),
    d(
        "k8s-no-host-namespaces",
        "all-three",
        {
            at(POD_PATH, "hostNetwork"): True,
            at(POD_PATH, "hostPID"): True,
            at(POD_PATH, "hostIPC"): True,
        },
        expect=3,
    ),
    ok("k8s-no-host-ports", DEPLOYMENT, GOLDEN),
    d(
        "k8s-no-host-ports",
        "host-port",
        {at(SERVER_PATH, "ports"): [{"containerPort": 50051, "hostPort": 50051}]},
    ),
    ok("k8s-no-host-path", DEPLOYMENT, GOLDEN),
    d(
        "k8s-no-host-path",
        "docker-socket",
        {at(POD_PATH, "volumes"): [{"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}]},
        message='volume "sock"',
    ),
    ok("k8s-seccomp-runtime-default", DEPLOYMENT, GOLDEN),
    ok(
        "k8s-seccomp-runtime-default",
        DEPLOYMENT,
        mutate(
            GOLDEN,
            {
                at(POD_PATH, "securityContext", "seccompProfile"): DELETE,
                at(SERVER_PATH, "securityContext", "seccompProfile"): {"type": "RuntimeDefault"},
                at(INIT_PATH, "securityContext", "seccompProfile"): {
                    "type": "Localhost",
                    "localhostProfile": "p.json",
                },
            },
        ),
        "per-container",
    ),
    d(
        "k8s-seccomp-runtime-default",
        "unset",
        {at(POD_PATH, "securityContext", "seccompProfile"): DELETE},
        expect=2,
    ),
    d(
        "k8s-seccomp-runtime-default",
        "unconfined-override",
        {at(SERVER_PATH, "securityContext", "seccompProfile"): {"type": "Unconfined"}},
    ),
    ok("k8s-resource-requests", DEPLOYMENT, GOLDEN),
    d(
        "k8s-resource-requests",
        "no-cpu",
        {at(SERVER_PATH, "resources", "requests", "cpu"): DELETE},
        message="lacks cpu",
    ),
    d(
        "k8s-resource-requests",
        "none",
        {at(INIT_PATH, "resources"): DELETE},
        also=frozenset({"k8s-memory-limits", "k8s-cpu-limits"}),
    ),
    ok("k8s-memory-limits", DEPLOYMENT, GOLDEN),
    d(
        "k8s-memory-limits",
        "unbounded",
        {at(SERVER_PATH, "resources", "limits"): DELETE},
        also=frozenset({"k8s-cpu-limits"}),
    ),
    ok("k8s-cpu-limits", DEPLOYMENT, GOLDEN),
    d(
        "k8s-cpu-limits",
        "no-cpu-limit",
        {at(INIT_PATH, "resources", "limits", "cpu"): DELETE},
        message='container "warm-cache": resources.limits.cpu is unset',
    ),
    ok("k8s-security-context", DEPLOYMENT, GOLDEN),
    d(
        "k8s-security-context",
        "none-anywhere",
        {at(POD_PATH, "securityContext"): DELETE, at(INIT_PATH, "securityContext"): DELETE},
        expect=2,
        also=frozenset(
            {
                "k8s-run-as-non-root",
                "k8s-seccomp-runtime-default",
                "k8s-high-uid",
                "k8s-no-privilege-escalation",
                "k8s-read-only-root-fs",
                "k8s-drop-all-capabilities",
            }
        ),
    ),
    ok("k8s-image-pull-policy", DEPLOYMENT, GOLDEN),
    ok(
        "k8s-image-pull-policy",
        DEPLOYMENT,
        mutate(
            GOLDEN, {at(SERVER_PATH, "image"): TAGGED, at(SERVER_PATH, "imagePullPolicy"): "Always"}
        ),
        "tag-pulled-always",
        also=frozenset({"k8s-image-digest-every-stack"}),
    ),
    d(
        "k8s-image-pull-policy",
        "tag-if-not-present",
        {at(SERVER_PATH, "image"): TAGGED},
        message="names tag '1.4.2' but imagePullPolicy is unset",
        also=frozenset({"k8s-image-digest-every-stack"}),
    ),
    d("k8s-image-pull-policy", "never", {at(SERVER_PATH, "imagePullPolicy"): "Never"}),
    ok("k8s-gpu-requests-equal-limits", DEPLOYMENT, GPU, "gpu"),
    bad(
        "k8s-gpu-requests-equal-limits",
        DEPLOYMENT,
        mutate(GPU, {at(SERVER_PATH, "resources", "limits", "nvidia.com/gpu"): "2"}),
        "differs",
    ),
    bad(
        "k8s-gpu-requests-equal-limits",
        DEPLOYMENT,
        mutate(GPU, {at(SERVER_PATH, "resources", "limits", "nvidia.com/gpu"): DELETE}),
        "request-only",
        message="without a limit",
    ),
    ok("k8s-gpu-node-selector", DEPLOYMENT, GPU, "gpu"),
    ok(
        "k8s-gpu-node-selector",
        DEPLOYMENT,
        mutate(
            GPU,
            {
                at(POD_PATH, "nodeSelector"): DELETE,
                at(POD_PATH, "affinity"): {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "cloud.google.com/gke-accelerator",
                                            "operator": "In",
                                            "values": ["nvidia-l4"],
                                        }
                                    ]
                                }
                            ]
                        }
                    }
                },
            },
        ),
        "affinity",
    ),
    bad(
        "k8s-gpu-node-selector",
        DEPLOYMENT,
        mutate(GPU, {at(POD_PATH, "nodeSelector"): {"cloud.google.com/gke-nodepool": "default"}}),
        "no-gpu-selector",
    ),
    ok("k8s-image-tag-pinned", DEPLOYMENT, GOLDEN),
    ok(
        "k8s-image-tag-pinned",
        DEPLOYMENT,
        mutate(GOLDEN, {at(SERVER_PATH, "image"): f"localhost:5000/signal@{DIGEST}"}),
        "digest-with-registry-port",
    ),
    d(
        "k8s-image-tag-pinned",
        "latest",
        {at(SERVER_PATH, "image"): "us-docker.pkg.dev/signal-test/images/signal:latest"},
        also=frozenset({"k8s-image-digest-every-stack"}),
    ),
    d(
        "k8s-image-tag-pinned",
        "untagged-with-port",
        {at(INIT_PATH, "image"): "localhost:5000/signal"},
        message="no tag or digest",
        also=frozenset({"k8s-image-digest-every-stack"}),
    ),
    ok("k8s-image-digest", DEPLOYMENT, GOLDEN, "not-a-digest-stack"),
    ok(
        "k8s-image-digest",
        DEPLOYMENT,
        mutate(
            GOLDEN,
            {
                at(SERVER_PATH, "image"): IMAGE,
                at(INIT_PATH, "image"): IMAGE,
            },
        ),
        "pinned",
        config={"k8s-image-digest": {"stacks": ["test"]}},
    ),
    bad(
        "k8s-image-digest",
        DEPLOYMENT,
        mutate(GOLDEN, {at(SERVER_PATH, "image"): TAGGED, at(INIT_PATH, "image"): TAGGED}),
        "tag-only-on-digest-stack",
        expect=2,
        also=frozenset({"k8s-image-digest-every-stack", "k8s-image-pull-policy"}),
        config={"k8s-image-digest": {"stacks": ["test"]}},
        message="on stack test",
    ),
    ok(
        "k8s-image-digest",
        DEPLOYMENT,
        mutate(GOLDEN, {**TAGGED_BOTH, SKIP_43: "CKV_K8S_43=no digest is published for it"}),
        "skipped-with-a-reason",
        config={"k8s-image-digest": {"stacks": ["test"]}},
        also=frozenset({"k8s-image-digest-every-stack", "k8s-image-pull-policy"}),
    ),
    bad(
        "k8s-image-digest",
        DEPLOYMENT,
        mutate(GOLDEN, {**TAGGED_BOTH, SKIP_43: "CKV_K8S_43= "}),
        "skipped-without-a-reason",
        expect=2,
        config={"k8s-image-digest": {"stacks": ["test"]}},
        also=frozenset({"k8s-image-digest-every-stack", "k8s-image-pull-policy"}),
    ),
    bad(
        "k8s-image-digest-every-stack",
        DEPLOYMENT,
        mutate(GOLDEN, {**TAGGED_BOTH, SKIP_43: "CKV_K8S_43=no digest is published for it"}),
        "accepted-exception-on-a-digest-stack",
        expect=2,
        config={"k8s-image-digest-every-stack": {"exceptStacks": ["test"]}},
        message="(accepted by checkov.io/skip: no digest is published for it)",
        also=frozenset({"k8s-image-pull-policy"}),
    ),
    ok("k8s-image-digest-every-stack", DEPLOYMENT, GOLDEN),
    ok(
        "k8s-image-digest-every-stack",
        DEPLOYMENT,
        mutate(GOLDEN, {at(SERVER_PATH, "image"): TAGGED}),
        "left-to-k8s-image-digest",
        config={"k8s-image-digest-every-stack": {"exceptStacks": ["test"]}},
        also=frozenset({"k8s-image-pull-policy"}),
    ),
    d(
        "k8s-image-digest-every-stack",
        "tag-on-any-stack",
        {at(INIT_PATH, "image"): TAGGED},
        message='container "warm-cache": image',
        also=frozenset({"k8s-image-pull-policy"}),
    ),
    ok("k8s-service-account-token", DEPLOYMENT, GOLDEN),
    ok("k8s-service-account-token", JOB, JOB_SPEC, "job"),
    d(
        "k8s-service-account-token",
        "default-mounts-a-token",
        {at(POD_PATH, "automountServiceAccountToken"): DELETE},
        message="automountServiceAccountToken is unset",
    ),
    d("k8s-service-account-token", "mounted", {at(POD_PATH, "automountServiceAccountToken"): True}),
    ok("k8s-high-uid", DEPLOYMENT, GOLDEN),
    ok(
        "k8s-high-uid",
        DEPLOYMENT,
        mutate(
            GOLDEN,
            {
                at(POD_PATH, "securityContext", "runAsUser"): 1000,
                at(SERVER_PATH, "securityContext", "runAsUser"): 20000,
                at(INIT_PATH, "securityContext", "runAsUser"): 20001,
            },
        ),
        "containers-override-the-pod",
    ),
    d(
        "k8s-high-uid",
        "low-uid",
        {at(SERVER_PATH, "securityContext", "runAsUser"): 1337},
        message="runAsUser 1337 is below 10000",
    ),
    d(
        "k8s-high-uid",
        "unset",
        {at(POD_PATH, "securityContext", "runAsUser"): DELETE},
        expect=2,
    ),
    ok("k8s-probes", DEPLOYMENT, GOLDEN),
    ok("k8s-probes", JOB, JOB_SPEC, "job"),
    ok("k8s-probes", CRONJOB, CRON, "cronjob"),
    d(
        "k8s-probes",
        "no-liveness",
        {at(SERVER_PATH, "livenessProbe"): DELETE},
        message="livenessProbe",
    ),
    ok("k8s-no-default-namespace", DEPLOYMENT, GOLDEN),
    ok(
        "k8s-no-default-namespace",
        CONFIGMAP,
        {"metadata": {"name": "settings"}, "data": {}},
        "provider-namespace",
        provider={"namespace": "signal"},
        provider_type=K8S_PROVIDER,
    ),
    ok(
        "k8s-no-default-namespace",
        NAMESPACE,
        {"metadata": {"name": "signal"}},
        "cluster-scoped",
        strict=False,
    ),
    ok(
        "k8s-no-default-namespace",
        "kubernetes:cloud.google.com/v1:ComputeClass",
        {"metadata": {"name": "gpu-spot-first"}, "spec": {"priorities": [{"spot": True}]}},
        "compute-class",
    ),
    ok(
        "k8s-no-default-namespace",
        "kubernetes:cert-manager.io/v1:ClusterIssuer",
        {"metadata": {"name": "letsencrypt"}, "spec": {}},
        "cluster-kind",
    ),
    ok(
        "k8s-no-default-namespace",
        "kubernetes:example.com/v1:GlobalThing",
        {"metadata": {"name": "g"}},
        "configured-cluster-scoped",
        config={"k8s-no-default-namespace": {"clusterScopedKinds": ["GlobalThing"]}},
    ),
    bad(
        "k8s-no-default-namespace",
        "kubernetes:example.com/v1:GlobalThing",
        {"metadata": {"name": "g"}},
        "custom-resource",
    ),
    d("k8s-no-default-namespace", "unset", {"metadata.namespace": DELETE}),
    bad(
        "k8s-no-default-namespace",
        SERVICE,
        mutate(SVC, {"metadata.namespace": "default"}),
        "service",
    ),
    ok("k8s-no-default-service-account", DEPLOYMENT, GOLDEN),
    d("k8s-no-default-service-account", "unset", {at(POD_PATH, "serviceAccountName"): DELETE}),
    d("k8s-no-default-service-account", "default", {at(POD_PATH, "serviceAccountName"): "default"}),
    ok("k8s-no-plaintext-secrets", DEPLOYMENT, GOLDEN),
    d(
        "k8s-no-plaintext-secrets",
        "literal-password",
        {at(SERVER_PATH, "env", 1): {"name": "REDIS_PASSWORD", "value": "hunter2"}},
        message="REDIS_PASSWORD",
    ),
    d(
        "k8s-no-plaintext-secrets",
        "api-key",
        {at(SERVER_PATH, "env"): [{"name": "vendor_api_key", "value": "k-123"}]},
    ),
    ok("k8s-service-internal", SERVICE, SVC),
    ok(
        "k8s-service-internal",
        SERVICE,
        mutate(
            SVC,
            {
                "spec.type": "LoadBalancer",
                ("metadata", "annotations"): {"networking.gke.io/load-balancer-type": "Internal"},
            },
        ),
        "internal-lb",
    ),
    bad("k8s-service-internal", SERVICE, mutate(SVC, {"spec.type": "LoadBalancer"}), "external-lb"),
    bad("k8s-service-internal", SERVICE, mutate(SVC, {"spec.type": "NodePort"}), "node-port"),
    ok("k8s-pdb-allows-disruption", PDB, BUDGET),
    ok(
        "k8s-pdb-allows-disruption",
        PDB,
        mutate(BUDGET, {"spec.maxUnavailable": DELETE, "spec.minAvailable": "50%"}),
        "min-50",
    ),
    bad("k8s-pdb-allows-disruption", PDB, mutate(BUDGET, {"spec.maxUnavailable": 0}), "max-zero"),
    bad(
        "k8s-pdb-allows-disruption",
        PDB,
        mutate(BUDGET, {"spec.maxUnavailable": DELETE, "spec.minAvailable": "100%"}),
        "min-all",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kubernetes_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)


def _stack(*resources):
    return tuple(resources)


SINGLE = mutate(GOLDEN, {"spec.replicas": 1})
HPA_FOR_SIGNAL = {
    "metadata": {"name": "signal", "namespace": "signal"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "signal"},
        "minReplicas": 1,
        "maxReplicas": 4,
    },
}

STACK_CASES = [
    StackCase("k8s-replicas-or-hpa", _stack(resource(DEPLOYMENT, GOLDEN)), 0, "two-replicas"),
    StackCase(
        "k8s-replicas-or-hpa",
        _stack(resource(DEPLOYMENT, SINGLE), resource(HPA, HPA_FOR_SIGNAL, "hpa")),
        0,
        "hpa",
    ),
    StackCase(
        "k8s-replicas-or-hpa",
        _stack(resource(DEPLOYMENT, mutate(GOLDEN, {"spec.replicas": UNKNOWN}))),
        0,
        "unknown-replicas",
    ),
    StackCase(
        "k8s-replicas-or-hpa",
        _stack(
            resource(DEPLOYMENT, SINGLE),
            resource(HPA, mutate(HPA_FOR_SIGNAL, {"spec.scaleTargetRef.name": "other"}), "hpa"),
        ),
        1,
        "single-replica",
        urns=(resource(DEPLOYMENT, SINGLE).urn,),
        message="runs 1 replica(s)",
    ),
    StackCase(
        "k8s-replicas-or-hpa",
        _stack(
            resource(STATEFULSET, mutate(GOLDEN, {"kind": "StatefulSet", "spec.replicas": DELETE}))
        ),
        1,
        "statefulset-default-one",
    ),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda c: c.id)
def test_kubernetes_stack_rule(pack: PolicyPackProcess, case: StackCase) -> None:
    assert_stack_case(pack, case, LEVELS)
