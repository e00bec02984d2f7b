"""The gRPC API end to end on loopback: ingest, signals, streams, errors, health, shutdown."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from app.cache import decode_value
from app.client import SignalClient
from app.config import AppConfig, FeatureConfig
from app.features import REJECT_BAD_PRICE, REJECT_BAD_SIZE, REJECT_STALE_TIMESTAMP, FeatureEngine
from app.inference import Inference, InferenceBackend, LocalOnnxBackend
from app.model.build import ModelArtifacts
from app.model.contract import model_inputs
from app.pipeline import last_warm_row_per_symbol
from app.publish import read_published
from app.server import SignalServer, build_runtime, pb2, pb2_grpc
from app.signals import DIRECTION_DOWN, DIRECTION_UP
from app.synthetic import synthetic_ticks
from tests.app.conftest import ServiceProcess, run

N_SYMBOLS = 20


class SlowBackend(InferenceBackend):
    """The real model, but each call takes ``delay_s`` (to hold calls in flight)."""

    def __init__(self, inner: InferenceBackend, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    async def infer(self, inputs: np.ndarray) -> Inference:
        await asyncio.sleep(self.delay_s)
        return await self.inner.infer(inputs)


class JitterBackend(InferenceBackend):
    """The real model, each call delayed by a random 0-``max_s`` (calls finish out of order)."""

    def __init__(self, inner: InferenceBackend, max_s: float, seed: int = 0) -> None:
        self.inner = inner
        self.max_s = max_s
        self.rng = np.random.default_rng(seed)

    async def infer(self, inputs: np.ndarray) -> Inference:
        await asyncio.sleep(float(self.rng.uniform(0, self.max_s)))
        return await self.inner.infer(inputs)


def _config(model: ModelArtifacts, sections: dict[str, Any] | None = None,
            **batcher: int) -> AppConfig:  # fmt: skip
    """The test server's configuration: a fresh spool directory each time (no test sees
    another's batches), ``sections`` merged over the defaults."""
    return AppConfig.model_validate({
        "features": {"n_symbols": N_SYMBOLS},
        "model": {"dir": str(model.root), "build_if_missing": False},
        "batcher": {"max_queue_delay_us": 200, **batcher},
        "server": {"port": 0, "grace_s": 5.0},
        "spool": {"dir": tempfile.mkdtemp(prefix="spool-")},
        "telemetry": {"metrics_port": None},
        **(sections or {}),
    })  # fmt: skip


Scenario = Callable[[Any, grpc.aio.Channel, SignalServer], Awaitable[None]]


def serve_and(
    model: ModelArtifacts, scenario: Scenario, *, delay_s: float = 0.0,
    backend: InferenceBackend | None = None, sections: dict[str, Any] | None = None,
    **batcher: int,
) -> None:  # fmt: skip
    async def main() -> None:
        config = _config(model, sections, **batcher)
        inner = backend or LocalOnnxBackend(model.path("fp32"), model.model_version)
        server = SignalServer(config, build_runtime(config, SlowBackend(inner, delay_s)
                                                    if delay_s else inner))  # fmt: skip
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


def test_a_batch_whose_features_would_overflow_is_refused_whole(model: ModelArtifacts) -> None:
    """The bounds keep the arithmetic finite; should a feature still come out infinite, the
    whole batch is refused and every symbol it touched is back as it was (state poisoned
    here by hand, as no accepted input can)."""
    from app.state import F_VWAP_PV

    async def scenario(stub: Any, _channel: grpc.aio.Channel, server: SignalServer) -> None:
        # Inside the default venue's session (2026-12-02 15:00 UTC, a Wednesday): outside it
        # each tick starts the session's VWAP afresh, and the poisoned sum would go unread.
        t0 = 1_796_223_600 * 10**9
        await stub.IngestTicks(pb2.TickBatch(**now_ticks([1, 2], 3, t0)))
        state = server.runtime.pipeline.engine.state
        state.floats[F_VWAP_PV, 2] = np.inf
        before = state.snapshot()
        batch = pb2.TickBatch(symbol=[1, 2], price=[100.0, 100.0], size=[1.0, 1.0],
                              ts_ns=[t0 + 10**7, t0 + 10**7])  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.IngestTicks(batch)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "ticks[1]: vwap would be inf" in (err.value.details() or "")
        for a, b in zip(before, state.snapshot(), strict=True):
            np.testing.assert_array_equal(a, b)  # symbol 1's tick was undone too
        state.floats[F_VWAP_PV, 2] = 0.0
        assert (await stub.IngestTicks(batch)).accepted == 2

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


def test_a_stream_applies_its_messages_without_waiting_for_earlier_replies(
    model: ModelArtifacts,
) -> None:
    """Messages of one stream are applied as they arrive: 20 batches whose inference takes
    0.1 s each finish in well under the 2 s they would take one after the other, and their
    records share group commits."""

    async def scenario(stub: Any, _channel: grpc.aio.Channel, server: SignalServer) -> None:
        batches = _batches(20, per_batch=20)

        async def requests() -> AsyncIterator[Any]:
            for b in batches:
                yield b

        started = time.monotonic()
        replies = [r async for r in stub.StreamSignals(requests())]
        took = time.monotonic() - started
        assert [r.batch_id for r in replies] == list(range(1, 21))
        assert all(r.ack.accepted == 20 for r in replies)
        assert took < 1.2, f"{took:.2f} s: the stream's batches waited for each other"
        assert server.runtime.spool is not None and server.runtime.spool.groups < 20

    serve_and(model, scenario, delay_s=0.1)


def test_a_refused_stream_message_ends_the_stream_and_nothing_after_it_is_applied(
    model: ModelArtifacts,
) -> None:
    """The replies of the messages before a refused one come first; the messages after it
    are not applied (a client sends them again, in order, after the refused one)."""

    async def scenario(stub: Any, _channel: grpc.aio.Channel, server: SignalServer) -> None:
        b1, b2, b3 = _batches(3)
        bad = pb2.TickBatch(symbol=[0], price=[float("nan")], size=[1.0], ts_ns=[1], batch_id=9)

        async def requests() -> AsyncIterator[Any]:
            for b in (b1, b2, bad, b3):
                yield b

        call = stub.StreamSignals(requests())
        assert [(await call.read()).batch_id, (await call.read()).batch_id] == [1, 2]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert server.runtime.pipeline.seq == 2  # b3 came after the refusal: not applied
        state = server.runtime.pipeline.engine.state
        assert sum(state.tick_count(s) for s in range(N_SYMBOLS)) == 200

    serve_and(model, scenario)


def test_the_client_keeps_parts_in_order_through_refusals_mid_stream(
    model: ModelArtifacts,
) -> None:
    """`SignalClient` keeps up to ``window`` parts in flight on one stream; when the service
    refuses one for room (RESOURCE_EXHAUSTED, the inference queue full), the stream ends
    there and the client sends it and those after it again, in order: every tick of every
    batch is accepted in time order (a tick applied after a later one of its symbol would
    come back rejected as stale)."""

    async def scenario(_stub: Any, _channel: grpc.aio.Channel, server: SignalServer) -> None:
        columns = [tuple(np.array(getattr(b, f)) for f in ("symbol", "price", "size", "ts_ns"))
                   for b in _batches(40)]  # fmt: skip
        async with SignalClient([f"127.0.0.1:{server.port}"], window=8) as client:
            for c in columns[:10]:  # warm: from here on every batch queues 20 rows
                await client.ingest(*c)
            replies = await asyncio.gather(*(client.ingest(*c) for c in columns[10:]))
            assert client.retries > 0  # some parts were refused for room and sent again
        assert [r.accepted for r in replies] == [100] * 30
        assert all(r.rejected_index.size == 0 for r in replies)
        assert server.runtime.batcher.stats.rejected > 0
        state = server.runtime.pipeline.engine.state
        assert sum(state.tick_count(s) for s in range(N_SYMBOLS)) == 4000  # each tick once

    serve_and(model, scenario, delay_s=0.05, max_batch_size=20, max_queue_rows=40)


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


def test_a_cancelled_call_still_completes_the_batch_it_applied(model: ModelArtifacts) -> None:
    """The ticks are applied before the model answers; a client giving up then must not
    leave them applied without their signals: the rest of the work is shielded."""

    async def scenario(stub: Any, _channel: grpc.aio.Channel, server: SignalServer) -> None:
        batches = _batches(12)
        for b in batches[:10]:
            await stub.IngestTicks(b)
        last = pb2.TickBatch()
        last.CopyFrom(batches[10])
        last.producer = "desk-1"
        call = stub.IngestTicks(last)
        await asyncio.sleep(0.1)  # applied, waiting on the (slow) model
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.6)  # the model answers; the batch completes anyway
        expected = warm_symbols(batches[:11])
        ts = dict(zip(last.symbol, last.ts_ns, strict=True))
        for symbol in expected:
            found = server.runtime.pipeline.latest(symbol)
            assert found is not None and found[0].ts_ns == ts[symbol]
        retry = await stub.IngestTicks(last)  # its ack was lost with the call: ask again
        assert (retry.accepted, retry.signals) == (100, len(expected))

    serve_and(model, scenario, delay_s=0.4)


def test_jittered_inference_reaches_every_sink_in_order(
    model: ModelArtifacts, redis_cluster: Any, tmp_path: Path
) -> None:
    """Inference calls finish in random order; the in-process store, Redis, the published
    ticks and signals all take the batches in the order they were applied."""
    from tests.app.redis_cluster import PASSWORD

    redis_cluster.ensure_healthy()
    redis_cluster.flush()  # no newer values from other tests: Redis keeps the newest tick
    sections = {
        "cache": {"redis": {"nodes": redis_cluster.startup_nodes, "auth": "password",
                            "password": PASSWORD}},
        "publish": {"local_dir": str(tmp_path), "max_latency_ms": 5},
    }  # fmt: skip
    symbols = [0, 1, 2, 3]
    t0 = time.time_ns() - 60_000_000_000

    async def scenario(stub: Any, _channel: grpc.aio.Channel, server: SignalServer) -> None:
        await stub.IngestTicks(pb2.TickBatch(**now_ticks(symbols, 40, t0)))  # warm
        start = t0 + 40 * len(symbols) * 1_000_000
        batches = [pb2.TickBatch(**now_ticks(symbols, 2, start + i * 10_000_000))
                   for i in range(60)]  # fmt: skip
        acks = await asyncio.gather(*(stub.IngestTicks(b) for b in batches))
        assert sum(a.signals for a in acks) > 60  # many overlapped, finishing out of order
        await asyncio.sleep(0.3)  # the L2 writer catches up
        data_path = server.runtime.data_path
        assert data_path is not None and data_path.cache.l2 is not None
        for symbol in symbols:
            latest = server.runtime.pipeline.latest(symbol)
            assert latest is not None
            raw = await data_path.cache.l2.client.get(f"{{{symbol}}}:signal")
            assert raw is not None and decode_value(raw)[0] == latest[0]  # Redis = GetSignal

    serve_and(model, scenario, backend=JitterBackend(
        LocalOnnxBackend(model.path("fp32"), model.model_version), 0.03),
        sections=sections, max_batch_size=4, max_queue_delay_us=0,
        max_concurrent_batches=8)  # fmt: skip
    for topic in ("ticks-batches", "signals-batches"):
        per_symbol: dict[int, list[int]] = {}
        for _, entry in read_published(tmp_path, topic):  # each shard's entries, in order
            for symbol, ts in zip(entry.symbol, entry.ts_ns, strict=True):
                per_symbol.setdefault(symbol, []).append(ts)
        assert set(per_symbol) == set(symbols)
        for symbol, stamps in per_symbol.items():
            assert stamps == sorted(stamps), (topic, symbol)  # never [39000, 100400, 100000]


def test_every_read_path_has_a_maximum_age(model: ModelArtifacts, tmp_path: Path) -> None:
    """A signal older than cache.max_signal_age_s is not served; a symbol warming up after a
    restart is NOT_FOUND even though the warehouse has an older signal of it."""
    sections = {"cache": {"max_signal_age_s": 1.0},
                "warehouse": {"duckdb_path": str(tmp_path / "w.duckdb")}}  # fmt: skip
    t0 = time.time_ns() - 60_000_000_000

    async def first(stub: Any, _channel: grpc.aio.Channel, _server: SignalServer) -> None:
        await stub.IngestTicks(pb2.TickBatch(**now_ticks([4, 5], 40, t0)))
        signal = await stub.GetSignal(pb2.SignalRequest(symbol=4))
        assert 0 < time.time_ns() - signal.computed_at_ns < 1_000_000_000
        await asyncio.sleep(1.1)
        with pytest.raises(grpc.aio.AioRpcError) as err:  # too old now: not served
            await stub.GetSignal(pb2.SignalRequest(symbol=4))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "cache.max_signal_age_s = 1 s" in (err.value.details() or "")
        await stub.IngestTicks(pb2.TickBatch(**now_ticks([4, 5], 1, t0 + 10**9)))  # fresh again

    serve_and(model, first, sections=sections)

    async def after_restart(stub: Any, _channel: grpc.aio.Channel, _server: SignalServer) -> None:
        found = await stub.GetSignal(pb2.SignalRequest(symbol=5))  # read through to the warehouse
        assert found.symbol == 5 and found.ts_ns > t0
        await stub.IngestTicks(pb2.TickBatch(**now_ticks([5], 3, t0 + 2 * 10**9)))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetSignal(pb2.SignalRequest(symbol=5))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "symbol = 5: warming up" in (err.value.details() or "")

    serve_and(model, after_restart, sections=sections)


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


# --- hostile input, through the real server process ---------------------------------------


def now_ticks(symbols: list[int], per_symbol: int, start_ns: int, price: float = 100.0,
              step_ns: int = 1_000_000) -> dict[str, list[Any]]:  # fmt: skip
    """``per_symbol`` ticks of each symbol, interleaved, stamped from ``start_ns`` on."""
    rng = np.random.default_rng(len(symbols) * 1000 + per_symbol)
    n = len(symbols) * per_symbol
    sym = np.tile(np.array(symbols, np.int32), per_symbol)
    walk = price * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    return {"symbol": sym.tolist(), "price": np.round(walk, 4).tolist(),
            "size": rng.integers(1, 100, n).astype(float).tolist(),
            "ts_ns": (start_ns + np.arange(n, dtype=np.int64) * step_ns).tolist()}  # fmt: skip


def metric(port: int, name: str, **labels: str) -> float:
    """One sample from the server's Prometheus endpoint (0 when absent)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@pytest.fixture(scope="module")
def served(model: ModelArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``python -m app serve`` with every rejection logged (no sampling) and a server-side
    minimum deadline of 2 s (calls here have none, or 30 s)."""
    from app.serving.launch import free_port

    root = tmp_path_factory.mktemp("served")
    metrics_port = free_port()
    config = {
        "features": {"n_symbols": N_SYMBOLS},
        "model": {"build_if_missing": False},
        "ingest": {"min_deadline_ms": 2000, "max_past_age_s": 5 * 365 * 86_400},
        "spool": {"dir": str(root / "spool")},
        "publish": {"local_dir": str(root / "published")},
        "warehouse": {"duckdb_path": str(root / "warehouse.duckdb")},
        "telemetry": {"metrics_port": metrics_port, "log_sampling": {"request_rejected": 1}},
    }
    server = ServiceProcess(root, config, model).start()
    server.metrics_port = metrics_port  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.close()


def call(fn: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kwargs)
    return err.value


def test_hostile_requests_get_their_status_and_one_log_line_each(served: Any) -> None:
    before = served.output()
    with grpc.insecure_channel(served.target) as channel:
        stub = pb2_grpc.SignalServiceStub(channel)
        raw_ingest = channel.unary_unary("/signals.v1.SignalService/IngestTicks")
        raw_get = channel.unary_unary("/signals.v1.SignalService/GetSignal")
        raw_stream = channel.stream_stream("/signals.v1.SignalService/StreamSignals")
        garbage = [b"\xff" * 7, b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x12\x05ab"]
        cases: list[tuple[Any, grpc.StatusCode, str]] = []
        for blob in garbage:
            cases.append((lambda b=blob: raw_ingest(b, timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
                          "bytes that are not a signals.v1.TickBatch"))  # fmt: skip
        cases.append((lambda: raw_get(b"\x08" + b"\xff" * 11, timeout=30),
                      grpc.StatusCode.INVALID_ARGUMENT, "not a signals.v1.SignalRequest"))  # fmt: skip
        cases.append((lambda: list(raw_stream(iter([b"\xff\xff"]), timeout=30)),
                      grpc.StatusCode.INVALID_ARGUMENT, "not a signals.v1.TickBatch"))  # fmt: skip
        for request, message in BAD_REQUESTS:
            cases.append((lambda r=request: stub.IngestTicks(r, timeout=30),
                          grpc.StatusCode.INVALID_ARGUMENT, message))  # fmt: skip
        cases.append((lambda: stub.IngestTicks(pb2.TickBatch(symbol=[0], price=[1.0], size=[1.0],
                                                             ts_ns=[1], producer="p" * 300)),
                      grpc.StatusCode.INVALID_ARGUMENT, "producer: 300 characters"))  # fmt: skip
        cases.append((lambda: stub.GetSignal(pb2.SignalRequest(symbol=N_SYMBOLS)),
                      grpc.StatusCode.INVALID_ARGUMENT, f"symbol = {N_SYMBOLS}: unknown"))  # fmt: skip
        cases.append((lambda: stub.IngestTicks(pb2.TickBatch(**now_ticks([5], 1, time.time_ns())),
                                               timeout=1.0),
                      grpc.StatusCode.DEADLINE_EXCEEDED, "ingest.min_deadline_ms = 2000"))  # fmt: skip
        for fn, code, message in cases:
            err = call(fn)
            assert err.code() == code, (err.code(), err.details(), message)  # type: ignore[attr-defined]
            assert message in (err.details() or ""), (err.details(), message)  # type: ignore[attr-defined]
        # The short-deadline batch was not applied: sent again, it is accepted, not STALE.
        again = pb2.TickBatch(**now_ticks([5], 1, time.time_ns() - 1000))
        assert stub.IngestTicks(again).accepted == 1
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == (
            health_pb2.HealthCheckResponse.SERVING
        )
    deadline = time.monotonic() + 5
    while served.output().count("request_rejected") - before.count("request_rejected") < len(cases):
        assert time.monotonic() < deadline, served.output()[-3000:]
        time.sleep(0.05)
    new = served.output()[len(before) :]
    rejected = [line for line in new.splitlines() if "request_rejected" in line]
    assert len(rejected) == len(cases)  # one line per refusal ...
    assert all(line.startswith("{") and line.endswith("}") for line in rejected)  # ... JSON
    assert "Traceback" not in new and "Exception" not in new  # ... and never a traceback


def test_values_the_arithmetic_cannot_carry_and_future_stamps_are_rejected_per_tick(
    served: Any,
) -> None:
    INT64_MAX = 2**63 - 1
    with grpc.insecure_channel(served.target) as channel:
        stub = pb2_grpc.SignalServiceStub(channel)
        t0 = time.time_ns() - 10_000_000_000
        huge = {**now_ticks([0], 60, t0), "price": [1e307] * 60}
        ack = stub.IngestTicks(pb2.TickBatch(**huge))
        assert (ack.accepted, ack.rejected) == (0, 60)
        assert set(ack.rejected_reason) == {pb2.REJECT_REASON_PRICE_OUT_OF_RANGE}
        mixed = pb2.TickBatch(symbol=[1, 1, 2, 3, 3], price=[100.0, 100.0, 100.0, 1e-12, 5e9],
                              size=[1e308, 1.0, 1.0, 1.0, 1.0],
                              ts_ns=[t0, t0 + 1, INT64_MAX, t0, t0 + 1])  # fmt: skip
        ack = stub.IngestTicks(mixed)
        assert list(ack.rejected_index) == [0, 2, 3, 4] and ack.accepted == 1
        assert list(ack.rejected_reason) == [
            pb2.REJECT_REASON_SIZE_OUT_OF_RANGE, pb2.REJECT_REASON_FUTURE_TIMESTAMP,
            pb2.REJECT_REASON_PRICE_OUT_OF_RANGE, pb2.REJECT_REASON_PRICE_OUT_OF_RANGE,
        ]  # fmt: skip
        assert metric(served.metrics_port, "signal_ticks_rejected_total",
                      reason="FUTURE_TIMESTAMP") >= 1  # fmt: skip
        # Stamps BigQuery would refuse (over five years back) or no clock gives: rejected too.
        six_years = 6 * 365 * 86_400 * 10**9
        ancient = pb2.TickBatch(symbol=[5, 5, 5, 5], price=[100.0] * 4, size=[1.0] * 4,
                                ts_ns=[-(2**63), 0, 1, t0 - six_years])  # fmt: skip
        ack = stub.IngestTicks(ancient)
        assert (ack.accepted, ack.rejected) == (0, 4)
        assert set(ack.rejected_reason) == {pb2.REJECT_REASON_PAST_TIMESTAMP}
        assert metric(served.metrics_port, "signal_ticks_rejected_total",
                      reason="PAST_TIMESTAMP") == 4  # fmt: skip
        # Nothing was locked or poisoned: real ticks after them are accepted and give finite
        # signals (had the INT64_MAX stamp been taken, every later tick would be STALE).
        normal = now_ticks([0, 1, 2, 3], 300, t0 + 2)
        for i in range(0, 1200, 200):
            part = {k: v[i : i + 200] for k, v in normal.items()}
            ack = stub.IngestTicks(pb2.TickBatch(**part))
            assert (ack.accepted, ack.rejected) == (200, 0)
        for symbol in (0, 1, 2, 3):
            signal = stub.GetSignal(pb2.SignalRequest(symbol=symbol))
            assert np.isfinite([signal.strength, signal.confidence]).all()
            assert signal.computed_at_ns > 0 and signal.backend == "local"


def test_a_retried_batch_gets_the_original_reply_and_changes_nothing(served: Any) -> None:
    with grpc.insecure_channel(served.target) as channel:
        stub = pb2_grpc.SignalServiceStub(channel)
        t0 = time.time_ns() - 5_000_000_000
        first = pb2.TickBatch(**now_ticks([8, 9], 40, t0), producer="desk-7", batch_id=1)
        duplicates = metric(served.metrics_port, "signal_ingest_duplicate_batches_total")
        ack = stub.IngestTicks(first)
        assert ack.accepted == 80 and ack.signals > 0
        for _ in range(2):  # a retry (the first ack was lost): the same ack, nothing applied
            assert stub.IngestTicks(first).SerializeToString() == ack.SerializeToString()
        # Over a stream too: the SignalBatch, signals and all, as the first time.
        second = pb2.TickBatch(**now_ticks([8, 9], 5, t0 + 80_000_000), producer="desk-7",
                               batch_id=2)  # fmt: skip
        (reply,) = list(stub.StreamSignals(iter([second])))
        (again,) = list(stub.StreamSignals(iter([second])))
        assert again.SerializeToString() == reply.SerializeToString() and len(reply.symbol) == 2
        assert stub.IngestTicks(second).SerializeToString() == reply.ack.SerializeToString()
        assert metric(served.metrics_port, "signal_ingest_duplicate_batches_total") == (
            duplicates + 4
        )
        reused = pb2.TickBatch(**now_ticks([8], 1, t0 + 90_000_000), producer="desk-7", batch_id=1)
        err = call(stub.IngestTicks, reused)
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
        assert "batch_id = 1 of producer 'desk-7'" in (err.details() or "")  # type: ignore[attr-defined]
        other = pb2.TickBatch(**now_ticks([8], 1, t0 + 90_000_000), producer="desk-8", batch_id=1)
        assert stub.IngestTicks(other).accepted == 1  # ids are per producer


def test_cancelled_calls_are_counted_as_cancelled_not_as_errors(served: Any) -> None:
    """A client that goes away mid-call is counted CANCELLED, never as an error: here a
    stream cancelled while the server waits for its next message (a unary call cancelled
    while it waits is counted the same way: test_telemetry; a lone IngestTicks is made
    durable and answered within one turn of the server's loop, before a cancel can land)."""
    import queue

    port = served.metrics_port
    before = metric(port, "signal_requests_total", method="StreamSignals", code="CANCELLED")
    sent: queue.Queue[Any] = queue.Queue()

    def messages() -> Iterator[Any]:
        while (message := sent.get()) is not None:
            yield message

    with grpc.insecure_channel(served.target) as channel:
        stub = pb2_grpc.SignalServiceStub(channel)
        stream = stub.StreamSignals(messages())
        sent.put(pb2.TickBatch(**now_ticks([12, 13], 3, time.time_ns() - 1_000_000)))
        assert next(stream).ack.accepted == 6  # the server now waits for the next message
        stream.cancel()
        sent.put(None)
        deadline = time.monotonic() + 10
        while metric(port, "signal_requests_total", method="StreamSignals",
                     code="CANCELLED") <= before:  # fmt: skip
            assert time.monotonic() < deadline, "the cancelled stream was not counted"
            time.sleep(0.05)
    for method in ("StreamSignals", "IngestTicks"):
        assert metric(port, "signal_requests_total", method=method, code="UNKNOWN") == 0


def test_a_port_in_use_is_one_error_naming_the_setting(model: ModelArtifacts) -> None:
    """grpcio raises RuntimeError for an address it cannot bind; the server says which
    setting, as the OSError the CLI turns into one line and exit 2."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]

        async def main() -> None:
            config = _config(model, {"server": {"host": "127.0.0.1", "port": busy}})
            backend = LocalOnnxBackend(model.path("fp32"), model.model_version)
            server = SignalServer(config, build_runtime(config, backend))
            try:
                with pytest.raises(OSError, match=rf"server.port = {busy}: cannot listen on"):
                    await server.start()
            finally:
                await server.stop(grace_s=0.1)

        run(main())
