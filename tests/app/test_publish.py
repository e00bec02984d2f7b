"""Publishing: batch bounds, the codec header, ordering, retries, back-pressure, the sinks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.api_core import exceptions
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from app.publish import (
    CODEC_IDS,
    HEADER,
    Compressor,
    FrameLog,
    LocalFileSink,
    PermanentPublishError,
    PublishBackpressure,
    PublishConfig,
    Publisher,
    PubSubSink,
    build_sink,
    decode_batch,
    encode_batch,
    log_files,
    read_frames,
    read_local_topic,
)
from app.synthetic import synthetic_ticks
from app.telemetry import Metrics
from tests.app.conftest import run


class RecordingSink:
    """Keeps every batch; fails the calls whose number is in ``fail_calls`` (transiently),
    or every call while ``down``, or permanently for keys in ``refuse_keys``."""

    def __init__(self, fail_calls: set[int] | None = None) -> None:
        self.batches: list[tuple[str, str, bytes, dict[str, str], float]] = []
        self.calls = 0
        self.fail_calls = fail_calls or set()
        self.down = False
        self.refuse_keys: set[str] = set()

    async def publish(
        self, topic: str, key: str, payload: bytes, attributes: dict[str, str]
    ) -> None:
        self.calls += 1
        call = self.calls
        await asyncio.sleep(0)
        if self.down or call in self.fail_calls:
            raise ConnectionError(f"sink unavailable (call {call}, on purpose)")
        if key in self.refuse_keys:
            raise PermanentPublishError("message too large (on purpose)")
        self.batches.append((topic, key, payload, dict(attributes), time.monotonic()))

    def delivered_seq(self, topic: str, ordering_key: str) -> int:
        return 0

    def max_seq(self, topic: str) -> int:
        return 0

    async def close(self) -> None:
        pass

    def records(self, key: str | None = None) -> list[bytes]:
        out: list[bytes] = []
        for _, k, payload, _, _ in self.batches:
            if key is None or k == key:
                out.extend(decode_batch(payload)[1])
        return out


def config(**kw: Any) -> PublishConfig:
    base: dict[str, Any] = {"max_messages": 10, "max_bytes": 10_000, "max_latency_ms": 30,
                            "buffer_max_messages": 1000, "retry_initial_ms": 5,
                            "retry_max_ms": 20}  # fmt: skip
    base.update(kw)
    return PublishConfig(**base)


def publisher(sink: Any, **kw: Any) -> Publisher:
    return Publisher("ticks", config(**kw), sink, Metrics(CollectorRegistry()))


# --- the batch format --------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["zstd", "lz4", "none"])
def test_batches_round_trip_and_the_header_names_the_codec(codec: str) -> None:
    records = [b"", b"x", bytes(range(256)) * 3, b"tick" * 40]
    payload = encode_batch(records, Compressor(codec))  # type: ignore[arg-type]
    magic, version, codec_id, count, raw_len = HEADER.unpack_from(payload)
    assert (magic, version, codec_id, count) == (b"SG", 1, CODEC_IDS[codec], 4)
    assert decode_batch(payload) == (codec, records)
    if codec != "none":
        assert len(payload) < HEADER.size + raw_len  # compressed


def test_corrupt_payloads_are_rejected() -> None:
    payload = encode_batch([b"abc", b"def"], Compressor("zstd"))
    with pytest.raises(ValueError, match="not a signal batch"):
        decode_batch(b"XX" + payload[2:])
    with pytest.raises(ValueError, match="shorter than the header"):
        decode_batch(payload[:5])
    with pytest.raises(ValueError, match="unknown codec id 9"):
        decode_batch(payload[:3] + b"\x09" + payload[4:])
    bad_count = HEADER.pack(b"SG", 1, 0, 3, 8) + b"\x03abc\x03def"
    with pytest.raises(ValueError, match="2 records, header says 3"):
        decode_batch(bad_count)


def test_realistic_tick_batches_compress_well() -> None:
    from app.proto import load

    pb2, _ = load()
    ticks, _ = synthetic_ticks(1, 500, seed=3)
    record = pb2.TickBatch(symbol=ticks.symbol.tolist(), price=ticks.price.tolist(),
                           size=ticks.size.tolist(), ts_ns=ticks.ts_ns.tolist()).SerializeToString()  # fmt: skip
    for codec in ("zstd", "lz4"):
        payload = encode_batch([record], Compressor(codec))  # type: ignore[arg-type]
        assert len(payload) < 0.75 * len(record), (codec, len(payload), len(record))


def test_config_errors_name_field_value_and_rule() -> None:
    with pytest.raises(ValidationError) as err:
        PublishConfig(codec="gzip")  # type: ignore[arg-type]
    assert "codec" in str(err.value) and "'zstd', 'lz4' or 'none'" in str(err.value)
    with pytest.raises(ValidationError) as err:
        PublishConfig(max_messages=100, buffer_max_messages=10)
    assert "buffer_max_messages = 10: must be >= max_messages (100)" in str(err.value)
    with pytest.raises(ValidationError, match="project must be set"):
        PublishConfig(sink="pubsub")
    with pytest.raises(ValidationError) as err:
        PublishConfig(max_bytes=20_000_000)
    assert "max_bytes" in str(err.value) and "less than or equal to 9998976" in str(err.value)


# --- batching ----------------------------------------------------------------------------


def test_batches_are_bounded_by_count_bytes_and_latency() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        pub = publisher(sink, max_messages=10, max_bytes=10_000, max_latency_ms=250)
        pub.start()
        t_open = time.monotonic()
        pub.submit_many("AAPL", [b"a%03d" % i for i in range(25)])

        def sizes() -> list[int]:
            return [len(decode_batch(b[2])[1]) for b in sink.batches]

        while len(sink.batches) < 2:
            await asyncio.sleep(0.002)
        assert sizes() == [10, 10]  # the count bound, at once
        assert sink.batches[1][4] - t_open < 0.2  # not waiting for the latency bound
        while len(sink.batches) < 3:
            assert time.monotonic() - t_open < 5
            await asyncio.sleep(0.005)
        assert sizes() == [10, 10, 5]  # the rest, by the latency bound ...
        assert sink.batches[2][4] - t_open >= 0.24  # ... and not before it

        big = publisher(sink := RecordingSink(), max_messages=1000, max_bytes=1000)
        big.start()
        big.submit_many("MSFT", [bytes(300)] * 10)  # 302 framed bytes each
        await big.flush(5)
        sizes = [len(decode_batch(b[2])[1]) for b in sink.batches]
        assert sizes == [4, 4, 2] and sum(sizes) == 10  # bytes bound: 4 x 302 >= 1000
        await pub.close()
        await big.close()

    run(scenario())


def test_each_key_keeps_its_order_through_retries_and_nothing_is_lost() -> None:
    async def scenario() -> None:
        sink = RecordingSink(fail_calls={2, 3, 5, 8, 13, 21, 34})
        metrics = Metrics(CollectorRegistry())
        pub = Publisher("signals", config(max_messages=7), sink, metrics)
        pub.start()
        sent: dict[str, list[bytes]] = {f"S{k}": [] for k in range(6)}
        for i in range(600):
            key = f"S{i % 6}"
            record = f"{key}-{i}".encode()
            pub.submit(key, record)
            sent[key].append(record)
            if i % 50 == 0:
                await asyncio.sleep(0.001)
        await pub.flush(10)
        for key, records in sent.items():
            assert sink.records(key) == records  # in order, no gap, no duplicate
        assert all(b[1] in sent and b[3]["codec"] == "zstd" for b in sink.batches)
        assert metrics.publish_failures.labels("signals")._value.get() == 7
        assert pub.backlog == 0 and pub.delivered_messages == 600
        await pub.close()

    run(scenario())


def test_a_full_buffer_pushes_back_and_the_accepted_survive_the_outage() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        sink.down = True
        metrics = Metrics(CollectorRegistry())
        pub = Publisher("ticks", config(buffer_max_messages=100, max_messages=10), sink, metrics)
        pub.start()
        for i in range(100):
            pub.submit(f"K{i % 3}", b"%d" % i)
        with pytest.raises(PublishBackpressure, match="publish buffer full"):
            pub.submit("K0", b"one too many")
        with pytest.raises(PublishBackpressure):
            pub.submit_many("K1", [b"x", b"y"])  # all-or-nothing: none of these accepted
        assert metrics.publish_rejected.labels("ticks")._value.get() == 3
        assert metrics.publish_backlog.labels("ticks")._value.get() == 100
        await asyncio.sleep(0.2)  # retrying with backoff while down
        assert sink.calls > 3 and not sink.batches
        sink.down = False
        await pub.flush(10)
        delivered = sorted(int(r) for r in sink.records())
        assert delivered == list(range(100))  # every accepted record, once
        pub.submit("K0", b"room again")
        await pub.close()
        assert sink.records("K0")[-1] == b"room again"

    run(scenario())


def test_permanent_refusals_are_dead_lettered_not_retried_forever(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        sink.refuse_keys = {"BAD"}
        metrics = Metrics(CollectorRegistry())
        pub = Publisher("ticks", config(dead_letter_dir=tmp_path), sink, metrics)
        pub.start()
        pub.submit_many("BAD", [b"1", b"2"])
        pub.submit("GOOD", b"3")
        await pub.flush(5)
        assert sink.records() == [b"3"]
        dead = list(read_local_topic(tmp_path, "deadletter-ticks"))
        assert [(k, decode_batch(p)[1]) for k, p in dead] == [("BAD", [b"1", b"2"])]
        assert metrics.publish_dead_lettered.labels("ticks")._value.get() == 2
        await pub.close()

    run(scenario())


def test_close_delivers_what_was_accepted_then_refuses_more(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = LocalFileSink(tmp_path)
        pub = Publisher("ticks", config(max_latency_ms=10_000), sink, Metrics(CollectorRegistry()))
        pub.start()
        pub.submit_many("AAPL", [b"a", b"b", b"c"])
        await pub.close(5)  # well before the latency bound
        with pytest.raises(PublishBackpressure, match="closing"):
            pub.submit("AAPL", b"d")
        frames = list(read_local_topic(tmp_path, "ticks"))
        assert [(k, decode_batch(p)) for k, p in frames] == [("AAPL", ("zstd", [b"a", b"b", b"c"]))]

    run(scenario())


# --- sinks -------------------------------------------------------------------------------


def test_the_local_sink_is_the_default_and_appends_frames(tmp_path: Path) -> None:
    sink = build_sink(PublishConfig(local_dir=tmp_path))
    assert isinstance(sink, LocalFileSink)

    async def scenario() -> None:
        pub = Publisher("signals", config(codec="lz4", max_messages=2), sink,
                        Metrics(CollectorRegistry()))  # fmt: skip
        pub.start()
        pub.submit_many("AAPL", [b"1", b"2", b"3"])
        pub.submit("MSFT", b"4")
        await pub.close()

    run(scenario())
    frames = [(k, decode_batch(p)) for k, p in read_local_topic(tmp_path, "signals")]
    assert sorted(frames) == [("AAPL", ("lz4", [b"1", b"2"])), ("AAPL", ("lz4", [b"3"])),
                              ("MSFT", ("lz4", [b"4"]))]  # fmt: skip


class FakePublisherClient:
    """The google-cloud-pubsub PublisherClient surface the sink uses."""

    def __init__(self, errors: dict[str, list[Exception]] | None = None) -> None:
        self.published: list[tuple[str, bytes, str, dict[str, str]]] = []
        self.resumed: list[tuple[str, str]] = []
        self.errors = errors or {}  # ordering key -> errors its next publishes get
        self.stopped = False
        self._pool = concurrent.futures.ThreadPoolExecutor(2)

    def publish(self, topic: str, data: bytes, ordering_key: str = "", **attrs: str) -> Any:
        pending = self.errors.get(ordering_key)
        error = pending.pop(0) if pending else None

        def settle() -> str:
            time.sleep(0.001)
            if error is not None:
                raise error
            self.published.append((topic, data, ordering_key, attrs))
            return str(len(self.published))

        return self._pool.submit(settle)

    def resume_publish(self, topic: str, ordering_key: str) -> None:
        self.resumed.append((topic, ordering_key))

    def stop(self) -> None:
        self.stopped = True
        self._pool.shutdown()


def test_pubsub_sink_publishes_with_ordering_keys_and_codec_attributes(tmp_path: Path) -> None:
    client = FakePublisherClient(
        errors={
            "AAPL": [exceptions.ServiceUnavailable("blip")],
            "MSFT": [exceptions.InvalidArgument("too big")],
        }
    )
    cfg = config(sink="pubsub", project="proj", dead_letter_dir=tmp_path)
    sink = build_sink(cfg, client)
    assert isinstance(sink, PubSubSink)

    async def scenario() -> None:
        pub = Publisher("signals", cfg, sink, Metrics(CollectorRegistry()), record_type="Signal")
        pub.start()
        pub.submit("AAPL", b"first")  # fails transiently, then is retried
        await pub.flush(5)
        pub.submit("MSFT", b"refused")  # refused for good: dead-lettered
        await pub.flush(5)
        pub.submit("AAPL", b"second")
        await pub.close()

    run(scenario())
    topics = {p[0] for p in client.published}
    assert topics == {"projects/proj/topics/signals"}
    assert [(p[2], decode_batch(p[1])[1]) for p in client.published] == [
        ("AAPL", [b"first"]), ("AAPL", [b"second"])]  # fmt: skip
    assert client.published[0][3] == {"codec": "zstd", "format": "1", "record_type": "Signal"}
    # An ordered key pauses after an error; the sink resumes it so the retry can go.
    assert client.resumed == [("projects/proj/topics/signals", "AAPL"),
                              ("projects/proj/topics/signals", "MSFT")]  # fmt: skip
    assert [k for k, _ in read_local_topic(tmp_path, "deadletter-signals")] == ["MSFT"]
    assert client.stopped


def test_a_tick_batch_split_by_symbol_keeps_per_symbol_order() -> None:
    """The data path publishes each symbol's ticks under its own ordering key."""

    async def scenario() -> None:
        sink = RecordingSink(fail_calls={1, 4})
        pub = publisher(sink, max_messages=3)
        pub.start()
        ticks, _ = synthetic_ticks(4, 30, seed=1)
        for i in range(len(ticks)):
            pub.submit(f"S{ticks.symbol[i]}", np.int64(ticks.ts_ns[i]).tobytes())
        await pub.flush(5)
        for s in range(4):
            ts = [int(np.frombuffer(r, np.int64)[0]) for r in sink.records(f"S{s}")]
            assert ts == sorted(ts) and len(ts) == 30
        await pub.close()

    run(scenario())


def test_schema_topic_messages_are_single_unframed_records() -> None:
    async def scenario() -> None:
        sink = RecordingSink(fail_calls={1})
        pub = Publisher("signals", config(), sink, Metrics(CollectorRegistry()), framed=False)
        pub.start()
        pub.submit_many("7", [b"signal-a", b"signal-b"])
        pub.submit("8", b"signal-c")
        await pub.flush(5)
        by_key = {}
        for _, key, payload, attrs, _ in sink.batches:
            by_key.setdefault(key, []).append(payload)
            assert attrs == {}  # a plain protobuf message: nothing to decode first
        assert by_key == {"7": [b"signal-a", b"signal-b"], "8": [b"signal-c"]}
        await pub.close()

    run(scenario())


def test_reserved_room_cannot_be_taken_by_others_and_is_released() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        sink.down = True
        pub = publisher(sink, buffer_max_messages=20, max_messages=5)
        pub.start()
        pub.reserve(15)
        pub.submit_many("A", [b"1"] * 5)  # fits: 5 + 15 reserved = 20
        with pytest.raises(PublishBackpressure, match="15 reserved"):
            pub.submit("B", b"x")
        pub.submit_many("C", [b"2"] * 10, reserved=True)  # uses the reservation
        pub.release(5)  # the rest went unused
        assert pub.backlog == 15
        pub.submit_many("B", [b"3"] * 5)  # that room is back
        with pytest.raises(PublishBackpressure):
            pub.reserve(1)
        sink.down = False
        await pub.close(5)
        assert len(sink.records()) == 20

    run(scenario())


def test_the_default_local_sink_is_ephemeral() -> None:
    sink = build_sink(PublishConfig())
    assert isinstance(sink, LocalFileSink) and sink.ephemeral
    run(sink.publish("ticks", "1", b"payload", {}))
    assert list(read_local_topic(sink.directory, "ticks")) == [("1", b"payload")]
    run(sink.close())
    assert not sink.directory.exists()  # an embedded run leaves nothing behind


# --- bounded growth and replays -------------------------------------------------------------


def test_idle_ordering_keys_are_forgotten_and_a_wake_touches_only_what_is_due() -> None:
    """20k symbols published once each leave nothing behind; sealing and sending look
    at the due batches and ready keys only, not at every key ever seen."""

    async def scenario() -> None:
        sink = RecordingSink()
        pub = publisher(sink, max_messages=1000, max_latency_ms=10_000,
                        buffer_max_messages=200_000)  # fmt: skip
        pub.start()
        for key in range(20_000):
            pub.submit(str(key), b"x")
        assert pub.tracked_keys == 20_000  # all open (waiting for the latency bound)
        # A wake with nothing due: the scan stops at the first open batch that is not due.
        assert pub._seal_due(pub._clock()) > 0 and pub.tracked_keys == 20_000
        await pub.flush(30)
        assert pub.tracked_keys == 0 and not pub._ready and not pub._backing_off
        assert len(sink.batches) == 20_000
        await pub.close()

    run(scenario())


def test_local_topic_and_dead_letter_files_rotate_by_size_and_age(tmp_path: Path) -> None:
    clock = [0]
    log = FrameLog(tmp_path, "ticks", max_bytes=2000, max_age_s=60, max_files=3,
                   clock_ns=lambda: clock[0])  # fmt: skip
    for i in range(60):
        log.append(str(i % 4), {}, b"p" * 200)  # 10 frames a file: rotated by size
    files = log.files()
    assert len(files) == 4 and files[-1] == tmp_path / "ticks.sgb"  # 3 rotated + active
    keys = [k for k, _ in read_local_topic(tmp_path, "ticks")]
    assert len(keys) == 40 and keys == [str(i % 4) for i in range(20, 60)]  # the newest 40
    clock[0] += 61 * 10**9  # the active file is now older than max_age_s
    log.append("9", {}, b"late")
    assert log.files()[-1].read_bytes().endswith(b"late") and len(log.files()) == 4
    log.close()

    async def dead_letters() -> None:
        sink = RecordingSink()
        sink.refuse_keys = {"BAD"}
        pub = publisher(sink, dead_letter_dir=tmp_path / "dead", local_max_file_bytes=4096,
                        local_max_files=2, max_messages=1)  # fmt: skip
        pub.start()
        for _ in range(60):
            pub.submit("BAD", os.urandom(300))  # incompressible
        await pub.flush(10)
        await pub.close()

    run(dead_letters())
    dead = log_files(tmp_path / "dead", "deadletter-ticks")
    assert 2 <= len(dead) <= 3  # bounded: at most 2 rotated files and the active one
    assert sum(1 for _ in read_local_topic(tmp_path / "dead", "deadletter-ticks")) < 60


def test_a_replayed_batch_is_skipped_where_the_local_sink_already_holds_it(tmp_path: Path) -> None:
    """Frames name the batches they carry (seq attributes); a reopened sink knows, per key,
    the last one it holds, so a replay after a crash publishes the rest only once."""

    async def first_life() -> None:
        pub = Publisher("signals", config(max_messages=2), LocalFileSink(tmp_path),
                        Metrics(CollectorRegistry()))  # fmt: skip
        delivered: list[tuple[int, int]] = []
        pub.on_delivered = lambda seq, n: delivered.append((seq, n))
        pub.start()
        for seq in (1, 2, 3):
            pub.submit_many("AAPL", [b"a%d" % seq], seq=seq)
        pub.submit_many("MSFT", [b"m1"], seq=1)
        await pub.close()
        assert sorted(delivered) == [(1, 1), (1, 1), (2, 1), (3, 1)]

    run(first_life())
    # The file ends in a torn frame, as a kill mid-write leaves it.
    with open(tmp_path / "signals.sgb", "ab") as f:
        f.write(b"\x40\x00\x00\x00\x04\x00")

    async def after_restart() -> None:
        sink = LocalFileSink(tmp_path)
        assert (sink.delivered_seq("signals", "AAPL"), sink.delivered_seq("signals", "MSFT")) == (
            3,
            1,
        )
        assert sink.max_seq("signals") == 3
        pub = Publisher("signals", config(), sink, Metrics(CollectorRegistry()))
        pub.start()
        assert not pub.submit_many("AAPL", [b"a3"], seq=3, replay=True)  # held: skipped
        assert pub.submit_many("MSFT", [b"m2"], seq=2, replay=True)  # not held: published
        assert pub.submit_many("AAPL", [b"a4"], seq=4, replay=True)
        await pub.close()

    run(after_restart())
    frames = list(read_frames(tmp_path / "signals.sgb"))
    per_key: dict[str, list[tuple[bytes, str]]] = {}
    for key, attributes, payload in frames:
        for record in decode_batch(payload)[1]:
            per_key.setdefault(key, []).append((record, attributes["seq_last"]))
    assert per_key == {
        "AAPL": [(b"a1", "2"), (b"a2", "2"), (b"a3", "3"), (b"a4", "4")],
        "MSFT": [(b"m1", "1"), (b"m2", "2")],
    }  # each once, in order
