"""GKE: one Standard cluster per region, its node pools and the Kubernetes API on it.

Regional by default (control plane in three zones, nodes in `cluster.nodeZones` of them);
zonal where the stack sets `cluster.zonal` (control plane and nodes in one zone: dev, whose
management fee GKE's free tier covers). The location is the zone or the region, and the node
pools live where their cluster does.

The Kubernetes API is reached through GKE's Connect Gateway, not the control plane's endpoint:
each cluster is registered to the project's fleet (`gcp.gkehub.Membership`) and the
`pulumi_kubernetes.Provider` talks to `connectgateway.googleapis.com`, authenticated by
`gke-gcloud-auth-plugin` as whoever runs `pulumi up`. Why the gateway rather than a
self-hosted CI runner inside the VPC: the control planes stay private (prod has no public
endpoint at all, dev accepts only 10.0.0.0/8), nothing extra runs or is patched in the VPC,
and CI keeps GitHub's hosted runners; access is IAM (`roles/gkehub.gatewayEditor`) plus the
cluster's own RBAC, both declared here per `cluster.deployers` (cluster-admin) and
`cluster.previewers` (`roles/gkehub.gatewayReader` and Kubernetes' read-only `view`).

Spot-first GPU capacity: GPU pools are spot unless configured otherwise, each with an
on-demand twin in prod (config rejects a spot pool without one). A GKE ComputeClass lists the
pools spot first, so the autoscaler adds spot nodes while Compute Engine has them and falls back
to on-demand when it does not; active migration moves pods back to spot when it returns. The
cluster's own Kubernetes objects (ComputeClass, PriorityClasses, the metrics adapter HPAs read
Cloud Monitoring through) and the per-cluster `pulumi_kubernetes.Provider` live here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from infra.config import ClusterSettings, GpuPool, NodePoolBase, NodePools, RegionConfig
from infra.identity import KeyRing, workload_pool
from infra.kube import api_object, k8s_labels, role_ref
from infra.settle import IAM_PROPAGATION, settle

# Node taints and labels the workloads select and tolerate.
GPU_TAINT: gcp.container.NodePoolNodeConfigTaintArgsDict = {
    "key": "nvidia.com/gpu",
    "value": "present",
    "effect": "NO_SCHEDULE",
}
SPOT_TAINT: gcp.container.NodePoolNodeConfigTaintArgsDict = {
    "key": "cloud.google.com/gke-spot",
    "value": "true",
    "effect": "NO_SCHEDULE",
}
COMPUTE_CLASS_KEY = "cloud.google.com/compute-class"
ACCELERATOR_KEY = "cloud.google.com/gke-accelerator"
POOL_LABEL = "signal-platform/pool"

INFERENCE_COMPUTE_CLASS = "gpu-inference"
INFERENCE_PRIORITY = "signal-inference"
BATCH_PRIORITY = "signal-batch"
PRIORITY_VALUES = {INFERENCE_PRIORITY: 100_000, BATCH_PRIORITY: 1_000}

# GKE's managed DCGM metrics (monitoringConfig.enableComponents DCGM): GPU utilisation in
# percent, per GPU, time-shared GPUs included (GKE docs, "Collect and view DCGM metrics").
GPU_UTILIZATION = "DCGM_FI_DEV_GPU_UTIL"
MONITORED_COMPONENTS = ("SYSTEM_COMPONENTS", "DEPLOYMENT", "HPA", "POD", "DCGM")

# The StorageClass of the pods' persistent disks: balanced PD with the region's disks key.
CMEK_STORAGE_CLASS = "signal-cmek-balanced"

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
LEGACY_METADATA_OFF = {"disable-legacy-endpoints": "true"}


@dataclass(frozen=True)
class ClusterNetwork:
    """Where a cluster lives: the VPC, its region's subnet and the subnet's secondary ranges."""

    network: pulumi.Input[str]
    subnet: pulumi.Input[str]
    pods_range: str
    services_range: str


def cluster_name(region: str) -> str:
    return f"signal-{region}"


def gateway_server(project_number: str, location: str, membership: str) -> str:
    """The Connect Gateway endpoint of a fleet membership: the cluster's Kubernetes API."""
    return (
        "https://connectgateway.googleapis.com/v1/projects/"
        f"{project_number}/locations/{location}/gkeMemberships/{membership}"
    )


def kubeconfig(name: str, server: str) -> str:
    """A kubeconfig for the Connect Gateway that authenticates with `gke-gcloud-auth-plugin`
    (no keys in state; the gateway serves Google's public certificate, so no CA is pinned)."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}
current-context: {name}
users:
- name: {name}
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: gke-gcloud-auth-plugin
      installHint: Install gke-gcloud-auth-plugin (gcloud components install gke-gcloud-auth-plugin)
      provideClusterInfo: true
      interactiveMode: Never
"""


def incarnation(cluster_id: str, endpoints: Any) -> str:
    """What tells one incarnation of a cluster from another of the same name: its DNS-based
    control-plane endpoint (`gke-<unique id>-<project number>.<location>.gke.goog`, on every
    cluster), else the cluster's id."""
    dns = getattr(endpoints, "dns_endpoint_config", None) if endpoints is not None else None
    endpoint = getattr(dns, "endpoint", None) if dns is not None else None
    return endpoint or cluster_id


def rbac_subject(member: str) -> dict[str, str]:
    """The RBAC subject GKE authenticates an IAM member as: users and service accounts by
    their email, groups (Google Groups for RBAC) as groups."""
    kind, email = member.split(":", 1)
    return {
        "kind": "Group" if kind == "group" else "User",
        "name": email,
        "apiGroup": "rbac.authorization.k8s.io",
    }


@dataclass(frozen=True)
class Fleet:
    """How a cluster joins the project's fleet and who reaches it through Connect Gateway."""

    project_number: pulumi.Input[str]
    # What the membership waits for: the fleet API and the hub's service agent.
    membership_ready: Sequence[pulumi.Resource]
    # What the gateway needs before the first Kubernetes call: its API and the deployers'
    # gateway roles.
    gateway_ready: Sequence[pulumi.Resource]
    deployers: Sequence[str]  # IAM members bound to cluster-admin
    previewers: Sequence[str] = ()  # IAM members bound to view (read-only)


def hardened_node_config(
    pool: NodePoolBase,
    *,
    service_account: pulumi.Input[str],
    disk_key: pulumi.Input[str],
    labels: Mapping[str, str],
    node_labels: Mapping[str, str],
    spot: bool = False,
    accelerators: Sequence[gcp.container.NodePoolNodeConfigGuestAcceleratorArgsDict] = (),
    taints: Sequence[gcp.container.NodePoolNodeConfigTaintArgsDict] = (),
) -> gcp.container.NodePoolNodeConfigArgsDict:
    """Every node: its own least-privilege account, COS with containerd, the GKE metadata
    server (node credentials hidden from pods), Shielded VM, a CMEK boot disk."""
    return {
        "machine_type": pool.machine_type,
        "disk_size_gb": pool.disk_size_gb,
        "disk_type": pool.disk_type,
        "service_account": service_account,
        "oauth_scopes": [CLOUD_PLATFORM],
        "image_type": "COS_CONTAINERD",
        "workload_metadata_config": {"mode": "GKE_METADATA"},
        "shielded_instance_config": {
            "enable_secure_boot": True,
            "enable_integrity_monitoring": True,
        },
        "boot_disk_kms_key": disk_key,
        "metadata": LEGACY_METADATA_OFF,
        "spot": spot,
        "guest_accelerators": list(accelerators),
        "taints": list(taints),
        "labels": dict(node_labels),
        "resource_labels": dict(labels),
    }


# What a deployer needs on the project to call the Kubernetes API through the gateway
# (Connect gateway docs, "Grant IAM roles to users"): read the memberships, and the gateway's
# read-write role; the cluster's RBAC then decides what it may do inside.
GATEWAY_ROLES = ("roles/gkehub.gatewayEditor", "roles/gkehub.viewer")
# A previewer (`pulumi preview` in CI) only reads: the gateway's read-only role (GET, LIST and
# WATCH pass, anything else is refused before the cluster sees it) and the memberships.
PREVIEW_GATEWAY_ROLES = ("roles/gkehub.gatewayReader", "roles/gkehub.viewer")


class GatewayAccess(pulumi.ComponentResource):
    """The deployers' and previewers' IAM on the project for Connect Gateway (their RBAC is
    per cluster)."""

    def __init__(
        self,
        name: str,
        project_id: str,
        deployers: Sequence[str],
        previewers: Sequence[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:GatewayAccess", name, None, opts)
        # One grant per (member, role): a member listed as both shares roles/gkehub.viewer.
        grants = dict.fromkeys(
            [(m, role) for m in deployers for role in GATEWAY_ROLES]
            + [(m, role) for m in previewers for role in PREVIEW_GATEWAY_ROLES]
        )
        self.grants = [
            gcp.projects.IAMMember(
                f"{name}-{_slug(member)}-{role.rsplit('.', 1)[-1].lower()}",
                project=project_id,
                role=role,
                member=member,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for member, role in grants
        ]
        # The Kubernetes provider waits for this: a deployer's first call through the gateway
        # is refused until its roles are in effect (the workflow identities' roles come from
        # the bootstrap, long before; anyone added later is granted here).
        self.settled = settle(f"{name}-settle", self.grants, IAM_PROPAGATION, parent=self)
        self.register_outputs({"deployers": list(deployers), "previewers": list(previewers)})


def _slug(member: str) -> str:
    """`serviceAccount:ci@p.iam.gserviceaccount.com` → `ci`: a resource-name part."""
    return re.sub(r"[^a-z0-9]+", "-", member.split(":", 1)[-1].split("@")[0].lower()).strip("-")


def spot_first(pools: Sequence[GpuPool]) -> list[GpuPool]:
    """The ComputeClass order: spot pools, then on-demand ones, each in config order."""
    return [p for p in pools if p.spot] + [p for p in pools if not p.spot]


class GkeCluster(pulumi.ComponentResource):
    """A private, hardened GKE Standard cluster (regional, or zonal) with its node pools."""

    def __init__(
        self,
        name: str,
        region: RegionConfig,
        project_id: str,
        network: ClusterNetwork,
        keys: KeyRing,
        node_accounts: Mapping[str, pulumi.Input[str]],
        gpu_zones: Mapping[str, Sequence[str]],
        fleet: Fleet,
        labels: Mapping[str, str],
        deletion_protection: bool,
        admission: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`keys`: the region's key ring; the cluster encrypts Kubernetes secrets with its
        `gke-secrets` key and every boot disk with its `disks` key, and waits for the grants
        that let GKE's and Compute Engine's agents use them. `admission`: what must be in
        force before the first Kubernetes object (the Binary Authorization policy)."""
        super().__init__("signal:infra:GkeCluster", name, None, opts)
        secrets_key = keys.keys["gke-secrets"].id
        disk_key = keys.keys["disks"].id
        # Node pools create boot disks with the disks key: Compute Engine's agent must hold it.
        disks_ready = keys.grants_for("disks")
        child = pulumi.ResourceOptions(parent=self, depends_on=disks_ready)
        # A node pool's name is fixed in its cluster, and much of its node config (machine
        # type, spot, GPU sharing and driver, boot disk key, service account) replaces it: the
        # new pool cannot be created beside the old one of the same name (409), so the old
        # one goes first. Its pods reschedule on the other pools meanwhile (PDBs hold).
        replaced_in_place = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(delete_before_replace=True)
        )
        settings: ClusterSettings = region.cluster
        pools: NodePools = region.node_pools
        zonal = settings.zonal
        # A zonal cluster's nodes run in its own zone: the provider wants node_locations to
        # name only *additional* zones there, so it is left out.
        zones = None if zonal else list(region.node_zones)
        self.name = cluster_name(region.name)
        self.region = region.name
        self.location = region.location  # the zone of a zonal cluster (GMP's `location` label)
        self.minor_version = settings.kubernetes_minor_version
        self.control_plane_cidr = region.network.master_cidr
        self.cluster = gcp.container.Cluster(
            f"{name}-gke",
            name=self.name,
            location=region.location,
            node_locations=zones,
            description=f"signal-platform compute in {region.location}",
            network=network.network,
            subnetwork=network.subnet,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy={
                "cluster_secondary_range_name": network.pods_range,
                "services_secondary_range_name": network.services_range,
                "stack_type": "IPV4",
            },
            # GKE needs a pool to create the cluster; it is removed at once, so it only has
            # to be as hardened as the real pools while it exists.
            remove_default_node_pool=True,
            initial_node_count=1,
            node_config={
                "machine_type": pools.system.machine_type,
                "service_account": node_accounts["system"],
                "image_type": "COS_CONTAINERD",
                "workload_metadata_config": {"mode": "GKE_METADATA"},
                "shielded_instance_config": {
                    "enable_secure_boot": True,
                    "enable_integrity_monitoring": True,
                },
                "boot_disk_kms_key": disk_key,
                "oauth_scopes": [CLOUD_PLATFORM],
                "metadata": LEGACY_METADATA_OFF,
                "resource_labels": dict(labels),
            },
            private_cluster_config={
                "enable_private_nodes": True,
                "enable_private_endpoint": settings.private_endpoint,
                "master_ipv4_cidr_block": region.network.master_cidr,
                "master_global_access_config": {"enabled": True},
            },
            master_authorized_networks_config={
                "cidr_blocks": [
                    {"cidr_block": n.cidr, "display_name": n.name}
                    for n in settings.master_authorized_networks
                ],
                "gcp_public_cidrs_access_enabled": False,
            },
            master_auth={"client_certificate_config": {"issue_client_certificate": False}},
            enable_legacy_abac=False,
            enable_kubernetes_alpha=False,
            workload_identity_config={"workload_pool": workload_pool(project_id)},
            release_channel={"channel": settings.release_channel},
            min_master_version=settings.kubernetes_minor_version,
            datapath_provider="ADVANCED_DATAPATH",  # Dataplane V2: eBPF NetworkPolicy
            enable_shielded_nodes=True,
            enable_intranode_visibility=True,
            binary_authorization={"evaluation_mode": "PROJECT_SINGLETON_POLICY_ENFORCE"},
            security_posture_config={
                "mode": settings.security_posture,
                "vulnerability_mode": settings.vulnerability_scanning,
            },
            database_encryption={"state": "ENCRYPTED", "key_name": secrets_key},
            logging_config={"enable_components": ["SYSTEM_COMPONENTS", "WORKLOADS"]},
            # DCGM: GKE's managed DCGM exporter, whose GPU metrics the Triton HPA and the GPU
            # alert read; it needs Managed Prometheus and GKE-installed GPU drivers.
            monitoring_config={
                "enable_components": list(MONITORED_COMPONENTS),
                "managed_prometheus": {"enabled": True},
            },
            addons_config={
                "gcs_fuse_csi_driver_config": {"enabled": True},
                "gce_persistent_disk_csi_driver_config": {"enabled": True},
                "horizontal_pod_autoscaling": {"disabled": False},
                "http_load_balancing": {"disabled": False},
            },
            # Bin-pack and remove idle nodes sooner: GPU nodes are the bill.
            cluster_autoscaling={"autoscaling_profile": "OPTIMIZE_UTILIZATION"},
            vertical_pod_autoscaling={"enabled": True},
            cost_management_config={"enabled": True},
            maintenance_policy={
                "recurring_window": {
                    "start_time": settings.maintenance.start_time,
                    "end_time": settings.maintenance.end_time,
                    "recurrence": settings.maintenance.recurrence,
                }
            },
            resource_labels=dict(labels),
            deletion_protection=deletion_protection,
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=deletion_protection,
                depends_on=[*keys.grants_for("gke-secrets"), *disks_ready],
                # The node pools below own the nodes: once GKE removes the default pool, the
                # cluster reports other node settings than `node_config`, and a diff on it
                # would replace the cluster (refused under `protect` in prod).
                ignore_changes=["nodeConfig", "nodePools"],
                # A replacement (a new location, say) cannot run beside the old cluster: both
                # would claim the same control-plane range (masterIpv4CidrBlock) in the VPC.
                delete_before_replace=True,
            ),
        )

        self.system_pool = gcp.container.NodePool(
            f"{name}-system",
            name="system",
            cluster=self.cluster.id,
            location=region.location,
            node_locations=zones,
            initial_node_count=pools.system.min_nodes,
            # Per zone of a regional cluster: the control plane's add-ons and istiod need
            # every zone.
            autoscaling={
                "min_node_count": pools.system.min_nodes,
                "max_node_count": pools.system.max_nodes,
                "location_policy": "BALANCED",
            },
            management={"auto_repair": True, "auto_upgrade": True},
            upgrade_settings={"strategy": "SURGE", "max_surge": 1, "max_unavailable": 0},
            node_config=hardened_node_config(
                pools.system,
                service_account=node_accounts["system"],
                disk_key=disk_key,
                labels=labels,
                node_labels={POOL_LABEL: "system"},
            ),
            # The node count a new pool starts with replaces the pool when it changes: the
            # system pool would be deleted first, every system pod with it. The autoscaler's
            # minimum (updated in place) carries a later `minNodes` change instead.
            opts=pulumi.ResourceOptions.merge(
                replaced_in_place, pulumi.ResourceOptions(ignore_changes=["initialNodeCount"])
            ),
        )

        self.gpu_pools: dict[str, gcp.container.NodePool] = {}
        for pool in pools.gpu:
            accelerator: gcp.container.NodePoolNodeConfigGuestAcceleratorArgsDict = {
                "type": pool.accelerator_type,
                "count": pool.accelerator_count,
                "gpu_driver_installation_config": {"gpu_driver_version": pool.driver_version},
            }
            if pool.max_shared_clients_per_gpu > 1:
                accelerator["gpu_sharing_config"] = {
                    "gpu_sharing_strategy": pool.sharing_strategy,
                    "max_shared_clients_per_gpu": pool.max_shared_clients_per_gpu,
                }
            compute_class_taint: gcp.container.NodePoolNodeConfigTaintArgsDict = {
                "key": COMPUTE_CLASS_KEY,
                "value": INFERENCE_COMPUTE_CLASS,
                "effect": "NO_SCHEDULE",
            }
            taints = [GPU_TAINT, compute_class_taint, *([SPOT_TAINT] if pool.spot else [])]
            self.gpu_pools[pool.name] = gcp.container.NodePool(
                f"{name}-gpu-{pool.name}",
                name=pool.name,
                cluster=self.cluster.id,
                location=region.location,
                # Regional: every zone of the region that offers the GPU (more zones, more spot
                # capacity); zonal: the cluster's zone (config checks it offers the GPU).
                node_locations=None if zonal else list(gpu_zones[pool.accelerator_type]),
                initial_node_count=0,
                autoscaling={
                    "total_min_node_count": pool.min_nodes,
                    "total_max_node_count": pool.max_nodes,
                    # ANY: take capacity in whichever zone has it (spot obtainability).
                    "location_policy": "ANY",
                },
                management={"auto_repair": True, "auto_upgrade": True},
                upgrade_settings={"strategy": "SURGE", "max_surge": 1, "max_unavailable": 0},
                node_config=hardened_node_config(
                    pool,
                    service_account=node_accounts[pool.name],
                    disk_key=disk_key,
                    labels=labels,
                    # Manually created pools join a ComputeClass by its label and taint.
                    node_labels={POOL_LABEL: pool.name, COMPUTE_CLASS_KEY: INFERENCE_COMPUTE_CLASS},
                    spot=pool.spot,
                    accelerators=[accelerator],
                    taints=taints,
                ),
                opts=replaced_in_place,
            )
        accelerators = {p.accelerator_type for p in pools.gpu}
        # One accelerator type across the pools: workloads can also select it by node label.
        self.accelerator = accelerators.pop() if len(accelerators) == 1 else None

        # The fleet membership Connect Gateway reaches the cluster through.
        self.membership = gcp.gkehub.Membership(
            f"{name}-membership",
            membership_id=self.name,
            # Regional memberships live in their cluster's region, zonal clusters' too.
            location=region.name,
            endpoint={
                "gke_cluster": {
                    "resource_link": self.cluster.id.apply(
                        lambda cluster_id: f"//container.googleapis.com/{cluster_id}"
                    )
                }
            },
            labels=dict(labels),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(fleet.membership_ready),
                # The endpoint is immutable: a new cluster means a new membership of the same
                # id, which cannot exist beside the old one.
                delete_before_replace=True,
            ),
        )
        self.kubeconfig = pulumi.Output.all(
            fleet.project_number, self.membership.membership_id
        ).apply(lambda a: kubeconfig(self.name, gateway_server(a[0], region.name, a[1])))
        # Parent: the cluster itself, so every Kubernetes object resolves to its region.
        # The provider follows its cluster: the kubeconfig names the gateway by project,
        # region and membership id, which a replaced cluster keeps, so without more the
        # provider would stay and Pulumi would believe every object still exists in the new,
        # empty cluster. Its cluster identifier is the cluster's DNS-based endpoint, a name
        # GKE gives each cluster it creates (never the same for a re-created cluster, and
        # unchanged by a credential rotation, unlike the cluster's CA): a new cluster means a
        # new provider, so every object is created again in it; a kubeconfig change alone is
        # an update. `replace_with` says the same to the engine directly.
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            cluster_identifier=pulumi.Output.all(
                self.cluster.id, self.cluster.control_plane_endpoints_config
            ).apply(lambda found: incarnation(found[0], found[1])),
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(
                parent=self.cluster,
                depends_on=[
                    self.system_pool,
                    self.membership,
                    *fleet.gateway_ready,
                    *admission,
                ],
                replace_with=[self.cluster],
            ),
        )
        on_cluster = pulumi.ResourceOptions(parent=self, provider=self.provider)

        self.compute_class = k8s.apiextensions.CustomResource(
            f"{name}-compute-class",
            api_version="cloud.google.com/v1",
            kind="ComputeClass",
            metadata={"name": INFERENCE_COMPUTE_CLASS, "labels": k8s_labels(labels)},
            spec={
                "priorities": [{"nodepools": [p.name]} for p in spot_first(pools.gpu)],
                # Only the pools above: never an auto-created node of some other shape.
                "nodePoolAutoCreation": {"enabled": False},
                "whenUnsatisfiable": "DoNotScaleUp",
                # Move pods back to spot when spot capacity returns.
                "activeMigration": {"optimizeRulePriority": True},
            },
            opts=pulumi.ResourceOptions.merge(
                on_cluster, pulumi.ResourceOptions(depends_on=list(self.gpu_pools.values()))
            ),
        )
        self.priority_classes = {
            class_name: k8s.scheduling.v1.PriorityClass(
                f"{name}-priority-{class_name}",
                metadata={"name": class_name, "labels": k8s_labels(labels)},
                value=value,
                global_default=False,
                preemption_policy="PreemptLowerPriority"
                if class_name == INFERENCE_PRIORITY
                else "Never",
                description="Inference serving: preempts batch work"
                if class_name == INFERENCE_PRIORITY
                else "Batch and backfill: never preempts, yields to inference",
                opts=on_cluster,
            )
            for class_name, value in PRIORITY_VALUES.items()
        }
        # Persistent disks the cluster's pods claim (the signal service's spool) are encrypted
        # with the disks key, as every node's boot disk is; the PD CSI driver creates them as
        # Compute Engine's agent, whose grant on the key comes first (GKE docs, "Use
        # customer-managed encryption keys (CMEK)": disk-encryption-kms-key).
        self.storage_class = k8s.storage.v1.StorageClass(
            f"{name}-storage-cmek",
            metadata={"name": CMEK_STORAGE_CLASS, "labels": k8s_labels(labels)},
            provisioner="pd.csi.storage.gke.io",
            parameters={"type": "pd-balanced", "disk-encryption-kms-key": disk_key},
            # Bound where the pod is scheduled (a zonal disk in the pod's zone).
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            reclaim_policy="Delete",
            opts=pulumi.ResourceOptions.merge(
                on_cluster, pulumi.ResourceOptions(depends_on=disks_ready)
            ),
        )
        # What the gateway's callers may do once IAM lets them in: deployers everything
        # (cluster-admin), previewers read (Kubernetes' `view`: no Secrets, no RBAC objects).
        for group, members, cluster_role in (
            ("deployers", fleet.deployers, "cluster-admin"),
            ("previewers", fleet.previewers, "view"),
        ):
            if members:
                k8s.rbac.v1.ClusterRoleBinding(
                    f"{name}-{group}",
                    metadata={"name": f"signal-platform-{group}", "labels": k8s_labels(labels)},
                    role_ref=role_ref("ClusterRole", cluster_role),
                    subjects=api_object([rbac_subject(member) for member in members]),
                    opts=on_cluster,
                )
        self.register_outputs(
            {"name": self.cluster.name, "endpoint": self.cluster.endpoint, "id": self.cluster.id}
        )
