"""Exchange sessions: each symbol's venue calendar as preallocated open/close tables.

Sessions come from ``exchange_calendars`` (maintained holiday and early-close rules,
each exchange in its own time zone, so DST moves the open in UTC as it does on the
exchange). ``SessionTable`` holds, per venue, the UTC open and close of every session
in ``[start, end]`` as int64 nanoseconds, padded with ``NO_OPEN`` so the feature kernel
can look a tick's session up without allocating: the session of a tick is the last one
that opened at or before it; it is *in session* before that session's close.

The table spans ``DEFAULT_START`` to a year past the day it is built
(``exchange_calendars``' own horizon); ticks after its last open stay in the last
session, so a service must be rebuilt (restarted) at least yearly, as the library's
holiday data is anyway.
"""

from __future__ import annotations

import difflib
import functools
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from app.settings.features import DEFAULT_VENUE

DEFAULT_START = "2000-01-01"
NO_OPEN = np.iinfo(np.int64).max  # padding after a venue's last session: never <= a tick
PADDING = 2  # sentinels after the last session: the kernel peeks two ahead


@functools.cache
def venue_names() -> tuple[str, ...]:
    """Every calendar code ``exchange_calendars`` knows (aliases included), sorted."""
    import exchange_calendars as xc

    return tuple(sorted(xc.get_calendar_names(include_aliases=True)))


def check_venue(name: str) -> str:
    """``name`` if it is a known calendar code, else ValueError naming it and what is allowed."""
    names = venue_names()
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ValueError(
        f"venue = {name!r}: unknown exchange calendar{hint}; allowed: {', '.join(names)}"
    )


@functools.cache
def _venue_sessions(name: str, start: str) -> tuple[np.ndarray, np.ndarray]:
    """(opens, closes) in UTC ns of every session of ``name`` from ``start`` (cached per process)."""
    import exchange_calendars as xc
    import pandas as pd

    with warnings.catch_warnings():  # the library's own pandas deprecations, not ours
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        factory = type(xc.get_calendar(check_venue(name)))
        earliest = factory.bound_min()  # some calendars cannot start as early as `start`
        first: pd.Timestamp = pd.Timestamp(start)  # type: ignore[assignment]  (never NaT here)
        if earliest is not None and first < earliest:
            first = earliest
        calendar = xc.get_calendar(name, start=first)
    utc = [c.dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
           for c in (calendar.opens, calendar.closes)]  # fmt: skip
    return utc[0], utc[1]


class SessionTable:
    """Session opens/closes per venue and each symbol's venue, allocated once.

    ``opens[v, j]`` / ``closes[v, j]`` are the UTC ns of venue ``v``'s ``j``-th session,
    ascending; rows are padded with ``NO_OPEN``. ``table`` holds both (``table[0]`` is
    ``opens``, ``table[1]`` ``closes``: one argument for the kernel). ``symbol_venue[s]``
    is ``s``'s row.
    """

    __slots__ = ("closes", "opens", "symbol_venue", "table", "venues")

    def __init__(
        self, venues: Sequence[str], opens: np.ndarray, closes: np.ndarray, symbol_venue: np.ndarray
    ) -> None:
        self.venues = tuple(venues)
        self.table = np.ascontiguousarray(np.stack([opens, closes]), dtype=np.int64)
        self.opens = self.table[0]
        self.closes = self.table[1]
        self.symbol_venue = np.ascontiguousarray(symbol_venue, dtype=np.int32)

    @classmethod
    def for_symbols(
        cls,
        n_symbols: int,
        venue: str = DEFAULT_VENUE,
        symbol_venues: Mapping[int, str] | None = None,
        *,
        start: str = DEFAULT_START,
    ) -> SessionTable:
        """Every symbol trades on ``venue`` except those ``symbol_venues`` maps elsewhere."""
        overrides = dict(symbol_venues or {})
        bad = sorted(s for s in overrides if not 0 <= s < n_symbols)
        if bad:
            raise ValueError(
                f"symbol_venues: symbol {bad[0]} is not a symbol id; ids are 0 to {n_symbols - 1}"
            )
        venues = sorted({venue, *overrides.values()})
        sessions = [_venue_sessions(v, start) for v in venues]
        width = max(o.shape[0] for o, _ in sessions) + PADDING
        opens = np.full((len(venues), width), NO_OPEN, dtype=np.int64)
        closes = np.full((len(venues), width), NO_OPEN, dtype=np.int64)
        for row, (o, c) in enumerate(sessions):
            opens[row, : o.shape[0]] = o
            closes[row, : c.shape[0]] = c
        symbol_venue = np.full(n_symbols, venues.index(venue), dtype=np.int32)
        for s, v in overrides.items():
            symbol_venue[s] = venues.index(v)
        return cls(venues, opens, closes, symbol_venue)

    @classmethod
    def none(cls, n_symbols: int) -> SessionTable:
        """No calendar: the kernel falls back to fixed-length sessions (``session_ns``)."""
        return cls(
            (),
            np.empty((0, PADDING), np.int64),
            np.empty((0, PADDING), np.int64),
            np.zeros(n_symbols, np.int32),
        )

    @property
    def n_symbols(self) -> int:
        return int(self.symbol_venue.shape[0])

    def venue_of(self, symbol: int) -> str:
        return self.venues[int(self.symbol_venue[symbol])] if self.venues else ""

    def session_at(self, symbol: int, ts_ns: int) -> tuple[int, int] | None:
        """(open, close) in UTC ns of the session ``symbol`` is in at ``ts_ns`` (None before the
        first): the last session that opened at or before ``ts_ns``."""
        if not self.venues:
            return None
        row = self.opens[int(self.symbol_venue[symbol])]
        j = int(np.searchsorted(row, ts_ns, side="right")) - 1
        if j < 0:
            return None
        return int(row[j]), int(self.closes[int(self.symbol_venue[symbol]), j])
