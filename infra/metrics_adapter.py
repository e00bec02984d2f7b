"""The metrics adapter: Cloud Monitoring (and Managed Prometheus) metrics for HPAs, on each cluster.

The Custom Metrics Stackdriver Adapter serves the `custom.metrics.k8s.io` and
`external.metrics.k8s.io` APIs; the Kubernetes API server calls it on `SECURE_PORT`, which the
control-plane firewall opens (infra/network.py derives its ports from `SECURE_PORT` and the
mesh's webhook port).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import Resources
from infra.kube import (
    KONNECTIVITY_AGENTS,
    PULL_POLICY,
    RESTRICTED_CONTAINER,
    accepted_unpinned,
    api_object,
    disruption_budget,
    k8s_labels,
    network_policy,
    object_metadata,
    role_ref,
    tcp,
)
from infra.mesh import baseline_policies, default_deny

METRICS_ADAPTER = "custom-metrics-stackdriver-adapter"
METRICS_NAMESPACE = "custom-metrics"
SECURE_PORT = 6443  # unprivileged: the adapter runs as non-root
# The APIs it serves: (group, version, priority within the group).
APIS = (
    ("custom.metrics.k8s.io", "v1beta1", 100),
    ("custom.metrics.k8s.io", "v1beta2", 200),
    ("external.metrics.k8s.io", "v1beta1", 100),
)


class MetricsAdapter(pulumi.ComponentResource):
    """The Custom Metrics Stackdriver Adapter: Cloud Monitoring metrics for HPAs.

    From GoogleCloudPlatform/k8s-stackdriver's `adapter_new_resource_model.yaml`, hardened
    (non-root on an unprivileged port, read-only root filesystem) and inside the mesh like every
    namespace: injected, default deny, NetworkPolicies. Only its API port bypasses the sidecar:
    the Kubernetes API server calls it with TLS from outside the mesh. It reads metrics as its
    Kubernetes service account, which `identity.monitoring_viewer` lets read Cloud Monitoring.
    """

    def __init__(
        self,
        name: str,
        image: str,
        replicas: int,
        resources: Resources,
        control_plane_cidr: str,
        tracing_collector: str | None,
        labels: Mapping[str, str],
        unpinned_images: Mapping[str, str] = MappingProxyType({}),
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`unpinned_images`: references the stack accepts without a digest, with the reason."""
        super().__init__("signal:infra:MetricsAdapter", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        meta = k8s_labels(labels, METRICS_ADAPTER) | {"app.kubernetes.io/name": METRICS_ADAPTER}
        selector = {"app.kubernetes.io/name": METRICS_ADAPTER}
        adapter = {
            "kind": "ServiceAccount",
            "name": METRICS_ADAPTER,
            "namespace": METRICS_NAMESPACE,
        }

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={
                "name": METRICS_NAMESPACE,
                "labels": meta
                | {
                    "istio-injection": "enabled",
                    "pod-security.kubernetes.io/enforce": "restricted",
                },
            },
            opts=child,
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={"name": METRICS_ADAPTER, "namespace": METRICS_NAMESPACE, "labels": meta},
            automount_service_account_token=True,  # it calls the Kubernetes API
            opts=in_namespace,
        )
        k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-auth-delegator",
            metadata={"name": "custom-metrics:system:auth-delegator", "labels": meta},
            role_ref=role_ref("ClusterRole", "system:auth-delegator"),
            subjects=api_object([adapter]),
            opts=child,
        )
        k8s.rbac.v1.RoleBinding(
            f"{name}-auth-reader",
            metadata={
                "name": "custom-metrics-auth-reader",
                "namespace": "kube-system",
                "labels": meta,
            },
            role_ref=role_ref("Role", "extension-apiserver-authentication-reader"),
            subjects=api_object([adapter]),
            opts=child,
        )
        self._granted_cluster_role(
            f"{name}-resource-reader",
            "custom-metrics-resource-reader",
            {
                "apiGroups": [""],
                "resources": ["pods", "nodes", "nodes/stats"],
                "verbs": ["get", "list", "watch"],
            },
            adapter,
            meta,
        )
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=object_metadata(
                METRICS_ADAPTER,
                METRICS_NAMESPACE,
                meta,
                accepted_unpinned(image, unpinned_images),
            ),
            spec=api_object(
                {
                    "replicas": replicas,
                    "selector": {"matchLabels": selector},
                    "template": {
                        "metadata": {
                            "labels": meta,
                            "annotations": {
                                "traffic.sidecar.istio.io/excludeInboundPorts": str(SECURE_PORT)
                            },
                        },
                        "spec": {
                            "serviceAccountName": METRICS_ADAPTER,
                            "securityContext": {
                                "runAsNonRoot": True,
                                "runAsUser": 65532,
                                "runAsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "topologySpreadConstraints": [
                                {
                                    "maxSkew": 1,
                                    "topologyKey": "topology.kubernetes.io/zone",
                                    "whenUnsatisfiable": "ScheduleAnyway",
                                    "labelSelector": {"matchLabels": selector},
                                }
                            ],
                            "containers": [
                                {
                                    "name": "adapter",
                                    "image": image,
                                    "imagePullPolicy": PULL_POLICY,
                                    "command": [
                                        "/adapter",
                                        "--use-new-resource-model=true",
                                        "--fallback-for-container-metrics=true",
                                        f"--secure-port={SECURE_PORT}",
                                        "--cert-dir=/tmp/certs",
                                    ],
                                    "ports": [{"name": "https", "containerPort": SECURE_PORT}],
                                    "resources": resources.model_dump(),
                                    "securityContext": RESTRICTED_CONTAINER,
                                    "readinessProbe": {
                                        "tcpSocket": {"port": SECURE_PORT},
                                        "periodSeconds": 10,
                                    },
                                    "livenessProbe": {
                                        "tcpSocket": {"port": SECURE_PORT},
                                        "periodSeconds": 20,
                                        "failureThreshold": 3,
                                    },
                                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                                }
                            ],
                            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                        },
                    },
                }
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.service_account]),
        )
        disruption_budget(
            f"{name}-pdb", METRICS_ADAPTER, METRICS_NAMESPACE, labels, in_namespace, selector
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": METRICS_ADAPTER, "namespace": METRICS_NAMESPACE, "labels": meta},
            spec=api_object(
                {
                    "type": "ClusterIP",
                    "selector": selector,
                    "ports": [
                        {
                            "name": "https",
                            "port": 443,
                            "targetPort": SECURE_PORT,
                            "protocol": "TCP",
                        }
                    ],
                }
            ),
            opts=in_namespace,
        )
        for group, version, priority in APIS:
            k8s.apiregistration.v1.APIService(
                f"{name}-api-{version}-{group.split('.')[0]}",
                metadata={"name": f"{version}.{group}", "labels": meta},
                spec=api_object(
                    {
                        "group": group,
                        "version": version,
                        "groupPriorityMinimum": 100,
                        "versionPriority": priority,
                        # The adapter serves a self-signed certificate, as upstream ships it.
                        "insecureSkipTLSVerify": True,
                        "service": {"name": METRICS_ADAPTER, "namespace": METRICS_NAMESPACE},
                    }
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.service]),
            )
        self._granted_cluster_role(
            f"{name}-external-reader",
            "external-metrics-reader",
            {
                "apiGroups": ["external.metrics.k8s.io"],
                "resources": ["*"],
                "verbs": ["list", "get", "watch"],
            },
            {
                "kind": "ServiceAccount",
                "name": "horizontal-pod-autoscaler",
                "namespace": "kube-system",
            },
            meta,
        )
        self.default_deny = default_deny(f"{name}-deny", METRICS_NAMESPACE, meta, in_namespace)
        policies: dict[str, dict[str, Any]] = {
            **baseline_policies(tracing_collector),
            "api-server": {
                # The API server proxies metric reads to it, and it delegates authentication
                # and authorization back to the API server.
                "podSelector": {"matchLabels": selector},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        # Directly from the control plane, or (GKE) through its konnectivity
                        # agents.
                        "from": [{"ipBlock": {"cidr": control_plane_cidr}}, KONNECTIVITY_AGENTS],
                        "ports": tcp(SECURE_PORT),
                    }
                ],
                "egress": [{"to": [{"ipBlock": {"cidr": control_plane_cidr}}], "ports": tcp(443)}],
            },
        }
        self.network_policies = {
            policy: network_policy(
                f"{name}-netpol-{policy}",
                policy,
                METRICS_NAMESPACE,
                spec,
                labels,
                self,
                depends_on=[self.namespace],
            )
            for policy, spec in policies.items()
        }
        self.register_outputs({"namespace": self.namespace.metadata.name})

    def _granted_cluster_role(
        self,
        resource_name: str,
        role_name: str,
        rule: dict[str, Any],
        subject: dict[str, Any],
        labels: Mapping[str, str],
    ) -> None:
        """A ClusterRole of one rule, bound to one subject under the same name."""
        role = k8s.rbac.v1.ClusterRole(
            resource_name,
            metadata={"name": role_name, "labels": labels},
            rules=api_object([rule]),
            opts=pulumi.ResourceOptions(parent=self),
        )
        k8s.rbac.v1.ClusterRoleBinding(
            resource_name,
            metadata={"name": role_name, "labels": labels},
            role_ref=role_ref("ClusterRole", role_name),
            subjects=api_object([subject]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role]),
        )
