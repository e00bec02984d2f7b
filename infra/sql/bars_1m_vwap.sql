-- bars_1m_vwap: the one-minute bars with their VWAP (a logical view over `bars_1m`).
SELECT
  symbol,
  minute,
  open,
  high,
  low,
  close,
  volume,
  SAFE_DIVIDE(notional, volume) AS vwap,
  trade_count
FROM `${project}.${dataset}.bars_1m`
