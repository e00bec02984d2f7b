"""The warehouse's configuration (section ``warehouse``; the writers are `app.warehouse`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from app.config_errors import ConfigModel


class WarehouseConfig(ConfigModel):
    """Where rows go and how they are batched."""

    backend: Literal["duckdb", "bigquery"] = "duckdb"
    # The embedded warehouse file. None: a fresh temporary file per process run, removed at
    # close (so an embedded run starts empty); set it to keep history across restarts.
    duckdb_path: Path | None = None
    project: str | None = None  # bigquery
    dataset: str = Field(default="signals", pattern=r"^[a-z][a-z0-9_]{0,1023}$")
    batch_rows: int = Field(default=5_000, ge=1, le=1_000_000)
    flush_interval_s: float = Field(default=1.0, gt=0, le=3_600)
    max_backlog_rows: int = Field(default=500_000, ge=1)
    retry_initial_s: float = Field(default=0.2, gt=0, le=60)
    retry_max_s: float = Field(default=10.0, gt=0, le=3_600)
    history_days: int = Field(default=2, ge=1, le=3_650)  # how far back L3 reads look
    # DuckDB only (BigQuery expires partitions itself): rows older than this are deleted.
    retention_days: int | None = Field(default=90, ge=1, le=36_500)
    # Whether this writer writes the `signals` table. None: DuckDB yes; BigQuery no, since
    # there the signals topic's BigQuery subscription writes it (see infra/messaging.py).
    write_signals: bool | None = None

    @property
    def writes_signals(self) -> bool:
        return self.backend == "duckdb" if self.write_signals is None else self.write_signals

    @model_validator(mode="after")
    def _check(self) -> WarehouseConfig:
        if self.backend == "bigquery" and not self.project:
            raise ValueError("backend = 'bigquery': project must be set")
        if self.max_backlog_rows < self.batch_rows:
            raise ValueError(
                f"max_backlog_rows = {self.max_backlog_rows}: must be >= batch_rows "
                f"({self.batch_rows})"
            )
        return self
