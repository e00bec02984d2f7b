"""The gRPC API (``signals.v1.SignalService``) on ``grpc.aio``, with health and reflection.

Bad requests get INVALID_ARGUMENT naming the offending field (and index) and change
no state; a full inference queue gets RESOURCE_EXHAUSTED; the server keeps serving
either way. ``stop`` is graceful: health turns NOT_SERVING, new calls are refused,
calls in flight finish within the grace period (spot preemption gives ~25 s), then
the batcher drains and the backends close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from app import telemetry
from app.batcher import BatcherClosedError, MicroBatcher, QueueFullError
from app.config import AppConfig
from app.datapath import DataPath, DataPathBackpressure
from app.features import FeatureEngine
from app.inference import (
    CircuitBreaker,
    InferenceBackend,
    InferenceError,
    KServeBackend,
    LocalOnnxBackend,
    ResilientBackend,
)
from app.model.contract import N_INPUTS, model_inputs
from app.pipeline import IngestResult, SignalPipeline
from app.proto import load as load_stubs
from app.synthetic import TickColumns

pb2, pb2_grpc = load_stubs()
log = logging.getLogger(__name__)
SERVICE_NAME = pb2.DESCRIPTOR.services_by_name["SignalService"].full_name


class InvalidRequestError(ValueError):
    """A request that cannot be processed; the message names the field."""


def decode_tick_batch(batch: Any, n_symbols: int, max_ticks: int) -> TickColumns:
    """The batch's columns as arrays, or ``InvalidRequestError`` naming the bad field."""
    n = len(batch.symbol)
    if n == 0:
        raise InvalidRequestError(f"symbol: the batch is empty; send 1 to {max_ticks} ticks")
    if n > max_ticks:
        raise InvalidRequestError(
            f"symbol: the batch has {n} ticks; at most {max_ticks} are allowed per batch"
        )
    for name in ("price", "size", "ts_ns"):
        m = len(getattr(batch, name))
        if m != n:
            raise InvalidRequestError(
                f"{name}: {m} values but symbol has {n}; every column needs one value per tick"
            )
    symbol = np.array(batch.symbol, dtype=np.int32)
    price = np.array(batch.price, dtype=np.float64)
    size = np.array(batch.size, dtype=np.float64)
    ts_ns = np.array(batch.ts_ns, dtype=np.int64)
    bad = np.flatnonzero((symbol < 0) | (symbol >= n_symbols))
    if bad.size:
        i = int(bad[0])
        raise InvalidRequestError(
            f"symbol[{i}] = {int(symbol[i])}: unknown symbol; ids are 0 to {n_symbols - 1}"
        )
    for name, column in (("price", price), ("size", size)):
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            i = int(bad[0])
            raise InvalidRequestError(f"{name}[{i}] = {column[i]}: {name}s must be finite numbers")
    return TickColumns(symbol, price, size, ts_ns)


def ingest_ack(batch_id: int, result: IngestResult) -> Any:
    rejected = result.rejected_index
    return pb2.IngestAck(
        batch_id=batch_id,
        accepted=result.accepted,
        rejected=int(rejected.size),
        rejected_index=rejected.tolist(),
        rejected_reason=result.reasons[rejected].tolist(),
        signals=len(result.signals),
    )


class SignalServicer(pb2_grpc.SignalServiceServicer):
    def __init__(
        self, pipeline: SignalPipeline, max_batch_ticks: int, data_path: DataPath | None = None
    ) -> None:
        self.pipeline = pipeline
        self.max_batch_ticks = max_batch_ticks
        self.data_path = data_path

    async def _ingest(self, request: Any, context: grpc.aio.ServicerContext) -> IngestResult:
        try:
            ticks = decode_tick_batch(request, self.pipeline.n_symbols, self.max_batch_ticks)
            if self.data_path is None:
                return await self.pipeline.ingest(
                    ticks.symbol, ticks.price, ticks.size, ticks.ts_ns
                )
            # Room in the data path's buffers first: a full buffer refuses the batch before
            # it changes any state (no accepted tick or signal is ever dropped).
            admission = self.data_path.admit(len(ticks))
            try:
                result = await self.pipeline.ingest(
                    ticks.symbol, ticks.price, ticks.size, ticks.ts_ns
                )
                await self.data_path.record(
                    admission, ticks.symbol, ticks.price, ticks.size, ticks.ts_ns,
                    result.reasons == 0, result.signals,
                )  # fmt: skip
            finally:
                self.data_path.release(admission)
            return result
        except DataPathBackpressure as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except InvalidRequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except QueueFullError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except BatcherClosedError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except InferenceError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"inference failed: {exc}")
        raise AssertionError("unreachable: abort raises")

    async def IngestTicks(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        result = await self._ingest(request, context)
        return ingest_ack(request.batch_id, result)

    async def GetSignal(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        n = self.pipeline.n_symbols
        if not 0 <= request.symbol < n:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"symbol = {request.symbol}: unknown symbol; ids are 0 to {n - 1}",
            )
        found = self.pipeline.store.get(request.symbol)
        if found is None and self.data_path is not None:
            found = await self.data_path.latest(request.symbol)  # L1 → L2 (Redis) → L3
        if found is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"symbol = {request.symbol}: no signal yet (its features are still warming up)",
            )
        assert found is not None
        return pb2.Signal(
            symbol=found.symbol,
            ts_ns=found.ts_ns,
            direction=found.direction,
            strength=found.strength,
            confidence=found.confidence,
            model_version=found.model_version,
        )

    async def StreamSignals(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for request in request_iterator:
            result = await self._ingest(request, context)
            s = result.signals
            yield pb2.SignalBatch(
                batch_id=request.batch_id,
                symbol=s.symbol.tolist(),
                ts_ns=s.ts_ns.tolist(),
                direction=s.direction.tolist(),
                strength=s.strength.tolist(),
                confidence=s.confidence.tolist(),
                model_version=s.model_version,
                ack=ingest_ack(request.batch_id, result),
            )


@dataclass
class Runtime:
    """What a running server owns, closed in order on shutdown."""

    pipeline: SignalPipeline
    backend: InferenceBackend
    batcher: MicroBatcher
    data_path: DataPath | None = None  # cache, publishing, warehouse (app.datapath)


def build_backend(config: AppConfig) -> InferenceBackend:
    """The in-process model, behind a circuit breaker to a KServe-v2 server if one is set."""
    from app.model.build import BuildOptions, ModelArtifacts, ensure_model

    mc = config.model
    artifacts = (
        ensure_model(mc.dir, BuildOptions(), log=log.warning)
        if mc.build_if_missing
        else ModelArtifacts.load(mc.dir)
    )
    local = LocalOnnxBackend(
        artifacts.path(mc.variant), artifacts.model_version, intra_op_threads=mc.intra_op_threads
    )
    ks = config.kserve
    if ks.url is None:
        return local
    remote = KServeBackend(
        ks.url, ks.model_name, model_version=ks.model_version, timeout_s=ks.timeout_s
    )
    breaker = CircuitBreaker(
        failure_threshold=ks.failure_threshold, reset_timeout_s=ks.reset_timeout_s
    )
    return ResilientBackend(remote, local, breaker)


def build_runtime(config: AppConfig, backend: InferenceBackend | None = None) -> Runtime:
    fc = config.features
    engine = FeatureEngine(fc.n_symbols, fc.ema_fast, fc.ema_slow, fc.rsi_period, fc.window)
    backend = backend or build_backend(config)
    bc = config.batcher
    batcher = MicroBatcher(
        backend,
        max_batch_size=bc.max_batch_size,
        max_queue_delay_us=bc.max_queue_delay_us,
        max_queue_rows=bc.max_queue_rows,
        max_concurrent_batches=bc.max_concurrent_batches,
    )
    data_path = DataPath.from_config(config.cache, config.publish, config.warehouse)
    return Runtime(SignalPipeline(engine, batcher), backend, batcher, data_path)


async def warm_up(runtime: Runtime) -> None:
    """Load the jitted kernels and run the model once, so the first real call is not slow."""
    scratch = FeatureEngine(1)
    scratch.update(np.zeros(1, np.int32), np.ones(1), np.ones(1), np.zeros(1, np.int64))
    model_inputs(np.ones((1, 7)))
    try:
        await runtime.backend.infer(np.zeros((1, N_INPUTS), np.float32))
    except (InferenceError, OSError) as exc:  # a remote backend may be down: the breaker copes
        log.warning("warm-up inference failed: %s", exc)


class SignalServer:
    """The gRPC server and its runtime; ``start``, then ``stop`` (graceful)."""

    def __init__(self, config: AppConfig, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        sc = config.server
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", sc.max_message_bytes),
                ("grpc.max_send_message_length", sc.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            interceptors=telemetry.server_interceptors(),
        )
        pb2_grpc.add_SignalServiceServicer_to_server(
            SignalServicer(runtime.pipeline, sc.max_batch_ticks, runtime.data_path), self.server
        )
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            self.server,
        )  # fmt: skip
        self.port = 0
        self.metrics_server: telemetry.MetricsServer | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        sc = self.config.server
        self.port = self.server.add_insecure_port(f"{sc.host}:{sc.port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {sc.host}:{sc.port}")
        await warm_up(self.runtime)
        self.runtime.batcher.start()
        if self.runtime.data_path is not None:
            self.runtime.data_path.start()
        tc = self.config.telemetry
        if tc.metrics_port is not None and self.metrics_server is None:
            try:
                self.metrics_server = telemetry.MetricsServer(tc.metrics_host, tc.metrics_port)
            except OSError as exc:  # another server of this host has the port: serve anyway
                log.warning("metrics endpoint %s:%s unavailable: %s", tc.metrics_host,
                            tc.metrics_port, exc)  # fmt: skip
        await self.server.start()
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s:%d", SERVICE_NAME, sc.host, self.port)
        return self.port

    async def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls, let calls in flight finish (up to the grace), then release all."""
        if self._stopped.is_set():
            return
        grace = self.config.server.grace_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.runtime.batcher.close()
        await self.runtime.backend.close()
        if self.runtime.data_path is not None:
            await self.runtime.data_path.close()  # deliver what was accepted
        if self.metrics_server is not None:
            self.metrics_server.close()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


async def serve(config: AppConfig, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    from opentelemetry import trace

    telemetry.configure_logging(config.telemetry)
    trace.set_tracer_provider(telemetry.configure_tracing(config.telemetry))
    runtime = build_runtime(config)
    server = SignalServer(config, runtime)
    port = await server.start()
    print(f"signal service listening on {config.server.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    print(f"shutting down (grace {config.server.grace_s:g} s)", flush=True)
    await server.stop()
    print("stopped", flush=True)
