"""Exchange sessions: VWAP resets at each venue's open in its own time zone, DST included, and
the session state survives a restart through a state snapshot."""

from __future__ import annotations

import json
import struct

import numpy as np
import pandas as pd
import pytest

from app.features import FEATURES, FeatureEngine
from app.sessions import SessionTable, check_venue
from app.settings.features import FeatureParams
from app.state import SymbolState

VWAP = FEATURES.index("vwap")
NYSE, LSE = 0, 1  # symbol ids


def utc(stamp: str) -> int:
    return int(pd.Timestamp(stamp, tz="UTC").value)


@pytest.fixture(scope="module")
def sessions() -> SessionTable:
    return SessionTable.for_symbols(2, "XNYS", {LSE: "XLON"})


def assert_session(sessions: SessionTable, symbol: int, at: str, opens: str, closes: str) -> None:
    assert sessions.session_at(symbol, utc(at)) == (utc(opens), utc(closes))


def _vwaps(
    engine: FeatureEngine, symbol: int, ticks: list[tuple[str, float, float]]
) -> list[float]:
    n = len(ticks)
    out = engine.update(
        np.full(n, symbol, np.int32),
        np.array([p for _, p, _ in ticks]),
        np.array([q for _, _, q in ticks]),
        np.array([utc(t) for t, _, _ in ticks], np.int64),
    )
    return out[:, VWAP].tolist()


def test_nyse_sessions_open_at_930_new_york_time_across_the_dst_change(
    sessions: SessionTable,
) -> None:
    # US clocks went forward on Sunday 2024-03-10: the open moved from 14:30 to 13:30 UTC.
    assert_session(sessions, NYSE, "2024-03-08 15:00", "2024-03-08 14:30", "2024-03-08 21:00")
    assert_session(sessions, NYSE, "2024-03-11 13:45", "2024-03-11 13:30", "2024-03-11 20:00")
    engine = FeatureEngine(2, sessions=sessions)
    vwap = _vwaps(
        engine,
        NYSE,
        [
            ("2024-03-08 14:35", 10.0, 1.0),  # Friday, winter time
            ("2024-03-08 20:59", 20.0, 1.0),
            ("2024-03-08 21:30", 99.0, 50.0),  # after the close: not in the session's VWAP
            ("2024-03-09 00:30", 98.0, 50.0),  # 19:30 New York: the old UTC-day reset was here
            ("2024-03-11 13:29", 97.0, 50.0),  # Monday pre-market: still Friday's session
            ("2024-03-11 13:31", 30.0, 2.0),  # summer time: the open is 13:30 UTC now
            ("2024-03-11 14:00", 60.0, 1.0),
        ],
    )
    assert vwap[:5] == [10.0, 15.0, 15.0, 15.0, 15.0]
    assert vwap[5:] == [30.0, 40.0]  # reset at Monday's open, not at midnight UTC


def test_each_symbol_follows_its_own_venue(sessions: SessionTable) -> None:
    # 2024-03-11: New York already on summer time, London not yet (it changes on 03-31).
    assert sessions.venue_of(LSE) == "XLON" and sessions.venue_of(NYSE) == "XNYS"
    assert_session(sessions, LSE, "2024-03-11 09:00", "2024-03-11 08:00", "2024-03-11 16:30")
    assert_session(sessions, LSE, "2024-04-02 07:30", "2024-04-02 07:00", "2024-04-02 15:30")
    engine = FeatureEngine(2, sessions=sessions)
    both = engine.update(
        np.array([LSE, NYSE, LSE, NYSE, LSE], np.int32),
        np.array([10.0, 50.0, 20.0, 70.0, 40.0]),
        np.ones(5),
        np.array([utc("2024-03-11 09:00"), utc("2024-03-11 14:00"), utc("2024-03-11 15:00"),
                  utc("2024-03-12 09:00"), utc("2024-03-12 09:00")], np.int64),
    )  # fmt: skip
    # London: 10, 20 in Monday's session (closes 16:30 UTC), then Tuesday's open resets.
    # New York: Monday 14:00 is in session; Tuesday 09:00 UTC is pre-market (still Monday).
    assert both[:, VWAP].tolist() == [10.0, 50.0, 15.0, 50.0, 40.0]


def test_a_zero_size_opening_tick_does_not_make_vwap_nan(sessions: SessionTable) -> None:
    engine = FeatureEngine(2, sessions=sessions)
    vwap = _vwaps(
        engine,
        NYSE,
        [
            ("2024-06-03 15:00", 10.0, 5.0),
            ("2024-06-04 13:30", 12.0, 0.0),  # the open, no size
            ("2024-06-04 13:31", 14.0, 1.0),
        ],
    )
    assert vwap == [10.0, 12.0, 14.0]


def test_session_state_survives_a_restart_through_a_snapshot(sessions: SessionTable) -> None:
    rng = np.random.default_rng(4)
    n = 400
    symbol = rng.integers(0, 2, n).astype(np.int32)
    price = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    size = rng.integers(0, 30, n).astype(float)
    ts = utc("2024-03-11 13:00") + np.cumsum(rng.integers(1, 90, n)) * 1_000_000_000
    params = FeatureParams(max_gap_s=60)
    whole = FeatureEngine.from_params(2, params, sessions).update(symbol, price, size, ts)

    first = FeatureEngine.from_params(2, params, sessions)
    first.update(symbol[:250], price[:250], size[:250], ts[:250])
    snapshot = first.state.export()
    del first  # the process restarts
    second = FeatureEngine.from_params(2, params, sessions)
    assert second.state.restore(snapshot).tolist() == [0, 1]
    rest = second.update(symbol[250:], price[250:], size[250:], ts[250:])
    np.testing.assert_array_equal(rest, whole[250:])  # VWAP included: no restart-time reset


def test_a_snapshot_of_some_symbols_leaves_the_others_alone() -> None:
    a = SymbolState(4, window=5)
    a.floats[:] = np.arange(a.floats.size, dtype=float).reshape(a.floats.shape)
    a.rings[:, 2, :] = 7.0
    shard = a.export(np.array([2, 3]))
    b = SymbolState(4, window=5)
    before = b.snapshot()
    assert b.restore(shard).tolist() == [2, 3]
    np.testing.assert_array_equal(b.floats[:, 2:], a.floats[:, 2:])
    np.testing.assert_array_equal(b.rings[:, 2], a.rings[:, 2])
    np.testing.assert_array_equal(b.floats[:, :2], before[0][:, :2])
    with pytest.raises(ValueError, match="window = 5, but this state's window = 6"):
        SymbolState(4, window=6).restore(shard)
    with pytest.raises(ValueError, match="not a state snapshot"):
        b.restore(b"garbage")
    with pytest.raises(ValueError, match="bytes, expected"):
        b.restore(shard[:-8])


def _with_header(snapshot: bytes, header: bytes) -> bytes:
    (length,) = struct.unpack_from("<I", snapshot, 8)
    return snapshot[:8] + struct.pack("<I", len(header)) + header + snapshot[12 + length :]


def test_restore_refuses_a_header_it_cannot_read_and_changes_nothing() -> None:
    a = SymbolState(3, window=4)
    a.floats[:] = 1.5
    shard = a.export(np.array([1]))
    (length,) = struct.unpack_from("<I", shard, 8)
    header = json.loads(shard[12 : 12 + length])
    b = SymbolState(3, window=4)
    before = b.snapshot()
    for bad, message in (
        (b"{not json", "its header is not JSON"),
        (b"[1, 2]", "its header is not a JSON object"),
        (json.dumps({**header, "version": 2}).encode(), "version 2 with fields"),
        (json.dumps({**header, "symbols": -1}).encode(), "symbols = -1: must be a count"),
        (json.dumps({**header, "symbols": "1"}).encode(), "symbols = '1': must be a count"),
    ):
        with pytest.raises(ValueError, match=message):
            b.restore(_with_header(shard, bad))
    for x, y in zip(before, b.snapshot(), strict=True):
        np.testing.assert_array_equal(x, y)
    assert b.restore(shard).tolist() == [1] and (b.floats[:, 1] == 1.5).all()


def test_unknown_venue_names_the_value_and_the_closest_calendar() -> None:
    with pytest.raises(ValueError, match=r"venue = 'XLONN': unknown exchange calendar \(did you mean XLON\?\); allowed: .*XNYS"):  # fmt: skip
        check_venue("XLONN")
    with pytest.raises(ValueError, match="symbol_venues: symbol 5 is not a symbol id"):
        SessionTable.for_symbols(3, "XNYS", {5: "XLON"})


def test_holidays_and_early_closes_come_from_the_calendar(sessions: SessionTable) -> None:
    # Thanksgiving 2023-11-23: no session; Friday 11-24 closes early, at 13:00 New York.
    assert_session(sessions, NYSE, "2023-11-23 16:00", "2023-11-22 14:30", "2023-11-22 21:00")
    assert_session(sessions, NYSE, "2023-11-24 17:00", "2023-11-24 14:30", "2023-11-24 18:00")
    engine = FeatureEngine(2, sessions=sessions)
    vwap = _vwaps(
        engine,
        NYSE,
        [
            ("2023-11-22 15:00", 10.0, 1.0),
            ("2023-11-23 16:00", 50.0, 9.0),  # the holiday: outside any session
            ("2023-11-24 17:00", 20.0, 1.0),  # Friday's short session
            ("2023-11-24 18:30", 90.0, 9.0),  # after its early close
        ],
    )
    assert vwap == [10.0, 10.0, 20.0, 20.0]
