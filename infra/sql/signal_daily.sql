-- signal_daily: per symbol, model and day, the signal count, the mean confidence and the hit
-- rate against the next one-minute bar. A logical view over two incremental materialized
-- views, `signal_minutes` and `bars_1m`, so reading it scans only their small rows.
--
-- Why not one materialized view: a hit needs the next bar's open and close, i.e. an aggregate
-- of ticks, before the signals are aggregated per day. Incremental materialized views
-- aggregate once, and a join of signals to raw ticks repeats each signal once per tick of the
-- next bar, so counts would be wrong. Aggregating each side in its own view and joining the
-- aggregates here is exact.
--
-- A signal made during minute m is scored against the bar of minute m + 1: an UP signal hits
-- when that bar closes above its open, a DOWN signal when it closes below. FLAT signals and
-- signals whose next minute had no trades are counted but not scored; hit_rate is NULL when
-- nothing was scored. The day is the signal's (UTC) day.
SELECT
  s.symbol,
  s.model_version,
  DATE(s.minute) AS day,
  SUM(s.signal_count) AS signal_count,
  SAFE_DIVIDE(SUM(s.confidence_sum), SUM(s.signal_count)) AS mean_confidence,
  SUM(IF(b.minute IS NULL, 0, s.up_count + s.down_count)) AS scored_count,
  SUM(
    CASE
      WHEN b.close > b.open THEN s.up_count
      WHEN b.close < b.open THEN s.down_count
      ELSE 0
    END
  ) AS hit_count,
  SAFE_DIVIDE(
    SUM(
      CASE
        WHEN b.close > b.open THEN s.up_count
        WHEN b.close < b.open THEN s.down_count
        ELSE 0
      END
    ),
    SUM(IF(b.minute IS NULL, 0, s.up_count + s.down_count))
  ) AS hit_rate
FROM `${project}.${dataset}.signal_minutes` AS s
LEFT JOIN `${project}.${dataset}.bars_1m` AS b
  ON b.symbol = s.symbol
  AND b.minute = TIMESTAMP_ADD(s.minute, INTERVAL 1 MINUTE)
GROUP BY s.symbol, s.model_version, DATE(s.minute)
