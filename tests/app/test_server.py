"""The gRPC API end to end on loopback: ingest, signals, streams, errors, health, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from app.config import AppConfig, BatcherConfig, FeatureConfig, ModelConfig, ServerConfig
from app.features import REJECT_BAD_PRICE, REJECT_BAD_SIZE, REJECT_STALE_TIMESTAMP, FeatureEngine
from app.inference import Inference, InferenceBackend, LocalOnnxBackend
from app.model.build import ModelArtifacts
from app.model.contract import model_inputs
from app.pipeline import last_warm_row_per_symbol
from app.server import SignalServer, build_runtime, pb2, pb2_grpc
from app.signals import DIRECTION_DOWN, DIRECTION_UP
from app.synthetic import synthetic_ticks
from tests.app.conftest import run

N_SYMBOLS = 20


class SlowBackend(InferenceBackend):
    """The real model, but each call takes ``delay_s`` (to hold calls in flight)."""

    def __init__(self, inner: InferenceBackend, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    async def infer(self, inputs: np.ndarray) -> Inference:
        await asyncio.sleep(self.delay_s)
        return await self.inner.infer(inputs)


def _config(model: ModelArtifacts, **batcher: int) -> AppConfig:
    return AppConfig(
        features=FeatureConfig(n_symbols=N_SYMBOLS),
        model=ModelConfig(dir=model.root, build_if_missing=False),
        batcher=BatcherConfig(**{"max_queue_delay_us": 200, **batcher}),
        server=ServerConfig(port=0, grace_s=5.0),
    )


Scenario = Callable[[Any, grpc.aio.Channel, SignalServer], Awaitable[None]]


def serve_and(
    model: ModelArtifacts, scenario: Scenario, *, delay_s: float = 0.0, **batcher: int
) -> None:
    async def main() -> None:
        config = _config(model, **batcher)
        backend: InferenceBackend = LocalOnnxBackend(model.path("fp32"), model.model_version)
        if delay_s:
            backend = SlowBackend(backend, delay_s)
        server = SignalServer(config, build_runtime(config, backend))
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await scenario(pb2_grpc.SignalServiceStub(channel), channel, server)
        finally:
            await server.stop(grace_s=1.0)

    run(main())


def _batches(n_batches: int, per_batch: int = 100, seed: int = 3) -> list[Any]:
    """The first ``n_batches`` batches of one fixed tick sequence (so prefixes agree)."""
    ticks, _ = synthetic_ticks(N_SYMBOLS, 60 * per_batch // N_SYMBOLS, seed=seed)
    return [
        pb2.TickBatch(
            symbol=ticks.symbol[i * per_batch : (i + 1) * per_batch].tolist(),
            price=ticks.price[i * per_batch : (i + 1) * per_batch].tolist(),
            size=ticks.size[i * per_batch : (i + 1) * per_batch].tolist(),
            ts_ns=ticks.ts_ns[i * per_batch : (i + 1) * per_batch].tolist(),
            batch_id=i + 1,
        )
        for i in range(n_batches)
    ]


def warm_symbols(batches: list[Any]) -> set[int]:
    """The symbols whose last tick in the last of ``batches`` has warm features, computed
    by a fresh engine of the same configuration: the symbols that batch gets signals for."""
    engine = FeatureEngine.from_config(FeatureConfig(n_symbols=N_SYMBOLS))
    features = np.empty((0, 7))
    for b in batches:
        features = engine.update(np.array(b.symbol, np.int32), np.array(b.price),
                                 np.array(b.size), np.array(b.ts_ns, np.int64))  # fmt: skip
    last = batches[-1]
    _, warm = model_inputs(features)
    rows = last_warm_row_per_symbol(np.array(last.symbol), warm)
    return {int(last.symbol[i]) for i in rows}


def test_ingest_then_get_signal(model: ModelArtifacts) -> None:
    async def scenario(stub: Any, _channel: grpc.aio.Channel, server: SignalServer) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSignal(pb2.SignalRequest(symbol=3))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "symbol = 3: no signal yet" in (err.value.details() or "")

        batches = _batches(20)
        acks = [await stub.IngestTicks(b) for b in batches]
        assert [a.batch_id for a in acks] == list(range(1, 21))
        assert all(a.accepted == 100 and a.rejected == 0 for a in acks)
        assert acks[0].signals == 0  # nothing is warm after 5 ticks per symbol
        # Once warm: one signal per warm symbol of the batch.
        assert acks[-1].signals == len(warm_symbols(batches)) > 10

        last = batches[-1]
        symbol = last.symbol[-1]
        sig = await stub.GetSignal(pb2.SignalRequest(symbol=symbol))
        assert sig.symbol == symbol and sig.ts_ns == last.ts_ns[-1]  # after its last tick
        assert sig.model_version == "signal_mlp/1"
        assert sig.direction in (pb2.DIRECTION_DOWN, pb2.DIRECTION_FLAT, pb2.DIRECTION_UP)
        assert 1 / 3 <= sig.confidence <= 1 and -1 <= sig.strength <= 1
        if sig.direction == DIRECTION_UP:
            assert sig.strength > 0
        if sig.direction == DIRECTION_DOWN:
            assert sig.strength < 0

    serve_and(model, scenario)


def test_ack_lists_rejected_ticks_with_reasons(model: ModelArtifacts) -> None:
    async def scenario(stub: Any, _channel: grpc.aio.Channel, _server: SignalServer) -> None:
        ack = await stub.IngestTicks(
            pb2.TickBatch(symbol=[0, 0, 1, 0], price=[10.0, 11.0, -2.0, 12.0],
                          size=[1.0, -1.0, 1.0, 1.0], ts_ns=[100, 101, 100, 99], batch_id=7)
        )  # fmt: skip
        assert (ack.batch_id, ack.accepted, ack.rejected) == (7, 1, 3)
        assert list(ack.rejected_index) == [1, 2, 3]
        assert list(ack.rejected_reason) == [
            REJECT_BAD_SIZE,
            REJECT_BAD_PRICE,
            REJECT_STALE_TIMESTAMP,
        ]

    serve_and(model, scenario)


BAD_REQUESTS = [
    (pb2.TickBatch(), "symbol: the batch is empty"),
    (pb2.TickBatch(symbol=[0] * 10_001, price=[1.0] * 10_001, size=[1.0] * 10_001,
                   ts_ns=[1] * 10_001), "symbol: the batch has 10001 ticks; at most 10000"),
    (pb2.TickBatch(symbol=[0, 1], price=[1.0], size=[1.0, 1.0], ts_ns=[1, 1]),
     "price: 1 values but symbol has 2"),
    (pb2.TickBatch(symbol=[0, 1], price=[1.0, 1.0], size=[1.0, 1.0], ts_ns=[1]),
     "ts_ns: 1 values but symbol has 2"),
    (pb2.TickBatch(symbol=[0, 1], price=[1.0, float("nan")], size=[1.0, 1.0], ts_ns=[1, 1]),
     "price[1] = nan: prices must be finite"),
    (pb2.TickBatch(symbol=[0], price=[1.0], size=[float("inf")], ts_ns=[1]),
     "size[0] = inf: sizes must be finite"),
    (pb2.TickBatch(symbol=[0, 99], price=[1.0, 1.0], size=[1.0, 1.0], ts_ns=[1, 1]),
     "symbol[1] = 99: unknown symbol; ids are 0 to 19"),
]  # fmt: skip


def test_bad_requests_get_invalid_argument_and_change_nothing(model: ModelArtifacts) -> None:
    async def scenario(stub: Any, _channel: grpc.aio.Channel, server: SignalServer) -> None:
        engine = server.runtime.pipeline.engine
        await stub.IngestTicks(_batches(1)[0])
        before = engine.state.snapshot()
        for request, message in BAD_REQUESTS:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.IngestTicks(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in (err.value.details() or ""), err.value.details()
        for a, b in zip(before, engine.state.snapshot(), strict=True):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSignal(pb2.SignalRequest(symbol=-1))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        ack = await stub.IngestTicks(_batches(2)[1])  # still serving
        assert ack.accepted == 100

    serve_and(model, scenario)


def test_stream_answers_each_batch_in_order(model: ModelArtifacts) -> None:
    async def scenario(stub: Any, _channel: grpc.aio.Channel, _server: SignalServer) -> None:
        batches = _batches(15)

        async def requests() -> AsyncIterator[Any]:
            for b in batches:
                yield b

        replies = [r async for r in stub.StreamSignals(requests())]
        assert [r.batch_id for r in replies] == list(range(1, 16))
        assert all(r.ack.accepted == 100 for r in replies)
        last = replies[-1]
        # One signal per symbol that is warm after its last tick in the batch.
        assert sorted(last.symbol) == sorted(warm_symbols(batches)) and len(last.symbol) > 10
        n = len(last.symbol)
        assert (
            len(last.ts_ns)
            == len(last.direction)
            == len(last.strength)
            == len(last.confidence)
            == n
        )
        assert last.model_version == "signal_mlp/1"
        # Every signal comes from the symbol's last tick in that batch.
        lasts = {s: t for s, t in zip(batches[-1].symbol, batches[-1].ts_ns, strict=True)}
        assert dict(zip(last.symbol, last.ts_ns, strict=True)).items() <= lasts.items()

    serve_and(model, scenario)


def test_stream_aborts_on_a_bad_batch_and_the_server_keeps_serving(model: ModelArtifacts) -> None:
    async def scenario(stub: Any, _channel: grpc.aio.Channel, _server: SignalServer) -> None:
        async def requests() -> AsyncIterator[Any]:
            yield _batches(1)[0]
            yield pb2.TickBatch(symbol=[0], price=[float("nan")], size=[1.0], ts_ns=[1])

        call = stub.StreamSignals(requests())
        first = await call.read()
        assert first.batch_id == 1
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "price[0] = nan" in (err.value.details() or "")
        assert (await stub.IngestTicks(_batches(2)[1])).accepted == 100

    serve_and(model, scenario)


def test_full_inference_queue_is_resource_exhausted(model: ModelArtifacts) -> None:
    async def scenario(stub: Any, _channel: grpc.aio.Channel, server: SignalServer) -> None:
        warm = _batches(12)
        for b in warm[:10]:
            await stub.IngestTicks(b)
        # At most 20 signal rows per batch, room for 40 queued rows, calls held for 0.3 s.
        calls = [stub.IngestTicks(b) for b in _batches(40)[12:]]
        results = await asyncio.gather(*calls, return_exceptions=True)
        codes = [
            r.code() if isinstance(r, grpc.aio.AioRpcError) else grpc.StatusCode.OK for r in results
        ]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        assert grpc.StatusCode.OK in codes
        exhausted = next(r for r in results if isinstance(r, grpc.aio.AioRpcError))
        assert "max_queue_rows = 40" in (exhausted.details() or "")
        assert server.runtime.batcher.stats.rejected >= 1
        await asyncio.sleep(0.7)
        assert (await stub.IngestTicks(_batches(41)[40])).accepted == 100  # serves once drained

    serve_and(model, scenario, delay_s=0.3, max_batch_size=20, max_queue_rows=40,
              max_concurrent_batches=1)  # fmt: skip


def test_health_and_reflection(model: ModelArtifacts) -> None:
    async def scenario(_stub: Any, channel: grpc.aio.Channel, server: SignalServer) -> None:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "signals.v1.SignalService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> AsyncIterator[Any]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        services = set()
        async for reply in refl.ServerReflectionInfo(ask()):
            services |= {s.name for s in reply.list_services_response.service}
        assert {"signals.v1.SignalService", "grpc.health.v1.Health"} <= services

    serve_and(model, scenario)


def test_graceful_shutdown_finishes_in_flight_calls(model: ModelArtifacts) -> None:
    async def scenario(stub: Any, channel: grpc.aio.Channel, server: SignalServer) -> None:
        batches = _batches(12)
        for b in batches[:10]:
            await stub.IngestTicks(b)
        in_flight = asyncio.ensure_future(stub.IngestTicks(batches[10]))
        await asyncio.sleep(0.1)  # the call is now waiting on the (slow) model
        stopping = asyncio.ensure_future(server.stop(grace_s=5.0))
        await asyncio.sleep(0.05)
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # new calls are refused
            await stub.IngestTicks(batches[11], timeout=1.0)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        ack = await in_flight
        assert ack.accepted == 100 and ack.signals == len(warm_symbols(batches[:11])) > 0
        await stopping
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)

    serve_and(model, scenario, delay_s=0.5)
