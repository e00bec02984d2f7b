"""The BigQuery warehouse as the policy pack sees it: dataset, tables, materialized views."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from app.schemas import tables
from infra.warehouse import LOGICAL_VIEWS, MATERIALIZED_VIEWS, load_sql
from tests.infra.stack_config import load
from tools.inventory import Inventory, Resource

DATASET = "gcp:bigquery/dataset:Dataset"
TABLE = "gcp:bigquery/table:Table"
COST_LABELS = {"cost-center", "env", "owner"}
REPO = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000


def tables_of(plan: Inventory) -> dict[str, Resource]:
    return {t.inputs["tableId"]: t for t in plan.of_type(TABLE)}


def test_one_dataset_in_the_configured_location(stack_plan: Inventory):
    config = load(stack_plan.stack)
    (dataset,) = stack_plan.of_type(DATASET)
    assert dataset.inputs["datasetId"] == config.bigquery.dataset_id
    assert dataset.inputs["location"] == config.bigquery.location == "US"


def test_dataset_storage_billing_expiry_and_time_travel(dev_plan: Inventory, prod_plan: Inventory):
    for plan, days, hours in ((dev_plan, 14, "48"), (prod_plan, 365, "168")):
        (dataset,) = plan.of_type(DATASET)
        assert dataset.inputs["storageBillingModel"] == "PHYSICAL"
        assert dataset.inputs["defaultPartitionExpirationMs"] == days * DAY_MS
        assert dataset.inputs["maxTimeTravelHours"] == hours


def test_dataset_is_cmek_encrypted_with_the_warehouse_key(stack_plan: Inventory):
    (dataset,) = stack_plan.of_type(DATASET)
    key = dataset.inputs["defaultEncryptionConfiguration"]["kmsKeyName"]
    assert key.endswith("/locations/us/keyRings/us-warehouse-keys/cryptoKeys/bigquery")
    assert set(dataset.inputs["labels"]) >= COST_LABELS


def test_dataset_access_is_service_accounts_only(stack_plan: Inventory):
    (dataset,) = stack_plan.of_type(DATASET)
    accesses = dataset.inputs["accesses"]
    assert accesses, "an explicit access list replaces BigQuery's project-role defaults"
    for access in accesses:
        assert set(access) == {"role", "userByEmail"}, access
        assert access["userByEmail"].endswith(".gserviceaccount.com"), access
        assert access["role"] in {"READER", "WRITER"}
    project = stack_plan.outputs["project"]
    writers = {a["userByEmail"] for a in accesses if a["role"] == "WRITER"}
    assert f"signal-service@{project}.iam.gserviceaccount.com" in writers


def test_dataset_protected_in_prod_only(dev_plan: Inventory, prod_plan: Inventory):
    (prod,) = prod_plan.of_type(DATASET)
    (dev,) = dev_plan.of_type(DATASET)
    assert prod.options["protect"] is True and prod.inputs["deleteContentsOnDestroy"] is False
    assert dev.options["protect"] is False and dev.inputs["deleteContentsOnDestroy"] is True


@pytest.mark.parametrize("name", ["ticks", "features", "signals"])
def test_tables_take_their_schema_from_the_shared_definition(stack_plan: Inventory, name: str):
    table = tables_of(stack_plan)[name]
    assert json.loads(table.inputs["schema"]) == tables()[name].bigquery_schema()
    assert table.inputs["description"] == tables()[name].description


@pytest.mark.parametrize(
    ("name", "clustering"),
    [("ticks", ["symbol"]), ("features", ["symbol"]), ("signals", ["symbol", "model_version"])],
)
def test_tables_partitioned_by_day_clustered_and_filter_required(
    stack_plan: Inventory, name: str, clustering: list[str]
):
    config = load(stack_plan.stack)
    table = tables_of(stack_plan)[name].inputs
    if name == "signals":
        # The Signal's nanosecond timestamp, in one partition per UTC day.
        assert "timePartitioning" not in table
        bounds = table["rangePartitioning"]["range"]
        assert table["rangePartitioning"]["field"] == "ts_ns"
        assert bounds["interval"] == 86_400 * 10**9
        assert bounds["start"] % bounds["interval"] == 0, "partitions start at midnight UTC"
        assert (bounds["end"] - bounds["start"]) // bounds["interval"] <= 10_000
    else:
        assert table["timePartitioning"] == {
            "type": "DAY",
            "field": "event_time",
            "expirationMs": config.bigquery.partition_expiration_days * DAY_MS,
        }
    assert table["requirePartitionFilter"] is True
    assert table["clusterings"] == clustering
    assert table["encryptionConfiguration"]["kmsKeyName"].endswith("/cryptoKeys/bigquery")
    assert set(table["labels"]) >= COST_LABELS


def test_deletion_protection_in_prod_only(dev_plan: Inventory, prod_plan: Inventory):
    assert {t.inputs["deletionProtection"] for t in prod_plan.of_type(TABLE)} == {True}
    assert {t.inputs["deletionProtection"] for t in dev_plan.of_type(TABLE)} == {False}


@pytest.mark.parametrize("view", MATERIALIZED_VIEWS, ids=lambda v: v.name)
def test_materialized_views_refresh_incrementally_on_the_configured_interval(
    stack_plan: Inventory, view
):
    config = load(stack_plan.stack)
    found = tables_of(stack_plan)
    mv = found[view.name]
    assert mv.inputs["materializedView"] == {
        "query": load_sql(view.name, config.project_id, config.bigquery.dataset_id),
        "enableRefresh": True,
        "refreshIntervalMs": config.bigquery.view_refresh_minutes * 60_000,
        "allowNonIncrementalDefinition": False,
    }
    if view.partition_field is None:
        assert "timePartitioning" not in mv.inputs
    else:
        assert mv.inputs["timePartitioning"] == {"type": "DAY", "field": view.partition_field}
    assert mv.inputs["clusterings"] == list(view.clustering)
    for source in view.sources:
        assert found[source].urn in mv.options["dependencies"]


def test_refresh_interval_differs_per_stack(dev_plan: Inventory, prod_plan: Inventory):
    def interval(plan: Inventory) -> int:
        return tables_of(plan)["bars_1m"].inputs["materializedView"]["refreshIntervalMs"]

    assert (interval(dev_plan), interval(prod_plan)) == (60 * 60_000, 15 * 60_000)


@pytest.mark.parametrize("view", LOGICAL_VIEWS, ids=lambda v: v.name)
def test_logical_views_use_standard_sql_over_the_materialized_views(stack_plan: Inventory, view):
    config = load(stack_plan.stack)
    found = tables_of(stack_plan)
    logical = found[view.name]
    assert logical.inputs["view"] == {
        "query": load_sql(view.name, config.project_id, config.bigquery.dataset_id),
        "useLegacySql": False,
    }
    assert f"`{config.project_id}.{config.bigquery.dataset_id}." in logical.inputs["view"]["query"]
    for source in view.sources:
        assert found[source].urn in logical.options["dependencies"]


def test_the_warehouse_is_the_tables_and_views_and_nothing_else(stack_plan: Inventory):
    expected = {"ticks", "features", "signals"}
    expected |= {v.name for v in MATERIALIZED_VIEWS} | {v.name for v in LOGICAL_VIEWS}
    assert set(tables_of(stack_plan)) == expected


def test_features_columns_are_the_engines_features():
    """The features table holds exactly what `app.features.FEATURES` names, after its keys
    (the symbol, the event time and its nanoseconds since the epoch)."""
    source = (REPO / "app" / "features.py").read_text()
    names: tuple[str, ...] = ()
    for node in ast.walk(ast.parse(source)):
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(getattr(t, "id", "") == "FEATURES" for t in targets):
            names = ast.literal_eval(node.value)
    assert names, "app/features.py defines FEATURES"
    assert tables()["features"].column_names == ("symbol", "event_time", "ts_ns", *names)


def test_schema_definition_rejects_what_bigquery_would(tmp_path, monkeypatch):
    import app.schemas as schemas

    bad = {
        "t": {
            "description": "",
            "partitioning": {"type": "DAY", "field": "when"},
            "clustering": ["symbol"],
            "columns": [{"name": "symbol", "type": "STRING", "mode": "REQUIRED"}],
        }
    }
    path = tmp_path / "tables.json"
    path.write_text(json.dumps(bad))
    monkeypatch.setattr(schemas, "TABLES_PATH", path)
    schemas.tables.cache_clear()
    try:
        with pytest.raises(
            ValueError, match="DAY partitioning needs a non-repeated TIMESTAMP column"
        ):
            schemas.tables()
    finally:
        schemas.tables.cache_clear()
