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

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.lease import REDIS_ERRORS, Fenced, Lease, LeaseError, LeaseStore
from app.settings.shards import MAX_SHARDS, ShardingConfig
from app.signals import Signal

log = logging.getLogger(__name__)


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


# --- refusals --------------------------------------------------------------------------------


class ShardRefusal(Exception):
    """A batch or read refused for its shard; the server answers with the shard's facts as
    trailing metadata (`metadata`) so a client can go to the owner."""

    def __init__(self, message: str, shard: int, shards: int, owner: str | None) -> None:
        super().__init__(message)
        self.shard = shard
        self.shards = shards
        self.owner = owner

    def metadata(self) -> tuple[tuple[str, str], ...]:
        found = (("shard-count", str(self.shards)),)
        if self.shard >= 0:
            found += (("shard", str(self.shard)),)
        return found + ((("shard-owner", self.owner),) if self.owner else ())


class NotOwner(ShardRefusal):
    """Another replica owns the shard (FAILED_PRECONDITION, naming it)."""


class ShardUnavailable(ShardRefusal):
    """The shard is moving, loading or has no owner yet: retry (UNAVAILABLE)."""


class ShardBusy(ShardRefusal):
    """The shard's journal is as long as allowed: snapshots are behind (RESOURCE_EXHAUSTED)."""


class ShardCountMismatch(ShardRefusal):
    """The client splits by another shard count than the service (FAILED_PRECONDITION)."""


class BatchSpansShards(ValueError):
    """A batch with symbols of more than one shard (INVALID_ARGUMENT)."""


# --- the shard snapshot ----------------------------------------------------------------------

SHARD_SNAPSHOT_MAGIC = b"SIGSHARD"
SHARD_SNAPSHOT = """\
A shard snapshot (Redis key ``<prefix>:{shard-N}:snapshot``) is bytes: ``SIGSHARD``, a
little-endian uint32 header length, the header (UTF-8 JSON: ``version`` 1, ``shard``,
``shards``, ``state_seq``: the last journal sequence number whose ticks the state holds,
``signals_seq``: the last whose signals ``signals`` holds, ``taken_at_ns``, ``owner``,
``token``, and ``signals``: the shard's latest signals as columns ``symbol``, ``ts_ns``,
``direction``, ``strength``, ``confidence``, ``computed_at_ns``, ``model`` (an index into
``models``: ``[model_version, model_variant, model_sha256, backend]``)), then the feature
state of the shard's symbols as an ``app.state`` snapshot (``SIGSTATE``) to the end.
"""


@dataclass(frozen=True)
class ShardSnapshot:
    shard: int
    shards: int
    state_seq: int
    signals_seq: int
    taken_at_ns: int
    owner: str
    token: int
    state: bytes  # app.state SNAPSHOT_FORMAT
    signals: list[tuple[Signal, int]]  # (latest signal, computed_at_ns) per symbol that has one

    def encode(self) -> bytes:
        models: list[tuple[str, str, str, str]] = []
        columns: dict[str, list[Any]] = {k: [] for k in (
            "symbol", "ts_ns", "direction", "strength", "confidence", "computed_at_ns", "model")}  # fmt: skip
        for signal, computed_at in self.signals:
            model = (signal.model_version, signal.model_variant, signal.model_sha256,
                     signal.backend)  # fmt: skip
            if model not in models:
                models.append(model)
            for name, value in (("symbol", signal.symbol), ("ts_ns", signal.ts_ns),
                                ("direction", signal.direction), ("strength", signal.strength),
                                ("confidence", signal.confidence),
                                ("computed_at_ns", computed_at),
                                ("model", models.index(model))):  # fmt: skip
                columns[name].append(value)
        header = json.dumps({
            "version": 1, "shard": self.shard, "shards": self.shards,
            "state_seq": self.state_seq, "signals_seq": self.signals_seq,
            "taken_at_ns": self.taken_at_ns, "owner": self.owner, "token": self.token,
            "signals": columns, "models": models,
        }).encode()  # fmt: skip
        return SHARD_SNAPSHOT_MAGIC + struct.pack("<I", len(header)) + header + self.state

    @classmethod
    def decode(cls, data: bytes) -> ShardSnapshot:
        """The snapshot in ``data``; ValueError naming what is wrong."""
        if data[:8] != SHARD_SNAPSHOT_MAGIC or len(data) < 12:
            raise ValueError("shard snapshot: no SIGSHARD header")
        (length,) = struct.unpack_from("<I", data, 8)
        try:
            h = json.loads(data[12 : 12 + length])
            if h["version"] != 1:
                raise ValueError(f"shard snapshot: version {h['version']}; this build reads 1")
            c, models = h["signals"], [tuple(m) for m in h["models"]]
            signals = [
                (Signal(int(c["symbol"][i]), int(c["ts_ns"][i]), int(c["direction"][i]),
                        float(np.float32(c["strength"][i])),
                        float(np.float32(c["confidence"][i])), *models[c["model"][i]]),
                 int(c["computed_at_ns"][i]))
                for i in range(len(c["symbol"]))
            ]  # fmt: skip
            return cls(int(h["shard"]), int(h["shards"]), int(h["state_seq"]),
                       int(h["signals_seq"]), int(h["taken_at_ns"]), str(h["owner"]),
                       int(h["token"]), data[12 + length :], signals)  # fmt: skip
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"shard snapshot: malformed header ({exc!r})") from None


# --- ownership -------------------------------------------------------------------------------

Status = Literal["loading", "owned", "leaving", "lost"]


@dataclass(eq=False)
class ShardSlot:
    """A shard this replica holds the lease of, and where its journal stands."""

    shard: int
    symbols: np.ndarray
    lease: Lease
    valid_until: float  # monotonic: the lease is surely still held before then
    status: Status = "loading"
    applied_seq: int = 0  # the journal sequence number of the last batch applied here
    delivered_seq: int = 0  # ... and of the last one delivered (acknowledged)
    snapshot_seq: int = 0  # the state_seq of the last snapshot written
    snapshot_at: float = 0.0
    broken_at: int | None = None  # a batch not journaled: it and later ones are not acked
    pending: dict[int, asyncio.Future[bool]] = field(default_factory=dict)
    snapshotting: bool = False


class ShardHost:
    """What the ownership drives in the service: the pipeline's per-symbol state and the
    ingestor's idempotency index (implemented by `app.ingest.Ingestor`)."""

    def shard_state(self, symbols: np.ndarray) -> tuple[bytes, list[tuple[Signal, int]]]:
        raise NotImplementedError

    def adopt_shard(self, symbols: np.ndarray, snapshot: ShardSnapshot | None,
                    records: list[tuple[int, bytes]]) -> int:  # fmt: skip
        """Replace the state of ``symbols`` by the snapshot and the journal records after it;
        returns the last sequence number applied (stops at a gap)."""
        raise NotImplementedError


def rendezvous(address: str, shard: int) -> bytes:
    """This replica's preference for ``shard`` (replicas prefer different free shards)."""
    return hashlib.sha256(f"{address}/{shard}".encode()).digest()


class ShardOwnership:
    """This replica's shards: leases held and renewed, shards taken and handed over.

    Every ``renew_interval_s`` a round: a heartbeat into the live members, each lease
    renewed (a failed renewal drops the shard at once), the owners of all shards read,
    then a balance step: with ``m`` live replicas each should hold ``ceil(shards / m)``;
    a replica above that hands one shard over (snapshot, then release), one below takes
    free shards (acquire, load the snapshot, replay the journal). Snapshots are written
    every ``snapshot_interval_s`` or ``snapshot_every_batches``.

    The ingest path calls `admit` (before applying; raises a `ShardRefusal`), `applied`
    (the batch's journal sequence number), `journal` (the fenced append an ack waits for)
    and `ackable`; delivery advances the slot's ``delivered_seq``.
    """

    def __init__(self, config: ShardingConfig, n_symbols: int, store: LeaseStore,
                 host: ShardHost, *, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.config = config
        self.shards = config.shards
        self.table = ShardTable(n_symbols, config.shards)
        self.store = store
        self.host = host
        self.address = ""
        self.identity = ""  # address#instance: what this process's leases hold
        self.slots: dict[int, ShardSlot] = {}
        self.owners: list[str | None] = [None] * config.shards
        self.members: list[str] = []
        self._clock = clock
        self._ttl_ms = int(config.lease_ttl_s * 1000)
        self._task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._closing = False
        self._last_error = ""

    # --- the service's calls -----------------------------------------------------------------

    def admit(self, symbols: np.ndarray, client_shards: int | None = None) -> ShardSlot:
        """The shard of a batch's ``symbols`` if this replica may apply it now; else the
        refusal (another owner, moving, loading, none yet) or `BatchSpansShards`."""
        self._check_count(client_shards)
        of = self.table.of(symbols)
        shard = int(of[0])
        other = np.flatnonzero(of != shard)
        if other.size:
            i = int(other[0])
            raise BatchSpansShards(
                f"symbol[{i}] = {int(symbols[i])} is in shard {int(of[i])} but symbol[0] = "
                f"{int(symbols[0])} is in shard {shard}: with sharding.shards = {self.shards} "
                "a batch carries one shard's symbols (app.client.SignalClient splits batches)"
            )
        slot = self.slots.get(shard)
        if slot is not None and slot.status == "owned" and self._clock() < slot.valid_until:
            if slot.applied_seq - slot.snapshot_seq >= self._journal_room:
                raise ShardBusy(f"shard {shard}: {slot.applied_seq - slot.snapshot_seq} batches "
                                "since its last snapshot; retry shortly", shard, self.shards,
                                self.address)  # fmt: skip
            return slot
        raise self.refusal(shard)

    def check_read(self, symbol: int, client_shards: int | None = None) -> None:
        """Raise the refusal for a read of ``symbol`` if this replica does not own it now."""
        self._check_count(client_shards)
        shard = int(self.table.of(np.array([symbol], np.int32))[0])
        slot = self.slots.get(shard)
        if slot is None or slot.status != "owned" or self._clock() >= slot.valid_until:
            raise self.refusal(shard)

    def _check_count(self, client_shards: int | None) -> None:
        if client_shards is not None and client_shards != self.shards:
            raise ShardCountMismatch(
                f"the client splits symbols into {client_shards} shards; this service has "
                f"sharding.shards = {self.shards}", -1, self.shards, None)  # fmt: skip

    def refusal(self, shard: int) -> ShardRefusal:
        slot = self.slots.get(shard)
        if slot is not None and slot.status == "owned":  # held, but not renewed in time
            self._lose(slot, "its lease was not renewed within sharding.lease_ttl_s")
            slot = None
        if slot is not None:
            doing = "loading its state here" if slot.status == "loading" else "moving away"
            return ShardUnavailable(f"shard {shard} is {doing}; retry shortly", shard,
                                    self.shards, None)  # fmt: skip
        owner = self.owners[shard]
        if owner is not None and owner != self.address:
            return NotOwner(f"shard {shard} is owned by {owner}", shard, self.shards, owner)
        return ShardUnavailable(f"shard {shard} has no owner yet; retry shortly", shard,
                                self.shards, None)  # fmt: skip

    def applied(self, slot: ShardSlot) -> int:
        """The journal sequence number of a batch just applied to ``slot``'s symbols."""
        slot.applied_seq += 1
        slot.pending[slot.applied_seq] = asyncio.get_running_loop().create_future()
        if slot.applied_seq - slot.snapshot_seq >= self.config.snapshot_every_batches:
            self._spawn(self._snapshot(slot))
        return slot.applied_seq

    async def journal(self, slot: ShardSlot, seq: int, record: bytes | None) -> None:
        """Make batch ``seq`` durable in the shard's journal (``None``: it failed before
        that). A batch that is not journaled breaks the shard here: it and every later
        batch stay unacknowledged, and the shard is dropped (reloaded from Redis next)."""
        done = slot.pending.pop(seq, None)
        ok = False
        try:
            if record is not None and slot.broken_at is None:
                await self.store.append(slot.lease, seq, record, self.config.journal_max_batches)
                ok = True
        except (LeaseError, *REDIS_ERRORS) as exc:
            reason = f"batch {seq} not journaled: {exc}"
        else:
            reason = f"batch {seq} not journaled (the shard broke before it)"
        finally:
            if done is not None and not done.done():
                done.set_result(ok)
        if not ok:
            slot.broken_at = seq if slot.broken_at is None else min(slot.broken_at, seq)
            self._lose(slot, reason)
            raise ShardUnavailable(f"shard {slot.shard}: {reason}; retry", slot.shard,
                                   self.shards, None)  # fmt: skip

    def ackable(self, slot: ShardSlot, seq: int) -> None:
        """Raise unless every batch of the shard up to ``seq`` is journaled."""
        if slot.broken_at is not None and seq >= slot.broken_at:
            raise ShardUnavailable(f"shard {slot.shard}: batch {slot.broken_at} before this one "
                                   "was not journaled; retry", slot.shard, self.shards, None)  # fmt: skip

    # --- start and stop ----------------------------------------------------------------------

    async def start(self, address: str) -> None:
        """Join as ``address`` and take this replica's share; returns once those shards are
        loaded (readiness waits for it). Later rounds run in the background."""
        self.address = address
        self.identity = f"{address}#{uuid.uuid4().hex[:12]}"
        while True:
            try:
                await self._round()
                break
            except REDIS_ERRORS as exc:
                log.warning("sharding: Redis unreachable, not ready yet: %s", exc)
                await asyncio.sleep(self.config.renew_interval_s)
        await self._settled()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="shards")

    async def stop(self) -> None:
        """Hand every shard over (snapshot, release) and leave; bounded by handover_timeout_s."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        handovers = [self._handover(slot) for slot in list(self.slots.values())]
        try:
            await asyncio.wait_for(asyncio.gather(*handovers, return_exceptions=True),
                                   self.config.handover_timeout_s)  # fmt: skip
        except TimeoutError:
            log.warning("shard handover unfinished after %gs: the leases expire instead",
                        self.config.handover_timeout_s)  # fmt: skip
        for task in list(self._work):
            task.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)
        try:
            await self.store.leave(self.address)
        except REDIS_ERRORS as exc:
            log.warning("leaving the shard members failed: %s", exc)

    @property
    def moving(self) -> int:
        """Shards loading or being handed over here."""
        return sum(slot.status in ("loading", "leaving") for slot in self.slots.values())

    # --- rounds ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.renew_interval_s)
            self._wake.clear()
            try:
                await self._round()
            except REDIS_ERRORS as exc:
                if str(exc) != self._last_error:
                    log.warning("shard round failed (leases renew next round): %s", exc)
                self._last_error = str(exc)

    async def _settled(self) -> None:
        while any(slot.status == "loading" for slot in self.slots.values()):
            await asyncio.sleep(0.01)

    async def _round(self) -> None:
        sent = self._clock()
        self.members = await self.store.heartbeat(self.address, self._ttl_ms)
        if self.address not in self.members:
            self.members = sorted([*self.members, self.address])
        held = [slot for slot in self.slots.values() if slot.status != "lost"]
        renewed = await asyncio.gather(
            *(self.store.renew(slot.lease, self._ttl_ms) for slot in held),
            return_exceptions=True,
        )
        margin = self.config.lease_ttl_s * 0.05  # rates of the two clocks may differ slightly
        for slot, ok in zip(held, renewed, strict=True):
            if ok is True:
                slot.valid_until = sent + self.config.lease_ttl_s - margin
            elif ok is False:
                self._lose(slot, "its lease was taken or expired")
        self.owners = await self.store.owners(self.shards)
        for shard, slot in list(self.slots.items()):
            if self.owners[shard] != self.address and slot.status != "lost":
                self._lose(slot, f"Redis names {self.owners[shard]} as its owner")
        if self._closing:
            return
        await self._balance(sent)
        now = self._clock()
        for slot in list(self.slots.values()):
            due = now - slot.snapshot_at >= self.config.snapshot_interval_s
            if slot.status == "owned" and due and slot.applied_seq > slot.snapshot_seq:
                self._spawn(self._snapshot(slot))

    async def _balance(self, sent: float) -> None:
        target = math.ceil(self.shards / max(1, len(self.members)))
        mine = [slot for slot in self.slots.values() if slot.status in ("owned", "loading")]
        if len(mine) > target:
            if not any(slot.status == "leaving" for slot in self.slots.values()):
                owned = [slot for slot in mine if slot.status == "owned"]
                if owned:  # the one this replica prefers least goes first
                    slot = min(owned, key=lambda sl: rendezvous(self.address, sl.shard))
                    slot.status = "leaving"
                    self._spawn(self._handover(slot))
            return
        free = [s for s in range(self.shards) if self.owners[s] is None and s not in self.slots]
        free.sort(key=lambda s: rendezvous(self.address, s), reverse=True)
        for shard in free[: target - len(mine)]:
            got = await self.store.acquire(shard, self.identity, self._ttl_ms)
            if not isinstance(got, Lease):
                self.owners[shard] = got
                continue
            self.owners[shard] = self.address
            slot = ShardSlot(shard, self.table.members(shard), got,
                             sent + self.config.lease_ttl_s * 0.95)  # fmt: skip
            self.slots[shard] = slot
            self._spawn(self._load(slot))

    # --- moves -------------------------------------------------------------------------------

    async def _load(self, slot: ShardSlot) -> None:
        """Take over a shard: its snapshot and the journal after it become this state."""
        try:
            data, records = await self.store.load(slot.shard)
            snapshot = None if data is None else ShardSnapshot.decode(data)
            if snapshot is not None and snapshot.shards != self.shards:
                raise ValueError(f"its snapshot is of {snapshot.shards} shards, this service "
                                 f"has sharding.shards = {self.shards}")  # fmt: skip
            if slot.status != "loading":
                return
            last = self.host.adopt_shard(slot.symbols, snapshot, records)
            if records and records[-1][0] > last:  # after a gap: never acknowledged
                dropped = await self.store.truncate_after(slot.lease, last)
                log.warning("shard %d: dropped %d journal records after a gap at %d",
                            slot.shard, dropped, last + 1)  # fmt: skip
            slot.applied_seq = slot.delivered_seq = last
            slot.snapshot_seq = 0 if snapshot is None else snapshot.state_seq
            slot.snapshot_at = self._clock()
            if slot.status == "loading":
                slot.status = "owned"
                log.info("shard %d taken over: snapshot through %d, %d journal records, "
                         "state through %d", slot.shard, slot.snapshot_seq, len(records), last)  # fmt: skip
        except (ValueError, LeaseError, *REDIS_ERRORS) as exc:
            log.error("shard %d: cannot take it over: %s", slot.shard, exc)
            self._lose(slot, "its takeover failed")

    async def _snapshot(self, slot: ShardSlot) -> bool:
        """Write the shard's state and trim its journal; False if it could not be."""
        if slot.snapshotting or slot.status not in ("owned", "leaving"):
            return False
        slot.snapshotting = True
        try:
            state_seq, signals_seq = slot.applied_seq, slot.delivered_seq
            state, signals = self.host.shard_state(slot.symbols)
            waits = [f for seq, f in slot.pending.items() if seq <= state_seq]
            if waits and not all(await asyncio.gather(*waits)):
                return False
            if slot.broken_at is not None and slot.broken_at <= state_seq:
                return False
            snapshot = ShardSnapshot(slot.shard, self.shards, state_seq, signals_seq,
                                     time.time_ns(), self.address, slot.lease.token, state,
                                     signals)  # fmt: skip
            await self.store.write_snapshot(slot.lease, snapshot.encode(), signals_seq,
                                            self.config.journal_keep_batches)  # fmt: skip
            slot.snapshot_seq = max(slot.snapshot_seq, state_seq)
            slot.snapshot_at = self._clock()
            return True
        except Fenced as exc:
            self._lose(slot, str(exc))
            return False
        except REDIS_ERRORS as exc:
            log.warning("shard %d: snapshot not written: %s", slot.shard, exc)
            return False
        finally:
            slot.snapshotting = False

    async def _handover(self, slot: ShardSlot) -> None:
        """Stop taking the shard's batches, wait for those applied, snapshot, release."""
        if slot.status == "loading":
            self._lose(slot, "handed back while loading")
            return
        slot.status = "leaving"
        deadline = self._clock() + self.config.handover_timeout_s
        while (slot.delivered_seq < slot.applied_seq and slot.broken_at is None
               ) or slot.snapshotting:  # fmt: skip
            if self._clock() > deadline:
                self._lose(slot, "its batches in flight did not finish in handover_timeout_s")
                return
            await asyncio.sleep(0.005)
        if (slot.broken_at is None and slot.applied_seq > slot.snapshot_seq
                and not await self._snapshot(slot)):  # fmt: skip
            self._lose(slot, "its last snapshot failed: the next owner waits for the lease")
            return
        self.slots.pop(slot.shard, None)
        slot.status = "lost"
        try:
            if await self.store.release(slot.lease):
                self.owners[slot.shard] = None
                log.info("shard %d handed over (snapshot through %d)", slot.shard,
                         slot.snapshot_seq)  # fmt: skip
            else:
                log.warning("shard %d: its lease had expired; another replica owns it", slot.shard)
        except REDIS_ERRORS as exc:
            log.warning("shard %d: release failed, its lease expires instead: %s", slot.shard,
                        exc)  # fmt: skip
        self._wake.set()

    def _lose(self, slot: ShardSlot, reason: str) -> None:
        """Stop computing the shard at once; free its lease if it is still ours."""
        if slot.status == "lost":
            return
        slot.status = "lost"
        if self.slots.get(slot.shard) is slot:
            del self.slots[slot.shard]
        log.warning("shard %d dropped: %s", slot.shard, reason)
        if not self._closing:
            self._spawn(self._release_quietly(slot.lease))

    async def _release_quietly(self, lease: Lease) -> None:
        with contextlib.suppress(*REDIS_ERRORS):  # else it expires
            await self.store.release(lease)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    @property
    def _journal_room(self) -> int:
        return self.config.journal_max_batches - self.config.journal_keep_batches
