-- signal_minutes: signals per symbol, model and minute, from `signals`. An incremental
-- materialized view; `signal_daily` scores each minute against the next one-minute bar.
--
-- `signals` holds the protobuf Signal's fields as its BigQuery subscription writes them:
-- `ts_ns` is nanoseconds since the epoch and `direction` the Direction enum's number
-- (each enum value's name below is filled in with its number from app/proto/signals.proto).
SELECT
  symbol,
  model_version,
  TIMESTAMP_TRUNC(TIMESTAMP_MICROS(DIV(ts_ns, 1000)), MINUTE) AS minute,
  COUNT(*) AS signal_count,
  SUM(confidence) AS confidence_sum,
  COUNTIF(direction = ${DIRECTION_UP}) AS up_count,
  COUNTIF(direction = ${DIRECTION_DOWN}) AS down_count
FROM `${project}.${dataset}.signals`
GROUP BY symbol, model_version, TIMESTAMP_TRUNC(TIMESTAMP_MICROS(DIV(ts_ns, 1000)), MINUTE)
