"""The warehouse SQL, run for real: parsed as BigQuery SQL, transpiled to DuckDB, executed on
fixture rows in tables made from the shared schemas, and compared with results worked out by
hand. The materialized views' SQL is also held to BigQuery's incremental rules."""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import date, datetime

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from app.schemas import tables
from infra.proto_schema import APP_PROTO_PATH, enum_numbers
from infra.warehouse import LOGICAL_VIEWS, MATERIALIZED_VIEWS, load_sql

# ---------------------------------------------------------------- incremental rules

# Aggregates BigQuery maintains incrementally (materialized views: "supported SQL").
INCREMENTAL_AGGREGATES = (
    exp.AnyValue,
    exp.ApproxDistinct,
    exp.ArrayAgg,
    exp.Avg,
    exp.BitwiseAndAgg,
    exp.BitwiseOrAgg,
    exp.BitwiseXorAgg,
    exp.Count,
    exp.CountIf,
    exp.LogicalAnd,
    exp.LogicalOr,
    exp.Max,
    exp.Min,
    exp.ArgMax,
    exp.ArgMin,
    exp.Sum,
)
NON_DETERMINISTIC = (
    exp.CurrentTimestamp,
    exp.CurrentDate,
    exp.CurrentDatetime,
    exp.CurrentTime,
    exp.Rand,
)


def incremental_problems(sql: str) -> list[str]:
    """Why `sql` cannot be an incremental materialized view (empty when it can)."""
    tree = sqlglot.parse_one(sql, read="bigquery")
    problems: list[str] = []
    if not isinstance(tree, exp.Select):
        return [f"not a single SELECT: {type(tree).__name__}"]
    for kind, why in (
        (exp.With, "WITH clause"),
        (exp.Subquery, "subquery"),
        (exp.Window, "window function"),
        (exp.Having, "HAVING"),
        (exp.Order, "ORDER BY"),
        (exp.Limit, "LIMIT"),
        (exp.Union, "UNION"),
        (exp.Distinct, "DISTINCT"),
        *((k, f"non-deterministic {k.__name__}") for k in NON_DETERMINISTIC),
    ):
        if tree.find(kind):
            problems.append(why)
    for join in tree.args.get("joins") or []:
        if join.side or join.kind not in ("", "INNER"):
            problems.append(f"{join.side or join.kind} JOIN")
    group = tree.args.get("group")
    if group is None:
        problems.append("no GROUP BY: nothing to maintain incrementally")
        return problems
    keys = {k.sql("bigquery") for k in group.expressions}
    for projection in tree.expressions:
        name = projection.alias_or_name
        value = projection.unalias()
        if value.sql("bigquery") in keys:
            if value.find(exp.AggFunc):
                problems.append(f"{name}: aggregate in a GROUP BY key")
            continue
        if not isinstance(value, exp.AggFunc):
            problems.append(f"{name}: neither a GROUP BY key nor a bare aggregate")
        elif not isinstance(value, INCREMENTAL_AGGREGATES):
            problems.append(f"{name}: {type(value).__name__} is not maintained incrementally")
        elif isinstance(value, exp.Count) and value.find(exp.Distinct):
            problems.append(f"{name}: COUNT(DISTINCT) is not maintained incrementally")
        if any(a is not value for a in value.find_all(exp.AggFunc)):
            problems.append(f"{name}: nested aggregate")
    return problems


@pytest.mark.parametrize("view", MATERIALIZED_VIEWS, ids=lambda v: v.name)
def test_materialized_views_are_valid_incremental_bigquery(view):
    sql = load_sql(view.name, "proj", "ds")
    assert incremental_problems(sql) == []
    tree = sqlglot.parse_one(sql, read="bigquery")
    sources = {t.name for t in tree.find_all(exp.Table)}
    assert sources == set(view.sources)
    outputs = {p.alias_or_name: p.unalias() for p in tree.expressions}
    assert set(view.clustering) <= set(outputs)
    (source,) = (tables()[s] for s in view.sources)
    if view.partition_field is None:
        # Only a range-partitioned base leaves a view unpartitioned: ranges can't align by time.
        assert source.partition_type == "RANGE"
    else:
        # Partition-aligned: the view's partition column is derived from the base table's.
        assert source.partition_type == "DAY"
        derived_from = {c.name for c in outputs[view.partition_field].find_all(exp.Column)}
        assert derived_from == {source.partition_field}


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("SELECT a, SUM(x) / COUNT(*) AS r FROM t GROUP BY a", "neither a GROUP BY key"),
        ("SELECT a, STDDEV(x) AS s FROM t GROUP BY a", "Stddev is not maintained"),
        ("SELECT a, COUNT(DISTINCT x) AS n FROM t GROUP BY a", "COUNT(DISTINCT)"),
        ("SELECT a, SUM(x) AS s FROM t GROUP BY a HAVING SUM(x) > 1", "HAVING"),
        ("SELECT a, SUM(x) OVER () AS s FROM t GROUP BY a", "window function"),
        ("SELECT a, SUM(x) AS s FROM (SELECT * FROM t) GROUP BY a", "subquery"),
        ("SELECT a, SUM(x) AS s FROM t LEFT JOIN u USING (a) GROUP BY a", "LEFT JOIN"),
        ("SELECT a, x FROM t", "no GROUP BY"),
        ("SELECT a, MAX(CURRENT_TIMESTAMP()) AS m FROM t GROUP BY a", "non-deterministic"),
    ],
)
def test_the_incremental_rules_reject_what_bigquery_rejects(sql: str, problem: str):
    assert any(problem in p for p in incremental_problems(sql)), incremental_problems(sql)


@pytest.mark.parametrize("view", LOGICAL_VIEWS, ids=lambda v: v.name)
def test_logical_views_read_only_the_materialized_views(view):
    tree = sqlglot.parse_one(load_sql(view.name, "proj", "ds"), read="bigquery")
    tables_read = {(t.catalog, t.db, t.name) for t in tree.find_all(exp.Table)}
    assert tables_read == {("proj", "ds", source) for source in view.sources}


# ---------------------------------------------------------------- running the SQL


def to_duckdb(sql: str) -> str:
    """BigQuery SQL → DuckDB SQL, with `project.dataset.table` read as a local table."""
    tree = sqlglot.parse_one(sql, read="bigquery")
    for table in tree.find_all(exp.Table):
        table.set("catalog", None)
        table.set("db", None)
    return tree.sql("duckdb")


def at(day: int, hh: int, mm: int, ss: int = 0, us: int = 0) -> datetime:
    return datetime(2024, 1, day, hh, mm, ss, us)


def ns(day: int, hh: int, mm: int, ss: int = 0, nanos: int = 0) -> int:
    """A Signal's `ts_ns` for that UTC time."""
    return calendar.timegm((2024, 1, day, hh, mm, ss)) * 10**9 + nanos


def tick_rows(ticks: list[tuple]) -> list[tuple]:
    """(symbol, time, price, size) as `ticks` rows: with `ts_ns`, the time in nanoseconds."""
    return [(s, t, calendar.timegm(t.timetuple()) * 10**9 + t.microsecond * 1000, p, q)
            for s, t, p, q in ticks]  # fmt: skip


INSERT_TICK = "INSERT INTO ticks (symbol, event_time, ts_ns, price, size) VALUES (?, ?, ?, ?, ?)"
INSERT_SIGNAL = ("INSERT INTO signals (symbol, ts_ns, direction, strength, confidence, "
                 "model_version) VALUES (?, ?, ?, ?, ?, ?)")  # fmt: skip


AAPL, MSFT = 1, 2  # symbol ids, as in the gRPC API
# The Direction enum's numbers, as the BigQuery subscription writes them.
_ENUM = enum_numbers(APP_PROTO_PATH.read_text())
UP, DOWN, FLAT = _ENUM["DIRECTION_UP"], _ENUM["DIRECTION_DOWN"], _ENUM["DIRECTION_FLAT"]

# Ticks (symbol, time, price, size). AAPL has a bar at a minute boundary, a one-tick bar, an
# empty minute and a bar across midnight; MSFT trades but never gets a signal.
TICKS = [
    (AAPL, at(2, 10, 0, 0), 100.0, 10.0),  # on the boundary: opens 10:00
    (AAPL, at(2, 10, 0, 30), 102.0, 5.0),
    (AAPL, at(2, 10, 0, 59, 999_999), 101.0, 5.0),  # last microsecond of 10:00: its close
    (AAPL, at(2, 10, 1, 0), 103.0, 10.0),  # on the boundary: opens 10:01, not 10:00's close
    (AAPL, at(2, 10, 1, 40), 104.0, 10.0),
    (AAPL, at(2, 10, 2, 15), 99.0, 2.0),  # the only tick of 10:02
    # 10:03: no trades
    (AAPL, at(2, 10, 4, 0), 98.0, 1.0),
    (AAPL, at(2, 10, 4, 30), 97.0, 3.0),
    (AAPL, at(2, 23, 59, 30), 110.0, 1.0),
    (AAPL, at(3, 0, 0, 5), 111.0, 1.0),
    (AAPL, at(3, 0, 0, 50), 112.0, 1.0),
    (MSFT, at(2, 10, 0, 10), 300.0, 1.0),
    (MSFT, at(2, 10, 0, 20), 299.0, 3.0),
]

# (symbol, minute, open, high, low, close, volume, vwap, trade_count), worked out by hand.
BARS = [
    (AAPL, at(2, 10, 0), 100.0, 102.0, 100.0, 101.0, 20.0, 2015 / 20, 3),
    (AAPL, at(2, 10, 1), 103.0, 104.0, 103.0, 104.0, 20.0, 2070 / 20, 2),
    (AAPL, at(2, 10, 2), 99.0, 99.0, 99.0, 99.0, 2.0, 99.0, 1),
    (AAPL, at(2, 10, 4), 98.0, 98.0, 97.0, 97.0, 4.0, (98 + 291) / 4, 2),
    (AAPL, at(2, 23, 59), 110.0, 110.0, 110.0, 110.0, 1.0, 110.0, 1),
    (AAPL, at(3, 0, 0), 111.0, 112.0, 111.0, 112.0, 2.0, 111.5, 2),
    (MSFT, at(2, 10, 0), 300.0, 300.0, 299.0, 299.0, 4.0, 1197 / 4, 2),
]

# Signals as the BigQuery subscription writes them (symbol, ts_ns, direction, strength,
# confidence, model_version), and what each scores against the next one-minute bar.
SIGNALS = [
    (AAPL, ns(2, 10, 0, 5), UP, 0.3, 0.8, "m1"),  # 10:01 closes up: hit
    (AAPL, ns(2, 10, 0, 59, 999_999_999), DOWN, -0.2, 0.6, "m1"),  # last ns of 10:00; miss
    (AAPL, ns(2, 10, 1, 0), UP, 0.1, 0.7, "m1"),  # minute 10:01 → 10:02 is flat: miss
    (AAPL, ns(2, 10, 1, 30), FLAT, 0.0, 0.9, "m1"),  # not directional: not scored
    (AAPL, ns(2, 10, 2, 30), DOWN, -0.1, 0.5, "m1"),  # 10:03 has no trades: not scored
    (AAPL, ns(2, 10, 3, 10), DOWN, -0.4, 0.4, "m1"),  # 10:04 closes down: hit
    (AAPL, ns(2, 23, 59, 40), UP, 0.2, 0.6, "m1"),  # next day's 00:00 up: hit, on day 2
    (AAPL, ns(3, 0, 0, 30), UP, 0.2, 0.5, "m1"),  # 00:01 has no trades: not scored
    (AAPL, ns(2, 10, 0, 30), DOWN, -0.5, 0.9, "m2"),  # another model: 10:01 up: miss
]

# (symbol, model, day, signal_count, mean_confidence, scored_count, hit_count, hit_rate)
DAILY = [
    (AAPL, "m1", date(2024, 1, 2), 7, 4.5 / 7, 5, 3, 0.6),
    (AAPL, "m1", date(2024, 1, 3), 1, 0.5, 0, 0, None),
    (AAPL, "m2", date(2024, 1, 2), 1, 0.9, 1, 0, 0.0),
]


@pytest.fixture(scope="module")
def warehouse() -> Iterator[duckdb.DuckDBPyConnection]:
    """DuckDB with the shared schemas, the fixture rows and every view built in order."""
    db = duckdb.connect(":memory:")
    db.execute("SET TimeZone = 'UTC'")
    for table in tables().values():
        db.execute(table.duckdb_ddl())
    db.executemany(INSERT_TICK, tick_rows(TICKS))
    db.executemany(INSERT_SIGNAL, SIGNALS)
    for view in MATERIALIZED_VIEWS:
        db.execute(f"CREATE TABLE {view.name} AS {to_duckdb(load_sql(view.name, 'p', 'd'))}")
    for view in LOGICAL_VIEWS:
        db.execute(f"CREATE VIEW {view.name} AS {to_duckdb(load_sql(view.name, 'p', 'd'))}")
    yield db
    db.close()


def rows(db: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return [tuple(r) for r in db.execute(sql).fetchall()]


def approx_rows(expected: list[tuple]) -> list[tuple]:
    return [tuple(pytest.approx(v) if isinstance(v, float) else v for v in r) for r in expected]


def test_the_signals_columns_the_sql_reads_exist_in_the_shared_schema():
    columns = set(tables()["signals"].column_names)
    assert {"symbol", "ts_ns", "direction", "confidence", "model_version"} <= columns
    assert {"symbol", "event_time", "ts_ns", "price", "size"} <= set(tables()["ticks"].column_names)


def test_bars_1m_ohlcv_vwap_and_trade_count(warehouse):
    got = rows(
        warehouse,
        "SELECT symbol, minute, open, high, low, close, volume, vwap, trade_count "
        "FROM bars_1m_vwap ORDER BY symbol, minute",
    )
    assert got == approx_rows(BARS)


def test_a_tick_on_the_minute_boundary_opens_the_new_bar(warehouse):
    ((close_10, open_11),) = rows(
        warehouse,
        "SELECT (SELECT close FROM bars_1m WHERE symbol = 1 AND minute = '2024-01-02 10:00:00'),"
        " (SELECT open FROM bars_1m WHERE symbol = 1 AND minute = '2024-01-02 10:01:00')",
    )
    assert (close_10, open_11) == (101.0, 103.0)


def test_one_tick_makes_a_flat_bar_and_an_empty_minute_no_bar(warehouse):
    minutes = rows(warehouse, "SELECT minute FROM bars_1m WHERE symbol = 1 ORDER BY minute")
    assert at(2, 10, 3) not in {m for (m,) in minutes}
    ((o, h, low, c, n),) = rows(
        warehouse,
        "SELECT open, high, low, close, trade_count FROM bars_1m "
        "WHERE symbol = 1 AND minute = '2024-01-02 10:02:00'",
    )
    assert o == h == low == c == 99.0 and n == 1


def test_signal_minutes_counts_each_minute(warehouse):
    got = rows(
        warehouse,
        "SELECT minute, signal_count, confidence_sum, up_count, down_count FROM signal_minutes "
        "WHERE symbol = 1 AND model_version = 'm1' AND minute < '2024-01-02 10:02:00' "
        "ORDER BY minute",
    )
    assert got == approx_rows([(at(2, 10, 0), 2, 1.4, 1, 1), (at(2, 10, 1), 2, 1.6, 1, 0)])


def test_signal_daily_counts_confidence_and_hit_rate(warehouse):
    got = rows(
        warehouse,
        "SELECT symbol, model_version, day, signal_count, mean_confidence, scored_count, "
        "hit_count, hit_rate FROM signal_daily ORDER BY symbol, model_version, day",
    )
    assert got == approx_rows(DAILY)


def test_a_symbol_with_no_signals_has_bars_but_no_daily_row(warehouse):
    assert rows(warehouse, "SELECT count(*) FROM bars_1m WHERE symbol = 2") == [(1,)]
    assert rows(warehouse, "SELECT count(*) FROM signal_daily WHERE symbol = 2") == [(0,)]


def test_bars_follow_the_rows_they_are_given():
    """More ticks in the same minute move the close, the low and the count, nothing else."""
    db = duckdb.connect(":memory:")
    db.execute(tables()["ticks"].duckdb_ddl())
    db.executemany(INSERT_TICK, tick_rows(TICKS[:2]))
    query = to_duckdb(load_sql("bars_1m", "p", "d"))
    assert rows(db, f"SELECT open, low, close, trade_count FROM ({query})") == [
        (100.0, 100.0, 102.0, 2)
    ]
    db.executemany(INSERT_TICK, tick_rows([(AAPL, at(2, 10, 0, 59, 999_999), 105.0, 1.0),
                                           (AAPL, at(2, 10, 0, 45), 90.0, 1.0)]))  # fmt: skip
    assert rows(db, f"SELECT open, low, close, trade_count FROM ({query})") == [
        (100.0, 90.0, 105.0, 4)
    ]
    db.close()


def test_ticks_in_one_microsecond_keep_their_nanosecond_order():
    """Open and close follow `ts_ns`: event_time (microseconds) cannot tell these apart. A row
    from before `ts_ns` existed (NULL) is ordered by its event_time."""
    db = duckdb.connect(":memory:")
    db.execute(tables()["ticks"].duckdb_ddl())
    t = at(2, 10, 0, 30, 123)
    base = ns(2, 10, 0, 30, 123_000)
    # Inserted out of order: the 400 ns later tick first, the earlier one second.
    db.executemany(INSERT_TICK, [(AAPL, t, base + 700, 51.0, 1.0), (AAPL, t, base + 300, 50.0, 1.0),
                                 (AAPL, at(2, 10, 0, 10), None, 49.0, 1.0)])  # fmt: skip
    query = to_duckdb(load_sql("bars_1m", "p", "d"))
    assert rows(db, f"SELECT open, close, trade_count FROM ({query})") == [(49.0, 51.0, 3)]
    db.execute("DELETE FROM ticks WHERE ts_ns IS NULL")
    assert rows(db, f"SELECT open, close FROM ({query})") == [(50.0, 51.0)]
    db.close()
