"""Warehouse writes: batched, in exactly the declared schemas, retried, bounded; L3 reads."""

from __future__ import annotations

import asyncio
import dataclasses
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

from app.schemas import DUCKDB_TYPES, Table, table, tables
from app.settings.warehouse import WarehouseConfig
from app.signals import DIRECTION_DOWN, DIRECTION_FLAT, DIRECTION_UP, Signal, SignalColumns
from app.telemetry import Metrics
from app.warehouse import (
    BigQuerySink,
    Columns,
    DuckDBSink,
    Warehouse,
    WarehouseBackpressure,
    check_columns,
)
from tests.app.conftest import run

T0 = 1_700_000_000_000_000_000  # ns, on a microsecond boundary


def tick_columns(n: int, start: int = 0) -> dict[str, Any]:
    i = np.arange(start, start + n)
    return {
        "symbol": (i % 7).astype(np.int64),
        "event_time": T0 + i.astype(np.int64) * 1000,
        "ts_ns": T0 + i.astype(np.int64) * 1000,
        "price": 100.0 + i * 0.01,
        "size": (i % 5 + 1).astype(np.float64),
    }


def feature_columns(n: int) -> dict[str, Any]:
    cols: dict[str, Any] = {"symbol": np.full(n, 3, dtype=np.int64),
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

    async def write(self, table: Table, columns: Columns, seqs: Sequence[int] = ()) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise ConnectionError("warehouse unreachable (on purpose)")
        await self.inner.write(table, columns, seqs)
        self.writes.append((table.name, len(columns["symbol"])))

    def __getattr__(self, name: str) -> Any:  # reads, ledger, retention, close: the real sink
        return getattr(self.inner, name)


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
    with pytest.raises(ValueError, match=r"ticks.symbol: dtype object does not hold INT64"):
        check_columns(ticks, {**tick_columns(3), "symbol": np.array(["A", "B", "C"], object)})
    with pytest.raises(ValueError, match=r"ticks.price: 2 values, other columns 3"):
        check_columns(ticks, {**tick_columns(3), "price": np.array([1.0, 2.0])})
    with pytest.raises(
        ValueError, match=r"ticks.event_time: dtype float64 does not hold TIMESTAMP"
    ):
        check_columns(ticks, {**tick_columns(3), "event_time": np.array([1.0, 2.0, 3.0])})
    with pytest.raises(ValueError, match=r"ticks.price: REQUIRED, but some values are NaN"):
        check_columns(ticks, {**tick_columns(3), "price": np.array([1.0, np.nan, 2.0])})
    signal_row = {
        "symbol": np.array([1]), "ts_ns": np.array([T0]), "direction": np.array([3]),
        "strength": np.array([0.1]), "confidence": np.array([0.5]),
        "model_version": np.array([None], dtype=object),
    }  # fmt: skip
    check_columns(table("signals"), signal_row)  # NULLABLE, as Pub/Sub needs: accepted
    required = dataclasses.replace(table("signals"), columns=tuple(
        dataclasses.replace(c, mode="REQUIRED") if c.name == "model_version" else c
        for c in table("signals").columns))  # fmt: skip
    with pytest.raises(
        ValueError, match=r"signals.model_version: REQUIRED, but some values are null"
    ):
        check_columns(required, signal_row)


def test_duckdb_tables_and_rows_match_the_declared_schemas(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = DuckDBSink(tmp_path / "w.duckdb")
        # Rows of 2023: no retention, or the embedded warehouse would expire them at once.
        w = Warehouse(WarehouseConfig(batch_rows=10, retention_days=None), sink,
                      Metrics(CollectorRegistry()))  # fmt: skip
        w.append("ticks", tick_columns(25))
        w.append("features", feature_columns(4))
        w.append_signals([Signal(5, T0 + 5000, DIRECTION_UP, 0.5, 0.75, "m/1")])
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
        assert first[0] == 0 and first[2] == T0 and first[3] == 100.0 and first[4] == 1.0
        assert first[1] == dt.datetime(2023, 11, 14, 22, 13, 20)  # ns → µs TIMESTAMP, exact
        assert rows[1][1] - first[1] == dt.timedelta(microseconds=1)
        rsi = await sink.query("SELECT rsi FROM features ORDER BY event_time LIMIT 2")
        assert rsi == [(None,), (1 / 3,)]  # NaN (before warm-up) is stored as NULL
        assert (await sink.query("SELECT * FROM signals")) == [
            (5, T0 + 5000, DIRECTION_UP, 0.5, 0.75, "m/1", None, "", "", "")]  # fmt: skip
        await w.close()

    run(scenario())


def test_writes_are_batched_by_rows_and_by_time(tmp_path: Path) -> None:
    async def until(condition: Any, timeout: float = 5.0) -> float:
        t0 = time.monotonic()
        while not condition():
            assert time.monotonic() - t0 < timeout, "condition not met in time"
            await asyncio.sleep(0.005)
        return time.monotonic() - t0

    async def scenario() -> None:
        sink = RecordingSink(DuckDBSink(":memory:"))
        cfg = WarehouseConfig(batch_rows=50, flush_interval_s=0.6)
        w = Warehouse(cfg, sink, Metrics(CollectorRegistry()))
        w.start()
        for i in range(5):
            w.append("ticks", tick_columns(10, start=10 * i))
        waited = await until(lambda: sink.writes == [("ticks", 50)])  # the size bound
        assert waited < 0.5  # well before the time bound
        appended = time.monotonic()
        w.append("ticks", tick_columns(3, start=50))
        await asyncio.sleep(0.1)
        assert sink.writes == [("ticks", 50)]  # 3 rows wait for the time bound ...
        await until(lambda: len(sink.writes) == 2)
        assert sink.writes[1] == ("ticks", 3)  # ... and then go
        assert time.monotonic() - appended >= 0.5
        await w.close()

    run(scenario())


def test_failed_writes_are_retried_and_a_full_backlog_pushes_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry())
        duck = DuckDBSink(tmp_path / "w.duckdb")
        sink = RecordingSink(duck, fail=3)
        cfg = WarehouseConfig(batch_rows=10, max_backlog_rows=40, flush_interval_s=0.05,
                              retry_initial_s=0.02, retry_max_s=0.05,
                              retention_days=None)  # fmt: skip
        w = Warehouse(cfg, sink, metrics)
        w.start()
        for i in range(4):
            w.append("ticks", tick_columns(10, start=10 * i))
        with pytest.raises(WarehouseBackpressure, match="backlog full"):
            w.reserve(1)
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
        old = Signal(1, now - 5 * 86_400 * 10**9, DIRECTION_UP, 0.125, 0.5, "m/1")  # too old
        recs = [Signal(1, now - 2, DIRECTION_DOWN, -0.25, 0.625, "m/1"),
                Signal(1, now - 1, DIRECTION_FLAT, 0.0, 0.875, "m/2"),
                Signal(2, now - 3, DIRECTION_UP, 0.375, 0.75, "m/2"), old]  # fmt: skip
        w.append_signals(recs)
        await w.flush(10)
        latest = await w.latest_signals([1, 2, 3])
        assert latest == {1: recs[1], 2: recs[2]}  # ns-exact: ts_ns is an INT64 column
        w.append_signals([Signal(4, old.ts_ns, DIRECTION_UP, 0.125, 0.5, "m/1")])
        await w.flush(10)
        assert await w.latest_signals([4]) == {}  # outside history_days
        await w.close()

    run(scenario())


def test_nanoseconds_survive_the_round_trip_through_the_warehouse(tmp_path: Path) -> None:
    """Two ticks 400 ns apart share a microsecond of event_time; ts_ns keeps them apart and
    in order, and the one-minute bars built from the warehouse's rows close on the later."""
    from infra.warehouse import load_sql
    from tests.infra.test_sql import to_duckdb

    async def scenario() -> None:
        sink = DuckDBSink(tmp_path / "w.duckdb")
        w = Warehouse(WarehouseConfig(batch_rows=10, retention_days=None), sink,
                      Metrics(CollectorRegistry()))  # fmt: skip
        t = T0 + 123_456_000  # on a microsecond boundary
        later, earlier = t + 700, t + 300
        # Appended (and published) in arrival order: the later tick arrived first.
        w.append_ticks(np.array([7, 7]), np.array([101.0, 100.0]), np.array([1.0, 1.0]),
                       np.array([later, earlier]))  # fmt: skip
        await w.flush(10)
        rows = await sink.query("SELECT ts_ns, event_time, price FROM ticks ORDER BY ts_ns")
        assert [r[0] for r in rows] == [earlier, later]  # exact, and ordered
        assert rows[0][1] == rows[1][1]  # event_time cannot tell them apart
        bars = to_duckdb(load_sql("bars_1m", "p", "d"))
        assert await sink.query(f"SELECT open, close FROM ({bars})") == [(100.0, 101.0)]
        await w.close()

    run(scenario())


def test_a_replayed_batch_lands_in_each_table_once(tmp_path: Path) -> None:
    """Rows carry their batch's seq; DuckDB commits them with a ledger row per (table, seq),
    so after a crash a replay skips the tables that already hold the batch."""
    path = tmp_path / "w.duckdb"

    async def first_life() -> list[tuple[str, list[int]]]:
        written: list[tuple[str, list[int]]] = []
        w = Warehouse(WarehouseConfig(batch_rows=1000, retention_days=None), DuckDBSink(path),
                      Metrics(CollectorRegistry()))  # fmt: skip
        w.on_written = lambda table, seqs: written.append((table, seqs))
        w.append("ticks", tick_columns(5), seq=11)
        w.append("ticks", tick_columns(5, start=5), seq=12)
        w.append("ticks", tick_columns(10, start=20), seq=[14, 15])  # a group of two batches
        w.append_signals([Signal(1, T0, DIRECTION_UP, 0.5, 0.75, "m/1")], seq=11)
        await w.flush(10)
        await w.close()
        return written

    written = run(first_life())
    assert sorted(written) == [("signals", [11]), ("ticks", [11, 12, 14, 15])]

    async def after_restart() -> None:
        sink = DuckDBSink(path)
        w = Warehouse(WarehouseConfig(batch_rows=1000, retention_days=None), sink,
                      Metrics(CollectorRegistry()))  # fmt: skip
        assert w.prepare_replay(after_seq=10) == 15
        assert not w.append("ticks", tick_columns(5), seq=11, replay=True)  # held: skipped
        for seq in (14, 15):  # each batch of a group is held
            assert not w.append("ticks", tick_columns(5, start=20), seq=seq, replay=True)
        assert w.append_signals([Signal(2, T0, DIRECTION_UP, 0.5, 0.75, "m/1")], seq=12,
                                replay=True)  # fmt: skip
        assert w.append("ticks", tick_columns(5, start=10), seq=13, replay=True)
        await w.flush(10)
        assert await sink.query("SELECT count(*), count(DISTINCT ts_ns) FROM ticks") == [(25, 25)]
        assert await sink.query("SELECT count(*) FROM signals") == [(2,)]
        w.forget_batches_through(15)  # every sink has them: the ledger may let go
        deadline = time.monotonic() + 10
        while await sink.query("SELECT count(*) FROM _spool_batches") != [(0,)]:
            assert time.monotonic() < deadline, "the ledger kept rows no replay can ask for"
            await asyncio.sleep(0.05)
        await w.close()

    run(after_restart())


def test_the_embedded_warehouse_applies_the_retention(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = DuckDBSink(tmp_path / "w.duckdb")
        w = Warehouse(WarehouseConfig(retention_days=2, flush_interval_s=0.05), sink,
                      Metrics(CollectorRegistry()))  # fmt: skip
        now = time.time_ns()
        day = 86_400 * 10**9
        stamps = np.array([now - 5 * day, now - 3 * day, now - day, now])
        w.append_ticks(np.arange(4), np.full(4, 100.0), np.ones(4), stamps)
        w.append_signals([Signal(1, int(t), DIRECTION_UP, 0.5, 0.75, "m/1") for t in stamps])
        w.start()
        deadline = time.monotonic() + 10
        while (await sink.query("SELECT count(*) FROM ticks"))[0][0] != 2:
            assert time.monotonic() < deadline, "old rows were not expired"
            await asyncio.sleep(0.05)
        assert await sink.query("SELECT ts_ns FROM ticks ORDER BY ts_ns") == [
            (int(stamps[2]),), (int(stamps[3]),)]  # fmt: skip
        assert await sink.query("SELECT count(*) FROM signals") == [(2,)]
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
               "INT64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
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
                              retry_initial_s=0.01, write_signals=True)  # fmt: skip
        w = Warehouse(cfg, sink, metrics)
        w.append("ticks", tick_columns(7))
        w.append("features", feature_columns(3))
        w.append_signals([Signal(9, T0 + 1000, DIRECTION_DOWN, -0.5, 0.75, "m/7")])
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
        assert ticks[3].ts_ns == T0 + 3000  # and the nanoseconds beside it, exact
        assert (ticks[3].symbol, ticks[3].price, ticks[3].size) == (3, 100.03, 4.0)
        _, signals = decode_rows(by_table["signals"])
        assert (signals[0].symbol, signals[0].ts_ns, signals[0].direction) == (
            9, T0 + 1000, DIRECTION_DOWN)  # fmt: skip
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
    rows = [
        {"symbol": 4, "ts_ns": T0 + 7, "direction": DIRECTION_UP, "strength": 0.5,
         "confidence": 0.875, "model_version": "m/1"},
        {"symbol": 4, "ts_ns": T0 + 9, "direction": DIRECTION_DOWN, "strength": -0.5,
         "confidence": 0.625, "model_version": "m/1", "computed_at_ns": T0 + 50},
        {"symbol": 5, "ts_ns": T0 + 1, "direction": DIRECTION_FLAT, "strength": 0.0,
         "confidence": 0.5, "model_version": "m/2"},  # written before computed_at_ns existed
    ]  # fmt: skip
    client = FakeReadClient(rows)
    sink = BigQuerySink("proj", "signals", read_client=client)
    latest = run(sink.latest_timed([4, 5, 6], T0, T0 - 10))
    assert latest == {4: (Signal(4, T0 + 9, DIRECTION_DOWN, -0.5, 0.625, "m/1"), T0 + 50),
                      5: (Signal(5, T0 + 1, DIRECTION_FLAT, 0.0, 0.5, "m/2"), T0 + 1)}  # fmt: skip
    parent, session = client.sessions[0]
    assert parent == "projects/proj"
    assert session.table == "projects/proj/datasets/signals/tables/signals"
    assert session.read_options.row_restriction == (
        f"symbol IN (4, 5, 6) AND ts_ns >= {T0} AND IFNULL(computed_at_ns, ts_ns) >= {T0 - 10}"
    )
    assert list(session.read_options.selected_fields) == [
        "symbol", "ts_ns", "direction", "strength", "confidence", "model_version",
        "model_variant", "model_sha256", "backend", "computed_at_ns"]  # fmt: skip


def test_signals_go_to_the_warehouse_only_where_no_subscription_writes_them() -> None:
    cols = SignalColumns(
        symbol=np.array([3, 4], np.int32), ts_ns=np.array([T0, T0 + 1]),
        direction=np.array([DIRECTION_UP, DIRECTION_DOWN], np.int8),
        strength=np.array([0.5, -0.5], np.float32), confidence=np.array([0.75, 0.5], np.float32),
        model_version="m/3",
    )  # fmt: skip
    local = Warehouse(WarehouseConfig(), RecordingSink(DuckDBSink(":memory:")))
    local.append_signals(cols)
    assert local.backlog_rows == 2
    prod_cfg = WarehouseConfig(backend="bigquery", project="p")
    assert not prod_cfg.writes_signals  # the signals topic's BigQuery subscription does
    prod = Warehouse(prod_cfg, BigQuerySink("p", "signals", write_client=FakeWriteClient()))
    prod.append_signals(cols)
    assert prod.backlog_rows == 0
    rows = Warehouse(WarehouseConfig(), DuckDBSink(":memory:"))
    assert list(check_columns(table("signals"), {
        "symbol": cols.symbol.astype(np.int64), "ts_ns": cols.ts_ns,
        "direction": np.array([DIRECTION_UP, DIRECTION_DOWN], np.int64),
        "strength": cols.strength.astype(np.float64),
        "confidence": cols.confidence.astype(np.float64),
        "model_version": np.array(["m/3", "m/3"], object),
    })) == list(table("signals").column_names)  # fmt: skip
    run(rows.close())


def test_the_default_duckdb_file_is_per_run_and_removed_at_close() -> None:
    async def scenario() -> None:
        w = Warehouse.from_config(WarehouseConfig(), Metrics(CollectorRegistry()))
        assert isinstance(w.sink, DuckDBSink)
        path = Path(w.sink.path)
        w.append("ticks", tick_columns(3))
        await w.flush(5)
        assert path.is_file()
        await w.close()
        assert not path.exists()

    run(scenario())
