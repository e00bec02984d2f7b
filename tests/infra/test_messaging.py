"""Pub/Sub as the policy pack sees it, and its schemas checked against the app's `.proto`:
each declared definition is the extraction of `app/proto/signals.proto`, compiles with
protoc to one self-contained message, and reads the app's encoded messages unchanged."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

from app.schemas import tables
from infra.config import ConfigError
from infra.config.data import regions_within
from infra.messaging import schema_id
from infra.proto_schema import APP_PROTO_PATH, extract_message
from tests.infra.stack_config import load
from tools.inventory import Inventory, Resource

SCHEMA = "gcp:pubsub/schema:Schema"
TOPIC = "gcp:pubsub/topic:Topic"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC_IAM = "gcp:pubsub/topicIAMMember:TopicIAMMember"
SUBSCRIPTION_IAM = "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember"
COST_LABELS = {"cost-center", "env", "owner"}
FIELD = descriptor_pb2.FieldDescriptorProto
MESSAGES = {"ticks": "TickBatch", "signals": "Signal"}


def compile_proto(tmp_path: Path, name: str, text: str) -> descriptor_pb2.FileDescriptorSet:
    """protoc's descriptor of `text` (the well-known types on the include path)."""
    (tmp_path / name).write_text(text)
    out = tmp_path / f"{name}.pb"
    include = importlib.resources.files("grpc_tools") / "_proto"
    args = ["protoc", f"-I{tmp_path}", f"-I{include}", f"--descriptor_set_out={out}", name]
    assert protoc.main(args) == 0, f"protoc rejected {name}:\n{text}"
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def message_class(files: descriptor_pb2.FileDescriptorSet, full_name: str) -> type:
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


@pytest.fixture(scope="module")
def app_proto(tmp_path_factory) -> descriptor_pb2.FileDescriptorSet:
    return compile_proto(
        tmp_path_factory.mktemp("app"), "signals.proto", APP_PROTO_PATH.read_text()
    )


def app_message(app_proto, name: str) -> descriptor_pb2.DescriptorProto:
    (message,) = [m for m in app_proto.file[0].message_type if m.name == name]
    return message


def schemas(plan: Inventory) -> dict[str, Resource]:
    return {s.name.removesuffix("-schema"): s for s in plan.of_type(SCHEMA)}


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize("topic", ["ticks", "signals"])
def test_declared_schema_is_the_extraction_of_the_apps_proto(stack_plan: Inventory, topic: str):
    schema = schemas(stack_plan)[topic]
    assert schema.inputs["type"] == "PROTOCOL_BUFFER"
    assert schema.inputs["definition"] == extract_message(
        APP_PROTO_PATH.read_text(), MESSAGES[topic]
    )
    assert schema.inputs["name"] == schema_id("signals.v1", MESSAGES[topic])


@pytest.mark.parametrize("message", ["TickBatch", "Signal", "SignalBatch", "IngestAck"])
def test_extraction_compiles_to_one_self_contained_message(tmp_path, app_proto, message: str):
    definition = extract_message(APP_PROTO_PATH.read_text(), message)
    (file,) = compile_proto(tmp_path, "schema.proto", definition).file
    assert [m.name for m in file.message_type] == [message], "one top-level message"
    assert not file.dependency and not file.enum_type and not file.service
    extracted, original = file.message_type[0], app_message(app_proto, message)
    shape = lambda m: [(f.name, f.number, f.type, f.label) for f in m.field]  # noqa: E731
    assert shape(extracted) == shape(original)
    enums = {e.name: [(v.name, v.number) for v in e.value] for e in app_proto.file[0].enum_type}
    for field in extracted.field:
        if field.type == FIELD.TYPE_ENUM:
            (nested,) = [e for e in extracted.enum_type if field.type_name.endswith(f".{e.name}")]
            assert [(v.name, v.number) for v in nested.value] == enums[nested.name]


def test_the_apps_encoded_signal_reads_the_same_under_the_schema(tmp_path, app_proto):
    app_signal = message_class(app_proto, "signals.v1.Signal")
    schema = compile_proto(
        tmp_path, "s.proto", extract_message(APP_PROTO_PATH.read_text(), "Signal")
    )
    schema_signal = message_class(schema, "Signal")
    sent = app_signal(
        symbol=7,
        ts_ns=1_704_189_605_123_456_789,
        direction=3,
        strength=-0.25,
        confidence=0.75,
        model_version="signal/3",
    )
    received = schema_signal.FromString(sent.SerializeToString())
    assert received.SerializeToString() == sent.SerializeToString()
    assert (received.symbol, received.ts_ns, received.direction) == (
        7,
        1_704_189_605_123_456_789,
        3,
    )
    assert received.DESCRIPTOR.fields_by_name["direction"].enum_type.values_by_number[3].name == (
        "DIRECTION_UP"
    )


# Protobuf field type → the BigQuery column type a BigQuery subscription writes it into
# (Pub/Sub's schema compatibility table for Protocol Buffer types: an enum is its number).
BIGQUERY_TYPES = {
    FIELD.TYPE_INT32: "INT64",
    FIELD.TYPE_INT64: "INT64",
    FIELD.TYPE_SINT32: "INT64",
    FIELD.TYPE_SINT64: "INT64",
    FIELD.TYPE_SFIXED32: "INT64",
    FIELD.TYPE_SFIXED64: "INT64",
    FIELD.TYPE_UINT32: "INT64",
    FIELD.TYPE_FIXED32: "INT64",
    FIELD.TYPE_FLOAT: "FLOAT64",
    FIELD.TYPE_DOUBLE: "FLOAT64",
    FIELD.TYPE_STRING: "STRING",
    FIELD.TYPE_BYTES: "BYTES",
    FIELD.TYPE_BOOL: "BOOL",
    FIELD.TYPE_ENUM: "INT64",
}


def test_signals_table_columns_are_the_signal_messages_fields(app_proto):
    signal = app_message(app_proto, "Signal")
    columns = tables()["signals"].columns
    assert [c.name for c in columns] == [f.name for f in signal.field]
    for column, field in zip(columns, signal.field, strict=True):
        assert column.type == BIGQUERY_TYPES[field.type], column.name
        assert (column.mode == "REPEATED") == (field.label == FIELD.LABEL_REPEATED)
        # Pub/Sub refuses the subscription when the table requires a field the schema leaves
        # optional: only a proto2 `required` field may be a REQUIRED column.
        if column.mode == "REQUIRED":
            assert field.label == FIELD.LABEL_REQUIRED, column.name


# ---------------------------------------------------------------- topics


def topics(plan: Inventory) -> dict[str, Resource]:
    return {t.inputs["name"]: t for t in plan.of_type(TOPIC)}


def test_topics_schema_and_batch_and_dead_letter(stack_plan: Inventory):
    found = topics(stack_plan)
    assert set(found) == {
        "ticks",
        "signals",
        "ticks-batches",
        "signals-batches",
        "signals-dead-letter",
    }
    project = stack_plan.outputs["project"]
    for topic, message in MESSAGES.items():
        settings = found[topic].inputs["schemaSettings"]
        assert settings == {
            "schema": f"projects/{project}/schemas/{schema_id('signals.v1', message)}",
            "encoding": "BINARY",
        }
    for topic in ("ticks-batches", "signals-batches", "signals-dead-letter"):
        assert "schemaSettings" not in found[topic].inputs, "compressed frames are opaque bytes"


def test_topics_are_cmek_retained_and_stored_only_in_the_stacks_regions(
    dev_plan: Inventory, prod_plan: Inventory
):
    # Messages are stored only where the key that encrypts them lives (the warehouse's `us`
    # key): prod's europe-west4 publishers are routed to a US region (review.md #22).
    expected = {"dev": ["us-central1"], "prod": ["us-central1", "us-east4"]}
    for plan, retention in ((dev_plan, "86400s"), (prod_plan, "604800s")):
        regions = expected[plan.stack]
        assert set(regions) <= set(plan.outputs["regions"])
        for topic in plan.of_type(TOPIC):
            inputs = topic.inputs
            assert inputs["kmsKeyName"].endswith("/keyRings/us-warehouse-keys/cryptoKeys/pubsub")
            assert inputs["messageRetentionDuration"] == retention
            assert inputs["messageStoragePolicy"] == {"allowedPersistenceRegions": regions}
            assert set(inputs["labels"]) >= COST_LABELS


# ---------------------------------------------------------------- subscriptions


def subscriptions(plan: Inventory) -> dict[str, dict]:
    return {s.inputs["name"]: s for s in plan.of_type(SUBSCRIPTION)}


def test_bigquery_subscription_writes_signal_rows_with_the_topic_schema(stack_plan: Inventory):
    config = load(stack_plan.stack)
    found = subscriptions(stack_plan)
    sub = found["signals-to-bigquery"]
    project, dataset = config.project_id, config.bigquery.dataset_id
    assert sub.inputs["topic"].endswith("/topics/signals")
    assert sub.inputs["bigqueryConfig"] == {
        "table": f"{project}.{dataset}.signals",
        "useTopicSchema": True,
        "dropUnknownFields": False,
        "writeMetadata": False,
    }
    table = [
        t
        for t in stack_plan.of_type("gcp:bigquery/table:Table")
        if t.inputs["tableId"] == "signals"
    ]
    assert table[0].urn in sub.options["dependencies"]


def test_failed_deliveries_retry_then_dead_letter(stack_plan: Inventory):
    config = load(stack_plan.stack).pubsub
    dead_letter = topics(stack_plan)["signals-dead-letter"]
    for name in ("signals-to-bigquery", "signals-batches-consumers"):
        sub = subscriptions(stack_plan)[name].inputs
        assert sub["deadLetterPolicy"] == {
            "deadLetterTopic": f"projects/{stack_plan.outputs['project']}/topics/signals-dead-letter",
            "maxDeliveryAttempts": config.max_delivery_attempts,
        }
        assert sub["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
        assert sub["ackDeadlineSeconds"] == config.ack_deadline_seconds
        assert sub["expirationPolicy"] == {"ttl": ""}
        assert set(sub["labels"]) >= COST_LABELS
    assert dead_letter.inputs["name"] == config.dead_letter_topic
    inspect = subscriptions(stack_plan)["signals-dead-letter-inspect"].inputs
    assert inspect["topic"].endswith("/topics/signals-dead-letter"), "dead letters are kept"


def test_consumers_pull_the_compressed_batches_in_order(stack_plan: Inventory):
    sub = subscriptions(stack_plan)["signals-batches-consumers"].inputs
    assert sub["topic"].endswith("/topics/signals-batches")
    assert sub["enableMessageOrdering"] is True
    assert "pushConfig" not in sub and "bigqueryConfig" not in sub


# ---------------------------------------------------------------- IAM


def test_publishers_and_subscribers_are_service_accounts_on_single_resources(
    stack_plan: Inventory,
):
    project = stack_plan.outputs["project"]
    service = f"serviceAccount:signal-service@{project}.iam.gserviceaccount.com"
    publishers: dict[str, set[str]] = {}
    for grant in stack_plan.of_type(TOPIC_IAM):
        assert grant.inputs["role"] == "roles/pubsub.publisher"
        assert grant.inputs["member"].startswith("serviceAccount:")
        publishers.setdefault(grant.inputs["topic"], set()).add(grant.inputs["member"])
    agent = {m for members in publishers.values() for m in members if "gcp-sa-pubsub" in m}
    assert len(agent) == 1
    assert publishers == {
        "ticks": {service},
        "signals": {service},
        "ticks-batches": {service},
        "signals-batches": {service},
        "signals-dead-letter": agent,
    }
    subscribers: dict[str, set[str]] = {}
    for grant in stack_plan.of_type(SUBSCRIPTION_IAM):
        assert grant.inputs["role"] == "roles/pubsub.subscriber"
        subscribers.setdefault(grant.inputs["subscription"], set()).add(grant.inputs["member"])
    assert subscribers == {
        "signals-batches-consumers": {service, *agent},
        "signals-to-bigquery": agent,
    }


def test_the_pubsub_agent_may_write_the_warehouse(stack_plan: Inventory):
    (dataset,) = stack_plan.of_type("gcp:bigquery/dataset:Dataset")
    writers = {a["userByEmail"] for a in dataset.inputs["accesses"] if a["role"] == "WRITER"}
    assert any(w.endswith("@gcp-sa-pubsub.iam.gserviceaccount.com") for w in writers)


# ---------------------------------------------------------------- the extractor


NESTED = """
syntax = "proto3";
package acme.v2;
import "google/protobuf/timestamp.proto";

/* A block comment with a brace { that must not count. */
enum Side { SIDE_UNSPECIFIED = 0; SIDE_BUY = 1; }
message Leg {
  Side side = 1;
  map<string, Price> prices = 2;  // a map to another message
}
message Price { double value = 1; }
message Unused { string x = 1; }
message Order {
  repeated .acme.v2.Leg legs = 1;
  oneof kind {
    string note = 2;
    acme.v2.Side side = 3;
  }
  message Inner { int32 n = 1; }
  Inner inner = 4;
}
message Stamped { google.protobuf.Timestamp at = 1; }
service Orders { rpc Put(Order) returns (Order); }
"""


def test_extractor_nests_what_a_message_uses_transitively_and_nothing_else(tmp_path):
    definition = extract_message(NESTED, "Order")
    assert "Unused" not in definition and "service" not in definition
    assert "import" not in definition and "package" not in definition
    assert "acme.v2." not in definition, "qualified names resolve inside the message"
    (file,) = compile_proto(tmp_path, "order.proto", definition).file
    (order,) = file.message_type
    assert sorted(m.name for m in order.nested_type) == ["Inner", "Leg", "Price"]
    assert [e.name for e in order.enum_type] == ["Side"]


def test_extractor_refuses_imported_types_and_unknown_messages():
    with pytest.raises(ValueError, match="imported types"):
        extract_message(NESTED, "Stamped")
    with pytest.raises(KeyError, match="Nope"):
        extract_message(NESTED, "Nope")
    with pytest.raises(KeyError, match="no top-level message 'Side'"):
        extract_message(NESTED, "Side")


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("pubsub", "expected"),
    [
        ({"batchSuffix": "-dead-letter", "deadLetterTopic": "signals-dead-letter"}, "batchSuffix"),
        ({"ticksTopic": "goog-ticks"}, "signal-platform:pubsub.ticksTopic"),
        ({"signalsTopic": "ticks"}, "topic used twice"),
        ({"minRetryBackoffSeconds": 60, "maxRetryBackoffSeconds": 30}, "minRetryBackoffSeconds"),
        ({"maxDeliveryAttempts": 3}, "signal-platform:pubsub.maxDeliveryAttempts"),
    ],
)
def test_bad_pubsub_config_is_named_precisely(pubsub: dict, expected: str):
    with pytest.raises(ConfigError) as exc:
        load("dev", pubsub=pubsub)
    assert expected in str(exc.value)


def test_a_stack_with_no_region_in_the_keys_location_is_refused():
    """The topics' key lives in bigquery.location: a stack none of whose regions lies there
    could store no message, and is told so with the key path, the value and the fix."""
    with pytest.raises(ConfigError) as refused:
        load("dev", bigquery={"location": "EU"})
    assert str(refused.value) == (
        "Pulumi.dev.yaml: signal-platform:regions: no region of the stack lies in the Pub/Sub "
        "key's location 'EU' (bigquery.location), so no topic could store a message "
        "(got ['us-central1']); allowed: a region in EU, or a bigquery.location holding one"
    )
    assert regions_within("US", ("us-central1", "europe-west4", "us-east4")) == [
        "us-central1",
        "us-east4",
    ]
    assert regions_within("europe-west4", ("us-central1", "europe-west4")) == ["europe-west4"]
    assert regions_within("EU", ("us-central1", "europe-west4")) == ["europe-west4"]
