"""Batched, compressed publishing under ordering keys, with a bounded retry buffer and back-pressure.

Records are submitted under an ordering key (the data path uses each symbol's ordering
shard, so a bounded number of keys keeps each symbol's records in order). Each key's
records gather into a batch that is sealed when it holds ``max_messages`` rows (ticks or
signals) or ``max_bytes`` bytes, or has waited ``max_latency_ms``. On a batch topic a
sealed batch is one message: a ``PublishedBatch`` whose payload is a zstd or LZ4 frame of
the joined records (`app.batch_format`: each record is one ``BatchPayload`` entry), with
Pub/Sub attributes naming its codec, schema version, record type, row count and the
service batches it holds. On a schema topic each record is one message as is. Messages go
to Pub/Sub in production, to local files by default.

Delivery: batches of one key are sent one at a time, in order; a failed send is retried
with exponential backoff, keeping its place. Every accepted record stays in the buffer
until the sink acknowledges it, so nothing accepted is lost while the process lives.
The buffer is bounded (``buffer_max_messages`` rows): a submit that does not fit raises
`PublishBackpressure` and accepts nothing, so callers push back (RESOURCE_EXHAUSTED)
rather than records vanishing. A sink's permanent refusal (`PermanentPublishError`)
moves the batch to a dead-letter file, logged as an error and counted.

Records may carry the sequence number of the service batch they come from (``seq``): a
message's ``seq_first``/``seq_last`` attributes say which batches it holds, `on_delivered`
reports them once the sink has them, and a replayed batch is skipped by a sink that
already holds it (the local files know; Pub/Sub consumers can use the attributes).
Local topic files and dead-letter files rotate by size and age (`FrameLog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import shutil
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import structlog

from app import batch_format
from app.backoff import Backoff
from app.batch_format import Compressor
from app.directories import ensure_directory
from app.settings.publish import PUBSUB_MAX_MESSAGE_BYTES, PublishConfig
from app.telemetry import Metrics, default_metrics

log = structlog.get_logger("app.publish")


class PublishBackpressure(RuntimeError):
    """The retry buffer is full: nothing of this submit was accepted; slow down or retry."""


class PermanentPublishError(RuntimeError):
    """A sink refused a batch for good (retrying cannot help): it is dead-lettered."""


Message = tuple[bytes, dict[str, str]]  # (data, attributes)


# --- sinks -----------------------------------------------------------------------------------


class PublishSink(Protocol):
    """Where batches go. Raise `PermanentPublishError` for a refusal retrying cannot fix;
    any other exception is transient and the batch is retried."""

    async def publish(self, topic: str, ordering_key: str, messages: Sequence[Message]) -> None:
        """Publish ``messages`` (data, attributes) under ``ordering_key``, in order; return
        once the sink holds them all."""
        ...

    def delivered_seq(self, topic: str, ordering_key: str) -> int:
        """The last batch sequence number known delivered under the key (0: none or unknown)."""
        ...

    def max_seq(self, topic: str) -> int:
        """The highest batch sequence number known delivered on ``topic`` (0: none or unknown)."""
        ...

    async def close(self) -> None: ...


FILE_MAGIC = b"SGL2"
FILE_HEADER = struct.Struct("<4sq")  # magic, creation time (ns since the epoch)
_FRAME = struct.Struct("<IHH")  # payload length, ordering-key length, attributes length


class FrameLog:
    """One append-only log of frames, rotated by size and age, keeping ``max_files`` old
    files: the active file is ``<dir>/<name>.sgb``, rotated ones ``<name>.<n>.sgb``.

    A file starts with ``FILE_HEADER`` and holds frames ``(u32 payload length, u16 key
    length, u16 attributes length, key, attributes as a JSON object, payload)``: readable
    in any language. A torn frame at the end (a crash mid-write) is cut off when the log
    is opened again.
    """

    def __init__(self, directory: Path, name: str, *, max_bytes: int, max_age_s: float,
                 max_files: int, clock_ns: Callable[[], int] = time.time_ns) -> None:  # fmt: skip
        self.directory = Path(directory)
        self.name = name
        self.max_bytes = max_bytes
        self.max_age_ns = int(max_age_s * 1e9)
        self.max_files = max_files
        self._clock_ns = clock_ns
        self._file: BinaryIO | None = None
        self._size = 0
        self._created_ns = 0

    @property
    def path(self) -> Path:
        return self.directory / f"{self.name}.sgb"

    def files(self) -> list[Path]:
        """Every file of the log, oldest first (the active one last)."""
        return log_files(self.directory, self.name)

    def append(self, key: str, attributes: dict[str, str], payload: bytes, *,
               flush: bool = True) -> None:  # fmt: skip
        """Append one frame; ``flush``: hand it to the OS now (it then survives the process
        being killed), else with the next flushed append."""
        if self._file is None:
            self._open()
        elif self._size >= self.max_bytes or self._clock_ns() - self._created_ns >= self.max_age_ns:
            self._rotate()
        assert self._file is not None
        k = key.encode()
        a = json.dumps(attributes, separators=(",", ":")).encode() if attributes else b""
        frame = _FRAME.pack(len(payload), len(k), len(a)) + k + a + payload
        self._file.write(frame)
        if flush:
            self._file.flush()
        self._size += len(frame)

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path
        if path.exists():
            valid, created = _valid_length(path)
            if valid < path.stat().st_size:
                log.warning("publish_file_torn_tail", path=str(path), kept_bytes=valid)
                with open(path, "r+b") as f:
                    f.truncate(valid)
            if created is not None:
                self._file = open(path, "ab")  # noqa: SIM115 - kept open
                self._size, self._created_ns = valid, created
                return
            path.rename(self._next_rotated())  # not ours to append to: keep it aside
        self._create()

    def _create(self) -> None:
        self._created_ns = self._clock_ns()
        self._file = open(self.path, "wb")  # noqa: SIM115 - kept open
        self._file.write(FILE_HEADER.pack(FILE_MAGIC, self._created_ns))
        self._size = FILE_HEADER.size

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        self.path.rename(self._next_rotated())
        self._create()
        rotated = self.files()[:-1]
        for old in rotated[: max(0, len(rotated) - self.max_files)]:
            old.unlink(missing_ok=True)
            log.info("publish_file_expired", path=str(old))

    def _next_rotated(self) -> Path:
        numbers = [_rotation_number(p, self.name) for p in self.files()]
        n = max((x for x in numbers if x is not None), default=0) + 1
        return self.directory / f"{self.name}.{n:06d}.sgb"

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _rotation_number(path: Path, name: str) -> int | None:
    middle = path.name[len(name) + 1 : -len(".sgb")]
    return int(middle) if middle.isdigit() else None


def log_files(directory: Path, name: str) -> list[Path]:
    """The files of the `FrameLog` ``name`` in ``directory``, oldest first."""
    directory = Path(directory)
    rotated = sorted(
        (p for p in directory.glob(f"{name}.*.sgb") if _rotation_number(p, name) is not None),
        key=lambda p: _rotation_number(p, name) or 0,
    )
    active = directory / f"{name}.sgb"
    return [*rotated, *([active] if active.exists() else [])]


def _valid_length(path: Path) -> tuple[int, int | None]:
    """``(bytes up to the last whole frame, creation time or None if not a frame log)``."""
    data = path.read_bytes()
    if len(data) < FILE_HEADER.size or data[:4] != FILE_MAGIC:
        return len(data), None
    _, created = FILE_HEADER.unpack_from(data)
    end = FILE_HEADER.size
    for _key, _attrs, _payload, after in _frames(data):
        end = after
    return end, created


def _frames(data: bytes) -> Iterator[tuple[str, dict[str, str], bytes, int]]:
    i = FILE_HEADER.size
    n = len(data)
    while i + _FRAME.size <= n:
        length, key_len, attr_len = _FRAME.unpack_from(data, i)
        start = i + _FRAME.size
        end = start + key_len + attr_len + length
        if end > n:
            return  # torn: written when the process died
        key = data[start : start + key_len].decode()
        raw = data[start + key_len : start + key_len + attr_len]
        yield key, (json.loads(raw) if raw else {}), data[start + key_len + attr_len : end], end
        i = end


def read_frames(path: Path) -> Iterator[tuple[str, dict[str, str], bytes]]:
    """``(ordering_key, attributes, payload)`` of every frame of one file of a `FrameLog`."""
    data = Path(path).read_bytes()
    if data[:4] != FILE_MAGIC:
        raise ValueError(f"{path}: not a frame log (magic {data[:4]!r}, want {FILE_MAGIC!r})")
    for key, attributes, payload, _ in _frames(data):
        yield key, attributes, payload


def read_local_topic(directory: Path, topic: str) -> Iterator[tuple[str, bytes]]:
    """``(ordering_key, payload)`` of every batch a `LocalFileSink` published on ``topic``
    (or dead-lettered, with ``topic`` = ``deadletter-<topic>``), oldest first."""
    for path in log_files(directory, topic):
        for key, _, payload in read_frames(path):
            yield key, payload


def read_published(directory: Path, topic: str) -> Iterator[tuple[str, Any]]:
    """``(ordering_key, entry)`` of every ``TickBatch`` or ``SignalBatch`` entry of the batch
    messages a `LocalFileSink` published on the batch topic ``topic``, oldest first."""
    for key, message in read_local_topic(directory, topic):
        batch, content = batch_format.decode(message)
        entries = content.ticks if batch.record_type == batch_format.TICK_BATCH else content.signals
        for entry in entries:
            yield key, entry


class LocalFileSink:
    """The embedded default: each topic is a `FrameLog` in ``directory``; `read_local_topic`
    reads it back. It knows, per ordering key, the last batch sequence number it holds
    (the ``seq_last`` attribute), so a replay after a crash publishes nothing twice."""

    def __init__(self, directory: Path | None = None, *, max_file_bytes: int = 64 * 1024 * 1024,
                 max_file_age_s: float = 3600.0, max_files: int = 24) -> None:  # fmt: skip
        self.ephemeral = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="signal-publish-"))
            if directory is None
            else Path(directory)
        )
        ensure_directory(self.directory, "publish.local_dir")
        self._limits = {"max_bytes": max_file_bytes, "max_age_s": max_file_age_s,
                        "max_files": max_files}  # fmt: skip
        self._logs: dict[str, FrameLog] = {}
        self._delivered: dict[str, dict[str, int]] = {}  # topic -> key -> last seq held

    def log(self, topic: str) -> FrameLog:
        frame_log = self._logs.get(topic)
        if frame_log is None:
            frame_log = self._logs[topic] = FrameLog(self.directory, topic, **self._limits)
        return frame_log

    def path(self, topic: str) -> Path:
        return self.log(topic).path

    async def publish(self, topic: str, ordering_key: str, messages: Sequence[Message]) -> None:
        frame_log = self.log(topic)
        for i, (data, attributes) in enumerate(messages):
            frame_log.append(ordering_key, attributes, data, flush=i == len(messages) - 1)
        last = max((int(a.get("seq_last", 0)) for _, a in messages), default=0)
        if last:
            held = self._held(topic)
            held[ordering_key] = max(held.get(ordering_key, 0), last)

    def delivered_seq(self, topic: str, ordering_key: str) -> int:
        return self._held(topic).get(ordering_key, 0)

    def max_seq(self, topic: str) -> int:
        # Files are written in time order: the newest two hold the highest number (one of
        # them may have just been rotated in, empty).
        highest = 0
        for path in log_files(self.directory, topic)[-2:]:
            with contextlib.suppress(ValueError):
                for _, attributes, _ in read_frames(path):
                    highest = max(highest, int(attributes.get("seq_last", 0)))
        return highest

    def _held(self, topic: str) -> dict[str, int]:
        held = self._delivered.get(topic)
        if held is None:
            held = self._delivered[topic] = {}
            for path in log_files(self.directory, topic):
                with contextlib.suppress(ValueError):
                    for key, attributes, _ in read_frames(path):
                        if "seq_last" in attributes:
                            held[key] = max(held.get(key, 0), int(attributes["seq_last"]))
        return held

    async def close(self) -> None:
        for frame_log in self._logs.values():
            frame_log.close()
        self._logs.clear()
        if self.ephemeral:
            shutil.rmtree(self.directory, ignore_errors=True)


class PubSubSink:
    """Google Cloud Pub/Sub with message ordering. ``client`` is the true edge: a
    ``pubsub_v1.PublisherClient`` in production, a fake in tests. A batch's messages are
    published as consecutive calls under their ordering key, which the client keeps in order.

    Pub/Sub cannot say what it already holds: a replay after a crash may publish a batch
    again; its ``seq_first``/``seq_last`` attributes let a consumer drop it (per ordering
    key, sequence numbers only grow)."""

    def __init__(self, project: str, client: Any = None) -> None:
        self.project = project
        if client is None:  # pragma: no cover - needs Google credentials
            from google.cloud import pubsub_v1

            # A batch topic message is already a batch; a schema topic's batch is published
            # as consecutive calls, which the client sends as one request within 1 ms.
            client = pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(
                    max_messages=1000, max_bytes=PUBSUB_MAX_MESSAGE_BYTES, max_latency=0.001
                ),
                publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
            )
        self.client = client

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    async def publish(self, topic: str, ordering_key: str, messages: Sequence[Message]) -> None:
        from google.api_core import exceptions

        path = self.topic_path(topic)
        try:
            futures = [
                self.client.publish(path, data, ordering_key=ordering_key, **attributes)
                for data, attributes in messages
            ]
            await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except (exceptions.InvalidArgument, exceptions.FailedPrecondition) as exc:
            self.client.resume_publish(path, ordering_key)
            raise PermanentPublishError(f"{topic}: {exc}") from exc
        except Exception:
            # An ordered key pauses after a failure until resumed; we retry in order.
            self.client.resume_publish(path, ordering_key)
            raise

    def delivered_seq(self, topic: str, ordering_key: str) -> int:
        return 0

    def max_seq(self, topic: str) -> int:
        return 0

    async def close(self) -> None:
        stop = getattr(self.client, "stop", None)
        if stop is not None:
            await asyncio.to_thread(stop)


# --- the publisher ---------------------------------------------------------------------------


@dataclass
class _Batch:
    key: str
    records: list[bytes] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0
    opened_at: float = 0.0
    seqs: list[list[int]] = field(default_factory=list)  # [seq, records] runs, in order
    record_seqs: list[int] = field(default_factory=list)  # each record's (schema topics)

    def add(self, record: bytes, rows: int, seq: int) -> None:
        self.records.append(record)
        self.rows += rows
        self.nbytes += len(record)
        self.record_seqs.append(seq)
        if seq:
            if self.seqs and self.seqs[-1][0] == seq:
                self.seqs[-1][1] += 1
            else:
                self.seqs.append([seq, 1])


@dataclass
class _KeyQueue:
    backoff: Backoff
    sealed: deque[_Batch] = field(default_factory=deque)
    busy: bool = False  # a batch of this key is being sent
    backing_off: bool = False  # in the backoff heap until its retry time


class Publisher:
    """One topic's batching publisher; `start` it on the event loop, `close` to drain.

    Work per wake is proportional to what is due, not to the number of keys: open batches
    are kept in the order they opened (the due ones are at the front), keys with a batch
    ready to send wait in a queue, keys backing off in a heap by retry time, and a key with
    nothing left is forgotten."""

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
        """``framed``: a batch travels as one compressed ``PublishedBatch`` of the joined
        records, which are ``BatchPayload`` entries of ``record_type`` (`app.batch_format`);
        otherwise each record is one message as is (a schema topic's protobuf message, the
        records of a batch published together)."""
        if framed and not record_type:
            raise ValueError(f"{topic}: a batch topic's publisher needs its record_type")
        self.topic = topic
        self.framed = framed
        self.record_type = record_type
        self.config = config
        self.sink = sink
        self.metrics = metrics = metrics or default_metrics()
        self._clock = clock
        self._compressor = Compressor(config.codec, config.zstd_level)
        self._open: dict[str, _Batch] = {}  # in the order they opened
        self._keys: dict[str, _KeyQueue] = {}  # keys with sealed batches or a send in flight
        self._ready: deque[str] = deque()  # keys whose head batch can be sent now
        self._is_ready: set[str] = set()
        self._backing_off: list[tuple[float, str]] = []  # heap of (retry_at, key)
        self._backlog = 0  # rows
        self._reserved = 0
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._closing = False
        self._max_latency_s = config.max_latency_ms / 1000
        # Metric children resolved once: a label lookup per send adds up.
        self._backlog_gauge = metrics.publish_backlog.labels(topic)
        self._rejected = metrics.publish_rejected.labels(topic)
        self._failures = metrics.publish_failures.labels(topic)
        self._dead_lettered = metrics.publish_dead_lettered.labels(topic)
        self._batch_rows = metrics.publish_batch_messages.labels(topic)
        self._batch_bytes = metrics.publish_batch_bytes.labels(topic)
        self._raw_bytes = metrics.publish_bytes.labels(topic, "raw")
        self._compressed_bytes = metrics.publish_bytes.labels(topic, "compressed")
        self.delivered_messages = 0  # rows
        # (seq, records) of each batch once the sink has it (or it was dead-lettered)
        self.on_delivered: Callable[[int, int], None] = lambda _seq, _n: None
        self._dead_letters: FrameLog | None = None

    @property
    def backlog(self) -> int:
        """Rows accepted and not yet acknowledged (or dead-lettered)."""
        return self._backlog

    @property
    def tracked_keys(self) -> int:
        """Ordering keys with anything open, queued or in flight (idle keys are forgotten)."""
        return len(self._open.keys() | self._keys.keys())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._dispatch(), name=f"publish-{self.topic}"
            )

    def reserve(self, n: int) -> None:
        """Hold room for ``n`` rows a caller will submit after an await (so it can refuse
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
                f"reserved of {self.config.buffer_max_messages} rows); {n} refused"
            )

    def submit(self, key: str, record: bytes, *, rows: int = 1, reserved: bool = False,
               seq: int = 0, replay: bool = False) -> int:  # fmt: skip
        """Accept one record of ``rows`` rows for ``key`` or raise `PublishBackpressure`;
        returns the records accepted (0: a replay the sink holds). See `submit_many`."""
        return self._accept(key, ((record, rows, seq),), reserved, replay)

    def submit_many(self, key: str, records: Sequence[bytes], *, reserved: bool = False,
                    seq: int = 0, replay: bool = False) -> int:  # fmt: skip
        """Accept all of ``records`` (a row each) for ``key`` in order, or none
        (`PublishBackpressure`); returns how many were accepted.
        ``reserved``: the room was taken with `reserve` (then this cannot be refused).
        ``seq``: the batch they belong to, reported by `on_delivered` and carried in the
        published message's attributes. ``replay``: a spooled batch delivered again:
        skipped (0) when the sink already holds it under ``key``, never refused."""
        return self._accept(key, [(record, 1, seq) for record in records], reserved, replay)

    def submit_entries(self, key: str, entries: Sequence[tuple[bytes, int, int]], *,
                       reserved: bool = False, replay: bool = False) -> int:  # fmt: skip
        """`submit_many` for records of several rows and service batches: ``(record, rows,
        seq)`` each, in order (a replay's are one batch's)."""
        return self._accept(key, entries, reserved, replay)

    def _accept(self, key: str, entries: Sequence[tuple[bytes, int, int]], reserved: bool,
                replay: bool) -> int:  # fmt: skip
        if not entries:
            return 0
        rows = sum(n for _, n, _ in entries)
        last_seq = entries[-1][2]
        if replay and last_seq and self.sink.delivered_seq(self.topic, key) >= last_seq:
            return 0
        if reserved:
            self._reserved -= min(rows, self._reserved)
        elif not replay:
            self._check_room(rows)
        cfg = self.config
        batch = self._open.get(key)
        for record, n, seq in entries:
            if batch is None:
                batch = self._open[key] = _Batch(key, opened_at=self._clock())
            batch.add(record, n, seq)
            if batch.rows >= cfg.max_messages or batch.nbytes >= cfg.max_bytes:
                self._seal(batch)
                batch = None
        self._backlog += rows
        self._backlog_gauge.set(self._backlog)
        self._drained.clear()
        self._wake.set()
        return len(entries)

    def _queue(self, key: str) -> _KeyQueue:
        queue = self._keys.get(key)
        if queue is None:
            cfg = self.config
            backoff = Backoff(cfg.retry_initial_ms / 1000, cfg.retry_max_ms / 1000)
            queue = self._keys[key] = _KeyQueue(backoff)
        return queue

    def _seal(self, batch: _Batch) -> None:
        del self._open[batch.key]
        self._queue(batch.key).sealed.append(batch)
        self._make_ready(batch.key)

    def _make_ready(self, key: str) -> None:
        queue = self._keys[key]
        if key in self._is_ready or queue.busy or not queue.sealed or queue.backing_off:
            return  # already queued, sending, empty, or waiting in the backoff heap
        self._is_ready.add(key)
        self._ready.append(key)

    def _seal_due(self, now: float) -> float:
        """Seal batches past their latency bound (the oldest are first); seconds until the
        next one is due."""
        while self._open:
            batch = next(iter(self._open.values()))
            due = batch.opened_at + self._max_latency_s
            if due > now and not self._closing:
                return due - now
            self._seal(batch)
        return float("inf")

    async def _dispatch(self) -> None:
        while True:
            now = self._clock()
            wait = self._seal_due(now)
            while self._backing_off and self._backing_off[0][0] <= now:
                _, key = heapq.heappop(self._backing_off)
                queue = self._keys.get(key)
                if queue is not None:
                    queue.backing_off = False
                    self._make_ready(key)
            if self._backing_off:
                wait = min(wait, self._backing_off[0][0] - now)
            while self._ready and self._in_flight < self.config.max_in_flight:
                key = self._ready.popleft()
                self._is_ready.discard(key)
                queue = self._keys[key]
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
            with contextlib.suppress(TimeoutError):  # no task per wait, as wait_for makes
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _messages(self, batch: _Batch) -> list[Message]:
        """What the sink publishes for ``batch``: one compressed PublishedBatch, or each
        record as is (a schema topic), each with its attributes."""
        if self.framed:
            first, last = (batch.seqs[0][0], batch.seqs[-1][0]) if batch.seqs else (0, 0)
            data = batch_format.envelope(b"".join(batch.records), self._compressor,
                                         self.record_type, batch.rows, first, last)  # fmt: skip
            return [(data, batch_format.attributes(self.record_type, self._compressor.codec,
                                                   batch.rows, first, last))]  # fmt: skip
        return [
            (record, {"seq_first": str(seq), "seq_last": str(seq)} if seq else {})
            for record, seq in zip(batch.records, batch.record_seqs, strict=True)
        ]

    async def _send(self, key: str, queue: _KeyQueue) -> None:
        batch = queue.sealed[0]
        failed = False
        messages: list[Message] = []
        try:
            messages = self._messages(batch)
            await self.sink.publish(self.topic, key, messages)
        except PermanentPublishError as exc:
            self._dead_letter(batch, messages, exc)
            self._done(queue, batch)
        except Exception as exc:
            failed = True
            delay_s = queue.backoff.failed()
            queue.backing_off = True
            heapq.heappush(self._backing_off, (self._clock() + delay_s, key))
            self._failures.inc()
            log.warning("publish_failed", topic=self.topic, key=key, rows=batch.rows,
                        attempt=queue.backoff.failures, retry_in_ms=round(delay_s * 1000, 1),
                        error=repr(exc))  # fmt: skip
        else:
            sent = sum(len(data) for data, _ in messages)
            self._batch_rows.observe(batch.rows)
            self._batch_bytes.observe(sent)
            self._raw_bytes.inc(batch.nbytes)
            self._compressed_bytes.inc(sent)
            self.delivered_messages += batch.rows
            self._done(queue, batch)
        finally:
            queue.busy = False
            self._in_flight -= 1
            if not failed:
                if queue.sealed:
                    self._make_ready(key)
                elif self._keys.get(key) is queue:
                    del self._keys[key]  # idle: forget the key
            self._wake.set()

    def _done(self, queue: _KeyQueue, batch: _Batch) -> None:
        queue.sealed.popleft()
        queue.backoff.succeeded()
        self._backlog -= batch.rows
        self._backlog_gauge.set(self._backlog)
        for seq, n in batch.seqs:
            self.on_delivered(seq, n)

    def _dead_letter(self, batch: _Batch, messages: list[Message], exc: Exception) -> None:
        if self._dead_letters is None:
            cfg = self.config
            self._dead_letters = FrameLog(
                cfg.dead_letter_dir, f"deadletter-{self.topic}",
                max_bytes=cfg.local_max_file_bytes, max_age_s=cfg.local_max_file_age_s,
                max_files=cfg.local_max_files,
            )  # fmt: skip
        for data, attrs in messages or self._messages(batch):
            self._dead_letters.append(batch.key, attrs, data)
        self._dead_lettered.inc(batch.rows)
        log.error("publish_dead_lettered", topic=self.topic, key=batch.key, rows=batch.rows,
                  path=str(self._dead_letters.path), error=repr(exc))  # fmt: skip

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
        if self._dead_letters is not None:
            self._dead_letters.close()
        if close_sink:
            await self.sink.close()


def build_sink(config: PublishConfig, client: Any = None) -> PublishSink:
    if config.sink == "pubsub":
        assert config.project is not None
        return PubSubSink(config.project, client)
    return LocalFileSink(config.local_dir, max_file_bytes=config.local_max_file_bytes,
                         max_file_age_s=config.local_max_file_age_s,
                         max_files=config.local_max_files)  # fmt: skip
