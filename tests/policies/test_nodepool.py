"""Node pool rules through the real pack: a golden system pool, a golden spot GPU pool, mutations."""

from __future__ import annotations

import pytest

from tests.policies.cases import COST_LABELS, DELETE, UNKNOWN, Case, assert_case, bad, mutate, ok
from tests.policies.test_gke import GOLDEN as CLUSTER_GOLDEN
from tools.analyzer import PolicyPackProcess

POOL = "gcp:container/nodePool:NodePool"
KEY = "projects/p/locations/us-central1/keyRings/gke/cryptoKeys/boot"

LEVELS = {
    "nodepool-auto-repair": "mandatory",
    "nodepool-auto-upgrade": "mandatory",
    "nodepool-dedicated-service-account": "mandatory",
    "nodepool-gke-metadata": "mandatory",
    "nodepool-cos-containerd": "mandatory",
    "nodepool-shielded-boot": "mandatory",
    "nodepool-spot-taint": "mandatory",
    "nodepool-gpu-scale-from-zero": "mandatory",
    "nodepool-gpu-max-nodes": "mandatory",
    "nodepool-gpu-allowed-types": "mandatory",
    "nodepool-gpu-drivers": "mandatory",
    "nodepool-boot-disk-cmek": "mandatory",
}

SYSTEM = {
    "cluster": "test-us-central1",
    "location": "us-central1",
    "nodeLocations": ["us-central1-a", "us-central1-b"],
    "autoscaling": {"minNodeCount": 1, "maxNodeCount": 3},
    "management": {"autoRepair": True, "autoUpgrade": True},
    "nodeConfig": {
        "machineType": "e2-standard-4",
        "imageType": "COS_CONTAINERD",
        "serviceAccount": "gke-nodes@signal-test.iam.gserviceaccount.com",
        "oauthScopes": ["https://www.googleapis.com/auth/cloud-platform"],
        "workloadMetadataConfig": {"mode": "GKE_METADATA"},
        "shieldedInstanceConfig": {"enableSecureBoot": True, "enableIntegrityMonitoring": True},
        "bootDiskKmsKey": KEY,
        "resourceLabels": COST_LABELS,
    },
}

GPU = mutate(
    SYSTEM,
    {
        "autoscaling": {"minNodeCount": 0, "maxNodeCount": 2},
        "nodeConfig.machineType": "g2-standard-8",
        "nodeConfig.spot": True,
        "nodeConfig.guestAccelerators": [
            {
                "type": "nvidia-l4",
                "count": 1,
                "gpuDriverInstallationConfig": {"gpuDriverVersion": "LATEST"},
            }
        ],
        "nodeConfig.taints": [
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"},
            {"key": "cloud.google.com/gke-spot", "value": "true", "effect": "NO_SCHEDULE"},
        ],
    },
)


def s(policy: str, label: str, changes: dict, expect: int = 1, **kw: object) -> Case:
    return bad(policy, POOL, mutate(SYSTEM, changes), label, expect, **kw)


def gpu(policy: str, label: str, changes: dict, expect: int = 1, **kw: object) -> Case:
    return bad(policy, POOL, mutate(GPU, changes), label, expect, **kw)


CASES = [
    ok("nodepool-auto-repair", POOL, SYSTEM),
    ok("nodepool-auto-repair", POOL, mutate(SYSTEM, {"management": DELETE}), "default-on"),
    s("nodepool-auto-repair", "off", {"management.autoRepair": False}),
    ok("nodepool-auto-upgrade", POOL, SYSTEM),
    s("nodepool-auto-upgrade", "off", {"management.autoUpgrade": False}),
    ok("nodepool-dedicated-service-account", POOL, SYSTEM),
    ok(
        "nodepool-dedicated-service-account",
        POOL,
        mutate(SYSTEM, {"nodeConfig.serviceAccount": UNKNOWN}),
        "output-of-created-account",
    ),
    s("nodepool-dedicated-service-account", "absent", {"nodeConfig.serviceAccount": DELETE}),
    s(
        "nodepool-dedicated-service-account",
        "compute-default",
        {"nodeConfig.serviceAccount": "123456789-compute@developer.gserviceaccount.com"},
        message="Compute Engine default",
    ),
    s(
        "nodepool-dedicated-service-account",
        "literal-default",
        {"nodeConfig.serviceAccount": "default"},
    ),
    ok("nodepool-gke-metadata", POOL, SYSTEM),
    s(
        "nodepool-gke-metadata",
        "gce-metadata",
        {"nodeConfig.workloadMetadataConfig.mode": "GCE_METADATA"},
    ),
    s("nodepool-gke-metadata", "absent", {"nodeConfig.workloadMetadataConfig": DELETE}),
    ok("nodepool-cos-containerd", POOL, SYSTEM),
    ok(
        "nodepool-cos-containerd",
        POOL,
        mutate(SYSTEM, {"nodeConfig.imageType": DELETE}),
        "gke-default",
    ),
    s("nodepool-cos-containerd", "ubuntu", {"nodeConfig.imageType": "UBUNTU_CONTAINERD"}),
    ok("nodepool-shielded-boot", POOL, SYSTEM),
    s("nodepool-shielded-boot", "no-secure-boot", {"nodeConfig.shieldedInstanceConfig": DELETE}),
    s(
        "nodepool-shielded-boot",
        "no-integrity",
        {"nodeConfig.shieldedInstanceConfig.enableIntegrityMonitoring": False},
    ),
    ok("nodepool-spot-taint", POOL, GPU, "spot-gpu"),
    ok("nodepool-spot-taint", POOL, SYSTEM, "on-demand"),
    gpu("nodepool-spot-taint", "untainted", {"nodeConfig.taints": DELETE}),
    gpu(
        "nodepool-spot-taint",
        "prefer-no-schedule",
        {
            "nodeConfig.taints": [
                {
                    "key": "cloud.google.com/gke-spot",
                    "value": "true",
                    "effect": "PREFER_NO_SCHEDULE",
                }
            ]
        },
    ),
    s(
        "nodepool-spot-taint",
        "preemptible-untainted",
        {"nodeConfig.preemptible": True},
    ),
    ok("nodepool-gpu-scale-from-zero", POOL, GPU, "spot-gpu"),
    ok("nodepool-gpu-scale-from-zero", POOL, SYSTEM, "not-gpu"),
    gpu("nodepool-gpu-scale-from-zero", "min-one", {"autoscaling.minNodeCount": 1}),
    gpu(
        "nodepool-gpu-scale-from-zero",
        "fixed-size",
        {"autoscaling": DELETE, "nodeCount": 2},
        also=frozenset({"nodepool-gpu-max-nodes"}),
    ),
    ok("nodepool-gpu-max-nodes", POOL, GPU, "spot-gpu"),
    gpu(
        "nodepool-gpu-max-nodes",
        "too-many-per-zone",
        {"autoscaling.maxNodeCount": 5},
        message="can grow to 10 nodes",
    ),
    gpu(
        "nodepool-gpu-max-nodes",
        "configured-limit",
        {"autoscaling.totalMaxNodeCount": 3, "autoscaling.maxNodeCount": DELETE},
        config={"nodepool-gpu-max-nodes": {"maxGpuNodes": 2}},
        message="limit is 2",
    ),
    gpu("nodepool-gpu-max-nodes", "unbounded", {"autoscaling.maxNodeCount": DELETE}),
    ok("nodepool-gpu-allowed-types", POOL, GPU, "l4"),
    gpu(
        "nodepool-gpu-allowed-types",
        "h100",
        {
            "nodeConfig.machineType": "a3-highgpu-8g",
            "nodeConfig.guestAccelerators.0.type": "nvidia-h100-80gb",
        },
        expect=2,
    ),
    ok(
        "nodepool-gpu-allowed-types",
        POOL,
        mutate(
            GPU,
            {
                "nodeConfig.machineType": "a3-highgpu-8g",
                "nodeConfig.guestAccelerators.0.type": "nvidia-h100-80gb",
            },
        ),
        "configured-h100",
        config={
            "nodepool-gpu-allowed-types": {
                "allowedMachineTypes": ["a3-highgpu-*"],
                "allowedAcceleratorTypes": ["nvidia-h100-80gb"],
            }
        },
    ),
    ok("nodepool-gpu-drivers", POOL, GPU),
    gpu(
        "nodepool-gpu-drivers",
        "disabled",
        {
            (
                "nodeConfig",
                "guestAccelerators",
                0,
                "gpuDriverInstallationConfig",
                "gpuDriverVersion",
            ): "INSTALLATION_DISABLED"
        },
    ),
    gpu(
        "nodepool-gpu-drivers",
        "no-accelerator-block",
        {"nodeConfig.guestAccelerators": DELETE},
    ),
    ok("nodepool-boot-disk-cmek", POOL, SYSTEM),
    s("nodepool-boot-disk-cmek", "google-managed", {"nodeConfig.bootDiskKmsKey": DELETE}),
]


# A cluster's own pools are judged by the same rules: its inline nodePools, or its default pool
# (the cluster's nodeConfig) while it keeps one.
CLUSTER = "gcp:container/cluster:Cluster"
INLINE_POOL = {k: v for k, v in SYSTEM.items() if k not in ("cluster", "location")}
WITH_INLINE_POOLS = mutate(
    CLUSTER_GOLDEN, {"removeDefaultNodePool": DELETE, "nodePools": [INLINE_POOL, GPU]}
)
DEFAULT_POOL = mutate(
    CLUSTER_GOLDEN, {"removeDefaultNodePool": False, "nodeConfig": SYSTEM["nodeConfig"]}
)
BARE_DEFAULT_POOL = mutate(CLUSTER_GOLDEN, {"removeDefaultNodePool": DELETE})


def c(policy: str, label: str, inputs: dict, expect: int = 1, **kw: object) -> Case:
    return bad(policy, CLUSTER, inputs, label, expect, **kw)


CLUSTER_CASES = [
    ok("nodepool-dedicated-service-account", CLUSTER, CLUSTER_GOLDEN, "default-pool-removed"),
    ok("nodepool-gke-metadata", CLUSTER, WITH_INLINE_POOLS, "inline-pools"),
    ok("nodepool-shielded-boot", CLUSTER, DEFAULT_POOL, "hardened-default-pool"),
    ok(
        "nodepool-boot-disk-cmek",
        CLUSTER,
        mutate(BARE_DEFAULT_POOL, {"enableAutopilot": True}),
        "autopilot-has-no-pools",
    ),
    c(
        "nodepool-dedicated-service-account",
        "bare-default-pool-runs-as-compute-default",
        BARE_DEFAULT_POOL,
        message="default node pool: nodeConfig.serviceAccount must name a dedicated",
        also=frozenset(
            {"nodepool-gke-metadata", "nodepool-shielded-boot", "nodepool-boot-disk-cmek"}
        ),
    ),
    c(
        "nodepool-gke-metadata",
        "default-pool-without-gke-metadata",
        mutate(DEFAULT_POOL, {"nodeConfig.workloadMetadataConfig": DELETE}),
    ),
    c(
        "nodepool-shielded-boot",
        "default-pool-without-secure-boot",
        mutate(DEFAULT_POOL, {"nodeConfig.shieldedInstanceConfig.enableSecureBoot": False}),
    ),
    c(
        "nodepool-boot-disk-cmek",
        "default-pool-without-cmek",
        mutate(DEFAULT_POOL, {"nodeConfig.bootDiskKmsKey": DELETE}),
    ),
    c(
        "nodepool-auto-repair",
        "inline-pool-without-repair",
        mutate(WITH_INLINE_POOLS, {"nodePools.1.management.autoRepair": False}),
        message="nodePools[1]: management.autoRepair is false",
    ),
    c(
        "nodepool-spot-taint",
        "inline-spot-pool-without-taint",
        mutate(WITH_INLINE_POOLS, {"nodePools.1.nodeConfig.taints": []}),
    ),
    c(
        "nodepool-gpu-max-nodes",
        "inline-gpu-pool-too-large",
        mutate(WITH_INLINE_POOLS, {"nodePools.1.autoscaling.maxNodeCount": 20}),
        message="nodePools[1]: GPU pool can grow to 40 nodes",
    ),
    c(
        "nodepool-dedicated-service-account",
        "two-inline-pools-on-the-compute-default",
        mutate(
            WITH_INLINE_POOLS,
            {
                "nodePools.0.nodeConfig.serviceAccount": "123-compute@developer.gserviceaccount.com",
                "nodePools.1.nodeConfig.serviceAccount": "default",
            },
        ),
        expect=2,
    ),
]


CASES += CLUSTER_CASES


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_node_pool_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)
