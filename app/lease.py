"""Shard leases in Redis Cluster, and everything they fence: members, snapshots, journals.

Keys (``P`` = ``sharding.key_prefix``; a shard's keys share the hash tag ``{shard-N}``,
hence one slot, so one Lua script can check the lease and write atomically):

* ``P:{shard-N}:lease``: ``"<token>|<address>#<instance>"``, set with ``NX PX <ttl>``: at
  most one holder at a time, freed by Redis itself when not renewed within the TTL. The
  instance (random per process) tells a restarted replica at the same address from the
  process that held the lease before it.
* ``P:{shard-N}:fence``: the shard's fencing counter. Each acquisition takes the next
  token (``INCR``), so tokens only grow; the lease value carries it.
* ``P:{shard-N}:snapshot``: the shard's state snapshot (`app.shards` ``SHARD_SNAPSHOT``).
* ``P:{shard-N}:journal``: a sorted set, score = the shard's batch sequence number,
  member = the batch's ``SpoolRecord`` (protobuf, ``app/proto/signals.proto``): every
  batch acknowledged since the snapshot, and the newest ones before it (so a retry of
  an acknowledged batch is recognised by the next owner).
* ``P:members``: a sorted set of live replicas (member = address, score = expiry in ms
  of the Redis server's clock), refreshed by each replica's heartbeat.

Every write of a shard (journal append, snapshot, trim) is one script that first checks
the lease still holds the writer's ``token|owner``: a replica whose lease expired (a
paused process, a partition) cannot write, even before anyone else takes the shard, and
a new owner's token differs from the old one. Times come from Redis (TTLs and ``TIME``),
never from the replicas' clocks.

Failure modes, and what they cost:

* A replica dies (SIGKILL, node loss): its leases expire after ``lease_ttl_s``; its
  shards are refused (UNAVAILABLE) until another replica takes them, loads the snapshot
  and replays the journal. Nothing acknowledged is lost: an ack waits for the journal.
* A replica pauses longer than the TTL (GC, SIGSTOP, partition) and wakes up: it stops
  computing a shard once it cannot show a renewal within the TTL (its own monotonic
  clock, measured from when the renewal was sent), and any write it still attempts is
  refused by the script; batches it had applied but not journaled are not acknowledged.
* A Redis failover: replication is asynchronous, so a journal append acknowledged by a
  master that dies before its replica copied it can be lost with the master. The
  replicas then keep serving from their own (intact) state, and the next takeover of
  that shard starts from what the new master holds. Memorystore's replicas make this a
  narrow window, not a guarantee; ``WAIT`` would close it at one more round trip.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from app.cache import redis_client_kwargs
from app.settings.cache import RedisConfig

# What a Redis call can raise when the cluster is unreachable or failing over.
REDIS_ERRORS = (TimeoutError, RedisError, RedisClusterException, OSError)

_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder then return {0, holder} end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. '|' .. ARGV[1], 'PX', ARGV[2])
return {token, ''}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# -1: fenced (the lease is not the writer's); -2: the journal is full.
_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return -2 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# Store the snapshot; drop journal records at or below ARGV[3] except the newest ARGV[4].
_SNAPSHOT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[2], ARGV[2])
local cut = tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
local kept = redis.call('ZRANGE', KEYS[3], -(keep + 1), -(keep + 1), 'WITHSCORES')
if #kept == 0 then return 1 end
cut = math.min(cut, tonumber(kept[2]))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', cut)
return 1
"""

# A new owner drops journal records after the last one it could replay (never acknowledged).
_TRUNCATE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return redis.call('ZREMRANGEBYSCORE', KEYS[2], '(' .. ARGV[2], '+inf')
"""

_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[2] ~= '0' then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


class LeaseError(RuntimeError):
    """Base of the lease store's refusals."""


class Fenced(LeaseError):
    """The writer's lease is gone (expired or taken over): the write was refused."""


class JournalFull(LeaseError):
    """The shard's journal holds ``journal_max_batches`` records: no snapshot trimmed it."""


@dataclass(frozen=True)
class Lease:
    """A held lease: the shard, the fencing token, and the value that proves it."""

    shard: int
    token: int
    owner: str

    @property
    def holder(self) -> str:
        return f"{self.token}|{self.owner}"


def owner_of(holder: bytes | str | None) -> str | None:
    """The owner's address in a lease value ``token|address#instance``."""
    if holder is None:
        return None
    text = holder.decode() if isinstance(holder, bytes) else holder
    return text.partition("|")[2].partition("#")[0] or None


class LeaseStore:
    """The Redis side of sharding: one cluster client, one script per operation."""

    def __init__(self, client: RedisCluster, key_prefix: str) -> None:
        self.client = client
        self.prefix = key_prefix

    @classmethod
    def from_config(cls, config: RedisConfig, key_prefix: str) -> LeaseStore:
        # Every script is safe to send twice (a repeated append or snapshot writes the same,
        # a repeated acquire finds this replica's own lease), so a dropped connection is
        # retried rather than costing a shard.
        kwargs = redis_client_kwargs(config)
        kwargs["retry"] = Retry(ExponentialBackoff(cap=0.2, base=0.02), max(config.retries, 3))
        return cls(RedisCluster(**kwargs), key_prefix)

    def key(self, shard: int, name: str) -> str:
        return f"{self.prefix}:{{shard-{shard}}}:{name}"

    @property
    def members_key(self) -> str:
        return f"{self.prefix}:members"

    # --- leases ------------------------------------------------------------------------------

    async def acquire(self, shard: int, owner: str, ttl_ms: int) -> Lease | str | None:
        """The lease for ``owner`` (``address#instance``) if it was free; else the current
        owner's address (None if unreadable)."""
        token, holder = await self.client.eval(
            _ACQUIRE, 2, self.key(shard, "lease"), self.key(shard, "fence"), owner, ttl_ms
        )
        if int(token) > 0:
            return Lease(shard, int(token), owner)
        held_token, _, held_by = holder.decode().partition("|")
        if held_by == owner:  # a retried acquire whose first answer was lost: it is ours
            return Lease(shard, int(held_token), owner)
        return owner_of(holder)

    async def renew(self, lease: Lease, ttl_ms: int) -> bool:
        """Extend the lease; False if it is no longer this holder's."""
        return bool(await self.client.eval(_RENEW, 1, self.key(lease.shard, "lease"),
                                           lease.holder, ttl_ms))  # fmt: skip

    async def release(self, lease: Lease) -> bool:
        """Free the lease now (a handover), if it is still this holder's."""
        return bool(await self.client.eval(_RELEASE, 1, self.key(lease.shard, "lease"),
                                           lease.holder))  # fmt: skip

    async def owners(self, shards: int) -> list[str | None]:
        """Each shard's owner address (None: free), read in one pipeline."""
        pipe = self.client.pipeline()
        for shard in range(shards):
            pipe.get(self.key(shard, "lease"))
        return [owner_of(value) for value in await pipe.execute()]

    # --- fenced writes -----------------------------------------------------------------------

    async def append(self, lease: Lease, seq: int, record: bytes, max_records: int) -> None:
        """Add batch ``seq`` of the shard to its journal; `Fenced` or `JournalFull`."""
        done = await self.client.eval(
            _APPEND, 2, self.key(lease.shard, "lease"), self.key(lease.shard, "journal"),
            lease.holder, seq, record, max_records,
        )  # fmt: skip
        if done == -1:
            raise Fenced(f"shard {lease.shard}: lease token {lease.token} no longer held")
        if done == -2:
            raise JournalFull(
                f"shard {lease.shard}: its journal holds {max_records} batches "
                "(sharding.journal_max_batches) and no snapshot has trimmed it"
            )

    async def write_snapshot(self, lease: Lease, snapshot: bytes, trim_through: int,
                             keep: int) -> None:  # fmt: skip
        """Store the shard's snapshot and trim its journal through ``trim_through``,
        keeping at least the newest ``keep`` records; `Fenced` if the lease is gone."""
        done = await self.client.eval(
            _SNAPSHOT, 3, self.key(lease.shard, "lease"), self.key(lease.shard, "snapshot"),
            self.key(lease.shard, "journal"), lease.holder, snapshot, trim_through, keep,
        )  # fmt: skip
        if done == -1:
            raise Fenced(f"shard {lease.shard}: lease token {lease.token} no longer held")

    async def truncate_after(self, lease: Lease, seq: int) -> int:
        """Drop journal records after ``seq``; returns how many."""
        done = await self.client.eval(_TRUNCATE, 2, self.key(lease.shard, "lease"),
                                      self.key(lease.shard, "journal"), lease.holder, seq)  # fmt: skip
        if done == -1:
            raise Fenced(f"shard {lease.shard}: lease token {lease.token} no longer held")
        return int(done)

    # --- reads -------------------------------------------------------------------------------

    async def load(self, shard: int) -> tuple[bytes | None, list[tuple[int, bytes]]]:
        """The shard's snapshot (None: none yet) and journal, ``(seq, record)`` ascending."""
        pipe = self.client.pipeline()
        pipe.get(self.key(shard, "snapshot"))
        pipe.zrange(self.key(shard, "journal"), 0, -1, withscores=True)
        snapshot, journal = await pipe.execute()
        return snapshot, [(int(score), member) for member, score in journal]

    # --- membership --------------------------------------------------------------------------

    async def heartbeat(self, address: str, ttl_ms: int) -> list[str]:
        """Say ``address`` is alive for ``ttl_ms`` (0: leave); the live members, sorted."""
        members: Sequence[bytes] = await self.client.eval(
            _HEARTBEAT, 1, self.members_key, address, ttl_ms
        )
        return sorted(m.decode() for m in members)

    async def leave(self, address: str) -> None:
        """Take ``address`` out of the live members (a replica shutting down)."""
        await self.client.zrem(self.members_key, address)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()
