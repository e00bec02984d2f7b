"""Publishing's configuration (section ``publish``; the publisher is `app.publish`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from app.config_errors import ConfigModel

PUBSUB_MAX_MESSAGE_BYTES = 10_000_000

# How a published batch's payload is compressed (`app.batch_format`).
Codec = Literal["zstd", "lz4", "none"]


class PublishConfig(ConfigModel):
    """Batching, compression, retry and the sink of both topics."""

    # Off: nothing is published (the warehouse and the cache still get every batch); for
    # measuring what publishing costs, and for a replica whose records another one publishes.
    enabled: bool = True
    sink: Literal["local", "pubsub"] = "local"
    codec: Codec = "zstd"
    zstd_level: int = Field(default=3, ge=1, le=22)
    # A batch is sealed at this many rows (ticks or signals; on a schema topic, messages) ...
    max_messages: int = Field(default=500, ge=1, le=100_000)
    # ... or this many bytes before compression, or once it has waited max_latency_ms.
    max_bytes: int = Field(default=512 * 1024, ge=64, le=PUBSUB_MAX_MESSAGE_BYTES - 1024)
    max_latency_ms: float = Field(default=50.0, gt=0, le=60_000)
    buffer_max_messages: int = Field(default=200_000, ge=1)  # rows accepted, not yet delivered
    max_in_flight: int = Field(default=16, ge=1, le=1024)  # batches, across keys
    retry_initial_ms: float = Field(default=50.0, gt=0, le=60_000)
    retry_max_ms: float = Field(default=5_000.0, gt=0, le=600_000)
    # The local sink's directory. None: a fresh temporary one per sink, removed at close
    # (embedded runs leave nothing behind); set it to keep what was published.
    local_dir: Path | None = None
    dead_letter_dir: Path = Path(tempfile.gettempdir()) / "signal-platform" / "dead-letter"
    # The local topic files and the dead-letter files rotate at this size or age, keeping
    # this many rotated files each.
    local_max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    local_max_file_age_s: float = Field(default=3600.0, gt=0, le=30 * 86_400)
    local_max_files: int = Field(default=24, ge=1, le=100_000)
    project: str | None = None  # pubsub
    # Topic names as the infra declares them (infra/messaging.py): the schema topics take one
    # protobuf message each (TickBatch, Signal; the signals topic feeds BigQuery); the
    # compressed batches go to `<topic><batch_suffix>`.
    ticks_topic: str = Field(default="ticks", pattern=r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")
    signals_topic: str = Field(default="signals", pattern=r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")
    batch_suffix: str = Field(default="-batches", pattern=r"^[A-Za-z0-9._~+%-]{1,32}$")
    schema_topics: bool | None = None  # None: with the Pub/Sub sink only

    @property
    def publishes_schema_topics(self) -> bool:
        return self.sink == "pubsub" if self.schema_topics is None else self.schema_topics

    @model_validator(mode="after")
    def _check(self) -> PublishConfig:
        if self.sink == "pubsub" and not self.project:
            raise ValueError("sink = 'pubsub': project must be set")
        if self.buffer_max_messages < self.max_messages:
            raise ValueError(
                f"buffer_max_messages = {self.buffer_max_messages}: must be >= max_messages "
                f"({self.max_messages})"
            )
        if self.retry_max_ms < self.retry_initial_ms:
            raise ValueError(
                f"retry_max_ms = {self.retry_max_ms}: must be >= retry_initial_ms "
                f"({self.retry_initial_ms})"
            )
        return self
