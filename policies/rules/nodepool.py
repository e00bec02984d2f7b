"""GKE node pool rules: hardening, spot and GPU capacity, for every pool a stack declares: each
gcp:container/nodePool:NodePool, and a cluster's inline `nodePools` or, while it keeps one, its
default pool (the cluster's own `nodeConfig`)."""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from pulumi_policy import PolicyConfigSchema

from rules.kit import (
    MANDATORY,
    NotApplicable,
    Resource,
    ResourceRule,
    Rules,
    schema,
    string_list,
)
from rules.values import UNKNOWN, as_int, as_list, get, is_unknown, shown

NODE_POOL = "gcp:container/nodePool:NodePool"
CLUSTER = "gcp:container/cluster:Cluster"
POOL_HOLDERS = frozenset({NODE_POOL, CLUSTER})
RULES = Rules("nodepool")
SPOT_TAINT_KEYS = ("cloud.google.com/gke-spot", "cloud.google.com/gke-preemptible")
# Machine families whose VMs always carry GPUs.
_GPU_FAMILIES = ("a2-", "a3-", "a4-", "g2-", "g4-")
_DEFAULT_COMPUTE_SA = re.compile(r"^\d+-compute@developer\.gserviceaccount\.com$")


_GPU_CONFIG = schema(
    {
        "maxGpuNodes": {"type": "integer", "minimum": 0, "default": 8},
        "allowedMachineTypes": string_list(
            ["g2-standard-*", "a2-highgpu-*", "n1-standard-*"],
            "fnmatch patterns of GPU machine types",
        ),
        "allowedAcceleratorTypes": string_list(
            ["nvidia-l4", "nvidia-tesla-t4", "nvidia-tesla-a100"]
        ),
    }
)


def _gpu_schema(*keys: str) -> PolicyConfigSchema:
    return schema({k: v for k, v in _GPU_CONFIG.properties.items() if k in keys})


def pools(r: Resource) -> Iterator[tuple[str, Resource]]:
    """(where, pool) for each node pool `r` declares, the pool as a NodePool's inputs: a NodePool
    itself; a cluster's inline nodePools; or, when it has none and keeps its default pool, that
    pool (the cluster's nodeConfig and node locations). Autopilot clusters manage their own."""
    if r.type == NODE_POOL:
        yield "", r
        return
    autopilot = get(r.props, "enableAutopilot")
    if autopilot is True or is_unknown(autopilot):
        return
    inline = get(r.props, "nodePools")
    if is_unknown(inline):
        return
    if as_list(inline):
        for index, pool in enumerate(as_list(inline)):
            if isinstance(pool, dict):
                yield f"nodePools[{index}]: ", replace(r, props=pool)
        return
    removed = get(r.props, "removeDefaultNodePool")
    if removed is True or is_unknown(removed):
        return
    default_pool = {
        "nodeConfig": get(r.props, "nodeConfig", default={}),
        "nodeLocations": get(r.props, "nodeLocations", default=[]),
        "initialNodeCount": get(r.props, "initialNodeCount", default=1),
    }
    yield "default node pool: ", replace(r, props=default_pool)


def per_pool(rule: ResourceRule) -> ResourceRule:
    """Run a rule written for one pool over every pool a resource declares, each message
    prefixed by where the pool is; not applicable when it applies to none of them."""

    @functools.wraps(rule)
    def each(r: Resource) -> Iterator[str]:
        reasons, applied = [], False
        for where, pool in pools(r):
            try:
                messages = list(rule(pool))
            except NotApplicable as exc:
                reasons.append(exc.reason)
                continue
            applied = True
            yield from (f"{where}{message}" for message in messages)
        if not applied:
            raise NotApplicable("; ".join(sorted(set(reasons))) or "declares no node pool")

    return each


def node_config(r: Resource) -> Any:
    """The pool's nodeConfig: {} when absent, UNKNOWN when unknown (reads through it stay so)."""
    return get(r.props, "nodeConfig", default={})


def is_spot(config: Any) -> bool:
    return get(config, "spot") is True or get(config, "preemptible") is True


def is_gpu_pool(config: Any) -> bool:
    machine = get(config, "machineType")
    accelerators = [a for a in as_list(get(config, "guestAccelerators")) if isinstance(a, dict)]
    return bool(accelerators) or (isinstance(machine, str) and machine.startswith(_GPU_FAMILIES))


def _gpu_only(r: Resource) -> Any:
    config = node_config(r)
    if not is_gpu_pool(config):
        raise NotApplicable("not a GPU node pool")
    return config


@RULES.resource(
    "nodepool-auto-repair",
    level=MANDATORY,
    description="Node auto-repair is on.",
    source="CIS GKE 5.5.2; Checkov CKV_GCP_9.",
    types=POOL_HOLDERS,
)
@per_pool
def auto_repair(r: Resource) -> Iterator[str]:
    if get(r.props, "management", "autoRepair") is False:
        yield "management.autoRepair is false"


@RULES.resource(
    "nodepool-auto-upgrade",
    level=MANDATORY,
    description="Node auto-upgrade is on.",
    source="CIS GKE 5.5.3; Checkov CKV_GCP_10.",
    types=POOL_HOLDERS,
)
@per_pool
def auto_upgrade(r: Resource) -> Iterator[str]:
    if get(r.props, "management", "autoUpgrade") is False:
        yield "management.autoUpgrade is false"


@RULES.resource(
    "nodepool-dedicated-service-account",
    level=MANDATORY,
    description="Nodes run as a dedicated service account, never the Compute Engine default.",
    source="CIS GKE 5.2.1.",
    types=POOL_HOLDERS,
)
@per_pool
def dedicated_service_account(r: Resource) -> Iterator[str]:
    account = get(node_config(r), "serviceAccount")
    if is_unknown(account):
        return  # an output of a service account created in this stack: dedicated by construction
    if not isinstance(account, str) or account in ("", "default"):
        yield "nodeConfig.serviceAccount must name a dedicated least-privilege service account"
    elif _DEFAULT_COMPUTE_SA.match(account):
        yield f"nodeConfig.serviceAccount is the Compute Engine default service account ({account})"


@RULES.resource(
    "nodepool-gke-metadata",
    level=MANDATORY,
    description=(
        "The GKE metadata server shields node credentials (workloadMetadataConfig GKE_METADATA)."
    ),
    source="CIS GKE 5.4.2; Checkov CKV_GCP_69.",
    types=POOL_HOLDERS,
)
@per_pool
def gke_metadata(r: Resource) -> Iterator[str]:
    mode = get(node_config(r), "workloadMetadataConfig", "mode")
    if not is_unknown(mode) and mode != "GKE_METADATA":
        yield f"nodeConfig.workloadMetadataConfig.mode must be GKE_METADATA (got {shown(mode)})"


@RULES.resource(
    "nodepool-cos-containerd",
    level=MANDATORY,
    description="Nodes run Container-Optimized OS with containerd.",
    source="CIS GKE 5.5.1; Checkov CKV_GCP_22.",
    types=POOL_HOLDERS,
)
@per_pool
def cos_containerd(r: Resource) -> Iterator[str]:
    image = get(node_config(r), "imageType")
    if isinstance(image, str) and image.upper() != "COS_CONTAINERD":
        yield f"nodeConfig.imageType is {image!r}; use COS_CONTAINERD"


@RULES.resource(
    "nodepool-shielded-boot",
    level=MANDATORY,
    description="Shielded nodes use Secure Boot and integrity monitoring.",
    source="CIS GKE 5.5.6 and 5.5.7; Checkov CKV_GCP_68, CKV_GCP_72.",
    types=POOL_HOLDERS,
)
@per_pool
def shielded_boot(r: Resource) -> Iterator[str]:
    shielded = get(node_config(r), "shieldedInstanceConfig")
    secure_boot = get(shielded, "enableSecureBoot")
    if secure_boot is not True and not is_unknown(secure_boot):
        yield "nodeConfig.shieldedInstanceConfig.enableSecureBoot must be true"
    if get(shielded, "enableIntegrityMonitoring") is False:
        yield "nodeConfig.shieldedInstanceConfig.enableIntegrityMonitoring is false"


@RULES.resource(
    "nodepool-spot-taint",
    level=MANDATORY,
    description=(
        "Spot and preemptible pools carry the cloud.google.com/gke-spot NoSchedule taint."
    ),
    source="GKE docs, 'Spot VMs: taints and tolerations'.",
    types=POOL_HOLDERS,
)
@per_pool
def spot_taint(r: Resource) -> Iterator[str]:
    config = node_config(r)
    if not is_spot(config):
        raise NotApplicable("not a spot or preemptible node pool")
    taints = get(config, "taints")
    if is_unknown(taints) or any(
        is_unknown(get(t, "key")) or is_unknown(get(t, "effect")) for t in as_list(taints)
    ):
        return
    for taint in as_list(taints):
        if get(taint, "key") in SPOT_TAINT_KEYS and get(taint, "effect") == "NO_SCHEDULE":
            return
    yield (
        "spot pools must carry the taint cloud.google.com/gke-spot=true:NO_SCHEDULE so only "
        "workloads that tolerate preemption land on them"
    )


@RULES.resource(
    "nodepool-gpu-scale-from-zero",
    level=MANDATORY,
    description="GPU pools autoscale from zero nodes.",
    source="GKE docs, 'Cluster autoscaler: scale GPU node pools to zero'.",
    types=POOL_HOLDERS,
)
@per_pool
def gpu_scale_from_zero(r: Resource) -> Iterator[str]:
    _gpu_only(r)
    scaling = get(r.props, "autoscaling")
    if is_unknown(scaling):
        return
    if not isinstance(scaling, dict):
        yield "GPU pools must autoscale (autoscaling with minNodeCount 0)"
        return
    minimum = get(scaling, "totalMinNodeCount", default=get(scaling, "minNodeCount"))
    if not is_unknown(minimum) and as_int(minimum) not in (0, None):
        yield f"GPU pools must scale from zero: minimum is {as_int(minimum)}"


def max_gpu_nodes(r: Resource) -> int | Any | None:
    """The most nodes the pool can reach: totalMaxNodeCount, or per-zone max times zones."""
    scaling = get(r.props, "autoscaling", default={})
    if is_unknown(scaling):
        return UNKNOWN
    total = get(scaling, "totalMaxNodeCount")
    if total is not None:
        return UNKNOWN if is_unknown(total) else as_int(total)
    per_zone = get(scaling, "maxNodeCount")
    if per_zone is None:
        count = get(r.props, "nodeCount", default=get(r.props, "initialNodeCount"))
        return UNKNOWN if is_unknown(count) else as_int(count)
    if is_unknown(per_zone):
        return UNKNOWN
    zones = get(r.props, "nodeLocations")
    if is_unknown(zones):
        return UNKNOWN
    per_zone_count = as_int(per_zone)
    return None if per_zone_count is None else per_zone_count * max(1, len(as_list(zones)))


@RULES.resource(
    "nodepool-gpu-max-nodes",
    level=MANDATORY,
    description="GPU pools cannot grow past the configured node limit.",
    source="GKE docs, 'GPU quota and autoscaling limits'.",
    types=POOL_HOLDERS,
    config=_gpu_schema("maxGpuNodes"),
)
@per_pool
def gpu_max_nodes(r: Resource) -> Iterator[str]:
    _gpu_only(r)
    limit = as_int(r.config["maxGpuNodes"])
    maximum = max_gpu_nodes(r)
    if is_unknown(maximum) or limit is None:
        return
    if maximum is None:
        yield "GPU pools must set autoscaling.maxNodeCount or totalMaxNodeCount"
    elif maximum > limit:
        yield f"GPU pool can grow to {maximum} nodes; the limit is {limit} (maxGpuNodes)"


def _matches(value: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


@RULES.resource(
    "nodepool-gpu-allowed-types",
    level=MANDATORY,
    description="GPU pools use an allowed machine type and accelerator type.",
    source="GKE docs, 'About GPUs in GKE'.",
    types=POOL_HOLDERS,
    config=_gpu_schema("allowedMachineTypes", "allowedAcceleratorTypes"),
)
@per_pool
def gpu_allowed_types(r: Resource) -> Iterator[str]:
    config = _gpu_only(r)
    machines = list(r.config["allowedMachineTypes"])
    accelerators = list(r.config["allowedAcceleratorTypes"])
    machine = get(config, "machineType")
    if isinstance(machine, str) and not _matches(machine, machines):
        yield f"machineType {machine!r} is not allowed for GPU pools; allowed: {', '.join(machines)}"
    for index, accelerator in enumerate(as_list(get(config, "guestAccelerators"))):
        kind = get(accelerator, "type")
        if isinstance(kind, str) and kind not in accelerators:
            yield (
                f"guestAccelerators[{index}].type {kind!r} is not allowed; "
                f"allowed: {', '.join(accelerators)}"
            )


@RULES.resource(
    "nodepool-gpu-drivers",
    level=MANDATORY,
    description=(
        "GPU pools let GKE install the NVIDIA drivers (gpuDriverVersion DEFAULT or LATEST)."
    ),
    source="GKE docs, 'Run GPUs in GKE Standard node pools'.",
    types=POOL_HOLDERS,
)
@per_pool
def gpu_drivers(r: Resource) -> Iterator[str]:
    config = _gpu_only(r)
    accelerators = get(config, "guestAccelerators")
    if is_unknown(accelerators):
        return
    if not as_list(accelerators):
        yield "declare nodeConfig.guestAccelerators with gpuDriverInstallationConfig so GKE installs drivers"
    for index, accelerator in enumerate(as_list(accelerators)):
        version = get(accelerator, "gpuDriverInstallationConfig", "gpuDriverVersion")
        if not is_unknown(version) and version not in ("DEFAULT", "LATEST"):
            yield (
                f"guestAccelerators[{index}].gpuDriverInstallationConfig.gpuDriverVersion must be "
                f"DEFAULT or LATEST (got {shown(version)})"
            )


@RULES.resource(
    "nodepool-boot-disk-cmek",
    level=MANDATORY,
    description="Node boot disks are encrypted with a customer-managed KMS key.",
    source="CIS GKE 5.9.1.",
    types=POOL_HOLDERS,
)
@per_pool
def boot_disk_cmek(r: Resource) -> Iterator[str]:
    key = get(node_config(r), "bootDiskKmsKey")
    if not key and not is_unknown(key):
        yield "nodeConfig.bootDiskKmsKey must name a Cloud KMS key"
