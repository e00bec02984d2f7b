"""Ingestion of one tick batch end to end: idempotency, deadline, admission, apply, spool, ack.

Per batch, in this order, every refusal coming before any state changes:

0. **Ownership** (with ``sharding.enabled``, `app.shards`): a batch carries one shard's
   symbols, and only the replica holding that shard's lease applies it; any other
   answers with the owner's address (or UNAVAILABLE while the shard moves).
1. **Idempotency.** A batch whose ``(producer, batch_id)`` was seen within the window
   (``ingest.dedupe_window_s``; at most ``dedupe_max_batches`` / ``dedupe_max_bytes`` of
   replies kept in memory, oldest dropped first) gets the original reply and changes
   nothing; a retry of a batch still in flight waits for it. The same key with other
   ticks is refused (ALREADY_EXISTS). A batch without a producer name or with ``batch_id``
   0 is not deduplicated (anonymous clients' ids would collide). After a restart the index
   is rebuilt from the spool's retained records, so a retry across a crash is recognised.
2. **Deadline.** A call with less than ``ingest.min_deadline_ms`` left is refused
   (DEADLINE_EXCEEDED) before it is applied.
3. **Admission.** Room in the data path's buffers, the spool and the inference queue.
4. **Apply** (`SignalPipeline.apply`): the batch gets the next sequence number.
5. From here on the work is shielded from cancellation: a client that cancels or times
   out cannot leave ticks applied without their signals, spool record or deliveries.
   Inference, then, in sequence order (`InOrder`), the spool append: one `SpoolRecord`
   with the accepted ticks, the signals, the features behind them and the reply.
   With sharding, before its turn the record is also appended to the shard's journal in
   Redis (fenced by the lease), so the next owner of the shard can replay it.
6. Once the record is durable (group commit), in sequence order: the in-process store,
   the cache, the warehouse and the publishers get it, each taking the sequence number
   along (``app.datapath``), and the **ack** goes out.

On start (`recover`), records the sinks had not all confirmed are delivered again; the
sinks skip what they already hold, so each batch lands exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from app import batch_format
from app.datapath import DataPath, DurableBatch
from app.features import FEATURES
from app.pipeline import AppliedBatch, IngestResult, SignalPipeline
from app.proto import load as load_stubs
from app.settings.ingest import IngestConfig
from app.shards import ShardHost, ShardOwnership, ShardSlot, ShardSnapshot
from app.signals import Signal, SignalColumns
from app.spool import Spool
from app.synthetic import TickColumns
from app.telemetry import Metrics, default_metrics

pb2, _ = load_stubs()
log = structlog.get_logger("app.ingest")


class BatchIdReused(ValueError):
    """A ``(producer, batch_id)`` already acknowledged for different ticks."""


class DeadlineTooShort(TimeoutError):
    """The call's deadline leaves no time to apply the batch; nothing was applied."""


def fingerprint(ticks: TickColumns) -> bytes:
    """A digest of the batch's columns: tells a retry from a different batch under one id."""
    digest = hashlib.blake2b(digest_size=16)
    for column in (ticks.symbol, ticks.price, ticks.size, ticks.ts_ns):
        digest.update(np.ascontiguousarray(column).tobytes())
    return digest.digest()


@dataclass
class _Seen:
    fingerprint: bytes
    reply: asyncio.Future[Any]  # the SignalBatch, once known
    at: float
    nbytes: int = 0


class RecentBatches:
    """The idempotency index: replies by ``(producer, batch_id)``, bounded in count, bytes
    and age (oldest dropped first)."""

    def __init__(self, max_batches: int, max_bytes: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.window_s = window_s
        self._clock = clock
        self._entries: OrderedDict[tuple[str, int], _Seen] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, int]) -> _Seen | None:
        self._evict()
        return self._entries.get(key)

    def put(self, key: tuple[str, int], digest: bytes, reply: asyncio.Future[Any],
            age_s: float = 0.0) -> None:  # fmt: skip
        if self.max_batches == 0:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._entries[key] = _Seen(digest, reply, self._clock() - age_s)
        self._evict()

    def completed(self, key: tuple[str, int], nbytes: int) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.nbytes = nbytes
            self.nbytes += nbytes
            self._evict()

    def forget(self, key: tuple[str, int]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.nbytes -= entry.nbytes

    def _evict(self) -> None:
        cutoff = self._clock() - self.window_s
        entries = self._entries
        while entries:
            key, oldest = next(iter(entries.items()))
            if (len(entries) <= self.max_batches and self.nbytes <= self.max_bytes
                    and oldest.at >= cutoff):  # fmt: skip
                return
            if not oldest.reply.done():  # in flight: its retries must still find it
                return
            del entries[key]
            self.nbytes -= oldest.nbytes


class InOrder:
    """Lets batches take their turn by sequence number, whatever order they get there in."""

    def __init__(self, next_seq: int = 1) -> None:
        self.next_seq = next_seq
        self._waiting: dict[int, asyncio.Future[None]] = {}

    async def turn(self, seq: int) -> None:
        if seq != self.next_seq:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting[seq] = waiter
            await waiter

    def done(self, seq: int) -> None:
        self.next_seq = seq + 1
        waiter = self._waiting.pop(self.next_seq, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@dataclass
class Delivery(DurableBatch):
    """What one applied batch sends down the data path once it is durable, and how it is
    answered (``admission`` None: a replay)."""

    key: tuple[str, int] | None = None  # its (producer, batch_id), if deduplicated
    waiting: asyncio.Future[Any] | None = None  # its caller's reply (None: a replay)
    shard: ShardSlot | None = None  # with sharding: its shard, and its seq in that journal
    journal_seq: int = 0
    reply: Reply | None = None  # its answer (None: a replay)


class Reply:
    """The answer to one batch: its ``SignalBatch`` serialized (what a stream sends and the
    spool keeps, written straight from the signal columns) and its ``IngestAck``'s bytes
    (what ``IngestTicks`` answers; ``ack``, the message, is parsed from them when read). A
    reply read back from the spool is the parsed message."""

    __slots__ = ("_ack", "ack_data", "data")

    def __init__(self, data: bytes, ack_data: bytes) -> None:
        self.data = data
        self.ack_data = ack_data
        self._ack: Any = None

    @property
    def ack(self) -> Any:
        if self._ack is None:
            self._ack = pb2.IngestAck.FromString(self.ack_data)
        return self._ack

    def ByteSize(self) -> int:  # as the message's: a reply may also be one
        return len(self.data)


def serialize_reply(reply: Any) -> bytes:
    """The bytes of a `Reply` or of a ``SignalBatch`` message (the stream's serializer)."""
    return reply.data if isinstance(reply, Reply) else reply.SerializeToString()


def serialize_ack(reply: Any) -> bytes:
    """The ``IngestAck`` bytes of a `Reply` or of a ``SignalBatch`` message (the unary
    call's serializer)."""
    return reply.ack_data if isinstance(reply, Reply) else reply.ack.SerializeToString()


def reply_of(batch_id: int, result: IngestResult, computed_at_ns: int) -> Reply:
    """The ``SignalBatch`` (with its ``IngestAck``) answering one batch."""
    return Reply(*batch_format.reply(result.signals, result.reasons, batch_id, computed_at_ns))


class Ingestor(ShardHost):
    """Runs the steps of the module docstring for each batch the server hands it."""

    def __init__(
        self,
        pipeline: SignalPipeline,
        config: IngestConfig,
        *,
        data_path: DataPath | None = None,
        spool: Spool | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.data_path = data_path
        self.spool = spool
        self.metrics = metrics or default_metrics()
        self.recent = RecentBatches(config.dedupe_max_batches, config.dedupe_max_bytes,
                                    config.dedupe_window_s)  # fmt: skip
        self._order = InOrder()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unanswered: set[asyncio.Future[Any]] = set()  # replies of batches in flight
        # Acknowledged batches on their way to the data path (`_deliver`), and the timer that
        # hands them on.
        self._undelivered: list[Delivery] = []
        self._flush: asyncio.Handle | None = None
        self.shards: ShardOwnership | None = None  # set when sharding is on (app.server)
        if spool is not None:
            spool.on_durable = self._deliver
            spool.on_failed = self._not_durable
        if data_path is not None:
            data_path.on_delivered = self._delivered

    # --- start: recovery ---------------------------------------------------------------------

    def recover(self) -> int:
        """Open the spool, rebuild the idempotency index, deliver what the sinks had not all
        confirmed; returns how many batches were delivered again."""
        recovery = self.spool.open() if self.spool is not None else None
        floor = recovery.last_seq if recovery is not None else 0
        if self.data_path is not None and recovery is not None:
            floor = max(floor, self.data_path.prepare_replay(recovery.delivered_seq))
        self.pipeline.resume_after(floor)
        self._order = InOrder(self.pipeline.seq + 1)
        if recovery is None:
            return 0
        now_ns = time.time_ns()
        replayed = 0
        for seq, payload in recovery.records:
            record = pb2.SpoolRecord.FromString(payload)
            self.remember(record, now_ns)
            if seq > recovery.delivered_seq:
                self._deliver(seq, delivery_of(record))
                replayed += 1
        self.metrics.spool_replayed.inc(replayed)
        if replayed:
            log.warning("spool_replayed", batches=replayed, last_seq=recovery.last_seq)
        return replayed

    def remember(self, record: Any, now_ns: int) -> None:
        """Put a recorded batch (a ``SpoolRecord``) in the idempotency index with its reply."""
        if record.batch_id and record.producer:
            done = asyncio.get_running_loop().create_future()
            done.set_result(record.reply)
            key = (record.producer, int(record.batch_id))
            self.recent.put(key, record.fingerprint, done,
                            age_s=max(0.0, (now_ns - record.spooled_at_ns) / 1e9))  # fmt: skip
            self.recent.completed(key, record.reply.ByteSize())

    # --- shards moving in and out (app.shards) -----------------------------------------------

    def shard_state(self, symbols: np.ndarray) -> tuple[bytes, list[tuple[Signal, int]]]:
        return self.pipeline.export_state(symbols)

    def adopt_shard(self, symbols: np.ndarray, snapshot: ShardSnapshot | None,
                    records: list[tuple[int, bytes]]) -> int:  # fmt: skip
        """The shard's state becomes its snapshot plus the journal's batches after it (up to
        a gap); their replies join the idempotency index. Returns the last seq applied."""
        pipeline = self.pipeline
        pipeline.forget(symbols)
        state_seq = signals_seq = 0
        if snapshot is not None:
            pipeline.restore_state(snapshot.state)
            pipeline.adopt_signals(snapshot.signals)
            state_seq, signals_seq = snapshot.state_seq, snapshot.signals_seq
        last = state_seq
        now_ns = time.time_ns()
        for seq, payload in records:
            record = pb2.SpoolRecord.FromString(payload)
            if seq > state_seq:
                if seq != last + 1:
                    break  # a batch never journaled: this one and later were never acked
                t = record.ticks
                pipeline.replay(np.array(t.symbol, np.int32), np.array(t.price, np.float64),
                                np.array(t.size, np.float64), np.array(t.ts_ns, np.int64))  # fmt: skip
                last = seq
            if seq > signals_seq:
                signals = signals_of(record.reply)
                computed_at = record.reply.computed_at_ns
                pipeline.adopt_signals([(signals.row(i), computed_at) for i in range(len(signals))])
            self.remember(record, now_ns)
        return last

    # --- one batch ---------------------------------------------------------------------------

    def begin(self, request: Any, ticks: TickColumns, time_left_s: float | None,
              client_shards: int | None = None) -> asyncio.Future[Any]:  # fmt: skip
        """Steps 0 to 4 for ``request`` (a decoded, well-formed TickBatch) now, without
        awaiting (a refusal raises here, before anything changed); the future resolves to
        the ``SignalBatch`` once the batch is durable. Batches begun one after the other are
        applied in that order. ``client_shards``: the shard count the client split by, if it
        said."""
        slot = self.shards.admit(ticks.symbol, client_shards) if self.shards is not None else None
        key = (
            (request.producer, int(request.batch_id))
            if request.batch_id and request.producer
            else None
        )
        digest = fingerprint(ticks) if key is not None else b""
        if key is not None:
            seen = self.recent.get(key)
            if seen is not None:
                if seen.fingerprint != digest:
                    raise BatchIdReused(
                        f"batch_id = {key[1]} of producer {key[0]!r}: already used for a "
                        "different batch; batch ids must be unique per producer"
                    )
                self.metrics.duplicate_batches.inc()
                return seen.reply
        if self.spool is not None and self.spool.failed is not None:
            raise self.spool.failed
        if time_left_s is not None and time_left_s * 1000 < self.config.min_deadline_ms:
            raise DeadlineTooShort(
                f"the call's deadline leaves {time_left_s * 1000:.3g} ms (ingest.min_deadline_ms"
                f" = {self.config.min_deadline_ms:g}); the batch was not applied"
            )
        admission = self.data_path.admit(len(ticks)) if self.data_path is not None else None
        try:
            if self.spool is not None:
                self.spool.check_room(_record_bytes_bound(len(ticks)))
            applied = self.pipeline.apply(ticks.symbol, ticks.price, ticks.size, ticks.ts_ns)
            journal_seq = (
                self.shards.applied(slot)
                if slot is not None and self.shards is not None and applied.seq
                else 0
            )
        except BaseException:
            if admission is not None:
                self.data_path.release(admission)  # type: ignore[union-attr]
            raise
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._unanswered.add(reply)
        if key is not None:
            self.recent.put(key, digest, reply)
        if applied.seq == 0:  # nothing accepted, nothing changed: answer now
            if admission is not None:
                self.data_path.release(admission)  # type: ignore[union-attr]
            result = IngestResult(applied.reasons, SignalColumns.empty())
            self._answer(key, reply, reply_of(request.batch_id, result, 0))
            return reply
        if (
            slot is None
            and self._order.next_seq == applied.seq
            and (applied.inference is None or applied.inference.done())
        ):  # nothing to wait for (the fused model's batches): no task
            self._complete_now(request, ticks, applied, key, digest, admission, reply)
            return reply
        task = loop.create_task(
            self._complete(request, ticks, applied, key, digest, admission, reply, slot,
                           journal_seq), name="ingest"
        )  # fmt: skip
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return reply

    async def _complete(self, request: Any, ticks: TickColumns, applied: AppliedBatch,
                        key: tuple[str, int] | None, digest: bytes, admission: Any,
                        reply: asyncio.Future[Any], slot: ShardSlot | None = None,
                        journal_seq: int = 0) -> None:  # fmt: skip
        """Steps 5 and 6 for an applied batch; runs to the end whatever the caller does. The
        ack (``reply``) is given by `_deliver` once the record is durable."""
        seq = applied.seq
        delivery: Delivery | None = None
        try:
            failed: Exception | None = None  # before the turn, which is taken all the same
            try:
                result = await self.pipeline.finish(applied)
                delivery = self._delivery(request, ticks, applied, result, key, admission, reply,
                                          slot, journal_seq)  # fmt: skip
                if slot is not None and self.shards is not None:
                    record = spool_record(request, digest, delivery, journal_seq)
                    await self.shards.journal(slot, journal_seq, record)
            except Exception as exc:
                failed = exc
                if slot is not None and journal_seq in slot.pending:
                    await self._not_journaled(slot, journal_seq)
            await self._order.turn(seq)
            try:
                if failed is not None:
                    raise failed
                assert delivery is not None
                self._commit(request, digest, delivery)
            finally:
                self._order.done(seq)
        except BaseException as exc:
            self._refused_after_apply(key, reply, delivery, admission, exc)
            if not isinstance(exc, Exception):
                raise

    def _complete_now(self, request: Any, ticks: TickColumns, applied: AppliedBatch,
                      key: tuple[str, int] | None, digest: bytes, admission: Any,
                      reply: asyncio.Future[Any]) -> None:  # fmt: skip
        """`_complete` for a batch with nothing to wait for: its inference done, its turn
        now, no journal."""
        delivery: Delivery | None = None
        try:
            try:
                result = self.pipeline.finished(applied)
                delivery = self._delivery(request, ticks, applied, result, key, admission, reply)
                self._commit(request, digest, delivery)
            finally:
                self._order.done(applied.seq)
        except Exception as exc:
            self._refused_after_apply(key, reply, delivery, admission, exc)

    def _delivery(self, request: Any, ticks: TickColumns, applied: AppliedBatch,
                  result: IngestResult, key: tuple[str, int] | None, admission: Any,
                  reply: asyncio.Future[Any], slot: ShardSlot | None = None,
                  journal_seq: int = 0) -> Delivery:  # fmt: skip
        """What the applied batch sends down the data path, its answer included."""
        computed_at = time.time_ns()
        answer = reply_of(request.batch_id, result, computed_at)
        accepted = ticks if applied.accepted.all() else TickColumns(*(
            c[applied.accepted] for c in (ticks.symbol, ticks.price, ticks.size, ticks.ts_ns)))  # fmt: skip
        features = result.features
        if features is None:
            features = np.empty((0, len(FEATURES)))
        return Delivery(applied.seq, accepted, result.signals, features, computed_at, admission,
                        key, reply, slot, journal_seq, answer)  # fmt: skip

    def _commit(self, request: Any, digest: bytes, delivery: Delivery) -> None:
        """In sequence order: the record to the spool (the ack follows once it is durable),
        or, without a spool, the batch straight on."""
        seq = delivery.seq
        if delivery.shard is not None and self.shards is not None:
            self.shards.ackable(delivery.shard, delivery.journal_seq)
        if self.spool is not None:
            record = spool_record(request, digest, delivery, seq)
            self.spool.append(seq, record, delivery)  # a failure: `_not_durable`
        else:
            self._deliver(seq, delivery)

    async def _not_journaled(self, slot: ShardSlot, journal_seq: int) -> None:
        """A batch that failed before its journal append: the shard breaks there."""
        assert self.shards is not None
        with contextlib.suppress(Exception):
            await self.shards.journal(slot, journal_seq, None)

    def _answer(self, key: tuple[str, int] | None, reply: asyncio.Future[Any], answer: Any) -> None:
        if key is not None:
            self.recent.completed(key, answer.ByteSize())
        if not reply.done():
            reply.set_result(answer)
        self._unanswered.discard(reply)

    def _not_durable(self, _seq: int, delivery: Delivery, exc: Exception) -> None:
        """The spool could not make an applied batch durable: no ack."""
        assert delivery.waiting is not None
        self._refused_after_apply(delivery.key, delivery.waiting, delivery, delivery.admission,
                                  exc)  # fmt: skip

    def _refused_after_apply(self, key: tuple[str, int] | None, reply: asyncio.Future[Any],
                             delivery: Delivery | None, admission: Any,
                             exc: BaseException | None) -> None:  # fmt: skip
        """No ack for an applied batch (the spool failed): give its room back, forget it."""
        if admission is not None and (delivery is None or delivery.admission is not None):
            self.data_path.release(admission)  # type: ignore[union-attr]
        if key is not None:
            self.recent.forget(key)
        if not reply.done():
            reply.set_exception(exc or RuntimeError("the batch was not acknowledged"))
            reply.exception()  # retrieved: its caller may have gone away
        self._unanswered.discard(reply)

    # --- delivery ----------------------------------------------------------------------------

    def _deliver(self, seq: int, delivery: Delivery) -> None:
        """A durable batch, in sequence order: the latest signals and the ack, then the data
        path. The data path's share (encoding, publishing, warehouse rows) waits for the
        batches acknowledged within `DATA_PATH_GROUP_S` and takes them as one group: the spool
        holds each batch until every sink has it, so the ack needs none of it, and a crash in
        between replays it (`recover`)."""
        self.pipeline.store_signals(delivery.signals, seq, delivery.computed_at_ns)
        if delivery.shard is not None:
            delivery.shard.delivered_seq = max(delivery.shard.delivered_seq, delivery.journal_seq)
        if delivery.waiting is None:  # a replay: nobody waits
            self.flush_deliveries()
            self._to_data_path([delivery])
            return
        self._undelivered.append(delivery)
        assert delivery.reply is not None
        self._answer(delivery.key, delivery.waiting, delivery.reply)
        loop = asyncio.get_running_loop()
        if self._flush is None:
            self._flush = loop.call_later(DATA_PATH_GROUP_S, self.flush_deliveries)
        elif len(self._undelivered) == DATA_PATH_GROUP_MAX:  # a full group goes now
            self._flush.cancel()
            self._flush = loop.call_soon(self.flush_deliveries)

    def flush_deliveries(self) -> None:
        """Hand every acknowledged batch not yet there to the data path, in sequence order."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._undelivered:
            group, self._undelivered = self._undelivered, []
            self._to_data_path(group)

    def _to_data_path(self, group: list[Delivery]) -> None:
        if self.data_path is None:
            self._delivered(group[-1].seq)
            return
        try:
            self.data_path.deliver(group)
        finally:
            for delivery in group:
                delivery.admission = None  # released by the data path

    def _delivered(self, watermark: int) -> None:
        if self.spool is not None:
            self.spool.delivered_through(watermark)

    # --- shutdown ----------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait for every applied batch to be spooled and answered (and handed to the data
        path: after the spool drains too, `flush_deliveries` hands on what it made durable)."""
        self.pipeline.close()
        while self._tasks or self._unanswered:
            await asyncio.gather(*self._tasks, *self._unanswered, return_exceptions=True)
        self.flush_deliveries()


def spool_record(request: Any, digest: bytes, delivery: Delivery, seq: int) -> bytes:
    """The serialized `SpoolRecord` of one applied batch (number ``seq`` of the spool or a
    shard's journal), written straight from its columns and bytes (`batch_format`)."""
    assert delivery.reply is not None
    return batch_format.spool_record(seq, request.producer, request.batch_id, digest,
                                     time.time_ns(), delivery.ticks, delivery.reply.data,
                                     delivery.features)  # fmt: skip


def delivery_of(record: Any) -> Delivery:
    """The `Delivery` a spooled record stands for (a replay: no room was reserved)."""
    t = record.ticks
    r = record.reply
    ticks = TickColumns(np.array(t.symbol, np.int32), np.array(t.price, np.float64),
                        np.array(t.size, np.float64), np.array(t.ts_ns, np.int64))  # fmt: skip
    signals = signals_of(r)
    features = np.array(record.features, np.float64).reshape(len(signals), len(FEATURES))
    return Delivery(record.seq, ticks, signals, features, r.computed_at_ns)


def signals_of(reply: Any) -> SignalColumns:
    """The signals a ``SignalBatch`` carries."""
    r = reply
    return SignalColumns(np.array(r.symbol, np.int32), np.array(r.ts_ns, np.int64),
                         np.array(r.direction, np.int8), np.array(r.strength, np.float32),
                         np.array(r.confidence, np.float32), r.model_version, r.model_variant,
                         r.model_sha256, r.backend)  # fmt: skip


# Acknowledged batches go to the data path together: those acked within this long of the
# first (half of publish.max_latency_ms's default), or this many, whichever comes first. The
# data path's cost is mostly per group, so this keeps it small per batch (at 1,000 batches a
# second, 10 ms groups cost the serving loop a fifth more than 25 ms ones), and its work runs
# after the replies are sent.
DATA_PATH_GROUP_S = 0.025
DATA_PATH_GROUP_MAX = 256


def _record_bytes_bound(n_ticks: int) -> int:
    """An upper bound of a record's size: ~29 B per tick, ~110 B per signal with features."""
    return 256 + 140 * n_ticks
