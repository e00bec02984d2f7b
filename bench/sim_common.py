"""Shared pieces of the simulations: synthetic trading days, seeds, and side-by-side tables.

Traffic is per minute of the UTC day. A region follows its home exchange's session (NYSE
for the US regions, Euronext for europe-west4, which also feels the NYSE open): overnight
floor, pre-market ramp, the open spike decaying into the session, a lunch lull, the close
ramp with the closing-auction spike, after-hours decay. Each day has its own intensity
(pre-market already shows it), its own open-spike size, autocorrelated noise, and most
days an unscheduled news burst. Everything is drawn from one seeded generator.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/x.py` as well as `python -m bench.x`
    sys.path.insert(0, str(REPO))

MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class RegionTraffic:
    region: str
    open_minute: int  # UTC minute of the home exchange's open
    close_minute: int
    peak_rps: float  # a typical day's open-spike rate
    # UTC minute of a foreign open that also lifts this region's traffic, if any.
    foreign_open_minute: int | None = None


# Winter time: NYSE 09:30-16:00 ET = 14:30-21:00 UTC; Euronext 09:00-17:30 CET = 08:00-16:30.
REGIONS: tuple[RegionTraffic, ...] = (
    RegionTraffic("us-east4", 14 * 60 + 30, 21 * 60, 8000.0),
    RegionTraffic("us-central1", 14 * 60 + 30, 21 * 60, 5000.0),
    RegionTraffic("europe-west4", 8 * 60, 16 * 60 + 30, 4000.0, foreign_open_minute=14 * 60 + 30),
)


@dataclass(frozen=True)
class NewsBurst:
    day: int
    minute: int  # UTC minute of the day it starts
    amplitude: float  # relative to the typical open peak


def intraday_profile(r: RegionTraffic, open_spike: float = 1.0) -> np.ndarray:
    """Relative request rate per UTC minute of a typical day (1.0 = a typical open peak)."""
    minute = np.arange(MINUTES_PER_DAY, dtype=np.float64)
    since_open = minute - r.open_minute
    to_close = r.close_minute - minute
    rate = np.full(MINUTES_PER_DAY, 0.04)
    pre = (since_open >= -330) & (since_open < 0)
    rate[pre] = 0.04 + 0.18 * np.exp(since_open[pre] / 90.0)
    live = (since_open >= 0) & (to_close > 0)
    m = since_open[live]
    rate[live] = (
        0.42
        + 0.58 * open_spike * np.exp(-m / 25.0)
        - 0.15 * np.exp(-(((m - 150.0) / 45.0) ** 2))  # lunch lull
        + 0.45 * np.exp(-to_close[live] / 20.0)  # close ramp
        + 0.25 * np.exp(-(((to_close[live] - 10.0) / 3.0) ** 2))  # closing-auction imbalance
    )
    after = to_close <= 0
    rate[after] = 0.04 + 0.21 * np.exp(to_close[after] / 60.0)
    if r.foreign_open_minute is not None:
        since_foreign = minute - r.foreign_open_minute
        lifted = (since_foreign >= 0) & live
        rate[lifted] += 0.3 * np.exp(-since_foreign[lifted] / 30.0)
    return rate


def trading_days(
    r: RegionTraffic, days: int, rng: np.random.Generator, news_probability: float = 0.8
) -> tuple[np.ndarray, list[NewsBurst]]:
    """``days`` consecutive trading days of requests per second, one value per minute."""
    out = np.empty(days * MINUTES_PER_DAY)
    bursts: list[NewsBurst] = []
    minute = np.arange(MINUTES_PER_DAY, dtype=np.float64)
    noise = 0.0
    for day in range(days):
        intensity = float(np.exp(rng.normal(0.0, 0.2)))
        spike = float(np.exp(rng.normal(0.0, 0.25)))
        rate = intraday_profile(r, spike) * intensity
        if rng.random() < news_probability:
            start = int(rng.integers(r.open_minute + 30, r.close_minute - 30))
            amplitude = float(rng.uniform(0.3, 0.9))
            decay = float(rng.uniform(8.0, 20.0))
            since = minute - start
            on = since >= 0
            # Rises within two minutes, then fades.
            rate[on] += (
                amplitude * np.minimum(1.0, (since[on] + 1) / 2.0) * np.exp(-since[on] / decay)
            )
            bursts.append(NewsBurst(day, start, amplitude))
        log_noise = np.empty(MINUTES_PER_DAY)
        for i in range(MINUTES_PER_DAY):
            noise = 0.7 * noise + rng.normal(0.0, 0.04)
            log_noise[i] = noise
        out[day * MINUTES_PER_DAY : (day + 1) * MINUTES_PER_DAY] = (
            r.peak_rps * rate * np.exp(log_noise)
        )
    return out, bursts


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table (what the benchmarks print)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def ratio(ours: float, baseline: float) -> str:
    """``ours / baseline`` as printed on a benchmark's last line."""
    if baseline == 0:
        return "inf" if ours else "1.00x"
    return f"{ours / baseline:.2f}x"
