"""Data-plane rules through the real pack: Redis, BigQuery, Pub/Sub, KMS, CMEK."""

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
from tests.policies.test_sql import GOLDEN as SQL_GOLDEN
from tests.policies.test_sql import INSTANCE as SQL_INSTANCE
from tests.policies.test_storage import BUCKET_GOLDEN
from tools.analyzer import AnalyzerResource, PolicyPackProcess

REDIS_CLUSTER = "gcp:redis/cluster:Cluster"
REDIS_INSTANCE = "gcp:redis/instance:Instance"
DATASET = "gcp:bigquery/dataset:Dataset"
DATASET_ACCESS = "gcp:bigquery/datasetAccess:DatasetAccess"
DATASET_IAM = "gcp:bigquery/datasetIamMember:DatasetIamMember"
TABLE_IAM_POLICY = "gcp:bigquery/iamPolicy:IamPolicy"
TABLE = "gcp:bigquery/table:Table"
TOPIC = "gcp:pubsub/topic:Topic"
TOPIC_IAM = "gcp:pubsub/topicIAMMember:TopicIAMMember"
SUBSCRIPTION_IAM = "gcp:pubsub/subscriptionIAMBinding:SubscriptionIAMBinding"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
KEY = "gcp:kms/cryptoKey:CryptoKey"
KEY_IAM = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
KEYRING_IAM = "gcp:kms/keyRingIAMPolicy:KeyRingIAMPolicy"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
BUCKET = "gcp:storage/bucket:Bucket"
DISK = "gcp:compute/disk:Disk"
KMS = "projects/p/locations/us-central1/keyRings/data/cryptoKeys/{}"
REPOSITORY_GOLDEN = {
    "repositoryId": "images",
    "location": "us-central1",
    "format": "DOCKER",
    "kmsKeyName": KMS.format("ar"),
    "vulnerabilityScanningConfig": {"enablementConfig": "INHERITED"},
    "labels": COST_LABELS,
}

LEVELS = {
    "redis-transit-encryption": "mandatory",
    "redis-iam-auth": "mandatory",
    "redis-deletion-protection": "mandatory",
    "redis-high-availability": "advisory",
    "bigquery-no-public-access": "mandatory",
    "bigquery-deletion-protection": "mandatory",
    "bigquery-partition-filter": "mandatory",
    "bigquery-allowed-locations": "mandatory",
    "bigquery-materialized-view-refresh": "advisory",
    "pubsub-no-public-iam": "mandatory",
    "pubsub-dead-letter": "mandatory",
    "pubsub-retry-policy": "mandatory",
    "kms-rotation": "mandatory",
    "kms-key-protected": "mandatory",
    "kms-no-public-iam": "mandatory",
    "cmek-required": "mandatory",
    "registry-vulnerability-scanning": "advisory",
}

CLUSTER = {
    "name": "signal-cache",
    "region": "us-central1",
    "shardCount": 3,
    "replicaCount": 1,
    "nodeType": "REDIS_HIGHMEM_MEDIUM",
    "transitEncryptionMode": "TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION",
    "authorizationMode": "AUTH_MODE_IAM_AUTH",
    "deletionProtectionEnabled": True,
    "zoneDistributionConfig": {"mode": "MULTI_ZONE"},
    "kmsKey": KMS.format("redis"),
    "pscConfigs": [{"network": "projects/p/global/networks/signal"}],
    "labels": COST_LABELS,
}
INSTANCE = {
    "name": "signal-l2",
    "region": "us-central1",
    "tier": "STANDARD_HA",
    "memorySizeGb": 5,
    "authEnabled": True,
    "transitEncryptionMode": "SERVER_AUTHENTICATION",
    "customerManagedKey": KMS.format("redis"),
    "labels": COST_LABELS,
}
DATASET_GOLDEN = {
    "datasetId": "signals",
    "location": "US",
    "defaultEncryptionConfiguration": {"kmsKeyName": KMS.format("bigquery")},
    "accesses": [
        {"role": "OWNER", "specialGroup": "projectOwners"},
        {"role": "READER", "groupByEmail": "quants@example.com"},
        {"role": "WRITER", "iamMember": "serviceAccount:signal@p.iam.gserviceaccount.com"},
    ],
    "labels": COST_LABELS,
}
TABLE_GOLDEN = {
    "datasetId": "signals",
    "tableId": "ticks",
    "deletionProtection": True,
    "timePartitioning": {"type": "DAY", "field": "event_time"},
    "clusterings": ["symbol"],
    "requirePartitionFilter": True,
    "labels": COST_LABELS,
}
VIEW_GOLDEN = {
    "datasetId": "signals",
    "tableId": "ohlc_1m",
    "materializedView": {
        "query": "SELECT symbol, TIMESTAMP_TRUNC(event_time, MINUTE) AS t FROM ticks GROUP BY 1, 2",
        "enableRefresh": True,
        "refreshIntervalMs": 300000,
    },
    "labels": COST_LABELS,
}
TOPIC_GOLDEN = {"name": "signals", "kmsKeyName": KMS.format("pubsub"), "labels": COST_LABELS}
SUB_GOLDEN = {
    "name": "signals-to-bigquery",
    "topic": "projects/p/topics/signals",
    "ackDeadlineSeconds": 30,
    "deadLetterPolicy": {
        "deadLetterTopic": "projects/p/topics/signals-dlq",
        "maxDeliveryAttempts": 10,
    },
    "retryPolicy": {"minimumBackoff": "10s", "maximumBackoff": "600s"},
    "labels": COST_LABELS,
}
KEY_GOLDEN = {
    "name": "bigquery",
    "keyRing": "projects/p/locations/us-central1/keyRings/data",
    "rotationPeriod": "7776000s",
    "destroyScheduledDuration": "2592000s",
    "labels": COST_LABELS,
}
# The rules that guard production data apply to the stacks in their `stacks` config.
PROD_IS_TEST = {
    "redis-deletion-protection": {"stacks": ["test"]},
    "bigquery-deletion-protection": {"stacks": ["test"]},
}
MEMBER = {
    "role": "roles/pubsub.publisher",
    "member": "serviceAccount:signal@p.iam.gserviceaccount.com",
}


def public_policy(member: str) -> str:
    return json.dumps({"bindings": [{"role": "roles/bigquery.dataViewer", "members": [member]}]})


CASES = [
    ok("redis-transit-encryption", REDIS_CLUSTER, CLUSTER),
    ok("redis-transit-encryption", REDIS_INSTANCE, INSTANCE, "instance"),
    bad(
        "redis-transit-encryption",
        REDIS_CLUSTER,
        mutate(CLUSTER, {"transitEncryptionMode": "TRANSIT_ENCRYPTION_MODE_DISABLED"}),
        "disabled",
    ),
    bad(
        "redis-transit-encryption",
        REDIS_INSTANCE,
        mutate(INSTANCE, {"transitEncryptionMode": DELETE}),
        "instance-unset",
    ),
    ok("redis-iam-auth", REDIS_CLUSTER, CLUSTER),
    bad(
        "redis-iam-auth",
        REDIS_CLUSTER,
        mutate(CLUSTER, {"authorizationMode": "AUTH_MODE_DISABLED"}),
        "disabled",
    ),
    bad(
        "redis-iam-auth",
        REDIS_INSTANCE,
        mutate(INSTANCE, {"authEnabled": DELETE}),
        "instance-no-auth",
    ),
    ok("redis-deletion-protection", REDIS_CLUSTER, CLUSTER, config=PROD_IS_TEST),
    ok(
        "redis-deletion-protection",
        REDIS_CLUSTER,
        mutate(CLUSTER, {"deletionProtectionEnabled": DELETE}),
        "api-default",
        config=PROD_IS_TEST,
    ),
    ok(
        "redis-deletion-protection",
        REDIS_CLUSTER,
        mutate(CLUSTER, {"deletionProtectionEnabled": False}),
        "off-outside-prod",
    ),
    bad(
        "redis-deletion-protection",
        REDIS_CLUSTER,
        mutate(CLUSTER, {"deletionProtectionEnabled": False}),
        "off",
        config=PROD_IS_TEST,
    ),
    bad(
        "redis-deletion-protection",
        REDIS_INSTANCE,
        mutate(INSTANCE, {"deletionProtection": False}),
        "instance-off",
        config=PROD_IS_TEST,
    ),
    ok("redis-high-availability", REDIS_CLUSTER, CLUSTER),
    bad(
        "redis-high-availability",
        REDIS_CLUSTER,
        mutate(
            CLUSTER,
            {
                "replicaCount": 0,
                "zoneDistributionConfig": {"mode": "SINGLE_ZONE", "zone": "us-central1-a"},
            },
        ),
        "single-zone-no-replicas",
        expect=2,
    ),
    bad(
        "redis-high-availability", REDIS_INSTANCE, mutate(INSTANCE, {"tier": "BASIC"}), "basic-tier"
    ),
    ok("bigquery-no-public-access", DATASET, DATASET_GOLDEN),
    ok(
        "bigquery-no-public-access",
        DATASET_IAM,
        {"datasetId": "signals", **MEMBER},
        "private-iam-member",
    ),
    bad(
        "bigquery-no-public-access",
        DATASET,
        mutate(
            DATASET_GOLDEN,
            {"accesses": [{"role": "READER", "specialGroup": "allAuthenticatedUsers"}]},
        ),
        "special-group",
    ),
    bad(
        "bigquery-no-public-access",
        DATASET_ACCESS,
        {"datasetId": "signals", "role": "READER", "iamMember": "allUsers"},
        "dataset-access",
    ),
    bad(
        "bigquery-no-public-access",
        DATASET_IAM,
        {"datasetId": "signals", "role": "roles/bigquery.dataViewer", "member": "allUsers"},
        "public-iam-member",
    ),
    bad(
        "bigquery-no-public-access",
        TABLE_IAM_POLICY,
        {
            "datasetId": "signals",
            "tableId": "ticks",
            "policyData": public_policy("allAuthenticatedUsers"),
        },
        "table-policy",
    ),
    ok("bigquery-deletion-protection", TABLE, TABLE_GOLDEN, config=PROD_IS_TEST),
    ok("bigquery-deletion-protection", DATASET, DATASET_GOLDEN, "dataset", config=PROD_IS_TEST),
    ok(
        "bigquery-deletion-protection",
        TABLE,
        mutate(TABLE_GOLDEN, {"deletionProtection": False}),
        "off-outside-prod",
    ),
    bad(
        "bigquery-deletion-protection",
        TABLE,
        mutate(TABLE_GOLDEN, {"deletionProtection": False}),
        "table-off",
        config=PROD_IS_TEST,
    ),
    bad(
        "bigquery-deletion-protection",
        DATASET,
        mutate(DATASET_GOLDEN, {"deleteContentsOnDestroy": True}),
        "dataset-drops-contents",
        config=PROD_IS_TEST,
    ),
    ok("bigquery-partition-filter", TABLE, TABLE_GOLDEN),
    ok("bigquery-partition-filter", TABLE, VIEW_GOLDEN, "materialized-view"),
    bad(
        "bigquery-partition-filter",
        TABLE,
        mutate(TABLE_GOLDEN, {"requirePartitionFilter": DELETE}),
        "no-filter",
    ),
    bad(
        "bigquery-partition-filter",
        TABLE,
        mutate(
            TABLE_GOLDEN,
            {
                "timePartitioning": DELETE,
                "rangePartitioning": {
                    "field": "day",
                    "range": {"start": 0, "end": 100, "interval": 1},
                },
                "requirePartitionFilter": False,
            },
        ),
        "range-partitioned",
    ),
    ok("bigquery-allowed-locations", DATASET, DATASET_GOLDEN),
    ok(
        "bigquery-allowed-locations",
        DATASET,
        mutate(DATASET_GOLDEN, {"location": "us-central1"}),
        "regional",
    ),
    bad(
        "bigquery-allowed-locations",
        DATASET,
        mutate(DATASET_GOLDEN, {"location": "asia-northeast1"}),
        "tokyo",
    ),
    bad(
        "bigquery-allowed-locations", DATASET, mutate(DATASET_GOLDEN, {"location": DELETE}), "unset"
    ),
    bad(
        "bigquery-allowed-locations",
        DATASET,
        DATASET_GOLDEN,
        "configured-eu-only",
        config={"bigquery-allowed-locations": {"allowedLocations": ["EU"]}},
    ),
    ok("bigquery-materialized-view-refresh", TABLE, VIEW_GOLDEN),
    bad(
        "bigquery-materialized-view-refresh",
        TABLE,
        mutate(VIEW_GOLDEN, {"materializedView.enableRefresh": False}),
        "no-refresh",
    ),
    bad(
        "bigquery-materialized-view-refresh",
        TABLE,
        mutate(VIEW_GOLDEN, {"materializedView.refreshIntervalMs": 86400000}),
        "daily",
        message="exceeds 3600000",
    ),
    bad(
        "bigquery-materialized-view-refresh",
        TABLE,
        mutate(VIEW_GOLDEN, {"materializedView.refreshIntervalMs": DELETE}),
        "implicit-interval",
    ),
    ok("pubsub-no-public-iam", TOPIC_IAM, {"topic": "signals", **MEMBER}),
    bad(
        "pubsub-no-public-iam",
        TOPIC_IAM,
        {"topic": "signals", "role": "roles/pubsub.subscriber", "member": "allUsers"},
        "topic",
    ),
    bad(
        "pubsub-no-public-iam",
        SUBSCRIPTION_IAM,
        {
            "subscription": "s",
            "role": "roles/pubsub.subscriber",
            "members": ["group:quants@example.com", "allAuthenticatedUsers"],
        },
        "subscription-binding",
        message="allAuthenticatedUsers",
    ),
    ok("kms-rotation", KEY, KEY_GOLDEN),
    ok(
        "kms-rotation",
        KEY,
        mutate(KEY_GOLDEN, {"purpose": "ASYMMETRIC_SIGN", "rotationPeriod": DELETE}),
        "asymmetric",
    ),
    bad(
        "kms-rotation",
        KEY,
        mutate(KEY_GOLDEN, {"rotationPeriod": "31536000s"}),
        "yearly",
        message="longer than 90 days",
    ),
    bad("kms-rotation", KEY, mutate(KEY_GOLDEN, {"rotationPeriod": DELETE}), "never"),
    ok("kms-key-protected", KEY, KEY_GOLDEN),
    ok(
        "kms-key-protected",
        KEY,
        mutate(KEY_GOLDEN, {"destroyScheduledDuration": DELETE}),
        "protect-option",
        protect=True,
    ),
    bad(
        "kms-key-protected",
        KEY,
        mutate(KEY_GOLDEN, {"destroyScheduledDuration": DELETE}),
        "default-delay",
    ),
    bad(
        "kms-key-protected",
        KEY,
        mutate(KEY_GOLDEN, {"destroyScheduledDuration": "86400s"}),
        "one-day",
    ),
    ok(
        "kms-no-public-iam",
        KEY_IAM,
        {
            "cryptoKeyId": "k",
            "role": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            "member": MEMBER["member"],
        },
    ),
    bad(
        "kms-no-public-iam",
        KEY_IAM,
        {
            "cryptoKeyId": "k",
            "role": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            "member": "allUsers",
        },
        "key",
    ),
    bad(
        "kms-no-public-iam",
        KEYRING_IAM,
        {"keyRingId": "r", "policyData": public_policy("allUsers")},
        "keyring-policy",
    ),
    ok("cmek-required", DATASET, DATASET_GOLDEN, "dataset"),
    ok("registry-vulnerability-scanning", REPOSITORY, REPOSITORY_GOLDEN),
    ok(
        "registry-vulnerability-scanning",
        REPOSITORY,
        mutate(
            REPOSITORY_GOLDEN,
            {"format": "PYTHON", "vulnerabilityScanningConfig.enablementConfig": "DISABLED"},
        ),
        "not-images",
    ),
    bad(
        "registry-vulnerability-scanning",
        REPOSITORY,
        mutate(REPOSITORY_GOLDEN, {"vulnerabilityScanningConfig.enablementConfig": "DISABLED"}),
        "disabled",
        message="never scanned",
    ),
    ok("cmek-required", TOPIC, TOPIC_GOLDEN, "topic"),
    ok("cmek-required", REDIS_CLUSTER, CLUSTER, "redis-cluster"),
    ok("cmek-required", REDIS_INSTANCE, INSTANCE, "redis-instance"),
    ok(
        "cmek-required",
        TOPIC,
        mutate(TOPIC_GOLDEN, {"kmsKeyName": UNKNOWN}),
        "key-created-in-stack",
    ),
    ok(
        "cmek-required",
        REPOSITORY,
        {
            "repositoryId": "images",
            "location": "us-central1",
            "format": "DOCKER",
            "kmsKeyName": KMS.format("ar"),
            "labels": COST_LABELS,
        },
        "repository",
    ),
    ok("cmek-required", BUCKET, BUCKET_GOLDEN, "bucket"),
    ok("cmek-required", SQL_INSTANCE, SQL_GOLDEN, "sql-instance"),
    bad(
        "cmek-required",
        DATASET,
        mutate(DATASET_GOLDEN, {"defaultEncryptionConfiguration": DELETE}),
        "no-key-dataset",
    ),
    bad(
        "cmek-required",
        TOPIC,
        mutate(TOPIC_GOLDEN, {"kmsKeyName": DELETE}),
        "no-key-topic",
        message="kmsKeyName",
    ),
    bad(
        "cmek-required", REDIS_CLUSTER, mutate(CLUSTER, {"kmsKey": DELETE}), "no-key-redis-cluster"
    ),
    bad(
        "cmek-required",
        REDIS_INSTANCE,
        mutate(INSTANCE, {"customerManagedKey": DELETE}),
        "no-key-redis-instance",
    ),
    bad(
        "cmek-required",
        REPOSITORY,
        {
            "repositoryId": "images",
            "location": "us-central1",
            "format": "DOCKER",
            "labels": COST_LABELS,
        },
        "no-key-repository",
    ),
    bad("cmek-required", BUCKET, mutate(BUCKET_GOLDEN, {"encryption": DELETE}), "no-key-bucket"),
    bad(
        "cmek-required",
        SQL_INSTANCE,
        mutate(SQL_GOLDEN, {"encryptionKeyName": DELETE}),
        "no-key-sql-instance",
        message="encryptionKeyName must name a Cloud KMS key",
    ),
    bad(
        "cmek-required",
        DISK,
        {"name": "d", "zone": "us-central1-a", "labels": COST_LABELS},
        "disk",
        message="diskEncryptionKey.kmsKeySelfLink",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_data_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)


# Subscriptions: the stack knows which topics are dead-letter topics, and a subscription that
# reads one needs no dead-letter policy of its own.
DLQ = "projects/p/topics/signals-dlq"
DLQ_READER = {"name": "signals-dlq-inspect", "topic": DLQ, "labels": COST_LABELS}
NO_POLICIES = mutate(
    SUB_GOLDEN, {"name": "ticks-replay", "deadLetterPolicy": DELETE, "retryPolicy": DELETE}
)
TOPIC_URN = urn(TOPIC, "signals")
DLQ_URN = urn(TOPIC, "signals-dlq")


def subscriptions(*items: tuple[str, dict]) -> tuple[AnalyzerResource, ...]:
    return tuple(resource(SUBSCRIPTION, inputs, name) for name, inputs in items)


def with_property_deps(name: str, inputs: dict, deps: dict[str, list[str]]) -> AnalyzerResource:
    return AnalyzerResource(
        SUBSCRIPTION, name, urn(SUBSCRIPTION, name), inputs, property_dependencies=deps
    )


GOLDEN_SUBSCRIPTIONS = subscriptions(("main", SUB_GOLDEN), ("inspect", DLQ_READER))
# The pack resolves property dependencies to resources of the stack: the topics must be there.
TOPICS = (resource(TOPIC, TOPIC_GOLDEN, "signals"), resource(TOPIC, TOPIC_GOLDEN, "signals-dlq"))
UNKNOWN_TOPICS_MAIN = with_property_deps(
    "main",
    mutate(SUB_GOLDEN, {"topic": UNKNOWN, "deadLetterPolicy.deadLetterTopic": UNKNOWN}),
    {"topic": [TOPIC_URN], "deadLetterPolicy": [DLQ_URN]},
)

STACK_CASES = [
    *[
        StackCase(policy, GOLDEN_SUBSCRIPTIONS, 0, "dead-letter-reader-exempt")
        for policy in ("pubsub-dead-letter", "pubsub-retry-policy")
    ],
    StackCase(
        "pubsub-dead-letter",
        (*GOLDEN_SUBSCRIPTIONS, resource(SUBSCRIPTION, NO_POLICIES, "replay")),
        1,
        "absent",
        urns=(urn(SUBSCRIPTION, "replay"),),
        message="deadLetterPolicy.deadLetterTopic must be set",
    ),
    StackCase(
        "pubsub-dead-letter",
        subscriptions(("main", mutate(SUB_GOLDEN, {"deadLetterPolicy.maxDeliveryAttempts": 50}))),
        1,
        "too-many-attempts",
        config={"pubsub-dead-letter": {"maxDeliveryAttempts": 20}},
        message="maxDeliveryAttempts 50 exceeds 20",
    ),
    StackCase(
        "pubsub-dead-letter",
        subscriptions(("inspect", DLQ_READER)),
        1,
        "reader-of-an-ordinary-topic",
    ),
    StackCase(
        "pubsub-dead-letter",
        (
            *TOPICS,
            UNKNOWN_TOPICS_MAIN,
            with_property_deps(
                "inspect", mutate(DLQ_READER, {"topic": UNKNOWN}), {"topic": [DLQ_URN]}
            ),
        ),
        0,
        "reader-known-by-property-dependencies",
    ),
    StackCase(
        "pubsub-dead-letter",
        (
            *TOPICS,
            UNKNOWN_TOPICS_MAIN,
            with_property_deps(
                "replay", mutate(NO_POLICIES, {"topic": UNKNOWN}), {"topic": [TOPIC_URN]}
            ),
        ),
        1,
        "non-reader-known-by-property-dependencies",
        urns=(urn(SUBSCRIPTION, "replay"),),
    ),
    StackCase(
        "pubsub-dead-letter",
        subscriptions(
            ("main", mutate(SUB_GOLDEN, {"deadLetterPolicy.deadLetterTopic": UNKNOWN})),
            ("inspect", mutate(DLQ_READER, {"topic": UNKNOWN})),
        ),
        0,
        "unknown-during-preview",
    ),
    StackCase(
        "pubsub-retry-policy",
        (*GOLDEN_SUBSCRIPTIONS, resource(SUBSCRIPTION, NO_POLICIES, "replay")),
        1,
        "immediate-redelivery",
        urns=(urn(SUBSCRIPTION, "replay"),),
    ),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda c: c.id)
def test_data_stack_rule(pack: PolicyPackProcess, case: StackCase) -> None:
    assert_stack_case(pack, case, LEVELS)
