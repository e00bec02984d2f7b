"""Faults under load: the inference server and a Redis master die and come back while clients
ingest and read. Documented degradation: inference falls back to the in-process model
and L2 reads become misses; no request fails and no accepted signal is lost."""

from __future__ import annotations

import asyncio
import threading
import time
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
from app.publish import decode_batch, read_local_topic
from app.server import SignalServer, build_runtime, pb2, pb2_grpc
from app.telemetry import TelemetryConfig
from app.warehouse import WarehouseConfig
from tests.app.conftest import run
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
    for key, payload in read_local_topic(publish_dir, "signals-batches"):
        _, records = decode_batch(payload)
        for record in records:
            message = pb2.Signal.FromString(record)
            assert str(message.symbol) == key  # ordering key = symbol
            published.append((message.symbol, message.ts_ns))
    assert len(published) == accepted_signals == len(set(published))
    ticks_published = 0
    for _, payload in read_local_topic(publish_dir, "ticks-batches"):
        ticks_published += sum(len(pb2.TickBatch.FromString(r).symbol)
                               for r in decode_batch(payload)[1])  # fmt: skip
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

    async def publish(
        self, topic: str, key: str, payload: bytes, attributes: dict[str, str]
    ) -> None:
        if not self.up:
            raise ConnectionError("Pub/Sub unreachable (on purpose)")
        await self.inner.publish(topic, key, payload, attributes)

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
                await framed.flush(10)
                # The refused batch changed no state: sent again, every tick is accepted
                # (had it been applied, its ticks would now be rejected as stale).
                ack = await stub.IngestTicks(batch(refused_at))
                assert (ack.accepted, ack.rejected) == (8, 0)
                accepted += 8
        finally:
            await server.stop(grace_s=5.0)
        published = sum(len(pb2.TickBatch.FromString(r).symbol)
                        for _, payload in read_local_topic(tmp_path, "ticks-batches")
                        for r in decode_batch(payload)[1])  # fmt: skip
        assert published == accepted

    run(scenario())
