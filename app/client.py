"""The service's Python client: each batch's symbols go to their shard's owner, retried safely.

    async with SignalClient(["10.0.0.5:50051", "10.0.0.6:50051"]) as client:
        reply = await client.ingest(symbol, price, size, ts_ns)   # numpy columns
        signal = await client.get_signal(17)

A batch is split by shard (`app.shards.shard_of`; the shard count is learned from the
service once) and each part is sent, as a ``StreamSignals`` message, to the replica that
owns its shard: one stream per shard, held open while it has parts to send, with up to
``window`` parts in flight on it (so consecutive batches share the service's group commits
instead of each waiting for the one before). Owners are learned from refusals: a replica that does not own a shard
answers FAILED_PRECONDITION with trailing metadata ``shard-owner: host:port``, and the
client goes there (a replica that forwards instead names the owner in the trailing metadata
of its answer, and the client goes there next time). UNAVAILABLE (a replica gone, a shard moving or loading) and
RESOURCE_EXHAUSTED are retried with backoff for up to ``retry_for_s``, always with the
part's original ``(producer, batch_id)``, so a retry of a part that was applied is
answered with its original reply instead of being applied twice. Parts of one shard go
out on its stream in the order `ingest` was called; the service applies a stream's
messages in that order and none after one it refuses, and a stream that ends early has
its unanswered parts sent again in the same order, so each symbol's ticks stay in order
whatever the concurrency. An unsharded service is one shard: everything goes to the
first target.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from app import batch_format
from app.proto import load as load_stubs
from app.shards import ShardTable, shard_of

pb2, pb2_grpc = load_stubs()

# Status codes after which the same part is sent again (to the same or the named owner).
RETRIED = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
})  # fmt: skip
# Request metadata of a part a replica sent on to the owner: never forwarded a second time.
FORWARDED = "x-signal-forwarded"
# Reconnect quickly to a replica that restarts at the same address.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


STREAM_SIGNALS = "/signals.v1.SignalService/StreamSignals"


def tick_batch_bytes(symbol: np.ndarray, price: np.ndarray, size: np.ndarray, ts_ns: np.ndarray,
                     batch_id: int, producer: str) -> bytes:  # fmt: skip
    """A serialized ``TickBatch`` written from the columns (the bytes protobuf writes for the
    same message: a sixth of the cost of filling one from Python lists)."""
    tail = batch_format.varint(5 << 3) + batch_format.varint(batch_id) if batch_id else b""
    if producer:
        tail += batch_format.length_delimited(6, producer.encode())
    return batch_format.tick_batch(symbol, price, size, ts_ns) + tail


def _serialized(request: Any) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


@dataclass(frozen=True)
class ClientTls:
    """PEM files for a TLS server (``ca``) and, for mutual TLS, this client's identity."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.ca is not None or self.cert is not None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("--tls-cert and --tls-key go together (mutual TLS)")
        read = lambda p: None if p is None else Path(p).read_bytes()  # noqa: E731
        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


def open_channel(target: str, tls: ClientTls | None = None) -> grpc.aio.Channel:
    """A channel to ``target``: plaintext (inside the mesh) or TLS."""
    if tls is not None and tls.enabled:
        return grpc.aio.secure_channel(target, tls.credentials(), options=CHANNEL_OPTIONS)
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


@dataclass(frozen=True)
class IngestReply:
    """What the service answered for one batch, over all of its parts."""

    accepted: int
    rejected_index: np.ndarray  # positions in the batch given to `ingest`
    rejected_reason: np.ndarray  # RejectReason numbers, same order
    replies: list[Any]  # each part's SignalBatch: its signals and the model that made them

    @property
    def signals(self) -> int:
        return sum(len(r.symbol) for r in self.replies)

    def signal_columns(self) -> dict[str, np.ndarray]:
        """``symbol``, ``ts_ns``, ``direction``, ``strength``, ``confidence`` of every signal."""
        names = {"symbol": np.int32, "ts_ns": np.int64, "direction": np.int8,
                 "strength": np.float32, "confidence": np.float32}  # fmt: skip
        return {
            name: np.concatenate([np.array(getattr(r, name), dtype) for r in self.replies])
            if self.replies else np.empty(0, dtype)
            for name, dtype in names.items()
        }  # fmt: skip


def trailing(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    """A refusal's trailing metadata (text values: ``shard``, ``shard-owner``, ...)."""
    return trailing_of(exc.trailing_metadata())


def trailing_of(metadata: Any) -> dict[str, str]:
    return {k: v for k, v in (metadata or ()) if isinstance(v, str)}


class ServiceRefused(RuntimeError):
    """The service refused a part for good (or kept refusing past ``retry_for_s``)."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


class SignalClient:
    """Routes batches to shard owners among ``targets`` (any replicas; owners it learns)."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        producer: str | None = None,
        tls: ClientTls | None = None,
        timeout_s: float = 5.0,
        retry_for_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        window: int = 16,
    ) -> None:
        """``timeout_s``: the longest wait for one reply; ``window``: parts of one shard in
        flight at once."""
        if not targets:
            raise ValueError("targets: give at least one host:port of the service")
        if window < 1:
            raise ValueError(f"window = {window}: must be at least 1")
        self.targets = list(dict.fromkeys(targets))
        self.producer = producer or f"client-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tls = tls
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s
        self.connect_timeout_s = connect_timeout_s
        self.shards = 0  # learned on first use
        self.owners: dict[int, str] = {}
        self.retries = 0  # parts sent again (a refusal followed, a replica gone, back-pressure)
        self.window = window
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._streams: dict[int, _ShardStream] = {}
        self._table: ShardTable | None = None  # symbol id -> shard, once the count is known
        # Part ids start at the clock (ns): a client restarted under the same producer name
        # never reuses an id its previous run sent within the service's dedupe window.
        self._ids = itertools.count(time.time_ns())
        self._learning: asyncio.Lock | None = None

    async def __aenter__(self) -> SignalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for stream in self._streams.values():
            await stream.close()
        self._streams.clear()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    # --- the calls ---------------------------------------------------------------------------

    async def ingest(self, symbol: Any, price: Any, size: Any, ts_ns: Any) -> IngestReply:
        """Send one batch (columns of equal length, in time order); every part acknowledged."""
        columns = (np.asarray(symbol, np.int32), np.asarray(price, np.float64),
                   np.asarray(size, np.float64), np.asarray(ts_ns, np.int64))  # fmt: skip
        shards = await self.shard_count()
        if shards == 1:  # one part: the whole batch, no split
            of = np.zeros(1, np.int32)
            parts = [slice(None)]
        else:
            of = self._shards_of(columns[0], shards)
            parts = [np.flatnonzero(of == s) for s in dict.fromkeys(of.tolist())]
        sends = [
            self._send(int(of[idx][0]) if shards > 1 else 0,
                       tick_batch_bytes(columns[0][idx], columns[1][idx], columns[2][idx],
                                        columns[3][idx], next(self._ids), self.producer))
            for idx in parts
        ]  # fmt: skip
        replies = [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends)
        if shards == 1:
            index = [np.array(replies[0].ack.rejected_index, np.int64)]
        else:
            index = [idx[np.array(r.ack.rejected_index, np.int64)]  # type: ignore[index]
                     for idx, r in zip(parts, replies, strict=True)]  # fmt: skip
        return IngestReply(
            accepted=sum(r.ack.accepted for r in replies),
            rejected_index=np.concatenate(index) if index else np.empty(0, np.int64),
            rejected_reason=np.array([c for r in replies for c in r.ack.rejected_reason], np.int32),
            replies=list(replies),
        )

    async def get_signal(self, symbol: int) -> Any:
        """The symbol's latest ``Signal`` from its owner; `ServiceRefused` (NOT_FOUND...)."""
        shard = self._shard(symbol, await self.shard_count())
        request = pb2.SignalRequest(symbol=symbol)
        return await self._with_owner(shard, lambda stub, md: self._unary(stub, md, request))

    async def shard_count(self) -> int:
        """The service's shard count (asked once: a sharded replica names it in its answer
        to a request that says 0; an unsharded service is one shard)."""
        if self.shards:
            return self.shards
        if self._learning is None:
            self._learning = asyncio.Lock()
        async with self._learning:
            if not self.shards:
                self.shards = await self._learn_shard_count()
        return self.shards

    # --- routing -----------------------------------------------------------------------------

    async def _learn_shard_count(self) -> int:
        deadline = time.monotonic() + self.connect_timeout_s
        for attempt in itertools.count():
            target = self.targets[attempt % len(self.targets)]
            stub = pb2_grpc.SignalServiceStub(self._channel(target))
            try:
                await stub.GetSignal(pb2.SignalRequest(symbol=0), metadata=(("shard-count", "0"),),
                                     timeout=max(0.05, min(1.0, deadline - time.monotonic())))  # fmt: skip
                return 1
            except grpc.aio.AioRpcError as exc:
                count = trailing(exc).get("shard-count")
                if count is not None:
                    return int(count)
                if exc.code() not in RETRIED:  # NOT_FOUND and the like: an unsharded service
                    return 1
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"no server at {', '.join(self.targets)} (start one with `python -m app serve`)"
                )
            await asyncio.sleep(0.05)
        raise AssertionError("unreachable")

    def _shard(self, symbol: int, shards: int) -> int:
        return int(self._shards_of(np.array([symbol], np.int32), shards)[0])

    def _shards_of(self, symbols: np.ndarray, shards: int) -> np.ndarray:
        """Each symbol's shard (a table of ids seen so far, grown as larger ids come)."""
        table = self._table
        top = int(symbols.max()) + 1 if symbols.size else 0
        if table is None or table.shards != shards or top > table.n_symbols:
            table = self._table = ShardTable(max(top, 1024, 2 * (table.n_symbols if table else 0)),
                                             shards)  # fmt: skip
        if symbols.size and int(symbols.min()) < 0:  # no table slot: hash it (the service refuses)
            return np.array([shard_of(int(s), shards) for s in symbols.tolist()], np.int32)
        return table.of(symbols)

    async def _send(self, shard: int, batch: Any) -> Any:
        """One part on its shard's stream, after the parts sent before it; its SignalBatch."""
        stream = self._streams.get(shard)
        if stream is None:
            stream = self._streams[shard] = _ShardStream(self, shard)
        return await stream.send(batch)

    async def _unary(self, stub: Any, metadata: Any, request: Any) -> tuple[Any, Any]:
        call = stub.GetSignal(request, metadata=metadata, timeout=self.timeout_s)
        return await call, call

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call carries: the shard count the client split by."""
        return (("shard-count", str(self.shards)),)

    def _target(self, shard: int, attempt: int) -> str:
        return self.owners.get(shard) or self.targets[(shard + attempt) % len(self.targets)]

    async def _with_owner(self, shard: int, call: Any) -> Any:
        """``call(stub, metadata)`` at the shard's owner, following refusals and retrying."""
        retry = _Retry(self, shard)
        while True:
            target = self._target(shard, retry.attempt)
            try:
                reply, done = await call(
                    pb2_grpc.SignalServiceStub(self._channel(target)), self.metadata
                )
                owner = trailing_of(await done.trailing_metadata()).get("shard-owner")
                if owner and owner != target:  # a replica forwarded it: go direct next time
                    self._learn_owner(shard, owner)
                return reply
            except grpc.aio.AioRpcError as exc:
                await retry.failed(target, exc)

    def _learn_owner(self, shard: int, owner: str) -> None:
        self.owners[shard] = owner
        if owner not in self.targets:
            self.targets.append(owner)

    def _channel(self, target: str) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            channel = self._channels[target] = open_channel(target, self.tls)
        return channel


class _Retry:
    """The way to a shard's owner across failed calls: what to do after each failure (learn
    the owner it names, back off and try again, or give up), until ``retry_for_s`` is spent."""

    def __init__(self, client: SignalClient, shard: int) -> None:
        self.client = client
        self.shard = shard
        self.deadline = time.monotonic() + client.retry_for_s
        self.delay = 0.02
        self.attempt = 0  # bumped when a replica is gone, to try the next target

    async def failed(self, target: str, exc: grpc.aio.AioRpcError) -> None:
        """Returns when the call may be made again (at the owner now known); raises
        `ServiceRefused` when the refusal is final or retrying has run out of time."""
        client, shard = self.client, self.shard
        code, facts = exc.code(), trailing(exc)
        owner = facts.get("shard-owner")
        if code == grpc.StatusCode.FAILED_PRECONDITION and owner and owner != target:
            client._learn_owner(shard, owner)
        elif code in RETRIED:
            if owner:
                client._learn_owner(shard, owner)
            elif "shard" not in facts:  # the replica itself is gone: try another
                client.owners.pop(shard, None)
                self.attempt += 1
            if time.monotonic() + self.delay > self.deadline:
                raise ServiceRefused(f"shard {shard}: {code.name} for "
                                     f"{client.retry_for_s:g} s: {exc.details()}", code) from None  # fmt: skip
            await asyncio.sleep(self.delay)
            self.delay = min(self.delay * 2, 0.5)
        else:
            raise ServiceRefused(f"{target}: {code.name}: {exc.details()}", code) from None


@dataclass
class _Part:
    batch: Any
    reply: asyncio.Future[Any]


# How long a shard's stream stays open with nothing to send (closing it costs the next
# part a new call; holding it costs nothing).
STREAM_LINGER_S = 1.0


class _ShardStream:
    """One shard's parts, in order, on one ``StreamSignals`` call at a time, up to the
    client's ``window`` unanswered; replies come back in order. A call that ends with
    parts unanswered (a refusal, a replica gone, a message sent on to the owner) is
    followed as `_Retry` says, and the unanswered parts go again, in order, on a new call:
    the service applied none after the one it refused, and answers those it did apply from
    its idempotency index. A final refusal fails its part only; the parts after it go on."""

    def __init__(self, client: SignalClient, shard: int) -> None:
        self.client = client
        self.shard = shard
        self.unsent: deque[_Part] = deque()
        self.unanswered: deque[_Part] = deque()  # written on the current call, in order
        self.answered = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._progress_at = 0.0  # last reply, or when parts began to wait for one
        self._timed_out = False

    async def send(self, batch: Any) -> Any:
        """The part's reply; parts go out in the order of the calls (queued at once: the
        window holds back writes, not the queue)."""
        loop = asyncio.get_running_loop()
        part = _Part(batch, loop.create_future())
        if not self.unanswered and not self.unsent:
            self._progress_at = time.monotonic()
        self.unsent.append(part)
        self.wake.set()
        if self.task is None:
            self.task = loop.create_task(self._run(), name=f"shard-{self.shard}-stream")
        return await part.reply

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self._fail_all(ConnectionError("the client closed with the part unanswered"))

    def _fail_all(self, exc: BaseException) -> None:
        for part in (*self.unanswered, *self.unsent):
            if not part.reply.done():
                part.reply.set_exception(exc)
        self.unanswered.clear()
        self.unsent.clear()

    async def _run(self) -> None:
        client = self.client
        retry: _Retry | None = None
        answered = self.answered
        try:
            while self.unsent or self.unanswered:
                if self.unanswered:  # a call ended without their replies: first again
                    client.retries += len(self.unanswered)
                    self.unsent.extendleft(reversed(self.unanswered))
                    self.unanswered.clear()
                if retry is not None and self.answered != answered:
                    retry = None  # replies came since: a new run of failures
                target = client._target(self.shard, retry.attempt if retry is not None else 0)
                try:
                    await self._stream(target)
                except grpc.aio.AioRpcError as exc:
                    if retry is None:
                        retry, answered = _Retry(client, self.shard), self.answered
                    try:
                        await retry.failed(target, exc)
                    except ServiceRefused as refused:
                        if refused.code in RETRIED:  # out of time: nothing queued gets through
                            self._fail_all(refused)
                        elif self.unanswered:  # the first unanswered part was refused
                            part = self.unanswered.popleft()
                            if not part.reply.done():
                                part.reply.set_exception(refused)
                        retry = None
        except BaseException as exc:
            self._fail_all(exc if isinstance(exc, Exception) else ConnectionError("closed"))
            raise
        finally:
            self.task = None

    async def _stream(self, target: str) -> None:
        """Write the parts on one call until it ends or stays idle; returns when it ended
        with every part answered (or the owner named, for the rest)."""
        client = self.client
        loop = asyncio.get_running_loop()
        call = client._channel(target).stream_stream(
            STREAM_SIGNALS, request_serializer=_serialized,
            response_deserializer=pb2.SignalBatch.FromString,
        )(metadata=client.metadata)  # fmt: skip
        self._timed_out = False
        self._progress_at = time.monotonic()
        reader = loop.create_task(self._read(call))
        watchdog = loop.call_later(client.timeout_s / 4, self._watch, call)
        try:
            while not reader.done():
                if self.unsent and len(self.unanswered) < client.window:
                    part = self.unsent.popleft()
                    self.unanswered.append(part)
                    try:
                        await call.write(part.batch)
                    except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                        break  # the call ended: the reader says how
                    continue
                self.wake.clear()
                if self.unanswered:
                    await self.wake.wait()
                    continue
                with contextlib.suppress(TimeoutError):  # idle: keep the call a while
                    await asyncio.wait_for(self.wake.wait(), STREAM_LINGER_S)
                if not self.unsent:
                    with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError,
                                             asyncio.InvalidStateError):  # fmt: skip
                        await call.done_writing()
                    break
            try:
                await reader
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.INTERNAL:
                    raise
                # gRPC's own status for a call whose connection broke under a write (the
                # service never answers INTERNAL): the replica is gone
                raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                           grpc.aio.Metadata(), f"connection to {target} lost: "
                                           f"{exc.details()}") from None  # fmt: skip
        finally:
            watchdog.cancel()
            if not reader.done():
                reader.cancel()
                call.cancel()
        owner = trailing_of(await call.trailing_metadata()).get("shard-owner")
        if owner and owner != target:  # a replica sent a part on: go direct from now on
            client._learn_owner(self.shard, owner)
        elif self.unanswered:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                       grpc.aio.Metadata(), f"{target} ended the stream with "
                                       f"{len(self.unanswered)} parts unanswered")  # fmt: skip

    async def _read(self, call: Any) -> None:
        """Each reply to its part, in order, until the call ends (an error raises)."""
        try:
            while True:
                reply = await call.read()
                if reply is grpc.aio.EOF:  # pyright: ignore[reportAttributeAccessIssue]
                    return
                if not self.unanswered:
                    raise grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(),
                                               grpc.aio.Metadata(), "a reply to no part")  # fmt: skip
                part = self.unanswered.popleft()
                if not part.reply.done():
                    part.reply.set_result(reply)
                self.answered += 1
                self._progress_at = time.monotonic()
                self.wake.set()
        except asyncio.CancelledError:
            if not self._timed_out:
                raise
            raise grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(),
                                       grpc.aio.Metadata(), f"no reply within "
                                       f"{self.client.timeout_s:g} s") from None  # fmt: skip
        finally:
            self.wake.set()

    def _watch(self, call: Any) -> None:
        """Cancel a call that left a part without a reply for ``timeout_s`` (then retried)."""
        if call.done():
            return
        timeout = self.client.timeout_s
        if self.unanswered and time.monotonic() - self._progress_at > timeout:
            self._timed_out = True
            call.cancel()
            return
        asyncio.get_running_loop().call_later(timeout / 4, self._watch, call)


class PeerForwarder:
    """A replica's client of its peers: a part of a shard another replica owns, sent on to
    that owner once (marked `FORWARDED`, so it is never sent on again). Plaintext: inside the
    mesh, the sidecars' mutual TLS protects it."""

    def __init__(self, shards: int) -> None:
        self.metadata = (("shard-count", str(shards)), (FORWARDED, "1"))
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, owner: str) -> Any:
        channel = self._channels.get(owner)
        if channel is None:
            channel = self._channels[owner] = open_channel(owner)
        return pb2_grpc.SignalServiceStub(channel)

    async def ingest(self, owner: str, batch: Any, timeout_s: float | None) -> Any:
        """The owner's ``SignalBatch`` for ``batch``; its refusal as ``AioRpcError``."""
        call = self._stub(owner).StreamSignals(iter([batch]), metadata=self.metadata,
                                               timeout=timeout_s)  # fmt: skip
        async for reply in call:
            return reply
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                   grpc.aio.Metadata(), f"{owner} ended the stream unanswered")  # fmt: skip

    async def get_signal(self, owner: str, request: Any, timeout_s: float | None) -> Any:
        return await self._stub(owner).GetSignal(request, metadata=self.metadata,
                                                 timeout=timeout_s)  # fmt: skip

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
