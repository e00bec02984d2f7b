"""Which shard a symbol belongs to: the stable hash, the shard count, and the sharding config.

A symbol's shard is ``shard_of(symbol, shards)``: the first 8 bytes of the SHA-256 digest
of the symbol's UTF-8 name, read as a big-endian unsigned 64-bit integer, modulo the
shard count. A symbol's name is its id written in decimal (``"17"``), the same string the
publisher uses as its ordering key. Any language computes it with a stock SHA-256, e.g.
``int.from_bytes(hashlib.sha256(b"17").digest()[:8], "big") % 16`` or, in Go,
``binary.BigEndian.Uint64(sha256.Sum256([]byte("17"))[:8]) % 16``.

The shard count (``sharding.shards``) is fixed for the life of a deployment: changing it
moves almost every symbol, so every replica and client must agree on it (a client that
sends another count is refused with the server's, see `app.server`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from pydantic import Field

from app.config_errors import ConfigModel, Problem

MAX_SHARDS = 4096
DEFAULT_SHARDS = 16


def shard_of(symbol: str | int, shards: int) -> int:
    """The shard of ``symbol`` (its name, or its id: written in decimal) among ``shards``."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards = {shards}: must be 1 to {MAX_SHARDS}")
    name = str(symbol) if isinstance(symbol, int) else symbol
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


class ShardTable:
    """``shard_of`` for symbol ids ``[0, n_symbols)``, computed once per id on first use."""

    def __init__(self, n_symbols: int, shards: int) -> None:
        shard_of("0", shards)  # refuses a bad count here, not on first use
        self.n_symbols = n_symbols
        self.shards = shards
        self._table = np.full(n_symbols, -1, dtype=np.int32)

    def of(self, symbols: np.ndarray) -> np.ndarray:
        """int32 shard of each id in ``symbols`` (ids already checked to be in range)."""
        found = self._table[symbols]
        if (found < 0).any():
            for s in np.unique(symbols[found < 0]).tolist():
                self._table[s] = shard_of(str(s), self.shards)
            found = self._table[symbols]
        return found

    def members(self, shard: int) -> np.ndarray:
        """The symbol ids of ``shard``, ascending (computes the whole table once)."""
        self.of(np.arange(self.n_symbols))
        return np.flatnonzero(self._table == shard)


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
        if self.journal_max_batches <= self.snapshot_every_batches:
            yield Problem(
                "journal_max_batches",
                f"must be above snapshot_every_batches ({self.snapshot_every_batches})",
                self.journal_max_batches,
            )
