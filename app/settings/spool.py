"""The spool's configuration (section ``spool``; the spool is `app.spool`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from app.config_errors import ConfigModel


class SpoolConfig(ConfigModel):
    """The spool (section ``spool``): where acknowledged batches are made durable."""

    # Off: an ack means "applied in memory" only and a crash loses what the sinks had not
    # yet written (the benchmark's baseline).
    enabled: bool = True
    # None: <state dir>/signal-platform/spool/port-<server.port>, the state dir being
    # $XDG_STATE_HOME or ~/.local/state: stable across restarts of the same service.
    dir: Path | None = None
    fsync: bool = True  # off: durable against a process crash, not a machine crash
    segment_bytes: int = Field(default=64 * 1024 * 1024, ge=4096, le=2**31)
    max_bytes: int = Field(default=2 * 1024**3, ge=1024 * 1024)
    # Delivered segments are kept this long, so a retry after a restart still finds its ack.
    retain_s: float = Field(default=600.0, ge=0, le=7 * 86_400)
    checkpoint_interval_s: float = Field(default=0.2, gt=0, le=60)
