"""RBAC rules through the real pack: golden Role, ClusterRole and binding, one mutation each."""

from __future__ import annotations

import pytest

from tests.policies.cases import UNKNOWN, Case, assert_case, bad, mutate, ok
from tools.analyzer import PolicyPackProcess

ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
CLUSTER_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
CLUSTER_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"

LEVELS = {
    "k8s-rbac-no-wildcards": "advisory",
    "k8s-rbac-no-webhook-control": "advisory",
    "k8s-rbac-no-csr-approval": "advisory",
    "k8s-rbac-no-bind": "mandatory",
    "k8s-rbac-no-escalate": "mandatory",
    "k8s-rbac-no-default-service-account": "mandatory",
}

READER = {
    "metadata": {"name": "metrics-reader"},
    "rules": [
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
    ],
}
ROLE_GOLDEN = mutate(READER, {"metadata.namespace": "signal"})
BINDING_GOLDEN = {
    "metadata": {"name": "signal-reader", "namespace": "signal"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "metrics-reader"},
    "subjects": [{"kind": "ServiceAccount", "name": "signal", "namespace": "signal"}],
}


def rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def with_rule(base: dict, *extra: dict) -> dict:
    return mutate(base, {"rules": [*base["rules"], *extra]})


CASES = [
    ok("k8s-rbac-no-wildcards", CLUSTER_ROLE, READER),
    ok("k8s-rbac-no-wildcards", ROLE, ROLE_GOLDEN, "role"),
    ok("k8s-rbac-no-wildcards", ROLE, mutate(ROLE_GOLDEN, {"rules": UNKNOWN}), "unknown"),
    bad(
        "k8s-rbac-no-wildcards",
        CLUSTER_ROLE,
        with_rule(READER, rule(["external.metrics.k8s.io"], ["*"], ["get", "list"])),
        "resources",
        message="rules[2].resources ['*'] uses a wildcard",
    ),
    bad(
        "k8s-rbac-no-wildcards",
        ROLE,
        mutate(ROLE_GOLDEN, {"rules.0.verbs": ["*"], "rules.1.apiGroups": ["*"]}),
        "verbs-and-groups",
        expect=2,
    ),
    ok("k8s-rbac-no-webhook-control", CLUSTER_ROLE, READER),
    ok(
        "k8s-rbac-no-webhook-control",
        CLUSTER_ROLE,
        with_rule(
            READER,
            rule(
                ["admissionregistration.k8s.io"], ["mutatingwebhookconfigurations"], ["get", "list"]
            ),
        ),
        "read-only",
    ),
    bad(
        "k8s-rbac-no-webhook-control",
        CLUSTER_ROLE,
        with_rule(
            READER,
            rule(["admissionregistration.k8s.io"], ["validatingwebhookconfigurations"], ["patch"]),
        ),
        "patch-webhooks",
    ),
    ok("k8s-rbac-no-csr-approval", CLUSTER_ROLE, READER),
    ok(
        "k8s-rbac-no-csr-approval",
        CLUSTER_ROLE,
        with_rule(
            READER,
            rule(["certificates.k8s.io"], ["certificatesigningrequests/approval"], ["update"]),
        ),
        "approval-without-a-signer",
    ),
    bad(
        "k8s-rbac-no-csr-approval",
        CLUSTER_ROLE,
        with_rule(
            READER,
            rule(["certificates.k8s.io"], ["*/approval"], ["patch"]),
            rule(["certificates.k8s.io"], ["signers"], ["approve"]),
        ),
        "approve-any-signer",
        also=frozenset({"k8s-rbac-no-wildcards"}),
    ),
    ok("k8s-rbac-no-bind", ROLE, ROLE_GOLDEN),
    bad(
        "k8s-rbac-no-bind",
        ROLE,
        with_rule(ROLE_GOLDEN, rule(["rbac.authorization.k8s.io"], ["roles"], ["bind"])),
        "bind-roles",
        message="Role metrics-reader can bind roles",
    ),
    bad(
        "k8s-rbac-no-bind",
        CLUSTER_ROLE,
        with_rule(READER, rule(["*"], ["*"], ["*"])),
        "everything",
        also=frozenset(
            {
                "k8s-rbac-no-wildcards",
                "k8s-rbac-no-webhook-control",
                "k8s-rbac-no-csr-approval",
                "k8s-rbac-no-escalate",
            }
        ),
    ),
    ok("k8s-rbac-no-escalate", CLUSTER_ROLE, READER),
    bad(
        "k8s-rbac-no-escalate",
        CLUSTER_ROLE,
        with_rule(READER, rule(["rbac.authorization.k8s.io"], ["clusterroles"], ["escalate"])),
        "escalate",
    ),
    ok("k8s-rbac-no-default-service-account", BINDING, BINDING_GOLDEN),
    ok(
        "k8s-rbac-no-default-service-account",
        CLUSTER_BINDING,
        mutate(
            BINDING_GOLDEN,
            {
                "roleRef.kind": "ClusterRole",
                "roleRef.name": "cluster-admin",
                "subjects": [{"kind": "Group", "name": "platform-admins@example.com"}],
            },
        ),
        "group",
    ),
    bad(
        "k8s-rbac-no-default-service-account",
        CLUSTER_BINDING,
        mutate(
            BINDING_GOLDEN,
            {
                "roleRef.kind": "ClusterRole",
                "roleRef.name": "cluster-admin",
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "signal"}],
            },
        ),
        "cluster-admin-to-default",
        message="binds 'cluster-admin' to the default service account of namespace signal",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rbac_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)
