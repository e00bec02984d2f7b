"""Warehouse writes: batched, in exactly the declared schemas, retried, bounded; L3 reads."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.api_core import exceptions
from google.cloud.bigquery_storage_v1 import types
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from app.records import SignalRecord
from app.schemas import DUCKDB_TYPES, Table, table, tables
from app.telemetry import Metrics
from app.warehouse import (
    BigQuerySink,
    Columns,
    DuckDBSink,
    Warehouse,
    WarehouseBackpressure,
    WarehouseConfig,
    check_columns,
)
from tests.app.conftest import run

T0 = 1_700_000_000_000_000_000  # ns, on a microsecond boundary


def tick_columns(n: int, start: int = 0) -> dict[str, Any]:
    i = np.arange(start, start + n)
    return {
        "symbol": np.array([f"S{k % 7}" for k in i], dtype=object),
        "event_time": T0 + i.astype(np.int64) * 1000,
        "price": 100.0 + i * 0.01,
        "size": (i % 5 + 1).astype(np.float64),
    }


def feature_columns(n: int) -> dict[str, Any]:
    cols: dict[str, Any] = {"symbol": np.array(["AAPL"] * n, dtype=object),
                            "event_time": T0 + np.arange(n, dtype=np.int64) * 1000}  # fmt: skip
    for name in ("ema_fast", "ema_slow", "rsi", "volatility", "zscore", "vwap", "ofi"):
        cols[name] = np.linspace(0, 1, n)
    cols["rsi"][0] = np.nan  # before warm-up
    return cols


class RecordingSink:
    """A real DuckDB sink that records each write and can fail the first ``fail`` ones."""

    def __init__(self, inner: DuckDBSink, fail: int = 0) -> None:
        self.inner = inner
        self.fail = fail
        self.writes: list[tuple[str, int]] = []
        self.gate: asyncio.Event | None = None

    async def write(self, table: Table, columns: Columns) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise ConnectionError("warehouse unreachable (on purpose)")
        await self.inner.write(table, columns)
        self.writes.append((table.name, len(columns["symbol"])))

    async def latest_signals(self, symbols: Sequence[str], since_ns: int) -> Any:
        return await self.inner.latest_signals(symbols, since_ns)

    async def close(self) -> None:
        await self.inner.close()


def test_config_errors_name_field_value_and_rule() -> None:
    with pytest.raises(ValidationError, match="project must be set"):
        WarehouseConfig(backend="bigquery")
    with pytest.raises(ValidationError) as err:
        WarehouseConfig(batch_rows=100, max_backlog_rows=10)
    assert "max_backlog_rows = 10: must be >= batch_rows (100)" in str(err.value)
    with pytest.raises(ValidationError) as err:
        WarehouseConfig(backend="sqlite")  # type: ignore[arg-type]
    assert "backend" in str(err.value) and "'duckdb' or 'bigquery'" in str(err.value)


def test_rows_must_match_the_declared_schema() -> None:
    ticks = table("ticks")
    good = check_columns(ticks, tick_columns(3))
    assert list(good) == list(ticks.column_names)
    with pytest.raises(ValueError, match=r"missing required \['size'\]"):
        check_columns(ticks, {k: v for k, v in tick_columns(3).items() if k != "size"})
    with pytest.raises(ValueError, match=r"unknown \['venue'\]"):
        check_columns(ticks, {**tick_columns(3), "venue": np.array(["X"] * 3, dtype=object)})
    with pytest.raises(ValueError, match=r"ticks.price: 2 values, other columns 3"):
        check_columns(ticks, {**tick_columns(3), "price": np.array([1.0, 2.0])})
    with pytest.raises(
        ValueError, match=r"ticks.event_time: dtype float64 does not hold TIMESTAMP"
    ):
        check_columns(ticks, {**tick_columns(3), "event_time": np.array([1.0, 2.0, 3.0])})
    with pytest.raises(ValueError, match=r"ticks.price: REQUIRED, but some values are NaN"):
        check_columns(ticks, {**tick_columns(3), "price": np.array([1.0, np.nan, 2.0])})
    with pytest.raises(ValueError, match=r"signals.direction: REQUIRED, but some values are null"):
        check_columns(table("signals"), {
            "symbol": np.array(["A"], dtype=object), "event_time": np.array([T0]),
            "direction": np.array([None], dtype=object), "strength": np.array([0.1]),
            "confidence": np.array([0.5]), "model_version": np.array(["m"], dtype=object),
        })  # fmt: skip


def test_duckdb_tables_and_rows_match_the_declared_schemas(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = DuckDBSink(tmp_path / "w.duckdb")
        w = Warehouse(WarehouseConfig(batch_rows=10), sink, Metrics(CollectorRegistry()))
        w.append("ticks", tick_columns(25))
        w.append("features", feature_columns(4))
        w.append_signals([SignalRecord("AAPL", T0 + 5000, "UP", 0.5, 0.7, "m/1")])
        await w.flush(10)
        for name, tbl in tables().items():
            described = await sink.query(f"DESCRIBE {name}")
            assert [(r[0], r[1], r[2]) for r in described] == [
                (c.name, DUCKDB_TYPES[c.type], "NO" if c.mode == "REQUIRED" else "YES")
                for c in tbl.columns
            ], name
        rows = await sink.query("SELECT * FROM ticks ORDER BY event_time")
        assert len(rows) == 25
        first = rows[0]
        assert first[0] == "S0" and first[2] == 100.0 and first[3] == 1.0
        assert first[1] == dt.datetime(2023, 11, 14, 22, 13, 20)  # ns → µs TIMESTAMP, exact
        assert rows[1][1] - first[1] == dt.timedelta(microseconds=1)
        rsi = await sink.query("SELECT rsi FROM features ORDER BY event_time LIMIT 2")
        assert rsi == [(None,), (1 / 3,)]  # NaN (before warm-up) is stored as NULL
        assert (await sink.query("SELECT direction, model_version FROM signals")) == [("UP", "m/1")]
        await w.close()

    run(scenario())


def test_writes_are_batched_by_rows_and_by_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = RecordingSink(DuckDBSink(":memory:"))
        cfg = WarehouseConfig(batch_rows=50, flush_interval_s=0.2)
        w = Warehouse(cfg, sink, Metrics(CollectorRegistry()))
        w.start()
        for i in range(5):
            w.append("ticks", tick_columns(10, start=10 * i))
        await asyncio.sleep(0.05)  # the size bound fires at once
        assert sink.writes == [("ticks", 50)]
        w.append("ticks", tick_columns(3, start=50))
        await asyncio.sleep(0.05)
        assert sink.writes == [("ticks", 50)]  # 3 rows wait for the time bound ...
        await asyncio.sleep(0.4)
        assert sink.writes == [("ticks", 50), ("ticks", 3)]  # ... and then go
        await w.close()

    run(scenario())


def test_failed_writes_are_retried_and_a_full_backlog_pushes_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry())
        duck = DuckDBSink(tmp_path / "w.duckdb")
        sink = RecordingSink(duck, fail=3)
        cfg = WarehouseConfig(batch_rows=10, max_backlog_rows=40, flush_interval_s=0.05,
                              retry_initial_s=0.02, retry_max_s=0.05)  # fmt: skip
        w = Warehouse(cfg, sink, metrics)
        w.start()
        for i in range(4):
            w.append("ticks", tick_columns(10, start=10 * i))
        with pytest.raises(WarehouseBackpressure, match="backlog full"):
            w.append("ticks", tick_columns(1, start=99))  # full: refused, not dropped later
        assert w.backlog_rows == 40
        await w.flush(10)
        assert metrics.warehouse_failures.labels("ticks")._value.get() == 3
        assert metrics.warehouse_rows.labels("ticks")._value.get() == 40
        rows = await duck.query("SELECT count(*), count(DISTINCT event_time) FROM ticks")
        assert rows == [(40, 40)]  # every accepted row exactly once
        w.append("ticks", tick_columns(1, start=99))  # room again
        await w.close()

    run(scenario())


def test_latest_signals_reads_the_newest_row_per_symbol(tmp_path: Path) -> None:
    async def scenario() -> None:
        w = Warehouse.from_config(
            WarehouseConfig(duckdb_path=tmp_path / "w.duckdb"), Metrics(CollectorRegistry())
        )
        now = time.time_ns() // 1000 * 1000
        old = SignalRecord("AAPL", now - 5 * 86_400 * 10**9, "UP", 0.1, 0.5, "m/1")  # too old
        recs = [SignalRecord("AAPL", now - 2000, "DOWN", -0.2, 0.6, "m/1"),
                SignalRecord("AAPL", now - 1000, "FLAT", 0.0, 0.9, "m/2"),
                SignalRecord("MSFT", now - 3000, "UP", 0.3, 0.7, "m/2"), old]  # fmt: skip
        w.append_signals(recs)
        await w.flush(10)
        latest = await w.latest_signals(["AAPL", "MSFT", "TSLA"])
        assert latest == {"AAPL": recs[1], "MSFT": recs[2]}
        only_old = SignalRecord("IBM", old.event_time_ns, "UP", 0.1, 0.5, "m/1")
        w.append_signals([only_old])
        await w.flush(10)
        assert await w.latest_signals(["IBM"]) == {}  # outside history_days
        await w.close()

    run(scenario())


# --- BigQuery behind the seam: only the google client is fake ------------------------------


class FakeWriteClient:
    """Stands in for BigQueryWriteClient.append_rows (a bidi stream of requests)."""

    def __init__(self, fail: int = 0, row_error: bool = False) -> None:
        self.requests: list[Any] = []
        self.fail = fail
        self.row_error = row_error

    def append_rows(self, requests: Any) -> list[Any]:
        reqs = list(requests)
        if self.fail:
            self.fail -= 1
            raise exceptions.ServiceUnavailable("try again")
        if self.row_error:
            self.row_error = False
            return [types.AppendRowsResponse(row_errors=[types.RowError(index=0, message="bad")])]
        self.requests.extend(reqs)
        return [types.AppendRowsResponse(append_result=types.AppendRowsResponse.AppendResult())]


def decode_rows(request: Any) -> tuple[descriptor_pb2.DescriptorProto, list[Any]]:
    desc = descriptor_pb2.DescriptorProto()
    desc.CopyFrom(request.proto_rows.writer_schema.proto_descriptor)
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="t.proto", package="t", syntax="proto2")
    file.message_type.add().CopyFrom(desc)
    pool.Add(file)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"t.{desc.name}"))
    return desc, [cls.FromString(r) for r in request.proto_rows.rows.serialized_rows]


BQ_TO_PROTO = {"STRING": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
               "FLOAT64": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
               "TIMESTAMP": descriptor_pb2.FieldDescriptorProto.TYPE_INT64}  # fmt: skip
MODE_TO_LABEL = {"REQUIRED": descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED,
                 "NULLABLE": descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL}  # fmt: skip


def test_bigquery_appends_rows_in_the_declared_schema_to_the_default_stream() -> None:
    async def scenario() -> None:
        client = FakeWriteClient(fail=1)
        sink = BigQuerySink("proj", "signals", write_client=client)
        metrics = Metrics(CollectorRegistry())
        cfg = WarehouseConfig(backend="bigquery", project="proj", batch_rows=5,
                              retry_initial_s=0.01)  # fmt: skip
        w = Warehouse(cfg, sink, metrics)
        w.append("ticks", tick_columns(7))
        w.append("features", feature_columns(3))
        w.append_signals([SignalRecord("AAPL", T0 + 1000, "DOWN", -0.5, 0.8, "m/7")])
        await w.flush(10)
        by_table = {r.write_stream.split("/")[5]: r for r in client.requests}
        assert set(by_table) == {"ticks", "features", "signals"}
        for name, request in by_table.items():
            assert (
                request.write_stream
                == f"projects/proj/datasets/signals/tables/{name}/streams/_default"
            )
            desc, rows = decode_rows(request)
            declared = table(name).columns
            assert [f.name for f in desc.field] == [c.name for c in declared]
            assert [f.type for f in desc.field] == [BQ_TO_PROTO[c.type] for c in declared]
            assert [f.label for f in desc.field] == [MODE_TO_LABEL[c.mode] for c in declared]
            assert all(r.IsInitialized() for r in rows)  # every REQUIRED field present
        _, ticks = decode_rows(by_table["ticks"])
        assert len(ticks) == 7
        assert ticks[3].event_time == (T0 + 3000) // 1000  # TIMESTAMP as µs since the epoch
        assert (ticks[3].symbol, ticks[3].price, ticks[3].size) == ("S3", 100.03, 4.0)
        _, signals = decode_rows(by_table["signals"])
        assert (signals[0].direction, signals[0].confidence, signals[0].model_version) == (
            "DOWN", 0.8, "m/7")  # fmt: skip
        assert metrics.warehouse_failures.labels("ticks")._value.get() == 1  # retried
        await w.close()

    run(scenario())


def test_bigquery_row_errors_are_failures_not_silent_successes() -> None:
    client = FakeWriteClient(row_error=True)
    sink = BigQuerySink("proj", "signals", write_client=client)
    with pytest.raises(RuntimeError, match="AppendRows failed"):
        run(sink.write(table("ticks"), check_columns(table("ticks"), tick_columns(2))))


def test_large_batches_are_split_under_the_request_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.warehouse as warehouse

    monkeypatch.setattr(warehouse, "MAX_APPEND_BYTES", 200)
    sink = BigQuerySink("proj", "signals", write_client=FakeWriteClient())
    requests = sink.append_requests(table("ticks"), check_columns(table("ticks"), tick_columns(40)))
    sizes = [sum(len(r) for r in q.proto_rows.rows.serialized_rows) for q in requests]
    assert len(requests) > 1 and max(sizes) <= 200
    assert sum(len(q.proto_rows.rows.serialized_rows) for q in requests) == 40


class FakeReadClient:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.sessions: list[Any] = []

    def create_read_session(self, *, parent: str, read_session: Any, max_stream_count: int) -> Any:
        self.sessions.append((parent, read_session))
        return types.ReadSession(streams=[types.ReadStream(name="s0")])

    def read_rows(self, name: str) -> Any:
        rows = self.rows

        class Reader:
            def rows(self, _session: Any) -> list[dict[str, Any]]:
                return rows

        return Reader()


def test_bigquery_history_reads_restrict_by_symbol_and_time_and_keep_the_newest() -> None:
    ts = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    rows = [
        {"symbol": "AAPL", "event_time": ts, "direction": "UP", "strength": 0.5,
         "confidence": 0.9, "model_version": "m/1"},
        {"symbol": "AAPL", "event_time": ts - dt.timedelta(seconds=1), "direction": "DOWN",
         "strength": None, "confidence": 0.4, "model_version": "m/1"},
    ]  # fmt: skip
    client = FakeReadClient(rows)
    sink = BigQuerySink("proj", "signals", read_client=client)
    since = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
    latest = run(sink.latest_signals(["AAPL", "O'Neil"], since))
    assert latest["AAPL"].direction == "UP"
    assert latest["AAPL"].event_time_ns == int(ts.timestamp()) * 10**9 + 6000
    parent, session = client.sessions[0]
    assert parent == "projects/proj"
    assert session.table == "projects/proj/datasets/signals/tables/signals"
    restriction = session.read_options.row_restriction
    assert "symbol IN ('AAPL', 'O\\'Neil')" in restriction  # quoted, not injectable
    assert "event_time >= TIMESTAMP('2026-01-01 00:00:00+00')" in restriction
    assert list(session.read_options.selected_fields) == list(table("signals").column_names)
