"""The data platform's settings: Redis per region, the BigQuery warehouse, Pub/Sub topics."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from app.config_errors import Problem
from infra.config.base import Model

# Pub/Sub topic ids: 3-255 characters, starting with a letter, not starting with "goog".
TOPIC_ID_RE = re.compile(r"^(?!goog)[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")
# The regions of each multi-region location (a KMS key ring or BigQuery dataset there), by the
# prefix Google's region names share (Cloud KMS docs, "Cloud KMS locations": us, europe, asia).
MULTI_REGION_PREFIXES = {"us": "us-", "eu": "europe-", "europe": "europe-", "asia": "asia-"}


def regions_within(location: str, regions: Sequence[str]) -> list[str]:
    """The ``regions`` that lie in ``location``: a multi-region (`US`) or one region."""
    prefix = MULTI_REGION_PREFIXES.get(location.lower())
    if prefix is None:
        return [r for r in regions if r == location.lower()]
    return [r for r in regions if r.startswith(prefix)]


class RedisSettings(Model):
    shard_count: int = Field(default=3, ge=1, le=250)
    replica_count: int = Field(default=1, ge=0, le=5)
    node_type: Literal[
        "REDIS_SHARED_CORE_NANO",
        "REDIS_STANDARD_SMALL",
        "REDIS_HIGHMEM_MEDIUM",
        "REDIS_HIGHMEM_XLARGE",
    ] = "REDIS_HIGHMEM_MEDIUM"
    persistence: Literal["AOF", "RDB", "DISABLED"] = "AOF"
    aof_append_fsync: Literal["EVERYSEC", "ALWAYS", "NO"] = "EVERYSEC"
    rdb_snapshot_period: Literal["ONE_HOUR", "SIX_HOURS", "TWELVE_HOURS", "TWENTY_FOUR_HOURS"] = (
        "ONE_HOUR"
    )
    # Weekly maintenance window (UTC start hour, one hour long): a weekend, outside trading.
    maintenance_day: Literal[
        "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"
    ] = "SUNDAY"
    maintenance_hour: int = Field(default=5, ge=0, le=23)

    def prod_rules(self, region: str) -> Iterator[Problem]:
        if self.replica_count < 1:
            yield Problem(
                "replicaCount",
                f"prod Redis in {region} needs a replica per shard to fail over",
                self.replica_count,
                ">= 1",
            )
        if self.persistence == "DISABLED":
            yield Problem(
                "persistence",
                f"prod Redis in {region} must persist its data",
                self.persistence,
                "AOF or RDB",
            )


class BigQuerySettings(Model):
    location: str = "US"
    # Day partitions: a table holds at most 10,000 partitions (BigQuery's quotas).
    partition_expiration_days: int = Field(default=90, ge=1, le=10_000)
    time_travel_hours: int = Field(default=168, ge=48, le=168)
    tables: tuple[Literal["ticks", "features", "signals"], ...] = ("ticks", "features", "signals")
    view_refresh_minutes: int = Field(default=30, ge=1, le=10080)
    dataset_id: str = Field(default="signals", pattern=r"^[a-z][a-z0-9_]{0,1023}$")


class PubSubSettings(Model):
    ticks_topic: str = "ticks"
    signals_topic: str = "signals"
    message_retention_days: int = Field(default=7, ge=1, le=31)
    max_delivery_attempts: int = Field(default=10, ge=5, le=100)
    ack_deadline_seconds: int = Field(default=30, ge=10, le=600)
    # `<topic><batchSuffix>`: the compressed batch frames of each stream, opaque bytes to
    # Pub/Sub, so topics without a schema (infra/messaging.py says why).
    batch_suffix: str = Field(default="-batches", pattern=r"^[A-Za-z0-9._~+%-]{1,32}$")
    dead_letter_topic: str = "signals-dead-letter"
    min_retry_backoff_seconds: int = Field(default=10, ge=0, le=600)
    max_retry_backoff_seconds: int = Field(default=600, ge=0, le=600)

    def storage_rules(self, regions: Sequence[str], key_location: str) -> Iterator[Problem]:
        """Topics store messages only in the stack's regions inside their key's location
        (the warehouse's, `bigquery.location`): messages at rest stay where the key that
        encrypts them lives, so an outage or a residency rule of that location is one."""
        if not regions_within(key_location, regions):
            yield Problem(
                "",
                f"no region of the stack lies in the Pub/Sub key's location {key_location!r}"
                " (bigquery.location), so no topic could store a message",
                list(regions),
                f"a region in {key_location}, or a bigquery.location holding one",
            )

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        topics = {
            "ticksTopic": self.ticks_topic,
            "signalsTopic": self.signals_topic,
            "deadLetterTopic": self.dead_letter_topic,
        }
        for stream in (self.ticks_topic, self.signals_topic):
            topic = f"{stream}{self.batch_suffix}"
            if topic in topics.values():
                yield Problem(
                    "batchSuffix",
                    f"makes the batch topic {topic!r}, which is already a topic",
                    self.batch_suffix,
                    "a suffix that names new topics",
                )
        for key, topic in topics.items():
            if not TOPIC_ID_RE.match(topic):
                yield Problem(
                    key,
                    "not a valid Pub/Sub topic id",
                    topic,
                    "3-255 of letters, digits and ._~+%-, starting with a letter, not 'goog'",
                )
            elif list(topics.values()).count(topic) > 1:
                yield Problem(key, "topic used twice", topic, "distinct topics")
        if self.min_retry_backoff_seconds > self.max_retry_backoff_seconds:
            yield Problem(
                "minRetryBackoffSeconds",
                f"greater than maxRetryBackoffSeconds ({self.max_retry_backoff_seconds})",
                self.min_retry_backoff_seconds,
                "minRetryBackoffSeconds <= maxRetryBackoffSeconds",
            )
