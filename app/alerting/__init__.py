"""Anomaly-based alerting: a robust seasonal baseline per time of day and a deviation score.

`detector` (the online detector, one per series) → `service` (reads latency, error-rate
and GPU-utilisation series from Prometheus, exports `signal_anomaly_score` and
`signal_anomaly_active` for the Cloud Monitoring alert policy).
"""
