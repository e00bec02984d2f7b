"""Messaging: Pub/Sub topics with schemas from the app's `.proto`, and their subscriptions.

Topics (names from `pubsub`):

- `ticks`: each message one `TickBatch` (schema-validated, binary protobuf). A TickBatch is
  already a batch, columnar and packed.
- `signals`: each message one `Signal` (schema-validated, binary protobuf). Its BigQuery
  subscription writes every message as one row of the warehouse's `signals` table, whose
  columns are the Signal's fields (`use_topic_schema`); undeliverable messages go to the
  dead-letter topic after `maxDeliveryAttempts`.
- `ticks-batches` and `signals-batches` (`<topic><batchSuffix>`): the service's compressed
  batches (app/publish.py): each message a `PublishedBatch` whose payload is a zstd or LZ4
  frame of one ordering shard's `TickBatch` or `SignalBatch` entries, its attributes naming
  the codec, schema version, record type, row count and sequence range; ordered per shard, so
  each symbol's in order. Consumers pull `signals-batches`.
- `signals-dead-letter`: what the BigQuery subscription could not write, kept for a pull.

Why two topics per stream: a BigQuery subscription with `use_topic_schema` needs each
message to be exactly one schema-encoded row, and Pub/Sub validates every message published
to a schema topic, so a compressed batch of many records can travel on neither. The schema
topics are the contract: validated, and written to BigQuery with no code; the batch topics
carry the hot path's compressed batches, which Pub/Sub does not validate (the envelope and the
entries are messages of the same `.proto`, read with stock libraries). Publishing a
Signal per message costs little on the wire, because the client library already batches
messages into one publish request (bounded by count, bytes and delay).

Every topic is encrypted with the warehouse's `pubsub` key, keeps messages
`messageRetentionDays`, and stores them only in the stack's regions. Publishing and
subscribing are granted per service account on each topic and subscription; the Pub/Sub
service agent gets only what dead-lettering and the BigQuery subscription need.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.config import PubSubSettings
from infra.proto_schema import APP_PROTO_PATH, extract_message, parse

TICKS_MESSAGE = "TickBatch"
SIGNALS_MESSAGE = "Signal"
PUBLISHER = "roles/pubsub.publisher"
SUBSCRIBER = "roles/pubsub.subscriber"


def schema_id(package: str, message: str) -> str:
    """`signals.v1` + `TickBatch` → `signals-v1-tick-batch`: versioned with the package."""
    kebab = re.sub(r"(?<!^)(?=[A-Z])", "-", message).lower()
    return "-".join([*package.split("."), kebab]) if package else kebab


def _seconds(days: int) -> str:
    return f"{days * 86400}s"


class Messaging(pulumi.ComponentResource):
    """The stack's topics, schemas, subscriptions and their IAM."""

    def __init__(
        self,
        name: str,
        agent_member: pulumi.Input[str],
        settings: PubSubSettings,
        regions: Sequence[str],
        kms_key: gcp.kms.CryptoKey,
        signals_table: str | None,
        signals_table_ready: Sequence[pulumi.Resource],
        publishers: Mapping[str, pulumi.Input[str]],
        consumers: Mapping[str, pulumi.Input[str]],
        labels: Mapping[str, str],
        proto_path: Path = APP_PROTO_PATH,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`agent_member`: the Pub/Sub service agent, which writes the BigQuery subscription's
        rows and dead letters (the component waits for it to exist: see `opts`).
        `signals_table`: `project.dataset.table` the BigQuery subscription writes (None: the
        stack's warehouse has no `signals` table, so no subscription writes one);
        `signals_table_ready`: what the subscription waits for, the table and the agent's write
        access to it in effect (Pub/Sub checks it when the subscription is created)."""
        super().__init__("signal:infra:Messaging", name, None, opts)
        self.settings = settings
        self.labels = dict(labels)
        self.retention = _seconds(settings.message_retention_days)
        self.retry: gcp.pubsub.SubscriptionRetryPolicyArgsDict = {
            "minimum_backoff": f"{settings.min_retry_backoff_seconds}s",
            "maximum_backoff": f"{settings.max_retry_backoff_seconds}s",
        }
        child = pulumi.ResourceOptions(parent=self)
        proto_text = proto_path.read_text()
        package = parse(proto_text).package

        self.schemas: dict[str, gcp.pubsub.Schema] = {}
        self.topics: dict[str, gcp.pubsub.Topic] = {}
        for topic_name, message in (
            (settings.ticks_topic, TICKS_MESSAGE),
            (settings.signals_topic, SIGNALS_MESSAGE),
        ):
            schema = gcp.pubsub.Schema(
                f"{topic_name}-schema",
                name=schema_id(package, message),
                type="PROTOCOL_BUFFER",
                definition=extract_message(proto_text, message),
                opts=child,
            )
            self.schemas[topic_name] = schema
            self.topics[topic_name] = self._topic(topic_name, regions, kms_key, schema)
            batches = f"{topic_name}{settings.batch_suffix}"
            self.topics[batches] = self._topic(batches, regions, kms_key)
        self.dead_letter = self._topic(settings.dead_letter_topic, regions, kms_key)

        dead_lettered: dict[str, gcp.pubsub.Subscription] = {}
        self.to_bigquery: gcp.pubsub.Subscription | None = None
        if signals_table is not None:
            self.to_bigquery = self._subscription(
                f"{settings.signals_topic}-to-bigquery",
                settings.signals_topic,
                bigquery_config={
                    "table": signals_table,
                    "use_topic_schema": True,
                    # Columns are exactly the Signal's fields: a field the table lacks is an
                    # error (the message dead-letters), never silently dropped.
                    "drop_unknown_fields": False,
                    "write_metadata": False,
                },
                depends_on=list(signals_table_ready),
            )
            dead_lettered[f"{settings.signals_topic}-to-bigquery"] = self.to_bigquery
        batches_topic = f"{settings.signals_topic}{settings.batch_suffix}"
        self.consumers = self._subscription(
            f"{batches_topic}-consumers",
            batches_topic,
            # Batches carry the symbol as ordering key: a consumer sees a symbol in order.
            enable_message_ordering=True,
        )
        dead_lettered[f"{batches_topic}-consumers"] = self.consumers
        # Without a subscription a message published to a topic is dropped: keep dead
        # letters until someone pulls them.
        self.dead_letters = gcp.pubsub.Subscription(
            f"{settings.dead_letter_topic}-inspect",
            name=f"{settings.dead_letter_topic}-inspect",
            topic=self.dead_letter.id,
            ack_deadline_seconds=settings.ack_deadline_seconds,
            message_retention_duration=self.retention,
            expiration_policy={"ttl": ""},
            labels=self.labels,
            # Fixed name, and a new topic replaces it: the old one goes first (else 409).
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

        # ---- IAM, per service account and per topic or subscription.
        for who, member in publishers.items():
            for topic_name, topic in self.topics.items():
                gcp.pubsub.TopicIAMMember(
                    f"{topic_name}-publisher-{who}",
                    topic=topic.name,
                    role=PUBLISHER,
                    member=member,
                    opts=child,
                )
        for who, member in consumers.items():
            gcp.pubsub.SubscriptionIAMMember(
                f"{batches_topic}-consumers-subscriber-{who}",
                subscription=self.consumers.name,
                role=SUBSCRIBER,
                member=member,
                opts=child,
            )
        # Dead-lettering: the agent republishes to the dead-letter topic and acks the source.
        gcp.pubsub.TopicIAMMember(
            f"{settings.dead_letter_topic}-publisher-pubsub-agent",
            topic=self.dead_letter.name,
            role=PUBLISHER,
            member=agent_member,
            opts=child,
        )
        for subscription_name, subscription in dead_lettered.items():
            gcp.pubsub.SubscriptionIAMMember(
                f"{subscription_name}-subscriber-pubsub-agent",
                subscription=subscription.name,
                role=SUBSCRIBER,
                member=agent_member,
                opts=child,
            )
        self.register_outputs({topic: t.id for topic, t in self.topics.items()})

    def _topic(
        self,
        topic_name: str,
        regions: Sequence[str],
        kms_key: gcp.kms.CryptoKey,
        schema: gcp.pubsub.Schema | None = None,
    ) -> gcp.pubsub.Topic:
        return gcp.pubsub.Topic(
            topic_name,
            name=topic_name,
            kms_key_name=kms_key.id,
            message_retention_duration=self.retention,
            message_storage_policy={"allowed_persistence_regions": list(regions)},
            schema_settings=(
                {"schema": schema.id, "encoding": "BINARY"} if schema is not None else None
            ),
            labels=self.labels,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _subscription(
        self,
        subscription_name: str,
        topic_name: str,
        depends_on: Sequence[pulumi.Resource] = (),
        **kwargs: Any,
    ) -> gcp.pubsub.Subscription:
        """A subscription that retries with backoff and dead-letters, and never expires."""
        return gcp.pubsub.Subscription(
            subscription_name,
            name=subscription_name,
            topic=self.topics[topic_name].id,
            ack_deadline_seconds=self.settings.ack_deadline_seconds,
            message_retention_duration=self.retention,
            dead_letter_policy={
                "dead_letter_topic": self.dead_letter.id,
                "max_delivery_attempts": self.settings.max_delivery_attempts,
            },
            retry_policy=self.retry,
            expiration_policy={"ttl": ""},
            labels=self.labels,
            # Fixed name, and its topic, ordering and filter replace it: the old one goes
            # first (a replacement created beside it would collide, 409).
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=list(depends_on), delete_before_replace=True
            ),
            **kwargs,
        )
