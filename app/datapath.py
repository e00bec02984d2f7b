"""The service's data path: where accepted ticks and new signals go after the pipeline.

Per ingested batch: accepted ticks go to the warehouse (`ticks`) and are published, each
symbol's ticks as one columnar ``TickBatch`` under the symbol's ordering key, in
compressed frames on ``<ticks_topic><batch_suffix>`` (and, with Pub/Sub, the whole
batch as one ``TickBatch`` on the schema topic); new signals are written through the
cache (L1, L2) and the warehouse (`signals`), and published as ``Signal`` messages the
same two ways. GetSignal misses in the in-process store read through the cache
hierarchy (L1 → L2 → L3).

Back-pressure without loss: `admit` reserves room for a batch in every buffer before the
batch is applied; a full buffer refuses the batch up front (the server answers
RESOURCE_EXHAUSTED and changes nothing), and an admitted batch's records always fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from app.cache import CacheConfig, TieredCache
from app.publish import PublishBackpressure, PublishConfig, Publisher, build_sink
from app.signals import Signal, SignalColumns
from app.telemetry import Metrics, default_metrics
from app.warehouse import Warehouse, WarehouseBackpressure, WarehouseConfig

log = structlog.get_logger("app.datapath")


class DataPathBackpressure(RuntimeError):
    """A buffer of the data path is full: the batch was not applied; retry it later."""


@dataclass
class Admission:
    """Room held for one batch of ``n`` ticks (and at most ``n`` signals)."""

    n: int
    holds: list[tuple[Any, int]]  # (publisher or warehouse, rows held)
    open: bool = True


class DataPath:
    def __init__(
        self,
        cache: TieredCache,
        warehouse: Warehouse,
        publish: PublishConfig,
        publishers: dict[str, Publisher],
        metrics: Metrics | None = None,
    ) -> None:
        from app.proto import load

        self.cache = cache
        self.warehouse = warehouse
        self.publish_config = publish
        self.publishers = publishers
        self.metrics = metrics or default_metrics()
        self._pb2, _ = load()
        p = publish
        self.ticks_frames = publishers[f"{p.ticks_topic}{p.batch_suffix}"]
        self.signals_frames = publishers[f"{p.signals_topic}{p.batch_suffix}"]
        self.ticks_schema = publishers.get(p.ticks_topic)
        self.signals_schema = publishers.get(p.signals_topic)

    @classmethod
    def from_config(
        cls,
        cache: CacheConfig,
        publish: PublishConfig,
        warehouse: WarehouseConfig,
        *,
        metrics: Metrics | None = None,
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
        sink = build_sink(publish, pubsub_client)
        publishers: dict[str, Publisher] = {}
        for topic, record_type in ((publish.ticks_topic, "TickBatch"),
                                   (publish.signals_topic, "Signal")):  # fmt: skip
            framed = f"{topic}{publish.batch_suffix}"
            publishers[framed] = Publisher(framed, publish, sink, metrics, record_type=record_type)
            if publish.publishes_schema_topics:
                publishers[topic] = Publisher(topic, publish, sink, metrics, framed=False)
        return cls(tiered, store, publish, publishers, metrics)

    def start(self) -> None:
        self.warehouse.start()
        for publisher in self.publishers.values():
            publisher.start()

    # --- ingest --------------------------------------------------------------------------

    def admit(self, n_ticks: int) -> Admission:
        """Reserve room for a batch of ``n_ticks`` in every buffer, or raise
        `DataPathBackpressure` holding nothing."""
        wanted: list[tuple[Any, int]] = [
            (self.ticks_frames, n_ticks),
            (self.signals_frames, n_ticks),
            (self.warehouse, 2 * n_ticks),  # ticks + (at most as many) signals
        ]
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

    async def record(
        self,
        admission: Admission,
        symbol: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        ts_ns: np.ndarray,
        accepted: np.ndarray,
        signals: SignalColumns,
    ) -> None:
        """Send an applied batch's accepted ticks and its signals down the data path, using
        the room `admit` reserved; then release the rest."""
        try:
            self._ticks(symbol[accepted], price[accepted], size[accepted], ts_ns[accepted])
            if len(signals):
                await self._signals(signals)
        finally:
            self.release(admission)

    def _ticks(self, symbol: np.ndarray, price: np.ndarray, size: np.ndarray,
               ts_ns: np.ndarray) -> None:  # fmt: skip
        n = int(symbol.shape[0])
        if n == 0:
            return
        self.warehouse.append_ticks(symbol, price, size, ts_ns, reserved=True)
        TickBatch = self._pb2.TickBatch
        if self.ticks_schema is not None:
            whole = TickBatch(symbol=symbol.tolist(), price=price.tolist(), size=size.tolist(),
                              ts_ns=ts_ns.tolist())  # fmt: skip
            self.ticks_schema.submit_many("", [whole.SerializeToString()], reserved=True)
        # One columnar TickBatch per symbol, in tick order, under the symbol's ordering key.
        order = np.argsort(symbol, kind="stable")
        s_sorted = symbol[order]
        bounds = np.flatnonzero(np.diff(s_sorted)) + 1
        for rows in np.split(order, bounds):
            sym = int(symbol[rows[0]])
            batch = TickBatch(symbol=[sym] * len(rows), price=price[rows].tolist(),
                              size=size[rows].tolist(), ts_ns=ts_ns[rows].tolist())  # fmt: skip
            self.ticks_frames.submit_many(str(sym), [batch.SerializeToString()], reserved=True)

    async def _signals(self, signals: SignalColumns) -> None:
        rows = [signals.row(i) for i in range(len(signals))]
        self.warehouse.append_signals(signals, reserved=True)
        Message = self._pb2.Signal
        for s in rows:
            message = Message(symbol=s.symbol, ts_ns=s.ts_ns, direction=s.direction,
                              strength=s.strength, confidence=s.confidence,
                              model_version=s.model_version).SerializeToString()  # fmt: skip
            self.signals_frames.submit_many(str(s.symbol), [message], reserved=True)
            if self.signals_schema is not None:
                self.signals_schema.submit_many(str(s.symbol), [message], reserved=True)
        await self.cache.put_many(rows)  # L1 and L2 (pipelined); L2 failures are misses

    # --- reads -----------------------------------------------------------------------------

    async def latest(self, symbol: int) -> Signal | None:
        """A symbol's latest signal from the cache hierarchy (L1 → L2 → L3)."""
        return await self.cache.get(symbol)

    # --- shutdown --------------------------------------------------------------------------

    async def flush(self, timeout: float = 10.0) -> None:
        for publisher in self.publishers.values():
            await publisher.flush(timeout)
        await self.warehouse.flush(timeout)

    async def close(self, timeout: float = 10.0) -> None:
        """Deliver what was accepted (publishers, then the warehouse), then disconnect."""
        publishers = list(self.publishers.values())
        for publisher in publishers:
            await publisher.close(timeout, close_sink=False)
        if publishers:
            await publishers[0].sink.close()
        await self.warehouse.close(timeout)
        await self.cache.close()
