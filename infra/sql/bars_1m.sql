-- bars_1m: one-minute OHLCV bars per symbol, from `ticks`. An incremental materialized view.
--
-- A bar covers [minute, minute + 1 min): a tick at exactly hh:mm:00 opens the new bar.
-- Open and close are the prices of the earliest and latest tick of the minute (MIN_BY and
-- MAX_BY on the tick time in nanoseconds, `ts_ns`: two ticks in the same microsecond keep
-- their order; rows written before `ts_ns` existed fall back to `event_time`). VWAP is
-- `notional / volume`: incremental materialized views keep aggregates as plain outputs (no
-- arithmetic on top of them), so the view stores the two sums, which also roll up exactly to
-- longer bars, and `bars_1m_vwap` divides them.
SELECT
  symbol,
  TIMESTAMP_TRUNC(event_time, MINUTE) AS minute,
  MIN_BY(price, COALESCE(ts_ns, UNIX_MICROS(event_time) * 1000)) AS open,
  MAX(price) AS high,
  MIN(price) AS low,
  MAX_BY(price, COALESCE(ts_ns, UNIX_MICROS(event_time) * 1000)) AS close,
  SUM(size) AS volume,
  SUM(price * size) AS notional,
  COUNT(*) AS trade_count
FROM `${project}.${dataset}.ticks`
GROUP BY symbol, TIMESTAMP_TRUNC(event_time, MINUTE)
