"""The warehouse: one BigQuery dataset per stack, its tables and their materialized views.

Table schemas come from `app/schemas/tables.json`, the definition the service writes rows
against. Every table is partitioned by day on its event time, clustered by symbol (and model
where it applies) and refuses queries without a partition filter. Storage is billed on
compressed (physical) bytes. Data is encrypted with the warehouse CMEK key, and only service
accounts appear in the dataset's access list: no users, groups or special groups.

Derived data (SQL in `infra/sql/`): `bars_1m` and `signal_minutes` are incremental
materialized views refreshed every `bigquery.viewRefreshMinutes`; `bars_1m_vwap` and
`signal_daily` are logical views over them (see each file's header for why the split).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import pulumi
import pulumi_gcp as gcp

from app.schemas import Table, tables
from infra.config import BigQuerySettings
from infra.proto_schema import APP_PROTO_PATH, enum_numbers
from infra.settle import IAM_PROPAGATION, settle

SQL_DIR = Path(__file__).with_name("sql")
DAY_MS = 86_400_000


@dataclass(frozen=True)
class MaterializedView:
    name: str
    sources: tuple[str, ...]
    # Daily partitions aligned with the base table's; None where the base table is
    # range-partitioned (a view cannot re-partition integer ranges by time).
    partition_field: str | None
    clustering: tuple[str, ...]


@dataclass(frozen=True)
class LogicalView:
    name: str
    sources: tuple[str, ...]


MATERIALIZED_VIEWS: tuple[MaterializedView, ...] = (
    MaterializedView("bars_1m", ("ticks",), "minute", ("symbol",)),
    MaterializedView("signal_minutes", ("signals",), None, ("symbol", "model_version")),
)
LOGICAL_VIEWS: tuple[LogicalView, ...] = (
    LogicalView("bars_1m_vwap", ("bars_1m",)),
    LogicalView("signal_daily", ("signal_minutes", "bars_1m")),
)


def load_sql(name: str, project: str, dataset: str) -> str:
    """`infra/sql/<name>.sql` with its `${project}` and `${dataset}` filled in, and each enum
    value of the app's proto (`${DIRECTION_UP}`) by its number, as the BigQuery subscription
    writes an enum field."""
    text = (SQL_DIR / f"{name}.sql").read_text()
    numbers = enum_numbers(APP_PROTO_PATH.read_text())
    return Template(text).substitute(numbers, project=project, dataset=dataset).strip() + "\n"


def partitioning(spec: Table, expiration_ms: int) -> dict[str, Any]:
    """A table's partitioning arguments: daily on a TIMESTAMP, or daily ranges of an INT64.

    Integer-range partitions cannot expire by age (BigQuery applies partition expiration to
    time partitions only), so `signals` keeps its rows; it is one row per symbol per batch.
    """
    if spec.partition_range is None:
        return {
            "time_partitioning": {
                "type": "DAY",
                "field": spec.partition_field,
                "expiration_ms": expiration_ms,
            }
        }
    start, end, interval = spec.partition_range
    return {
        "range_partitioning": {
            "field": spec.partition_field,
            "range": {"start": start, "end": end, "interval": interval},
        }
    }


def table_path(project: str, dataset: str, table: str) -> str:
    """`project.dataset.table`, as BigQuery subscriptions and SQL name a table."""
    return f"{project}.{dataset}.{table}"


class Warehouse(pulumi.ComponentResource):
    """The stack's BigQuery dataset, base tables, materialized views and views."""

    def __init__(
        self,
        name: str,
        project_id: str,
        settings: BigQuerySettings,
        kms_key: gcp.kms.CryptoKey,
        writers: Mapping[str, pulumi.Input[str]],
        readers: Mapping[str, pulumi.Input[str]],
        labels: Mapping[str, str],
        deletion_protection: bool,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`writers`/`readers`: service-account emails by who they are."""
        super().__init__("signal:infra:Warehouse", name, None, opts)
        self.project_id = project_id
        self.dataset_id = settings.dataset_id
        expiration_ms = settings.partition_expiration_days * DAY_MS
        encryption: gcp.bigquery.DatasetDefaultEncryptionConfigurationArgsDict = {
            "kms_key_name": kms_key.id
        }
        table_encryption: gcp.bigquery.TableEncryptionConfigurationArgsDict = {
            "kms_key_name": kms_key.id
        }
        accesses: list[gcp.bigquery.DatasetAccessArgsDict] = [
            {"role": "WRITER", "user_by_email": email} for email in writers.values()
        ]
        accesses += [
            gcp.bigquery.DatasetAccessArgsDict(role="READER", user_by_email=email)
            for email in readers.values()
        ]
        self.dataset = gcp.bigquery.Dataset(
            name,
            dataset_id=settings.dataset_id,
            friendly_name="signal-platform warehouse",
            description="Ticks, features and signals, with their bars and daily signal quality",
            location=settings.location,
            storage_billing_model="PHYSICAL",
            default_partition_expiration_ms=expiration_ms,
            max_time_travel_hours=str(settings.time_travel_hours),
            default_encryption_configuration=encryption,
            accesses=accesses,
            delete_contents_on_destroy=not deletion_protection,
            labels=dict(labels),
            # Its id is fixed and a new location or key replaces it: the old one goes first
            # (protected where the stack protects its resources, so never there).
            opts=pulumi.ResourceOptions(
                parent=self, protect=deletion_protection, delete_before_replace=True
            ),
        )

        # The access list is a grant: Pub/Sub's BigQuery subscription checks its agent's write
        # access when it is created, so it waits for this.
        self.access_settled = settle(
            f"{name}-access-settle", [self.dataset], IAM_PROPAGATION, parent=self
        )

        def table_opts(depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.ResourceOptions:
            # A table's id is fixed and its key, partitioning and a view's query replace it:
            # the old table goes first (a new one beside it would collide, 409). In prod the
            # table's deletion protection refuses that delete, so a replacement stops there.
            return pulumi.ResourceOptions(
                parent=self, depends_on=list(depends_on), delete_before_replace=True
            )

        schemas = tables()
        self.tables: dict[str, gcp.bigquery.Table] = {}
        for table_name in settings.tables:
            spec: Table = schemas[table_name]
            self.tables[table_name] = gcp.bigquery.Table(
                f"{name}-{table_name}",
                dataset_id=self.dataset.dataset_id,
                table_id=table_name,
                description=spec.description,
                schema=json.dumps(spec.bigquery_schema()),
                **partitioning(spec, expiration_ms),
                require_partition_filter=True,
                clusterings=list(spec.clustering),
                encryption_configuration=table_encryption,
                deletion_protection=deletion_protection,
                labels=dict(labels),
                opts=table_opts(),
            )

        self.views: dict[str, gcp.bigquery.Table] = {}
        refresh_ms = settings.view_refresh_minutes * 60_000
        for view in MATERIALIZED_VIEWS:
            if not set(view.sources) <= set(self.tables):
                continue
            self.views[view.name] = gcp.bigquery.Table(
                f"{name}-{view.name}",
                dataset_id=self.dataset.dataset_id,
                table_id=view.name,
                materialized_view={
                    "query": load_sql(view.name, project_id, settings.dataset_id),
                    "enable_refresh": True,
                    "refresh_interval_ms": refresh_ms,
                    "allow_non_incremental_definition": False,
                },
                # Aligned with the base table's daily partitions, so an expired or rewritten
                # partition invalidates only the matching partition of the view.
                time_partitioning=(
                    {"type": "DAY", "field": view.partition_field} if view.partition_field else None
                ),
                clusterings=list(view.clustering),
                deletion_protection=deletion_protection,
                labels=dict(labels),
                opts=table_opts([self.tables[s] for s in view.sources]),
            )
        for logical in LOGICAL_VIEWS:
            if not set(logical.sources) <= set(self.views):
                continue
            self.views[logical.name] = gcp.bigquery.Table(
                f"{name}-{logical.name}",
                dataset_id=self.dataset.dataset_id,
                table_id=logical.name,
                view={
                    "query": load_sql(logical.name, project_id, settings.dataset_id),
                    "use_legacy_sql": False,
                },
                deletion_protection=deletion_protection,
                labels=dict(labels),
                opts=table_opts([self.views[s] for s in logical.sources]),
            )

        self.register_outputs(
            {"dataset": self.dataset.id, "tables": {k: t.id for k, t in self.tables.items()}}
        )

    def path(self, table: str) -> str:
        """`project.dataset.table` of one of this warehouse's tables."""
        return table_path(self.project_id, self.dataset_id, table)
