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
class Grant:
    """How an IAM resource type grants invocation: the input naming the service, the role."""

    name_field: str
    invoker_role: str


def _iam(module: str, prefix: str, grant: Grant) -> dict[str, Grant]:
    """`gcp:<module>/<prefix>Member:<Prefix>Member` and its Binding and Policy siblings."""
    title = prefix[:1].upper() + prefix[1:]
    return {
        f"gcp:{module}/{prefix}{kind}:{title}{kind}": grant
        for kind in ("Member", "Binding", "Policy")
    }


RUN_V2_GRANTS = _iam("cloudrunv2", "serviceIam", Grant("name", "roles/run.invoker"))
RUN_V1_GRANTS = _iam("cloudrun", "iam", Grant("service", "roles/run.invoker"))


@dataclass(frozen=True)
class ServiceKind:
    """One serverless resource type and how its ingress and invoker grants are expressed."""

    label: str
    ingress_path: tuple[str, ...]
    public_ingress: tuple[str | None, ...]  # values that accept internet traffic (None: unset)
    grants: Mapping[str, Grant]  # IAM type -> how it names the service and the invoker role


SERVICES: dict[str, ServiceKind] = {
    "gcp:cloudrunv2/service:Service": ServiceKind(
        "Cloud Run service", ("ingress",), (None, "INGRESS_TRAFFIC_ALL"), RUN_V2_GRANTS
    ),
    "gcp:cloudrun/service:Service": ServiceKind(
        "Cloud Run service",
        ("metadata", "annotations", "run.googleapis.com/ingress"),
        (None, "all"),
        RUN_V1_GRANTS,
    ),
    "gcp:cloudfunctions/function:Function": ServiceKind(
        "Cloud Function",
        ("ingressSettings",),
        (None, "ALLOW_ALL"),
        _iam(
            "cloudfunctions", "functionIam", Grant("cloudFunction", "roles/cloudfunctions.invoker")
        ),
    ),
    # A 2nd-gen function runs as a Cloud Run service of its name: roles/run.invoker on that
    # service (Cloud Run's IAM resources, as Google's and Pulumi's examples grant it) invokes it.
    "gcp:cloudfunctionsv2/function:Function": ServiceKind(
        "Cloud Function",
        ("serviceConfig", "ingressSettings"),
        (None, "ALLOW_ALL"),
        {
            **_iam(
                "cloudfunctionsv2",
                "functionIam",
                Grant("cloudFunction", "roles/cloudfunctions.invoker"),
            ),
            **RUN_V2_GRANTS,
            **RUN_V1_GRANTS,
        },
    ),
}
INVOKER_IAM_TYPES = frozenset(t for kind in SERVICES.values() for t in kind.grants)
INVOKER_ROLES = frozenset(
    g.invoker_role for kind in SERVICES.values() for g in kind.grants.values()
)


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


def _targets(grant: StackResource, service: StackResource, name_field: str) -> bool:
    """Whether an IAM resource is on this service: the engine says its name input comes from the
    service, or the name it gives is the service's (short, or a full resource name)."""
    if service.urn in grant.property_dependencies.get(name_field, ()):
        return True
    target = get(grant.props, name_field)
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
        how = kind.grants.get(grant.type)
        if how is None or not _targets(grant, service, how.name_field):
            continue
        resource = Resource(grant.type, grant.name, grant.urn, grant.props)
        for role, member in iam_members(resource):
            if role == how.invoker_role and member in PUBLIC_MEMBERS:
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
