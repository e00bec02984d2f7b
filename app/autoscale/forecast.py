"""Seasonal request-rate forecasting: Holt-Winters with multiplicative seasonality, online.

The model is statsmodels' ``ExponentialSmoothing(trend=None, seasonal="mul")`` and its
recursion is replayed here exactly (same update order, same use of the previous level in
the seasonal update), so a forecaster built from a statsmodels fit reproduces that fit's
fitted values and forecasts, and then keeps updating one observation at a time without
refitting:

    level'      = alpha * y / s[p] + (1 - alpha) * level
    s[p]        = gamma * y / level + (1 - gamma) * s[p]      (with the level before y)
    forecast(q) = level * s[q]

Observations are keyed by their *phase*, the position in the season (the minute of the UTC
day for a one-day season of one-minute steps), not by a running count: a missed scrape
leaves the phase it would have updated untouched instead of shifting every later one.

Besides the point forecast the forecaster tracks the scale of its one-step relative error
(an EWMA of ``|log(y / forecast)|``), which the scaler turns into headroom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

# E|X| = sigma * sqrt(2 / pi) for a normal X: turns a mean absolute log error into a sigma.
_MEAN_ABS_TO_SIGMA = math.sqrt(math.pi / 2)
# The smallest rate the multiplicative model divides by (requests per second).
RATE_FLOOR = 1e-3


@dataclass(frozen=True)
class SmoothingParams:
    """Holt-Winters smoothing weights, each in [0, 1]."""

    alpha: float
    gamma: float

    def __post_init__(self) -> None:
        for name in ("alpha", "gamma"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0 or math.isnan(value):
                raise ValueError(f"{name} must be in [0, 1] (got {value!r})")


class SeasonalForecaster:
    """One series' level and seasonal indices, updated online, forecasting ahead by phase."""

    def __init__(
        self,
        params: SmoothingParams,
        level: float,
        season: np.ndarray,
        error_span: int = 60,
    ):
        season = np.asarray(season, dtype=np.float64)
        if season.ndim != 1 or len(season) < 2:
            raise ValueError(f"season must be a 1-d array of >= 2 indices (got {season.shape})")
        if not np.all(np.isfinite(season)) or np.any(season <= 0):
            raise ValueError("seasonal indices must be finite and > 0")
        if not math.isfinite(level) or level <= 0:
            raise ValueError(f"level must be finite and > 0 (got {level!r})")
        if error_span < 1:
            raise ValueError(f"error_span must be >= 1 (got {error_span})")
        self.params = params
        self.level = float(level)
        self.season = season.copy()
        self._error_weight = 2.0 / (error_span + 1.0)
        self._mean_abs_log_error: float | None = None

    @property
    def season_length(self) -> int:
        return len(self.season)

    # ---- building

    @classmethod
    def flat(cls, season_length: int, level: float, params: SmoothingParams) -> SeasonalForecaster:
        """A forecaster that knows nothing yet: constant level, neutral season."""
        return cls(params, max(level, RATE_FLOOR), np.ones(season_length))

    @classmethod
    def fit(
        cls,
        history: np.ndarray,
        season_length: int,
        first_phase: int = 0,
        horizon: int = 1,
        error_span: int = 60,
    ) -> SeasonalForecaster:
        """Fit on ``history`` (at least two full seasons, one value per step, oldest first,
        the first at ``first_phase``) and replay it, so the state is the state after its
        last value.

        The initial level and seasons are statsmodels' heuristic initialisation; alpha and
        gamma are the grid point whose ``horizon``-step-ahead forecasts had the smallest
        squared log error over the history after its first season. (statsmodels' own
        optimiser minimises one-step error, which favours an alpha near 1 on autocorrelated
        traffic: right for the next minute, noisy for the minutes a pod takes to start.)
        """
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        y = np.maximum(np.asarray(history, dtype=np.float64), RATE_FLOOR)
        if y.ndim != 1 or len(y) < 2 * season_length:
            raise ValueError(
                f"history must hold at least two seasons ({2 * season_length} values; got {len(y)})"
            )
        if not np.all(np.isfinite(y)):
            raise ValueError("history must be finite (fill or drop missing steps first)")
        if not 1 <= horizon < season_length:
            raise ValueError(f"horizon must be in [1, {season_length - 1}] (got {horizon})")
        model = ExponentialSmoothing(
            y,
            trend=None,
            seasonal="mul",
            seasonal_periods=season_length,
            initialization_method="heuristic",
        )
        # statsmodels' stubs type this loosely: a float, None and an array of floats.
        level0, _, seasons0 = cast(tuple[Any, Any, Any], model.initial_values())
        season = np.roll(np.asarray(seasons0, dtype=np.float64), first_phase % season_length)
        params = _grid_search(y, float(level0), season, first_phase, horizon)
        fitted = cls(params, float(level0), season, error_span)
        fitted.replay(y, first_phase)
        return fitted

    @classmethod
    def from_statsmodels(
        cls, params: dict, season_length: int, first_phase: int = 0, error_span: int = 60
    ) -> SeasonalForecaster:
        """The state *before* the first observation of a statsmodels fit (its initial level
        and seasons), with the first season index at ``first_phase``."""
        initial = np.asarray(params["initial_seasons"], dtype=np.float64)
        season = np.roll(initial, first_phase % season_length)
        smoothing = SmoothingParams(
            alpha=float(params["smoothing_level"]),
            gamma=float(params["smoothing_seasonal"]),
        )
        return cls(smoothing, float(params["initial_level"]), season, error_span)

    def replay(self, values: np.ndarray, first_phase: int) -> np.ndarray:
        """Update with consecutive values from ``first_phase`` on; returns the one-step
        forecasts made before each value (statsmodels' fitted values)."""
        out = np.empty(len(values))
        for i, value in enumerate(values):
            phase = (first_phase + i) % self.season_length
            out[i] = self.level * self.season[phase]
            self.update(float(value), phase)
        return out

    # ---- online use

    def update(self, value: float, phase: int, update_season: bool = True) -> None:
        """Take the observation at ``phase``. Non-finite values are skipped (a missed
        scrape). ``update_season=False`` moves only the level (days off the trading
        calendar must not teach the intraday shape)."""
        if not math.isfinite(value):
            return
        value = max(value, RATE_FLOOR)
        phase %= self.season_length
        alpha, gamma = self.params.alpha, self.params.gamma
        index = self.season[phase]
        level = self.level
        error = abs(math.log(value / (level * index)))
        if self._mean_abs_log_error is None:
            self._mean_abs_log_error = error
        else:
            w = self._error_weight
            self._mean_abs_log_error += w * (error - self._mean_abs_log_error)
        self.level = max(alpha * value / index + (1.0 - alpha) * level, RATE_FLOOR)
        if update_season:
            self.season[phase] = max(gamma * value / level + (1.0 - gamma) * index, 1e-6)

    def forecast(self, first_phase: int, steps: int) -> np.ndarray:
        """Point forecasts for ``steps`` consecutive phases starting at ``first_phase``."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1 (got {steps})")
        phases = (first_phase + np.arange(steps)) % self.season_length
        return self.level * self.season[phases]

    @property
    def log_error_sigma(self) -> float:
        """The one-step forecast error's standard deviation, in log units (0 before any
        observation)."""
        if self._mean_abs_log_error is None:
            return 0.0
        return self._mean_abs_log_error * _MEAN_ABS_TO_SIGMA


ALPHA_GRID = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
GAMMA_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35)


def _grid_search(
    y: np.ndarray, level0: float, season0: np.ndarray, first_phase: int, horizon: int
) -> SmoothingParams:
    """Every (alpha, gamma) of the grid replayed at once, one numpy row each."""
    alphas, gammas = (a.ravel() for a in np.meshgrid(ALPHA_GRID, GAMMA_GRID, indexing="ij"))
    m = len(season0)
    level = np.full(len(alphas), level0)
    season = np.tile(season0, (len(alphas), 1))
    pending = np.zeros((horizon, len(alphas)))  # forecasts made for the coming steps
    sse = np.zeros(len(alphas))
    log_y = np.log(y)
    for i, value in enumerate(y):
        phase = (first_phase + i) % m
        if i >= m and i >= horizon:
            sse += (log_y[i] - np.log(pending[i % horizon])) ** 2
        index = season[:, phase].copy()
        season[:, phase] = gammas * value / level + (1.0 - gammas) * index
        level = np.maximum(alphas * value / index + (1.0 - alphas) * level, RATE_FLOOR)
        pending[i % horizon] = level * season[:, (phase + horizon) % m]
    best = int(np.argmin(sse))
    return SmoothingParams(alpha=float(alphas[best]), gamma=float(gammas[best]))
