"""Warehouse table schemas: the one definition the infra declares and the service writes.

`tables.json` holds every table's columns, partitioning and clustering. The Pulumi program
(`infra/warehouse.py`) declares the BigQuery tables from it; the service writes rows that
match it (BigQuery in prod, DuckDB locally). Standard library only: the Pulumi program and
the service both import this module, so it must stay light.

Partitioning is by day on the event time: a TIMESTAMP column (`"type": "DAY"`), or, for
`signals`, whose columns are the protobuf `Signal`'s fields as its BigQuery subscription
writes them, daily integer ranges of the nanosecond timestamp (`"type": "RANGE"`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

TABLES_PATH = Path(__file__).with_name("tables.json")

BigQueryType = Literal["STRING", "INT64", "FLOAT64", "BOOL", "TIMESTAMP", "DATE", "BYTES"]
Mode = Literal["REQUIRED", "NULLABLE", "REPEATED"]

# BigQuery type → DuckDB type, for the embedded warehouse and the SQL tests.
DUCKDB_TYPES: dict[str, str] = {
    "STRING": "VARCHAR",
    "INT64": "BIGINT",
    "FLOAT64": "DOUBLE",
    "BOOL": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMP",
    "DATE": "DATE",
    "BYTES": "BLOB",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: BigQueryType
    mode: Mode
    description: str

    def to_bigquery(self) -> dict[str, str]:
        return {
            "name": self.name,
            "type": self.type,
            "mode": self.mode,
            "description": self.description,
        }


@dataclass(frozen=True)
class Table:
    """One warehouse table: partitioned by day on `partition_field`, clustered as listed."""

    name: str
    description: str
    partition_field: str
    clustering: tuple[str, ...]
    columns: tuple[Column, ...]
    # "DAY" (a TIMESTAMP column) or "RANGE" (an INT64 column in `partition_range` buckets).
    partition_type: Literal["DAY", "RANGE"] = "DAY"
    partition_range: tuple[int, int, int] | None = None  # (start, end, interval)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def bigquery_schema(self) -> list[dict[str, str]]:
        """The schema as BigQuery's API (and `bq mk --schema`) takes it."""
        return [c.to_bigquery() for c in self.columns]

    def duckdb_ddl(self) -> str:
        """`CREATE TABLE` for DuckDB with the same columns, types and NOT NULLs."""
        columns = ",\n  ".join(
            f"{c.name} {DUCKDB_TYPES[c.type]}{' NOT NULL' if c.mode == 'REQUIRED' else ''}"
            for c in self.columns
        )
        return f"CREATE TABLE {self.name} (\n  {columns}\n)"


def _table(name: str, raw: dict[str, Any]) -> Table:
    columns = tuple(
        Column(c["name"], c["type"], c.get("mode", "NULLABLE"), c.get("description", ""))
        for c in raw["columns"]
    )
    partitioning = raw["partitioning"]
    ranged = partitioning["type"] == "RANGE"
    table = Table(
        name=name,
        description=raw["description"],
        partition_field=partitioning["field"],
        clustering=tuple(raw["clustering"]),
        columns=columns,
        partition_type=partitioning["type"],
        partition_range=(
            (partitioning["start"], partitioning["end"], partitioning["interval"])
            if ranged
            else None
        ),
    )
    _check(table)
    return table


def _check(table: Table) -> None:
    names = table.column_names
    where = f"{TABLES_PATH.name}: {table.name}"
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: column names repeat: {names}")
    for column in table.columns:
        if column.type not in DUCKDB_TYPES:
            raise ValueError(f"{where}.{column.name}: unknown type {column.type!r}")
    partition = dict(zip(names, table.columns, strict=True)).get(table.partition_field)
    wanted = {"DAY": "TIMESTAMP", "RANGE": "INT64"}.get(table.partition_type)
    if wanted is None:
        raise ValueError(f"{where}: partitioning type must be DAY or RANGE")
    # NULL partitions (__NULL__) are allowed; a repeated column cannot partition.
    if partition is None or partition.type != wanted or partition.mode == "REPEATED":
        raise ValueError(
            f"{where}: {table.partition_type} partitioning needs a non-repeated {wanted} column"
        )
    if table.partition_range is not None:
        start, end, interval = table.partition_range
        if interval <= 0 or end <= start or (end - start) // interval > 10_000:
            raise ValueError(f"{where}: partition range must hold 1-10000 partitions")
    unknown = set(table.clustering) - set(names)
    if unknown or not 1 <= len(table.clustering) <= 4:
        raise ValueError(f"{where}: clustering must be 1-4 of its columns (got {table.clustering})")


@cache
def tables() -> dict[str, Table]:
    """Every warehouse table by name, validated."""
    raw = json.loads(TABLES_PATH.read_text())
    return {name: _table(name, spec) for name, spec in raw.items()}


def table(name: str) -> Table:
    known = tables()
    if name not in known:
        raise KeyError(f"no warehouse table {name!r}; known: {sorted(known)}")
    return known[name]
