"""The spool: the durable, append-only local log of accepted batches that an ack waits for.

Each accepted batch is one record (its sequence number and the `SpoolRecord` message of
``app/proto/signals.proto``), appended to the current segment file and fsynced before the
batch is acknowledged. Appends made while a write is in progress join the next write:
one ``write`` and one ``fsync`` per group (group commit), so the fsync cost is shared by
every batch waiting on it. The write goes to the page cache on the event loop; the fsync
runs on a thread (the loop serves other calls meanwhile, whose records join the next
group). A lone record, while the disk answers in well under a millisecond, is synced on
the loop instead, and one appended with nothing else in flight is made durable inside
`append` itself (one client's ack then waits for no turn of the loop). After the fsync,
``on_durable`` is called for each record of the group in sequence order (the data path
delivers it to the sinks), then the appenders' futures resolve.

On disk, a directory (``SpoolConfig.dir``; by default a fixed path under the platform's
state directory, so a restart with the same configuration finds it) holds:

* ``spool-<first seq>.log`` segments: frames of ``u32 length, u32 CRC-32, u64 seq`` (little
  endian; the CRC covers the seq's 8 bytes and the message) followed by the message. A
  torn frame at the end of the last segment (a crash mid-write) is cut off on open;
  nothing before it was acknowledged. The segment being written holds zeros ahead of its
  records (`ZERO_AHEAD_BYTES`), cut off when it is closed, or on open after a crash.
* ``checkpoint.json``: ``{"delivered_seq": D, "last_seq": L}``: every record up to D has
  reached every sink. It is rewritten (atomically) as deliveries complete; a stale
  checkpoint only means more is replayed, which the sinks recognise (they dedupe by seq).
* ``lock``: held (``flock``) by the one process using the directory.

On open, every record after the checkpoint's ``delivered_seq`` is handed back for
delivery again, and every record still on disk for the idempotency index. A segment is
deleted once all its records are delivered and it is older than ``retain_s`` (so a retry
after a restart still gets its original ack), or sooner when the spool is over
``max_bytes``. For sharding: records are per batch and ordered by seq, so the ticks a
shard applied since its last state snapshot can be replayed from here once the snapshot
records its seq (`retain_after`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import struct
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from app.directories import ensure_directory
from app.settings.spool import SpoolConfig
from app.telemetry import Metrics, default_metrics

log = structlog.get_logger("app.spool")

FRAME = struct.Struct("<IIQ")  # message length, CRC-32 of (seq bytes + message), seq
_SEQ = struct.Struct("<Q")
SEGMENT_PREFIX = "spool-"
SEGMENT_SUFFIX = ".log"
CHECKPOINT = "checkpoint.json"
LOCK = "lock"
MAX_RECORD_BYTES = 256 * 1024 * 1024
# Zeros written ahead of the records, this much at a time: a record then overwrites blocks
# already written, so its fdatasync flushes data only. An append that grows the file must
# commit the new size through ext4's journal, and in its ordered mode the commit first
# flushes every other file's pending writes (the publisher's, DuckDB's): 120-140 us per sync
# instead of 175-245 on this project's disks.
ZERO_AHEAD_BYTES = 1 << 20
_ZEROS = memoryview(bytes(ZERO_AHEAD_BYTES))
INLINE_FSYNC_S = 0.0005  # a lone record's fdatasync faster than this runs on the loop


def state_dir() -> Path:
    """The platform's state directory (XDG): $XDG_STATE_HOME, else ~/.local/state."""
    configured = os.environ.get("XDG_STATE_HOME")
    return Path(configured) if configured else Path.home() / ".local" / "state"


def default_spool_dir(port: int) -> Path:
    """The embedded default: one fixed directory per listening port."""
    return state_dir() / "signal-platform" / "spool" / f"port-{port}"


class SpoolError(RuntimeError):
    """Base of the spool's errors."""


class SpoolFull(SpoolError):
    """The spool holds ``max_bytes`` of undelivered records: refuse the batch (back-pressure)."""


class SpoolFailed(SpoolError):
    """A write or fsync failed: nothing more can be made durable, so nothing is acknowledged."""


class SpoolLocked(SpoolError):
    """Another process uses the spool directory."""


@dataclass
class _Segment:
    path: Path
    first_seq: int
    last_seq: int = 0
    size: int = 0
    written_at: float = 0.0  # wall clock of the last write


@dataclass
class _Pending:
    seq: int
    frame: bytes
    context: Any
    future: asyncio.Future[None]


@dataclass
class Recovery:
    """What `Spool.open` found: records still on disk, in seq order."""

    records: list[tuple[int, bytes]] = field(default_factory=list)
    delivered_seq: int = 0
    last_seq: int = 0
    truncated_bytes: int = 0

    @property
    def undelivered(self) -> list[tuple[int, bytes]]:
        return [(seq, payload) for seq, payload in self.records if seq > self.delivered_seq]


def encode_frame(seq: int, message: bytes) -> bytes:
    if len(message) > MAX_RECORD_BYTES:
        raise ValueError(f"spool record of {len(message)} bytes: at most {MAX_RECORD_BYTES}")
    seq_bytes = _SEQ.pack(seq)
    crc = zlib.crc32(message, zlib.crc32(seq_bytes))
    return FRAME.pack(len(message), crc, seq) + message


def decode_frames(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """``(records, valid_length)``: the frames of a segment up to the first torn or corrupt one."""
    records: list[tuple[int, bytes]] = []
    i, n = 0, len(data)
    while i + FRAME.size <= n:
        length, crc, seq = FRAME.unpack_from(data, i)
        start = i + FRAME.size
        end = start + length
        if length > MAX_RECORD_BYTES or end > n:
            break
        message = data[start:end]
        if zlib.crc32(message, zlib.crc32(_SEQ.pack(seq))) != crc:
            break
        records.append((seq, message))
        i = end
    return records, i


class Spool:
    """The durable log; `open` it (sync, before serving), then `append` from the event loop."""

    def __init__(
        self,
        config: SpoolConfig,
        directory: Path,
        *,
        on_durable: Callable[[int, Any], None] = lambda _seq, _ctx: None,
        on_failed: Callable[[int, Any, SpoolFailed], None] = lambda _seq, _ctx, _exc: None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.directory = Path(directory)
        self.on_durable = on_durable
        self.on_failed = on_failed  # a record that will never be durable (the spool failed)
        self.metrics = metrics or default_metrics()
        self._clock = clock
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._zeroed = 0  # the segment being written holds zeros up to here
        self._lock_fd: int | None = None
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._last_appended = 0
        self._last_durable = 0
        self._delivered_seq = 0
        self._checkpointed = (0, 0)
        self._retain_after: int | None = None
        self._failed: SpoolFailed | None = None
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._closing = False
        self._busy = False  # the writer has a group on its way to disk
        self._synced_now = False  # a record was made durable in `append` this loop turn
        self._fsync_s = 0.0  # how long fdatasync takes here, lately (`_disk_is_fast`)
        self.groups = 0  # fsynced groups so far (the bench divides records by it)

    # --- opening and recovery ------------------------------------------------------------

    def open(self) -> Recovery:
        """Lock the directory, cut a torn tail, and return what is on disk."""
        ensure_directory(self.directory, "spool.dir")
        self._lock()
        checkpoint = self._read_checkpoint()
        recovery = Recovery(delivered_seq=checkpoint.get("delivered_seq", 0))
        paths = sorted(self.directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"), key=_first_seq_of)
        for index, path in enumerate(paths):
            data = path.read_bytes()
            records, valid = decode_frames(data)
            if valid < len(data):
                if data.count(0, valid) < len(data) - valid:  # not just the zeros ahead
                    last = index == len(paths) - 1
                    log.warning("spool_torn_tail" if last else "spool_corrupt_segment",
                                path=str(path), kept_bytes=valid,
                                dropped_bytes=len(data) - valid)  # fmt: skip
                    recovery.truncated_bytes += len(data) - valid
                with open(path, "r+b") as f:
                    f.truncate(valid)
                    os.fsync(f.fileno())
            segment = _Segment(path, _first_seq_of(path), size=valid,
                               written_at=path.stat().st_mtime)  # fmt: skip
            if records:
                segment.last_seq = records[-1][0]
            self._segments.append(segment)
            recovery.records.extend(records)
        recovery.records.sort(key=lambda r: r[0])
        recovery.last_seq = max(
            checkpoint.get("last_seq", 0), recovery.records[-1][0] if recovery.records else 0
        )
        self._last_appended = self._last_durable = recovery.last_seq
        self._delivered_seq = recovery.delivered_seq
        self._checkpointed = (recovery.delivered_seq, recovery.last_seq)
        self._update_bytes_gauge()
        log.info("spool_opened", dir=str(self.directory), records=len(recovery.records),
                 undelivered=len(recovery.undelivered), last_seq=recovery.last_seq)  # fmt: skip
        return recovery

    def _lock(self) -> None:
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise SpoolLocked(
                    f"spool.dir = {str(self.directory)!r}: in use by another process (pid "
                    f"{holder}); give each service its own spool directory"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _read_checkpoint(self) -> dict[str, int]:
        path = self.directory / CHECKPOINT
        try:
            raw = json.loads(path.read_text())
            return {k: int(raw[k]) for k in ("delivered_seq", "last_seq") if k in raw}
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, KeyError) as exc:  # a torn checkpoint: replay it all
            log.warning("spool_checkpoint_unreadable", path=str(path), error=repr(exc))
            return {}

    # --- appending -----------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._last_appended

    @property
    def delivered_seq(self) -> int:
        return self._delivered_seq

    @property
    def nbytes(self) -> int:
        return sum(s.size for s in self._segments) + self._pending_bytes

    def check_room(self, nbytes: int) -> None:
        """Raise `SpoolFailed` or `SpoolFull` when a record of ``nbytes`` cannot be taken now."""
        if self._failed is not None:
            raise self._failed
        if self.nbytes + nbytes <= self.config.max_bytes:
            return
        self._delete_segments(force=True)
        if self.nbytes + nbytes > self.config.max_bytes:
            raise SpoolFull(
                f"spool full: {self.nbytes} bytes of undelivered batches (spool.max_bytes = "
                f"{self.config.max_bytes}); retry the batch later"
            )

    def append(self, seq: int, message: bytes, context: Any = None) -> asyncio.Future[None]:
        """Queue record ``seq`` (the next in order), or make it durable now when nothing else
        is in flight; the future resolves once it is durable, right after
        ``on_durable(seq, context)`` ran."""
        if self._failed is not None:
            raise self._failed
        if self._closing:
            raise SpoolError("the spool is closing: no more records")
        if seq <= self._last_appended:
            raise ValueError(f"seq {seq}: records are appended in order, last was "
                             f"{self._last_appended}")  # fmt: skip
        self._start()
        frame = encode_frame(seq, message)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = _Pending(seq, frame, context, future)
        self._last_appended = seq
        if not (self._busy or self._pending or self._synced_now) and self._disk_is_fast:
            # Nothing else in flight: durable now, before the caller awaits (one client's
            # ack then goes out without waiting for the writer's turn on the loop). Records
            # appended later in this turn of the loop go to the writer as one group.
            self._synced_now = True
            asyncio.get_running_loop().call_soon(self._turn_over)
            self._commit_now([item])
            return future
        self._pending.append(item)
        self._pending_bytes += len(frame)
        assert self._wake is not None
        self._wake.set()
        return future

    def _turn_over(self) -> None:
        self._synced_now = False

    def _start(self) -> None:
        if self._writer is None:
            loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._writer = loop.create_task(self._write_loop(), name="spool-writer")
            self._ticker = loop.create_task(self._checkpoint_loop(), name="spool-checkpoint")

    async def _write_loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            group, self._pending = self._pending, []
            nbytes = sum(len(p.frame) for p in group)
            self._busy = True
            try:
                if len(group) == 1 and self._disk_is_fast:  # a thread hop would add latency
                    self._commit_now(group)
                    continue
                started = time.perf_counter()
                try:
                    fd = self._write_group(group)  # into the page cache: no thread hop needed
                    if self.config.fsync:  # on a thread: the loop serves calls meanwhile
                        synced = time.perf_counter()
                        await loop.run_in_executor(self._executor, os.fdatasync, fd)
                        self._took(time.perf_counter() - synced)
                except OSError as exc:
                    self._fail(exc, group)
                else:
                    self._durable(group, started)
            finally:
                self._busy = False
                self._pending_bytes -= nbytes

    def _commit_now(self, group: list[_Pending]) -> None:
        """Write and sync ``group`` on the loop, then hand it on (or fail the spool)."""
        started = time.perf_counter()
        try:
            fd = self._write_group(group)
            if self.config.fsync:
                self._fdatasync(fd)
        except OSError as exc:
            self._fail(exc, group)
        else:
            self._durable(group, started)

    def _durable(self, group: list[_Pending], started: float) -> None:
        """A group is on disk: hand each record on (``on_durable``), then resolve its future."""
        self.groups += 1
        self.metrics.spool_commit_latency.observe(time.perf_counter() - started)
        self.metrics.spool_group_records.observe(len(group))
        self._last_durable = group[-1].seq
        for item in group:
            try:
                self.on_durable(item.seq, item.context)
            except Exception:  # a delivery bug must not strand the acks of durable records
                log.exception("spool_on_durable_failed", seq=item.seq)
        for item in group:
            if not item.future.done():
                item.future.set_result(None)
        self._update_bytes_gauge()

    @property
    def _disk_is_fast(self) -> bool:
        """Whether recent syncs took well under a millisecond: a lone record is then synced
        on the loop, since a thread hop would add to its client's latency. Several records,
        or a slow disk, go to the thread, so the loop serves other calls meanwhile (their
        records share the next group) and a slow disk never stalls it for long."""
        return self._fsync_s < INLINE_FSYNC_S

    def _fdatasync(self, fd: int) -> None:
        """``fdatasync`` on the loop, timed."""
        started = time.perf_counter()
        os.fdatasync(fd)
        self._took(time.perf_counter() - started)

    def _took(self, seconds: float) -> None:
        self._fsync_s += (seconds - self._fsync_s) / 8  # a moving average of recent syncs

    def _fail(self, exc: OSError, group: list[_Pending]) -> None:
        self._failed = SpoolFailed(f"spool write failed in {self.directory}: {exc}")
        log.error("spool_failed", dir=str(self.directory), error=repr(exc))
        for item in group + self._pending:
            try:
                self.on_failed(item.seq, item.context, self._failed)
            except Exception:  # a caller's bug must not keep the other records waiting
                log.exception("spool_on_failed_failed", seq=item.seq)
            if not item.future.done():
                item.future.set_exception(self._failed)
                item.future.exception()  # retrieved: the hook is how callers learn of it
        self._pending = []

    @property
    def failed(self) -> SpoolFailed | None:
        return self._failed

    def _write_group(self, group: list[_Pending]) -> int:
        """Write the group's frames (rolling to a new segment when the current one is full);
        returns the file descriptor to fsync."""
        data = b"".join(p.frame for p in group)
        if self._fd is None or (
            self._segments[-1].size
            and self._segments[-1].size + len(data) > self.config.segment_bytes
        ):
            self._roll(group[0].seq)
        assert self._fd is not None
        segment = self._segments[-1]
        end = segment.size + len(data)
        if self.config.fsync and end > self._zeroed:
            self._zero_ahead(end)
        _pwrite_all(self._fd, data, segment.size)
        segment.size = end
        segment.last_seq = group[-1].seq
        segment.written_at = self._clock()
        return self._fd

    def _zero_ahead(self, end: int) -> None:
        """Zeros from the written end to ``ZERO_AHEAD_BYTES`` past ``end`` (see there)."""
        assert self._fd is not None
        target = end + ZERO_AHEAD_BYTES
        while self._zeroed < target:
            chunk = min(target - self._zeroed, ZERO_AHEAD_BYTES)
            _pwrite_all(self._fd, _ZEROS[:chunk], self._zeroed)
            self._zeroed += chunk

    def _close_segment(self) -> None:
        """Close the segment being written, cut to its records (the zeros ahead go)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._segments[-1].size)
            os.close(self._fd)
            self._fd = None

    def _roll(self, first_seq: int) -> None:
        self._close_segment()
        path = self.directory / f"{SEGMENT_PREFIX}{first_seq:020d}{SEGMENT_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        self._zeroed = 0
        if self.config.fsync:  # the new file's directory entry must survive a crash too
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._segments.append(_Segment(path, first_seq, written_at=self._clock()))

    # --- delivery ------------------------------------------------------------------------

    def delivered_through(self, seq: int) -> None:
        """Every record up to ``seq`` reached every sink; the checkpoint follows."""
        self._delivered_seq = max(self._delivered_seq, seq)

    def retain_after(self, seq: int | None) -> None:
        """Keep every record after ``seq`` whatever its age (a shard's last state snapshot);
        None: no such floor."""
        self._retain_after = seq

    async def _checkpoint_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.config.checkpoint_interval_s)
            await self.checkpoint()

    async def checkpoint(self) -> None:
        """Persist the watermark and delete what no longer needs keeping."""
        state = (self._delivered_seq, self._last_durable)
        if state != self._checkpointed:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._write_checkpoint, state
            )
            self._checkpointed = state
        self._delete_segments(force=False)

    def _write_checkpoint(self, state: tuple[int, int]) -> None:
        path = self.directory / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"delivered_seq": state[0], "last_seq": state[1]}))
        os.replace(tmp, path)

    def _delete_segments(self, *, force: bool) -> None:
        """Delete fully delivered segments past retention (``force``: whatever their age),
        oldest first; never the segment being written."""
        keep_after = self._delivered_seq
        if self._retain_after is not None:
            keep_after = min(keep_after, self._retain_after)
        cutoff = self._clock() - self.config.retain_s
        while len(self._segments) > 1:
            oldest = self._segments[0]
            if oldest.last_seq > keep_after or (not force and oldest.written_at > cutoff):
                break
            with contextlib.suppress(FileNotFoundError):
                oldest.path.unlink()
            self._segments.pop(0)
            log.info("spool_segment_deleted", path=str(oldest.path), last_seq=oldest.last_seq)
        self._update_bytes_gauge()

    def _update_bytes_gauge(self) -> None:
        self.metrics.spool_bytes.set(self.nbytes)

    # --- shutdown ------------------------------------------------------------------------

    async def drain(self) -> None:
        """Make everything appended durable (and handed to ``on_durable``); take no more."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._writer is not None:
            await self._writer
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    async def close(self) -> None:
        """Drain, write the checkpoint, release the directory."""
        await self.drain()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                await self.checkpoint()
        self._executor.shutdown(wait=True)
        self._close_segment()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _first_seq_of(path: Path) -> int:
    try:
        return int(path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)])
    except ValueError:
        return 0
