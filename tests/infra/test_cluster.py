"""GKE clusters, node pools, ComputeClass, PriorityClasses and the Kubernetes provider, as the
policy pack sees them in each stack's plan, and the cluster settings' validation."""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest
import yaml

from infra.cluster import (
    CMEK_STORAGE_CLASS,
    GATEWAY_ROLES,
    INFERENCE_COMPUTE_CLASS,
    gateway_server,
    incarnation,
    kubeconfig,
    rbac_subject,
    spot_first,
)
from infra.config import ConfigError, GpuPool, StackConfig, load_catalog
from infra.config.cluster import ClusterSettings
from infra.config.mesh import ISTIO_KUBERNETES, MeshSettings
from tests.infra.stack_config import section
from tests.infra.test_config import load, stack_values
from tools.diff.compare import diff_resource
from tools.inventory import UNKNOWN, Inventory, Resource, provider_urn

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
MEMBERSHIP = "gcp:gkehub/membership:Membership"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
COMPUTE_CLASS = "kubernetes:cloud.google.com/v1:ComputeClass"
PRIORITY_CLASS = "kubernetes:scheduling.k8s.io/v1:PriorityClass"
K8S_PROVIDER = "pulumi:providers:kubernetes"
KEY = "gcp:kms/cryptoKey:CryptoKey"
ACCOUNT = "gcp:serviceaccount/account:Account"
BINAUTHZ = "gcp:binaryauthorization/policy:Policy"


def config_of(plan: Inventory) -> StackConfig:
    return StackConfig.load(plan.stack, stack_values(plan.stack))


def clusters(plan: Inventory) -> dict[str, Resource]:
    """Each region's cluster, by region (a zonal cluster's location is a zone of it)."""
    regions = plan.regions()
    return {regions[c.urn]: c for c in plan.of_type(CLUSTER)}  # type: ignore[misc]


def pools_of(plan: Inventory, cluster: Resource) -> dict[str, Resource]:
    """A cluster's node pools by pool name (the pool's `cluster` input is the cluster's id)."""
    location, name = cluster.inputs["location"], cluster.inputs["name"]
    return {
        p.inputs["name"]: p
        for p in plan.of_type(NODE_POOL)
        if p.inputs["cluster"].endswith(f"/locations/{location}/clusters/{name}")
    }


# ---------------------------------------------------------------- clusters


def test_one_cluster_per_region(stack_plan: Inventory):
    assert sorted(clusters(stack_plan)) == sorted(stack_plan.outputs["regions"])
    regions = stack_plan.regions()
    for region, cluster in clusters(stack_plan).items():
        assert regions[cluster.urn] == region
        assert cluster.inputs["name"] == f"signal-{region}"


def test_clusters_are_private_with_restricted_control_plane(stack_plan: Inventory):
    cfg = config_of(stack_plan)
    for region, cluster in clusters(stack_plan).items():
        private = cluster.inputs["privateClusterConfig"]
        assert private["enablePrivateNodes"] is True
        assert private["enablePrivateEndpoint"] is cfg.cluster.private_endpoint
        assert private["masterIpv4CidrBlock"] == cfg.region(region).network.master_cidr
        authorized = cluster.inputs["masterAuthorizedNetworksConfig"]
        cidrs = [b["cidrBlock"] for b in authorized["cidrBlocks"]]
        assert cidrs == [n.cidr for n in cfg.cluster.master_authorized_networks]
        assert "0.0.0.0/0" not in cidrs and authorized["gcpPublicCidrsAccessEnabled"] is False
    assert clusters(stack_plan)  # the loop above ran


def test_prod_control_plane_has_a_private_endpoint(prod_plan: Inventory, dev_plan: Inventory):
    for cluster in prod_plan.of_type(CLUSTER):
        assert cluster.inputs["privateClusterConfig"]["enablePrivateEndpoint"] is True
    for cluster in dev_plan.of_type(CLUSTER):
        assert cluster.inputs["privateClusterConfig"]["enablePrivateEndpoint"] is False


def test_clusters_are_hardened(stack_plan: Inventory):
    project = stack_plan.outputs["project"]
    for cluster in stack_plan.of_type(CLUSTER):
        i = cluster.inputs
        assert i["workloadIdentityConfig"] == {"workloadPool": f"{project}.svc.id.goog"}
        assert i["enableShieldedNodes"] is True
        assert i["datapathProvider"] == "ADVANCED_DATAPATH"
        assert i["networkingMode"] == "VPC_NATIVE"
        assert i["ipAllocationPolicy"]["clusterSecondaryRangeName"] == "pods"
        assert i["ipAllocationPolicy"]["servicesSecondaryRangeName"] == "services"
        assert i["binaryAuthorization"] == {"evaluationMode": "PROJECT_SINGLETON_POLICY_ENFORCE"}
        # GKE shut basic workload scanning down; images are scanned by Artifact Analysis.
        assert i["securityPostureConfig"] == {
            "mode": "BASIC",
            "vulnerabilityMode": "VULNERABILITY_DISABLED",
        }
        assert i["enableLegacyAbac"] is False and i["enableKubernetesAlpha"] is False
        assert i["masterAuth"]["clientCertificateConfig"] == {"issueClientCertificate": False}
        assert i["removeDefaultNodePool"] is True
        assert i["enableIntranodeVisibility"] is True
        # Separate pools own the nodes: once GKE drops the default pool, the cluster's node
        # settings drift from `nodeConfig`, which would otherwise replace the cluster.
        assert set(cluster.options["ignoreChanges"]) == {"nodeConfig", "nodePools"}


def test_clusters_observe_and_mount_models_and_track_cost(stack_plan: Inventory):
    for cluster in stack_plan.of_type(CLUSTER):
        i = cluster.inputs
        assert i["monitoringConfig"]["managedPrometheus"] == {"enabled": True}
        assert "SYSTEM_COMPONENTS" in i["monitoringConfig"]["enableComponents"]
        # GKE's managed DCGM exporter: the GPU metrics the Triton HPA and the GPU alert read.
        assert "DCGM" in i["monitoringConfig"]["enableComponents"]
        assert set(i["loggingConfig"]["enableComponents"]) == {"SYSTEM_COMPONENTS", "WORKLOADS"}
        assert i["addonsConfig"]["gcsFuseCsiDriverConfig"] == {"enabled": True}
        assert i["costManagementConfig"] == {"enabled": True}
        assert i["clusterAutoscaling"]["autoscalingProfile"] == "OPTIMIZE_UTILIZATION"


def test_release_channel_version_and_maintenance_from_config(stack_plan: Inventory):
    cfg = config_of(stack_plan)
    for region, cluster in clusters(stack_plan).items():
        settings = cfg.region(region).cluster
        assert cluster.inputs["releaseChannel"] == {"channel": settings.release_channel}
        assert cluster.inputs["minMasterVersion"] == settings.kubernetes_minor_version
        window = cluster.inputs["maintenancePolicy"]["recurringWindow"]
        assert window == {
            "startTime": settings.maintenance.start_time,
            "endTime": settings.maintenance.end_time,
            "recurrence": settings.maintenance.recurrence,
        }
        # A regional cluster's nodes in its first nodeZones zones; a zonal one's in its zone.
        region_config = cfg.region(region)
        assert cluster.inputs["location"] == region_config.location
        if settings.zonal:
            assert cluster.inputs["location"] == region_config.zone
            assert "nodeLocations" not in cluster.inputs
        else:
            assert cluster.inputs["nodeLocations"] == list(region_config.node_zones)
            assert region_config.node_zones == load_catalog().zones[region][: settings.zone_count]


def test_secrets_are_encrypted_with_the_regions_key(stack_plan: Inventory):
    for region, cluster in clusters(stack_plan).items():
        encryption = cluster.inputs["databaseEncryption"]
        assert encryption["state"] == "ENCRYPTED"
        assert encryption["keyName"].endswith(f"/keyRings/{region}-keys/cryptoKeys/gke-secrets")


def test_deletion_protection_in_prod_only(prod_plan: Inventory, dev_plan: Inventory):
    for cluster in prod_plan.of_type(CLUSTER):
        assert cluster.inputs["deletionProtection"] is True and cluster.options["protect"]
    for cluster in dev_plan.of_type(CLUSTER):
        assert cluster.inputs["deletionProtection"] is False and not cluster.options["protect"]


def test_clusters_carry_cost_labels(stack_plan: Inventory):
    labels = config_of(stack_plan).labels
    for cluster in stack_plan.of_type(CLUSTER):
        assert cluster.inputs["resourceLabels"] == labels


# ---------------------------------------------------------------- node pools


def test_every_pool_is_hardened_with_its_own_account(stack_plan: Inventory):
    project = stack_plan.outputs["project"]
    labels = config_of(stack_plan).labels
    regions = stack_plan.regions()
    pools = stack_plan.of_type(NODE_POOL)
    assert pools
    for pool in pools:
        node = pool.inputs["nodeConfig"]
        name, region = pool.inputs["name"], regions[pool.urn]
        assert region is not None
        assert pool.inputs["location"] in (region, *load_catalog().zones[region])
        assert node["serviceAccount"] == f"gke-nodes-{name}@{project}.iam.gserviceaccount.com"
        assert node["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
        assert node["imageType"] == "COS_CONTAINERD"
        assert node["shieldedInstanceConfig"] == {
            "enableSecureBoot": True,
            "enableIntegrityMonitoring": True,
        }
        assert node["bootDiskKmsKey"].endswith(f"/keyRings/{region}-keys/cryptoKeys/disks")
        assert node["metadata"] == {"disable-legacy-endpoints": "true"}
        assert node["resourceLabels"] == labels
        assert pool.inputs["management"] == {"autoRepair": True, "autoUpgrade": True}
        assert pool.inputs["upgradeSettings"]["maxUnavailable"] == 0
    accounts = {a.inputs["accountId"] for a in stack_plan.of_type(ACCOUNT)}
    assert {f"gke-nodes-{p.inputs['name']}" for p in pools} <= accounts


def test_system_pool_is_on_demand_and_sized_from_config(stack_plan: Inventory):
    cfg = config_of(stack_plan)
    for region, cluster in clusters(stack_plan).items():
        system = pools_of(stack_plan, cluster)["system"]
        settings = cfg.region(region).node_pools.system
        node = system.inputs["nodeConfig"]
        assert node["spot"] is False and node["taints"] == [] and node["guestAccelerators"] == []
        assert node["machineType"] == settings.machine_type
        assert system.inputs["autoscaling"] == {
            "minNodeCount": settings.min_nodes,
            "maxNodeCount": settings.max_nodes,
            "locationPolicy": "BALANCED",
        }


def test_gpu_pools_are_spot_tainted_shared_and_scale_from_zero(stack_plan: Inventory):
    cfg = config_of(stack_plan)
    for region, cluster in clusters(stack_plan).items():
        pools = pools_of(stack_plan, cluster)
        expected = cfg.region(region).node_pools.gpu
        assert set(pools) == {"system", *(p.name for p in expected)}
        for settings in expected:
            pool = pools[settings.name]
            node = pool.inputs["nodeConfig"]
            assert node["spot"] is settings.spot
            assert node["machineType"] == settings.machine_type
            (accelerator,) = node["guestAccelerators"]
            assert accelerator["type"] == settings.accelerator_type
            assert accelerator["count"] == settings.accelerator_count
            assert accelerator["gpuDriverInstallationConfig"] == {
                "gpuDriverVersion": settings.driver_version
            }
            assert accelerator["gpuSharingConfig"] == {
                "gpuSharingStrategy": settings.sharing_strategy,
                "maxSharedClientsPerGpu": settings.max_shared_clients_per_gpu,
            }
            taints = {(t["key"], t["value"], t["effect"]) for t in node["taints"]}
            assert ("nvidia.com/gpu", "present", "NO_SCHEDULE") in taints
            assert (
                "cloud.google.com/compute-class",
                INFERENCE_COMPUTE_CLASS,
                "NO_SCHEDULE",
            ) in taints
            spot_taint = ("cloud.google.com/gke-spot", "true", "NO_SCHEDULE")
            assert (spot_taint in taints) is settings.spot
            assert node["labels"]["cloud.google.com/compute-class"] == INFERENCE_COMPUTE_CLASS
            assert pool.inputs["autoscaling"] == {
                "totalMinNodeCount": settings.min_nodes,
                "totalMaxNodeCount": settings.max_nodes,
                "locationPolicy": "ANY",
            }
            assert settings.min_nodes == 0
            region_config = cfg.region(region)
            assert pool.inputs["location"] == region_config.location
            if region_config.cluster.zonal:  # the zonal cluster's own zone
                assert "nodeLocations" not in pool.inputs
            else:
                offered = load_catalog().gpus_in(region)[settings.accelerator_type]
                assert pool.inputs["nodeLocations"] == list(offered)


def test_dev_shares_each_gpu_between_four_clients(dev_plan: Inventory):
    (pool,) = [p for p in dev_plan.of_type(NODE_POOL) if p.inputs["name"] == "l4-spot"]
    (accelerator,) = pool.inputs["nodeConfig"]["guestAccelerators"]
    assert accelerator["gpuSharingConfig"]["maxSharedClientsPerGpu"] == 4


def test_prod_has_an_on_demand_fallback_beside_each_spot_pool(prod_plan: Inventory):
    for cluster in clusters(prod_plan).values():
        pools = pools_of(prod_plan, cluster)
        spot = {n for n, p in pools.items() if p.inputs["nodeConfig"]["spot"]}
        on_demand_gpu = {
            n
            for n, p in pools.items()
            if not p.inputs["nodeConfig"]["spot"] and p.inputs["nodeConfig"]["guestAccelerators"]
        }
        assert spot == {"l4-spot"} and on_demand_gpu == {"l4-ondemand"}


# ---------------------------------------------------------------- ComputeClass, priorities


def compute_classes(plan: Inventory) -> dict[str, Resource]:
    """Each region's ComputeClass, by the region its provider resolves to."""
    regions = plan.regions()
    return {regions[c.urn]: c for c in plan.of_type(COMPUTE_CLASS)}  # type: ignore[misc]


def test_compute_class_puts_spot_first_then_on_demand(stack_plan: Inventory):
    classes = compute_classes(stack_plan)
    assert sorted(classes) == sorted(stack_plan.outputs["regions"])
    for region, compute_class in classes.items():
        pools = pools_of(stack_plan, clusters(stack_plan)[region])
        spec = compute_class.inputs["spec"]
        assert compute_class.inputs["metadata"]["name"] == INFERENCE_COMPUTE_CLASS
        order = [p["nodepools"] for p in spec["priorities"]]
        assert all(len(names) == 1 for names in order)
        spot_flags = [pools[names[0]].inputs["nodeConfig"]["spot"] for names in order]
        assert spot_flags == sorted(spot_flags, reverse=True), "every spot pool before on-demand"
        assert spot_flags[0] is True
        assert {names[0] for names in order} == set(pools) - {"system"}
        assert spec["nodePoolAutoCreation"] == {"enabled": False}
        assert spec["whenUnsatisfiable"] == "DoNotScaleUp"
        assert spec["activeMigration"] == {"optimizeRulePriority": True}


def test_prod_compute_class_falls_back_to_on_demand(prod_plan: Inventory):
    for compute_class in prod_plan.of_type(COMPUTE_CLASS):
        order = [p["nodepools"] for p in compute_class.inputs["spec"]["priorities"]]
        assert order == [["l4-spot"], ["l4-ondemand"]]


def test_spot_first_orders_whatever_the_config_order():
    pools = [
        GpuPool(name="a-ondemand", spot=False),
        GpuPool(name="b-spot"),
        GpuPool(name="c-ondemand", spot=False),
        GpuPool(name="d-spot"),
    ]
    assert [p.name for p in spot_first(pools)] == ["b-spot", "d-spot", "a-ondemand", "c-ondemand"]


def test_inference_outranks_batch(stack_plan: Inventory):
    classes = {p.inputs["metadata"]["name"]: p.inputs for p in stack_plan.of_type(PRIORITY_CLASS)}
    inference, batch = classes["signal-inference"], classes["signal-batch"]
    assert inference["value"] > batch["value"]
    assert inference["preemptionPolicy"] == "PreemptLowerPriority"
    assert batch["preemptionPolicy"] == "Never"
    assert not inference["globalDefault"] and not batch["globalDefault"]
    assert len(stack_plan.of_type(PRIORITY_CLASS)) == 2 * len(stack_plan.outputs["regions"])


# ---------------------------------------------------------------- Kubernetes provider


def test_one_kubernetes_provider_per_cluster_through_connect_gateway(stack_plan: Inventory):
    """CI reaches the private control planes through Connect Gateway: each cluster has a fleet
    membership, and its provider's kubeconfig names the gateway endpoint of that membership."""
    index = stack_plan.by_urn()
    regions = stack_plan.regions()
    providers = stack_plan.of_type(K8S_PROVIDER)
    memberships = {m.inputs["membershipId"]: m for m in stack_plan.of_type(MEMBERSHIP)}
    assert len(providers) == len(memberships) == len(stack_plan.outputs["regions"])
    for provider in providers:
        cluster = index[provider.parent]  # type: ignore[index]
        assert cluster.type == CLUSTER
        location = regions[cluster.urn]  # the region, also of a zonal cluster
        assert regions[provider.urn] == location
        membership = memberships[cluster.inputs["name"]]
        assert membership.inputs["location"] == location
        assert cluster.urn in membership.options["dependencies"]
        config = yaml.safe_load(provider.inputs["kubeconfig"])
        (entry,) = config["clusters"]
        assert entry["name"] == cluster.inputs["name"]
        assert re.fullmatch(
            rf"https://connectgateway\.googleapis\.com/v1/projects/\d+/locations/{location}"
            rf"/gkeMemberships/{membership.inputs['membershipId']}",
            entry["cluster"]["server"],
        )
        (user,) = config["users"]
        assert user["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
        assert "token" not in user["user"] and "client-key-data" not in user["user"]
        waits = set(provider.options["dependencies"])
        system_pool = f"{location}-cluster-system"
        assert any(d.endswith(f"::{system_pool}") for d in waits), "waits for the system pool"
        assert membership.urn in waits
        assert any(d.endswith("::api-connectgateway") for d in waits)
        grants = {g.urn for g in stack_plan.of_type(PROJECT_IAM) if "gkehub" in g.inputs["role"]}
        assert grants and grants <= waits, "the deployers' gateway roles come first"


def test_deployers_reach_the_clusters_through_iam_and_rbac(stack_plan: Inventory):
    deployers = load(stack_plan.stack).cluster.deployers
    assert deployers, "the stack names who deploys"
    roles = {
        (g.inputs["member"], g.inputs["role"])
        for g in stack_plan.of_type(PROJECT_IAM)
        if "gkehub" in g.inputs["role"] and g.inputs["member"] in deployers
    }  # the previewers' roles: tests/infra/test_gateway_access.py
    assert roles == {(m, r) for m in deployers for r in GATEWAY_ROLES}
    bindings = [
        b
        for b in stack_plan.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
        if b.inputs["metadata"]["name"] == "signal-platform-deployers"
    ]
    assert len(bindings) == len(stack_plan.outputs["regions"])
    for binding in bindings:
        assert binding.inputs["roleRef"]["name"] == "cluster-admin"
        assert [s["name"] for s in binding.inputs["subjects"]] == [
            m.split(":", 1)[1] for m in deployers
        ]


def test_every_kubernetes_object_resolves_to_its_clusters_region(stack_plan: Inventory):
    regions = stack_plan.regions()
    index = stack_plan.by_urn()
    objects = [r for r in stack_plan.resources if r.type.startswith("kubernetes:")]
    assert objects
    for resource in objects:
        provider = index[provider_urn(resource.provider)]  # type: ignore[index]
        assert provider.type == K8S_PROVIDER
        assert regions[resource.urn] == regions[provider.urn] is not None


def test_kubeconfig_is_exec_based_and_pins_no_ca():
    server = gateway_server("123", "us-east4", "signal-us-east4")
    assert server == (
        "https://connectgateway.googleapis.com/v1/projects/123/locations/us-east4"
        "/gkeMemberships/signal-us-east4"
    )
    config = yaml.safe_load(kubeconfig("c", server))
    assert config["current-context"] == "c"
    assert config["clusters"][0]["cluster"] == {"server": server}
    assert config["users"][0]["user"]["exec"]["interactiveMode"] == "Never"


def test_rbac_subjects_follow_the_iam_member_kind():
    assert rbac_subject("serviceAccount:ci@p.iam.gserviceaccount.com")["kind"] == "User"
    assert rbac_subject("user:ops@example.com") == {
        "kind": "User",
        "name": "ops@example.com",
        "apiGroup": "rbac.authorization.k8s.io",
    }
    assert rbac_subject("group:sre@example.com")["kind"] == "Group"


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        (
            {"kubernetesMinorVersion": "1.33.4"},
            "cluster.kubernetesMinorVersion: must be a Kubernetes minor",
        ),
        ({"nodeZones": 5}, "cluster.nodeZones"),
        ({"securityPosture": "DISABLED"}, "cluster.securityPosture"),
        (
            {"kubernetesMinorVersion": "1.29"},
            "Istio 1.30.5 does not support this Kubernetes version (got '1.29'); allowed: 1.32, 1.33",
        ),
    ],
)
def test_bad_cluster_settings_name_the_key(changes: dict, fragment: str):
    with pytest.raises(ConfigError) as exc:
        load("dev", cluster=changes)
    assert fragment in str(exc.value)


def test_prod_pins_the_metrics_adapter_by_digest():
    image = {"metricsAdapterImage": "gcr.io/gke-release/custom-metrics-stackdriver-adapter:v1"}
    with pytest.raises(ConfigError) as exc:
        load("prod", cluster={**section("prod", "cluster"), **image})
    assert (
        "signal-platform:cluster.metricsAdapterImage: prod images must be pinned by digest"
        in str(exc.value)
    )
    dev = load("dev", cluster={**section("dev", "cluster"), **image})
    assert dev.cluster.metrics_adapter_image.endswith(":v1")


# ---------------------------------------------------------------- what a second apply needs


def test_node_pools_are_deleted_before_their_replacement(stack_plan: Inventory):
    """A pool's name is fixed in its cluster and much of its node config replaces it
    (machine type, spot, GPU sharing, boot disk key): a replacement created first would find
    its name taken (409), so the old pool goes first (review.md #15)."""
    pools = stack_plan.of_type(NODE_POOL)
    assert pools
    for pool in pools:
        assert pool.inputs["name"], pool.name  # explicitly named: what makes it necessary
        assert pool.options["deleteBeforeReplace"] is True, pool.name
    for resource in (*stack_plan.of_type(CLUSTER), *stack_plan.of_type(MEMBERSHIP)):
        assert resource.options["deleteBeforeReplace"] is True, resource.name


def test_a_system_pool_size_change_updates_the_pool_and_never_replaces_it(
    stack_plan: Inventory,
):
    """`initialNodeCount` replaces a node pool, and the system pool is deleted before its
    replacement: a `minNodes` change must not take every system pod down. The autoscaler's
    minimum carries it, in place."""
    for pool in stack_plan.of_type(NODE_POOL):
        if pool.inputs["name"] != "system":
            continue
        inputs = copy.deepcopy(pool.inputs)
        inputs["initialNodeCount"] += 1
        inputs["autoscaling"]["minNodeCount"] += 1
        head = dataclasses.replace(pool, inputs=inputs)
        change = diff_resource(pool, head, None)
        assert change is not None and change.changes, pool.name
        assert not change.replacing, [c.path for c in change.replacing]


def test_the_default_control_plane_minor_is_one_istio_supports_and_not_past_support():
    """1.33 and 1.34 leave GKE's release channels (end of standard support) before a late-2026
    first apply, and a channel creates clusters only at minors it offers."""
    minor = ClusterSettings().kubernetes_minor_version
    assert tuple(map(int, minor.split("."))) >= (1, 35)
    assert minor in ISTIO_KUBERNETES[MeshSettings().istio_minor]


def test_the_kubernetes_provider_names_its_cluster(stack_plan: Inventory):
    """A replaced cluster keeps its name, so a kubeconfig of names alone would leave the
    provider (and Pulumi's record of every object) pointing at an empty new cluster: the
    provider's cluster identifier comes from the cluster itself, from what GKE assigns each
    incarnation (so it is unknown in a plan), and a replaced cluster replaces the provider."""
    index = stack_plan.by_urn()
    for provider in stack_plan.of_type(K8S_PROVIDER):
        cluster = index[provider.parent]  # type: ignore[index]
        assert provider.inputs["clusterIdentifier"] == UNKNOWN  # assigned by GKE, not an input
        assert provider.options["propertyDependencies"]["clusterIdentifier"] == [cluster.urn]


def test_a_clusters_incarnation_is_its_dns_endpoint_else_its_id():
    class Dns:
        endpoint = "gke-0123456789abcdef0123456789abcdef-123456789012.us-central1.gke.goog"

    class Endpoints:
        dns_endpoint_config = Dns()

    cluster_id = "projects/p/locations/us-central1/clusters/signal-us-central1"
    assert incarnation(cluster_id, Endpoints()) == Dns.endpoint
    assert incarnation(cluster_id, None) == cluster_id


def test_the_provider_is_replaced_with_its_cluster():
    """`replace_with` is an engine option no plan records: read it where the program sets it."""
    import ast
    import inspect

    import infra.cluster

    tree = ast.parse(inspect.getsource(infra.cluster.GkeCluster))
    providers = [
        call
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "k8s.Provider"
    ]
    (provider,) = providers
    options = next(k.value for k in provider.keywords if k.arg == "opts")
    assert isinstance(options, ast.Call)  # pulumi.ResourceOptions(...)
    replace_with = next(k.value for k in options.keywords if k.arg == "replace_with")
    assert ast.unparse(replace_with) == "[self.cluster]"


def test_pods_wait_for_the_binary_authorization_policy(stack_plan: Inventory):
    """Every cluster enforces the project's policy: it exists before any provider (so before
    any pod) of the stack (review.md #19)."""
    (policy,) = stack_plan.of_type(BINAUTHZ)
    for provider in stack_plan.of_type(K8S_PROVIDER):
        assert policy.urn in provider.options["dependencies"], provider.name


def test_the_pods_persistent_disks_are_encrypted_with_the_regions_disks_key(
    stack_plan: Inventory,
):
    """The spool's PersistentVolumes are CMEK like every boot disk: a StorageClass per cluster
    with the region's `disks` key, created once Compute Engine's agent holds the key."""
    index = stack_plan.by_urn()
    regions = stack_plan.regions()
    classes = stack_plan.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
    assert len(classes) == len(stack_plan.outputs["regions"])
    grants = {g.urn: g for g in stack_plan.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")}
    for storage_class in classes:
        region = regions[storage_class.urn]
        assert storage_class.inputs["metadata"]["name"] == CMEK_STORAGE_CLASS
        assert storage_class.inputs["provisioner"] == "pd.csi.storage.gke.io"
        key = storage_class.inputs["parameters"]["disk-encryption-kms-key"]
        assert key.endswith(f"/locations/{region}/keyRings/{region}-keys/cryptoKeys/disks")
        assert storage_class.inputs["volumeBindingMode"] == "WaitForFirstConsumer"
        waited = [grants[d] for d in storage_class.options["dependencies"] if d in grants]
        assert any(
            g.inputs["cryptoKeyId"] == key and "compute-system" in g.inputs["member"]
            for g in waited
        ), "waits for Compute Engine's agent to hold the key"
        assert index[provider_urn(storage_class.provider)].type == K8S_PROVIDER  # type: ignore[index]
