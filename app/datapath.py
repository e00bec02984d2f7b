"""The service's data path: where an acknowledged batch's ticks, signals and features go.

Batches come in groups (`deliver`, called in sequence order once they are durable; the
ingestor hands on those acknowledged within a few milliseconds together, so the cost per
batch falls with load). Per group: accepted ticks go to the warehouse (`ticks`, one append
for the group) and are published: each ordering shard's ticks of each batch as one
``TickBatch`` entry under the shard's ordering key, in compressed ``PublishedBatch``
messages on ``<ticks_topic><batch_suffix>`` (`app.batch_format`; and, with Pub/Sub, the
whole batch as one ``TickBatch`` on the schema topic); new signals go to the L2 cache (in
the background), the warehouse (`signals`, and the features behind each signal in
`features`: one row per signal, so the model can be retrained from what it saw), and are
published as ``SignalBatch`` entries the same way (and, with Pub/Sub, one ``Signal``
message each on the schema topic). GetSignal misses in the in-process store read through
the cache hierarchy (L1 → L2 → L3).

Ordering keys are shards (`app.shards`, ``sharding.shards`` of them): a bounded number of
keys, and every message of a symbol under the same one, so each symbol's records keep
their order. Nothing here builds a Python object per tick or per signal: columns are
encoded as they are.

Every part carries its batch's sequence number (a warehouse append, those of its group's
batches), so each sink applies batches in order, and `on_delivered(watermark)` says up to
which batch every durable sink (warehouse, publishers) has every batch whole: the spool no
longer needs them. After a crash, `prepare_replay` asks the sinks what they already hold
and a replayed batch skips those parts.

Back-pressure without loss: `admit` reserves room for a batch in every buffer before the
batch is applied; a full buffer refuses the batch up front (the server answers
RESOURCE_EXHAUSTED and changes nothing), and an admitted batch's records always fit.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from app import batch_format
from app.cache import TieredCache
from app.publish import PublishBackpressure, Publisher, build_sink
from app.settings.cache import CacheConfig
from app.settings.publish import PublishConfig
from app.settings.shards import DEFAULT_SHARDS
from app.settings.warehouse import WarehouseConfig
from app.shards import ShardTable
from app.signals import Signal, SignalColumns
from app.synthetic import TickColumns
from app.telemetry import Metrics, default_metrics
from app.warehouse import Warehouse, WarehouseBackpressure

log = structlog.get_logger("app.datapath")


class DataPathBackpressure(RuntimeError):
    """A buffer of the data path is full: the batch was not applied; retry it later."""


@dataclass
class Admission:
    """Room held for one batch of ``n`` ticks (and at most ``n`` signals)."""

    n: int
    holds: list[tuple[Any, int]]  # (publisher or warehouse, rows held)
    open: bool = True


class DeliveryTracker:
    """Counts each batch's outstanding parts and keeps the watermark: the last batch such
    that it and every batch expected before it are complete. Batches are expected in
    sequence order (numbers may skip); ``on_advance(watermark)`` fires as it moves."""

    def __init__(self) -> None:
        self._outstanding: dict[int, int] = {}
        self._order: deque[int] = deque()  # expected batches not yet under the watermark
        self.watermark = 0
        self.on_advance: Callable[[int], None] = lambda _watermark: None

    def expect(self, seq: int, parts: int) -> None:
        self._order.append(seq)
        if parts:
            self._outstanding[seq] = parts
        else:
            self._advance()

    def done(self, seq: int, parts: int = 1) -> None:
        left = self._outstanding.get(seq)
        if left is None:
            return
        if left > parts:
            self._outstanding[seq] = left - parts
        else:
            del self._outstanding[seq]
            self._advance()

    def _advance(self) -> None:
        moved = False
        while self._order and self._order[0] not in self._outstanding:
            self.watermark = self._order.popleft()
            moved = True
        if moved:
            self.on_advance(self.watermark)

    @property
    def pending(self) -> int:
        """Batches not yet complete."""
        return len(self._outstanding)


@dataclass
class DurableBatch:
    """One durable batch, as the data path takes it."""

    seq: int
    ticks: TickColumns  # the accepted ticks
    signals: SignalColumns
    features: np.ndarray  # float64[len(signals), len(FEATURES)]: the rows behind them
    computed_at_ns: int
    admission: Admission | None = None  # the room reserved for it; None: a replay


def _model(batch: DurableBatch) -> tuple[str, str, str, str]:
    """The model that computed a batch's signals (batches of one model share a group)."""
    s = batch.signals
    return s.model_version, s.model_variant, s.model_sha256, s.backend


def _joined(parts: Sequence[Any], names: Sequence[str]) -> list[np.ndarray]:
    """Each named column of ``parts`` (objects with those array attributes) end to end."""
    if len(parts) == 1:
        return [getattr(parts[0], name) for name in names]
    return [np.concatenate([getattr(part, name) for part in parts]) for name in names]


class DataPath:
    def __init__(
        self,
        cache: TieredCache,
        warehouse: Warehouse,
        publish: PublishConfig,
        publishers: dict[str, Publisher],
        metrics: Metrics | None = None,
        shards: ShardTable | None = None,
    ) -> None:
        """``shards``: the symbols' ordering shards (`ShardTable(features.n_symbols,
        sharding.shards)`; by default `app.shards`' default count)."""
        self.cache = cache
        self.warehouse = warehouse
        self.publishers = publishers
        self.metrics = metrics or default_metrics()
        p = publish
        self.ticks_frames = publishers.get(f"{p.ticks_topic}{p.batch_suffix}")  # None: off
        self.signals_frames = publishers.get(f"{p.signals_topic}{p.batch_suffix}")
        self.ticks_schema = publishers.get(p.ticks_topic)
        self.signals_schema = publishers.get(p.signals_topic)
        self.shards = shards or ShardTable(0, DEFAULT_SHARDS)
        self._keys = [f"shard-{n}-of-{self.shards.shards}" for n in range(self.shards.shards)]
        self.tracker = DeliveryTracker()
        # Every batch up to this one is in every durable sink (the spool may let them go).
        self.on_delivered: Callable[[int], None] = lambda _watermark: None
        self.tracker.on_advance = self._advanced
        warehouse.on_written = self._written
        for publisher in publishers.values():
            publisher.on_delivered = self.tracker.done

    @classmethod
    def from_config(
        cls,
        cache: CacheConfig,
        publish: PublishConfig,
        warehouse: WarehouseConfig,
        *,
        metrics: Metrics | None = None,
        shards: ShardTable | None = None,
        pubsub_client: Any = None,
        credential_provider: Any = None,
        bigquery_clients: dict[str, Any] | None = None,
    ) -> DataPath:
        """Embedded defaults need nothing running: L1 + DuckDB + local files."""
        metrics = metrics or default_metrics()
        store = Warehouse.from_config(warehouse, metrics, **(bigquery_clients or {}))
        tiered = TieredCache.from_config(
            cache, l3=store, metrics=metrics, credential_provider=credential_provider,
            write_through_l3=False,
        )  # fmt: skip
        publishers: dict[str, Publisher] = {}
        if not publish.enabled:
            return cls(tiered, store, publish, publishers, metrics, shards)
        sink = build_sink(publish, pubsub_client)
        for topic, record_type in ((publish.ticks_topic, batch_format.TICK_BATCH),
                                   (publish.signals_topic, batch_format.SIGNAL_BATCH)):  # fmt: skip
            framed = f"{topic}{publish.batch_suffix}"
            publishers[framed] = Publisher(framed, publish, sink, metrics, record_type=record_type)
            if publish.publishes_schema_topics:
                publishers[topic] = Publisher(topic, publish, sink, metrics, framed=False)
        return cls(tiered, store, publish, publishers, metrics, shards)

    def start(self) -> None:
        self.warehouse.start()
        for publisher in self.publishers.values():
            publisher.start()

    def prepare_replay(self, after_seq: int) -> int:
        """Before replaying the spool's batches after ``after_seq``: learn what the sinks hold;
        returns the highest batch number they know (new batches are numbered above it)."""
        known = self.warehouse.prepare_replay(after_seq)
        for publisher in self.publishers.values():
            known = max(known, publisher.sink.max_seq(publisher.topic))
        return known

    def _written(self, _table: str, seqs: list[int]) -> None:
        for seq in seqs:
            self.tracker.done(seq)

    def _advanced(self, watermark: int) -> None:
        self.warehouse.forget_batches_through(watermark)
        self.on_delivered(watermark)

    # --- ingest --------------------------------------------------------------------------

    def admit(self, n_ticks: int) -> Admission:
        """Reserve room for a batch of ``n_ticks`` in every buffer, or raise
        `DataPathBackpressure` holding nothing."""
        wanted: list[tuple[Any, int]] = []
        if self.ticks_frames is not None and self.signals_frames is not None:
            wanted += [(self.ticks_frames, n_ticks), (self.signals_frames, n_ticks)]
        # ticks + (at most as many) signals and features
        wanted.append((self.warehouse, 3 * n_ticks))
        if self.ticks_schema is not None:
            wanted.append((self.ticks_schema, 1))
        if self.signals_schema is not None:
            wanted.append((self.signals_schema, n_ticks))
        held: list[tuple[Any, int]] = []
        try:
            for target, n in wanted:
                target.reserve(n)
                held.append((target, n))
        except (PublishBackpressure, WarehouseBackpressure) as exc:
            for target, n in held:
                target.release(n)
            raise DataPathBackpressure(str(exc)) from exc
        return Admission(n_ticks, held)

    def release(self, admission: Admission) -> None:
        """Give back what an admitted batch did not use (always call, even on failure)."""
        if admission.open:
            for target, n in admission.holds:
                target.release(n)
            admission.open = False

    def deliver(self, batches: Sequence[DurableBatch]) -> None:
        """Send durable batches (consecutive, in sequence order) down the data path as one
        group: each sink gets one append or one entry per ordering shard and batch for the
        whole group, so the cost per batch falls as more wait together. With admissions,
        into the room they reserved (released after); without, a replay (one batch): parts
        a sink already holds are skipped, the rest is never refused."""
        if not batches:
            return
        reserved = batches[0].admission is not None
        replay = not reserved
        parts = dict.fromkeys((b.seq for b in batches), 0)
        try:
            self._ticks(batches, parts, reserved, replay)
            for _, run in itertools.groupby((b for b in batches if len(b.signals)), _model):
                self._signals(list(run), parts, reserved, replay)
        finally:
            for batch in batches:
                if batch.admission is not None:
                    self.release(batch.admission)
        for seq, n in parts.items():
            self.tracker.expect(seq, n)

    def _ticks(self, batches: Sequence[DurableBatch], parts: dict[int, int], reserved: bool,
               replay: bool) -> None:  # fmt: skip
        """Write and publish the accepted ticks, counting the parts to wait for per batch."""
        with_ticks = [b for b in batches if len(b.ticks)]
        if not with_ticks:
            return
        symbol, price, size, ts_ns = _joined([b.ticks for b in with_ticks],
                                             ("symbol", "price", "size", "ts_ns"))  # fmt: skip
        seqs = [b.seq for b in with_ticks]
        if self.warehouse.append_ticks(symbol, price, size, ts_ns, reserved=reserved, seq=seqs,
                                       replay=replay):  # fmt: skip
            for seq in seqs:
                parts[seq] += 1
        if self.ticks_schema is not None:
            for b in with_ticks:
                t = b.ticks
                whole = batch_format.tick_batch(t.symbol, t.price, t.size, t.ts_ns)
                parts[b.seq] += self.ticks_schema.submit("", whole, reserved=reserved, seq=b.seq,
                                                         replay=replay)  # fmt: skip
        if self.ticks_frames is not None:
            row_seqs = np.repeat(seqs, [len(b.ticks) for b in with_ticks])
            entries = batch_format.tick_entries(self._shards_of(symbol), row_seqs, symbol, price,
                                                size, ts_ns)  # fmt: skip
            self._publish(self.ticks_frames, entries, parts, reserved, replay)

    def _publish(self, publisher: Publisher, entries: list[batch_format.Entry],
                 parts: dict[int, int], reserved: bool, replay: bool) -> None:  # fmt: skip
        """Each shard's entries (in batch order) as that shard's records, counted per batch."""
        by_shard: dict[int, list[tuple[bytes, int, int]]] = {}
        for shard, entry, rows, seq in entries:
            by_shard.setdefault(shard, []).append((entry, rows, seq))
        for shard, records in by_shard.items():
            if publisher.submit_entries(self._keys[shard], records, reserved=reserved,
                                        replay=replay):  # fmt: skip
                for _, _, seq in records:
                    parts[seq] += 1

    def _shards_of(self, symbols: np.ndarray) -> np.ndarray:
        """Each symbol's ordering shard (a table given for fewer ids grows to cover them)."""
        table = self.shards
        if symbols.size and int(symbols.max()) >= table.n_symbols:
            wanted = max(int(symbols.max()) + 1, 2 * table.n_symbols)
            self.shards = table = ShardTable(wanted, table.shards)
        return table.of(symbols)

    def _signals(self, batches: list[DurableBatch], parts: dict[int, int], reserved: bool,
                 replay: bool) -> None:  # fmt: skip
        """Write, cache and publish the signals of batches computed by one model (and the
        features behind them), counting the parts to wait for per batch."""
        names = ("symbol", "ts_ns", "direction", "strength", "confidence")
        signals = dataclasses.replace(batches[0].signals, **dict(zip(
            names, _joined([b.signals for b in batches], names), strict=True)))  # fmt: skip
        features = np.concatenate([b.features for b in batches])
        seqs = [b.seq for b in batches]
        counts = [len(b.signals) for b in batches]
        row_seqs = np.repeat(seqs, counts)
        computed_at = np.repeat([b.computed_at_ns for b in batches], counts)
        landed = int(self.warehouse.append_signals(signals, reserved=reserved, seq=seqs,
                                                   replay=replay, computed_at_ns=computed_at))  # fmt: skip
        landed += int(self.warehouse.append_features(signals.symbol, signals.ts_ns, features,
                                                     reserved=reserved, seq=seqs, replay=replay))  # fmt: skip
        for seq in seqs:
            parts[seq] += landed
        shards = self._shards_of(signals.symbol)
        if self.signals_frames is not None:
            entries = batch_format.signal_entries(
                shards, row_seqs, signals, {b.seq: b.computed_at_ns for b in batches}
            )
            self._publish(self.signals_frames, entries, parts, reserved, replay)
        if self.signals_schema is not None:  # one Signal message each (BigQuery rows)
            order, spans = batch_format.runs(shards)
            for shard, lo, hi in spans:
                for i in order[lo:hi].tolist():
                    message = batch_format.signal_bytes(signals.row(i), int(computed_at[i]))
                    parts[int(row_seqs[i])] += self.signals_schema.submit(
                        self._keys[shard], message, reserved=reserved, seq=int(row_seqs[i]),
                        replay=replay)  # fmt: skip
        if not replay:
            for b in batches:
                self.cache.submit(b.signals, b.computed_at_ns)  # L2, in the background

    # --- reads -----------------------------------------------------------------------------

    async def latest(self, symbol: int) -> tuple[Signal, int] | None:
        """A symbol's latest fresh signal and when it was computed, from the cache hierarchy
        (L1 → L2 → L3)."""
        return await self.cache.get_timed(symbol)

    # --- shutdown --------------------------------------------------------------------------

    async def close(self, timeout: float = 10.0) -> None:
        """Deliver what was accepted (publishers, then the warehouse), then disconnect."""
        publishers = list(self.publishers.values())
        for publisher in publishers:
            await publisher.close(timeout, close_sink=False)
        if publishers:
            await publishers[0].sink.close()
        await self.warehouse.close(timeout)
        await self.cache.close()
