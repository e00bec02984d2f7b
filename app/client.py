"""The service's Python client: each batch's symbols go to their shard's owner, retried safely.

    async with SignalClient(["10.0.0.5:50051", "10.0.0.6:50051"]) as client:
        reply = await client.ingest(symbol, price, size, ts_ns)   # numpy columns
        signal = await client.get_signal(17)

A batch is split by shard (`app.shards.shard_of`; the shard count is learned from the
service once) and each part is sent, as its own ``StreamSignals`` message, to the replica
that owns its shard. Owners are learned from refusals: a replica that does not own a shard
answers FAILED_PRECONDITION with trailing metadata ``shard-owner: host:port``, and the
client goes there (a replica that forwards instead names the owner in the trailing metadata
of its answer, and the client goes there next time). UNAVAILABLE (a replica gone, a shard moving or loading) and
RESOURCE_EXHAUSTED are retried with backoff for up to ``retry_for_s``, always with the
part's original ``(producer, batch_id)``, so a retry of a part that was applied is
answered with its original reply instead of being applied twice. Parts of one shard go
out one at a time, in the order `ingest` was called, so each symbol's ticks stay in order
whatever the concurrency. An unsharded service is one shard: everything goes to the
first target.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from app.proto import load as load_stubs
from app.shards import shard_of

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
    ) -> None:
        if not targets:
            raise ValueError("targets: give at least one host:port of the service")
        self.targets = list(dict.fromkeys(targets))
        self.producer = producer or f"client-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tls = tls
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s
        self.connect_timeout_s = connect_timeout_s
        self.shards = 0  # learned on first use
        self.owners: dict[int, str] = {}
        self.retries = 0  # parts sent again (a refusal followed, a replica gone, back-pressure)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._shard_of: dict[int, int] = {}
        # Part ids start at the clock (ns): a client restarted under the same producer name
        # never reuses an id its previous run sent within the service's dedupe window.
        self._ids = itertools.count(time.time_ns())
        self._learning: asyncio.Lock | None = None

    async def __aenter__(self) -> SignalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    # --- the calls ---------------------------------------------------------------------------

    async def ingest(self, symbol: Any, price: Any, size: Any, ts_ns: Any) -> IngestReply:
        """Send one batch (columns of equal length, in time order); every part acknowledged."""
        columns = (np.asarray(symbol, np.int32), np.asarray(price, np.float64),
                   np.asarray(size, np.float64), np.asarray(ts_ns, np.int64))  # fmt: skip
        shards = await self.shard_count()
        of = np.array([self._shard(int(s), shards) for s in columns[0].tolist()], np.int32)
        parts = [np.flatnonzero(of == s) for s in dict.fromkeys(of.tolist())]
        replies = await asyncio.gather(*(
            self._send(int(of[idx[0]]), pb2.TickBatch(
                symbol=columns[0][idx].tolist(), price=columns[1][idx].tolist(),
                size=columns[2][idx].tolist(), ts_ns=columns[3][idx].tolist(),
                batch_id=next(self._ids), producer=self.producer))
            for idx in parts
        ))  # fmt: skip
        index = [idx[np.array(r.ack.rejected_index, np.int64)] for idx, r in zip(parts, replies,
                                                                                  strict=True)]  # fmt: skip
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
        found = self._shard_of.get(symbol)
        if found is None:
            found = self._shard_of[symbol] = shard_of(symbol, shards)
        return found

    async def _send(self, shard: int, batch: Any) -> Any:
        """One part to its owner, in its shard's order; its SignalBatch."""
        lock = self._locks.setdefault(shard, asyncio.Lock())
        async with lock:
            return await self._with_owner(shard, lambda stub, md: self._stream_one(stub, md, batch))

    async def _stream_one(self, stub: Any, metadata: Any, batch: Any) -> tuple[Any, Any]:
        call = stub.StreamSignals(iter([batch]), metadata=metadata, timeout=self.timeout_s)
        async for reply in call:
            return reply, call
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                   grpc.aio.Metadata(), "the stream ended without a reply")  # fmt: skip

    async def _unary(self, stub: Any, metadata: Any, request: Any) -> tuple[Any, Any]:
        call = stub.GetSignal(request, metadata=metadata, timeout=self.timeout_s)
        return await call, call

    async def _with_owner(self, shard: int, call: Any) -> Any:
        """``call(stub, metadata)`` at the shard's owner, following refusals and retrying."""
        deadline = time.monotonic() + self.retry_for_s
        delay, attempt = 0.02, 0
        metadata = (("shard-count", str(self.shards)),)
        while True:
            target = self.owners.get(shard) or self.targets[(shard + attempt) % len(self.targets)]
            try:
                reply, done = await call(
                    pb2_grpc.SignalServiceStub(self._channel(target)), metadata
                )
                owner = trailing_of(await done.trailing_metadata()).get("shard-owner")
                if owner and owner != target:  # a replica forwarded it: go direct next time
                    self._learn_owner(shard, owner)
                return reply
            except grpc.aio.AioRpcError as exc:
                code, facts = exc.code(), trailing(exc)
                owner = facts.get("shard-owner")
                if code == grpc.StatusCode.FAILED_PRECONDITION and owner and owner != target:
                    self._learn_owner(shard, owner)
                elif code in RETRIED:
                    if owner:
                        self._learn_owner(shard, owner)
                    elif "shard" not in facts:  # the replica itself is gone: try another
                        self.owners.pop(shard, None)
                        attempt += 1
                    if time.monotonic() + delay > deadline:
                        raise ServiceRefused(f"shard {shard}: {code.name} for "
                                             f"{self.retry_for_s:g} s: {exc.details()}", code) from None  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)
                else:
                    raise ServiceRefused(f"{target}: {code.name}: {exc.details()}", code) from None
                self.retries += 1

    def _learn_owner(self, shard: int, owner: str) -> None:
        self.owners[shard] = owner
        if owner not in self.targets:
            self.targets.append(owner)

    def _channel(self, target: str) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            channel = self._channels[target] = open_channel(target, self.tls)
        return channel


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
