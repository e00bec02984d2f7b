"""Data-plane rules: Memorystore Redis, BigQuery, Pub/Sub, Cloud KMS and CMEK everywhere."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rules.iam_grants import PUBLIC_MEMBERS, iam_types_of, public_members
from rules.kit import (
    ADVISORY,
    MANDATORY,
    STACKS_SCHEMA,
    NotApplicable,
    Resource,
    Rules,
    StackResource,
    only_on_stacks,
    schema,
    string_list,
)
from rules.values import as_int, as_list, duration_seconds, get, is_unknown, shown

RULES = Rules("data")
REDIS_CLUSTER = "gcp:redis/cluster:Cluster"
REDIS_INSTANCE = "gcp:redis/instance:Instance"
DATASET = "gcp:bigquery/dataset:Dataset"
TABLE = "gcp:bigquery/table:Table"
TOPIC = "gcp:pubsub/topic:Topic"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
CRYPTO_KEY = "gcp:kms/cryptoKey:CryptoKey"
REPOSITORY = "gcp:artifactregistry/repository:Repository"

# Resource type → path to its customer-managed key.
CMEK_FIELDS: dict[str, tuple[str, ...]] = {
    DATASET: ("defaultEncryptionConfiguration", "kmsKeyName"),
    TOPIC: ("kmsKeyName",),
    REDIS_CLUSTER: ("kmsKey",),
    REDIS_INSTANCE: ("customerManagedKey",),
    REPOSITORY: ("kmsKeyName",),
    "gcp:storage/bucket:Bucket": ("encryption", "defaultKmsKeyName"),
    "gcp:compute/disk:Disk": ("diskEncryptionKey", "kmsKeySelfLink"),
    "gcp:sql/databaseInstance:DatabaseInstance": ("encryptionKeyName",),
}


@RULES.resource(
    "redis-transit-encryption",
    level=MANDATORY,
    description="Memorystore Redis encrypts traffic in transit (TLS).",
    source="Checkov CKV_GCP_97.",
    types={REDIS_CLUSTER, REDIS_INSTANCE},
)
def redis_transit_encryption(r: Resource) -> Iterator[str]:
    mode = get(r.props, "transitEncryptionMode")
    expected = (
        "TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION"
        if r.type == REDIS_CLUSTER
        else "SERVER_AUTHENTICATION"
    )
    if not is_unknown(mode) and mode != expected:
        yield f"transitEncryptionMode must be {expected} (got {shown(mode)})"


@RULES.resource(
    "redis-iam-auth",
    level=MANDATORY,
    description="Memorystore Redis requires authentication (IAM auth for Redis Cluster).",
    source="Checkov CKV_GCP_95; Memorystore docs, 'About IAM authentication'.",
    types={REDIS_CLUSTER, REDIS_INSTANCE},
)
def redis_iam_auth(r: Resource) -> Iterator[str]:
    if r.type == REDIS_CLUSTER:
        mode = get(r.props, "authorizationMode")
        if not is_unknown(mode) and mode != "AUTH_MODE_IAM_AUTH":
            yield f"authorizationMode must be AUTH_MODE_IAM_AUTH (got {shown(mode)})"
    else:
        enabled = get(r.props, "authEnabled")
        if enabled is not True and not is_unknown(enabled):
            yield "authEnabled must be true"


@RULES.resource(
    "redis-deletion-protection",
    level=MANDATORY,
    description=(
        "On production stacks, Memorystore Redis deletion protection is not switched off."
    ),
    source="Memorystore docs, 'Deletion protection'.",
    types={REDIS_CLUSTER, REDIS_INSTANCE},
    config=schema(STACKS_SCHEMA),
)
def redis_deletion_protection(r: Resource) -> Iterator[str]:
    only_on_stacks(r.config)
    field = "deletionProtectionEnabled" if r.type == REDIS_CLUSTER else "deletionProtection"
    if get(r.props, field) is False:
        yield f"{field} is false"


@RULES.resource(
    "redis-high-availability",
    level=ADVISORY,
    description="Memorystore Redis keeps replicas across zones.",
    source="Memorystore docs, 'High availability and replicas'.",
    types={REDIS_CLUSTER, REDIS_INSTANCE},
)
def redis_high_availability(r: Resource) -> Iterator[str]:
    if r.type == REDIS_CLUSTER:
        replicas = get(r.props, "replicaCount")
        if not is_unknown(replicas) and (as_int(replicas) or 0) < 1:
            yield "replicaCount must be at least 1 so a primary's loss does not lose its shard"
        if get(r.props, "zoneDistributionConfig", "mode") == "SINGLE_ZONE":
            yield "zoneDistributionConfig.mode SINGLE_ZONE: spread nodes across zones"
    else:
        tier = get(r.props, "tier")
        if not is_unknown(tier) and tier != "STANDARD_HA":
            yield f"tier must be STANDARD_HA (got {shown(tier)})"


@RULES.resource(
    "bigquery-no-public-access",
    level=MANDATORY,
    description=(
        "BigQuery datasets and tables grant nothing to allUsers or allAuthenticatedUsers."
    ),
    source="CIS Google Cloud 7.1; Checkov CKV_GCP_15.",
    types=lambda t: (
        t in (DATASET, "gcp:bigquery/datasetAccess:DatasetAccess") or iam_types_of("bigquery")(t)
    ),
)
def bigquery_public(r: Resource) -> Iterator[str]:
    if r.type == DATASET:
        for index, access in enumerate(as_list(get(r.props, "accesses"))):
            member = get(access, "specialGroup", default=get(access, "iamMember"))
            if member in PUBLIC_MEMBERS:
                yield f"accesses[{index}] grants {get(access, 'role')} to {member}"
    elif r.type == "gcp:bigquery/datasetAccess:DatasetAccess":
        member = get(r.props, "specialGroup", default=get(r.props, "iamMember"))
        if member in PUBLIC_MEMBERS:
            yield f"grants {get(r.props, 'role')} to {member}"
    else:
        yield from public_members(r)


@RULES.resource(
    "bigquery-deletion-protection",
    level=MANDATORY,
    description=(
        "On production stacks, BigQuery tables keep deletion protection and datasets do "
        "not delete their contents on destroy."
    ),
    source="Checkov CKV_GCP_121.",
    types={TABLE, DATASET},
    config=schema(STACKS_SCHEMA),
)
def bigquery_deletion_protection(r: Resource) -> Iterator[str]:
    only_on_stacks(r.config)
    if r.type == TABLE and get(r.props, "deletionProtection") is False:
        yield "deletionProtection is false"
    if r.type == DATASET and get(r.props, "deleteContentsOnDestroy") is True:
        yield "deleteContentsOnDestroy is true: destroying the dataset drops every table in it"


@RULES.resource(
    "bigquery-partition-filter",
    level=MANDATORY,
    description="Partitioned tables require a partition filter.",
    source="BigQuery docs, 'Set partition filter requirements'.",
    types={TABLE},
)
def bigquery_partition_filter(r: Resource) -> Iterator[str]:
    partitioned = (
        get(r.props, "timePartitioning") is not None
        or get(r.props, "rangePartitioning") is not None
    )
    if (
        not partitioned
        or get(r.props, "materializedView") is not None
        or get(r.props, "view") is not None
    ):
        raise NotApplicable("not a partitioned base table")
    required = get(r.props, "requirePartitionFilter")
    if required is not True and not is_unknown(required):
        yield "partitioned tables must set requirePartitionFilter: true so queries cannot scan every partition"


@RULES.resource(
    "bigquery-allowed-locations",
    level=MANDATORY,
    description="BigQuery datasets live in an allowed location (data residency).",
    source="BigQuery docs, 'Dataset locations'.",
    types={DATASET},
    config=schema(
        {"allowedLocations": string_list(["US", "EU", "us-central1", "us-east4", "europe-west4"])}
    ),
)
def bigquery_locations(r: Resource) -> Iterator[str]:
    location = get(r.props, "location")
    allowed = [str(a) for a in r.config["allowedLocations"]]
    if is_unknown(location):
        return
    if not isinstance(location, str):
        yield f"location must be set explicitly; allowed: {', '.join(allowed)}"
    elif location.lower() not in {a.lower() for a in allowed}:
        yield f"location {location!r} is not allowed; allowed: {', '.join(allowed)}"


@RULES.resource(
    "bigquery-materialized-view-refresh",
    level=ADVISORY,
    description="Materialized views refresh automatically within the configured interval.",
    source="BigQuery docs, 'Manage materialized views: refresh'.",
    types={TABLE},
    config=schema(
        {
            "minRefreshIntervalMs": {"type": "integer", "minimum": 60000, "default": 60000},
            "maxRefreshIntervalMs": {"type": "integer", "minimum": 60000, "default": 3600000},
        }
    ),
)
def materialized_view_refresh(r: Resource) -> Iterator[str]:
    view = get(r.props, "materializedView")
    if view is None:
        raise NotApplicable("not a materialized view")
    if get(view, "enableRefresh") is False:
        yield "materializedView.enableRefresh is false: the view goes stale"
        return
    interval = get(view, "refreshIntervalMs")
    if is_unknown(interval):
        return
    milliseconds = as_int(interval)
    if milliseconds is None:
        yield "materializedView.refreshIntervalMs must be set explicitly"
        return
    low, high = as_int(r.config["minRefreshIntervalMs"]), as_int(r.config["maxRefreshIntervalMs"])
    if low is not None and milliseconds < low:
        yield f"refreshIntervalMs {milliseconds} is below {low}: refreshes cost slots without gain"
    if high is not None and milliseconds > high:
        yield f"refreshIntervalMs {milliseconds} exceeds {high}: signals read stale aggregates"


@dataclass(frozen=True)
class DeadLetterTopics:
    """The stack's dead-letter topics: by value, and by URN where the engine says which
    resource each subscription's deadLetterPolicy depends on."""

    values: frozenset[str]
    urns: frozenset[str]
    any_unknown: bool


def dead_letter_topics(subscriptions: list[StackResource]) -> DeadLetterTopics:
    values, urns, unknown = set(), set(), False
    for s in subscriptions:
        topic = get(s.props, "deadLetterPolicy", "deadLetterTopic")
        if isinstance(topic, str) and topic:
            values.add(topic)
        unknown = unknown or is_unknown(topic)
        urns.update(s.property_dependencies.get("deadLetterPolicy", ()))
    return DeadLetterTopics(frozenset(values), frozenset(urns), unknown)


def reads_dead_letters(s: StackResource, dead_letters: DeadLetterTopics) -> bool | None:
    """Whether a subscription reads a dead-letter topic (its own dead-lettering would be
    circular); None when preview unknowns make it impossible to tell."""
    topic_urns = set(s.property_dependencies.get("topic", ()))
    if topic_urns and dead_letters.urns:
        return bool(topic_urns & dead_letters.urns)  # the engine says which topic it reads
    topic = get(s.props, "topic")
    if isinstance(topic, str) and topic in dead_letters.values:
        return True
    if is_unknown(topic) and (dead_letters.any_unknown or dead_letters.urns):
        return None
    return False


def _subscriptions_to_check(resources: list[StackResource]) -> Iterator[StackResource]:
    subscriptions = [r for r in resources if r.type == SUBSCRIPTION]
    dead_letters = dead_letter_topics(subscriptions)
    for s in subscriptions:
        if reads_dead_letters(s, dead_letters) is False:
            yield s


RULES.resource(
    "pubsub-no-public-iam",
    level=MANDATORY,
    description=(
        "Pub/Sub topics, subscriptions and schemas grant nothing to allUsers or "
        "allAuthenticatedUsers."
    ),
    source="Pub/Sub docs, 'Access control with IAM'.",
    types=iam_types_of("pubsub"),
)(public_members)


@RULES.stack(
    "pubsub-dead-letter",
    level=MANDATORY,
    description=(
        "Subscriptions park undeliverable messages on a dead-letter topic (except those "
        "reading a dead-letter topic of the stack)."
    ),
    source="Pub/Sub docs, 'Handle message failures'.",
    config=schema(
        {
            "maxDeliveryAttempts": {
                "type": "integer",
                "minimum": 5,
                "maximum": 100,
                "default": 10,
            }
        }
    ),
)
def subscription_dead_letter(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[tuple[str | None, str]]:
    limit = int(config["maxDeliveryAttempts"])
    for s in _subscriptions_to_check(resources):
        topic = get(s.props, "deadLetterPolicy", "deadLetterTopic")
        if not topic and not is_unknown(topic):
            yield (
                s.urn,
                (
                    "deadLetterPolicy.deadLetterTopic must be set so poison messages are parked, "
                    "not redelivered forever"
                ),
            )
            continue
        attempts = as_int(get(s.props, "deadLetterPolicy", "maxDeliveryAttempts"))
        if attempts is not None and attempts > limit:
            yield s.urn, f"deadLetterPolicy.maxDeliveryAttempts {attempts} exceeds {limit}"


@RULES.stack(
    "pubsub-retry-policy",
    level=MANDATORY,
    description=(
        "Subscriptions back off exponentially before redelivery (except those reading a "
        "dead-letter topic of the stack)."
    ),
    source="Pub/Sub docs, 'Handle message failures'.",
)
def subscription_retry(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[tuple[str | None, str]]:
    for s in _subscriptions_to_check(resources):
        policy = get(s.props, "retryPolicy")
        if is_unknown(policy):
            continue
        if not isinstance(policy, dict) or get(policy, "minimumBackoff") is None:
            yield (
                s.urn,
                (
                    "retryPolicy.minimumBackoff must be set: immediate redelivery hammers a failing "
                    "consumer"
                ),
            )


@RULES.resource(
    "kms-rotation",
    level=MANDATORY,
    description="Symmetric KMS keys rotate at least every 90 days.",
    source="CIS Google Cloud 1.10; Checkov CKV_GCP_43.",
    types={CRYPTO_KEY},
    config=schema({"maxRotationDays": {"type": "integer", "minimum": 1, "default": 90}}),
)
def kms_rotation(r: Resource) -> Iterator[str]:
    purpose = get(r.props, "purpose", default="ENCRYPT_DECRYPT")
    if purpose != "ENCRYPT_DECRYPT":
        raise NotApplicable(f"{purpose} keys cannot rotate automatically")
    period = get(r.props, "rotationPeriod")
    if is_unknown(period):
        return
    seconds = duration_seconds(period)
    limit_days = int(r.config["maxRotationDays"])
    if seconds is None:
        yield f"rotationPeriod must be set (at most {limit_days} days, e.g. '7776000s')"
    elif seconds > limit_days * 86400:
        yield f"rotationPeriod {period} is longer than {limit_days} days"


@RULES.resource(
    "kms-key-protected",
    level=MANDATORY,
    description="KMS keys are protected from deletion (protect option or a long destroy delay).",
    source="Checkov CKV_GCP_82.",
    types={CRYPTO_KEY},
    config=schema({"minDestroyScheduledDays": {"type": "integer", "minimum": 1, "default": 30}}),
)
def kms_protected(r: Resource) -> Iterator[str]:
    if r.protect:
        return
    scheduled = get(r.props, "destroyScheduledDuration")
    if is_unknown(scheduled):
        return
    seconds = duration_seconds(scheduled)
    minimum_days = int(r.config["minDestroyScheduledDays"])
    if seconds is None or seconds < minimum_days * 86400:
        yield (
            "protect the key (resource option protect=True) or set destroyScheduledDuration to at "
            f"least {minimum_days} days: destroying a key makes its data unreadable"
        )


RULES.resource(
    "kms-no-public-iam",
    level=MANDATORY,
    description="KMS keys and key rings grant nothing to allUsers or allAuthenticatedUsers.",
    source="CIS Google Cloud 1.9.",
    types=iam_types_of("kms"),
)(public_members)


@RULES.resource(
    "registry-vulnerability-scanning",
    level=ADVISORY,
    description=(
        "Docker repositories in Artifact Registry keep Artifact Analysis vulnerability "
        "scanning on (vulnerabilityScanningConfig.enablementConfig not DISABLED)."
    ),
    source="CIS GKE 5.1.1; Artifact Analysis docs, 'Scan images automatically'.",
    types={REPOSITORY},
)
def registry_vulnerability_scanning(r: Resource) -> Iterator[str]:
    if get(r.props, "format", default="DOCKER") != "DOCKER":
        raise NotApplicable("Artifact Analysis scans container images only")
    if get(r.props, "vulnerabilityScanningConfig", "enablementConfig") == "DISABLED":
        yield "vulnerabilityScanningConfig.enablementConfig is DISABLED: pushed images are never scanned"


@RULES.resource(
    "cmek-required",
    level=MANDATORY,
    description=(
        "Data services that support it encrypt with a customer-managed KMS key "
        "(BigQuery datasets, Pub/Sub topics, Redis, Artifact Registry, Storage buckets, "
        "disks, Cloud SQL instances)."
    ),
    source="CIS Google Cloud 7.3; Checkov CKV_GCP_81, CKV_GCP_83.",
    types=set(CMEK_FIELDS),
)
def cmek(r: Resource) -> Iterator[str]:
    path = CMEK_FIELDS[r.type]
    key = get(r.props, *path)
    if not key and not is_unknown(key):
        yield f"{'.'.join(path)} must name a Cloud KMS key (CMEK)"
