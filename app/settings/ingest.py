"""Ingestion's configuration (section ``ingest``): tick bounds (`app.pipeline` screens ticks
against them), idempotency and deadlines (`app.ingest`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from app.config_errors import ConfigModel

# The largest bound the config takes: with prices and sizes at most 1e100, every sum the
# engine keeps (price * size over a session, squared deviations over a window) stays far
# below float64's 1.8e308 even over 1e18 ticks.
MAX_BOUND = 1e100
# BigQuery's streaming limit for time-partitioned tables: rows at most five years old.
BIGQUERY_MAX_PAST_AGE_S = 5 * 365 * 86_400


class TickBounds(ConfigModel):
    """What a tick's values may be (section ``ingest``): finite and inside these bounds.

    A tick outside them is rejected with its reason (the batch's other ticks are applied);
    the defaults carry any real instrument with room to spare.
    """

    price_min: float = Field(default=1e-9, gt=0, le=MAX_BOUND)
    price_max: float = Field(default=1e9, gt=0, le=MAX_BOUND)
    size_max: float = Field(default=1e12, gt=0, le=MAX_BOUND)
    # A tick stamped later than the server's clock plus this is refused (FUTURE_TIMESTAMP):
    # one bad stamp would otherwise make every later real tick of its symbol stale.
    max_future_skew_s: float = Field(default=5.0, ge=0, le=86_400)
    # A tick stamped more than this before the server's clock is refused (PAST_TIMESTAMP); 0
    # (the default: an embedded warehouse takes any date, replays of old tapes included) takes
    # any age. Where the warehouse is BigQuery, set it to at most BIGQUERY_MAX_PAST_AGE_S:
    # BigQuery refuses streamed rows of a time-partitioned table dated further back, so such a
    # tick would be acknowledged and never reach the warehouse.
    max_past_age_s: float = Field(default=0.0, ge=0, le=100 * 365 * 86_400)

    @model_validator(mode="after")
    def _ordered(self) -> TickBounds:
        if self.price_min >= self.price_max:
            raise ValueError(
                f"price_min = {self.price_min:g}, price_max = {self.price_max:g}: "
                "price_min must be below price_max"
            )
        if self.price_min < 1 / MAX_BOUND:
            raise ValueError(f"price_min = {self.price_min:g}: must be >= {1 / MAX_BOUND:g}")
        return self


class IngestConfig(TickBounds):
    """Ingestion (section ``ingest``): tick bounds, idempotency and deadlines."""

    dedupe_window_s: float = Field(default=600.0, ge=0, le=86_400)
    dedupe_max_batches: int = Field(default=100_000, ge=0, le=100_000_000)
    dedupe_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # A call with less time than this left is refused before it is applied.
    min_deadline_ms: float = Field(default=1.0, ge=0, le=60_000)
