"""Sharding's configuration (section ``sharding``; shards and their owners are `app.shards`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

from app.config_errors import ConfigModel, Problem

MAX_SHARDS = 4096
DEFAULT_SHARDS = 16


class ShardingConfig(ConfigModel):
    """Section ``sharding``: symbols in a fixed number of shards, each owned by one replica.

    Off (the default), one process owns every shard and nothing is coordinated. On, the
    replicas coordinate through the Redis Cluster of ``cache.redis``: see `app.lease`.
    """

    enabled: bool = False
    shards: int = Field(default=DEFAULT_SHARDS, ge=1, le=MAX_SHARDS)
    # host:port the other replicas and the clients reach this one at (a refusal names it);
    # None: server.host and the port the server listens on.
    advertise: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
    # A batch or read of a shard another replica owns is sent on to the owner (one hop,
    # plaintext: inside the mesh, Istio's mTLS) rather than refused; the answer names the
    # owner, so a client goes there directly next time.
    forward: bool = True
    # Redis keys are "<key_prefix>:{shard-<n>}:..." (hash-tagged: one slot per shard).
    key_prefix: str = Field(default="signals", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    # A lease not renewed for this long is free; an owner stops computing a shard as soon
    # as it cannot prove it renewed within it (see app.lease, failure modes).
    lease_ttl_s: float = Field(default=10.0, ge=0.2, le=600)
    renew_interval_s: float = Field(default=2.0, ge=0.05, le=200)
    # A shard's state is snapshot into Redis this often, or after this many batches, and its
    # journal (the batches since the snapshot) trimmed; a journal this long refuses batches.
    snapshot_interval_s: float = Field(default=5.0, ge=0.05, le=3600)
    snapshot_every_batches: int = Field(default=2000, ge=1, le=10_000_000)
    # A snapshot keeps at least this many of the newest journal records, so the next owner
    # still recognises a retry of a batch acknowledged just before the shard moved.
    journal_keep_batches: int = Field(default=1000, ge=0, le=10_000_000)
    journal_max_batches: int = Field(default=20_000, ge=2, le=100_000_000)
    # SIGTERM: how long the replica may take to snapshot and hand its shards over.
    handover_timeout_s: float = Field(default=10.0, gt=0, le=600)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        if self.renew_interval_s * 3 > self.lease_ttl_s:
            yield Problem(
                "renew_interval_s", "must be at most a third of lease_ttl_s "
                f"({self.lease_ttl_s:g} s): a lease must survive two missed renewals",
                self.renew_interval_s,
            )  # fmt: skip
        room = self.snapshot_every_batches + self.journal_keep_batches
        if self.journal_max_batches <= room:
            yield Problem(
                "journal_max_batches",
                f"must be above snapshot_every_batches + journal_keep_batches ({room})",
                self.journal_max_batches,
            )
