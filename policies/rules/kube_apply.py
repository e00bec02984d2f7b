"""Kubernetes objects a `pulumi up` can apply, and apply again: each waits for its Namespace,
leaves to an HPA the replicas it owns, lands on the cluster its provider names even after that
cluster is replaced, and keeps its volumes under the customer-managed key the nodes use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from rules.kit import MANDATORY, Rules, StackResource, schema, string_list
from rules.kube_objects import kind_of, kube_type, namespace_of, pod_spec
from rules.stack_graph import (
    CLUSTER,
    HELM_RELEASE,
    MEMBERSHIP,
    Finding,
    Graph,
    KubeObjects,
    is_namespaced,
    must_wait,
    short,
)
from rules.values import as_int, as_list, get, is_unknown

RULES = Rules("apply-order")

K8S_PROVIDER = "pulumi:providers:kubernetes"
NODE_POOL = "gcp:container/nodePool:NodePool"
KMS_PARAMETER = "disk-encryption-kms-key"
SCALE_TARGETS = {"Deployment", "StatefulSet", "ReplicaSet"}
# Path words of Google resource names: with the inputs, all a name is made of.
_PATH_WORDS = {"projects", "locations", "zones", "regions", "clusters", "memberships", "global"}


@RULES.stack(
    "apply-namespace-order",
    level=MANDATORY,
    description="A namespaced object (or Helm release) whose Namespace the stack declares on the "
    "same provider waits for it, directly or through an ancestor: created first, it is refused "
    "with 'namespaces not found'.",
    source="Kubernetes docs, 'Namespaces' (objects are created in an existing namespace); "
    "Pulumi docs, 'Resource options: dependsOn'.",
)
def namespace_order(resources: list[StackResource], config: Mapping[str, Any]) -> Iterator[Finding]:
    graph = Graph(resources)
    objects = KubeObjects(resources)
    for r in resources:
        if r.type == HELM_RELEASE:
            if get(r.props, "createNamespace") is True:
                continue
            namespace = get(r.props, "namespace", default=get(r.provider_props, "namespace"))
        elif is_namespaced(r) and kind_of(r.type) != "Namespace":
            namespace = namespace_of(r.props, r.provider_props)
        else:
            continue
        if not isinstance(namespace, str):
            continue
        namespaces = [
            n
            for n in objects.of_kind("core", "Namespace", r.provider_urn)
            if get(n.props, "metadata", "name") == namespace
        ]
        yield from must_wait(graph, r, namespaces, f"lands in namespace {namespace}", None)


@RULES.stack(
    "apply-hpa-owns-replicas",
    level=MANDATORY,
    description="A Deployment, StatefulSet or ReplicaSet an HPA scales (scaleTargetRef kind, name "
    "and the HPA's namespace, same provider) leaves spec.replicas unset: once the HPA has scaled "
    "it, the controller owns the field and the next server-side apply conflicts with it.",
    source="pulumi/pulumi-kubernetes#2491 (Apply failed with 1 conflict: conflict with "
    '"kube-controller-manager" with subresource "scale": .spec.replicas); Kubernetes docs, '
    "'Horizontal Pod Autoscaling: migrating Deployments and StatefulSets to horizontal "
    "autoscaling' (remove spec.replicas).",
)
def hpa_owns_replicas(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    objects = KubeObjects(resources)
    for hpa in objects.objects:
        if kind_of(hpa.type) != "HorizontalPodAutoscaler":
            continue
        target = get(hpa.props, "spec", "scaleTargetRef")
        kind, name = get(target, "kind"), get(target, "name")
        if kind not in SCALE_TARGETS:
            continue
        namespace = namespace_of(hpa.props, hpa.provider_props)
        for workload in objects.named("apps", kind, hpa.provider_urn, namespace, name):
            replicas = get(workload.props, "spec", "replicas")
            if replicas is not None:
                shown = (
                    "a value known after the update" if is_unknown(replicas) else as_int(replicas)
                )
                yield (
                    workload.urn,
                    f"sets spec.replicas ({shown}) although HorizontalPodAutoscaler "
                    f"{short(hpa.urn)} scales it: leave replicas unset (the HPA's minReplicas is "
                    "the floor)",
                )


# ------------------------------------------------------------------------------ the provider


def _echo(value: str, clusters: list[StackResource], provider_project: Any) -> bool:
    """Whether `value` is made only of the clusters' own inputs (their names, locations,
    project): then it is the same for the cluster that replaces them."""
    words = {str(provider_project)}
    for cluster in clusters:
        words |= {str(v) for v in cluster.props.values() if isinstance(v, str)}
        project = get(cluster.props, "project", default=get(cluster.provider_props, "project"))
        words.add(str(project))
    return all(part in words or part in _PATH_WORDS for part in value.strip("/").split("/"))


@RULES.stack(
    "apply-k8s-provider-tracks-cluster",
    level=MANDATORY,
    description="A Kubernetes provider built from a cluster the stack declares sets "
    "clusterIdentifier from an output of that cluster (or its fleet membership) that changes "
    "when the cluster is replaced (the membership's uid, the cluster's CA certificate), so a "
    "new cluster replaces the provider and every object on it; an identifier made of the "
    "cluster's own inputs (its name, its id path) stays the same, and the objects stay in the "
    "state but not in the new cluster.",
    source="pulumi-kubernetes Provider docs, clusterIdentifier (the provider is replaced only "
    "when it changes); pulumi/pulumi-kubernetes#2745 (the kubeconfig does not tell a cluster "
    "change); pulumi/pulumi#2047 (a replaced cluster updated its provider: objects not found).",
    config=schema(
        {
            "clusterTypes": string_list(
                [CLUSTER, MEMBERSHIP], "resource types a Kubernetes provider is built from"
            )
        }
    ),
)
def provider_tracks_cluster(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    graph = Graph(resources)
    types = [str(t) for t in config["clusterTypes"]]
    for provider in graph.of_type(K8S_PROVIDER):
        clusters = graph.clusters_of(provider.urn, types)
        if not clusters:
            continue  # built from a cluster outside the stack
        identifier = get(provider.props, "clusterIdentifier")
        names = ", ".join(short(c.urn) for c in clusters)
        if identifier is None:
            yield (
                provider.urn,
                f"is built from {names} but sets no clusterIdentifier: a replaced cluster does "
                "not replace the provider, and its objects are never created in the new cluster; "
                "set clusterIdentifier from the membership's uid or the cluster's CA certificate",
            )
            continue
        sources = set(provider.property_dependencies.get("clusterIdentifier", ()))
        if not sources & {c.urn for c in clusters}:
            yield (
                provider.urn,
                f"clusterIdentifier does not come from {names}: it does not change when the "
                "cluster is replaced",
            )
        elif isinstance(identifier, str) and _echo(
            identifier, clusters, get(provider.provider_props, "project")
        ):
            yield (
                provider.urn,
                f"clusterIdentifier {identifier!r} is made of the cluster's own inputs: the "
                "cluster that replaces it has the same one; use an output Google assigns to each "
                "cluster (the membership's uid, the cluster's CA certificate)",
            )


# ------------------------------------------------------------------------------ CMEK volumes


def _cmek_clusters(graph: Graph) -> list[StackResource]:
    """Clusters whose nodes boot from CMEK disks (the cluster's own node config, or a node pool
    of it)."""
    found = []
    for cluster in graph.of_type(CLUSTER):
        keys = [get(cluster.props, "nodeConfig", "bootDiskKmsKey")]
        keys += [
            get(p, "nodeConfig", "bootDiskKmsKey") for p in as_list(get(cluster.props, "nodePools"))
        ]
        keys += [
            get(pool.props, "nodeConfig", "bootDiskKmsKey")
            for pool in graph.of_type(NODE_POOL)
            if cluster.urn in graph.waits_for(pool)
        ]
        if any(k is not None and k != "" for k in keys):
            found.append(cluster)
    return found


def _claims(r: StackResource) -> Iterator[tuple[str, Any]]:
    """(where, storageClassName) of every volume claim `r` makes."""
    kind = kind_of(r.type)
    if kind == "PersistentVolumeClaim":
        yield "spec.storageClassName", get(r.props, "spec", "storageClassName")
        return
    if kind == "StatefulSet":
        for i, template in enumerate(as_list(get(r.props, "spec", "volumeClaimTemplates"))):
            yield (
                f"spec.volumeClaimTemplates[{i}] ({get(template, 'metadata', 'name')})",
                get(template, "spec", "storageClassName"),
            )
    for volume in as_list(get(pod_spec(r.type, r.props), "volumes")):
        template = get(volume, "ephemeral", "volumeClaimTemplate")
        if template is not None:
            yield (
                f"ephemeral volume {get(volume, 'name')!r}",
                get(template, "spec", "storageClassName"),
            )


@RULES.stack(
    "apply-cmek-storage-class",
    level=MANDATORY,
    description="On a cluster whose node boot disks use a customer-managed key, every volume "
    "claim (PersistentVolumeClaim, StatefulSet volumeClaimTemplates, ephemeral volumes) names a "
    "StorageClass declared on the same provider with parameters.disk-encryption-kms-key: GKE's "
    "built-in classes and the default class create Google-encrypted disks.",
    source="CIS GKE 5.9.1 (CMEK for node boot and dynamically provisioned disks); GKE docs, "
    "'Use customer-managed encryption keys (CMEK)': a StorageClass with "
    "disk-encryption-kms-key for the Compute Engine persistent disk CSI driver.",
)
def cmek_storage_class(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    graph = Graph(resources)
    cmek = {c.urn for c in _cmek_clusters(graph)}
    if not cmek:
        return
    objects = KubeObjects(resources)
    for r in objects.objects:
        if kube_type(r.type) is None:
            continue
        on = graph.clusters_of(r.provider_urn, [CLUSTER])
        if on and not any(c.urn in cmek for c in on):
            continue  # a cluster without CMEK disks
        classes = objects.of_kind("storage.k8s.io", "StorageClass", r.provider_urn)
        for where, name in _claims(r):
            if is_unknown(name):
                continue
            if name is None or name == "":
                yield (
                    r.urn,
                    f"{where} sets no storageClassName: the cluster's default class creates "
                    f"Google-encrypted disks, while its nodes use a customer-managed key; name a "
                    f"StorageClass with parameters.{KMS_PARAMETER}",
                )
                continue
            declared = [c for c in classes if get(c.props, "metadata", "name") == name]
            keyed = [
                c for c in declared if get(c.props, "parameters", KMS_PARAMETER) not in (None, "")
            ]
            if not keyed:
                what = (
                    "declares no" if declared else "is not a StorageClass the stack declares with a"
                )
                yield (
                    r.urn,
                    f"{where} uses StorageClass {name!r}, which {what} parameters.{KMS_PARAMETER}: "
                    "its disks are Google-encrypted, while the cluster's nodes use a "
                    "customer-managed key",
                )
