"""Stack-level rules: what must exist alongside the workloads (mesh policy, network policy,
PDBs, system node pools). They see every resource at once through AnalyzeStack."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from rules.istio import is_authorization_policy, is_peer_authentication
from rules.kit import MANDATORY, Rules, StackResource, schema, string_list
from rules.kube_objects import (
    is_kind,
    is_workload,
    kind_of,
    labels_match,
    namespace_of,
    pod_metadata,
)
from rules.kubernetes import hpa_targets, object_key
from rules.nodepool import NODE_POOL, is_spot
from rules.values import UNKNOWN, as_dict, as_int, as_list, get, is_unknown

RULES = Rules("stack")
CLUSTER = "gcp:container/cluster:Cluster"
Finding = tuple[str | None, str]

_EXEMPT = {
    "exemptNamespaces": string_list(
        [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "istio-system",
            "gke-managed-system",
            "gmp-system",
            "gmp-public",
        ]
    )
}
_NAMESPACE_CONFIG = schema(_EXEMPT)
_MESH_CONFIG = schema(
    {**_EXEMPT, "meshRootNamespace": {"type": "string", "default": "istio-system"}}
)


def workload_namespaces(
    resources: list[StackResource], config: Mapping[str, Any]
) -> dict[str, StackResource]:
    """Each namespace that runs workloads → the first workload found there (where a finding
    is reported when the namespace itself is not declared in the stack)."""
    exempt = set(config["exemptNamespaces"])
    found: dict[str, StackResource] = {}
    for r in resources:
        if is_workload(r.type):
            namespace = namespace_of(r.props, r.provider_props)
            if isinstance(namespace, str) and namespace not in exempt:
                found.setdefault(namespace, r)
    return found


def declared_namespaces(resources: list[StackResource]) -> dict[Any, StackResource]:
    return {
        get(r.props, "metadata", "name"): r
        for r in resources
        if is_kind(r.type, "core", "Namespace")
    }


def _report_urn(namespace: str, first: StackResource, declared: dict[Any, StackResource]) -> str:
    return declared[namespace].urn if namespace in declared else first.urn


# Where a decisive field is unknown (preview), these rules assume the compliant reading: a
# stack rule never reports what it cannot know.


def _namespace_wide(r: StackResource) -> bool:
    selector = get(r.props, "spec", "selector")
    return (
        selector is None
        or is_unknown(selector)
        or (isinstance(selector, dict) and not as_dict(selector.get("matchLabels")))
    )


def _in(r: StackResource, namespace: str) -> bool:
    found = namespace_of(r.props, r.provider_props)
    return found == namespace or is_unknown(found)


@RULES.stack(
    "stack-namespace-mtls",
    level=MANDATORY,
    description=(
        "Every workload namespace has a namespace-wide STRICT PeerAuthentication, or a "
        "mesh-wide one exists."
    ),
    source="Istio security best practices, 'Mutual TLS'.",
    config=_MESH_CONFIG,
)
def mtls_per_namespace(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    root = config["meshRootNamespace"]
    strict = [
        r
        for r in resources
        if is_peer_authentication(r.type)
        and _namespace_wide(r)
        and get(r.props, "spec", "mtls", "mode") in ("STRICT", UNKNOWN)
    ]
    if any(_in(r, root) for r in strict):
        return  # a mesh-wide STRICT policy covers every namespace
    declared = declared_namespaces(resources)
    for namespace, first in sorted(workload_namespaces(resources, config).items()):
        if not any(_in(r, namespace) for r in strict):
            yield (
                _report_urn(namespace, first, declared),
                (
                    f"namespace {namespace} has no namespace-wide STRICT PeerAuthentication "
                    f"and there is no mesh-wide one in {root}"
                ),
            )


def _is_default_deny(r: StackResource) -> bool:
    if not is_authorization_policy(r.type) or not _namespace_wide(r):
        return False
    spec = get(r.props, "spec", default={})
    action, rules = get(spec, "action", default="ALLOW"), get(spec, "rules", default=[])
    if is_unknown(spec) or is_unknown(action) or is_unknown(rules):
        return True
    rules = as_list(rules)
    if action == "ALLOW" and not rules:
        return True  # allow-nothing: every request that no other ALLOW matches is denied
    return action == "DENY" and any(rule == {} for rule in rules)  # deny-all


@RULES.stack(
    "stack-namespace-default-deny",
    level=MANDATORY,
    description=(
        "Every workload namespace (or the mesh root) has a default-deny AuthorizationPolicy."
    ),
    source=("Istio security best practices, 'Safer authorization policy patterns: default-deny'."),
    config=_MESH_CONFIG,
)
def default_deny_per_namespace(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    root = config["meshRootNamespace"]
    denies = [r for r in resources if _is_default_deny(r)]
    if any(_in(r, root) for r in denies):
        return
    declared = declared_namespaces(resources)
    for namespace, first in sorted(workload_namespaces(resources, config).items()):
        if not any(_in(r, namespace) for r in denies):
            yield (
                _report_urn(namespace, first, declared),
                (
                    f"namespace {namespace} has no default-deny AuthorizationPolicy (allow-nothing: spec {{}})"
                ),
            )


def _selects_all(policy: StackResource) -> bool:
    selector = get(policy.props, "spec", "podSelector")
    if is_unknown(selector):
        return True
    return not get(selector, "matchLabels") and not get(selector, "matchExpressions")


@RULES.stack(
    "stack-namespace-network-policy",
    level=MANDATORY,
    description="Every workload namespace has a NetworkPolicy selecting all of its pods.",
    source="CIS Kubernetes 5.3.2; kube-score pod-networkpolicy; Checkov CKV2_K8S_6.",
    config=_NAMESPACE_CONFIG,
)
def network_policy_per_namespace(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    covering = [
        r
        for r in resources
        if is_kind(r.type, "networking.k8s.io", "NetworkPolicy") and _selects_all(r)
    ]
    declared = declared_namespaces(resources)
    for namespace, first in sorted(workload_namespaces(resources, config).items()):
        if not any(_in(r, namespace) for r in covering):
            yield (
                _report_urn(namespace, first, declared),
                (
                    f"namespace {namespace} has no NetworkPolicy selecting all its pods (podSelector: {{}})"
                ),
            )


@RULES.stack(
    "stack-namespace-sidecar-injection",
    level=MANDATORY,
    description="Every workload namespace is declared with Istio sidecar injection enabled.",
    source="Istio docs, 'Automatic sidecar injection'.",
    config=_NAMESPACE_CONFIG,
)
def sidecar_injection_per_namespace(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    declared = declared_namespaces(resources)
    for namespace, first in sorted(workload_namespaces(resources, config).items()):
        if namespace not in declared:
            yield (
                first.urn,
                f"namespace {namespace} is not declared in the stack, so its sidecar injection is unmanaged",
            )
            continue
        labels = get(declared[namespace].props, "metadata", "labels")
        if is_unknown(labels) or any(map(is_unknown, as_dict(labels).values())):
            continue
        labels = as_dict(labels)
        if labels.get("istio-injection") != "enabled" and not labels.get("istio.io/rev"):
            yield (
                declared[namespace].urn,
                (
                    f"namespace {namespace} lacks the label istio-injection=enabled (or istio.io/rev)"
                ),
            )


def _replicas(r: StackResource, hpas: dict[tuple[Any, str, Any], dict[str, Any]]) -> int | None:
    hpa = hpas.get(object_key(r))
    if hpa is not None:
        return as_int(get(hpa, "minReplicas", default=1))
    replicas = get(r.props, "spec", "replicas", default=1)
    return None if is_unknown(replicas) else as_int(replicas)


@RULES.stack(
    "stack-deployment-pdb",
    level=MANDATORY,
    description=(
        "Every multi-replica Deployment or StatefulSet has a PodDisruptionBudget that "
        "still lets a pod be evicted."
    ),
    source=("kube-score deployment-has-poddisruptionbudget; Polaris missingPodDisruptionBudget."),
)
def pdb_per_deployment(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    hpas = hpa_targets(resources)
    pdbs = [r for r in resources if is_kind(r.type, "policy", "PodDisruptionBudget")]
    for r in resources:
        if not (is_kind(r.type, "apps", "Deployment") or is_kind(r.type, "apps", "StatefulSet")):
            continue
        replicas = _replicas(r, hpas)
        if replicas is None or replicas < 2:
            continue
        namespace = namespace_of(r.props, r.provider_props)
        labels = as_dict(get(pod_metadata(r.type, r.props), "labels"))
        matching = [
            p
            for p in pdbs
            if namespace_of(p.props, p.provider_props) == namespace
            and get(p.props, "spec", "selector") is not None
            and (
                is_unknown(get(p.props, "spec", "selector"))
                or labels_match(get(p.props, "spec", "selector"), labels)
            )
        ]
        name = get(r.props, "metadata", "name", default=r.name)
        if not matching:
            yield (
                r.urn,
                f"{kind_of(r.type)} {name} runs {replicas} replicas without a PodDisruptionBudget",
            )
            continue
        for pdb in matching:
            min_available = as_int(get(pdb.props, "spec", "minAvailable"))
            if min_available is not None and min_available >= replicas:
                yield (
                    pdb.urn,
                    (
                        f"minAvailable {min_available} >= the {replicas} replicas of {name}: no pod can ever be evicted"
                    ),
                )


def _owns(pool: StackResource, cluster: StackResource) -> bool:
    if cluster.urn in pool.dependencies:
        return True
    reference = get(pool.props, "cluster")
    name = get(cluster.props, "name", default=cluster.name)
    if isinstance(reference, str) and reference in (cluster.urn, name, cluster.name):
        return True
    if isinstance(reference, str) and reference.endswith(f"/clusters/{name}"):
        return True
    return is_unknown(reference) and pool.parent is not None and pool.parent == cluster.parent


@RULES.stack(
    "stack-cluster-system-pool",
    level=MANDATORY,
    description="Every Standard GKE cluster keeps a non-spot node pool for system pods.",
    source="GKE docs, 'Spot VMs: best practices'.",
)
def system_pool_per_cluster(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    pools = [r for r in resources if r.type == NODE_POOL]
    for cluster in resources:
        if cluster.type != CLUSTER or get(cluster.props, "enableAutopilot") is True:
            continue
        inline = [p for p in as_list(get(cluster.props, "nodePools")) if isinstance(p, dict)]
        keeps_default = not inline and get(cluster.props, "removeDefaultNodePool") is not True
        declared = inline + (
            [{"nodeConfig": get(cluster.props, "nodeConfig")}] if keeps_default else []
        )
        configs = [as_dict(get(p, "nodeConfig")) for p in declared]
        configs += [as_dict(get(p.props, "nodeConfig")) for p in pools if _owns(p, cluster)]
        if not any(not is_spot(config) for config in configs):
            yield (
                cluster.urn,
                (
                    f"cluster {cluster.name} has no non-spot node pool for system pods "
                    f"({len(configs)} pool(s) found, all spot)"
                ),
            )
