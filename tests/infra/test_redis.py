"""Memorystore Redis Cluster per region, as the policy pack sees it in each stack's plan."""

from __future__ import annotations

import re

import pytest

from infra.config import ConfigError, RedisSettings, StackConfig
from infra.memorystore import persistence_config
from tests.infra.stack_config import load
from tests.infra.test_apply_order import waits_for
from tools.inventory import UNKNOWN, Inventory

CLUSTER = "gcp:redis/cluster:Cluster"
POLICY = "gcp:networkconnectivity/serviceConnectionPolicy:ServiceConnectionPolicy"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
SUBNET = "gcp:compute/subnetwork:Subnetwork"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
COST_LABELS = {"cost-center", "env", "owner"}


def config_of(plan: Inventory) -> StackConfig:
    return load(plan.stack)


def clusters(plan: Inventory) -> dict[str, dict]:
    return {c.inputs["region"]: c.inputs for c in plan.of_type(CLUSTER)}


def test_one_cluster_per_region_sized_from_that_regions_config(stack_plan: Inventory):
    config = config_of(stack_plan)
    found = clusters(stack_plan)
    assert sorted(found) == sorted(config.regions)
    for region, inputs in found.items():
        settings = config.region(region).redis
        assert inputs["shardCount"] == settings.shard_count
        assert inputs["replicaCount"] == settings.replica_count
        assert inputs["nodeType"] == settings.node_type
        assert inputs["name"] == f"{region}-cache"


def test_prod_override_sizes_europe_differently(prod_plan: Inventory):
    found = clusters(prod_plan)
    assert found["europe-west4"]["shardCount"] == 2
    assert found["us-central1"]["shardCount"] == found["us-east4"]["shardCount"] == 3


def test_clusters_use_iam_auth_tls_multi_zone_cmek(stack_plan: Inventory):
    for region, inputs in clusters(stack_plan).items():
        assert inputs["authorizationMode"] == "AUTH_MODE_IAM_AUTH"
        assert inputs["transitEncryptionMode"] == "TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION"
        assert inputs["zoneDistributionConfig"] == {"mode": "MULTI_ZONE"}
        assert inputs["kmsKey"].endswith(
            f"/locations/{region}/keyRings/{region}-keys/cryptoKeys/redis"
        )
        assert set(inputs["labels"]) >= COST_LABELS
        assert inputs["labels"]["env"] == stack_plan.stack


def test_persistence_follows_config(dev_plan: Inventory, prod_plan: Inventory):
    assert {c["persistenceConfig"]["mode"] for c in clusters(dev_plan).values()} == {"DISABLED"}
    for inputs in clusters(prod_plan).values():
        assert inputs["persistenceConfig"] == {
            "mode": "AOF",
            "aofConfig": {"appendFsync": "EVERYSEC"},
        }


def test_persistence_blocks_for_each_mode():
    assert persistence_config(
        RedisSettings(persistence="RDB", rdb_snapshot_period="SIX_HOURS")
    ) == {
        "mode": "RDB",
        "rdb_config": {"rdb_snapshot_period": "SIX_HOURS"},
    }
    assert persistence_config(RedisSettings(persistence="DISABLED")) == {"mode": "DISABLED"}


def test_deletion_protection_in_prod_only(dev_plan: Inventory, prod_plan: Inventory):
    assert {c["deletionProtectionEnabled"] for c in clusters(prod_plan).values()} == {True}
    assert {c["deletionProtectionEnabled"] for c in clusters(dev_plan).values()} == {False}


def test_weekly_maintenance_window_from_config(stack_plan: Inventory):
    config = config_of(stack_plan)
    for region, inputs in clusters(stack_plan).items():
        (window,) = inputs["maintenancePolicy"]["weeklyMaintenanceWindows"]
        settings = config.region(region).redis
        assert window["day"] == settings.maintenance_day == "SUNDAY"
        assert window["startTime"]["hours"] == settings.maintenance_hour


def test_reached_only_through_psc_in_the_regions_subnet(stack_plan: Inventory):
    network = stack_plan.of_type("gcp:compute/network:Network")[0].inputs["name"]
    subnets = {s.inputs["region"]: s.inputs["name"] for s in stack_plan.of_type(SUBNET)}
    policies = {p.inputs["location"]: p for p in stack_plan.of_type(POLICY)}
    assert sorted(policies) == sorted(clusters(stack_plan))
    for region, policy in policies.items():
        assert policy.inputs["serviceClass"] == "gcp-memorystore-redis"
        assert policy.inputs["network"].endswith(f"/networks/{network}")
        (subnet,) = policy.inputs["pscConfig"]["subnetworks"]
        assert subnet.endswith(f"/regions/{region}/subnetworks/{subnets[region]}")
        assert set(policy.inputs["labels"]) >= COST_LABELS
    for cluster in stack_plan.of_type(CLUSTER):
        assert cluster.inputs["pscConfigs"] == [
            {"network": policies[cluster.inputs["region"]].inputs["network"]}
        ]
        # The policy must exist before Memorystore can create the endpoints.
        assert policies[cluster.inputs["region"]].urn in cluster.options["dependencies"]


def test_the_key_grant_precedes_the_cluster(stack_plan: Inventory):
    for cluster in stack_plan.of_type(CLUSTER):
        region = cluster.inputs["region"]
        grants = [
            r.urn
            for r in stack_plan.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
            if r.name == f"{region}-keys-redis-agent-0"
        ]
        assert grants and set(grants) <= set(cluster.options["dependencies"])


def test_only_the_signal_service_may_connect_and_only_to_its_regions_cluster(
    stack_plan: Inventory,
):
    project = stack_plan.outputs["project"]
    grants = [b for b in stack_plan.of_type(PROJECT_IAM) if "redis" in b.inputs["role"]]
    assert {g.inputs["role"] for g in grants} == {"roles/redis.dbConnectionUser"}
    assert {g.inputs["member"] for g in grants} == {
        f"serviceAccount:signal-service@{project}.iam.gserviceaccount.com"
    }
    expressions = sorted(g.inputs["condition"]["expression"] for g in grants)
    assert expressions == sorted(
        f'resource.name == "projects/{project}/locations/{region}/clusters/{region}-cache"'
        for region in clusters(stack_plan)
    )


def test_each_regions_discovery_endpoint_is_exported_for_the_workloads(stack_plan: Inventory):
    """Memorystore assigns each cluster's discovery endpoint (unknown in a preview); each
    region exports its own, and its signal service's config waits for that cluster."""
    endpoints = stack_plan.outputs["redis"]
    assert sorted(endpoints) == sorted(clusters(stack_plan))
    assert all(
        e == UNKNOWN or re.fullmatch(r"\d+\.\d+\.\d+\.\d+:6379", e) for e in endpoints.values()
    )
    caches = {c.inputs["region"]: c.urn for c in stack_plan.of_type(CLUSTER)}
    config_maps = [
        c
        for c in stack_plan.of_type("kubernetes:core/v1:ConfigMap")
        if c.inputs["metadata"]["name"] == "signal-service-config"
    ]
    assert len(config_maps) == len(endpoints)
    regions = stack_plan.regions()
    for config_map in config_maps:
        region = regions[config_map.urn]
        waits = waits_for(stack_plan, config_map)
        assert caches[region] in waits, config_map.name
        assert not (set(caches.values()) - {caches[region]}) & set(
            config_map.options["dependencies"]
        )


@pytest.mark.parametrize(
    ("redis", "path", "message"),
    [
        (
            {"replicaCount": 0},
            "signal-platform:redis.replicaCount",
            "needs a replica per shard",
        ),
        (
            {"persistence": "DISABLED"},
            "signal-platform:redis.persistence",
            "must persist its data",
        ),
    ],
)
def test_prod_redis_must_be_replicated_and_persistent(redis: dict, path: str, message: str):
    with pytest.raises(ConfigError) as exc:
        load("prod", redis={"shardCount": 3, **redis})
    text = str(exc.value)
    assert path in text and message in text and "us-central1" in text


def test_a_region_override_is_named_in_the_error():
    override = {"europe-west4": {"redis": {"shardCount": 1, "replicaCount": 0}}}
    with pytest.raises(ConfigError) as exc:
        load("prod", regionOverrides=override)
    assert "signal-platform:regionOverrides.europe-west4.redis.replicaCount" in str(exc.value)


def test_bad_maintenance_settings_are_rejected():
    with pytest.raises(ConfigError) as exc:
        load("dev", redis={"maintenanceDay": "FUNDAY", "maintenanceHour": 24})
    text = str(exc.value)
    assert "signal-platform:redis.maintenanceDay" in text and "FUNDAY" in text
    assert "signal-platform:redis.maintenanceHour" in text and "<= 23" in text
