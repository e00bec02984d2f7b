"""The gRPC API (``signals.v1.SignalService``) on ``grpc.aio``, with health and reflection.

Every request gets a status that says what happened, and the server keeps serving:

* bytes that are not the request message, an empty or oversized batch, columns of
  different lengths, non-finite values, an unknown symbol: INVALID_ARGUMENT naming the
  field (and index), before anything changes. Out-of-bound ticks inside a valid batch are
  rejected one by one (`IngestAck.rejected_reason`) and the others applied.
* a ``(producer, batch_id)`` reused for other ticks: ALREADY_EXISTS; a retry of an
  acknowledged batch gets the original reply (`app.ingest`).
* a deadline too short to apply the batch: DEADLINE_EXCEEDED, nothing applied.
* a full inference queue, data-path buffer or spool: RESOURCE_EXHAUSTED, nothing applied.
* shutting down, or the spool failed (health then turns NOT_SERVING): UNAVAILABLE.
* with sharding (``app.shards``): a batch or read of a shard another replica owns is sent
  on to the owner once (``sharding.forward``; its answer names the owner in the trailing
  metadata ``shard-owner``), or refused with FAILED_PRECONDITION and trailing metadata
  ``shard-owner: host:port`` (and ``shard``, ``shard-count``); a shard moving, loading or
  without an owner yet: UNAVAILABLE (retry);
  a batch with symbols of two shards: INVALID_ARGUMENT; a client whose request metadata
  says it splits by another ``shard-count``: FAILED_PRECONDITION with the service's.
* a client cancelling: CANCELLED, which the metrics do not count as an error; work
  already applied completes (``app.ingest``).

Each refusal is logged as one line (``request_rejected``, sampled: see
``telemetry.log_sampling``), never a traceback. ``stop`` is graceful: health turns
NOT_SERVING, new calls are refused, calls in flight finish within the grace period (spot
preemption gives ~25 s), then the shards are handed over (snapshot, release), the batcher
drains, the spool is made durable and the sinks flushed. With sharding, health turns
SERVING only once this replica's first shards are loaded. With ``server.tls`` the port speaks TLS (mutual TLS with a client CA), for
use outside the mesh; inside it, Istio's mTLS does that job.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc
import numpy as np
import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from numba import njit

from app import batch_format, telemetry
from app.batcher import BatcherClosedError, MicroBatcher, QueueFullError
from app.breaker import CircuitBreaker
from app.client import FORWARDED, PeerForwarder
from app.config import AppConfig, TlsConfig
from app.datapath import DataPath, DataPathBackpressure
from app.features import FEATURES, FeatureEngine
from app.inference import (
    InferenceBackend,
    InferenceError,
    KServeBackend,
    ResilientBackend,
    in_process_backend,
)
from app.ingest import (
    BatchIdReused,
    DeadlineTooShort,
    Ingestor,
    serialize_ack,
    serialize_reply,
)
from app.lease import LeaseStore
from app.model.calibration import decide
from app.model.contract import N_CLASSES, N_INPUTS, model_inputs
from app.model.manifest import ModelMismatchError
from app.model.weights import UnsupportedModelError
from app.pipeline import SignalPipeline, TickOverflowError
from app.proto import load as load_stubs
from app.shards import (
    BatchSpansShards,
    NotOwner,
    ShardBusy,
    ShardCountMismatch,
    ShardOwnership,
    ShardRefusal,
    ShardTable,
    ShardUnavailable,
)
from app.signals import LatestSignals, SignalColumns
from app.spool import Spool, SpoolFailed, SpoolFull, default_spool_dir
from app.synthetic import TickColumns

pb2, pb2_grpc = load_stubs()
log = logging.getLogger(__name__)
rejections = structlog.get_logger("app.server")
SERVICE_NAME = pb2.DESCRIPTOR.services_by_name["SignalService"].full_name


class InvalidRequestError(ValueError):
    """A request that cannot be processed; the message names the field."""


@dataclass(frozen=True)
class Malformed:
    """What arrives instead of a request whose bytes do not parse as the message."""

    message: str
    nbytes: int
    error: str


@dataclass(frozen=True, slots=True)
class Received:
    """A TickBatch as it arrived: the parsed message and its bytes (its columns are read
    from them, `decode_tick_batch`)."""

    message: Any
    data: bytes


def tolerant(message_type: Any) -> Callable[[bytes], Any]:
    """A request deserializer that returns `Malformed` instead of raising: gRPC would answer
    a raising deserializer with a logged traceback and a non-descript status. A TickBatch
    comes as `Received`."""
    name = message_type.DESCRIPTOR.full_name
    keep = message_type is pb2.TickBatch

    def parse(data: bytes) -> Any:
        try:
            message = message_type.FromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            return Malformed(name, len(data), str(exc) or type(exc).__name__)
        return Received(message, data) if keep else message

    return parse


_VALID, _SYMBOL, _PRICE, _SIZE = range(4)  # `_first_invalid`'s fields


@njit(cache=True, nogil=True)
def _first_invalid(symbol, price, size, n_symbols):
    """``(field, index)`` of the first unknown symbol, else of the first non-finite price,
    else size (the order the errors are reported in); ``(_VALID, 0)`` when all are valid."""
    for i in range(symbol.shape[0]):
        if not 0 <= symbol[i] < n_symbols:
            return _SYMBOL, i
    for field, column in ((_PRICE, price), (_SIZE, size)):
        for i in range(column.shape[0]):
            if not np.isfinite(column[i]):
                return field, i
    return _VALID, 0


@njit(cache=True, nogil=True)
def _read_checked(data, n_symbols):
    """A serialized TickBatch's columns (`batch_format.tick_columns`) and their
    `_first_invalid`, in one compiled call: ``(read, symbol, price, size, ts_ns, field,
    index)``; ``read`` False where a column is not one packed field."""
    read, symbol, price, size, ts_ns = batch_format._read_tick_columns(data)
    field, i = _first_invalid(symbol, price, size, n_symbols) if read else (_VALID, 0)
    return read, symbol, price, size, ts_ns, field, i


def _check_lengths(n: int, n_price: int, n_size: int, n_ts: int, max_ticks: int) -> None:
    """``InvalidRequestError`` for an empty or oversized batch, then for a column whose
    length is not the symbols' (in field order)."""
    if n == 0:
        raise InvalidRequestError(f"symbol: the batch is empty; send 1 to {max_ticks} ticks")
    if n > max_ticks:
        raise InvalidRequestError(
            f"symbol: the batch has {n} ticks; at most {max_ticks} are allowed per batch"
        )
    for name, m in (("price", n_price), ("size", n_size), ("ts_ns", n_ts)):
        if m != n:
            raise InvalidRequestError(
                f"{name}: {m} values but symbol has {n}; every column needs one value per tick"
            )


def decode_tick_batch(received: Any, n_symbols: int, max_ticks: int) -> TickColumns:
    """The columns of a `Received` TickBatch (or of the message itself) as arrays, or
    ``InvalidRequestError`` naming the bad field. A `Received` batch's columns are read
    from its bytes and checked in one compiled call (`_read_checked`); the parsed message's
    fields are read only where a column is laid out otherwise (unpacked, or split)."""
    if isinstance(received, Malformed):
        raise InvalidRequestError(
            f"request: {received.nbytes} bytes that are not a {received.message} ({received.error})"
        )
    batch = received.message if isinstance(received, Received) else received
    found = _read_checked(received.data, n_symbols) if isinstance(received, Received) else None
    if found is not None and found[0]:
        _, symbol, price, size, ts_ns, field, i = found
        _check_lengths(len(symbol), len(price), len(size), len(ts_ns), max_ticks)
    else:
        n = len(batch.symbol)
        _check_lengths(n, len(batch.price), len(batch.size), len(batch.ts_ns), max_ticks)
        symbol, price, size, ts_ns = (  # fromiter with the count: a third faster than np.array
            np.fromiter(batch.symbol, np.int32, n), np.fromiter(batch.price, np.float64, n),
            np.fromiter(batch.size, np.float64, n), np.fromiter(batch.ts_ns, np.int64, n))  # fmt: skip
        field, i = _first_invalid(symbol, price, size, n_symbols)
    if field == _SYMBOL:
        raise InvalidRequestError(
            f"symbol[{i}] = {int(symbol[i])}: unknown symbol; ids are 0 to {n_symbols - 1}"
        )
    if field != _VALID:
        name, column = ("price", price) if field == _PRICE else ("size", size)
        raise InvalidRequestError(f"{name}[{i}] = {column[i]}: {name}s must be finite numbers")
    if len(batch.producer) > 256:
        raise InvalidRequestError(f"producer: {len(batch.producer)} characters; at most 256")
    return TickColumns(symbol, price, size, ts_ns)


# Exceptions that refuse a request, and the status each gets.
REFUSALS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (BatchSpansShards, grpc.StatusCode.INVALID_ARGUMENT),
    (NotOwner, grpc.StatusCode.FAILED_PRECONDITION),
    (ShardCountMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (ShardUnavailable, grpc.StatusCode.UNAVAILABLE),
    (ShardBusy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TickOverflowError, grpc.StatusCode.INVALID_ARGUMENT),
    (BatchIdReused, grpc.StatusCode.ALREADY_EXISTS),
    (DeadlineTooShort, grpc.StatusCode.DEADLINE_EXCEEDED),
    (DataPathBackpressure, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (SpoolFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (BatcherClosedError, grpc.StatusCode.UNAVAILABLE),
    (SpoolFailed, grpc.StatusCode.UNAVAILABLE),
    (InferenceError, grpc.StatusCode.UNAVAILABLE),
)


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    for kind, code in REFUSALS:
        if isinstance(exc, kind):
            return code
    return None


async def refuse(context: grpc.aio.ServicerContext, method: str, code: grpc.StatusCode,
                 detail: str, metadata: tuple[tuple[str, str], ...] = ()) -> NoReturn:  # fmt: skip
    """Log one (sampled) line and end the call with ``code`` (and trailing ``metadata``)."""
    rejections.info("request_rejected", method=method, code=code.name, detail=detail)
    await context.abort(code, detail, metadata)
    raise AssertionError("unreachable: abort raises")


def client_shard_count(context: grpc.aio.ServicerContext) -> int | None:
    """The ``shard-count`` a client says it splits batches by (None: it did not say)."""
    for key, value in context.invocation_metadata() or ():
        if key == "shard-count":
            try:
                return int(value)
            except ValueError:
                return 0  # unreadable: refused, the answer names the service's count
    return None


def forwarded(context: grpc.aio.ServicerContext) -> bool:
    """Whether another replica sent this call on (it is then never sent on again)."""
    return any(key == FORWARDED for key, _ in context.invocation_metadata() or ())


class SignalServicer:
    """The three RPCs; handlers registered by `signal_service_handler`."""

    def __init__(self, ingestor: Ingestor, max_batch_ticks: int, data_path: DataPath | None = None,
                 on_spool_failure: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.ingestor = ingestor
        self.pipeline = ingestor.pipeline
        self.max_batch_ticks = max_batch_ticks
        self.n_symbols = self.pipeline.n_symbols
        self.data_path = data_path
        self.on_spool_failure = on_spool_failure
        self.shards = ingestor.shards
        sc = ingestor.shards.config if ingestor.shards is not None else None
        self.forwarder = PeerForwarder(sc.shards) if sc is not None and sc.forward else None
        age = data_path.cache.config.max_signal_age_s if data_path is not None else None
        self.max_age_s = "no limit" if age is None else f"{age:g} s"
        # The queues of the open streams' messages (see `StreamSignals`, `close_streams`).
        self._streams: set[asyncio.Queue[Any]] = set()
        self.closing = False

    def close_streams(self) -> None:
        """Shutting down: open streams take no more messages and end once the replies of
        those taken are sent (their clients send the rest elsewhere or after the restart)."""
        self.closing = True
        for taken in self._streams:
            taken.put_nowait(None)

    def _begin(self, request: Any, context: grpc.aio.ServicerContext) -> asyncio.Future[Any]:
        """Decode and apply one TickBatch (`Received`) now (`Ingestor.begin`): its
        ``SignalBatch`` to come, or the refusal raised before anything changed."""
        ticks = decode_tick_batch(request, self.n_symbols, self.max_batch_ticks)
        client_shards = client_shard_count(context) if self.shards is not None else None
        return self.ingestor.begin(request.message, ticks, context.time_remaining(),
                                   client_shards)  # fmt: skip

    async def _refused(self, exc: Exception, request: Any, context: grpc.aio.ServicerContext,
                       method: str) -> Any:  # fmt: skip
        """The answer to a batch refused with ``exc``: the owner's, where the batch is sent on
        to it; otherwise the call ends with the refusal's status (unknown errors re-raised)."""
        code = status_of(exc)
        if code is None:
            raise exc
        if isinstance(exc, SpoolFailed):
            self.on_spool_failure()
        if isinstance(exc, NotOwner) and self.forwarder is not None and exc.owner:
            forwarder, owner = self.forwarder, exc.owner
            message = request.message if isinstance(request, Received) else request
            if not forwarded(context):
                return await self._forward(context, method, owner, lambda: forwarder.ingest(
                    owner, message, context.time_remaining()))  # fmt: skip
        metadata = exc.metadata() if isinstance(exc, ShardRefusal) else ()
        await refuse(context, method, code, str(exc), metadata)

    async def _forward(self, context: grpc.aio.ServicerContext, method: str, owner: str,
                       send: Callable[[], Awaitable[Any]]) -> Any:  # fmt: skip
        """The owner's answer to a call sent on to it, naming the owner; or its refusal."""
        try:
            reply = await send()
        except grpc.aio.AioRpcError as err:
            facts = tuple((k, v) for k, v in err.trailing_metadata() or () if isinstance(v, str))
            await refuse(context, method, err.code(), f"sent on to {owner}: {err.details()}",
                         facts or (("shard-owner", owner),))  # fmt: skip
        context.set_trailing_metadata((("shard-owner", owner),))
        return reply

    async def IngestTicks(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The batch's reply (a `Reply` or a ``SignalBatch``): its ack is what is sent
        (`serialize_ack`); or the call ends with its status."""
        try:
            begun = self._begin(request, context)
            # Shielded: a call cancelled while its batch becomes durable leaves the batch's
            # future (which a retry of the batch may share) alone. A reply already there
            # (an earlier batch's, for a retry) is taken as it is.
            return begun.result() if begun.done() else await asyncio.shield(begun)
        except Exception as exc:
            return await self._refused(exc, request, context, "IngestTicks")

    async def GetSignal(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            await refuse(context, "GetSignal", grpc.StatusCode.INVALID_ARGUMENT,
                         f"request: {request.nbytes} bytes that are not a {request.message} "
                         f"({request.error})")  # fmt: skip
        n = self.n_symbols
        symbol: int = request.symbol
        if not 0 <= symbol < n:
            await refuse(context, "GetSignal", grpc.StatusCode.INVALID_ARGUMENT,
                         f"symbol = {symbol}: unknown symbol; ids are 0 to {n - 1}")  # fmt: skip
        if self.shards is not None:  # only the owner answers: its state is the symbol's
            try:
                self.shards.check_read(symbol, client_shard_count(context))
            except ShardRefusal as exc:
                if isinstance(exc, NotOwner) and self.forwarder is not None and exc.owner:
                    forwarder, owner = self.forwarder, exc.owner
                    if not forwarded(context):
                        return await self._forward(context, "GetSignal", owner,
                                                   lambda: forwarder.get_signal(
                                                       owner, request, context.time_remaining()))  # fmt: skip
                await refuse(context, "GetSignal", status_of(exc) or grpc.StatusCode.UNAVAILABLE,
                             f"symbol = {symbol}: {exc}", exc.metadata())  # fmt: skip
        if self.pipeline.warming_up(symbol):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"symbol = {symbol}: warming up (its features are not warm since its last "
                "gap or this server's start)",
            )
        found = self.pipeline.latest(symbol)
        signal, computed_at = found if found is not None else (None, 0)
        if signal is not None and self.data_path is not None:
            if not self.data_path.cache.fresh(computed_at):
                signal = None  # too old to serve: nothing below is newer
        elif signal is None and self.data_path is not None:
            timed = await self.data_path.latest(symbol)  # L1 → L2 (Redis) → L3, each fresh
            if timed is not None:
                signal, computed_at = timed
        if signal is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"symbol = {symbol}: no signal yet (none computed within "
                f"cache.max_signal_age_s = {self.max_age_s})",
            )
        assert signal is not None
        return batch_format.signal_bytes(signal, computed_at)  # no Signal message built

    async def StreamSignals(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Each message is applied as it arrives, without waiting for the replies of those
        before it (so a client may keep several in flight and they share group commits);
        replies go back in message order. A refused message ends the stream with its status,
        after the replies of the messages before it, and no message after it is applied: a
        client that sends the unanswered messages again, in order, keeps every symbol's
        ticks in order (those applied are answered from the idempotency index). A message
        sent on to its shard's owner also ends the stream, after the owner's reply, its
        trailing metadata naming the owner. Shutting down ends a stream the same way after
        the replies of the messages taken (`close_streams`)."""
        loop = asyncio.get_running_loop()
        taken: asyncio.Queue[tuple[Any, asyncio.Future[Any] | Exception] | None] = asyncio.Queue()
        if self.closing:
            await refuse(context, "StreamSignals", grpc.StatusCode.UNAVAILABLE,
                         "the service is shutting down")  # fmt: skip

        async def take() -> None:
            try:
                async for request in request_iterator:
                    if self.closing:
                        break
                    try:
                        taken.put_nowait((request, self._begin(request, context)))
                    except Exception as exc:  # refused: nothing after it is applied
                        taken.put_nowait((request, exc))
                        return
            except Exception:  # the stream broke: its call is ending anyway
                pass
            taken.put_nowait(None)

        reader = loop.create_task(take(), name="stream-reader")
        self._streams.add(taken)
        try:
            while (item := await taken.get()) is not None:
                request, begun = item
                if isinstance(begun, Exception):
                    yield await self._refused(begun, request, context, "StreamSignals")
                    return  # sent on to the owner: the client goes there next
                try:
                    reply = begun.result() if begun.done() else await asyncio.shield(begun)
                except Exception as exc:  # applied, but could not be made durable
                    await self._refused(exc, request, context, "StreamSignals")
                    return
                yield reply
        finally:
            self._streams.discard(taken)
            reader.cancel()


def serialize_signal(reply: Any) -> bytes:
    """GetSignal's serializer: the ``Signal`` bytes the handler wrote
    (`batch_format.signal_bytes`), or those of a message (an owner's answer to a call sent on
    to it)."""
    return reply if type(reply) is bytes else reply.SerializeToString()


def signal_service_handler(servicer: SignalServicer,
                           metrics: telemetry.Metrics | None = None) -> grpc.GenericRpcHandler:  # fmt: skip
    """``signals.v1.SignalService`` with `tolerant` request deserializers, each method
    counted and timed (`telemetry.measured`, on ``metrics`` or the process's)."""
    return grpc.method_handlers_generic_handler(SERVICE_NAME, telemetry.measured({
        "IngestTicks": grpc.unary_unary_rpc_method_handler(
            servicer.IngestTicks, request_deserializer=tolerant(pb2.TickBatch),
            response_serializer=serialize_ack),
        "GetSignal": grpc.unary_unary_rpc_method_handler(
            servicer.GetSignal, request_deserializer=tolerant(pb2.SignalRequest),
            response_serializer=serialize_signal),
        "StreamSignals": grpc.stream_stream_rpc_method_handler(
            servicer.StreamSignals, request_deserializer=tolerant(pb2.TickBatch),
            response_serializer=serialize_reply),
    }, metrics))  # fmt: skip


@dataclass
class Runtime:
    """What a running server owns, closed in order on shutdown."""

    pipeline: SignalPipeline
    backend: InferenceBackend
    batcher: MicroBatcher
    ingestor: Ingestor  # idempotency, ordering, the spool and the ack (app.ingest)
    data_path: DataPath | None = None  # cache, publishing, warehouse (app.datapath)
    spool: Spool | None = None  # the durable log acks wait for (app.spool)
    shards: ShardOwnership | None = None  # this replica's shards (app.shards), if sharded


def build_backend(config: AppConfig) -> InferenceBackend:
    """The in-process model, behind a circuit breaker to a KServe-v2 server if one is set."""
    from app.model.build import BuildOptions, ModelArtifacts, ensure_model

    mc = config.model
    artifacts = (
        ensure_model(mc.dir, BuildOptions(), log=log.warning)
        if mc.build_if_missing
        else ModelArtifacts.load(mc.dir)
    )
    artifacts.check_serving(config.features)  # ModelMismatchError: the CLI exits 2
    try:
        local = in_process_backend(artifacts, mc.variant, mc.backend,
                                   intra_op_threads=mc.intra_op_threads)  # fmt: skip
    except UnsupportedModelError as exc:  # a graph the fused kernel cannot evaluate
        raise ModelMismatchError(str(exc)) from None
    ks = config.kserve
    if ks.url is None:
        return local
    remote = KServeBackend(ks.url, ks.model_name, model_version=ks.model_version,
                           timeout_s=ks.timeout_s, artifacts=artifacts)  # fmt: skip
    breaker = CircuitBreaker(
        failure_threshold=ks.failure_threshold, reset_timeout_s=ks.reset_timeout_s
    )
    return ResilientBackend(remote, local, breaker)


def spool_dir(config: AppConfig) -> Path:
    """The configured spool directory, or the embedded default for the configured port."""
    return config.spool.dir or default_spool_dir(config.server.port)


def build_runtime(config: AppConfig, backend: InferenceBackend | None = None) -> Runtime:
    engine = FeatureEngine.from_config(config.features)
    backend = backend or build_backend(config)
    bc = config.batcher
    batcher = MicroBatcher(
        backend,
        max_batch_size=bc.max_batch_size,
        max_queue_delay_us=bc.max_queue_delay_us,
        max_queue_rows=bc.max_queue_rows,
        max_concurrent_batches=bc.max_concurrent_batches,
    )
    # Published batches are keyed by the same shards as ownership (app.shards).
    ordering = ShardTable(config.features.n_symbols, config.sharding.shards)
    data_path = DataPath.from_config(config.cache, config.publish, config.warehouse,
                                     shards=ordering)  # fmt: skip
    spool = Spool(config.spool, spool_dir(config)) if config.spool.enabled else None
    pipeline = SignalPipeline(engine, batcher, bounds=config.ingest)
    ingestor = Ingestor(pipeline, config.ingest, data_path=data_path, spool=spool)
    shards = None
    if config.sharding.enabled:
        assert config.cache.redis is not None  # AppConfig's rule
        store = LeaseStore.from_config(config.cache.redis, config.sharding.key_prefix)
        shards = ShardOwnership(config.sharding, config.features.n_symbols, store, ingestor)
        ingestor.shards = shards
    return Runtime(pipeline, backend, batcher, ingestor, data_path, spool, shards)


async def warm_up(runtime: Runtime) -> None:
    """Load the jitted kernels and run the model once, so the first real call is not slow."""
    scratch = FeatureEngine(1)
    scratch.update(np.zeros(1, np.int32), np.ones(1), np.ones(1), np.zeros(1, np.int64))
    model_inputs(np.ones((1, 7)))
    warm_request_path(runtime.pipeline)
    try:
        await runtime.backend.infer(np.zeros((1, N_INPUTS), np.float32))
    except (InferenceError, OSError) as exc:  # a remote backend may be down: the breaker copes
        log.warning("warm-up inference failed: %s", exc)


def warm_request_path(pipeline: SignalPipeline) -> None:
    """Call the request path's lazily typed kernels once, with one tick of each column type
    the path passes them, changing no state: each is loaded from Numba's cache on its first
    call (~45 ms for the lot), which the first request would otherwise wait for."""
    one = pb2.TickBatch(symbol=[0], price=[1.0], size=[1.0], ts_ns=[1], batch_id=1)
    ticks = decode_tick_batch(tolerant(pb2.TickBatch)(one.SerializeToString()),
                              pipeline.n_symbols, 1)  # fmt: skip
    pipeline.warm_up()
    _, strength, confidence = decide(np.full((1, N_CLASSES), 1 / 3, np.float32), 0.1)
    signals = SignalColumns(ticks.symbol, ticks.ts_ns, np.ones(1, np.int8), strength, confidence,
                            "warm-up")  # fmt: skip
    LatestSignals(1).update(signals, 1, 1)
    reply, _ = batch_format.reply(signals, np.zeros(1, np.uint8), 1, 1)
    batch_format.spool_record(1, "", 1, b"", 1, ticks, reply, np.zeros((1, len(FEATURES))))
    seqs = np.ones(1, np.int64)
    batch_format.tick_entries(ticks.symbol, seqs, ticks.symbol, ticks.price, ticks.size,
                              ticks.ts_ns)  # fmt: skip
    batch_format.signal_entries(signals.symbol, seqs, signals, {1: 1})


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """TLS with the configured certificate; mutual TLS when a client CA is configured."""
    ca = tls.client_ca_file.read_bytes() if tls.client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


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
            interceptors=telemetry.server_interceptors(
                tracing=config.telemetry.otlp_endpoint is not None
            ),
        )
        servicer = SignalServicer(runtime.ingestor, sc.max_batch_ticks, runtime.data_path,
                                  on_spool_failure=self._spool_failed)  # fmt: skip
        self.servicer = servicer
        self.server.add_generic_rpc_handlers((signal_service_handler(servicer),))
        # grpc_health's public asyncio servicer (defined under a version check pyright skips)
        self.health = health.aio.HealthServicer()  # pyright: ignore[reportAttributeAccessIssue]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            self.server,
        )  # fmt: skip
        self.port = 0
        self.metrics_server: telemetry.MetricsServer | None = None
        self._stopped = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Recover the spool, bind, warm up, then serve; ``OSError`` if the port cannot be had."""
        sc = self.config.server
        address = f"{sc.host}:{sc.port}"
        try:
            if sc.tls is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, server_credentials(sc.tls))
        except RuntimeError:  # grpcio raises where older releases returned port 0
            self.port = 0
        if self.port == 0:
            raise OSError(
                f"server.port = {sc.port}: cannot listen on {address} "
                "(in use, or not an address of this host)"
            )
        runtime = self.runtime
        runtime.ingestor.recover()  # before any call: replays what a crash left undelivered
        await warm_up(runtime)
        runtime.batcher.start()
        if runtime.data_path is not None:
            runtime.data_path.start()
        tc = self.config.telemetry
        if tc.metrics_port is not None and self.metrics_server is None:
            try:
                self.metrics_server = telemetry.MetricsServer(tc.metrics_host, tc.metrics_port)
            except OSError as exc:  # another server of this host has the port: serve anyway
                log.warning("metrics endpoint %s:%s unavailable: %s", tc.metrics_host,
                            tc.metrics_port, exc)  # fmt: skip
        await self.server.start()
        if runtime.shards is not None:  # not SERVING before this replica's shards are loaded
            await runtime.shards.start(self.advertise)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s:%d%s", SERVICE_NAME, sc.host, self.port,
                 " (TLS)" if sc.tls is not None else "")  # fmt: skip
        return self.port

    @property
    def advertise(self) -> str:
        """The address other replicas and clients reach this one at (refusals name it)."""
        configured = self.config.sharding.advertise
        return configured or f"{self.config.server.host}:{self.port}"

    def _spool_failed(self) -> None:
        """Nothing can be made durable any more: say so to the probes (the pod restarts)."""
        task = asyncio.get_running_loop().create_task(self._not_serving())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _not_serving(self) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls, let calls in flight finish (up to the grace), then release all."""
        if self._stopped.is_set():
            return
        grace = self.config.server.grace_s if grace_s is None else grace_s
        runtime = self.runtime
        await self.health.enter_graceful_shutdown()
        self.servicer.close_streams()
        await self.server.stop(grace)
        await runtime.ingestor.drain()  # applied batches: spooled and answered
        if runtime.shards is not None:
            await runtime.shards.stop()  # snapshots written, leases released
            await runtime.shards.store.close()
        if self.servicer.forwarder is not None:
            await self.servicer.forwarder.close()
        await runtime.batcher.close()
        await runtime.backend.close()
        if runtime.spool is not None:
            await runtime.spool.drain()  # every record durable and acknowledged
        runtime.ingestor.flush_deliveries()  # and handed to the data path
        if runtime.data_path is not None:
            await runtime.data_path.close()  # deliver what was accepted
        if runtime.spool is not None:
            await runtime.spool.close()  # the checkpoint says so; the directory is released
        if self.metrics_server is not None:
            self.metrics_server.close()
        self._stopped.set()


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
