"""Kubernetes RBAC rules: wildcards and the permissions that escalate privilege (CIS Kubernetes
5.1, Checkov CKV_K8S_49, CKV_K8S_155 to 158), and bindings to default service accounts.

A permission is what one PolicyRule grants: an API group, a verb and a resource, each matched
literally or by `*` (and `*/<subresource>` for subresources), as the API server authorizes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rules.kit import ADVISORY, MANDATORY, Resource, Rules
from rules.kube_objects import is_kind, kind_of
from rules.values import as_list, get, shown

RULES = Rules("rbac")
RBAC = "rbac.authorization.k8s.io"


def is_role(token: str) -> bool:
    return is_kind(token, RBAC, "Role") or is_kind(token, RBAC, "ClusterRole")


def is_cluster_role(token: str) -> bool:
    return is_kind(token, RBAC, "ClusterRole")


def is_binding(token: str) -> bool:
    return is_kind(token, RBAC, "RoleBinding") or is_kind(token, RBAC, "ClusterRoleBinding")


@dataclass(frozen=True)
class Operation:
    """A privileged operation: any of `verbs` on any of `resources` in any of `groups`."""

    groups: tuple[str, ...]
    verbs: tuple[str, ...]
    resources: tuple[str, ...]

    def granted_by(self, rule: Any) -> bool:
        groups = [g for g in as_list(get(rule, "apiGroups")) if isinstance(g, str)]
        verbs = [v for v in as_list(get(rule, "verbs")) if isinstance(v, str)]
        resources = [r for r in as_list(get(rule, "resources")) if isinstance(r, str)]
        return (
            any(g == "*" or g in self.groups for g in groups)
            and any(v == "*" or v in self.verbs for v in verbs)
            and any(_resource_matches(granted, self.resources) for granted in resources)
        )


def _resource_matches(granted: str, wanted: tuple[str, ...]) -> bool:
    if granted == "*" or granted in wanted:
        return True
    # `*/approval` grants the approval subresource of every resource.
    return granted.startswith("*/") and any(w.endswith(granted[1:]) for w in wanted)


def _rules(r: Resource) -> list[Any]:
    return [rule for rule in as_list(get(r.props, "rules")) if isinstance(rule, dict)]


def _grants_all(r: Resource, operations: tuple[Operation, ...]) -> bool:
    """Whether the role can perform every operation (each by some rule of it)."""
    rules = _rules(r)
    return bool(rules) and all(any(op.granted_by(rule) for rule in rules) for op in operations)


def _role(r: Resource) -> str:
    return f"{kind_of(r.type)} {get(r.props, 'metadata', 'name', default=r.name)}"


@RULES.resource(
    "k8s-rbac-no-wildcards",
    level=ADVISORY,
    description="Roles and ClusterRoles name their API groups, resources and verbs (no `*`).",
    source="CIS Kubernetes 5.1.3; Checkov CKV_K8S_49.",
    types=is_role,
)
def no_wildcards(r: Resource) -> Iterator[str]:
    for index, rule in enumerate(_rules(r)):
        for field in ("apiGroups", "resources", "verbs"):
            values = [v for v in as_list(get(rule, field)) if isinstance(v, str)]
            if any("*" in v for v in values):
                yield f"rules[{index}].{field} {values} uses a wildcard"


WEBHOOK_CONTROL = (
    Operation(
        ("admissionregistration.k8s.io",),
        ("create", "update", "patch"),
        ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"),
    ),
)
CSR_APPROVAL = (
    Operation(
        ("certificates.k8s.io",), ("update", "patch"), ("certificatesigningrequests/approval",)
    ),
    Operation(("certificates.k8s.io",), ("approve",), ("signers",)),
)
# `bind` is authorized on the role being bound; Checkov also matches the binding resources.
BIND = (
    Operation((RBAC,), ("bind",), ("roles", "clusterroles", "rolebindings", "clusterrolebindings")),
)
ESCALATE = (Operation((RBAC,), ("escalate",), ("roles", "clusterroles")),)


@RULES.resource(
    "k8s-rbac-no-webhook-control",
    level=ADVISORY,
    description=(
        "No ClusterRole can create or change admission webhook configurations (a webhook sees "
        "and can rewrite every object it matches)."
    ),
    source="CIS Kubernetes 5.1.12; Checkov CKV_K8S_155.",
    types=is_cluster_role,
)
def no_webhook_control(r: Resource) -> Iterator[str]:
    if _grants_all(r, WEBHOOK_CONTROL):
        yield f"{_role(r)} can create, update or patch admission webhook configurations"


@RULES.resource(
    "k8s-rbac-no-csr-approval",
    level=ADVISORY,
    description="No ClusterRole can approve CertificateSigningRequests (it could mint credentials).",
    source="CIS Kubernetes 5.1.11; Checkov CKV_K8S_156.",
    types=is_cluster_role,
)
def no_csr_approval(r: Resource) -> Iterator[str]:
    if _grants_all(r, CSR_APPROVAL):
        yield f"{_role(r)} can approve CertificateSigningRequests for a signer"


@RULES.resource(
    "k8s-rbac-no-bind",
    level=MANDATORY,
    description=(
        "No Role or ClusterRole holds the `bind` verb on roles (it could grant any role it "
        "may bind, beyond its own permissions)."
    ),
    source="CIS Kubernetes 5.1.8; Checkov CKV_K8S_157.",
    types=is_role,
)
def no_bind(r: Resource) -> Iterator[str]:
    if _grants_all(r, BIND):
        yield f"{_role(r)} can bind roles (privilege escalation)"


@RULES.resource(
    "k8s-rbac-no-escalate",
    level=MANDATORY,
    description=(
        "No Role or ClusterRole holds the `escalate` verb (it could grant itself any permission)."
    ),
    source="CIS Kubernetes 5.1.8; Checkov CKV_K8S_158.",
    types=is_role,
)
def no_escalate(r: Resource) -> Iterator[str]:
    if _grants_all(r, ESCALATE):
        yield f"{_role(r)} can escalate roles (privilege escalation)"


@RULES.resource(
    "k8s-rbac-no-default-service-account",
    level=MANDATORY,
    description=(
        "No RoleBinding or ClusterRoleBinding grants a role to a namespace's `default` "
        "service account (every pod without its own account would hold it)."
    ),
    source="CIS Kubernetes 5.1.5; Checkov CKV_K8S_42.",
    types=is_binding,
)
def no_default_service_account(r: Resource) -> Iterator[str]:
    role = get(r.props, "roleRef", "name")
    for index, subject in enumerate(as_list(get(r.props, "subjects"))):
        if get(subject, "kind") == "ServiceAccount" and get(subject, "name") == "default":
            namespace = get(subject, "namespace", default="(the binding's)")
            yield (
                f"subjects[{index}] binds {shown(role)} to the default service account of "
                f"namespace {namespace}"
            )
