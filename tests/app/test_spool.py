"""The spool on a real directory: group commit with fsync, torn tails, replay, retention, locks."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from app.settings.spool import SpoolConfig
from app.spool import (
    FRAME,
    ZERO_AHEAD_BYTES,
    Spool,
    SpoolFailed,
    SpoolFull,
    SpoolLocked,
    decode_frames,
    default_spool_dir,
    encode_frame,
)
from app.telemetry import Metrics
from tests.app.conftest import run


def spool(directory: Path, **config: Any) -> Spool:
    return Spool(SpoolConfig(**config), directory, metrics=Metrics(CollectorRegistry()))


def test_frames_round_trip_and_a_torn_or_corrupt_frame_ends_them() -> None:
    data = encode_frame(1, b"first") + encode_frame(2, b"") + encode_frame(7, b"x" * 300)
    assert decode_frames(data) == ([(1, b"first"), (2, b""), (7, b"x" * 300)], len(data))
    records, valid = decode_frames(data[:-1])  # the last write was cut short
    assert records == [(1, b"first"), (2, b"")] and valid == len(data) - FRAME.size - 300
    flipped = bytearray(data)
    flipped[FRAME.size + 1] ^= 0xFF  # a bit of the first message
    assert decode_frames(bytes(flipped)) == ([], 0)
    wrong_seq = data[:8] + (9).to_bytes(8, "little") + data[16:]
    assert decode_frames(wrong_seq)[0] == []  # the CRC covers the sequence number too


def test_concurrent_appends_share_one_fsync_and_resolve_once_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real = os.fdatasync

    def counted(fd: int) -> None:
        syncs.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counted)
    delivered: list[int] = []

    async def scenario() -> None:
        s = spool(tmp_path)
        s.on_durable = lambda seq, ctx: delivered.append(seq)
        assert s.open().records == []
        futures = [s.append(seq, f"batch {seq}".encode()) for seq in range(1, 101)]
        # The first, with nothing else in flight, was made durable at once (one fsync); the
        # rest wait for their group's fsync: none is durable before it.
        assert futures[0].done() and len(syncs) == 1 and delivered == [1]
        assert not any(f.done() for f in futures[1:])
        await asyncio.gather(*futures)
        assert s.groups < 100 and len(syncs) == s.groups  # one fsync per group, not per batch
        with pytest.raises(ValueError, match="in order"):
            s.append(100, b"again")
        await s.close()

    run(scenario())
    assert delivered == list(range(1, 101))  # handed on in sequence order, once each
    (segment,) = tmp_path.glob("spool-*.log")
    records, _ = decode_frames(segment.read_bytes())
    assert [seq for seq, _ in records] == list(range(1, 101))


def test_a_failed_fsync_makes_nothing_durable_and_names_every_record_it_strands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync the disk refuses (EIO) fails the spool: no record of the group or after it is
    handed on as durable, each is named to ``on_failed`` once, and later appends are refused."""
    import errno

    def refused(_fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    durable: list[int] = []
    failed: list[tuple[int, Any, str]] = []

    async def scenario() -> None:
        s = spool(tmp_path)
        s.on_durable = lambda seq, ctx: durable.append(seq)
        s.on_failed = lambda seq, ctx, exc: failed.append((seq, ctx, str(exc)))
        s.open()
        assert await s.append(1, b"fine") is None  # durable at once: nothing in flight
        monkeypatch.setattr(os, "fdatasync", refused)
        futures = [s.append(seq, b"r%d" % seq, f"ctx-{seq}") for seq in range(2, 6)]
        for future in futures:
            with pytest.raises(SpoolFailed, match=r"spool write failed in .*Input/output error"):
                await future
        with pytest.raises(SpoolFailed):
            s.append(6, b"later")
        with pytest.raises(SpoolFailed):
            s.check_room(10)

    run(scenario())
    assert durable == [1]
    assert [(seq, ctx) for seq, ctx, _ in failed] == [(n, f"ctx-{n}") for n in range(2, 6)]

    async def alone() -> None:  # the record made durable inside `append` fails the same way
        s = spool(tmp_path / "alone")
        s.on_failed = lambda seq, ctx, exc: failed.append((seq, ctx, str(exc)))
        s.open()
        future = s.append(1, b"lone", "ctx-alone")
        assert future.done()
        with pytest.raises(SpoolFailed):
            await future

    run(alone())
    assert failed[-1][:2] == (1, "ctx-alone") and durable == [1]


def test_undelivered_records_come_back_after_a_crash_and_a_torn_tail_is_cut(tmp_path: Path) -> None:
    async def first_life() -> None:
        s = spool(tmp_path, checkpoint_interval_s=0.01)
        s.open()
        await asyncio.gather(*(s.append(seq, b"r%d" % seq) for seq in range(1, 11)))
        s.delivered_through(6)
        await s.checkpoint()
        # A crash: no close; the last frame is torn as a kill mid-write leaves it (after the
        # records, before the zeros written ahead of them), and the dead process's lock goes
        # with it.
        assert s._fd is not None and s._lock_fd is not None
        os.pwrite(s._fd, encode_frame(11, b"never acknowledged")[:-3], s._segments[-1].size)
        os.close(s._lock_fd)

    run(first_life())
    assert json.loads((tmp_path / "checkpoint.json").read_text()) == {
        "delivered_seq": 6,
        "last_seq": 10,
    }

    async def second_life() -> None:
        s = spool(tmp_path)
        recovery = s.open()
        assert recovery.truncated_bytes > 0
        assert [seq for seq, _ in recovery.records] == list(range(1, 11))
        assert recovery.undelivered == [(seq, b"r%d" % seq) for seq in range(7, 11)]
        assert recovery.last_seq == s.last_seq == 10
        await s.append(11, b"after the restart")
        await s.close()

    run(second_life())


def test_records_overwrite_zeros_written_ahead_and_a_restart_cuts_them_quietly(
    tmp_path: Path,
) -> None:
    """The segment being written holds zeros ahead of its records (an fdatasync then
    flushes data only); after a crash they are cut off on open without counting as torn."""
    frames = sum(len(encode_frame(seq, b"r%d" % seq)) for seq in range(1, 21))

    async def first_life() -> None:
        s = spool(tmp_path)
        s.open()
        await asyncio.gather(*(s.append(seq, b"r%d" % seq) for seq in range(1, 21)))
        (segment,) = tmp_path.glob("spool-*.log")
        data = segment.read_bytes()
        assert len(data) >= ZERO_AHEAD_BYTES > frames and not any(data[frames:])  # zeros ahead
        assert decode_frames(data)[1] == frames
        assert s._lock_fd is not None
        os.close(s._lock_fd)  # a crash: no close

    run(first_life())

    async def second_life() -> None:
        s = spool(tmp_path)
        recovery = s.open()
        assert recovery.truncated_bytes == 0  # nothing torn
        assert [seq for seq, _ in recovery.records] == list(range(1, 21))
        (segment,) = tmp_path.glob("spool-*.log")
        assert segment.stat().st_size == frames  # the zeros are gone
        await s.append(21, b"after the restart")
        await s.close()

    run(second_life())
    sizes = sorted(p.stat().st_size for p in tmp_path.glob("spool-*.log"))
    assert sizes == sorted([frames, len(encode_frame(21, b"after the restart"))])  # closed: cut


def test_delivered_segments_go_after_retention_and_at_once_when_full(tmp_path: Path) -> None:
    clock = [1000.0]

    async def scenario() -> None:
        s = Spool(SpoolConfig(segment_bytes=4096, retain_s=60, max_bytes=1024 * 1024), tmp_path,
                  metrics=Metrics(CollectorRegistry()), clock=lambda: clock[0])  # fmt: skip
        s.open()
        for seq in range(1, 41):
            await s.append(seq, b"x" * 1000)  # a segment holds about four records
        segments = sorted(tmp_path.glob("spool-*.log"))
        assert len(segments) >= 8
        s.delivered_through(20)
        await s.checkpoint()
        assert sorted(tmp_path.glob("spool-*.log")) == segments  # delivered, but retained
        clock[0] += 61
        await s.checkpoint()
        left = sorted(tmp_path.glob("spool-*.log"))
        assert left and len(left) < len(segments)
        first_kept = int(left[0].name[6:-4])
        assert first_kept <= 21  # nothing undelivered is deleted
        s.retain_after(10)  # a shard snapshot: keep what came after it, whatever its age
        assert s.nbytes > 0
        await s.close()

    run(scenario())


def test_a_full_spool_refuses_and_only_undelivered_records_count(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = spool(tmp_path, segment_bytes=4096, max_bytes=1024 * 1024, retain_s=3600)
        s.open()
        seq = 0
        with pytest.raises(SpoolFull, match=r"spool full: .*\(spool\.max_bytes = 1048576\)"):
            while True:
                s.check_room(10_000)
                seq += 1
                await s.append(seq, b"y" * 10_000)
        assert 90 <= seq <= 105
        s.delivered_through(seq)  # delivered: room again, retention or not
        s.check_room(10_000)
        await s.close()

    run(scenario())


def test_one_process_per_directory(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = spool(tmp_path)
        first.open()
        with pytest.raises(SpoolLocked, match=f"pid {os.getpid()}"):
            spool(tmp_path).open()
        await first.close()
        second = spool(tmp_path)  # released at close
        second.open()
        await second.close()

    run(scenario())


def test_the_default_directory_is_fixed_per_port_under_the_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_spool_dir(50051) == tmp_path / "signal-platform" / "spool" / "port-50051"
    assert default_spool_dir(50051) == default_spool_dir(50051)
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_spool_dir(7) == Path.home() / ".local/state/signal-platform/spool/port-7"


def test_a_spool_dir_that_cannot_be_a_directory_is_one_error_naming_the_setting(tmp_path: Path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(OSError, match=rf"^spool.dir = '{blocked}': a file is in the way"):
        spool(blocked).open()
    with pytest.raises(OSError, match=rf"^spool.dir = '{blocked / 'sub'}': cannot create"):
        spool(blocked / "sub").open()
