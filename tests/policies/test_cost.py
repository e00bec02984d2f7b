"""Cost rules through the real pack: labels (own or provider defaults), regions, budget."""

from __future__ import annotations

import json

import pytest

from tests.policies.cases import (
    COST_LABELS,
    DELETE,
    UNKNOWN,
    Case,
    StackCase,
    assert_case,
    assert_stack_case,
    bad,
    mutate,
    ok,
    resource,
    urn,
)
from tests.policies.test_data import TOPIC_GOLDEN
from tests.policies.test_gke import GOLDEN as CLUSTER_GOLDEN
from tests.policies.test_nodepool import SYSTEM as POOL_GOLDEN
from tests.policies.test_storage import BUCKET_GOLDEN
from tools.analyzer import PolicyPackProcess

TOPIC = "gcp:pubsub/topic:Topic"
CLUSTER = "gcp:container/cluster:Cluster"
POOL = "gcp:container/nodePool:NodePool"
ALERT = "gcp:monitoring/alertPolicy:AlertPolicy"
ACCOUNT = "gcp:serviceaccount/account:Account"
SUBNET = "gcp:compute/subnetwork:Subnetwork"
BUCKET = "gcp:storage/bucket:Bucket"
FUNCTION = "gcp:cloudfunctions/function:Function"
RUN_SERVICE = "gcp:cloudrunv2/service:Service"
RUN_V1_SERVICE = "gcp:cloudrun/service:Service"
PROVIDER = "pulumi:providers:gcp"
STACK = "pulumi:pulumi:Stack"

LEVELS = {
    "cost-required-labels": "mandatory",
    "cost-allowed-regions": "mandatory",
    "cost-monthly-budget": "mandatory",
}

UNLABELLED_TOPIC = mutate(TOPIC_GOLDEN, {"labels": DELETE})
DEFAULT_LABELS = {"defaultLabels": COST_LABELS, "project": "signal-test", "region": "us-central1"}

CASES = [
    ok("cost-required-labels", TOPIC, TOPIC_GOLDEN, "own-labels"),
    ok(
        "cost-required-labels",
        TOPIC,
        UNLABELLED_TOPIC,
        "provider-default-labels",
        provider=DEFAULT_LABELS,
    ),
    ok(
        "cost-required-labels",
        TOPIC,
        UNLABELLED_TOPIC,
        "provider-default-labels-as-json",
        provider={"defaultLabels": json.dumps(COST_LABELS)},
    ),
    ok(
        "cost-required-labels",
        TOPIC,
        mutate(TOPIC_GOLDEN, {"labels": {"owner": "platform"}}),
        "merged",
        provider={"defaultLabels": {"cost-center": "trading", "env": "test"}},
    ),
    ok("cost-required-labels", TOPIC, mutate(TOPIC_GOLDEN, {"labels": UNKNOWN}), "unknown"),
    ok("cost-required-labels", ACCOUNT, {"accountId": "signal"}, "no-labels-exempt"),
    ok(
        "cost-required-labels",
        ALERT,
        {"displayName": "x", "userLabels": COST_LABELS, "combiner": "OR"},
        "user-labels",
    ),
    ok(
        "cost-required-labels",
        BUCKET,
        {"name": "b", "location": "US", "encryption": {"defaultKmsKeyName": "k"}},
        "bucket-labelled-by-gcp-defaultLabels",
        provider=DEFAULT_LABELS,
        strict=False,
    ),
    ok(
        "cost-required-labels",
        RUN_V1_SERVICE,
        {"name": "api", "location": "us-central1", "metadata": {"namespace": "p"}},
        "cloud-run-v1-metadata-labels-from-provider",
        provider=DEFAULT_LABELS,
        strict=False,
    ),
    bad("cost-required-labels", TOPIC, UNLABELLED_TOPIC, "none", message="cost-center, env, owner"),
    bad(
        "cost-required-labels",
        RUN_SERVICE,
        {"name": "api", "location": "us-central1", "labels": {"env": "test"}},
        "cloud-run-service-derived-from-the-sdk",
        message="missing cost labels cost-center, owner (set them in labels or the provider's",
        strict=False,
    ),
    bad(
        "cost-required-labels",
        "gcp:sql/databaseInstance:DatabaseInstance",
        {"databaseVersion": "POSTGRES_16", "settings": {"tier": "db-f1-micro"}},
        "sql-settings-user-labels-ignore-provider-defaults",
        provider=DEFAULT_LABELS,
        message="(set them in settings.userLabels)",
        strict=False,
    ),
    bad(
        "cost-required-labels",
        TOPIC,
        mutate(TOPIC_GOLDEN, {"labels.owner": ""}),
        "empty-value",
        message="missing cost labels owner",
    ),
    bad(
        "cost-required-labels",
        CLUSTER,
        mutate(CLUSTER_GOLDEN, {"resourceLabels": {"env": "test"}}),
        "cluster-resource-labels",
        message="cost-center, owner",
    ),
    bad(
        "cost-required-labels",
        POOL,
        mutate(POOL_GOLDEN, {"nodeConfig.resourceLabels": DELETE}),
        "node-pool-ignores-provider-defaults",
        provider=DEFAULT_LABELS,
        message="nodeConfig.resourceLabels)",
    ),
    bad(
        "cost-required-labels",
        ALERT,
        {"displayName": "x", "combiner": "OR"},
        "alert-without-user-labels",
        provider=DEFAULT_LABELS,
    ),
    bad(
        "cost-required-labels",
        "gcp:compute/vPNTunnel:VPNTunnel",
        {"name": "t", "region": "us-central1", "labels": {"team": "x"}},
        "table-type",
    ),
    bad(
        "cost-required-labels",
        "gcp:newservice/thing:Thing",
        {"name": "t", "labels": {"team": "x"}},
        "unknown-type-with-labels",
        config={"cost-required-labels": {"requiredLabels": ["team", "owner"]}},
        message="missing cost labels owner",
    ),
    ok("cost-allowed-regions", CLUSTER, CLUSTER_GOLDEN),
    ok("cost-allowed-regions", POOL, POOL_GOLDEN, "zones"),
    ok("cost-allowed-regions", BUCKET, BUCKET_GOLDEN, "multi-region"),
    ok("cost-allowed-regions", PROVIDER, DEFAULT_LABELS, "provider-in-region"),
    ok(
        "cost-allowed-regions",
        SUBNET,
        {"name": "s", "region": UNKNOWN, "ipCidrRange": "10.0.0.0/20"},
        "unknown",
    ),
    bad(
        "cost-allowed-regions",
        SUBNET,
        {"name": "s", "region": "me-central2", "ipCidrRange": "10.0.0.0/20"},
        "subnet",
    ),
    ok(
        "cost-allowed-regions",
        FUNCTION,
        {"name": "f", "runtime": "python312", "labels": COST_LABELS},
        "function-in-the-provider-region",
        provider=DEFAULT_LABELS,
        strict=False,
    ),
    bad(
        "cost-allowed-regions",
        FUNCTION,
        {"name": "f", "runtime": "python312", "labels": COST_LABELS},
        "function-in-gcp-region-me-central2",
        provider={**DEFAULT_LABELS, "region": "me-central2"},
        message="region (the provider's region) 'me-central2' is outside the allowed regions",
        strict=False,
    ),
    ok(
        "cost-allowed-regions",
        FUNCTION,
        {"name": "f", "region": "us-central1", "runtime": "python312", "labels": COST_LABELS},
        "own-region-wins-over-the-provider",
        provider={**DEFAULT_LABELS, "region": "me-central2"},
        strict=False,
    ),
    ok(
        "cost-allowed-regions",
        BUCKET,
        {"name": "b", "location": "EU", "labels": COST_LABELS},
        "bucket-location-is-never-the-provider-region",
        provider={**DEFAULT_LABELS, "region": "me-central2"},
        strict=False,
    ),
    bad(
        "cost-allowed-regions",
        "gcp:compute/instance:Instance",
        {"name": "vm", "machineType": "e2-small", "labels": COST_LABELS},
        "instance-in-the-provider-zone",
        provider={**DEFAULT_LABELS, "zone": "me-central2-a"},
        message="zone (the provider's zone) 'me-central2-a'",
        strict=False,
    ),
    bad(
        "cost-allowed-regions",
        POOL,
        mutate(POOL_GOLDEN, {"nodeLocations": ["us-central1-a", "southamerica-east1-b"]}),
        "node-location",
        message="nodeLocations[1]",
    ),
    bad(
        "cost-allowed-regions",
        PROVIDER,
        {"region": "australia-southeast1", "zone": "australia-southeast1-a"},
        "provider-in-australia",
        expect=2,
    ),
    bad(
        "cost-allowed-regions",
        CLUSTER,
        CLUSTER_GOLDEN,
        "configured-europe-only",
        config={"cost-allowed-regions": {"allowedRegions": ["europe-west4"]}},
    ),
    bad(
        "cost-allowed-regions",
        "gcp:kms/keyRing:KeyRing",
        {"name": "r", "location": "asia"},
        "multi-region-not-allowed",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cost_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)


STACK_ROOT = resource(STACK, {}, "signal-platform-test")
BUDGET = {"cost-monthly-budget": {"budgetMonthlyUsd": 5000}}

STACK_CASES = [
    StackCase("cost-monthly-budget", (STACK_ROOT,), 0, "not-configured"),
    StackCase(
        "cost-monthly-budget",
        (STACK_ROOT,),
        0,
        "within",
        config={"cost-monthly-budget": {"budgetMonthlyUsd": 5000, "estimatedMonthlyUsd": 4999.5}},
    ),
    StackCase("cost-monthly-budget", (STACK_ROOT,), 0, "estimate-missing", config=BUDGET),
    StackCase(
        "cost-monthly-budget",
        (STACK_ROOT,),
        1,
        "over",
        config={"cost-monthly-budget": {"budgetMonthlyUsd": 5000, "estimatedMonthlyUsd": 7250}},
        urns=(urn(STACK, "signal-platform-test"),),
        message="estimated $7,250.00/month exceeds the budget of $5,000.00/month",
    ),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda c: c.id)
def test_cost_stack_rule(pack: PolicyPackProcess, case: StackCase) -> None:
    assert_stack_case(pack, case, LEVELS)
