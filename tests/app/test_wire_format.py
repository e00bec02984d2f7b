"""Published batches are readable with stock libraries only: a consumer that knows nothing of app/.

The service's data path publishes through its real publishers into both sinks (local topic
files, and Pub/Sub through a fake client at the true edge). A consumer process then decodes
every message with nothing but `signals.proto` compiled by protoc, `protobuf`, `zstandard`
and `lz4.frame` (and the standard library: the local files' frames are `struct` and JSON),
with ``app`` made unimportable, as a consumer in another language would. What it reads
must be exactly what was delivered, each symbol in order, under its shard's ordering key
(the documented SHA-256 rule, recomputed by the consumer).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from app.datapath import DataPath, DurableBatch
from app.features import FEATURES
from app.settings.cache import CacheConfig
from app.settings.publish import PublishConfig
from app.settings.warehouse import WarehouseConfig
from app.shards import ShardTable
from app.signals import SignalColumns
from app.synthetic import TickColumns, synthetic_ticks
from app.telemetry import Metrics
from tests.app.conftest import run

REPO = Path(__file__).resolve().parents[2]
SYMBOLS, SHARDS, BATCHES, BATCH = 40, 4, 6, 150
COMPUTED_AT = 1_700_000_000_123_456_789
GROUPS = (1, 3, 2)  # the stream's batches reach the data path in groups of these sizes


def computed_at(seq: int) -> int:
    """When batch ``seq``'s signals were computed (each batch its own time)."""
    return COMPUTED_AT + 1000 * seq


# The consumer: stock libraries only. argv: proto dir, output dir of protoc, input JSON.
CONSUMER = r"""
import hashlib, importlib, json, struct, sys, base64
sys.modules["app"] = None  # the service's code is not available to a consumer
import lz4.frame, zstandard
from grpc_tools import protoc

proto_dir, out_dir, source = sys.argv[1:4]
assert protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", "signals.proto"]) == 0
sys.path.insert(0, out_dir)
pb = importlib.import_module("signals_pb2")

def frames(path):  # a local topic file: header, then (u32, u16, u16, key, attributes, data)
    data = open(path, "rb").read()
    assert data[:4] == b"SGL2"
    i = 12
    while i + 8 <= len(data):
        n, k, a = struct.unpack_from("<IHH", data, i)
        i += 8
        key, attrs = data[i:i + k].decode(), json.loads(data[i + k:i + k + a] or b"{}")
        i += k + a
        yield key, attrs, data[i:i + n]
        i += n

def batch(data, attrs):
    env = pb.PublishedBatch.FromString(data)
    codec = pb.Codec.Name(env.codec)
    assert attrs["codec"] == {"CODEC_ZSTD": "zstd", "CODEC_LZ4": "lz4", "CODEC_NONE": "none"}[codec]
    assert (attrs["schema_version"], attrs["record_type"], attrs["records"]) == (
        str(env.schema_version), env.record_type, str(env.records))
    raw = {"CODEC_ZSTD": lambda p: zstandard.ZstdDecompressor().decompress(p),
           "CODEC_LZ4": lz4.frame.decompress, "CODEC_NONE": bytes}[codec](env.payload)
    assert len(raw) == env.uncompressed_bytes
    body = pb.BatchPayload.FromString(raw)
    ticks = env.record_type == "signals.v1.TickBatch"
    entries = body.ticks if ticks else body.signals
    assert len(body.seq) == len(entries) and sum(len(e.symbol) for e in entries) == env.records
    assert list(body.seq) == sorted(body.seq) and body.seq[0] == env.seq_first == int(attrs["seq_first"])
    rows = []
    for e, seq in zip(entries, body.seq):
        if ticks:
            rows += [[seq, s, t, p, z] for s, t, p, z in zip(e.symbol, e.ts_ns, e.price, e.size)]
        else:
            rows += [[seq, s, t, d, st, c, e.model_version, e.computed_at_ns, e.backend]
                     for s, t, d, st, c in zip(e.symbol, e.ts_ns, e.direction, e.strength, e.confidence)]
    return env.record_type, rows

def shard(symbol, shards):  # the documented rule: SHA-256 of the decimal name, mod shards
    return int.from_bytes(hashlib.sha256(str(symbol).encode()).digest()[:8], "big") % shards

source = json.load(open(source))
out = {}
for topic, messages in source["topics"].items():
    if "path" in messages:
        messages = [[k, a, d] for k, a, d in frames(messages["path"])]
    else:
        messages = [[k, a, base64.b64decode(d)] for k, a, d in messages["messages"]]
    read = out.setdefault(topic, [])
    for key, attrs, data in messages:
        if topic.endswith("-batches"):
            record_type, rows = batch(data, attrs)
            assert {f"shard-{shard(r[1], source['shards'])}-of-{source['shards']}" for r in rows} == {key}
            read.append([key, record_type, rows])
        elif topic == "ticks":  # a schema topic: one TickBatch per message
            m = pb.TickBatch.FromString(data)
            read.append([key, "TickBatch", [[int(attrs["seq_first"]), s, t] for s, t in zip(m.symbol, m.ts_ns)]])
        else:  # one Signal per message
            m = pb.Signal.FromString(data)
            read.append([key, "Signal", [[int(attrs["seq_first"]), m.symbol, m.ts_ns, m.computed_at_ns]]])
print(json.dumps(out))
"""


class FakePublisherClient:
    """google-cloud-pubsub's PublisherClient at the true edge: keeps what it is given."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, str, dict[str, str]]] = []

    def publish(self, topic: str, data: bytes, ordering_key: str = "", **attrs: str) -> Any:
        import concurrent.futures

        self.published.append((topic.rsplit("/", 1)[-1], data, ordering_key, attrs))
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        future.set_result(str(len(self.published)))
        return future

    def resume_publish(self, topic: str, ordering_key: str) -> None:
        raise AssertionError("nothing failed")


def stream() -> list[tuple[TickColumns, SignalColumns]]:
    """Batches of ticks and, per batch, a signal after each symbol's last tick."""
    ticks, _ = synthetic_ticks(SYMBOLS, BATCHES * BATCH // SYMBOLS, seed=4)
    rng = np.random.default_rng(4)
    out = []
    for b in range(BATCHES):
        batch = ticks.slice(b * BATCH, (b + 1) * BATCH)
        last = {int(s): i for i, s in enumerate(batch.symbol)}
        rows = np.array(sorted(last.values()))
        n = rows.size
        signals = SignalColumns(batch.symbol[rows], batch.ts_ns[rows],
                                rng.integers(1, 4, n).astype(np.int8),
                                rng.uniform(-1, 1, n).astype(np.float32),
                                rng.uniform(0.3, 1, n).astype(np.float32), "signal_mlp/3", "int8",
                                "ab" * 32, "local")  # fmt: skip
        out.append((batch, signals))
    return out


def publish(tmp_path: Path, publish: PublishConfig, client: Any = None) -> None:
    async def scenario() -> None:
        data_path = DataPath.from_config(
            CacheConfig(), publish, WarehouseConfig(duckdb_path=tmp_path / "w.duckdb"),
            metrics=Metrics(CollectorRegistry()), shards=ShardTable(SYMBOLS, SHARDS),
            pubsub_client=client,
        )  # fmt: skip
        data_path.start()
        batches = [
            DurableBatch(seq, ticks, signals, np.zeros((len(signals), len(FEATURES))),
                         computed_at(seq), data_path.admit(len(ticks)))
            for seq, (ticks, signals) in enumerate(stream(), start=1)
        ]  # fmt: skip
        for n in GROUPS:  # in groups of several sizes, as the service hands them on
            data_path.deliver(batches[:n])
            batches = batches[n:]
        assert not batches
        await data_path.close()

    run(scenario())


def consume(tmp_path: Path, topics: dict[str, Any]) -> dict[str, list[Any]]:
    source = tmp_path / "consumer-input.json"
    source.write_text(json.dumps({"shards": SHARDS, "topics": topics}))
    (tmp_path / "protoc-out").mkdir()
    done = subprocess.run(
        [sys.executable, "-I", "-c", CONSUMER, str(REPO / "app" / "proto"),
         str(tmp_path / "protoc-out"), str(source)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def expected_ticks() -> dict[int, list[list[Any]]]:
    per_symbol: dict[int, list[list[Any]]] = {}
    for seq, (ticks, _) in enumerate(stream(), start=1):
        for s, t, p, z in zip(ticks.symbol.tolist(), ticks.ts_ns.tolist(), ticks.price.tolist(),
                              ticks.size.tolist(), strict=True):  # fmt: skip
            per_symbol.setdefault(s, []).append([seq, s, t, p, z])
    return per_symbol


def by_symbol(read: list[Any]) -> dict[int, list[list[Any]]]:
    per_symbol: dict[int, list[list[Any]]] = {}
    for _key, _type, rows in read:
        for row in rows:
            per_symbol.setdefault(row[1], []).append(row)
    return per_symbol


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_a_consumer_with_stock_libraries_reads_the_local_topic_files(
    tmp_path: Path, codec: str
) -> None:
    local = tmp_path / "published"
    publish(tmp_path, PublishConfig(local_dir=local, codec=codec, max_latency_ms=5))  # type: ignore[arg-type]
    read = consume(tmp_path, {t: {"path": str(local / f"{t}.sgb")}
                              for t in ("ticks-batches", "signals-batches")})  # fmt: skip
    assert by_symbol(read["ticks-batches"]) == expected_ticks()  # each symbol's ticks, in order
    keys = {key for key, _, _ in read["ticks-batches"]}
    assert 1 < len(keys) <= SHARDS  # a bounded number of ordering keys
    signals = by_symbol(read["signals-batches"])
    want = {}
    for seq, (_, sig) in enumerate(stream(), start=1):
        for i in range(len(sig)):
            row = sig.row(i)
            want.setdefault(row.symbol, []).append(
                [seq, row.symbol, row.ts_ns, row.direction, pytest.approx(row.strength),
                 pytest.approx(row.confidence), "signal_mlp/3", computed_at(seq), "local"]
            )  # fmt: skip
    assert signals == want


def test_a_consumer_with_stock_libraries_reads_pubsub_messages_and_their_attributes(
    tmp_path: Path,
) -> None:
    client = FakePublisherClient()
    publish(tmp_path, PublishConfig(sink="pubsub", project="proj", max_latency_ms=5,
                                    dead_letter_dir=tmp_path / "dead"), client)  # fmt: skip
    topics: dict[str, dict[str, list[Any]]] = {}
    for topic, data, key, attrs in client.published:
        messages = topics.setdefault(topic, {"messages": []})["messages"]
        messages.append([key, attrs, base64.b64encode(data).decode()])
    assert set(topics) == {"ticks-batches", "signals-batches", "ticks", "signals"}
    read = consume(tmp_path, topics)
    assert by_symbol(read["ticks-batches"]) == expected_ticks()
    whole = by_symbol(read["ticks"])  # the schema topic: each service batch whole
    assert {s: [r[:3] for r in rows] for s, rows in expected_ticks().items()} == whole
    signals = [row for _, _, rows in read["signals"] for row in rows]
    assert len(signals) == sum(len(sig) for _, sig in stream())
    assert all(row[3] == computed_at(row[0]) for row in signals)


# --- the service's own encoders: replies, spool records, incoming tick columns ---------------


def _signals(n: int, seed: int, strings: bool = True) -> SignalColumns:
    rng = np.random.default_rng(seed)
    return SignalColumns(rng.integers(0, 70_000, n).astype(np.int32),
                         rng.integers(0, 2**62, n).astype(np.int64),
                         rng.integers(1, 4, n).astype(np.int8),
                         rng.uniform(-1, 1, n).astype(np.float32),
                         rng.uniform(0.3, 1, n).astype(np.float32),
                         *(("signal_mlp/3", "int8", "ab" * 32, "local") if strings else ("",)))  # fmt: skip


@pytest.mark.parametrize(("n", "batch_id", "computed_at", "strings", "rejected"), [
    (0, 0, 0, False, []), (0, 7, COMPUTED_AT, True, [0, 3]), (1, 2**40, COMPUTED_AT, True, []),
    (57, 9, COMPUTED_AT, True, [1, 2, 200]), (57, 9, 0, False, []),
])  # fmt: skip
def test_replies_and_spool_records_are_the_bytes_protobuf_writes(
    n: int, batch_id: int, computed_at: int, strings: bool, rejected: list[int]
) -> None:
    """The service writes its replies and spool records from columns, not through message
    objects: the bytes must be exactly protobuf's for the same message, so any reader
    (a client, the spool's recovery, another replica) parses the same values."""
    from app.ingest import Delivery, reply_of, spool_record
    from app.pipeline import IngestResult
    from app.proto import load

    pb2, _ = load()
    signals = _signals(n, seed=n + batch_id, strings=strings)
    reasons = np.zeros(300, np.uint8)
    reasons[rejected] = 4
    reply = reply_of(batch_id, IngestResult(reasons, signals), computed_at)
    ack = pb2.IngestAck(batch_id=batch_id, accepted=300 - len(rejected), rejected=len(rejected),
                        rejected_index=rejected, rejected_reason=[4] * len(rejected), signals=n)  # fmt: skip
    message = pb2.SignalBatch(batch_id=batch_id, symbol=signals.symbol.tolist(),
                              ts_ns=signals.ts_ns.tolist(), direction=signals.direction.tolist(),
                              strength=signals.strength.tolist(),
                              confidence=signals.confidence.tolist(),
                              model_version=signals.model_version, ack=ack,
                              computed_at_ns=computed_at, model_variant=signals.model_variant,
                              model_sha256=signals.model_sha256, backend=signals.backend)  # fmt: skip
    assert reply.data == message.SerializeToString() and reply.ack == ack

    ticks, _ = synthetic_ticks(SYMBOLS, 5, seed=n)
    features = np.random.default_rng(n).normal(size=(n, len(FEATURES)))
    delivery = Delivery(3, ticks, signals, features, computed_at, reply=reply)
    request = pb2.TickBatch(batch_id=batch_id, producer="feed-1" if strings else "")
    record = spool_record(request, b"\x01" * 16, delivery, 41)
    parsed = pb2.SpoolRecord.FromString(record)
    expected = pb2.SpoolRecord(seq=41, producer=request.producer, batch_id=batch_id,
                               fingerprint=b"\x01" * 16, spooled_at_ns=parsed.spooled_at_ns,
                               ticks=pb2.TickBatch(symbol=ticks.symbol.tolist(),
                                                   price=ticks.price.tolist(),
                                                   size=ticks.size.tolist(),
                                                   ts_ns=ticks.ts_ns.tolist()),
                               reply=message, features=features.ravel().tolist())  # fmt: skip
    assert record == expected.SerializeToString()


def _unpacked(message: Any) -> bytes:
    """A TickBatch with its columns written one value per field (unpacked): valid protobuf
    that no packed reader may take for packed."""
    from app.batch_format import length_delimited, varint

    out = b""
    for s in message.symbol:
        out += b"\x08" + varint(s & (2**64 - 1))
    for field, name in ((2, "price"), (3, "size")):
        for v in getattr(message, name):
            out += bytes([field << 3 | 1]) + np.float64(v).tobytes()
    for t in message.ts_ns:
        out += b"\x21" + np.int64(t).tobytes()
    return out + b"\x28" + varint(message.batch_id) + length_delimited(6, message.producer.encode())


def test_incoming_tick_columns_are_read_from_the_bytes_whatever_their_layout() -> None:
    """The server reads a TickBatch's columns straight from its packed fields; any other
    valid layout (unpacked, split) is read through the parsed message, with the same result."""
    from app.batch_format import tick_columns
    from app.proto import load
    from app.server import Received, decode_tick_batch

    pb2, _ = load()
    rng = np.random.default_rng(8)
    for n in (1, 3, 500):
        symbol = rng.integers(0, 5000, n).astype(np.int32)
        symbol[0] = -3  # ten varint bytes: refused later as unknown, read right here
        message = pb2.TickBatch(symbol=symbol.tolist(), price=rng.uniform(1, 500, n).tolist(),
                                size=rng.integers(1, 900, n).astype(float).tolist(),
                                ts_ns=(COMPUTED_AT + np.arange(n)).tolist(), batch_id=n,
                                producer="p")  # fmt: skip
        want = [np.array(getattr(message, f), dtype) for f, dtype in
                (("symbol", np.int32), ("price", np.float64), ("size", np.float64),
                 ("ts_ns", np.int64))]  # fmt: skip
        packed = tick_columns(message.SerializeToString())
        assert packed is not None
        for got, expected in zip(packed, want, strict=True):
            assert got.dtype == expected.dtype and np.array_equal(got, expected)
            assert got.flags.writeable and got.flags.aligned
        unpacked = _unpacked(message)
        assert pb2.TickBatch.FromString(unpacked) == message
        assert tick_columns(unpacked) is None
        split = message.SerializeToString() + pb2.TickBatch(price=[1.0]).SerializeToString()
        assert tick_columns(split) is None  # a second piece of price: through the message
        symbol[0] = 3
        message.symbol[0] = 3
        for data in (message.SerializeToString(), _unpacked(message)):
            d = decode_tick_batch(Received(pb2.TickBatch.FromString(data), data), 5000, 1000)
            for got, expected in zip((d.symbol, d.price, d.size, d.ts_ns), [symbol, *want[1:]],
                                     strict=True):  # fmt: skip
                assert np.array_equal(got, expected)


def test_the_compiled_tick_reader_walks_every_field_and_refuses_what_it_cannot_read() -> None:
    """`tick_columns` reads each column (symbols at the edges of int32, negative ones as
    ten-byte varints) whatever the other fields around them (varints, 64- and 32-bit,
    length-delimited, unknown numbers), and a missing column as empty; it answers None for
    a column in several pieces or unpacked, and for bytes cut short or not protobuf."""
    from app.batch_format import length_delimited, packed, tick_columns, varint
    from app.proto import load

    pb2, _ = load()
    symbol = np.array([0, 1, 127, 128, 16383, 16384, 2**31 - 1, -1, -(2**31), -300], np.int32)
    n = len(symbol)
    price, size = np.linspace(-1e300, 1e300, n), np.array([0.0, -0.0, np.inf, np.nan] * 3)[:n]
    ts_ns = np.array([-(2**63), 2**63 - 1, *range(n - 2)], np.int64)
    columns = [packed(1, symbol), packed(2, price, "<f8"), packed(3, size, "<f8"),
               packed(4, ts_ns, "<i8")]  # fmt: skip
    others = [b"\x28" + varint(2**64 - 1), length_delimited(6, b"desk"),
              b"\x39" + bytes(8), b"\x45" + bytes(4), length_delimited(99, b"\x80" * 9),
              b"\xf8\x07" + varint(5)]  # fmt: skip
    for order in (columns + others, others[::-1] + columns[::-1],
                  [x for pair in zip(others, columns, strict=False) for x in pair] + others[4:]):  # fmt: skip
        data = b"".join(order)
        message = pb2.TickBatch.FromString(data)  # valid protobuf, unknown fields and all
        read = tick_columns(data)
        assert read is not None
        for got, want in zip(read, (symbol, price, size, ts_ns), strict=True):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        assert read[0].tolist() == list(message.symbol)
    only_prices = tick_columns(columns[1])
    assert only_prices is not None and [len(c) for c in only_prices] == [0, n, 0, 0]
    assert [len(c) for c in tick_columns(b"") or ()] == [0, 0, 0, 0]
    whole = b"".join(columns)
    refused = {
        "symbols in two pieces": packed(1, symbol[:3]) + whole,
        "an unpacked symbol": whole + b"\x08\x05",
        "an unpacked price": b"\x11" + bytes(8) + whole,
        "a varint over ten bytes": length_delimited(1, b"\xff" * 10 + b"\x01") + columns[1],
        "a symbol cut short": length_delimited(1, b"\x05\x80"),
        "a price cut short": length_delimited(2, bytes(12)),
        "a length past the end": whole + b"\x32\x09abc",
        "a key cut short": whole + b"\xff",
        "a varint field cut short": whole + b"\x28\xff",
        "a 64-bit field cut short": whole + b"\x39" + bytes(7),
        "a group": whole + b"\x3b\x3c",
        "wire type 7": whole + b"\x3f",
    }
    for case, data in refused.items():
        assert tick_columns(data) is None, case
    for case in ("symbols in two pieces", "an unpacked symbol", "an unpacked price"):
        pb2.TickBatch.FromString(refused[case])  # valid: the server reads the message


def test_get_signal_answers_the_bytes_protobuf_writes_for_the_signal() -> None:
    """GetSignal writes its answer's bytes (`signal_bytes`) without building a ``Signal``:
    byte for byte what the message serializes to, defaults (0, 0.0, "") left out, -0.0 and
    NaN written, a double beyond float32 cast as protobuf casts it."""
    from app.batch_format import signal_bytes
    from app.proto import load
    from app.signals import Signal

    pb2, _ = load()
    rng = np.random.default_rng(5)
    floats = [0.0, -0.0, 0.25, -1.0, float(np.float32(0.1)), 1e-45, np.nan, np.inf, -np.inf,
              3.4e38, 3.5e38, -1e300, float(rng.uniform(-1, 1))]  # fmt: skip
    models = [("signal_mlp/3", "int8", "ab" * 32, "local"), ("", "", "", ""),
              ("m/ü", "fp32", "", "kserve")]  # fmt: skip
    cases = 0
    for symbol in (0, 1, 127, 128, 999, 2**31 - 1, -5):
        for ts_ns, direction, computed_at in ((0, 0, 0), (1_700_000_000_000_000_000, 3, 17),
                                              (-(2**63), 1, -1), (2**63 - 1, 2, 2**63 - 1),
                                              (5, -1, COMPUTED_AT), (5, 300, 0)):  # fmt: skip
            for k, model in enumerate(models):
                strength, confidence = floats[(symbol + k) % 13], floats[(ts_ns + 3 * k) % 13]
                signal = Signal(symbol, ts_ns, direction, strength, confidence, *model)
                message = pb2.Signal(symbol=symbol, ts_ns=ts_ns, direction=direction,
                                     strength=strength, confidence=confidence,
                                     model_version=model[0], computed_at_ns=computed_at,
                                     model_variant=model[1], model_sha256=model[2],
                                     backend=model[3])  # fmt: skip
                got = signal_bytes(signal, computed_at)
                assert got == message.SerializeToString(), (signal, computed_at)
                cases += 1
    for strength in floats:  # every float in the common case too (all fields written)
        for confidence in floats:
            signal = Signal(7, 11, 3, strength, confidence, *models[0])
            message = pb2.Signal(symbol=7, ts_ns=11, direction=3, strength=strength,
                                 confidence=confidence, model_version=models[0][0],
                                 computed_at_ns=13, model_variant=models[0][1],
                                 model_sha256=models[0][2], backend=models[0][3])  # fmt: skip
            assert signal_bytes(signal, 13) == message.SerializeToString(), signal
    assert cases == 7 * 6 * 3


def test_the_clients_tick_batches_are_the_bytes_protobuf_writes() -> None:
    """`SignalClient` writes each part's TickBatch from its columns: exactly the message."""
    from app.client import tick_batch_bytes
    from app.proto import load

    pb2, _ = load()
    ticks, _ = synthetic_ticks(SYMBOLS, 7, seed=9)
    cols = (ticks.symbol, ticks.price, ticks.size, ticks.ts_ns)
    for batch_id, producer in ((0, ""), (1, "replay-7"), (2**63 + 5, "é" * 40)):
        message = pb2.TickBatch(symbol=ticks.symbol.tolist(), price=ticks.price.tolist(),
                                size=ticks.size.tolist(), ts_ns=ticks.ts_ns.tolist(),
                                batch_id=batch_id, producer=producer)  # fmt: skip
        assert tick_batch_bytes(*cols, batch_id, producer) == message.SerializeToString()


@pytest.mark.parametrize("shards", [1, 4, 16])
def test_published_entries_are_the_bytes_protobuf_writes(shards: int) -> None:
    """Each group's fragment is exactly a BatchPayload of its one entry and its sequence
    number, as protobuf writes it (so joined fragments parse as one BatchPayload)."""
    from app.batch_format import signal_entries, tick_entries
    from app.proto import load

    pb2, _ = load()
    ticks, _ = synthetic_ticks(SYMBOLS, 9, seed=shards)
    ticks = TickColumns(ticks.symbol * 997, ticks.price, ticks.size, ticks.ts_ns)  # 3-byte ids
    groups = ShardTable(int(ticks.symbol.max()) + 1, shards).of(ticks.symbol)
    for seq in (1, 300, 2**40):
        for group, fragment, rows, at_seq in tick_entries(groups, seq, ticks.symbol, ticks.price,
                                                  ticks.size, ticks.ts_ns):  # fmt: skip
            at = np.flatnonzero(groups == group)
            entry = pb2.TickBatch(symbol=ticks.symbol[at].tolist(), price=ticks.price[at].tolist(),
                                  size=ticks.size[at].tolist(), ts_ns=ticks.ts_ns[at].tolist())  # fmt: skip
            assert rows == len(at) and at_seq == seq
            assert fragment == pb2.BatchPayload(ticks=[entry], seq=[seq]).SerializeToString()
        signals = _signals(50, seed=seq % 97)
        signals = SignalColumns(signals.symbol % (int(ticks.symbol.max()) + 1), *(
            getattr(signals, f) for f in ("ts_ns", "direction", "strength", "confidence",
                                          "model_version", "model_variant", "model_sha256",
                                          "backend")))  # fmt: skip
        of = ShardTable(int(ticks.symbol.max()) + 1, shards).of(signals.symbol)
        for computed_at in (0, COMPUTED_AT):
            for group, fragment, rows, at_seq in signal_entries(of, seq, signals, computed_at):
                at = np.flatnonzero(of == group)
                entry = pb2.SignalBatch(
                    symbol=signals.symbol[at].tolist(), ts_ns=signals.ts_ns[at].tolist(),
                    direction=signals.direction[at].tolist(),
                    strength=signals.strength[at].tolist(),
                    confidence=signals.confidence[at].tolist(),
                    model_version=signals.model_version, computed_at_ns=computed_at,
                    model_variant=signals.model_variant, model_sha256=signals.model_sha256,
                    backend=signals.backend,
                )  # fmt: skip
                assert rows == len(at) and at_seq == seq
                assert fragment == pb2.BatchPayload(signals=[entry], seq=[seq]).SerializeToString()
