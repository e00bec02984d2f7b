"""Online anomaly detection against a robust seasonal baseline (per minute of the day).

For each new value ``x`` at minute ``m`` of the day:

* baseline: the median of the values at minutes ``m - w .. m + w`` over the last
  ``historyDays`` completed days, and their MAD (robust to one bad day in the window);
* scale: the largest of ``1.4826 * MAD`` (how much this time of day varies from day to
  day), the minute-to-minute noise of today (an EWMA of ``|x - x_prev| / 1.128``, clipped
  so a spike or a step moves it little: first differences ignore level shifts and drifts),
  an absolute floor and a floor relative to the baseline;
* ``z = (x - median) / scale``, oriented by ``direction`` (up, down or both);
* fast rule: ``z`` above ``fastThreshold`` for ``fastMinutes`` minutes in a row (spikes);
  slow rule: an EWMA of ``z`` (each minute clipped to ``zClip``) above ``slowThreshold``
  (drifts and level shifts, too small for any one minute to stand out);
* ``score = max(fast / fastThreshold, slow / slowThreshold)``: 1.0 is the alert line.
  The alert raises at 1.0 and clears below ``clearRatio`` (hysteresis, no flapping).

Values seen while the alert is active are kept out of the baseline, so an incident does
not teach the detector that it is normal; the baseline learns from completed days only.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field, model_validator

from app.config_errors import CamelConfigModel

# For normal noise: sigma = 1.4826 * MAD, and E|x_t - x_(t-1)| = 2 sigma / sqrt(pi).
MAD_TO_SIGMA = 1.4826
DIFF_TO_SIGMA = 2.0 / math.sqrt(math.pi)


class DetectorSettings(CamelConfigModel):
    """One series' detector (camelCase keys in configuration)."""

    direction: Literal["up", "down", "both"] = "up"
    minutes_per_day: int = Field(default=1440, ge=2, le=1440)
    history_days: int = Field(default=7, ge=2, le=28)
    min_history_days: int = Field(default=2, ge=1, le=28)
    window_minutes: int = Field(default=5, ge=0, le=60)
    noise_span_minutes: int = Field(default=60, ge=2, le=1440)
    fast_threshold: float = Field(default=8.0, gt=0, le=100)
    fast_minutes: int = Field(default=2, ge=1, le=60)
    slow_threshold: float = Field(default=3.0, gt=0, le=100)
    slow_span_minutes: int = Field(default=30, ge=2, le=1440)
    z_clip: float = Field(default=8.0, gt=0, le=100)
    clear_ratio: float = Field(default=0.5, gt=0, le=1)
    absolute_floor: float = Field(default=0.0, ge=0)
    relative_floor: float = Field(default=0.02, ge=0, le=1)

    @model_validator(mode="after")
    def _history(self) -> DetectorSettings:
        if self.min_history_days > self.history_days:
            raise ValueError(
                f"minHistoryDays ({self.min_history_days}) must be <= historyDays "
                f"({self.history_days})"
            )
        if 2 * self.window_minutes + 1 > self.minutes_per_day:
            raise ValueError("windowMinutes must leave the window shorter than a day")
        return self


@dataclass(frozen=True)
class Verdict:
    score: float  # 1.0 is the alert line; 0 while learning
    z: float  # oriented deviation of this value
    active: bool
    baseline: float  # NaN while learning
    scale: float


class SeasonalBaseline:
    """The last ``history_days`` completed days, one value per minute, and per-minute robust
    statistics recomputed once per day."""

    def __init__(self, settings: DetectorSettings):
        self.settings = settings
        s = settings
        self._days = np.full((s.history_days, s.minutes_per_day), np.nan)
        self._filled = 0  # completed days held
        self._next_row = 0
        self.median = np.full(s.minutes_per_day, np.nan)
        self.mad = np.full(s.minutes_per_day, np.nan)

    @property
    def ready(self) -> bool:
        return self._filled >= self.settings.min_history_days

    def commit_day(self, values: np.ndarray) -> None:
        """Add a completed day (NaN where a value was missing or kept out)."""
        self._days[self._next_row] = values
        self._next_row = (self._next_row + 1) % self.settings.history_days
        self._filled = min(self._filled + 1, self.settings.history_days)
        self._recompute()

    def _recompute(self) -> None:
        w = self.settings.window_minutes
        days = self._days[: self._filled] if self._filled < len(self._days) else self._days
        # Circular padding: the window around 00:02 includes 23:58 of the same day row,
        # close enough for a baseline (the day boundary sits in the overnight lull).
        padded = np.concatenate([days[:, -w:], days, days[:, :w]], axis=1) if w else days
        windows = sliding_window_view(padded, 2 * w + 1, axis=1)  # (days, minutes, 2w+1)
        pooled = windows.transpose(1, 0, 2).reshape(self.settings.minutes_per_day, -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # minutes with no values: NaN
            median = np.nanmedian(pooled, axis=1)
            mad = np.nanmedian(np.abs(pooled - median[:, None]), axis=1)
        self.median = median
        self.mad = mad


class AnomalyDetector:
    """One series: feed it one value per minute (``minute`` counts minutes since the epoch,
    or any fixed origin at a day boundary)."""

    def __init__(self, settings: DetectorSettings | None = None):
        self.settings = settings or DetectorSettings()
        s = self.settings
        self.baseline = SeasonalBaseline(s)
        self._day: int | None = None
        self._today = np.full(s.minutes_per_day, np.nan)
        self._prev: float | None = None
        self._noise: float | None = None
        self._noise_w = 2.0 / (s.noise_span_minutes + 1.0)
        self._slow_w = 2.0 / (s.slow_span_minutes + 1.0)
        self._slow = 0.0
        self._recent: list[float] = []
        self.active = False

    def _roll(self, day: int) -> None:
        if self._day is not None and day != self._day:
            # Completed days are committed; skipped days (no data at all) are not.
            self.baseline.commit_day(self._today)
            self._today = np.full(self.settings.minutes_per_day, np.nan)
        self._day = day

    def update(self, minute: int, value: float) -> Verdict:
        s = self.settings
        day, of_day = divmod(minute, s.minutes_per_day)
        self._roll(day)
        if not math.isfinite(value):
            return Verdict(0.0, 0.0, self.active, math.nan, math.nan)
        self._update_noise(value)
        if not self.baseline.ready:
            self._today[of_day] = value
            return Verdict(0.0, 0.0, False, math.nan, math.nan)
        median = float(self.baseline.median[of_day])
        if math.isnan(median):
            self._today[of_day] = value
            return Verdict(0.0, 0.0, self.active, math.nan, math.nan)
        scale = max(
            MAD_TO_SIGMA * float(self.baseline.mad[of_day]),
            self._noise or 0.0,
            s.absolute_floor,
            s.relative_floor * abs(median),
            1e-12,
        )
        z = (value - median) / scale
        oriented = {"up": z, "down": -z, "both": abs(z)}[s.direction]
        self._recent.append(oriented)
        if len(self._recent) > s.fast_minutes:
            self._recent.pop(0)
        fast = min(self._recent) if len(self._recent) == s.fast_minutes else 0.0
        clipped = min(max(oriented, -s.z_clip), s.z_clip)
        self._slow += self._slow_w * (clipped - self._slow)
        score = max(fast / s.fast_threshold, self._slow / s.slow_threshold, 0.0)
        if self.active:
            self.active = score >= s.clear_ratio
        else:
            self.active = score >= 1.0
        # Anomalous values stay out of tomorrow's baseline.
        self._today[of_day] = math.nan if self.active else value
        return Verdict(score, oriented, self.active, median, scale)

    def _update_noise(self, value: float) -> None:
        prev, self._prev = self._prev, value
        if prev is None:
            return
        diff = abs(value - prev) / DIFF_TO_SIGMA
        if self._noise is None:
            self._noise = diff
            return
        # Clipped: a spike or a step is two or one large differences, not new noise.
        diff = min(diff, 3.0 * self._noise + 1e-12)
        self._noise += self._noise_w * (diff - self._noise)
