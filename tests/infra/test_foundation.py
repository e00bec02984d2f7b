"""Network, identity, KMS and artefact stores, as the policy pack sees them in each stack's plan."""

from __future__ import annotations

import re

from tests.conftest import REPO
from tests.infra.stack_config import load
from tools.engine import plan as plan_stack
from tools.inventory import UNKNOWN, Inventory

NETWORK = "gcp:compute/network:Network"
SUBNET = "gcp:compute/subnetwork:Subnetwork"
NAT = "gcp:compute/routerNat:RouterNat"
ROUTER = "gcp:compute/router:Router"
FIREWALL = "gcp:compute/firewall:Firewall"
ACCOUNT = "gcp:serviceaccount/account:Account"
SA_IAM = "gcp:serviceaccount/iAMMember:IAMMember"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
KEY_RING = "gcp:kms/keyRing:KeyRing"
KEY = "gcp:kms/cryptoKey:CryptoKey"
KEY_IAM = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
REGISTRY = "gcp:artifactregistry/repository:Repository"
BUCKET = "gcp:storage/bucket:Bucket"
REGION = "signal:infra:Region"


def test_vpc_is_custom_mode(stack_plan: Inventory):
    (vpc,) = stack_plan.of_type(NETWORK)
    assert vpc.inputs["autoCreateSubnetworks"] is False
    assert vpc.inputs["routingMode"] == "GLOBAL"


def test_one_subnet_router_and_nat_per_region(stack_plan: Inventory):
    regions = stack_plan.outputs["regions"]
    assert sorted(r.name for r in stack_plan.of_type(REGION)) == sorted(regions)
    for type_token in (SUBNET, ROUTER, NAT):
        assert sorted(r.inputs["region"] for r in stack_plan.of_type(type_token)) == sorted(regions)


def test_subnets_have_secondary_ranges_private_access_and_flow_logs(stack_plan: Inventory):
    cidrs = set()
    for subnet in stack_plan.of_type(SUBNET):
        ranges = {r["rangeName"]: r["ipCidrRange"] for r in subnet.inputs["secondaryIpRanges"]}
        assert set(ranges) == {"pods", "services"}
        assert subnet.inputs["privateIpGoogleAccess"] is True
        assert subnet.inputs["logConfig"]["metadata"] == "INCLUDE_ALL_METADATA"
        assert 0 < subnet.inputs["logConfig"]["flowSampling"] <= 1
        cidrs |= {subnet.inputs["ipCidrRange"], *ranges.values()}
    assert len(cidrs) == 3 * len(stack_plan.of_type(SUBNET)), (
        "address ranges never overlap across regions"
    )


def test_nat_covers_its_subnet_and_logs(stack_plan: Inventory):
    subnets = {s.inputs["region"]: s for s in stack_plan.of_type(SUBNET)}
    for nat in stack_plan.of_type(NAT):
        assert nat.inputs["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
        (covered,) = nat.inputs["subnetworks"]
        assert covered["name"].endswith(subnets[nat.inputs["region"]].inputs["name"])
        assert nat.inputs["logConfig"] == {"enable": True, "filter": "ERRORS_ONLY"}


def test_firewall_denies_ingress_by_default_and_allows_only_known_sources(stack_plan: Inventory):
    rules = {r.name.removeprefix("signal-vpc-"): r.inputs for r in stack_plan.of_type(FIREWALL)}
    deny = rules["deny-all-ingress"]
    assert deny["denies"] == [{"protocol": "all"}] and deny["sourceRanges"] == ["0.0.0.0/0"]
    # Every rule logs; the default deny (internet noise) without the metadata annotations.
    assert deny["logConfig"]["metadata"] == "EXCLUDE_ALL_METADATA"
    for name, rule in rules.items():
        if name != "deny-all-ingress":
            assert rule["logConfig"]["metadata"] == "INCLUDE_ALL_METADATA"
            assert "allows" in rule and "0.0.0.0/0" not in rule["sourceRanges"], name
            assert rule["priority"] < deny["priority"]
    assert rules["allow-health-checks"]["sourceRanges"] == ["35.191.0.0/16", "130.211.0.0/22"]


def test_one_service_account_per_workload_and_node_pool(stack_plan: Inventory):
    accounts = {a.inputs["accountId"] for a in stack_plan.of_type(ACCOUNT)}
    assert {"signal-service", "triton", "gke-nodes-system"} <= accounts
    assert {"gke-nodes-l4-spot"} <= accounts


def test_workload_identity_binds_each_workload_to_its_ksa(stack_plan: Inventory):
    project = stack_plan.outputs["project"]
    members = {b.inputs["member"] for b in stack_plan.of_type(SA_IAM)}
    assert members == {
        f"serviceAccount:{project}.svc.id.goog[signals/signal-service]",
        f"serviceAccount:{project}.svc.id.goog[signals/triton]",
    }
    assert {b.inputs["role"] for b in stack_plan.of_type(SA_IAM)} == {
        "roles/iam.workloadIdentityUser"
    }


def test_project_roles_are_least_privilege(stack_plan: Inventory):
    bindings = stack_plan.of_type(PROJECT_IAM)
    roles = {b.inputs["role"] for b in bindings}
    # Data roles are granted on the data; where a service has no resource-level policy (Redis
    # Cluster) the project binding carries a condition naming the resource (test_redis.py).
    unconditional = {b.inputs["role"] for b in bindings if not b.inputs.get("condition")}
    forbidden = {
        "roles/owner",
        "roles/editor",
        "roles/viewer",
        "roles/iam.serviceAccountUser",
        "roles/iam.serviceAccountTokenCreator",
    }
    assert not roles & forbidden
    assert all(
        r.startswith(
            (
                "roles/logging.",
                "roles/monitoring.",
                "roles/cloudtrace.",
                "roles/stackdriver.",
                "roles/autoscaling.",
            )
        )
        # The deployers' and the previewers' Connect Gateway roles (tests/infra/test_cluster.py,
        # tests/infra/test_gateway_access.py).
        or r in ("roles/gkehub.gatewayEditor", "roles/gkehub.gatewayReader", "roles/gkehub.viewer")
        for r in unconditional
    ), unconditional


def test_kms_key_ring_per_region_with_rotating_protected_keys(stack_plan: Inventory):
    rings = {r.inputs["location"] for r in stack_plan.of_type(KEY_RING)}
    assert set(stack_plan.outputs["regions"]) | {"us"} == rings
    keys = stack_plan.of_type(KEY)
    for region in stack_plan.outputs["regions"]:
        names = {k.inputs["name"] for k in keys if f"/locations/{region}/" in k.inputs["keyRing"]}
        assert names == {"gke-secrets", "disks", "redis", "artifacts"}, region
    protected = load(stack_plan.stack).is_prod
    for key in keys:
        assert int(key.inputs["rotationPeriod"].rstrip("s")) <= 90 * 86400
        # Protected where the stack protects its resources (prod); elsewhere a destroy only
        # schedules the versions' destruction, 30 days out (review.md #13: dev destroyable).
        assert key.options["protect"] is protected, key.name
        assert key.inputs["destroyScheduledDuration"] == f"{30 * 86400}s", key.name
        assert key.inputs["labels"]["cost-center"]


def test_a_recreated_stack_takes_new_key_ring_names():
    """Cloud KMS never deletes a key ring: after `pulumi destroy`, `keyRingGeneration: 2`
    names every ring anew (the Pulumi resources keep their names: state stays readable)."""
    second = plan_stack(REPO, "dev", {"signal-platform:keyRingGeneration": "2"})
    rings = {r.name: r.inputs["name"] for r in second.of_type(KEY_RING)}
    assert rings == {
        "us-central1-keys": "us-central1-keys-2",
        "us-warehouse-keys": "us-warehouse-keys-2",
    }
    for key in second.of_type(KEY):
        assert key.inputs["keyRing"].endswith("-keys-2"), key.name


def test_every_key_is_usable_by_its_service_agent_only(stack_plan: Inventory):
    grants = stack_plan.of_type(KEY_IAM)
    assert grants and {g.inputs["role"] for g in grants} == {
        "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    }
    # Agents with a documented email are named; BigQuery's and Cloud Storage's come from the
    # data source that creates them, which runs once their API is on (a first preview may not
    # know them yet): such a grant depends on that API.
    known = [g.inputs["member"] for g in grants if g.inputs["member"] != UNKNOWN]
    agents = {m.split("@")[1] for m in known}
    assert "container-engine-robot.iam.gserviceaccount.com" in agents
    assert "compute-system.iam.gserviceaccount.com" in agents
    assert all(
        re.fullmatch(r"serviceAccount:(service|bq)-\d+@[a-z-]+\.iam\.gserviceaccount\.com", m)
        for m in known
    )
    for grant in grants:
        if grant.inputs["member"] == UNKNOWN:
            assert any(
                d.endswith(("::api-storage", "::api-bigquery"))
                for d in grant.options["dependencies"]
            )


def test_hsm_keys_in_prod_only(dev_plan: Inventory, prod_plan: Inventory):
    level = lambda plan: {k.inputs["versionTemplate"]["protectionLevel"] for k in plan.of_type(KEY)}  # noqa: E731
    assert level(prod_plan) == {"HSM"} and level(dev_plan) == {"SOFTWARE"}


def test_registry_is_docker_cmek_immutable_and_labelled(stack_plan: Inventory):
    (registry,) = stack_plan.of_type(REGISTRY)
    assert registry.inputs["format"] == "DOCKER"
    assert registry.inputs["kmsKeyName"].endswith("/cryptoKeys/artifacts")
    assert registry.inputs["dockerConfig"]["immutableTags"] is True
    assert registry.inputs["labels"]["env"] == stack_plan.stack


def test_model_bucket_is_private_versioned_cmek(stack_plan: Inventory):
    bucket = stack_plan.named(BUCKET, "artifacts-models")
    assert bucket.inputs["uniformBucketLevelAccess"] is True
    assert bucket.inputs["publicAccessPrevention"] == "enforced"
    assert bucket.inputs["versioning"] == {"enabled": True}
    assert bucket.inputs["encryption"]["defaultKmsKeyName"].endswith("/cryptoKeys/artifacts")
    assert set(bucket.inputs["labels"]) >= {"cost-center", "env", "owner"}


def test_force_destroy_only_outside_prod(dev_plan: Inventory, prod_plan: Inventory):
    assert dev_plan.named(BUCKET, "artifacts-models").inputs["forceDestroy"] is True
    assert prod_plan.named(BUCKET, "artifacts-models").inputs["forceDestroy"] is False


def test_provider_carries_project_and_cost_labels(stack_plan: Inventory):
    (provider,) = stack_plan.of_type("pulumi:providers:gcp")
    assert provider.inputs["project"] == stack_plan.outputs["project"]
    labels = provider.inputs["defaultLabels"]
    labels = labels if isinstance(labels, dict) else __import__("json").loads(labels)
    assert set(labels) >= {"cost-center", "env", "owner"}
    custom = [r for r in stack_plan.resources if r.custom and r.type.startswith("gcp:")]
    assert all(r.provider and r.provider.startswith(provider.urn) for r in custom)


def test_triton_config_is_rendered_by_the_model_build_into_the_bucket(stack_plan: Inventory):
    from app.model.triton import TritonModelConfig, render_config_pbtxt
    from infra.workloads import triton_model_files
    from tests.infra.stack_config import load

    (config_file,) = stack_plan.of_type("gcp:storage/bucketObject:BucketObject")
    model = TritonModelConfig.model_validate(stack_plan.outputs["tritonModel"])
    assert config_file.inputs["name"] == f"triton/{model.name}/config.pbtxt"
    # The provider keeps an object's content secret: the plan masks it, so check what the
    # program uploads, rendered from the same stack config by the model build's own code.
    assert "content" in config_file.secrets
    (content,) = triton_model_files(load(stack_plan.stack).workloads.triton.model).values()
    assert content == render_config_pbtxt(model)
    assert f"max_queue_delay_microseconds: {model.max_queue_delay_us}" in content
    assert f"max_batch_size: {model.max_batch_size}" in content
    (bucket,) = [b for b in stack_plan.of_type(BUCKET) if b.name == "artifacts-models"]
    assert config_file.inputs["bucket"] == bucket.inputs["name"]
