"""Warehouse writes and history reads: batched rows in the declared schemas, DuckDB or BigQuery.

`Warehouse` buffers rows per table (the schemas in ``app/schemas/tables.json``, the same
the infra declares) and writes them in batches through a `WarehouseSink`: a DuckDB file
(the embedded default) or BigQuery (the Storage Write API's default stream; history
read through the Storage Read API). It is also the cache's L3: ``latest_signals``.

NaN in a NULLABLE FLOAT64 column (an indicator before its warm-up) is written as NULL
by both sinks. Appends never block: rows go into a bounded backlog, and a full backlog raises
`WarehouseBackpressure` (the service answers RESOURCE_EXHAUSTED) instead of growing
without bound or dropping rows. Failed writes stay in the backlog and are retried with
backoff.

Exactly once: rows appended with the sequence number of the batch they belong to
(``seq``) are written by DuckDB in one transaction with a ledger row per (table, seq)
(``_spool_batches``), so after a crash the replay of a spooled batch skips the tables
that already hold it; `on_written` reports each table's batches as they land. BigQuery's
default stream is at-least-once: a batch written just before a crash may be written
again on replay, with the same ``ts_ns`` and values (deduplicate on them when reading).

Retention: the embedded DuckDB deletes rows older than ``retention_days`` (the warehouse's
partition expiration, applied locally) once an hour and at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from app.backoff import Backoff
from app.schemas import DUCKDB_TYPES, Table, tables
from app.settings.warehouse import WarehouseConfig
from app.signals import Signal, SignalColumns
from app.telemetry import Metrics, default_metrics

log = structlog.get_logger("app.warehouse")

Columns = dict[str, np.ndarray]  # one batch of one table: column name -> values, schema order
LEDGER = "_spool_batches"  # DuckDB: (table_name, seq) of every batch each table holds
RETENTION_CHECK_S = 3600.0

_NUMPY_KIND: dict[str, tuple[str, ...]] = {
    "STRING": ("O", "U"),
    "INT64": ("i", "u"),
    "FLOAT64": ("f", "i", "u"),
    "BOOL": ("b",),
    "TIMESTAMP": ("i",),  # integer nanoseconds since the epoch (UTC)
    "DATE": ("i",),  # days since the epoch
    "BYTES": ("O", "S"),
}


class WarehouseBackpressure(RuntimeError):
    """The backlog is full: the caller must slow down (nothing was accepted)."""


class WarehouseSink(Protocol):
    """Where batches land: DuckDB locally, BigQuery in production (tests fake the client).

    ``seqs``: the batches the rows belong to; a sink that can (DuckDB) records them in the
    same transaction and lists them in `delivered`.
    """

    async def write(self, table: Table, columns: Columns, seqs: Sequence[int] = ()) -> None: ...

    def delivered(self, after_seq: int) -> dict[str, set[int]]: ...

    async def latest_timed(
        self, symbols: Sequence[int], since_ns: int, computed_since_ns: int | None
    ) -> dict[int, tuple[Signal, int]]: ...

    async def expire(self, before_ns: int) -> int: ...

    async def forget_batches_through(self, seq: int) -> None: ...

    async def close(self) -> None: ...


def check_columns(tbl: Table, columns: Mapping[str, Any]) -> Columns:
    """``columns`` as numpy arrays, exactly the table's columns in its order, equal lengths,
    of the declared types; ValueError naming the table and column otherwise."""
    names = set(columns)
    declared = tbl.column_names
    missing = [c.name for c in tbl.columns if c.name not in names and c.mode == "REQUIRED"]
    unknown = sorted(names - set(declared))
    if missing or unknown:
        raise ValueError(
            f"{tbl.name}: columns do not match the declared schema "
            f"(missing required {missing}, unknown {unknown}); declared: {list(declared)}"
        )
    out: Columns = {}
    length: int | None = None
    for col in tbl.columns:
        raw = columns.get(col.name)
        if raw is None:
            if length is None:
                length = len(next(iter(columns.values())))
            arr = np.full(length, None, dtype=object)
        else:
            arr = np.asarray(raw)
        if arr.ndim != 1:
            raise ValueError(f"{tbl.name}.{col.name}: must be one-dimensional, got {arr.shape}")
        if length is None:
            length = len(arr)
        elif len(arr) != length:
            raise ValueError(f"{tbl.name}.{col.name}: {len(arr)} values, other columns {length}")
        if raw is not None and arr.dtype.kind not in _NUMPY_KIND[col.type] and len(arr):
            raise ValueError(
                f"{tbl.name}.{col.name}: dtype {arr.dtype} does not hold {col.type} "
                f"(allowed kinds: {_NUMPY_KIND[col.type]})"
            )
        if col.mode == "REQUIRED" and arr.dtype == object and any(v is None for v in arr):
            raise ValueError(f"{tbl.name}.{col.name}: REQUIRED, but some values are null")
        if col.mode == "REQUIRED" and arr.dtype.kind == "f" and np.isnan(arr).any():
            raise ValueError(f"{tbl.name}.{col.name}: REQUIRED, but some values are NaN")
        if col.type == "STRING" and arr.dtype.kind == "U":
            arr = arr.astype(object)
        out[col.name] = arr
    return out


def signal_columns(
    signals: Sequence[Signal] | SignalColumns, computed_at_ns: int | np.ndarray | None = None
) -> Columns:
    """`signals` rows (the Signal message's fields; direction by its enum number, as the
    BigQuery subscription writes it); ``computed_at_ns``: one for all rows or each row's;
    without it that column is NULL."""
    n = len(signals)
    if isinstance(signals, SignalColumns):
        columns: Columns = {
            "symbol": signals.symbol.astype(np.int64),
            "ts_ns": signals.ts_ns.astype(np.int64),
            "direction": signals.direction.astype(np.int64),
            "strength": signals.strength.astype(np.float64),
            "confidence": signals.confidence.astype(np.float64),
            "model_version": _repeated(signals.model_version, n),
            "model_variant": _repeated(signals.model_variant, n),
            "model_sha256": _repeated(signals.model_sha256, n),
            "backend": _repeated(signals.backend, n),
        }
    else:
        columns = {
            "symbol": np.array([s.symbol for s in signals], dtype=np.int64),
            "ts_ns": np.array([s.ts_ns for s in signals], dtype=np.int64),
            "direction": np.array([s.direction for s in signals], dtype=np.int64),
            "strength": np.array([s.strength for s in signals], dtype=np.float64),
            "confidence": np.array([s.confidence for s in signals], dtype=np.float64),
            "model_version": np.array([s.model_version for s in signals], dtype=object),
            "model_variant": np.array([s.model_variant for s in signals], dtype=object),
            "model_sha256": np.array([s.model_sha256 for s in signals], dtype=object),
            "backend": np.array([s.backend for s in signals], dtype=object),
        }
    if computed_at_ns is not None:
        columns["computed_at_ns"] = np.broadcast_to(np.asarray(computed_at_ns, np.int64), (n,))
    return columns


_REPEATED: dict[str, np.ndarray] = {}  # text -> a read-only object column of it, grown as needed


def _repeated(text: str, n: int) -> np.ndarray:
    """``n`` times ``text`` as an object column: a view of one kept per text (a batch's
    model fields are the same for every signal; filling four new columns per batch cost
    more than the rest of its warehouse rows)."""
    column = _REPEATED.get(text)
    if column is None or len(column) < n:
        if len(_REPEATED) >= 64:  # model texts change rarely: a bound, not a working set
            _REPEATED.clear()
        column = _REPEATED[text] = np.full(max(n, 4096), text, dtype=object)
        column.flags.writeable = False
    return column[:n]


# The columns L3 reads back: a Signal, then when it was computed (NULL: by its tick time).
_SIGNAL_FIELDS = ("symbol", "ts_ns", "direction", "strength", "confidence", "model_version",
                  "model_variant", "model_sha256", "backend")  # fmt: skip


def _timed_from_row(row: Sequence[Any]) -> tuple[Signal, int]:
    symbol, ts_ns, direction, strength, confidence, model_version, *model, computed_at = row
    signal = Signal(int(symbol), int(ts_ns), int(direction), float(strength),
                    float(confidence), model_version, *(m or "" for m in model))  # fmt: skip
    return signal, int(ts_ns if computed_at is None else computed_at)


# --- DuckDB (embedded default) -------------------------------------------------------------


class DuckDBSink:
    """A DuckDB file with every declared table; one worker thread owns the connection
    (DuckDB calls block, and a connection must not be used by two threads at once)."""

    def __init__(self, path: Path | str | None) -> None:
        import duckdb

        self._tempdir = tempfile.mkdtemp(prefix="signal-warehouse-") if path is None else None
        self.path = str(Path(self._tempdir) / "warehouse.duckdb") if self._tempdir else str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb")
        try:
            self._con = duckdb.connect(self.path)
        except duckdb.IOException as exc:  # another process holds the file's lock
            mine = Path(self.path)
            self.path = str(mine.with_name(f"{mine.stem}-{os.getpid()}{mine.suffix}"))
            log.warning("warehouse_file_locked", path=str(mine), using=self.path, error=str(exc))
            self._con = duckdb.connect(self.path)
        existing = {
            r[0] for r in self._con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        for tbl in tables().values():
            if tbl.name not in existing:
                self._con.execute(tbl.duckdb_ddl())
            else:  # a file from before a column was added: add it (NULL in old rows)
                have = {r[0] for r in self._con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [tbl.name]
                ).fetchall()}  # fmt: skip
                for col in tbl.columns:
                    if col.name not in have:
                        self._con.execute(f"ALTER TABLE {tbl.name} ADD COLUMN {col.name} "
                                          f"{DUCKDB_TYPES[col.type]}")  # fmt: skip
        self._con.execute(f"CREATE TABLE IF NOT EXISTS {LEDGER} (table_name VARCHAR NOT NULL, "
                          "seq BIGINT NOT NULL)")  # fmt: skip

    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _insert(self, tbl: Table, columns: Columns, seqs: Sequence[int]) -> None:
        select = ", ".join(
            f"make_timestamp(CAST({c.name} // 1000 AS BIGINT)) AS {c.name}"
            if c.type == "TIMESTAMP"
            else c.name
            for c in tbl.columns
        )
        con = self._con
        con.register("_batch", columns)
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"INSERT INTO {tbl.name} SELECT {select} FROM _batch")
                if seqs:  # the rows and the batches they complete land together, or neither
                    con.execute(f"INSERT INTO {LEDGER} SELECT ?, unnest(?::BIGINT[])",
                                [tbl.name, list(seqs)])  # fmt: skip
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.unregister("_batch")

    async def write(self, table: Table, columns: Columns, seqs: Sequence[int] = ()) -> None:
        await self._run(lambda: self._insert(table, columns, seqs))

    def delivered(self, after_seq: int) -> dict[str, set[int]]:
        """Batches after ``after_seq`` each table holds (called at start, before writes)."""
        out: dict[str, set[int]] = {}
        rows = self._con.execute(f"SELECT table_name, seq FROM {LEDGER} WHERE seq > ?",
                                 [after_seq]).fetchall()  # fmt: skip
        for name, seq in rows:
            out.setdefault(name, set()).add(int(seq))
        return out

    async def forget_batches_through(self, seq: int) -> None:
        """Drop ledger rows no replay can ask about any more (every sink has them)."""
        await self._run(lambda: self._con.execute(f"DELETE FROM {LEDGER} WHERE seq <= ?", [seq]))

    def _expire(self, before_ns: int) -> int:
        deleted = 0
        for tbl in tables().values():
            if tbl.partition_type == "DAY":
                where = f"{tbl.partition_field} < make_timestamp(CAST(? // 1000 AS BIGINT))"
            else:
                where = f"{tbl.partition_field} < ?"
            row = self._con.execute(f"DELETE FROM {tbl.name} WHERE {where}", [before_ns]).fetchone()
            deleted += int(row[0]) if row else 0
        return deleted

    async def expire(self, before_ns: int) -> int:
        """Delete rows older than ``before_ns`` (by each table's partitioning column)."""
        return await self._run(lambda: self._expire(before_ns))

    def _latest(
        self, symbols: Sequence[int], since_ns: int, computed_since_ns: int | None
    ) -> dict[int, tuple[Signal, int]]:
        rows = self._con.execute(
            f"""
            SELECT {", ".join(_SIGNAL_FIELDS)}, computed_at_ns
            FROM signals
            WHERE symbol IN (SELECT unnest(?::BIGINT[])) AND ts_ns >= ?
              AND coalesce(computed_at_ns, ts_ns) >= ?
            QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts_ns DESC) = 1
            """,
            [[int(s) for s in symbols], since_ns,
             since_ns if computed_since_ns is None else computed_since_ns],
        ).fetchall()  # fmt: skip
        return {int(r[0]): _timed_from_row(r) for r in rows}

    async def latest_timed(
        self, symbols: Sequence[int], since_ns: int, computed_since_ns: int | None
    ) -> dict[int, tuple[Signal, int]]:
        return await self._run(lambda: self._latest(symbols, since_ns, computed_since_ns))

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run SQL on the warehouse file (tests and tools)."""
        return await self._run(lambda: self._con.execute(sql, list(params)).fetchall())

    async def close(self) -> None:
        await self._run(self._con.close)
        self._executor.shutdown(wait=True)
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)


# --- BigQuery (production) -----------------------------------------------------------------

_PROTO_TYPES = {
    "STRING": "TYPE_STRING",
    "INT64": "TYPE_INT64",
    "FLOAT64": "TYPE_DOUBLE",
    "BOOL": "TYPE_BOOL",
    "TIMESTAMP": "TYPE_INT64",  # microseconds since the epoch, as the Write API takes it
    "DATE": "TYPE_INT32",  # days since the epoch
    "BYTES": "TYPE_BYTES",
}
_PROTO_LABELS = {"REQUIRED": "LABEL_REQUIRED", "NULLABLE": "LABEL_OPTIONAL",
                 "REPEATED": "LABEL_REPEATED"}  # fmt: skip
MAX_APPEND_BYTES = 9 * 1024 * 1024  # AppendRows requests must stay under 10 MB


@dataclass
class _RowProto:
    descriptor: Any  # descriptor_pb2.DescriptorProto
    message_class: Any


def row_descriptor(tbl: Table) -> Any:
    """The proto2 ``DescriptorProto`` of one row of ``tbl``, as the Write API requires."""
    from google.protobuf import descriptor_pb2

    desc = descriptor_pb2.DescriptorProto(name=f"{tbl.name}_row")
    for number, col in enumerate(tbl.columns, start=1):
        desc.field.add(
            name=col.name,
            number=number,
            type=getattr(descriptor_pb2.FieldDescriptorProto, _PROTO_TYPES[col.type]),
            label=getattr(descriptor_pb2.FieldDescriptorProto, _PROTO_LABELS[col.mode]),
        )
    return desc


def _row_proto(tbl: Table) -> _RowProto:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    desc = row_descriptor(tbl)
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(
        name=f"signal_warehouse_{tbl.name}.proto", package="signal_warehouse", syntax="proto2"
    )
    file.message_type.add().CopyFrom(desc)
    pool.Add(file)
    message = pool.FindMessageTypeByName(f"signal_warehouse.{desc.name}")
    return _RowProto(desc, message_factory.GetMessageClass(message))


def _to_python(col_type: str, value: Any) -> Any:
    if value is None:
        return None
    if col_type == "FLOAT64" and value != value:  # NaN: NULL, as DuckDB stores it
        return None
    if col_type == "TIMESTAMP":
        return int(value) // 1000  # ns -> µs
    if col_type in ("INT64", "DATE"):
        return int(value)
    if col_type == "FLOAT64":
        return float(value)
    if col_type == "BOOL":
        return bool(value)
    return value


class BigQuerySink:
    """BigQuery through the Storage Write API (default stream, at-least-once) for writes
    and the Storage Read API for history. ``write_client`` and ``read_client`` are the
    true edge: google-cloud-bigquery-storage's clients in production, fakes in tests."""

    def __init__(
        self,
        project: str,
        dataset: str,
        *,
        write_client: Any = None,
        read_client: Any = None,
    ) -> None:
        self.project = project
        self.dataset = dataset
        self._write_client = write_client
        self._read_client = read_client
        self._protos: dict[str, _RowProto] = {}

    def _writer(self) -> Any:
        if self._write_client is None:  # pragma: no cover - needs Google credentials
            from google.cloud import bigquery_storage_v1

            self._write_client = bigquery_storage_v1.BigQueryWriteClient()
        return self._write_client

    def _reader(self) -> Any:
        if self._read_client is None:  # pragma: no cover - needs Google credentials
            from google.cloud import bigquery_storage_v1

            self._read_client = bigquery_storage_v1.BigQueryReadClient()
        return self._read_client

    def table_path(self, name: str) -> str:
        return f"projects/{self.project}/datasets/{self.dataset}/tables/{name}"

    def append_requests(self, tbl: Table, columns: Columns) -> list[Any]:
        """The AppendRows requests carrying ``columns``, each under the 10 MB limit."""
        from google.cloud.bigquery_storage_v1 import types

        proto = self._protos.get(tbl.name)
        if proto is None:
            proto = self._protos[tbl.name] = _row_proto(tbl)
        n = len(next(iter(columns.values()))) if columns else 0
        col_specs = [(c.name, c.type, columns[c.name]) for c in tbl.columns]
        required = {c.name for c in tbl.columns if c.mode == "REQUIRED"}
        requests: list[Any] = []
        batch: list[bytes] = []
        size = 0

        def emit() -> None:
            rows = types.ProtoRows(serialized_rows=list(batch))
            data = types.AppendRowsRequest.ProtoData(
                writer_schema=types.ProtoSchema(proto_descriptor=proto.descriptor), rows=rows
            )
            requests.append(
                types.AppendRowsRequest(
                    write_stream=f"{self.table_path(tbl.name)}/streams/_default",
                    proto_rows=data,
                )
            )

        for i in range(n):
            message = proto.message_class()
            for name, col_type, values in col_specs:
                value = _to_python(col_type, values[i])
                if value is None and name in required:
                    raise ValueError(f"{tbl.name}.{name}[{i}]: REQUIRED, but the value is null")
                if value is not None:
                    setattr(message, name, value)
            row = message.SerializeToString()
            if batch and size + len(row) > MAX_APPEND_BYTES:
                emit()
                batch, size = [], 0
            batch.append(row)
            size += len(row)
        if batch:
            emit()
        return requests

    def _append(self, requests: list[Any]) -> None:
        responses = self._writer().append_rows(iter(requests))
        for response in responses:
            if response.error.code or list(response.row_errors):
                raise RuntimeError(
                    f"AppendRows failed: {response.error.message or response.row_errors}"
                )

    async def write(self, table: Table, columns: Columns, seqs: Sequence[int] = ()) -> None:
        requests = self.append_requests(table, columns)
        if requests:
            await asyncio.to_thread(self._append, requests)

    def delivered(self, after_seq: int) -> dict[str, set[int]]:
        return {}  # the default stream keeps no ledger: a replay writes again (at-least-once)

    async def forget_batches_through(self, seq: int) -> None:
        return None

    async def expire(self, before_ns: int) -> int:
        return 0  # BigQuery expires partitions itself (the dataset's partition expiration)

    def _latest(
        self, symbols: Sequence[int], since_ns: int, computed_since_ns: int | None
    ) -> dict[int, tuple[Signal, int]]:
        from google.cloud.bigquery_storage_v1 import types

        ids = ", ".join(str(int(s)) for s in symbols)  # integers: nothing to quote
        restriction = f"symbol IN ({ids}) AND ts_ns >= {int(since_ns)}"
        if computed_since_ns is not None:
            restriction += f" AND IFNULL(computed_at_ns, ts_ns) >= {int(computed_since_ns)}"
        session = self._reader().create_read_session(
            parent=f"projects/{self.project}",
            read_session=types.ReadSession(
                table=self.table_path("signals"),
                data_format=types.DataFormat.AVRO,
                read_options=types.ReadSession.TableReadOptions(
                    selected_fields=[*_SIGNAL_FIELDS, "computed_at_ns"],
                    # ts_ns is the range-partitioning column: the bound prunes partitions.
                    row_restriction=restriction,
                ),
            ),
            max_stream_count=1,
        )
        names = (*_SIGNAL_FIELDS, "computed_at_ns")
        latest: dict[int, tuple[Signal, int]] = {}
        for stream in session.streams:
            for row in self._reader().read_rows(stream.name).rows(session):
                timed = _timed_from_row([row.get(n) for n in names])
                current = latest.get(timed[0].symbol)
                if current is None or current[0].ts_ns < timed[0].ts_ns:
                    latest[timed[0].symbol] = timed
        return latest

    async def latest_timed(
        self, symbols: Sequence[int], since_ns: int, computed_since_ns: int | None
    ) -> dict[int, tuple[Signal, int]]:
        if not symbols:
            return {}
        return await asyncio.to_thread(self._latest, symbols, since_ns, computed_since_ns)

    async def close(self) -> None:
        return None


# --- the batched writer ----------------------------------------------------------------------


@dataclass
class _TableBuffer:
    table: Table
    chunks: list[Columns] = field(default_factory=list)
    seqs: list[list[int]] = field(default_factory=list)  # the batches of each chunk
    rows: int = 0
    oldest: float = 0.0

    def take(self) -> tuple[Columns, list[int]]:
        names = self.table.column_names
        merged = {n: np.concatenate([c[n] for c in self.chunks]) for n in names}
        seqs = [s for chunk in self.seqs for s in chunk]
        self.chunks.clear()
        self.seqs.clear()
        self.rows = 0
        return merged, seqs

    def put_back(self, columns: Columns, seqs: list[int], n: int) -> None:
        """A chunk whose write failed, back at the front (order kept)."""
        self.chunks.insert(0, columns)
        self.seqs.insert(0, seqs)
        self.rows += n


class Warehouse:
    """Batched writes of every table, and the cache's L3 reads."""

    def __init__(
        self,
        config: WarehouseConfig,
        sink: WarehouseSink,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.sink = sink
        self.metrics = metrics or default_metrics()
        self._clock = clock
        self._buffers = {name: _TableBuffer(t) for name, t in tables().items()}
        # Metric children per table, resolved once (appends come with every batch).
        m = self.metrics
        self._backlog_of = {name: m.warehouse_backlog.labels(name) for name in self._buffers}
        self._rows_of = {name: m.warehouse_rows.labels(name) for name in self._buffers}
        self._failures_of = {name: m.warehouse_failures.labels(name) for name in self._buffers}
        self._backlog = 0  # rows buffered or being written
        self._reserved = 0  # rows callers hold room for (see `reserve`)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        # table -> batches it already holds, above the replay floor (see `prepare_replay`)
        self._held: dict[str, set[int]] = {}
        self.on_written: Callable[[str, list[int]], None] = lambda _table, _seqs: None
        self._forget_through = 0  # ledger rows up to this batch may go
        self._forgotten = 0
        self._expired_at = -float("inf")

    @classmethod
    def from_config(
        cls, config: WarehouseConfig, metrics: Metrics | None = None, **clients: Any
    ) -> Warehouse:
        sink: WarehouseSink
        if config.backend == "duckdb":
            sink = DuckDBSink(config.duckdb_path)
        else:
            assert config.project is not None
            sink = BigQuerySink(config.project, config.dataset, **clients)
        return cls(config, sink, metrics)

    @property
    def backlog_rows(self) -> int:
        return self._backlog

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="warehouse")

    def prepare_replay(self, after_seq: int) -> int:
        """Learn which batches after ``after_seq`` each table holds (appends of those are
        skipped); returns the highest such batch (0: none)."""
        self._held = self.sink.delivered(after_seq)
        return max((max(s) for s in self._held.values() if s), default=0)

    def forget_batches_through(self, seq: int) -> None:
        """Every sink holds every batch up to ``seq``: the ledger may drop them."""
        self._forget_through = max(self._forget_through, seq)

    def reserve(self, n: int) -> None:
        """Hold room for ``n`` rows to append after an await, or raise `WarehouseBackpressure`;
        `release` what goes unused."""
        self._check_room(n, "reserved")
        self._reserved += n

    def release(self, n: int) -> None:
        self._reserved -= min(n, self._reserved)

    def _check_room(self, n: int, what: str) -> None:
        if self._backlog + self._reserved + n > self.config.max_backlog_rows:
            raise WarehouseBackpressure(
                f"warehouse backlog full ({self._backlog} rows queued, {self._reserved} reserved "
                f"of {self.config.max_backlog_rows}); {n} rows {what} refused"
            )

    def append(
        self, table_name: str, columns: Mapping[str, Any], *, reserved: bool = False,
        seq: int | Sequence[int] = 0, replay: bool = False,
    ) -> bool:  # fmt: skip
        """Accept rows for ``table_name`` (checked against its declared schema) or raise
        `WarehouseBackpressure` without accepting any when the backlog is full.
        ``reserved``: the room was taken with `reserve`. ``seq``: the batch (or batches) the
        rows belong to (`on_written` reports each once written, and the ledger records each
        as held). ``replay``: a spooled batch delivered again: skipped (False) if the table
        holds it, never refused for room."""
        buf = self._buffers.get(table_name)
        if buf is None:
            raise KeyError(f"no warehouse table {table_name!r}; known: {sorted(self._buffers)}")
        seqs = [seq] if isinstance(seq, int) else list(seq)
        if replay and any(s in self._held.get(table_name, ()) for s in seqs):
            return False
        checked = check_columns(buf.table, columns)
        n = len(next(iter(checked.values())))
        if n == 0:
            return False
        if reserved:
            self._reserved -= min(n, self._reserved)
        elif not replay:
            self._check_room(n, table_name)
        if not buf.chunks:
            buf.oldest = self._clock()
        buf.chunks.append(checked)
        buf.seqs.append([s for s in seqs if s])
        buf.rows += n
        self._backlog += n
        self._idle.clear()
        self._backlog_of[table_name].inc(n)
        if buf.rows >= self.config.batch_rows:
            self._wake.set()
        return True

    def append_signals(
        self, signals: Sequence[Signal] | SignalColumns, *, reserved: bool = False,
        seq: int | Sequence[int] = 0, replay: bool = False,
        computed_at_ns: int | np.ndarray | None = None,
    ) -> bool:  # fmt: skip
        """Signals for the `signals` table, unless its BigQuery subscription writes it."""
        if len(signals) and self.config.writes_signals:
            return self.append("signals", signal_columns(signals, computed_at_ns),
                               reserved=reserved, seq=seq, replay=replay)  # fmt: skip
        return False

    def append_ticks(
        self, symbol: np.ndarray, price: np.ndarray, size: np.ndarray, ts_ns: np.ndarray,
        *, reserved: bool = False, seq: int | Sequence[int] = 0, replay: bool = False,
    ) -> bool:  # fmt: skip
        ts = np.asarray(ts_ns, dtype=np.int64)
        return self.append(
            "ticks",
            {"symbol": np.asarray(symbol, dtype=np.int64), "event_time": ts, "ts_ns": ts,
             "price": price, "size": size},
            reserved=reserved, seq=seq, replay=replay,
        )  # fmt: skip

    def append_features(
        self, symbol: np.ndarray, ts_ns: np.ndarray, features: np.ndarray, *,
        reserved: bool = False, seq: int | Sequence[int] = 0, replay: bool = False,
    ) -> bool:  # fmt: skip
        """Feature rows (``float64[n, len(FEATURES)]`` in `app.features.FEATURES` order) of the
        ticks at ``ts_ns``: the service writes the row behind each signal it emits."""
        from app.features import FEATURES

        ts = np.asarray(ts_ns, dtype=np.int64)
        columns: dict[str, Any] = {
            "symbol": np.asarray(symbol, dtype=np.int64),
            "event_time": ts,
            "ts_ns": ts,
        }
        for i, name in enumerate(FEATURES):
            columns[name] = features[:, i]
        return self.append("features", columns, reserved=reserved, seq=seq, replay=replay)

    async def latest_timed(
        self, symbols: Sequence[int], computed_since_ns: int | None = None
    ) -> dict[int, tuple[Signal, int]]:
        """Each symbol's latest signal within ``history_days`` (and computed no earlier
        than ``computed_since_ns``), with when it was computed."""
        since_ns = time.time_ns() - self.config.history_days * 86_400 * 1_000_000_000
        return await self.sink.latest_timed(list(symbols), since_ns, computed_since_ns)

    async def latest_signals(self, symbols: Sequence[int]) -> dict[int, Signal]:
        return {s: t[0] for s, t in (await self.latest_timed(symbols)).items()}

    def _due(self) -> list[_TableBuffer]:
        now = self._clock()
        return [
            b
            for b in self._buffers.values()
            if b.rows and (b.rows >= self.config.batch_rows or self._closing
                           or now - b.oldest >= self.config.flush_interval_s)
        ]  # fmt: skip

    async def _housekeeping(self) -> None:
        """Apply the retention (hourly) and drop ledger rows no replay needs (when idle)."""
        now = self._clock()
        days = self.config.retention_days
        if days is not None and now - self._expired_at >= RETENTION_CHECK_S:
            self._expired_at = now
            cutoff = time.time_ns() - days * 86_400 * 1_000_000_000
            try:
                deleted = await self.sink.expire(cutoff)
            except Exception as exc:
                log.error("warehouse_retention_failed", error=repr(exc))
            else:
                if deleted:
                    log.info("warehouse_retention", deleted_rows=deleted, days=days)
        if self._forget_through > self._forgotten:
            seq = self._forget_through
            try:
                await self.sink.forget_batches_through(seq)
                self._forgotten = seq
            except Exception as exc:
                log.error("warehouse_ledger_prune_failed", error=repr(exc))

    async def _run(self) -> None:
        backoff = Backoff(self.config.retry_initial_s, self.config.retry_max_s)
        while True:
            due = self._due()
            if not due:
                if self._backlog == 0:
                    self._idle.set()
                    await self._housekeeping()
                if self._closing and self._backlog == 0:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):  # no task per wait, as wait_for makes
                    async with asyncio.timeout(self.config.flush_interval_s / 4):
                        await self._wake.wait()
                continue
            for buf in due:
                columns, seqs = buf.take()
                n = len(columns[buf.table.column_names[0]])
                try:
                    await self.sink.write(buf.table, columns, seqs)
                except Exception as exc:
                    buf.put_back(columns, seqs, n)  # keep the rows and back off
                    self._failures_of[buf.table.name].inc()
                    delay = backoff.failed()
                    log.error("warehouse_write_failed", table=buf.table.name, rows=n,
                              error=repr(exc), retry_in_s=delay)  # fmt: skip
                    await asyncio.sleep(delay)
                    break
                backoff.succeeded()
                self._backlog -= n
                self._backlog_of[buf.table.name].dec(n)
                self._rows_of[buf.table.name].inc(n)
                log.info("warehouse_flush", table=buf.table.name, rows=n)
                if seqs:
                    self.on_written(buf.table.name, seqs)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every accepted row is written."""
        if self._backlog == 0:
            return
        self.start()
        for buf in self._buffers.values():
            if buf.rows:
                buf.oldest = -float("inf")  # due now
        self._wake.set()
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered (up to ``timeout``), then close the sink."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.error("warehouse_close_timeout", backlog_rows=self._backlog)
                self._task.cancel()
        elif self._backlog:
            self.start()
            await self.close(timeout)
            return
        await self.sink.close()
