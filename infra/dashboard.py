"""The operations dashboard: its charts in the Monitoring API's Dashboard JSON
(`projects.dashboards`, one per stack, declared by infra/observability.py) and its console URL,
which every alert's documentation links.

What it shows, top to bottom: signal latency percentiles and throughput (requests by method,
ticks and signals published by topic); the server-error ratio and the SLO's error-budget burn;
Triton's queue time and the GPUs' duty cycle; spot preemptions and the inference nodes per
pool (spot first, the on-demand pools it falls back to); Redis memory and the publish backlog.
Each chart that an alert watches draws the alert's threshold. The layout is a mosaic of 48
columns, two charts per row; XyChart thresholds carry no colour or direction (the API refuses
them on charts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra import metrics
from infra.config import AlertThresholds

COLUMNS = 48  # the mosaic layout's width, the Monitoring API's maximum
CHART_WIDTH = COLUMNS // 2
CHART_HEIGHT = 16
CONSOLE = "https://console.cloud.google.com/monitoring/dashboards/builder"
# GKE's node metrics carry the node's Kubernetes labels as metadata: the node pool among them.
NODE_POOL_LABEL = 'metadata.user_labels."cloud.google.com/gke-nodepool"'


@dataclass(frozen=True)
class Series:
    """One line (or area) on a chart: PromQL, or a Monitoring filter with its aggregation."""

    query: str
    legend: str = ""
    aggregation: Mapping[str, Any] | None = None  # set: `query` is a Monitoring filter

    def data_set(self, plot: str) -> dict[str, Any]:
        if self.aggregation is None:
            query: dict[str, Any] = {"prometheusQuery": self.query}
        else:
            query = {"timeSeriesFilter": {"filter": self.query, "aggregation": self.aggregation}}
        data: dict[str, Any] = {"timeSeriesQuery": query, "plotType": plot, "targetAxis": "Y1"}
        if self.legend:
            data["legendTemplate"] = self.legend
        return data


@dataclass(frozen=True)
class Chart:
    title: str
    y_label: str
    series: Sequence[Series]
    thresholds: Mapping[str, float] = field(default_factory=dict)  # label → value
    plot: str = "LINE"

    def widget(self) -> dict[str, Any]:
        chart: dict[str, Any] = {
            "dataSets": [s.data_set(self.plot) for s in self.series],
            "yAxis": {"label": self.y_label, "scale": "LINEAR"},
        }
        if self.thresholds:
            chart["thresholds"] = [
                {"label": label, "value": value, "targetAxis": "Y1"}
                for label, value in self.thresholds.items()
            ]
        return {"title": self.title, "xyChart": chart}


def aligned(aligner: str, reducer: str, group_by: Sequence[str]) -> dict[str, Any]:
    return {
        "alignmentPeriod": "60s",
        "perSeriesAligner": aligner,
        "crossSeriesReducer": reducer,
        "groupByFields": list(group_by),
    }


def charts(alerts: AlertThresholds, project_id: str) -> list[Chart]:
    """The dashboard's charts, in reading order; thresholds are the alerts'."""
    return [
        Chart(
            "Signal latency (all methods)",
            "seconds",
            [
                Series(metrics.latency_quantile(q, by=()), f"p{q * 100:g}")
                for q in (0.5, 0.95, 0.99)
            ],
            {"p95 alert": alerts.latency_p95_ms / 1000},
        ),
        Chart(
            "Throughput: requests by method, ticks and signals published by topic",
            "per second",
            [Series(metrics.requests_per_second()), Series(metrics.published_per_second())],
        ),
        Chart(
            "Server-error ratio of signal requests",
            "ratio",
            [Series(metrics.server_error_ratio(by=()), "server errors")],
            {"alert": alerts.error_rate},
        ),
        Chart(
            "SLO error-budget burn rate",
            "x budget rate",
            [
                Series(
                    metrics.burn_rate_filter(project_id, window),
                    f"burn over {window}",
                    {"alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_MEAN"},
                )
                for window, _ in metrics.BURN_RATE_WINDOWS
            ],
            {f"page ({window})": rate for window, rate in metrics.BURN_RATE_WINDOWS},
        ),
        Chart(
            "Triton queue time per request",
            "microseconds",
            [Series(metrics.triton_queue_us())],
            {"alert": alerts.triton_queue_ms * 1000},
        ),
        Chart(
            "GPU duty cycle (GKE managed DCGM)",
            "percent",
            [Series(metrics.gpu_utilization())],
            {"low": alerts.gpu_duty_cycle_min, "high": alerts.gpu_duty_cycle_max},
        ),
        Chart(
            "Spot preemptions in the last hour",
            "VMs",
            [Series(metrics.preemptions_per_hour(), "preempted")],
            {"alert": alerts.spot_preemptions_per_hour},
        ),
        Chart(
            "Inference GPU nodes per pool (spot first, on-demand fallback)",
            "nodes",
            [
                Series(
                    metrics.inference_nodes_filter(),
                    aggregation=aligned(
                        "ALIGN_MEAN",
                        "REDUCE_COUNT",
                        ["resource.label.cluster_name", NODE_POOL_LABEL],
                    ),
                )
            ],
            plot="STACKED_AREA",
        ),
        Chart(
            "Redis memory (highest node)",
            "utilisation",
            [
                Series(
                    metrics.redis_memory_filter(),
                    aggregation=aligned("ALIGN_MAX", "REDUCE_MAX", ["resource.label.cluster_id"]),
                )
            ],
            {"alert": alerts.redis_memory_utilization},
        ),
        Chart(
            "Publish backlog (accepted, not yet acknowledged)",
            "messages",
            [Series(metrics.publish_backlog())],
        ),
    ]


def mosaic(widgets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Two widgets per row, each half the mosaic's width; zero offsets are left out, as the API
    returns them."""
    tiles = []
    for i, widget in enumerate(widgets):
        tile: dict[str, Any] = {"width": CHART_WIDTH, "height": CHART_HEIGHT, "widget": widget}
        x, y = (i % 2) * CHART_WIDTH, (i // 2) * CHART_HEIGHT
        if x:
            tile["xPos"] = x
        if y:
            tile["yPos"] = y
        tiles.append(tile)
    return {"columns": COLUMNS, "tiles": tiles}


def dashboard_json(
    project_id: str, alerts: AlertThresholds, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The Dashboard resource of the Monitoring API, as `gcp.monitoring.Dashboard` takes it."""
    return {
        "displayName": f"signal-platform operations ({project_id})",
        "mosaicLayout": mosaic([chart.widget() for chart in charts(alerts, project_id)]),
        "labels": dict(labels),
    }


def console_url(dashboard_id: str, project_id: str) -> str:
    """The console page of a dashboard, from its resource id (`projects/N/dashboards/ID`)."""
    return f"{CONSOLE}/{dashboard_id.rsplit('/', 1)[-1]}?project={project_id}"
