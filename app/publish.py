"""Batched, compressed publishing with ordering keys, a bounded retry buffer and back-pressure.

Records (protobuf-encoded ticks or signals) are submitted with an ordering key (the
symbol). Each key's records gather into a batch that is sealed when it reaches
``max_messages`` records or ``max_bytes`` bytes, or has waited ``max_latency_ms``.
A sealed batch is framed (length-prefixed records), compressed with the configured
codec behind a 12-byte header that names it (`encode_batch` / `decode_batch`), and
sent as one message with the key as its ordering key: Pub/Sub in production, a local
file by default.

Delivery: batches of one key are sent one at a time, in order; a failed send is retried
with exponential backoff, keeping its place. Every accepted record stays in the buffer
until the sink acknowledges it, so nothing accepted is lost while the process lives.
The buffer is bounded (``buffer_max_messages``): a submit that does not fit raises
`PublishBackpressure` and accepts nothing, so callers push back (RESOURCE_EXHAUSTED)
rather than records vanishing. A sink's permanent refusal (`PermanentPublishError`)
moves the batch to a dead-letter file, logged as an error and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import lz4.block
import structlog
import zstandard
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.telemetry import Metrics, default_metrics

log = structlog.get_logger("app.publish")

Codec = Literal["zstd", "lz4", "none"]
CODEC_IDS: dict[str, int] = {"none": 0, "zstd": 1, "lz4": 2}
CODEC_NAMES: dict[int, str] = {v: k for k, v in CODEC_IDS.items()}

MAGIC = b"SG"
FORMAT_VERSION = 1
# magic, format version, codec id, record count, uncompressed body length
HEADER = struct.Struct("<2sBBII")
PUBSUB_MAX_MESSAGE_BYTES = 10_000_000


class PublishConfig(BaseModel):
    """Batching, compression, retry and the sink of both topics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sink: Literal["local", "pubsub"] = "local"
    codec: Codec = "zstd"
    zstd_level: int = Field(default=3, ge=1, le=22)
    max_messages: int = Field(default=500, ge=1, le=100_000)
    max_bytes: int = Field(default=512 * 1024, ge=64, le=PUBSUB_MAX_MESSAGE_BYTES - 1024)
    max_latency_ms: float = Field(default=50.0, gt=0, le=60_000)
    buffer_max_messages: int = Field(default=200_000, ge=1)
    max_in_flight: int = Field(default=16, ge=1, le=1024)  # batches, across keys
    retry_initial_ms: float = Field(default=50.0, gt=0, le=60_000)
    retry_max_ms: float = Field(default=5_000.0, gt=0, le=600_000)
    # The local sink's directory. None: a fresh temporary one per sink, removed at close
    # (embedded runs leave nothing behind); set it to keep what was published.
    local_dir: Path | None = None
    dead_letter_dir: Path = Path(tempfile.gettempdir()) / "signal-platform" / "dead-letter"
    project: str | None = None  # pubsub
    # Topic names as the infra declares them (infra/messaging.py): the schema topics take one
    # protobuf message each (TickBatch, Signal; the signals topic feeds BigQuery); the
    # compressed frames go to `<topic><batch_suffix>`.
    ticks_topic: str = Field(default="ticks", pattern=r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")
    signals_topic: str = Field(default="signals", pattern=r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")
    batch_suffix: str = Field(default="-batches", pattern=r"^[A-Za-z0-9._~+%-]{1,32}$")
    schema_topics: bool | None = None  # None: with the Pub/Sub sink only

    @property
    def publishes_schema_topics(self) -> bool:
        return self.sink == "pubsub" if self.schema_topics is None else self.schema_topics

    @model_validator(mode="after")
    def _check(self) -> PublishConfig:
        if self.sink == "pubsub" and not self.project:
            raise ValueError("sink = 'pubsub': project must be set")
        if self.buffer_max_messages < self.max_messages:
            raise ValueError(
                f"buffer_max_messages = {self.buffer_max_messages}: must be >= max_messages "
                f"({self.max_messages})"
            )
        if self.retry_max_ms < self.retry_initial_ms:
            raise ValueError(
                f"retry_max_ms = {self.retry_max_ms}: must be >= retry_initial_ms "
                f"({self.retry_initial_ms})"
            )
        return self


class PublishBackpressure(RuntimeError):
    """The retry buffer is full: nothing of this submit was accepted; slow down or retry."""


class PermanentPublishError(RuntimeError):
    """A sink refused a batch for good (retrying cannot help): it is dead-lettered."""


# --- the batch format ------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame_records(records: Sequence[bytes]) -> bytes:
    """Records as one body: each preceded by its length as a varint (protobuf's framing)."""
    return b"".join(_varint(len(r)) + r for r in records)


def unframe_records(body: bytes) -> list[bytes]:
    out: list[bytes] = []
    i, n = 0, len(body)
    while i < n:
        length = shift = 0
        while True:
            b = body[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        if i + length > n:
            raise ValueError(f"truncated batch body: record of {length} bytes at offset {i}")
        out.append(body[i : i + length])
        i += length
    return out


class Compressor:
    """One codec's compressor, reused across batches (zstd contexts are costly to make)."""

    def __init__(self, codec: Codec, zstd_level: int = 3) -> None:
        if codec not in CODEC_IDS:
            raise ValueError(f"codec = {codec!r}: must be one of {sorted(CODEC_IDS)}")
        self.codec = codec
        self._zstd = zstandard.ZstdCompressor(level=zstd_level) if codec == "zstd" else None

    def compress(self, body: bytes) -> bytes:
        if self._zstd is not None:
            return self._zstd.compress(body)
        if self.codec == "lz4":
            return lz4.block.compress(body, store_size=False)
        return body


def encode_batch(records: Sequence[bytes], compressor: Compressor) -> bytes:
    """Header (naming the codec) + compressed framed records."""
    body = frame_records(records)
    header = HEADER.pack(
        MAGIC, FORMAT_VERSION, CODEC_IDS[compressor.codec], len(records), len(body)
    )
    return header + compressor.compress(body)


_zstd_decompressor = zstandard.ZstdDecompressor()


def decode_batch(payload: bytes) -> tuple[str, list[bytes]]:
    """``(codec, records)`` of a payload `encode_batch` made; ValueError on anything else."""
    if len(payload) < HEADER.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than the header")
    magic, version, codec_id, count, raw_len = HEADER.unpack_from(payload)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise ValueError(f"not a signal batch (magic {magic!r}, version {version})")
    codec = CODEC_NAMES.get(codec_id)
    if codec is None:
        raise ValueError(f"unknown codec id {codec_id}; known: {CODEC_NAMES}")
    data = payload[HEADER.size :]
    if codec == "zstd":
        body = _zstd_decompressor.decompress(data, max_output_size=raw_len)
    elif codec == "lz4":
        body = lz4.block.decompress(data, uncompressed_size=raw_len)
    else:
        body = data
    if len(body) != raw_len:
        raise ValueError(f"body is {len(body)} bytes, header says {raw_len}")
    records = unframe_records(body)
    if len(records) != count:
        raise ValueError(f"{len(records)} records, header says {count}")
    return codec, records


# --- sinks -----------------------------------------------------------------------------------


class PublishSink(Protocol):
    """Where batches go. Raise `PermanentPublishError` for a refusal retrying cannot fix;
    any other exception is transient and the batch is retried."""

    async def publish(
        self, topic: str, ordering_key: str, payload: bytes, attributes: dict[str, str]
    ) -> None: ...

    async def close(self) -> None: ...


_FRAME = struct.Struct("<IH")  # payload length, ordering-key length


class LocalFileSink:
    """The embedded default: each topic is an append-only file of frames
    ``(u32 payload length, u16 key length, key, payload)``; `read_local_topic` reads it."""

    def __init__(self, directory: Path | None = None) -> None:
        self.ephemeral = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="signal-publish-"))
            if directory is None
            else Path(directory)
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, BinaryIO] = {}

    def path(self, topic: str) -> Path:
        return self.directory / f"{topic}.sgb"

    async def publish(
        self, topic: str, ordering_key: str, payload: bytes, attributes: dict[str, str]
    ) -> None:
        f = self._files.get(topic)
        if f is None:
            f = self._files[topic] = open(self.path(topic), "ab")  # noqa: SIM115 - kept open
        key = ordering_key.encode()
        f.write(_FRAME.pack(len(payload), len(key)) + key + payload)
        f.flush()

    async def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self.ephemeral:
            shutil.rmtree(self.directory, ignore_errors=True)


def read_local_topic(path: Path) -> Iterator[tuple[str, bytes]]:
    """``(ordering_key, payload)`` of every batch a `LocalFileSink` wrote to ``path``."""
    data = Path(path).read_bytes()
    i = 0
    while i < len(data):
        length, key_len = _FRAME.unpack_from(data, i)
        i += _FRAME.size
        key = data[i : i + key_len].decode()
        i += key_len
        yield key, data[i : i + length]
        i += length


class PubSubSink:
    """Google Cloud Pub/Sub with message ordering. ``client`` is the true edge: a
    ``pubsub_v1.PublisherClient`` in production, a fake in tests. The payload is already
    a batch, so the client's own batching is limited to one message."""

    def __init__(self, project: str, client: Any = None) -> None:
        self.project = project
        if client is None:  # pragma: no cover - needs Google credentials
            from google.cloud import pubsub_v1

            client = pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(max_messages=1),
                publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
            )
        self.client = client

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    async def publish(
        self, topic: str, ordering_key: str, payload: bytes, attributes: dict[str, str]
    ) -> None:
        from google.api_core import exceptions

        path = self.topic_path(topic)
        try:
            future = self.client.publish(path, payload, ordering_key=ordering_key, **attributes)
            await asyncio.wrap_future(future)
        except (exceptions.InvalidArgument, exceptions.FailedPrecondition) as exc:
            self.client.resume_publish(path, ordering_key)
            raise PermanentPublishError(f"{topic}: {exc}") from exc
        except Exception:
            # An ordered key pauses after a failure until resumed; we retry in order.
            self.client.resume_publish(path, ordering_key)
            raise

    async def close(self) -> None:
        stop = getattr(self.client, "stop", None)
        if stop is not None:
            await asyncio.to_thread(stop)


# --- the publisher ---------------------------------------------------------------------------


@dataclass
class _Batch:
    key: str
    records: list[bytes] = field(default_factory=list)
    nbytes: int = 0
    opened_at: float = 0.0


@dataclass
class _KeyQueue:
    sealed: deque[_Batch] = field(default_factory=deque)
    busy: bool = False  # a batch of this key is being sent
    attempts: int = 0  # consecutive failures of the head batch
    retry_at: float = 0.0


class Publisher:
    """One topic's batching publisher; `start` it on the event loop, `close` to drain."""

    def __init__(
        self,
        topic: str,
        config: PublishConfig,
        sink: PublishSink,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        record_type: str = "",
        framed: bool = True,
    ) -> None:
        """``framed``: records travel as compressed batches (one message per batch);
        otherwise each record is one message as is (a schema topic's protobuf message,
        which the Pub/Sub client batches on the wire)."""
        self.topic = topic
        self.framed = framed
        self.config = config
        self.sink = sink
        self.metrics = metrics or default_metrics()
        self._clock = clock
        self._compressor = Compressor(config.codec, config.zstd_level)
        self._attributes = {"codec": config.codec, "format": str(FORMAT_VERSION)} if framed else {}
        if record_type:
            self._attributes["record_type"] = record_type
        self._open: dict[str, _Batch] = {}
        self._keys: dict[str, _KeyQueue] = {}
        self._backlog = 0
        self._reserved = 0
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._closing = False
        self._max_latency_s = config.max_latency_ms / 1000
        self._backlog_gauge = self.metrics.publish_backlog.labels(topic)
        self._rejected = self.metrics.publish_rejected.labels(topic)
        self.delivered_messages = 0
        self.dead_lettered_messages = 0

    @property
    def backlog(self) -> int:
        """Records accepted and not yet acknowledged (or dead-lettered)."""
        return self._backlog

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._dispatch(), name=f"publish-{self.topic}"
            )

    def submit(self, key: str, record: bytes) -> None:
        """Accept one record for ``key`` or raise `PublishBackpressure` (accepting nothing)."""
        self.submit_many(key, (record,))

    def reserve(self, n: int) -> None:
        """Hold room for ``n`` records a caller will submit after an await (so it can refuse
        work before doing it), or raise `PublishBackpressure`; `release` what goes unused."""
        self._check_room(n)
        self._reserved += n

    def release(self, n: int) -> None:
        self._reserved -= min(n, self._reserved)

    def _check_room(self, n: int) -> None:
        if self._closing:
            raise PublishBackpressure(f"{self.topic}: publisher is closing")
        if self._backlog + self._reserved + n > self.config.buffer_max_messages:
            self._rejected.inc(n)
            raise PublishBackpressure(
                f"{self.topic}: publish buffer full ({self._backlog} queued, {self._reserved} "
                f"reserved of {self.config.buffer_max_messages} messages); {n} refused"
            )

    def submit_many(self, key: str, records: Sequence[bytes], *, reserved: bool = False) -> None:
        """Accept all of ``records`` for ``key`` in order, or none (`PublishBackpressure`).
        ``reserved``: the room was taken with `reserve` (then this cannot be refused)."""
        n = len(records)
        if not n:
            return
        if reserved:
            self._reserved -= min(n, self._reserved)
        else:
            self._check_room(n)
        cfg = self.config
        if not self.framed:
            queue = self._keys.get(key)
            if queue is None:
                queue = self._keys[key] = _KeyQueue()
            for record in records:
                queue.sealed.append(_Batch(key, [record], len(record)))
            self._backlog += n
            self._backlog_gauge.set(self._backlog)
            self._drained.clear()
            self._wake.set()
            return
        batch = self._open.get(key)
        for record in records:
            if batch is None:
                batch = self._open[key] = _Batch(key, opened_at=self._clock())
            batch.records.append(record)
            batch.nbytes += len(record) + 2
            if len(batch.records) >= cfg.max_messages or batch.nbytes >= cfg.max_bytes:
                self._seal(batch)
                batch = None
        self._backlog += n
        self._backlog_gauge.set(self._backlog)
        self._drained.clear()
        self._wake.set()

    def _seal(self, batch: _Batch) -> None:
        del self._open[batch.key]
        queue = self._keys.get(batch.key)
        if queue is None:
            queue = self._keys[batch.key] = _KeyQueue()
        queue.sealed.append(batch)

    def _seal_due(self, now: float) -> float:
        """Seal batches past their latency bound; seconds until the next one is due."""
        next_due = float("inf")
        for batch in list(self._open.values()):
            due = batch.opened_at + self._max_latency_s
            if due <= now or self._closing:
                self._seal(batch)
            else:
                next_due = min(next_due, due - now)
        return next_due

    async def _dispatch(self) -> None:
        while True:
            now = self._clock()
            wait = self._seal_due(now)
            for key, queue in self._keys.items():
                if self._in_flight >= self.config.max_in_flight:
                    break
                if queue.busy or not queue.sealed:
                    continue
                if queue.retry_at > now:
                    wait = min(wait, queue.retry_at - now)
                    continue
                queue.busy = True
                self._in_flight += 1
                task = asyncio.get_running_loop().create_task(self._send(key, queue))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
            if self._backlog == 0:
                self._drained.set()
                if self._closing:
                    return
            self._wake.clear()
            timeout = None if wait == float("inf") else max(wait, 0.0005)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _send(self, key: str, queue: _KeyQueue) -> None:
        batch = queue.sealed[0]
        n = len(batch.records)
        try:
            payload = (
                encode_batch(batch.records, self._compressor) if self.framed else batch.records[0]
            )
            await self.sink.publish(self.topic, key, payload, self._attributes)
        except PermanentPublishError as exc:
            self._dead_letter(batch, exc)
            self._done(queue, n)
        except Exception as exc:
            queue.attempts += 1
            delay_ms = min(
                self.config.retry_initial_ms * 2 ** (queue.attempts - 1), self.config.retry_max_ms
            )
            queue.retry_at = self._clock() + delay_ms / 1000
            self.metrics.publish_failures.labels(self.topic).inc()
            log.warning("publish_failed", topic=self.topic, key=key, messages=n,
                        attempt=queue.attempts, retry_in_ms=delay_ms, error=repr(exc))  # fmt: skip
        else:
            self.metrics.publish_batch_messages.labels(self.topic).observe(n)
            self.metrics.publish_batch_bytes.labels(self.topic).observe(len(payload))
            self.metrics.publish_bytes.labels(self.topic, "raw").inc(batch.nbytes)
            self.metrics.publish_bytes.labels(self.topic, "compressed").inc(len(payload))
            self.delivered_messages += n
            log.info("batch_published", topic=self.topic, key=key, messages=n,
                     bytes=len(payload))  # fmt: skip
            self._done(queue, n)
        finally:
            queue.busy = False
            self._in_flight -= 1
            self._wake.set()

    def _done(self, queue: _KeyQueue, n: int) -> None:
        queue.sealed.popleft()
        queue.attempts = 0
        queue.retry_at = 0.0
        self._backlog -= n
        self._backlog_gauge.set(self._backlog)

    def _dead_letter(self, batch: _Batch, exc: Exception) -> None:
        path = self.config.dead_letter_dir / f"deadletter-{self.topic}.sgb"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = encode_batch(batch.records, self._compressor)
        key = batch.key.encode()
        with open(path, "ab") as f:
            f.write(_FRAME.pack(len(payload), len(key)) + key + payload)
        self.dead_lettered_messages += len(batch.records)
        self.metrics.publish_dead_lettered.labels(self.topic).inc(len(batch.records))
        log.error("publish_dead_lettered", topic=self.topic, key=batch.key,
                  messages=len(batch.records), path=str(path), error=repr(exc))  # fmt: skip

    async def flush(self, timeout: float | None = None) -> None:
        """Seal every open batch and wait until the sink acknowledged all accepted records."""
        self.start()
        for batch in list(self._open.values()):
            self._seal(batch)
        self._wake.set()
        await asyncio.wait_for(self._drained.wait(), timeout)

    async def close(self, timeout: float = 10.0, *, close_sink: bool = True) -> None:
        """Stop accepting, deliver what was accepted (up to ``timeout``), close the sink
        (unless another publisher shares it)."""
        self._closing = True
        self.start()
        self._wake.set()
        assert self._task is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.error("publish_close_timeout", topic=self.topic, backlog=self._backlog)
            self._task.cancel()
            for task in list(self._sends):
                task.cancel()
        if close_sink:
            await self.sink.close()


def build_sink(config: PublishConfig, client: Any = None) -> PublishSink:
    if config.sink == "pubsub":
        assert config.project is not None
        return PubSubSink(config.project, client)
    return LocalFileSink(config.local_dir)
