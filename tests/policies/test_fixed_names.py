"""apply-fixed-name-replace through the real pack: named resources that a later update may
replace are deleted first (or protected); one change per violation. The replacement table is
the one `python -m tools diff` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.policies.cases import UNKNOWN, StackCase, assert_stack_case, resource, stack_case
from tools.analyzer import AnalyzerResource, PolicyPackProcess
from tools.diff.rules import TABLE_PATH, load_table

LEVELS = {"apply-fixed-name-replace": "mandatory"}

POOL = "gcp:container/nodePool:NodePool"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC = "gcp:pubsub/topic:Topic"
TABLE = "gcp:bigquery/table:Table"
KEY = "gcp:kms/cryptoKey:CryptoKey"
PSC = "gcp:networkconnectivity/serviceConnectionPolicy:ServiceConnectionPolicy"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"

GPU_POOL = {"name": "l4-spot", "cluster": "c1", "nodeConfig": {"spot": True}}
ORDERS = {"name": "orders-archive", "topic": "orders", "enableMessageOrdering": True}
BARS = {"datasetId": "signals", "tableId": "bars_1m", "timePartitioning": {"type": "DAY"}}


def named(type_: str, inputs: dict[str, Any], name: str, **kw: Any) -> AnalyzerResource:
    return resource(type_, inputs, name, **kw)


def golden(**replace: AnalyzerResource | None) -> tuple[AnalyzerResource, ...]:
    parts: dict[str, AnalyzerResource | None] = {
        "pool": named(POOL, GPU_POOL, "gpu", delete_before_replace=True),
        "subscription": named(SUBSCRIPTION, ORDERS, "orders", delete_before_replace=True),
        # Protected: a replacement is refused before anything is created.
        "table": named(TABLE, BARS, "bars", protect=True),
        # Replaced only when its name changes: the new name collides with nothing.
        "topic": named(TOPIC, {"name": "orders"}, "topic"),
        # Cloud KMS keys cannot be deleted: deleting first frees nothing.
        "key": named(
            KEY, {"name": "disks", "keyRing": "ring", "purpose": "ENCRYPT_DECRYPT"}, "key"
        ),
        # A prefix gets a random suffix: the replacement has a name of its own.
        "prefixed": named(POOL, {"namePrefix": "batch-", "cluster": "c1"}, "batch"),
        # pulumi-kubernetes deletes a named object first itself.
        "deployment": named(DEPLOYMENT, {"metadata": {"name": "web"}}, "web"),
    }
    parts.update(replace)
    return tuple(r for r in parts.values() if r is not None)


def case(
    label: str, resources: tuple[AnalyzerResource, ...], expect: int = 0, **kw: Any
) -> StackCase:
    return stack_case("apply-fixed-name-replace", label, resources, expect, **kw)


STACK_CASES = [
    case("golden", golden()),
    case(
        "node-pool-created-first",
        golden(pool=named(POOL, GPU_POOL, "gpu")),
        1,
        urns=(named(POOL, GPU_POOL, "gpu").urn,),
        message="has a fixed name ('l4-spot') and is replaced when initialNodeCount",
    ),
    case(
        "subscription-created-first", golden(subscription=named(SUBSCRIPTION, ORDERS, "orders")), 1
    ),
    case("table-unprotected", golden(table=named(TABLE, BARS, "bars")), 1, message="fixed tableId"),
    case(
        "service-connection-policy",
        golden(
            psc=named(
                PSC,
                {"name": "cache-psc", "network": "vpc", "serviceClass": "gcp-memorystore-redis"},
                "psc",
            )
        ),
        1,
    ),
    case(
        "name-known-after-the-update",
        golden(pool=named(POOL, {**GPU_POOL, "name": UNKNOWN}, "gpu")),
    ),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda c: c.id)
def test_fixed_name_rule(pack: PolicyPackProcess, case: StackCase) -> None:
    assert_stack_case(pack, case, LEVELS)


def test_the_pack_and_the_diff_read_one_table() -> None:
    """The pack imports nothing from tools: the diff reads the table where the pack keeps it."""
    pack_table = Path(__file__).parents[2] / "policies" / "rules" / "replace_on_change.yaml"
    assert TABLE_PATH.resolve() == pack_table.resolve()
    assert POOL in load_table().types
