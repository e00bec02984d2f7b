"""Kubernetes object shapes the rules share: type tokens, pod templates, containers, namespaces.

Pulumi's Kubernetes provider (and CustomResource) types are `kubernetes:<group>/<version>:<Kind>`
(`core` for the legacy group); inputs are the object itself in camelCase.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rules.values import as_dict, as_list, get, is_unknown

# Kind → path from the object to its pod spec (the pod template's spec).
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}
WORKLOAD_GROUPS = {
    "Deployment": "apps",
    "StatefulSet": "apps",
    "DaemonSet": "apps",
    "ReplicaSet": "apps",
    "Job": "batch",
    "CronJob": "batch",
    "Pod": "core",
}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod"}
CLUSTER_SCOPED_KINDS = {
    "ComputeClass",  # GKE custom compute classes (cloud.google.com/v1)
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PriorityClass",
    "RuntimeClass",
    "IngressClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ComponentStatus",
    "CertificateSigningRequest",
    "FlowSchema",
    "PriorityLevelConfiguration",
}
# Pulumi component/helper types under the kubernetes package that are not API objects.
_NON_OBJECT_GROUPS = {"helm.sh", "yaml", "kustomize"}


@dataclass(frozen=True)
class KubeType:
    group: str
    version: str
    kind: str


def kube_type(token: str) -> KubeType | None:
    """`kubernetes:apps/v1:Deployment` → KubeType("apps", "v1", "Deployment"); None for
    providers, Pulumi helper components and non-Kubernetes types."""
    parts = token.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes" or "/" not in parts[1]:
        return None
    group, _, version = parts[1].rpartition("/")
    if group in _NON_OBJECT_GROUPS or not parts[2] or parts[2].endswith("List"):
        return None
    return KubeType(group, version, parts[2])


def is_workload(token: str) -> bool:
    kt = kube_type(token)
    return kt is not None and WORKLOAD_GROUPS.get(kt.kind) == kt.group


def is_kind(token: str, group: str, kind: str) -> bool:
    kt = kube_type(token)
    return kt is not None and kt.group == group and kt.kind == kind


def kind_of(token: str) -> str:
    kt = kube_type(token)
    return kt.kind if kt else ""


def pod_spec(token: str, obj: dict[str, Any]) -> Any:
    """The pod spec of a workload object ({} when absent, UNKNOWN when unknown)."""
    path = POD_SPEC_PATHS.get(kind_of(token))
    if path is None:
        return {}
    spec = get(obj, *path, default={})
    return spec if is_unknown(spec) else as_dict(spec)


def pod_metadata(token: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The pod template's metadata (the object's own for a bare Pod)."""
    path = POD_SPEC_PATHS.get(kind_of(token))
    if path is None:
        return {}
    return (
        as_dict(get(obj, *path[:-1], "metadata"))
        if len(path) > 1
        else as_dict(get(obj, "metadata"))
    )


@dataclass(frozen=True)
class Container:
    section: str  # containers, initContainers or ephemeralContainers
    name: str
    spec: dict[str, Any]

    @property
    def label(self) -> str:
        prefix = "" if self.section == "containers" else f"{self.section[:-1]} "
        return f'{prefix}container "{self.name}"'


def containers(
    spec: Any, sections: tuple[str, ...] = ("containers", "initContainers", "ephemeralContainers")
) -> Iterator[Container]:
    for section in sections:
        for index, container in enumerate(as_list(get(spec, section))):
            if isinstance(container, dict):
                name = get(container, "name")
                yield Container(section, name if isinstance(name, str) else f"#{index}", container)


def effective_security(pod: Any, container: Container, field: str) -> Any:
    """A securityContext field: the container's if set, else the pod's."""
    value = get(container.spec, "securityContext", field)
    return get(pod, "securityContext", field) if value is None else value


def namespace_of(obj: dict[str, Any], provider_props: dict[str, Any]) -> Any:
    """The namespace an object lands in: its own, else its provider's default, else "default"."""
    namespace = get(obj, "metadata", "namespace")
    if namespace is None or namespace == "":
        namespace = get(provider_props, "namespace")
    if namespace is None or namespace == "":
        return "default"
    return namespace


def labels_match(selector: Any, labels: dict[str, Any]) -> bool:
    """Whether a LabelSelector (matchLabels + matchExpressions) selects `labels`.
    An empty selector selects everything."""
    selector = as_dict(selector)
    for key, value in as_dict(get(selector, "matchLabels")).items():
        if labels.get(key) != value:
            return False
    for expression in as_list(get(selector, "matchExpressions")):
        key, operator = get(expression, "key"), get(expression, "operator")
        values = as_list(get(expression, "values"))
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def checkov_skips(obj: dict[str, Any]) -> dict[str, str]:
    """Checkov's inline suppressions on an object: `checkov.io/skip<N>: <check id>=<reason>`
    annotations, check id -> reason (a skip without a reason counts for nothing)."""
    skips = {}
    for key, value in as_dict(get(obj, "metadata", "annotations")).items():
        if key.startswith("checkov.io/skip") and isinstance(value, str) and "=" in value:
            check, _, reason = value.partition("=")
            if reason.strip():
                skips[check.strip()] = reason.strip()
    return skips
