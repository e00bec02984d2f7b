"""Stack rules through AnalyzeStack: a golden stack (one workload namespace fully meshed, a
cluster with a system pool and a spot GPU pool) and one change per violation."""

from __future__ import annotations

from typing import Any

import pytest

from tests.policies.cases import DELETE, UNKNOWN, StackCase, assert_stack_case, mutate, resource
from tests.policies.test_gke import GOLDEN as CLUSTER_INPUTS
from tests.policies.test_istio import STRICT
from tests.policies.test_kubernetes import BUDGET
from tests.policies.test_kubernetes import GOLDEN as DEPLOYMENT_INPUTS
from tests.policies.test_nodepool import GPU as GPU_POOL_INPUTS
from tests.policies.test_nodepool import SYSTEM as SYSTEM_POOL_INPUTS
from tools.analyzer import AnalyzerResource, PolicyPackProcess

STACK = "pulumi:pulumi:Stack"
COMPONENT = "signal:infra:Region"
NAMESPACE = "kubernetes:core/v1:Namespace"
PEER = "kubernetes:security.istio.io/v1:PeerAuthentication"
AUTHZ = "kubernetes:security.istio.io/v1:AuthorizationPolicy"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
CLUSTER = "gcp:container/cluster:Cluster"
POOL = "gcp:container/nodePool:NodePool"

LEVELS = {
    "stack-namespace-mtls": "mandatory",
    "stack-namespace-default-deny": "mandatory",
    "stack-namespace-network-policy": "mandatory",
    "stack-namespace-sidecar-injection": "mandatory",
    "stack-deployment-pdb": "mandatory",
    "stack-cluster-system-pool": "mandatory",
}

ROOT = resource(STACK, {}, "signal-platform-test")
REGION = resource(COMPONENT, {}, "us-central1", parent=ROOT.urn)
NAMESPACE_INPUTS = {"metadata": {"name": "signal", "labels": {"istio-injection": "enabled"}}}
MESH_STRICT = mutate(STRICT, {"metadata.namespace": "istio-system"})
ALLOW_NOTHING = {"metadata": {"name": "allow-nothing", "namespace": "signal"}, "spec": {}}
DEFAULT_DENY_NETPOL = {
    "metadata": {"name": "default-deny", "namespace": "signal"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
}
# A compliant workload in an exempt system namespace: the namespace rules must ignore it.
NODE_AGENT = mutate(
    DEPLOYMENT_INPUTS,
    {
        "kind": "DaemonSet",
        "metadata": {"name": "node-agent", "namespace": "kube-system"},
        "spec.replicas": DELETE,
    },
)
# Named, so replaced delete-first (apply-fixed-name-replace), as are the named node pools.
CLUSTER_RESOURCE = resource(
    CLUSTER, CLUSTER_INPUTS, "cluster", parent=REGION.urn, delete_before_replace=True
)


IN_NAMESPACE = (resource(NAMESPACE, NAMESPACE_INPUTS, "signal-ns").urn,)


def golden(**replace: AnalyzerResource | None) -> tuple[AnalyzerResource, ...]:
    """The golden stack; `replace` swaps (or with None drops) one resource by its key."""
    parts: dict[str, AnalyzerResource | None] = {
        "root": ROOT,
        "region": REGION,
        "namespace": resource(NAMESPACE, NAMESPACE_INPUTS, "signal-ns"),
        "mesh": resource(PEER, MESH_STRICT, "mesh-strict"),
        # Objects in namespace signal wait for it (apply-namespace-order).
        "deny": resource(AUTHZ, ALLOW_NOTHING, "allow-nothing", dependencies=IN_NAMESPACE),
        "netpol": resource(NETPOL, DEFAULT_DENY_NETPOL, "default-deny", dependencies=IN_NAMESPACE),
        "deployment": resource(DEPLOYMENT, DEPLOYMENT_INPUTS, "signal", dependencies=IN_NAMESPACE),
        "pdb": resource(PDB, BUDGET, "signal-pdb", dependencies=IN_NAMESPACE),
        "agent": resource(DAEMONSET, NODE_AGENT, "node-agent"),
        "cluster": CLUSTER_RESOURCE,
        "system": resource(
            POOL,
            mutate(SYSTEM_POOL_INPUTS, {"cluster": UNKNOWN}),
            "system",
            parent=REGION.urn,
            dependencies=[CLUSTER_RESOURCE.urn],
            delete_before_replace=True,
        ),
        "gpu": resource(
            POOL,
            mutate(GPU_POOL_INPUTS, {"cluster": UNKNOWN}),
            "gpu-l4",
            parent=REGION.urn,
            dependencies=[CLUSTER_RESOURCE.urn],
            delete_before_replace=True,
        ),
    }
    parts.update(replace)
    return tuple(r for r in parts.values() if r is not None)


def case(policy: str, label: str, resources: tuple, expect: int = 0, **kw: Any) -> StackCase:
    return StackCase(policy, resources, expect, label, **kw)


NAMESPACE_URN = resource(NAMESPACE, NAMESPACE_INPUTS, "signal-ns").urn
DEPLOYMENT_URN = resource(DEPLOYMENT, DEPLOYMENT_INPUTS, "signal").urn
BATCH_WORKER = resource(
    DEPLOYMENT, mutate(DEPLOYMENT_INPUTS, {"metadata.namespace": "batch"}), "worker"
)
SPOT_ONLY_POOL = resource(
    POOL,
    mutate(SYSTEM_POOL_INPUTS, {"nodeConfig.spot": True}),
    "system",
    dependencies=[CLUSTER_RESOURCE.urn],
)

STACK_CASES = [
    *[case(policy, "golden", golden()) for policy in LEVELS],
    # During preview the deciding field may be unknown: the rule must not report it.
    case(
        "stack-namespace-mtls",
        "unknown-mode",
        golden(
            mesh=resource(PEER, mutate(MESH_STRICT, {"spec.mtls.mode": UNKNOWN}), "mesh-strict")
        ),
    ),
    case(
        "stack-namespace-default-deny",
        "unknown-spec",
        golden(deny=resource(AUTHZ, mutate(ALLOW_NOTHING, {"spec": UNKNOWN}), "allow-nothing")),
    ),
    case(
        "stack-namespace-network-policy",
        "unknown-selector",
        golden(
            netpol=resource(
                NETPOL, mutate(DEFAULT_DENY_NETPOL, {"spec.podSelector": UNKNOWN}), "default-deny"
            )
        ),
    ),
    case(
        "stack-namespace-sidecar-injection",
        "unknown-labels",
        golden(
            namespace=resource(
                NAMESPACE, {"metadata": {"name": "signal", "labels": UNKNOWN}}, "signal-ns"
            )
        ),
    ),
    case(
        "stack-deployment-pdb",
        "unknown-selector",
        golden(pdb=resource(PDB, mutate(BUDGET, {"spec.selector": UNKNOWN}), "signal-pdb")),
    ),
    case(
        "stack-cluster-system-pool",
        "unknown-spot",
        golden(
            system=resource(
                POOL,
                mutate(SYSTEM_POOL_INPUTS, {"nodeConfig.spot": UNKNOWN}),
                "system",
                dependencies=[CLUSTER_RESOURCE.urn],
            )
        ),
    ),
    case(
        "stack-namespace-mtls",
        "namespace-level",
        golden(mesh=resource(PEER, STRICT, "signal-strict")),
    ),
    case(
        "stack-namespace-mtls",
        "mesh-permissive",
        golden(mesh=resource(PEER, mutate(MESH_STRICT, {"spec.mtls.mode": "PERMISSIVE"}), "mesh")),
        1,
        urns=(NAMESPACE_URN,),
        message="namespace signal has no namespace-wide STRICT PeerAuthentication",
    ),
    case(
        "stack-namespace-mtls",
        "workload-scoped-only",
        golden(
            mesh=resource(
                PEER,
                mutate(STRICT, {"spec.selector": {"matchLabels": {"app": "signal"}}}),
                "scoped",
            )
        ),
        1,
    ),
    case(
        "stack-namespace-mtls",
        "second-namespace-uncovered",
        golden(mesh=resource(PEER, STRICT, "signal-strict"), worker=BATCH_WORKER),
        1,
        urns=(BATCH_WORKER.urn,),
    ),
    case(
        "stack-namespace-default-deny",
        "deny-all",
        golden(
            deny=resource(
                AUTHZ,
                mutate(ALLOW_NOTHING, {"spec": {"action": "DENY", "rules": [{}]}}),
                "deny-all",
            )
        ),
    ),
    case(
        "stack-namespace-default-deny",
        "mesh-wide",
        golden(
            deny=resource(
                AUTHZ, mutate(ALLOW_NOTHING, {"metadata.namespace": "istio-system"}), "mesh"
            )
        ),
    ),
    case("stack-namespace-default-deny", "missing", golden(deny=None), 1, urns=(NAMESPACE_URN,)),
    case(
        "stack-namespace-default-deny",
        "allow-with-rules-is-not-deny",
        golden(
            deny=resource(
                AUTHZ,
                mutate(
                    ALLOW_NOTHING,
                    {"spec": {"rules": [{"from": [{"source": {"namespaces": ["signal"]}}]}]}},
                ),
                "allow",
            )
        ),
        1,
    ),
    case(
        "stack-namespace-network-policy", "missing", golden(netpol=None), 1, urns=(NAMESPACE_URN,)
    ),
    case(
        "stack-namespace-network-policy",
        "scoped-only",
        golden(
            netpol=resource(
                NETPOL,
                mutate(
                    DEFAULT_DENY_NETPOL, {"spec.podSelector": {"matchLabels": {"app": "signal"}}}
                ),
                "np",
            )
        ),
        1,
    ),
    case(
        "stack-namespace-sidecar-injection",
        "revision-label",
        golden(
            namespace=resource(
                NAMESPACE,
                {"metadata": {"name": "signal", "labels": {"istio.io/rev": "asm-managed"}}},
                "signal-ns",
            )
        ),
    ),
    case(
        "stack-namespace-sidecar-injection",
        "unlabelled",
        golden(namespace=resource(NAMESPACE, {"metadata": {"name": "signal"}}, "signal-ns")),
        1,
        urns=(NAMESPACE_URN,),
    ),
    case(
        "stack-namespace-sidecar-injection",
        "undeclared",
        golden(namespace=None),
        1,
        urns=(DEPLOYMENT_URN,),
        message="not declared in the stack",
    ),
    case("stack-deployment-pdb", "missing", golden(pdb=None), 1, urns=(DEPLOYMENT_URN,)),
    case(
        "stack-deployment-pdb",
        "selects-other-pods",
        golden(
            pdb=resource(
                PDB, mutate(BUDGET, {"spec.selector.matchLabels": {"app": "other"}}), "pdb"
            )
        ),
        1,
    ),
    case(
        "stack-deployment-pdb",
        "blocks-eviction",
        golden(
            pdb=resource(
                PDB,
                mutate(BUDGET, {"spec.maxUnavailable": DELETE, "spec.minAvailable": 2}),
                "signal-pdb",
            )
        ),
        1,
        urns=(resource(PDB, BUDGET, "signal-pdb").urn,),
        message="no pod can ever be evicted",
    ),
    case(
        "stack-deployment-pdb",
        "single-replica-needs-none",
        golden(
            deployment=resource(
                DEPLOYMENT, mutate(DEPLOYMENT_INPUTS, {"spec.replicas": 1}), "signal"
            ),
            pdb=None,
        ),
    ),
    case(
        "stack-deployment-pdb",
        "hpa-scaled",
        golden(
            deployment=resource(
                DEPLOYMENT, mutate(DEPLOYMENT_INPUTS, {"spec.replicas": DELETE}), "signal"
            ),
            pdb=None,
            hpa=resource(
                HPA,
                {
                    "metadata": {"name": "signal", "namespace": "signal"},
                    "spec": {
                        "scaleTargetRef": {"kind": "Deployment", "name": "signal"},
                        "minReplicas": 3,
                        "maxReplicas": 12,
                    },
                },
                "signal-hpa",
            ),
        ),
        1,
        message="runs 3 replicas",
    ),
    case(
        "stack-cluster-system-pool",
        "matched-by-name",
        golden(system=resource(POOL, SYSTEM_POOL_INPUTS, "system")),
    ),
    case(
        "stack-cluster-system-pool",
        "default-pool-kept",
        golden(
            cluster=resource(
                CLUSTER, mutate(CLUSTER_INPUTS, {"removeDefaultNodePool": DELETE}), "cluster"
            ),
            system=None,
            gpu=None,
        ),
    ),
    case(
        "stack-cluster-system-pool",
        "autopilot",
        golden(
            cluster=resource(CLUSTER, {"name": "ap", "enableAutopilot": True}, "cluster"),
            system=None,
            gpu=None,
        ),
    ),
    case(
        "stack-cluster-system-pool",
        "spot-only",
        golden(system=SPOT_ONLY_POOL),
        1,
        urns=(CLUSTER_RESOURCE.urn,),
        message="2 pool(s) found, all spot",
    ),
    case(
        "stack-cluster-system-pool",
        "inline-on-demand-pool",
        golden(
            cluster=resource(
                CLUSTER,
                mutate(
                    CLUSTER_INPUTS,
                    {
                        "removeDefaultNodePool": DELETE,
                        "nodePools": [
                            {"name": "system", "nodeConfig": {"machineType": "e2-standard-4"}}
                        ],
                    },
                ),
                "cluster",
            ),
            system=None,
            gpu=None,
        ),
    ),
    case(
        "stack-cluster-system-pool",
        "inline-pools-all-spot",
        golden(
            cluster=resource(
                CLUSTER,
                mutate(
                    CLUSTER_INPUTS,
                    {
                        "removeDefaultNodePool": DELETE,
                        "nodePools": [{"name": "cheap", "nodeConfig": {"spot": True}}],
                    },
                ),
                "cluster",
            ),
            system=None,
            gpu=None,
        ),
        1,
        message="1 pool(s) found, all spot",
    ),
    case(
        "stack-cluster-system-pool",
        "other-clusters-pool",
        golden(
            system=resource(
                POOL,
                mutate(SYSTEM_POOL_INPUTS, {"cluster": "prod-europe-west4"}),
                "system",
                parent="urn:other",
            )
        ),
        1,
    ),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda c: c.id)
def test_stack_rule(pack: PolicyPackProcess, case: StackCase) -> None:
    assert_stack_case(pack, case, LEVELS)


def test_golden_stack_passes_every_rule(pack: PolicyPackProcess) -> None:
    """The golden stack is clean for every rule of the pack, resource and stack alike."""
    analysis = pack.analyze_all(golden())
    assert analysis.violations == []
