"""Faults under load: the inference server and a Redis master die and come back while clients
ingest and read (documented degradation: inference falls back to the in-process model and
L2 reads become misses; no request fails and no accepted signal is lost), and the service
itself is killed with SIGKILL and restarted (nothing acknowledged is lost or duplicated)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import grpc
import numpy as np
from prometheus_client import REGISTRY

from app.config import (
    AppConfig,
    BatcherConfig,
    FeatureConfig,
    KServeConfig,
    ModelConfig,
    ServerConfig,
)
from app.model.build import ModelArtifacts
from app.publish import read_published
from app.server import SignalServer, build_runtime, pb2, pb2_grpc
from app.settings.shards import DEFAULT_SHARDS
from app.settings.telemetry import TelemetryConfig
from app.settings.warehouse import WarehouseConfig
from app.shards import shard_of
from tests.app.conftest import ServiceProcess, run
from tests.app.redis_cluster import PASSWORD, LocalRedisCluster

N_SYMBOLS = 64
CLIENTS = 4


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def client(stub: Any, index: int, stop: asyncio.Event, acks: list[Any],
                 failures: list[str]) -> None:  # fmt: skip
    symbols = np.arange(index, N_SYMBOLS, CLIENTS, dtype=np.int32)
    rng = np.random.default_rng(index)
    price = 50 + rng.random(symbols.size) * 50
    ts = time.time_ns()
    batch_id = 0
    while not stop.is_set():
        price = np.round(price * np.exp(rng.normal(0, 2e-3, symbols.size)), 2)
        stamps = ts + np.arange(symbols.size, dtype=np.int64) * 1000
        ts = int(stamps[-1]) + 1000
        batch_id += 1
        request = pb2.TickBatch(symbol=symbols.tolist(), price=price.tolist(),
                                size=rng.integers(1, 300, symbols.size).astype(float).tolist(),
                                ts_ns=stamps.tolist(), batch_id=batch_id)  # fmt: skip
        try:
            acks.append(await stub.IngestTicks(request, timeout=10))
            await stub.GetSignal(pb2.SignalRequest(symbol=int(symbols[0])), timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # before warm-up: not a failure
                failures.append(f"{exc.code().name}: {exc.details()}")
        await asyncio.sleep(0.005)


def test_inference_server_and_redis_master_die_under_load_without_failures_or_loss(
    model: ModelArtifacts, mlserver: Any, redis_cluster: LocalRedisCluster, tmp_path: Path
) -> None:
    redis_cluster.ensure_healthy()
    publish_dir = tmp_path / "published"
    warehouse_file = tmp_path / "warehouse.duckdb"
    config = AppConfig.model_validate({
        "features": FeatureConfig(n_symbols=N_SYMBOLS).model_dump(),
        "model": ModelConfig(dir=model.root, build_if_missing=False).model_dump(),
        "batcher": BatcherConfig(max_queue_delay_us=200).model_dump(),
        "server": ServerConfig(port=0, grace_s=5.0).model_dump(),
        "kserve": KServeConfig(url=mlserver.url, model_name=model.name,
                               model_version=str(model.version), timeout_s=1.0,
                               failure_threshold=1, reset_timeout_s=0.5).model_dump(),
        "cache": {"redis": {"nodes": redis_cluster.startup_nodes, "auth": "password",
                            "password": PASSWORD, "cooldown_s": 0.2}},
        "publish": {"local_dir": str(publish_dir), "max_latency_ms": 20},
        "warehouse": WarehouseConfig(duckdb_path=warehouse_file, flush_interval_s=0.2).model_dump(),
        "telemetry": TelemetryConfig(metrics_port=None).model_dump(),
    })  # fmt: skip
    fallbacks_before = sum(counter("signal_inference_fallbacks_total", reason=r)
                           for r in ("primary_failed", "circuit_open"))  # fmt: skip
    l2_errors_before = counter("signal_cache_errors_total", level="l2")
    acks: list[Any] = []
    failures: list[str] = []
    events: list[str] = []

    def faults(stop_load: threading.Event) -> None:
        time.sleep(1.0)
        mlserver.stop()
        events.append("mlserver stopped")
        time.sleep(1.0)
        victim = redis_cluster.master_of("{3}:signal")
        victim.kill()
        events.append(f"redis master {victim.port} killed")
        time.sleep(1.0)
        mlserver.start(timeout_s=90)
        events.append("mlserver restarted")
        time.sleep(1.5)  # load continues on the recovered inference server
        stop_load.set()

    async def scenario() -> None:
        server = SignalServer(config, build_runtime(config))
        port = await server.start()
        stop_flag = threading.Event()
        stop = asyncio.Event()
        injector = threading.Thread(target=faults, args=(stop_flag,), daemon=True)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb2_grpc.SignalServiceStub(channel)
                tasks = [asyncio.create_task(client(stub, i, stop, acks, failures))
                         for i in range(CLIENTS)]  # fmt: skip
                injector.start()
                while not stop_flag.is_set():
                    await asyncio.sleep(0.05)
                stop.set()
                await asyncio.gather(*tasks)
        finally:
            await server.stop(grace_s=5.0)  # delivers everything accepted
            injector.join(120)

    try:
        run(scenario())
    finally:
        redis_cluster.ensure_healthy()
        if mlserver.proc is None or mlserver.proc.poll() is not None:
            mlserver.start(timeout_s=90)

    assert events == ["mlserver stopped", events[1], "mlserver restarted"], events
    assert failures == [], failures[:5]
    accepted_signals = sum(a.signals for a in acks)
    assert len(acks) > 50 and accepted_signals > 100, (len(acks), accepted_signals)
    # The documented degradation happened: fallback inference and L2 misses.
    fallbacks = sum(counter("signal_inference_fallbacks_total", reason=r)
                    for r in ("primary_failed", "circuit_open"))  # fmt: skip
    assert fallbacks > fallbacks_before
    assert counter("signal_cache_errors_total", level="l2") > l2_errors_before

    # Nothing accepted was lost: every signal of every ack is in the published frames ...
    published: list[Any] = []
    for key, entry in read_published(publish_dir, "signals-batches"):
        for symbol, ts in zip(entry.symbol, entry.ts_ns, strict=True):
            assert key == f"shard-{shard_of(symbol, DEFAULT_SHARDS)}-of-{DEFAULT_SHARDS}"
            published.append((symbol, ts))
    assert len(published) == accepted_signals == len(set(published))
    ticks_published = sum(len(e.symbol) for _, e in read_published(publish_dir, "ticks-batches"))
    assert ticks_published == sum(a.accepted for a in acks)
    # ... and in the warehouse.
    with duckdb.connect(str(warehouse_file), read_only=True) as con:
        (rows,) = con.execute("SELECT count(*) FROM signals").fetchone() or (0,)
        (ticks,) = con.execute("SELECT count(*) FROM ticks").fetchone() or (0,)
    assert rows == accepted_signals
    assert ticks == sum(a.accepted for a in acks)


class DownSink:
    """A publish sink that is down until ``up`` is set (failing on purpose)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.up = False

    async def publish(self, topic: str, ordering_key: str, messages: Any) -> None:
        if not self.up:
            raise ConnectionError("Pub/Sub unreachable (on purpose)")
        await self.inner.publish(topic, ordering_key, messages)

    def __getattr__(self, name: str) -> Any:  # what it holds, closing: the real sink
        return getattr(self.inner, name)


def test_a_full_publish_buffer_refuses_whole_batches_before_applying_them(
    model: ModelArtifacts, tmp_path: Path
) -> None:
    config = AppConfig.model_validate({
        "features": {"n_symbols": 8},
        "model": {"dir": str(model.root), "build_if_missing": False},
        "server": {"port": 0, "grace_s": 5.0},
        "publish": {"local_dir": str(tmp_path), "buffer_max_messages": 60, "max_messages": 10,
                    "retry_initial_ms": 5, "retry_max_ms": 20},
        "telemetry": {"metrics_port": None},
    })  # fmt: skip

    def batch(i: int) -> Any:
        ts = 1_700_000_000_000_000_000 + i * 8_000
        return pb2.TickBatch(symbol=list(range(8)), price=[100.0 + i * 0.01] * 8,
                             size=[10.0] * 8, ts_ns=[ts + k for k in range(8)], batch_id=i)  # fmt: skip

    async def scenario() -> None:
        runtime = build_runtime(config)
        assert runtime.data_path is not None
        framed = runtime.data_path.ticks_frames
        down = DownSink(framed.sink)
        framed.sink = down
        server = SignalServer(config, runtime)
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb2_grpc.SignalServiceStub(channel)
                accepted = 0
                refused_at = None
                for i in range(1, 30):
                    try:
                        ack = await stub.IngestTicks(batch(i))
                        accepted += ack.accepted
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        assert "publish buffer full" in (exc.details() or "")
                        refused_at = i
                        break
                assert refused_at is not None and accepted == 8 * (refused_at - 1)
                assert framed.backlog <= 60
                down.up = True  # the sink recovers: the buffer drains, nothing was dropped
                runtime.ingestor.flush_deliveries()  # the acked batches' group, without waiting
                await framed.flush(10)
                # The refused batch changed no state: sent again, every tick is accepted
                # (had it been applied, its ticks would now be rejected as stale).
                ack = await stub.IngestTicks(batch(refused_at))
                assert (ack.accepted, ack.rejected) == (8, 0)
                accepted += 8
        finally:
            await server.stop(grace_s=5.0)
        published = sum(len(e.symbol) for _, e in read_published(tmp_path, "ticks-batches"))
        assert published == accepted

    run(scenario())


class StreamClient(threading.Thread):
    """Sends batches of its own symbols, one per ``StreamSignals`` call, as a named producer
    with increasing batch ids; keeps each (request, SignalBatch) and the request in flight
    when the server went away."""

    def __init__(self, target: str, index: int) -> None:
        super().__init__(daemon=True)
        self.target, self.index = target, index
        self.acked: list[tuple[Any, Any]] = []
        self.in_flight: Any = None
        self.failures: list[str] = []

    def run(self) -> None:
        symbols = np.arange(self.index, N_SYMBOLS, CLIENTS, dtype=np.int32)
        rng = np.random.default_rng(self.index)
        price = 50 + rng.random(symbols.size) * 50
        ts = time.time_ns() - 120_000_000_000
        with grpc.insecure_channel(self.target) as channel:
            stub = pb2_grpc.SignalServiceStub(channel)
            for batch_id in range(1, 100_000):
                price = np.round(price * np.exp(rng.normal(0, 2e-3, symbols.size)), 2)
                stamps = ts + np.arange(symbols.size, dtype=np.int64) * 1000
                ts = int(stamps[-1]) + 1000
                request = pb2.TickBatch(
                    symbol=symbols.tolist(), price=price.tolist(),
                    size=rng.integers(1, 300, symbols.size).astype(float).tolist(),
                    ts_ns=stamps.tolist(), batch_id=batch_id, producer=f"client-{self.index}",
                )  # fmt: skip
                self.in_flight = request
                try:
                    (reply,) = list(stub.StreamSignals(iter([request]), timeout=10))
                except grpc.RpcError as exc:
                    code = exc.code()  # type: ignore[attr-defined]
                    if code != grpc.StatusCode.UNAVAILABLE:
                        self.failures.append(f"{code.name}: {exc.details()}")  # type: ignore[attr-defined]
                    return  # killed: the batch in flight may or may not have been spooled
                self.acked.append((request, reply))
                self.in_flight = None


def test_kill_9_under_load_then_restart_keeps_every_ack_exactly_once(
    model: ModelArtifacts, tmp_path: Path
) -> None:
    """An ack means durable: ``kill -9`` while clients stream, restart with the same
    configuration, and every acknowledged tick and signal is in the warehouse and the
    published topics exactly once; a batch retried across the crash gets its first reply."""
    published = tmp_path / "published"
    warehouse = tmp_path / "warehouse.duckdb"
    config = {
        "features": {"n_symbols": N_SYMBOLS},
        "model": {"build_if_missing": False},
        "spool": {"dir": str(tmp_path / "spool")},
        # Slow sinks: at the kill, most acknowledged batches are only in the spool.
        "publish": {"local_dir": str(published), "max_latency_ms": 3000},
        "warehouse": {"duckdb_path": str(warehouse), "flush_interval_s": 5,
                      "batch_rows": 100_000},
        "telemetry": {"metrics_port": None},
    }  # fmt: skip
    server = ServiceProcess(tmp_path, config, model).start()
    clients = [StreamClient(server.target, i) for i in range(CLIENTS)]
    try:
        for c in clients:
            c.start()
        deadline = time.monotonic() + 60
        while sum(len(c.acked) for c in clients) < 400:
            assert time.monotonic() < deadline and all(c.is_alive() for c in clients)
            time.sleep(0.02)
        server.kill()  # SIGKILL under load: no shutdown code runs
        for c in clients:
            c.join(30)
        assert all(not c.failures for c in clients), [c.failures for c in clients]
        server.start()  # the same configuration: the same spool
        with grpc.insecure_channel(server.target) as channel:
            stub = pb2_grpc.SignalServiceStub(channel)
            for c in clients:
                request, reply = c.acked[-1]
                (again,) = list(stub.StreamSignals(iter([request])))
                assert again.SerializeToString() == reply.SerializeToString()  # from the spool
                if c.in_flight is not None:  # its fate unknown to the client: retry it
                    (reply,) = list(stub.StreamSignals(iter([c.in_flight])))
                    c.acked.append((c.in_flight, reply))
        assert server.stop() == 0
    finally:
        server.close()
    log = server.output()
    assert '"spool_replayed"' in log and "Traceback" not in log

    acked_ticks = Counter(
        (s, t) for request, _ in (a for c in clients for a in c.acked)
        for s, t in zip(request.symbol, request.ts_ns, strict=True)
    )  # fmt: skip
    acked_signals = Counter(
        (s, t) for _, reply in (a for c in clients for a in c.acked)
        for s, t in zip(reply.symbol, reply.ts_ns, strict=True)
    )  # fmt: skip
    assert max(acked_ticks.values()) == 1 and len(acked_signals) > 100
    with duckdb.connect(str(warehouse), read_only=True) as con:
        ticks = Counter(con.execute("SELECT symbol, ts_ns FROM ticks").fetchall())
        signals = Counter(con.execute("SELECT symbol, ts_ns FROM signals").fetchall())
        (features,) = con.execute("SELECT count(*) FROM features").fetchone() or (0,)
    assert max(ticks.values()) == 1 and max(signals.values()) == 1  # nothing twice
    assert set(acked_ticks) <= set(ticks) and set(acked_signals) <= set(signals)  # nothing lost
    assert features == len(signals)  # the row behind each signal
    frames_ticks: Counter[tuple[int, int]] = Counter()
    for _, entry in read_published(published, "ticks-batches"):
        frames_ticks.update(zip(entry.symbol, entry.ts_ns, strict=True))
    frames_signals = Counter(
        (symbol, ts)
        for _, entry in read_published(published, "signals-batches")
        for symbol, ts in zip(entry.symbol, entry.ts_ns, strict=True)
    )
    assert max(frames_ticks.values()) == 1 and set(acked_ticks) <= set(frames_ticks)
    assert max(frames_signals.values()) == 1 and set(acked_signals) <= set(frames_signals)
