"""Kubernetes apply rules through the real pack: a golden cluster (CMEK boot disks, a provider
that tracks its cluster through the membership's uid, a namespace every object waits for, an
HPA that owns its workload's replicas, volumes on a CMEK StorageClass) and one change per
violation."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.policies.cases import (
    DELETE,
    K8S_PROVIDER,
    UNKNOWN,
    StackCase,
    assert_stack_case,
    mutate,
    resource,
)
from tests.policies.cases import (
    stack_case as case,
)
from tools.analyzer import AnalyzerResource, PolicyPackProcess

LEVELS = {
    "apply-namespace-order": "mandatory",
    "apply-hpa-owns-replicas": "mandatory",
    "apply-k8s-provider-tracks-cluster": "mandatory",
    "apply-cmek-storage-class": "mandatory",
}

PROJECT = "signal-test"
KEY = f"projects/{PROJECT}/locations/us-central1/keyRings/ring/cryptoKeys/disks"
GKE = "gcp:container/cluster:Cluster"
POOL = "gcp:container/nodePool:NodePool"
MEMBERSHIP = "gcp:gkehub/membership:Membership"
NAMESPACE = "kubernetes:core/v1:Namespace"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
STORAGE_CLASS = "kubernetes:storage.k8s.io/v1:StorageClass"
HELM = "kubernetes:helm.sh/v3:Release"
COMPONENT = "signal:test:Apps"

CLUSTER = resource(
    GKE,
    {"name": "c1", "location": "us-central1", "project": PROJECT},
    "cluster",
    delete_before_replace=True,
)
NODES = resource(
    POOL,
    {"name": "system", "cluster": UNKNOWN, "nodeConfig": {"bootDiskKmsKey": KEY}},
    "system",
    dependencies=[CLUSTER.urn],
    delete_before_replace=True,
)
FLEET = resource(
    MEMBERSHIP,
    {"membershipId": "c1", "location": "us-central1"},
    "membership",
    dependencies=[CLUSTER.urn],
    delete_before_replace=True,
)


def provider(name: str, inputs: dict[str, Any], **deps: Any) -> AnalyzerResource:
    return resource(K8S_PROVIDER, inputs, name, **deps)


# The membership's uid: Google assigns a new one to every membership it creates.
PROVIDER = dataclasses.replace(
    provider(
        "k8s",
        {"kubeconfig": "apiVersion: v1", "clusterIdentifier": UNKNOWN},
        dependencies=[FLEET.urn, NODES.urn],
    ),
    property_dependencies={"clusterIdentifier": (FLEET.urn,)},
)
ON = f"{PROVIDER.urn}::provider-id"
# A second cluster, built elsewhere: its provider names no cluster of the stack.
OTHER_PROVIDER = provider("other", {"kubeconfig": "apiVersion: v1"})
ON_OTHER = f"{OTHER_PROVIDER.urn}::provider-id"

NS = resource(NAMESPACE, {"metadata": {"name": "apps"}}, "ns", provider=ON)
IN_NS = [NS.urn]
# Objects of one component wait for the namespace through it.
APPS = resource(COMPONENT, {}, "apps", dependencies=IN_NS)
WEB = {
    "metadata": {"name": "web", "namespace": "apps"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "gcr.io/p/web:1"}]},
        },
    },
}
SPOOL = {
    "metadata": {"name": "spool", "namespace": "apps"},
    "spec": {
        "serviceName": "spool",
        "selector": {"matchLabels": {"app": "spool"}},
        "template": {
            "metadata": {"labels": {"app": "spool"}},
            "spec": {"containers": [{"name": "spool", "image": "gcr.io/p/spool:1"}]},
        },
        "volumeClaimTemplates": [
            {"metadata": {"name": "data"}, "spec": {"storageClassName": "cmek-balanced"}}
        ],
    },
}
HPA_INPUTS = {
    "metadata": {"name": "web", "namespace": "apps"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 2,
        "maxReplicas": 6,
    },
}
CLAIM = {
    "metadata": {"name": "cache", "namespace": "apps"},
    "spec": {"storageClassName": "cmek-balanced"},
}
CLASS = {
    "metadata": {"name": "cmek-balanced"},
    "provisioner": "pd.csi.storage.gke.io",
    "parameters": {"type": "pd-balanced", "disk-encryption-kms-key": KEY},
}


def golden(**replace: AnalyzerResource | None) -> tuple[AnalyzerResource, ...]:
    parts: dict[str, AnalyzerResource | None] = {
        "cluster": CLUSTER,
        "nodes": NODES,
        "fleet": FLEET,
        "provider": PROVIDER,
        "other-provider": OTHER_PROVIDER,
        "ns": NS,
        "apps": APPS,
        "web": resource(DEPLOYMENT, WEB, "web", provider=ON, parent=APPS.urn),
        "hpa": resource(HPA, HPA_INPUTS, "web-hpa", provider=ON, dependencies=IN_NS),
        "spool": resource(STATEFULSET, SPOOL, "spool", provider=ON, dependencies=IN_NS),
        "claim": resource(PVC, CLAIM, "cache", provider=ON, dependencies=IN_NS),
        "class": resource(STORAGE_CLASS, CLASS, "cmek-balanced", provider=ON),
        "istiod": resource(
            HELM, {"chart": "istiod", "namespace": "istio-system"}, "istiod", provider=ON
        ),
    }
    parts.update(replace)
    return tuple(r for r in parts.values() if r is not None)


def web(changes: dict[Any, Any], **kw: Any) -> AnalyzerResource:
    return resource(DEPLOYMENT, mutate(WEB, changes), "web", provider=ON, parent=APPS.urn, **kw)


def with_identifier(value: Any, source: str | None = FLEET.urn) -> AnalyzerResource:
    inputs = {"kubeconfig": "apiVersion: v1", "clusterIdentifier": value}
    found = provider("k8s", inputs, dependencies=[FLEET.urn, NODES.urn])
    sources = {"clusterIdentifier": (source,)} if source else {}
    return dataclasses.replace(found, property_dependencies=sources)


WEB_URN = resource(DEPLOYMENT, WEB, "web").urn
SPOOL_URN = resource(STATEFULSET, SPOOL, "spool").urn

STACK_CASES = [
    *[case(policy, "golden", golden()) for policy in LEVELS],
    # ---- apply-namespace-order
    case(
        "apply-namespace-order",
        "object-does-not-wait",
        golden(claim=resource(PVC, CLAIM, "cache", provider=ON)),
        1,
        urns=(resource(PVC, CLAIM, "cache").urn,),
        message="lands in namespace apps without waiting for ns",
    ),
    case(
        "apply-namespace-order",
        "parent-does-not-wait",
        golden(apps=resource(COMPONENT, {}, "apps")),
        1,
        urns=(WEB_URN,),
    ),
    case(
        "apply-namespace-order",
        "helm-release-does-not-wait",
        golden(
            istiod=resource(HELM, {"chart": "istiod", "namespace": "apps"}, "istiod", provider=ON)
        ),
        1,
    ),
    case(
        "apply-namespace-order",
        "helm-release-creates-its-namespace",
        golden(
            istiod=resource(
                HELM,
                {"chart": "istiod", "namespace": "apps", "createNamespace": True},
                "istiod",
                provider=ON,
            )
        ),
    ),
    case(
        "apply-namespace-order",
        "same-namespace-on-another-cluster",
        golden(claim=resource(PVC, CLAIM, "cache", provider=ON_OTHER)),
    ),
    case(
        "apply-namespace-order",
        "namespace-known-after-the-update",
        golden(
            claim=resource(
                PVC, mutate(CLAIM, {"metadata.namespace": UNKNOWN}), "cache", provider=ON
            )
        ),
    ),
    # ---- apply-hpa-owns-replicas
    case(
        "apply-hpa-owns-replicas",
        "deployment-sets-replicas",
        golden(web=web({"spec.replicas": 3})),
        1,
        urns=(WEB_URN,),
        message="sets spec.replicas (3) although HorizontalPodAutoscaler web-hpa scales it",
    ),
    case(
        "apply-hpa-owns-replicas",
        "replicas-known-after-the-update",
        golden(web=web({"spec.replicas": UNKNOWN})),
        1,
    ),
    case(
        "apply-hpa-owns-replicas",
        "statefulset-sets-replicas",
        golden(
            spool=resource(
                STATEFULSET,
                mutate(SPOOL, {"spec.replicas": 2}),
                "spool",
                provider=ON,
                dependencies=IN_NS,
            ),
            hpa=resource(
                HPA,
                mutate(
                    HPA_INPUTS, {"spec.scaleTargetRef": {"kind": "StatefulSet", "name": "spool"}}
                ),
                "web-hpa",
                provider=ON,
                dependencies=IN_NS,
            ),
        ),
        1,
        urns=(SPOOL_URN,),
    ),
    case(
        "apply-hpa-owns-replicas",
        "no-hpa-targets-it",
        golden(web=web({"spec.replicas": 3}), hpa=None),
    ),
    case(
        "apply-hpa-owns-replicas",
        "hpa-in-another-namespace",
        golden(
            web=web({"spec.replicas": 3}),
            hpa=resource(
                HPA, mutate(HPA_INPUTS, {"metadata.namespace": "batch"}), "web-hpa", provider=ON
            ),
        ),
    ),
    case(
        "apply-hpa-owns-replicas",
        "hpa-on-another-cluster",
        golden(
            web=web({"spec.replicas": 3}),
            hpa=resource(HPA, HPA_INPUTS, "web-hpa", provider=ON_OTHER),
        ),
    ),
    # ---- apply-k8s-provider-tracks-cluster
    case(
        "apply-k8s-provider-tracks-cluster",
        "no-cluster-identifier",
        golden(
            provider=provider("k8s", {"kubeconfig": "apiVersion: v1"}, dependencies=[FLEET.urn])
        ),
        1,
        urns=(PROVIDER.urn,),
        message="sets no clusterIdentifier",
    ),
    case(
        "apply-k8s-provider-tracks-cluster",
        "identifier-from-elsewhere",
        golden(provider=with_identifier("fixed", source=None)),
        1,
        message="does not come from",
    ),
    case(
        "apply-k8s-provider-tracks-cluster",
        "identifier-is-the-cluster-id-path",
        golden(
            provider=with_identifier(
                f"projects/{PROJECT}/locations/us-central1/clusters/c1", CLUSTER.urn
            )
        ),
        1,
        message="is made of the cluster's own inputs",
    ),
    case(
        "apply-k8s-provider-tracks-cluster",
        "identifier-is-the-membership-id",
        golden(provider=with_identifier("c1")),
        1,
    ),
    case(
        "apply-k8s-provider-tracks-cluster",
        "identifier-is-a-uid-known-from-state",
        golden(provider=with_identifier("2f6a1c3e-9b7d-4e2a-8c1f-5d3b7a9e1c20")),
    ),
    case(
        "apply-k8s-provider-tracks-cluster",
        "provider-of-a-cluster-from-elsewhere",
        golden(provider=provider("k8s", {"kubeconfig": "apiVersion: v1"})),
    ),
    # ---- apply-cmek-storage-class
    case(
        "apply-cmek-storage-class",
        "claim-on-the-default-class",
        golden(
            claim=resource(
                PVC, mutate(CLAIM, {"spec.storageClassName": DELETE}), "cache", provider=ON
            )
        ),
        1,
        message="sets no storageClassName",
    ),
    case(
        "apply-cmek-storage-class",
        "template-on-a-built-in-class",
        golden(
            spool=resource(
                STATEFULSET,
                mutate(
                    SPOOL, {"spec.volumeClaimTemplates.0.spec.storageClassName": "standard-rwo"}
                ),
                "spool",
                provider=ON,
                dependencies=IN_NS,
            )
        ),
        1,
        urns=(SPOOL_URN,),
        message="uses StorageClass 'standard-rwo', which is not a StorageClass the stack declares",
    ),
    case(
        "apply-cmek-storage-class",
        "class-without-a-key",
        golden(
            **{
                "class": resource(
                    STORAGE_CLASS,
                    mutate(CLASS, {"parameters.disk-encryption-kms-key": DELETE}),
                    "cmek-balanced",
                    provider=ON,
                )
            }
        ),
        2,
    ),
    case(
        "apply-cmek-storage-class",
        "ephemeral-volume",
        golden(
            web=web(
                {
                    "spec.template.spec.volumes": [
                        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}
                    ]
                }
            )
        ),
        1,
        urns=(WEB_URN,),
        message="ephemeral volume 'scratch'",
    ),
    case(
        "apply-cmek-storage-class",
        "class-on-another-cluster",
        golden(**{"class": resource(STORAGE_CLASS, CLASS, "cmek-balanced", provider=ON_OTHER)}),
        2,
    ),
    case(
        "apply-cmek-storage-class",
        "nodes-without-cmek",
        golden(
            nodes=resource(
                POOL, {"name": "system", "cluster": UNKNOWN}, "system", dependencies=[CLUSTER.urn]
            ),
            claim=resource(
                PVC, mutate(CLAIM, {"spec.storageClassName": DELETE}), "cache", provider=ON
            ),
        ),
    ),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda c: c.id)
def test_kube_apply_rule(pack: PolicyPackProcess, case: StackCase) -> None:
    assert_stack_case(pack, case, LEVELS)


def test_the_golden_cluster_applies_and_applies_again(pack: PolicyPackProcess) -> None:
    analysis = pack.analyze_all(golden())
    assert [v for v in analysis.violations if v.policy in LEVELS] == []
