"""IAM rules for every `...IAMMember/IamBinding/IamPolicy` resource: CIS Google Cloud section 1."""

from __future__ import annotations

import re
from collections.abc import Iterator

from rules.data import PUBLIC_MEMBERS, iam_members, is_iam_type
from rules.kit import ADVISORY, MANDATORY, Resource, resource_policy
from rules.values import is_unknown

TAGS = ("iam",)
PRIMITIVE_ROLES = ("roles/owner", "roles/editor", "roles/viewer")
IMPERSONATION_ROLES = ("roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator")
# The Compute Engine and App Engine default service accounts (Editor on the project by default).
_DEFAULT_SA = re.compile(
    r"^serviceAccount:(\d+-compute@developer\.gserviceaccount\.com|[a-z0-9-]+@appspot\.gserviceaccount\.com)$"
)
# Parent scopes: a grant here applies to every resource below.
_HIERARCHY_MODULES = ("projects", "organizations", "folder")
# Services whose public grants have their own rule (bigquery-, pubsub-, kms-...-public).
_OWN_PUBLIC_RULE = ("bigquery", "pubsub", "kms")


def _module(token: str) -> str:
    return token.split(":")[1].split("/")[0]


def is_hierarchy_iam(token: str) -> bool:
    return is_iam_type(token) and _module(token) in _HIERARCHY_MODULES


def primitive_roles(r: Resource) -> Iterator[str]:
    for role, member in iam_members(r):
        if role in PRIMITIVE_ROLES:
            yield f"grants the basic role {role} to {member}"


def project_impersonation(r: Resource) -> Iterator[str]:
    for role, member in iam_members(r):
        if role in IMPERSONATION_ROLES:
            yield (
                f"grants {role} to {member} at {_module(r.type)} level: it can act as every service "
                "account below; grant it on the one service account instead"
            )


def service_account_keys(r: Resource) -> Iterator[str]:
    yield "user-managed service account keys are long-lived credentials: use Workload Identity"


def default_service_accounts(r: Resource) -> Iterator[str]:
    for role, member in iam_members(r):
        if isinstance(member, str) and _DEFAULT_SA.match(member):
            yield f"grants {role} to the default service account {member.split(':', 1)[1]}"


def public_members(r: Resource) -> Iterator[str]:
    for role, member in iam_members(r):
        if member in PUBLIC_MEMBERS:
            yield f"grants {role} to {member}"


def service_account_admin(r: Resource) -> Iterator[str]:
    for role, member in iam_members(r):
        if (
            is_unknown(member)
            or not isinstance(member, str)
            or not member.startswith("serviceAccount:")
        ):
            continue
        if isinstance(role, str) and (
            role in PRIMITIVE_ROLES[:2] or role.lower().endswith("admin")
        ):
            yield f"grants the administrative role {role} to {member}"


POLICIES = [
    resource_policy(
        name="iam-no-primitive-roles",
        description="No basic roles (owner, editor, viewer) are granted. "
        "Source: Checkov CKV_GCP_117; IAM docs, 'Basic roles'.",
        level=MANDATORY,
        types=is_iam_type,
        rule=primitive_roles,
        tags=TAGS,
    ),
    resource_policy(
        name="iam-no-project-impersonation",
        description="Service Account User and Token Creator are never granted at project, folder or "
        "organization level. Source: CIS Google Cloud 1.6; Checkov CKV_GCP_41.",
        level=MANDATORY,
        types=is_hierarchy_iam,
        rule=project_impersonation,
        tags=TAGS,
    ),
    resource_policy(
        name="iam-no-service-account-keys",
        description="No user-managed service account keys. Source: CIS Google Cloud 1.4.",
        level=MANDATORY,
        types={"gcp:serviceaccount/key:Key"},
        rule=service_account_keys,
        tags=TAGS,
    ),
    resource_policy(
        name="iam-no-default-service-accounts",
        description="The Compute Engine and App Engine default service accounts get no grants. "
        "Source: CIS GKE 5.2.1; Checkov CKV_GCP_46.",
        level=MANDATORY,
        types=is_iam_type,
        rule=default_service_accounts,
        tags=TAGS,
    ),
    resource_policy(
        name="iam-no-public-members",
        description="No IAM grant to allUsers or allAuthenticatedUsers on any other resource "
        "(projects, buckets, repositories, service accounts ...). Source: CIS Google Cloud 5.1; "
        "IAM docs, 'allUsers and allAuthenticatedUsers'.",
        level=MANDATORY,
        types=lambda t: is_iam_type(t) and _module(t) not in _OWN_PUBLIC_RULE,
        rule=public_members,
        tags=TAGS,
    ),
    resource_policy(
        name="iam-service-account-admin",
        description="Service accounts hold no administrative roles at project, folder or organization "
        "level. Source: CIS Google Cloud 1.5.",
        level=ADVISORY,
        types=is_hierarchy_iam,
        rule=service_account_admin,
        tags=TAGS,
    ),
]
