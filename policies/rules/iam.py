"""IAM rules for every `...IAMMember/IamBinding/IamPolicy` resource: CIS Google Cloud section 1."""

from __future__ import annotations

import re
from collections.abc import Iterator

from rules.iam_grants import PUBLIC_MEMBERS, iam_members, iam_module, is_iam_type
from rules.kit import ADVISORY, MANDATORY, Resource, Rules
from rules.serverless import is_public_invoker_grant
from rules.values import is_unknown

RULES = Rules("iam")
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


def is_hierarchy_iam(token: str) -> bool:
    return is_iam_type(token) and iam_module(token) in _HIERARCHY_MODULES


@RULES.resource(
    "iam-no-primitive-roles",
    level=MANDATORY,
    description="No basic roles (owner, editor, viewer) are granted.",
    source="Checkov CKV_GCP_117; IAM docs, 'Basic roles'.",
    types=is_iam_type,
)
def primitive_roles(r: Resource) -> Iterator[str]:
    for role, member in iam_members(r):
        if role in PRIMITIVE_ROLES:
            yield f"grants the basic role {role} to {member}"


@RULES.resource(
    "iam-no-project-impersonation",
    level=MANDATORY,
    description=(
        "Service Account User and Token Creator are never granted at project, folder or "
        "organization level."
    ),
    source="CIS Google Cloud 1.6; Checkov CKV_GCP_41.",
    types=is_hierarchy_iam,
)
def project_impersonation(r: Resource) -> Iterator[str]:
    for role, member in iam_members(r):
        if role in IMPERSONATION_ROLES:
            yield (
                f"grants {role} to {member} at {iam_module(r.type)} level: it can act as every service "
                "account below; grant it on the one service account instead"
            )


@RULES.resource(
    "iam-no-service-account-keys",
    level=MANDATORY,
    description="No user-managed service account keys.",
    source="CIS Google Cloud 1.4.",
    types={"gcp:serviceaccount/key:Key"},
)
def service_account_keys(r: Resource) -> Iterator[str]:
    yield "user-managed service account keys are long-lived credentials: use Workload Identity"


@RULES.resource(
    "iam-no-default-service-accounts",
    level=MANDATORY,
    description="The Compute Engine and App Engine default service accounts get no grants.",
    source="CIS GKE 5.2.1; Checkov CKV_GCP_46.",
    types=is_iam_type,
)
def default_service_accounts(r: Resource) -> Iterator[str]:
    for role, member in iam_members(r):
        if isinstance(member, str) and _DEFAULT_SA.match(member):
            yield f"grants {role} to the default service account {member.split(':', 1)[1]}"


@RULES.resource(
    "iam-no-public-members",
    level=MANDATORY,
    description=(
        "No IAM grant to allUsers or allAuthenticatedUsers on any other resource "
        "(projects, buckets, repositories, service accounts ...; a public invoker of a Cloud "
        "Run service or Cloud Function is serverless-no-public-invoker's to judge)."
    ),
    source="CIS Google Cloud 5.1; IAM docs, 'allUsers and allAuthenticatedUsers'.",
    types=lambda t: is_iam_type(t) and iam_module(t) not in _OWN_PUBLIC_RULE,
)
def public_members_elsewhere(r: Resource) -> Iterator[str]:
    for role, member in iam_members(r):
        if member in PUBLIC_MEMBERS and not is_public_invoker_grant(r.type, role, member):
            yield f"grants {role} to {member}"


@RULES.resource(
    "iam-service-account-admin",
    level=ADVISORY,
    description=(
        "Service accounts hold no administrative roles at project, folder or organization level."
    ),
    source="CIS Google Cloud 1.5.",
    types=is_hierarchy_iam,
)
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
