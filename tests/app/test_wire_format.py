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

from app.datapath import DataPath
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
        for seq, (ticks, signals) in enumerate(stream(), start=1):
            features = np.zeros((len(signals), len(FEATURES)))
            admission = data_path.admit(len(ticks))
            data_path.deliver(seq, ticks, signals, features, COMPUTED_AT, admission)
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
                 pytest.approx(row.confidence), "signal_mlp/3", COMPUTED_AT, "local"]
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
    assert all(row[3] == COMPUTED_AT for row in signals)
