"""The anomaly detector as a service: one detector per (series, region), fed every minute.

On start it backfills each detector from Prometheus (``historyDays`` of the series, so the
baseline is ready at once), then each minute reads the last complete minute's value of
every series in every region, updates its detector and exports:

* ``signal_anomaly_score{series,region}``: 1.0 is the alert line (see detector.py);
* ``signal_anomaly_active{series,region}``: 1 while the detector alerts (with hysteresis);
* ``signal_anomaly_baseline{series,region}``: the seasonal median the value is judged by.

The Cloud Monitoring alert policy (infra/autoscale.py) fires on
``signal_anomaly_active == 1`` through Managed Prometheus.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import structlog
from prometheus_client import CollectorRegistry, Gauge

from app.alerting.config import AlertingConfig, SeriesConfig
from app.alerting.detector import AnomalyDetector, Verdict
from app.autoscale.config import for_region
from app.autoscale.prometheus import MINUTE, PrometheusClient, PrometheusError, minute_of

log = structlog.get_logger("app.alerting")


class Exports:
    def __init__(self, registry: CollectorRegistry):
        labels = ["series", "region"]
        self.score = Gauge(
            "signal_anomaly_score",
            "Deviation from the seasonal baseline; 1.0 is the alert line.",
            labels,
            registry=registry,
        )
        self.active = Gauge(
            "signal_anomaly_active",
            "1 while the series is anomalous (raised at score 1, cleared below clearRatio).",
            labels,
            registry=registry,
        )
        self.baseline = Gauge(
            "signal_anomaly_baseline",
            "The robust seasonal baseline (median at this minute of the day).",
            labels,
            registry=registry,
        )
        self.source_up = Gauge(
            "signal_anomaly_source_up",
            "1 when the last read of the series succeeded, else 0.",
            labels,
            registry=registry,
        )


class DetectorService:
    def __init__(
        self,
        config: AlertingConfig,
        client: PrometheusClient,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.client = client
        self.registry = registry if registry is not None else CollectorRegistry()
        self.exports = Exports(self.registry)
        self.clock = clock
        self.detectors: dict[tuple[str, str], AnomalyDetector] = {}
        self.last_minute: dict[tuple[str, str], int] = {}

    def _query(self, series: SeriesConfig, region: str) -> str:
        return for_region(series.query, region)

    def start(self) -> None:
        """Before the first tick: the baselines from history, when the config asks for it."""
        if self.config.backfill:
            self.backfill()

    def backfill(self) -> None:
        """Replay each series' history (whole days, up to the last complete minute)."""
        now = self.clock()
        last = minute_of(now) - 1
        for series in self.config.series:
            for region in self.config.regions:
                detector = self._detector(series, region)
                days = series.detector.history_days
                start = (last // series.detector.minutes_per_day - days) * (
                    series.detector.minutes_per_day
                )
                try:
                    values = self.client.query_range(
                        self._query(series, region), start * MINUTE, last * MINUTE, MINUTE
                    )
                except PrometheusError as exc:
                    log.warning(
                        "history_unavailable", series=series.name, region=region, error=str(exc)
                    )
                    continue
                verdict = None
                for offset, value in enumerate(values):
                    verdict = detector.update(start + offset, float(value))
                self.last_minute[(series.name, region)] = last
                if verdict is not None:
                    self._export(series.name, region, verdict)

    def _detector(self, series: SeriesConfig, region: str) -> AnomalyDetector:
        key = (series.name, region)
        if key not in self.detectors:
            self.detectors[key] = AnomalyDetector(series.detector)
        return self.detectors[key]

    def _export(self, name: str, region: str, verdict: Verdict) -> None:
        self.exports.score.labels(series=name, region=region).set(verdict.score)
        self.exports.active.labels(series=name, region=region).set(1 if verdict.active else 0)
        if math.isfinite(verdict.baseline):
            self.exports.baseline.labels(series=name, region=region).set(verdict.baseline)

    def tick(self) -> dict[tuple[str, str], Verdict]:
        """Feed every detector the last complete minute, once."""
        minute = minute_of(self.clock()) - 1
        verdicts: dict[tuple[str, str], Verdict] = {}
        for series in self.config.series:
            for region in self.config.regions:
                key = (series.name, region)
                if self.last_minute.get(key, -1) >= minute:
                    continue
                try:
                    value = self.client.query(self._query(series, region), (minute + 1) * MINUTE)
                except PrometheusError as exc:
                    log.warning(
                        "series_unavailable", series=series.name, region=region, error=str(exc)
                    )
                    self.exports.source_up.labels(series=series.name, region=region).set(0)
                    continue
                self.exports.source_up.labels(series=series.name, region=region).set(1)
                verdict = self._detector(series, region).update(minute, value)
                self.last_minute[key] = minute
                verdicts[key] = verdict
                self._export(series.name, region, verdict)
                if verdict.active:
                    log.info(
                        "anomaly",
                        series=series.name,
                        region=region,
                        value=value,
                        baseline=verdict.baseline,
                        score=verdict.score,
                    )
        return verdicts
