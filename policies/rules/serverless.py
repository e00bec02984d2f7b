"""Cloud Run and Cloud Functions rules: a service the internet can reach (public ingress) must not
also let anyone invoke it (an allUsers or allAuthenticatedUsers invoker). Public ingress behind
IAM, or a public invoker behind internal-only ingress (a load balancer with IAP in front), is fine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rules.iam_grants import PUBLIC_MEMBERS, iam_members
from rules.kit import MANDATORY, Resource, Rules, StackResource
from rules.values import get, is_unknown

RULES = Rules("serverless")
Finding = tuple[str | None, str]


@dataclass(frozen=True)
class ServiceKind:
    """One serverless resource type and how its ingress and invoker grants are expressed."""

    label: str
    ingress_path: tuple[str, ...]
    public_ingress: tuple[str | None, ...]  # values that accept internet traffic (None: unset)
    iam_types: frozenset[str]
    iam_name_field: str  # the IAM resource's input naming the service
    invoker_role: str


SERVICES: dict[str, ServiceKind] = {
    "gcp:cloudrunv2/service:Service": ServiceKind(
        "Cloud Run service",
        ("ingress",),
        (None, "INGRESS_TRAFFIC_ALL"),
        frozenset(
            f"gcp:cloudrunv2/serviceIam{kind}:ServiceIam{kind}"
            for kind in ("Member", "Binding", "Policy")
        ),
        "name",
        "roles/run.invoker",
    ),
    "gcp:cloudrun/service:Service": ServiceKind(
        "Cloud Run service",
        ("metadata", "annotations", "run.googleapis.com/ingress"),
        (None, "all"),
        frozenset(f"gcp:cloudrun/iam{kind}:Iam{kind}" for kind in ("Member", "Binding", "Policy")),
        "service",
        "roles/run.invoker",
    ),
    "gcp:cloudfunctions/function:Function": ServiceKind(
        "Cloud Function",
        ("ingressSettings",),
        (None, "ALLOW_ALL"),
        frozenset(
            f"gcp:cloudfunctions/functionIam{kind}:FunctionIam{kind}"
            for kind in ("Member", "Binding", "Policy")
        ),
        "cloudFunction",
        "roles/cloudfunctions.invoker",
    ),
    "gcp:cloudfunctionsv2/function:Function": ServiceKind(
        "Cloud Function",
        ("serviceConfig", "ingressSettings"),
        (None, "ALLOW_ALL"),
        frozenset(
            f"gcp:cloudfunctionsv2/functionIam{kind}:FunctionIam{kind}"
            for kind in ("Member", "Binding", "Policy")
        ),
        "cloudFunction",
        "roles/cloudfunctions.invoker",
    ),
}
INVOKER_IAM_TYPES = frozenset(t for kind in SERVICES.values() for t in kind.iam_types)
INVOKER_ROLES = frozenset(kind.invoker_role for kind in SERVICES.values())


def is_public_invoker_grant(token: str, role: Any, member: Any) -> bool:
    """A grant this module judges (iam-no-public-members leaves it alone)."""
    return (
        token in INVOKER_IAM_TYPES
        and isinstance(role, str)
        and role in INVOKER_ROLES
        and member in PUBLIC_MEMBERS
    )


def _names(service: StackResource) -> set[str]:
    name = get(service.props, "name", default=service.name)
    return {service.name, name} if isinstance(name, str) else {service.name}


def _targets(grant: StackResource, service: StackResource, kind: ServiceKind) -> bool:
    """Whether an IAM resource is on this service: the engine says its name input comes from the
    service, or the name it gives is the service's (short, or a full resource name)."""
    if service.urn in grant.property_dependencies.get(kind.iam_name_field, ()):
        return True
    target = get(grant.props, kind.iam_name_field)
    if is_unknown(target):
        return service.urn in grant.dependencies
    if not isinstance(target, str):
        return False
    short = target.rstrip("/").rsplit("/", 1)[-1]
    return short in _names(service)


def _public_ingress(service: StackResource, kind: ServiceKind) -> bool | None:
    value = get(service.props, *kind.ingress_path)
    if is_unknown(value):
        return None
    return value in kind.public_ingress


def _public_invokers(
    service: StackResource, kind: ServiceKind, grants: list[StackResource]
) -> Iterator[str]:
    if get(service.props, "invokerIamDisabled") is True:
        yield "invokerIamDisabled is true (anyone may invoke it)"
    for grant in grants:
        if grant.type not in kind.iam_types or not _targets(grant, service, kind):
            continue
        resource = Resource(grant.type, grant.name, grant.urn, grant.props)
        for role, member in iam_members(resource):
            if role == kind.invoker_role and member in PUBLIC_MEMBERS:
                yield f"{grant.name} grants {role} to {member}"


@RULES.stack(
    "serverless-no-public-invoker",
    level=MANDATORY,
    description=(
        "No Cloud Run service or Cloud Function both accepts internet traffic (ingress all) "
        "and lets allUsers or allAuthenticatedUsers invoke it."
    ),
    source=(
        "Checkov CKV_GCP_102, CKV_GCP_107, CKV_GCP_124; Cloud Run docs, 'Restrict network "
        "ingress' and 'Allowing public (unauthenticated) access'."
    ),
)
def no_public_invoker(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    grants = [r for r in resources if r.type in INVOKER_IAM_TYPES]
    for service in resources:
        kind = SERVICES.get(service.type)
        if kind is None or _public_ingress(service, kind) is not True:
            continue
        for invoker in _public_invokers(service, kind, grants):
            yield (
                service.urn,
                f"{kind.label} {service.name} takes internet traffic (ingress "
                f"{'.'.join(kind.ingress_path)} unset or all) and {invoker}: restrict ingress "
                "to internal (and a load balancer) or require IAM",
            )
