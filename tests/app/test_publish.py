"""Publishing: the batch envelope, batch bounds, ordering, retries, back-pressure, the sinks."""

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

from app import batch_format
from app.batch_format import TICK_BATCH, Compressor, decode, envelope
from app.proto import load
from app.publish import (
    FrameLog,
    LocalFileSink,
    PermanentPublishError,
    PublishBackpressure,
    Publisher,
    PubSubSink,
    build_sink,
    log_files,
    read_frames,
    read_local_topic,
)
from app.settings.publish import PublishConfig
from app.shards import ShardTable
from app.synthetic import synthetic_ticks
from app.telemetry import Metrics
from tests.app.conftest import run

pb2, _ = load()


def entry(value: int, seq: int = 0, ticks: int = 1) -> bytes:
    """A BatchPayload fragment: one TickBatch entry of ``ticks`` ticks stamped ``value``."""
    tb = pb2.TickBatch(symbol=[0] * ticks, price=[1.0] * ticks, size=[1.0] * ticks,
                       ts_ns=[value] * ticks)  # fmt: skip
    return pb2.BatchPayload(ticks=[tb], seq=[seq]).SerializeToString()


def values(message: bytes) -> list[int]:
    """The stamps of a published batch's entries, in order (one per entry)."""
    _, content = decode(message)
    return [e.ts_ns[0] for e in content.ticks]


class RecordingSink:
    """Keeps every message; fails the calls whose number is in ``fail_calls`` (transiently),
    or every call while ``down``, or permanently for keys in ``refuse_keys``."""

    def __init__(self, fail_calls: set[int] | None = None) -> None:
        self.batches: list[tuple[str, str, bytes, dict[str, str], float]] = []
        self.calls = 0
        self.fail_calls = fail_calls or set()
        self.down = False
        self.refuse_keys: set[str] = set()

    async def publish(self, topic: str, ordering_key: str, messages: Any) -> None:
        self.calls += 1
        call = self.calls
        await asyncio.sleep(0)
        if self.down or call in self.fail_calls:
            raise ConnectionError(f"sink unavailable (call {call}, on purpose)")
        if ordering_key in self.refuse_keys:
            raise PermanentPublishError("message too large (on purpose)")
        for data, attributes in messages:
            self.batches.append((topic, ordering_key, data, dict(attributes), time.monotonic()))

    def delivered_seq(self, topic: str, ordering_key: str) -> int:
        return 0

    def max_seq(self, topic: str) -> int:
        return 0

    async def close(self) -> None:
        pass

    def records(self, key: str | None = None) -> list[int]:
        out: list[int] = []
        for _, k, payload, _, _ in self.batches:
            if key is None or k == key:
                out.extend(values(payload))
        return out


def config(**kw: Any) -> PublishConfig:
    base: dict[str, Any] = {"max_messages": 10, "max_bytes": 10_000, "max_latency_ms": 30,
                            "buffer_max_messages": 1000, "retry_initial_ms": 5,
                            "retry_max_ms": 20}  # fmt: skip
    base.update(kw)
    return PublishConfig(**base)


def publisher(sink: Any, **kw: Any) -> Publisher:
    return Publisher("ticks", config(**kw), sink, Metrics(CollectorRegistry()),
                     record_type=TICK_BATCH)  # fmt: skip


# --- the batch envelope ------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["zstd", "lz4", "none"])
def test_batches_round_trip_and_the_envelope_names_the_codec(codec: str) -> None:
    ticks, _ = synthetic_ticks(3, 200, seed=5)
    groups = ShardTable(3, 2).of(ticks.symbol)
    entries = batch_format.tick_entries(groups, 7, ticks.symbol, ticks.price, ticks.size,
                                        ticks.ts_ns)  # fmt: skip
    body = b"".join(e for _, e, _, _ in entries)
    message = envelope(body, Compressor(codec), TICK_BATCH, len(ticks), 7, 7)  # type: ignore[arg-type]
    batch, content = decode(message)
    assert (batch.schema_version, batch.codec, batch.record_type) == (
        1, batch_format.CODEC_NUMBERS[codec], "signals.v1.TickBatch")  # fmt: skip
    assert (batch.records, batch.seq_first, batch.seq_last) == (600, 7, 7)
    assert batch.uncompressed_bytes == len(body) and list(content.seq) == [7] * len(entries)
    got = sorted((t, s) for e in content.ticks for t, s in zip(e.ts_ns, e.symbol, strict=True))
    assert got == sorted(zip(ticks.ts_ns.tolist(), ticks.symbol.tolist(), strict=True))
    if codec != "none":
        assert len(batch.payload) < 0.75 * len(body)  # compressed


def test_corrupt_or_foreign_messages_are_rejected() -> None:
    body = entry(1) + entry(2)
    good = pb2.PublishedBatch.FromString(envelope(body, Compressor("zstd"), TICK_BATCH, 2))

    def mutated(**changes: Any) -> bytes:
        copy = pb2.PublishedBatch()
        copy.CopyFrom(good)
        for name, value in changes.items():
            setattr(copy, name, value)
        return copy.SerializeToString()

    with pytest.raises(ValueError, match="not a PublishedBatch"):
        decode(b"\xff\xff\xff")
    with pytest.raises(ValueError, match="schema_version 2"):
        decode(mutated(schema_version=2))
    with pytest.raises(ValueError, match=r"record_type 'signals\.v1\.Signal'"):
        decode(mutated(record_type="signals.v1.Signal"))
    with pytest.raises(ValueError, match="codec 9"):
        decode(mutated(codec=9))
    with pytest.raises(ValueError, match="the envelope says 3 records"):
        decode(mutated(records=3))
    with pytest.raises(ValueError, match="the envelope says 5"):
        decode(mutated(uncompressed_bytes=5))


def test_realistic_tick_batches_compress_well() -> None:
    ticks, _ = synthetic_ticks(1, 500, seed=3)
    record = batch_format.tick_batch(ticks.symbol, ticks.price, ticks.size, ticks.ts_ns)
    for codec in ("zstd", "lz4"):
        message = envelope(record, Compressor(codec), TICK_BATCH, 500)  # type: ignore[arg-type]
        assert len(message) < 0.75 * len(record), (codec, len(message), len(record))


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


def test_a_batch_topic_publisher_must_know_its_record_type() -> None:
    with pytest.raises(ValueError, match="needs its record_type"):
        Publisher("ticks-batches", config(), RecordingSink(), Metrics(CollectorRegistry()))


# --- batching ----------------------------------------------------------------------------


def test_batches_are_bounded_by_rows_bytes_and_latency() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        pub = publisher(sink, max_messages=10, max_bytes=10_000, max_latency_ms=250)
        pub.start()
        t_open = time.monotonic()
        for i in range(25):
            pub.submit("AAPL", entry(i))

        def sizes() -> list[int]:
            return [int(b[3]["records"]) for b in sink.batches]

        while len(sink.batches) < 2:
            await asyncio.sleep(0.002)
        assert sizes() == [10, 10]  # the row bound, at once
        assert sink.batches[1][4] - t_open < 0.2  # not waiting for the latency bound
        while len(sink.batches) < 3:
            assert time.monotonic() - t_open < 5
            await asyncio.sleep(0.005)
        assert sizes() == [10, 10, 5]  # the rest, by the latency bound ...
        assert sink.batches[2][4] - t_open >= 0.24  # ... and not before it
        assert sink.records() == list(range(25))

        big = publisher(sink := RecordingSink(), max_messages=1000, max_bytes=1000)
        big.start()
        for i in range(10):
            big.submit("MSFT", entry(i, ticks=10), rows=10)  # about 300 bytes each
        await big.flush(5)
        per_batch = [len(values(b[2])) for b in sink.batches]
        assert per_batch == [4, 4, 2]  # the bytes bound: 4 entries reach 1000 bytes
        assert [int(b[3]["records"]) for b in sink.batches] == [40, 40, 20]  # rows, counted
        await pub.close()
        await big.close()

    run(scenario())


def test_rows_are_what_the_buffer_and_the_row_bound_count() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        sink.down = True
        pub = publisher(sink, max_messages=100, buffer_max_messages=250)
        pub.start()
        pub.submit("A", entry(1, ticks=120), rows=120)  # one record above the bound: sealed alone
        pub.submit("A", entry(2, ticks=100), rows=100)
        assert pub.backlog == 220
        with pytest.raises(PublishBackpressure, match=r"220 queued.* of 250 rows"):
            pub.submit("B", entry(3, ticks=40), rows=40)
        sink.down = False
        await pub.flush(5)
        assert [int(b[3]["records"]) for b in sink.batches] == [120, 100]
        assert pub.backlog == 0 and pub.delivered_messages == 220
        await pub.close()

    run(scenario())


def test_each_key_keeps_its_order_through_retries_and_nothing_is_lost() -> None:
    async def scenario() -> None:
        sink = RecordingSink(fail_calls={2, 3, 5, 8, 13, 21, 34})
        metrics = Metrics(CollectorRegistry())
        pub = Publisher("signals", config(max_messages=7), sink, metrics, record_type=TICK_BATCH)
        pub.start()
        sent: dict[str, list[int]] = {f"S{k}": [] for k in range(6)}
        for i in range(600):
            key = f"S{i % 6}"
            pub.submit(key, entry(i))
            sent[key].append(i)
            if i % 50 == 0:
                await asyncio.sleep(0.001)
        await pub.flush(10)
        for key, stamps in sent.items():
            assert sink.records(key) == stamps  # in order, no gap, no duplicate
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
        pub = Publisher("ticks", config(buffer_max_messages=100, max_messages=10), sink, metrics,
                        record_type=TICK_BATCH)  # fmt: skip
        pub.start()
        for i in range(100):
            pub.submit(f"K{i % 3}", entry(i))
        with pytest.raises(PublishBackpressure, match="publish buffer full"):
            pub.submit("K0", entry(-1))
        with pytest.raises(PublishBackpressure):
            pub.submit_many("K1", [entry(-2), entry(-3)])  # all-or-nothing: none accepted
        assert metrics.publish_rejected.labels("ticks")._value.get() == 3
        assert metrics.publish_backlog.labels("ticks")._value.get() == 100
        await asyncio.sleep(0.2)  # retrying with backoff while down
        assert sink.calls > 3 and not sink.batches
        sink.down = False
        await pub.flush(10)
        assert sorted(sink.records()) == list(range(100))  # every accepted record, once
        pub.submit("K0", entry(1000))
        await pub.close()
        assert sink.records("K0")[-1] == 1000

    run(scenario())


def test_permanent_refusals_are_dead_lettered_not_retried_forever(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        sink.refuse_keys = {"BAD"}
        metrics = Metrics(CollectorRegistry())
        pub = Publisher("ticks", config(dead_letter_dir=tmp_path), sink, metrics,
                        record_type=TICK_BATCH)  # fmt: skip
        pub.start()
        pub.submit_many("BAD", [entry(1), entry(2)])
        pub.submit("GOOD", entry(3))
        await pub.flush(5)
        assert sink.records() == [3]
        dead = list(read_local_topic(tmp_path, "deadletter-ticks"))
        assert [(k, values(p)) for k, p in dead] == [("BAD", [1, 2])]
        assert metrics.publish_dead_lettered.labels("ticks")._value.get() == 2
        await pub.close()

    run(scenario())


def test_close_delivers_what_was_accepted_then_refuses_more(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = LocalFileSink(tmp_path)
        pub = Publisher("ticks", config(max_latency_ms=10_000), sink, Metrics(CollectorRegistry()),
                        record_type=TICK_BATCH)  # fmt: skip
        pub.start()
        pub.submit_many("AAPL", [entry(1), entry(2), entry(3)])
        await pub.close(5)  # well before the latency bound
        with pytest.raises(PublishBackpressure, match="closing"):
            pub.submit("AAPL", entry(4))
        frames = list(read_local_topic(tmp_path, "ticks"))
        assert [(k, values(p)) for k, p in frames] == [("AAPL", [1, 2, 3])]

    run(scenario())


# --- sinks -------------------------------------------------------------------------------


def test_the_local_sink_is_the_default_and_appends_frames_with_attributes(tmp_path: Path) -> None:
    sink = build_sink(PublishConfig(local_dir=tmp_path))
    assert isinstance(sink, LocalFileSink)

    async def scenario() -> None:
        pub = Publisher("signals", config(codec="lz4", max_messages=2), sink,
                        Metrics(CollectorRegistry()), record_type=TICK_BATCH)  # fmt: skip
        pub.start()
        pub.submit_many("AAPL", [entry(1, seq=4), entry(2, seq=4), entry(3, seq=5)], seq=4)
        pub.submit("MSFT", entry(4))
        await pub.close()

    run(scenario())
    frames = [(k, a, values(p)) for k, a, p in read_frames(tmp_path / "signals.sgb")]
    assert sorted((k, v) for k, _, v in frames) == [("AAPL", [1, 2]), ("AAPL", [3]), ("MSFT", [4])]
    attributes = {tuple(v): a for _, a, v in frames}
    assert attributes[(1, 2)] == {"schema_version": "1", "codec": "lz4", "records": "2",
                                  "record_type": "signals.v1.TickBatch", "seq_first": "4",
                                  "seq_last": "4"}  # fmt: skip
    assert "seq_first" not in attributes[(4,)]  # unsequenced


class FakePublisherClient:
    """The google-cloud-pubsub PublisherClient surface the sink uses."""

    def __init__(self, errors: dict[str, list[Exception]] | None = None) -> None:
        self.published: list[tuple[str, bytes, str, dict[str, str]]] = []
        self.resumed: list[tuple[str, str]] = []
        self.errors = errors or {}  # ordering key -> errors its next publishes get
        self.stopped = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1)  # one at a time: in call order

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


def test_pubsub_sink_publishes_with_ordering_keys_and_batch_attributes(tmp_path: Path) -> None:
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
        pub = Publisher("signals", cfg, sink, Metrics(CollectorRegistry()), record_type=TICK_BATCH)
        pub.start()
        pub.submit("AAPL", entry(1), seq=3)  # fails transiently, then is retried
        await pub.flush(5)
        pub.submit("MSFT", entry(2))  # refused for good: dead-lettered
        await pub.flush(5)
        pub.submit("AAPL", entry(3))
        await pub.close()

    run(scenario())
    topics = {p[0] for p in client.published}
    assert topics == {"projects/proj/topics/signals"}
    assert [(p[2], values(p[1])) for p in client.published] == [("AAPL", [1]), ("AAPL", [3])]
    assert client.published[0][3] == {"codec": "zstd", "schema_version": "1", "records": "1",
                                      "record_type": "signals.v1.TickBatch", "seq_first": "3",
                                      "seq_last": "3"}  # fmt: skip
    # An ordered key pauses after an error; the sink resumes it so the retry can go.
    assert client.resumed == [("projects/proj/topics/signals", "AAPL"),
                              ("projects/proj/topics/signals", "MSFT")]  # fmt: skip
    assert [k for k, _ in read_local_topic(tmp_path, "deadletter-signals")] == ["MSFT"]
    assert client.stopped


def test_ticks_split_by_ordering_shard_keep_each_symbols_order() -> None:
    """The data path publishes each shard's ticks under the shard's ordering key: a bounded
    number of keys, and each symbol's ticks in order across batches and retries."""

    async def scenario() -> None:
        sink = RecordingSink(fail_calls={1, 4})
        pub = publisher(sink, max_messages=40, buffer_max_messages=2000)
        pub.start()
        ticks, _ = synthetic_ticks(40, 30, seed=1)
        shards = ShardTable(40, 4)
        for seq, lo in enumerate(range(0, len(ticks), 100), start=1):
            batch = ticks.slice(lo, lo + 100)
            for shard, fragment, rows, _ in batch_format.tick_entries(
                shards.of(batch.symbol), seq, batch.symbol, batch.price, batch.size, batch.ts_ns
            ):
                pub.submit(f"shard-{shard}", fragment, rows=rows, seq=seq)
        await pub.flush(5)
        keys = {b[1] for b in sink.batches}
        assert keys <= {f"shard-{n}" for n in range(4)} and len(keys) > 1
        per_symbol: dict[int, list[int]] = {}
        for _, key, message, _, _ in sink.batches:
            _, content = decode(message)
            for e in content.ticks:
                assert {shards.of(np.array(e.symbol)).tolist()[0]} == {int(key[6:])}
                for s, ts in zip(e.symbol, e.ts_ns, strict=True):
                    per_symbol.setdefault(s, []).append(ts)
        for s in range(40):
            assert per_symbol[s] == ticks.ts_ns[ticks.symbol == s].tolist()
        await pub.close()

    run(scenario())


def test_schema_topic_messages_are_single_unframed_records() -> None:
    async def scenario() -> None:
        sink = RecordingSink(fail_calls={1})
        pub = Publisher("signals", config(), sink, Metrics(CollectorRegistry()), framed=False)
        pub.start()
        pub.submit_many("shard-7", [b"signal-a", b"signal-b"], seq=2)
        pub.submit("shard-8", b"signal-c")
        await pub.flush(5)
        by_key: dict[str, list[tuple[bytes, dict[str, str]]]] = {}
        for _, key, payload, attrs, _ in sink.batches:
            by_key.setdefault(key, []).append((payload, attrs))
        seq2 = {"seq_first": "2", "seq_last": "2"}
        assert by_key == {"shard-7": [(b"signal-a", seq2), (b"signal-b", seq2)],
                          "shard-8": [(b"signal-c", {})]}  # fmt: skip
        await pub.close()

    run(scenario())


def test_reserved_room_cannot_be_taken_by_others_and_is_released() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        sink.down = True
        pub = publisher(sink, buffer_max_messages=20, max_messages=5)
        pub.start()
        pub.reserve(15)
        pub.submit_many("A", [entry(1)] * 5)  # fits: 5 + 15 reserved = 20
        with pytest.raises(PublishBackpressure, match="15 reserved"):
            pub.submit("B", entry(1))
        pub.submit("C", entry(2, ticks=10), rows=10, reserved=True)  # uses the reservation
        pub.release(5)  # the rest went unused
        assert pub.backlog == 15
        pub.submit_many("B", [entry(3)] * 5)  # that room is back
        with pytest.raises(PublishBackpressure):
            pub.reserve(1)
        sink.down = False
        await pub.close(5)
        assert len(sink.records()) == 11  # entries: 5 + 1 + 5

    run(scenario())


def test_the_default_local_sink_is_ephemeral() -> None:
    sink = build_sink(PublishConfig())
    assert isinstance(sink, LocalFileSink) and sink.ephemeral
    run(sink.publish("ticks", "1", [(b"payload", {})]))
    assert list(read_local_topic(sink.directory, "ticks")) == [("1", b"payload")]
    run(sink.close())
    assert not sink.directory.exists()  # an embedded run leaves nothing behind


# --- bounded growth and replays -------------------------------------------------------------


def test_idle_ordering_keys_are_forgotten_and_a_wake_touches_only_what_is_due() -> None:
    """20k keys published once each leave nothing behind; sealing and sending look at the
    due batches and ready keys only, not at every key ever seen."""

    async def scenario() -> None:
        sink = RecordingSink()
        pub = publisher(sink, max_messages=1000, max_latency_ms=10_000,
                        buffer_max_messages=200_000)  # fmt: skip
        pub.start()
        record = entry(1)
        for key in range(20_000):
            pub.submit(str(key), record)
        assert pub.tracked_keys == 20_000  # all open (waiting for the latency bound)
        # A wake with nothing due: the scan stops at the first open batch that is not due.
        assert pub._seal_due(pub._clock()) > 0 and pub.tracked_keys == 20_000
        await pub.flush(60)
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
                        local_max_files=2, max_messages=1, codec="none")  # fmt: skip
        pub.start()
        for _ in range(60):
            noise = pb2.TickBatch(price=np.frombuffer(os.urandom(320), np.float64).tolist())
            pub.submit("BAD", pb2.BatchPayload(ticks=[noise], seq=[0]).SerializeToString())
        await pub.flush(10)
        await pub.close()

    run(dead_letters())
    dead = log_files(tmp_path / "dead", "deadletter-ticks")
    assert 2 <= len(dead) <= 3  # bounded: at most 2 rotated files and the active one
    assert sum(1 for _ in read_local_topic(tmp_path / "dead", "deadletter-ticks")) < 60


def test_a_replayed_batch_is_skipped_where_the_local_sink_already_holds_it(tmp_path: Path) -> None:
    """Messages name the batches they carry (seq attributes); a reopened sink knows, per key,
    the last one it holds, so a replay after a crash publishes the rest only once."""

    async def first_life() -> None:
        pub = Publisher("signals", config(max_messages=2), LocalFileSink(tmp_path),
                        Metrics(CollectorRegistry()), record_type=TICK_BATCH)  # fmt: skip
        delivered: list[tuple[int, int]] = []
        pub.on_delivered = lambda seq, n: delivered.append((seq, n))
        pub.start()
        for seq in (1, 2, 3):
            pub.submit("AAPL", entry(10 + seq, seq), seq=seq)
        pub.submit("MSFT", entry(21, 1), seq=1)
        await pub.close()
        assert sorted(delivered) == [(1, 1), (1, 1), (2, 1), (3, 1)]

    run(first_life())
    # The file ends in a torn frame, as a kill mid-write leaves it.
    with open(tmp_path / "signals.sgb", "ab") as f:
        f.write(b"\x40\x00\x00\x00\x04\x00")

    async def after_restart() -> None:
        sink = LocalFileSink(tmp_path)
        held = (sink.delivered_seq("signals", "AAPL"), sink.delivered_seq("signals", "MSFT"))
        assert held == (3, 1)
        assert sink.max_seq("signals") == 3
        pub = Publisher("signals", config(), sink, Metrics(CollectorRegistry()),
                        record_type=TICK_BATCH)  # fmt: skip
        pub.start()
        assert not pub.submit("AAPL", entry(13, 3), seq=3, replay=True)  # held: skipped
        assert pub.submit("MSFT", entry(22, 2), seq=2, replay=True)  # not held: published
        assert pub.submit("AAPL", entry(14, 4), seq=4, replay=True)
        await pub.close()

    run(after_restart())
    per_key: dict[str, list[tuple[int, int, str]]] = {}
    for key, attributes, payload in read_frames(tmp_path / "signals.sgb"):
        _, content = decode(payload)
        for e, seq in zip(content.ticks, content.seq, strict=True):
            per_key.setdefault(key, []).append((e.ts_ns[0], seq, attributes["seq_last"]))
    assert per_key == {
        "AAPL": [(11, 1, "2"), (12, 2, "2"), (13, 3, "3"), (14, 4, "4")],
        "MSFT": [(21, 1, "1"), (22, 2, "2")],
    }  # each once, in order, each entry naming its batch


def test_with_publishing_off_batches_still_reach_the_warehouse_and_the_watermark(
    tmp_path: Path,
) -> None:
    from app.datapath import DataPath, DurableBatch
    from app.features import FEATURES
    from app.settings.cache import CacheConfig
    from app.settings.warehouse import WarehouseConfig
    from app.signals import SignalColumns

    watermarks: list[int] = []

    async def scenario() -> None:
        data_path = DataPath.from_config(
            CacheConfig(), PublishConfig(enabled=False, local_dir=tmp_path / "topics"),
            WarehouseConfig(duckdb_path=tmp_path / "w.duckdb", flush_interval_s=0.05,
                            retention_days=None),
            metrics=Metrics(CollectorRegistry()), shards=ShardTable(8, 4),
        )  # fmt: skip
        data_path.on_delivered = watermarks.append
        assert data_path.publishers == {}
        data_path.start()
        ticks, _ = synthetic_ticks(8, 5, seed=3)
        signals = SignalColumns(ticks.symbol[:4], ticks.ts_ns[:4], np.ones(4, np.int8),
                                np.full(4, 0.5, np.float32), np.full(4, 0.7, np.float32), "m/1")  # fmt: skip
        for seq in (1, 2):
            data_path.deliver([DurableBatch(seq, ticks, signals, np.zeros((4, len(FEATURES))), 1,
                                            data_path.admit(len(ticks)))])  # fmt: skip
        await data_path.close()

    run(scenario())
    assert watermarks and watermarks[-1] == 2  # the spool may let both batches go
    assert not (tmp_path / "topics").exists()  # nothing published
    import duckdb

    with duckdb.connect(str(tmp_path / "w.duckdb")) as db:
        assert db.execute("SELECT count(*) FROM ticks").fetchone() == (80,)
        assert db.execute("SELECT count(*) FROM signals").fetchone() == (8,)


def test_a_local_dir_that_cannot_be_a_directory_is_one_error_naming_the_setting(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(OSError, match=rf"^publish.local_dir = '{blocked}': a file is in the way"):
        LocalFileSink(blocked)
