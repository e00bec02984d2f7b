"""The feature parameters a model is built with and served with (`app.features` computes
the features), and the default venue whose exchange calendar the sessions follow
(`app.sessions`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_VENUE = "XNYS"


class FeatureParams(BaseModel):
    """What defines the features a model sees: recorded in its manifest, checked when serving.

    Periods and windows count ticks; ``max_gap_s`` is the longest silence between two
    ticks of a symbol that keeps its windows (0: never reset).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    ema_fast: int = Field(default=12, ge=2)
    ema_slow: int = Field(default=26, ge=2)
    rsi_period: int = Field(default=14, ge=2)
    window: int = Field(default=20, ge=2)
    max_gap_s: float = Field(default=300.0, ge=0, le=7 * 86_400)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> FeatureParams:
        if self.ema_fast >= self.ema_slow:
            raise ValueError(
                f"ema_fast = {self.ema_fast}, ema_slow = {self.ema_slow}: "
                "ema_fast must be smaller than ema_slow"
            )
        return self

    @property
    def max_gap_ns(self) -> int:
        return round(self.max_gap_s * 1e9)

    def only(self) -> FeatureParams:
        """These parameters alone (a subclass's extra settings, e.g. venues, dropped)."""
        return FeatureParams.model_validate(
            self.model_dump(include=set(FeatureParams.model_fields))
        )
