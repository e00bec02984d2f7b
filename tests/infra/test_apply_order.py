"""Apply order in each stack's plan, read as `pulumi up` will run it: every resource waits for its
APIs, the service agents it grants to, the grants on the keys it encrypts with, and the
identity pool its principals live in, and for the settle delay after each of those (Google
applies them eventually: infra/settle.py). The pack checks the order on any stack
(policies/rules/apply_order.py); these tests hold our program to it directly."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.bootstrap import BOOTSTRAP_APIS
from infra.service_agents import AGENTS, Creation
from infra.signal_platform import APIS, CONTROL_PLANE_TARGETS
from tools.inventory import UNKNOWN, Inventory, Resource

REPO = Path(__file__).resolve().parents[2]
TABLES = yaml.safe_load((REPO / "policies" / "rules" / "apply_order.yaml").read_text())
SERVICE = "gcp:projects/service:Service"
SERVICE_IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"
KEY_GRANT = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
SLEEP = "time:index/sleep:Sleep"


def waits_for(plan: Inventory, resource: Resource) -> set[str]:
    """URNs `resource` waits for before it is created: its dependencies and, through its
    parent's registration, everything its ancestors wait for."""
    index = plan.by_urn()
    found: set[str] = set()
    pending = [resource.urn]
    while pending:
        current = index.get(pending.pop())
        if current is None:
            continue
        edges = set(current.options.get("dependencies", ()))
        for urns in current.options.get("propertyDependencies", {}).values():
            edges.update(urns)
        if current.parent:
            edges.add(current.parent)
        pending += sorted(edges - found)
        found |= edges
    return found


def settles_after(plan: Inventory, *resources: Resource) -> set[str]:
    """URNs of the settle delays (Sleeps) that wait for every one of `resources` directly."""
    urns = {r.urn for r in resources}
    return {
        sleep.urn
        for sleep in plan.of_type(SLEEP)
        if urns <= set(sleep.options.get("dependencies", ()))
    }


def assert_settled(plan: Inventory, user: Resource, *grants: Resource) -> None:
    """`user` waits for a settle delay that itself waits for all of `grants`."""
    after = settles_after(plan, *grants)
    assert after, ("no settle delay after", [g.name for g in grants])
    assert after & waits_for(plan, user), (user.name, [g.name for g in grants])


def apis_of(resource: Resource) -> set[str]:
    """The APIs the pack's table says creating `resource` calls."""
    table = TABLES["apis"]
    needed = set()
    if resource.type in table["types"]:
        apis = table["types"][resource.type]  # one API, or the list a type needs
        needed |= {apis} if isinstance(apis, str) else set(apis)
    elif resource.type.startswith("gcp:"):
        module = resource.type.split(":")[1].split("/")[0]
        needed |= {table["modules"][module]} if module in table["modules"] else set()
    for field in table["fields"]:
        value: Any = resource.inputs
        for key in field["path"].split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if field["type"] != resource.type or value in (None, UNKNOWN):
            continue
        if (
            value in field.get("in", ())
            or ("not_in" in field and value not in field["not_in"])
            or field.get("contains", "\0") in str(value)
        ):
            needed.add(field["api"])
    return needed


# ---------------------------------------------------------------- APIs


def test_every_api_a_declared_type_needs_is_enabled_and_waited_for(stack_plan: Inventory):
    """Each API a resource needs is enabled by the program before it, or by the bootstrap
    before the program runs (those that cannot enable themselves: infra/bootstrap.py)."""
    services = {s.inputs["service"]: s for s in stack_plan.of_type(SERVICE)}
    assert set(services) == set(APIS)
    assert not set(services) & {
        "cloudresourcemanager.googleapis.com",
        "serviceusage.googleapis.com",
    }
    needed_by_some = set()
    for resource in stack_plan.resources:
        for api in apis_of(resource):
            needed_by_some.add(api)
            if api in BOOTSTRAP_APIS and api not in services:
                continue  # enabled by the bootstrap, before any `pulumi up`
            assert api in services, f"{resource.type} {resource.name} needs {api}"
            assert services[api].urn in waits_for(stack_plan, resource), (resource.name, api)
            # And for the enablement to have propagated (an API just enabled can still answer
            # SERVICE_DISABLED).
            assert_settled(stack_plan, resource, services[api])
    # The ones this issue found missing: Binary Authorization, fleet and gateway, scanning.
    assert {
        "binaryauthorization.googleapis.com",
        "gkehub.googleapis.com",
        "connectgateway.googleapis.com",
        "containerscanning.googleapis.com",
    } <= needed_by_some


# ---------------------------------------------------------------- service agents and key grants


def test_every_agent_is_made_to_exist_before_anything_is_granted_to_it(stack_plan: Inventory):
    identities = {i.inputs["service"]: i for i in stack_plan.of_type(SERVICE_IDENTITY)}
    assert set(identities) == {s for s, a in AGENTS.items() if a.creation is Creation.IDENTITY}
    services = {s.inputs["service"]: s for s in stack_plan.of_type(SERVICE)}
    for grant in stack_plan.of_type(KEY_GRANT):
        member = grant.inputs["member"]
        matches = [s for s, a in AGENTS.items() if _domain(member) == _domain(a.template)]
        if member == UNKNOWN:
            # A data source's email (BigQuery's, Cloud Storage's): it runs once the API is on.
            matches = [
                s
                for s, a in AGENTS.items()
                if a.creation is Creation.DATA_SOURCE
                and services[s].urn in grant.options["dependencies"]
            ]
        assert len(matches) == 1, (grant.name, member)
        maker = identities.get(matches[0]) or services[matches[0]]
        assert maker.urn in waits_for(stack_plan, grant), grant.name
        # A new agent is not found everywhere at once either.
        assert_settled(stack_plan, grant, maker)


def test_fleet_memberships_wait_for_the_hub_agent_to_settle(stack_plan: Inventory):
    """The hub's agent creates a membership with the role Google grants it as it creates the
    agent: that grant propagates like any other."""
    (hub,) = [
        i
        for i in stack_plan.of_type(SERVICE_IDENTITY)
        if i.inputs["service"] == "gkehub.googleapis.com"
    ]
    memberships = stack_plan.of_type("gcp:gkehub/membership:Membership")
    assert memberships
    for membership in memberships:
        assert_settled(stack_plan, membership, hub)


def _domain(email: Any) -> str:
    return str(email).rsplit("@", 1)[-1]


def _grant_on(plan: Inventory, key: str, service: str) -> Resource:
    """The grant on `key` to `service`'s agent."""
    services = {s.inputs["service"]: s for s in plan.of_type(SERVICE)}
    found = [
        g
        for g in plan.of_type(KEY_GRANT)
        if g.inputs["cryptoKeyId"] == key
        and (
            _domain(g.inputs["member"]) == _domain(AGENTS[service].template)
            or (
                g.inputs["member"] == UNKNOWN and services[service].urn in g.options["dependencies"]
            )
        )
    ]
    assert len(found) == 1, (key, service, [g.name for g in found])
    return found[0]


@pytest.mark.parametrize(
    ("type_", "field", "service"),
    [
        (CLUSTER, ("databaseEncryption", "keyName"), "container.googleapis.com"),
        (CLUSTER, ("nodeConfig", "bootDiskKmsKey"), "compute.googleapis.com"),
        (NODE_POOL, ("nodeConfig", "bootDiskKmsKey"), "compute.googleapis.com"),
        (
            "gcp:artifactregistry/repository:Repository",
            ("kmsKeyName",),
            "artifactregistry.googleapis.com",
        ),
        (
            "gcp:storage/bucket:Bucket",
            ("encryption", "defaultKmsKeyName"),
            "storage.googleapis.com",
        ),
        ("gcp:redis/cluster:Cluster", ("kmsKey",), "redis.googleapis.com"),
        (
            "gcp:bigquery/dataset:Dataset",
            ("defaultEncryptionConfiguration", "kmsKeyName"),
            "bigquery.googleapis.com",
        ),
        (
            "gcp:bigquery/table:Table",
            ("encryptionConfiguration", "kmsKeyName"),
            "bigquery.googleapis.com",
        ),
        ("gcp:pubsub/topic:Topic", ("kmsKeyName",), "pubsub.googleapis.com"),
    ],
)
def test_each_key_user_waits_for_the_grant_to_its_own_services_agent(
    stack_plan: Inventory, type_: str, field: tuple[str, ...], service: str
):
    users = [r for r in stack_plan.of_type(type_) if _at(r.inputs, field)]
    assert users, type_
    for user in users:
        key = _at(user.inputs, field)
        grant = _grant_on(stack_plan, key, service)
        assert grant.urn in waits_for(stack_plan, user), (user.name, grant.name)
        # KMS refuses an agent whose grant has not propagated yet.
        assert_settled(stack_plan, user, grant)


def _at(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


# ---------------------------------------------------------------- Workload Identity


def test_grants_to_the_identity_pool_wait_for_a_cluster(stack_plan: Inventory):
    pool = f"{stack_plan.outputs['project']}.svc.id.goog"
    clusters = {c.urn for c in stack_plan.of_type(CLUSTER)}
    grants = [
        r
        for r in stack_plan.resources
        if r.type.endswith(("iAMMember:IAMMember", "IAMMember"))
        and pool in str(r.inputs.get("member"))
    ]
    # Two GSA bindings (signal service, Triton) and the Monitoring readers.
    assert len(grants) >= 3
    for grant in grants:
        assert clusters <= waits_for(stack_plan, grant), grant.name


_PRINCIPAL_RES = (
    re.compile(r"\.svc\.id\.goog\[([a-z0-9-]+)/([a-z0-9-]+)\]$"),
    re.compile(r"\.svc\.id\.goog/subject/ns/([a-z0-9-]+)/sa/([a-z0-9-]+)$"),
)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def _pod_spec(resource: Resource) -> dict[str, Any] | None:
    kind = resource.type.rsplit(":", 1)[-1]
    spec = resource.inputs.get("spec") or {}
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    elif kind not in WORKLOAD_KINDS:
        return None
    return (spec.get("template") or {}).get("spec")


def test_what_runs_as_a_pool_principal_waits_for_its_grants_to_settle(stack_plan: Inventory):
    """A pod exchanges its Kubernetes token for a Google one as soon as it starts: until the
    binding (or the principal's role) is in effect the exchange is refused, and a workload
    pulumi-kubernetes awaits can fail its rollout. Every workload whose pods run as a
    principal the stack grants to, and that principal's Kubernetes service account, waits for
    the delay after all of the pool's grants."""
    pool = f"{stack_plan.outputs['project']}.svc.id.goog"
    grants = [
        r
        for r in stack_plan.resources
        if r.type.endswith("IAMMember") and pool in str(r.inputs.get("member"))
    ]
    principals = {
        match.groups()
        for grant in grants
        for regex in _PRINCIPAL_RES
        if (match := regex.search(str(grant.inputs["member"])))
    }
    assert len(principals) == len(grants) >= 3
    users = []
    for resource in stack_plan.resources:
        metadata = resource.inputs.get("metadata") or {}
        if resource.type == "kubernetes:core/v1:ServiceAccount":
            runs_as = (metadata.get("namespace"), metadata.get("name"))
        elif (pod := _pod_spec(resource)) is not None:
            runs_as = (metadata.get("namespace"), pod.get("serviceAccountName"))
        else:
            continue
        if runs_as in principals:
            users.append(resource)
            assert_settled(stack_plan, resource, *grants)
    # The metrics adapter at least, with its account, in every region.
    assert len(users) >= 2 * len(stack_plan.of_type(CLUSTER))


def test_the_gateway_grants_settle_before_any_kubernetes_call(stack_plan: Inventory):
    gateway = [
        r
        for r in stack_plan.of_type("gcp:projects/iAMMember:IAMMember")
        if r.inputs["role"].startswith("roles/gkehub.gateway")
    ]
    assert gateway
    providers = stack_plan.of_type("pulumi:providers:kubernetes")
    assert len(providers) == len(stack_plan.of_type(CLUSTER))
    for provider in providers:
        assert_settled(stack_plan, provider, *gateway)


def test_the_bigquery_subscription_waits_for_its_writers_access_to_settle(
    stack_plan: Inventory,
):
    """Pub/Sub checks its agent's write access to the table when the subscription is
    created; the access is the dataset's access list."""
    (dataset,) = stack_plan.of_type("gcp:bigquery/dataset:Dataset")
    subscriptions = [
        s
        for s in stack_plan.of_type("gcp:pubsub/subscription:Subscription")
        if s.inputs.get("bigqueryConfig")
    ]
    assert subscriptions
    for subscription in subscriptions:
        assert_settled(stack_plan, subscription, dataset)


_DURATION_RE = re.compile(r"^(\d+)(s|m)$")


def test_settle_delays_are_one_per_group_long_enough_and_rerun_when_the_group_changes(
    stack_plan: Inventory,
):
    """One delay per group (the APIs, the agents, each key ring's grants, the gateway's, the
    pool's, the warehouse's access list), never one per resource; each at least a minute
    (infra/settle.py says why); each runs again when its group changes (its triggers name
    the group's members)."""
    sleeps = stack_plan.of_type(SLEEP)
    rings = stack_plan.of_type("gcp:kms/keyRing:KeyRing")
    assert len(sleeps) == 5 + len(rings)
    names = {r.urn: r.name for r in stack_plan.resources}
    groups = set()
    for sleep in sleeps:
        after = sleep.inputs["triggers"]["after"]
        dependencies = sleep.options["dependencies"]
        assert dependencies and after == ",".join(sorted(names[u] for u in dependencies))
        groups.add(frozenset(dependencies))
        match = _DURATION_RE.match(sleep.inputs["createDuration"])
        assert match, sleep.inputs["createDuration"]
        assert int(match[1]) * {"s": 1, "m": 60}[match[2]] >= 60, sleep.name
    assert len(groups) == len(sleeps)


# ---------------------------------------------------------------- control plane → nodes


def test_the_control_plane_firewall_opens_every_backend_the_program_declares(stack_plan: Inventory):
    (firewall,) = [
        f
        for f in stack_plan.of_type("gcp:compute/firewall:Firewall")
        if f.name.endswith("allow-control-plane")
    ]
    (allowed,) = firewall.inputs["allows"]
    ports = {int(p) for p in allowed["ports"]}
    assert ports == set(CONTROL_PLANE_TARGETS.values())
    # Derived, not listed: each APIService's Service target port, and istiod's webhook port.
    services = {
        (s.inputs["metadata"]["namespace"], s.inputs["metadata"]["name"]): s
        for s in stack_plan.of_type("kubernetes:core/v1:Service")
    }
    api_services = stack_plan.of_type("kubernetes:apiregistration.k8s.io/v1:APIService")
    assert api_services
    for api_service in api_services:
        ref = api_service.inputs["spec"]["service"]
        (port,) = services[(ref["namespace"], ref["name"])].inputs["spec"]["ports"]
        assert port["targetPort"] in ports, api_service.name
    charts = {r.inputs["chart"] for r in stack_plan.of_type("kubernetes:helm.sh/v3:Release")}
    for chart, chart_ports in TABLES["control_plane_charts"].items():
        if chart in charts:
            assert set(chart_ports) <= ports, chart
    assert {6443, 15017} <= ports and not {443, 8443} & ports


# ---------------------------------------------------------------- replacements


REPLACEMENTS = yaml.safe_load((REPO / "policies" / "rules" / "replace_on_change.yaml").read_text())
# What names a Google resource where the program gives it a name (else Pulumi suffixes one).
NAME_INPUTS = ("name", "membershipId", "tableId", "datasetId", "repositoryId", "accountId")


def replaced_by_more_than_its_name(type_token: str) -> bool:
    """The type has inputs besides its identity whose change replaces it (the table the diff
    and the pack read, policies/rules/replace_on_change.yaml)."""
    return any(
        entry["effect"] == "replace" and not entry["why"].startswith("identity")
        for entry in REPLACEMENTS["types"].get(type_token, ())
    )


def test_a_named_resource_that_config_can_replace_is_deleted_first(stack_plan: Inventory):
    """Pulumi creates a replacement before deleting the old resource; with the same explicit
    name the create fails (409). Every such resource goes first, or is protected (review.md
    #15). Keys are exempt: Cloud KMS never deletes one, a new name is the only way."""
    checked = 0
    for resource in stack_plan.resources:
        if not resource.type.startswith("gcp:") or resource.type == "gcp:kms/cryptoKey:CryptoKey":
            continue
        if not replaced_by_more_than_its_name(resource.type):
            continue
        if not any(resource.inputs.get(key) for key in NAME_INPUTS):
            continue
        checked += 1
        assert resource.options["deleteBeforeReplace"] or resource.options["protect"], (
            resource.type,
            resource.name,
        )
    assert checked >= 10


# ---------------------------------------------------------------- namespaces


def test_every_namespaced_object_waits_for_its_namespace(stack_plan: Inventory):
    """An object sent before its Namespace exists is refused (the provider retries briefly,
    then fails): every Kubernetes object, and every Helm release, in a namespace the stack
    declares on the same cluster waits for it, directly or through an ancestor (review.md
    #20)."""
    namespaces = {
        (n.provider, n.inputs["metadata"]["name"]): n
        for n in stack_plan.of_type("kubernetes:core/v1:Namespace")
    }
    checked = 0
    for resource in stack_plan.resources:
        if not resource.type.startswith("kubernetes:") or resource.type.endswith(":Namespace"):
            continue
        if resource.type == "kubernetes:helm.sh/v3:Release":
            namespace = resource.inputs.get("namespace")
        else:
            namespace = (resource.inputs.get("metadata") or {}).get("namespace")
        declared = namespaces.get((resource.provider, namespace))
        if declared is None:
            continue  # cluster-scoped, or a namespace GKE makes (kube-system)
        checked += 1
        assert declared.urn in waits_for(stack_plan, resource), (resource.type, resource.name)
    assert checked >= 40
