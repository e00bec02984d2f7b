"""IAM rules through the real pack."""

from __future__ import annotations

import json

import pytest

from tests.policies.cases import UNKNOWN, Case, assert_case, bad, ok
from tools.analyzer import PolicyPackProcess

PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
PROJECT_BINDING = "gcp:projects/iAMBinding:IAMBinding"
PROJECT_POLICY = "gcp:projects/iAMPolicy:IAMPolicy"
ORG_MEMBER = "gcp:organizations/iAMMember:IAMMember"
SA_MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"
BUCKET_MEMBER = "gcp:storage/bucketIAMMember:BucketIAMMember"
REPO_MEMBER = "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember"
SA_KEY = "gcp:serviceaccount/key:Key"
SIGNAL_SA = "serviceAccount:signal@signal-test.iam.gserviceaccount.com"
COMPUTE_SA = "serviceAccount:123456789012-compute@developer.gserviceaccount.com"

LEVELS = {
    "iam-no-primitive-roles": "mandatory",
    "iam-no-project-impersonation": "mandatory",
    "iam-no-service-account-keys": "mandatory",
    "iam-no-default-service-accounts": "mandatory",
    "iam-no-public-members": "mandatory",
    "iam-service-account-admin": "advisory",
}


def member(role: str, who: str = SIGNAL_SA, **extra: object) -> dict:
    return {"project": "signal-test", "role": role, "member": who, **extra}


LOG_WRITER = member("roles/logging.logWriter")

CASES = [
    ok("iam-no-primitive-roles", PROJECT_MEMBER, LOG_WRITER),
    bad(
        "iam-no-primitive-roles",
        PROJECT_MEMBER,
        member("roles/editor"),
        "editor",
        also=frozenset({"iam-service-account-admin"}),
    ),
    bad(
        "iam-no-primitive-roles",
        PROJECT_BINDING,
        {
            "project": "signal-test",
            "role": "roles/viewer",
            "members": ["group:quants@example.com", "user:a@example.com"],
        },
        "viewer-binding",
        expect=2,
    ),
    bad(
        "iam-no-primitive-roles",
        PROJECT_POLICY,
        {
            "project": "signal-test",
            "policyData": json.dumps(
                {"bindings": [{"role": "roles/owner", "members": ["user:admin@example.com"]}]}
            ),
        },
        "owner-in-policy",
    ),
    bad(
        "iam-no-primitive-roles",
        BUCKET_MEMBER,
        member("roles/viewer", bucket="b"),
        "resource-level",
    ),
    ok("iam-no-project-impersonation", PROJECT_MEMBER, LOG_WRITER),
    ok(
        "iam-no-project-impersonation",
        SA_MEMBER,
        {
            "serviceAccountId": "projects/p/serviceAccounts/signal@p",
            "role": "roles/iam.serviceAccountUser",
            "member": "serviceAccount:deployer@p.iam.gserviceaccount.com",
        },
        "on-one-service-account",
    ),
    bad(
        "iam-no-project-impersonation",
        PROJECT_MEMBER,
        member("roles/iam.serviceAccountUser"),
        "sa-user",
    ),
    bad(
        "iam-no-project-impersonation",
        ORG_MEMBER,
        {
            "orgId": "1",
            "role": "roles/iam.serviceAccountTokenCreator",
            "member": "group:ops@example.com",
        },
        "org-token-creator",
    ),
    ok(
        "iam-no-service-account-keys",
        SA_MEMBER,
        {
            "serviceAccountId": "x",
            "role": "roles/iam.workloadIdentityUser",
            "member": "serviceAccount:signal-test.svc.id.goog[signal/signal]",
        },
        "workload-identity",
    ),
    bad(
        "iam-no-service-account-keys",
        SA_KEY,
        {"serviceAccountId": "signal@p.iam.gserviceaccount.com"},
        "key",
    ),
    ok("iam-no-default-service-accounts", PROJECT_MEMBER, LOG_WRITER),
    ok(
        "iam-no-default-service-accounts",
        PROJECT_MEMBER,
        member("roles/logging.logWriter", UNKNOWN),
        "created-account",
    ),
    bad(
        "iam-no-default-service-accounts",
        PROJECT_MEMBER,
        member("roles/logging.logWriter", COMPUTE_SA),
        "compute-default",
    ),
    bad(
        "iam-no-default-service-accounts",
        REPO_MEMBER,
        {
            "repository": "images",
            "role": "roles/artifactregistry.reader",
            "member": "serviceAccount:signal-test@appspot.gserviceaccount.com",
        },
        "app-engine-default",
    ),
    ok("iam-no-public-members", BUCKET_MEMBER, member("roles/storage.objectViewer", bucket="b")),
    bad(
        "iam-no-public-members",
        BUCKET_MEMBER,
        member("roles/storage.objectViewer", "allUsers", bucket="b"),
        "public-bucket",
    ),
    bad(
        "iam-no-public-members",
        PROJECT_MEMBER,
        member("roles/logging.viewer", "allAuthenticatedUsers"),
        "project",
    ),
    ok("iam-service-account-admin", PROJECT_MEMBER, LOG_WRITER),
    ok(
        "iam-service-account-admin",
        PROJECT_MEMBER,
        member("roles/container.admin", "group:platform@example.com"),
        "humans",
    ),
    bad("iam-service-account-admin", PROJECT_MEMBER, member("roles/container.admin"), "sa-admin"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_iam_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)
