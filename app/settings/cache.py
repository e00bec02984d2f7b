"""The cache hierarchy's configuration (section ``cache``; the hierarchy is `app.cache`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from app.config_errors import ConfigModel

_NODE_PATTERN = r"^[A-Za-z0-9_.\-]+:\d{1,5}$"


class RedisConfig(ConfigModel):
    """The L2 Redis Cluster (Memorystore in production)."""

    nodes: list[str] = Field(min_length=1)  # startup nodes, "host:port"
    tls: bool = False
    ca_file: Path | None = None  # CA bundle for TLS (Memorystore's server CA)
    auth: Literal["none", "password", "iam"] = "none"
    username: str | None = None
    password: SecretStr | None = None  # auth = "password"
    ttl_s: float = Field(default=300.0, gt=0, le=7 * 86_400)
    timeout_s: float = Field(default=0.25, gt=0, le=30)  # per command
    connect_timeout_s: float = Field(default=0.25, gt=0, le=30)
    # After a failure L2 is skipped this long, then one call probes it (a circuit breaker).
    cooldown_s: float = Field(default=0.5, ge=0, le=300)
    max_connections: int = Field(default=64, ge=1, le=10_000)
    retries: int = Field(default=0, ge=0, le=10)  # the cooldown, not retries, absorbs failures

    @model_validator(mode="after")
    def _check(self) -> RedisConfig:
        for i, node in enumerate(self.nodes):
            if not re.match(_NODE_PATTERN, node) or not 0 < int(node.rsplit(":", 1)[1]) < 65536:
                raise ValueError(f"nodes[{i}] = {node!r}: must be host:port with port 1-65535")
        if self.auth == "password" and self.password is None:
            raise ValueError("auth = 'password': password must be set")
        if self.auth != "password" and self.password is not None:
            raise ValueError(f"password is set but auth = {self.auth!r}: set auth = 'password'")
        if self.ca_file is not None and not self.tls:
            raise ValueError(f"ca_file = {str(self.ca_file)!r} needs tls = true")
        return self


class CacheConfig(ConfigModel):
    """The cache hierarchy. No ``redis`` section: L1 (and L3) only."""

    l1_max_entries: int = Field(default=100_000, ge=1, le=100_000_000)
    l1_ttl_s: float = Field(default=2.0, gt=0, le=86_400)
    redis: RedisConfig | None = None
    read_through_warehouse: bool = True
    # No read path (in-process store, L1, L2, L3) answers a signal computed longer ago than
    # this; None: no limit.
    max_signal_age_s: float | None = Field(default=60.0, gt=0, le=30 * 86_400)
