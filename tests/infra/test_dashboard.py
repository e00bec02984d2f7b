"""The operations dashboard, as each stack's plan declares it: valid Monitoring API JSON on a
48-column mosaic, charts of metrics the platform actually exports, the alerts' thresholds."""

from __future__ import annotations

import json
import re
from itertools import combinations
from typing import Any

import jsonschema
import pytest

from infra.dashboard import COLUMNS, CONSOLE, console_url
from infra.metrics import NODE_ALLOCATABLE_CORES, REDIS_MEMORY
from tests.infra.stack_config import load
from tests.infra.test_observability import (
    DASHBOARD,
    LOG_METRIC,
    SLO,
    promql_metric_names,
    readable_metrics,
)
from tools.inventory import Inventory

AGGREGATION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["alignmentPeriod", "perSeriesAligner"],
    "properties": {
        "alignmentPeriod": {"type": "string", "pattern": r"^\d+s$"},
        "perSeriesAligner": {"enum": ["ALIGN_MEAN", "ALIGN_MAX", "ALIGN_MIN", "ALIGN_RATE",
                                      "ALIGN_SUM", "ALIGN_COUNT", "ALIGN_NEXT_OLDER"]},
        "crossSeriesReducer": {"enum": ["REDUCE_MEAN", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_SUM",
                                        "REDUCE_COUNT", "REDUCE_PERCENTILE_99"]},
        "groupByFields": {"type": "array", "items": {"type": "string"}},
    },
}  # fmt: skip
# The part of the Monitoring API's Dashboard resource (monitoring.dashboard.v1) the program
# writes, closed to unknown fields: a typo is refused here, not at `pulumi up`. Thresholds on an
# XyChart take no colour or direction (the API refuses both there).
DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["displayName", "mosaicLayout"],
    "properties": {
        "displayName": {"type": "string", "minLength": 1},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "mosaicLayout": {
            "type": "object",
            "additionalProperties": False,
            "required": ["columns", "tiles"],
            "properties": {
                "columns": {"type": "integer", "minimum": 1, "maximum": COLUMNS},
                "tiles": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["width", "height", "widget"],
                        "properties": {
                            "xPos": {"type": "integer", "minimum": 1},  # 0 is left out
                            "yPos": {"type": "integer", "minimum": 1},
                            "width": {"type": "integer", "minimum": 1},
                            "height": {"type": "integer", "minimum": 1},
                            "widget": {"$ref": "#/$defs/widget"},
                        },
                    },
                },
            },
        },
    },
    "$defs": {
        "widget": {
            "type": "object",
            "additionalProperties": False,
            "required": ["title", "xyChart"],
            "properties": {"title": {"type": "string", "minLength": 1}, "xyChart": {"$ref": "#/$defs/xyChart"}},
        },
        "xyChart": {
            "type": "object",
            "additionalProperties": False,
            "required": ["dataSets"],
            "properties": {
                "dataSets": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/dataSet"}},
                "yAxis": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"label": {"type": "string"}, "scale": {"enum": ["LINEAR", "LOG10"]}},
                },
                "thresholds": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["value"],
                        "properties": {
                            "label": {"type": "string"},
                            "value": {"type": "number"},
                            "targetAxis": {"enum": ["Y1", "Y2"]},
                        },
                    },
                },
            },
        },
        "dataSet": {
            "type": "object",
            "additionalProperties": False,
            "required": ["timeSeriesQuery", "plotType"],
            "properties": {
                "timeSeriesQuery": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "maxProperties": 1,  # one way to say what to chart
                    "properties": {
                        "prometheusQuery": {"type": "string", "minLength": 1},
                        "timeSeriesFilter": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["filter", "aggregation"],
                            "properties": {
                                "filter": {"type": "string", "minLength": 1},
                                "aggregation": AGGREGATION,
                            },
                        },
                    },
                },
                "plotType": {"enum": ["LINE", "STACKED_AREA", "STACKED_BAR", "HEATMAP"]},
                "legendTemplate": {"type": "string"},
                "targetAxis": {"enum": ["Y1", "Y2"]},
            },
        },
    },
}  # fmt: skip


def dashboard_of(plan: Inventory) -> dict[str, Any]:
    (dashboard,) = plan.of_type(DASHBOARD)
    return json.loads(dashboard.inputs["dashboardJson"])


def charts(plan: Inventory) -> dict[str, dict[str, Any]]:
    tiles = dashboard_of(plan)["mosaicLayout"]["tiles"]
    return {tile["widget"]["title"]: tile["widget"]["xyChart"] for tile in tiles}


def queries(chart: dict[str, Any]) -> list[dict[str, Any]]:
    return [data_set["timeSeriesQuery"] for data_set in chart["dataSets"]]


def test_one_dashboard_per_stack_in_the_monitoring_apis_json(stack_plan: Inventory):
    body = dashboard_of(stack_plan)
    jsonschema.validate(body, DASHBOARD_SCHEMA)
    assert stack_plan.outputs["project"] in body["displayName"]
    assert body["labels"] == dict(load(stack_plan.stack).labels)


def test_tiles_fit_the_48_columns_and_never_overlap(stack_plan: Inventory):
    layout = dashboard_of(stack_plan)["mosaicLayout"]
    assert layout["columns"] == COLUMNS == 48
    boxes = []
    for tile in layout["tiles"]:
        x, y = tile.get("xPos", 0), tile.get("yPos", 0)
        assert x + tile["width"] <= layout["columns"], tile["widget"]["title"]
        boxes.append((x, y, x + tile["width"], y + tile["height"]))
    for a, b in combinations(boxes, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_it_shows_what_operations_watch(stack_plan: Inventory):
    titles = " | ".join(charts(stack_plan)).lower()
    for subject in (
        "latency",
        "throughput",
        "error ratio",
        "burn rate",
        "triton queue",
        "gpu duty cycle",
        "spot preemptions",
        "on-demand fallback",
        "redis memory",
        "publish backlog",
    ):
        assert subject in titles, subject
    latency = charts(stack_plan)["Signal latency (all methods)"]
    assert [d["legendTemplate"] for d in latency["dataSets"]] == ["p50", "p95", "p99"]


def test_every_chart_reads_metrics_the_platform_or_google_exports(stack_plan: Inventory):
    """PromQL reads what our processes register (app/telemetry.py and the scaler and
    detector), Triton's, GKE's DCGM and the stack's log metrics; filters name Google Cloud
    metrics of resources the stack declares, or the stack's own SLO."""
    readable = readable_metrics(stack_plan)
    (slo,) = stack_plan.of_type(SLO)
    slo_name = (
        f"projects/{stack_plan.outputs['project']}/services/{slo.inputs['service']}"
        f"/serviceLevelObjectives/{slo.inputs['sloId']}"
    )
    # Google Cloud's own metric types (Cloud Monitoring's metric lists), with what emits them.
    google = {
        REDIS_MEMORY: "gcp:redis/cluster:Cluster",
        NODE_ALLOCATABLE_CORES: "gcp:container/cluster:Cluster",
    }
    read: set[str] = set()
    for title, chart in charts(stack_plan).items():
        for query in queries(chart):
            if "prometheusQuery" in query:
                names = promql_metric_names(query["prometheusQuery"])
                assert names and names <= readable, (title, names - readable)
                read |= names
                continue
            text = query["timeSeriesFilter"]["filter"]
            if text.startswith("select_slo_"):
                assert re.fullmatch(rf'select_slo_burn_rate\("{slo_name}", "\d+s"\)', text), text
                continue
            (metric_type,) = re.findall(r'metric\.type = "([^"]+)"', text)
            assert metric_type in google, (title, metric_type)
            assert stack_plan.of_type(google[metric_type]), f"nothing emits {metric_type}"
    assert "signal_requests_total" in read and "DCGM_FI_DEV_GPU_UTIL" in read
    (log_metric,) = stack_plan.of_type(LOG_METRIC)
    assert f"logging_googleapis_com:user_{log_metric.inputs['name']}" in read


def test_charts_draw_the_alerts_thresholds(stack_plan: Inventory):
    alerts = load(stack_plan.stack).observability.alerts
    drawn = {
        title: sorted(t["value"] for t in chart.get("thresholds", []))
        for title, chart in charts(stack_plan).items()
    }
    assert drawn["Signal latency (all methods)"] == [pytest.approx(alerts.latency_p95_ms / 1000)]
    assert drawn["Server-error ratio of signal requests"] == [alerts.error_rate]
    assert drawn["SLO error-budget burn rate"] == [6.0, 14.4]
    assert drawn["Triton queue time per request"] == [alerts.triton_queue_ms * 1000]
    assert drawn["GPU duty cycle (GKE managed DCGM)"] == [
        alerts.gpu_duty_cycle_min,
        alerts.gpu_duty_cycle_max,
    ]
    assert drawn["Spot preemptions in the last hour"] == [alerts.spot_preemptions_per_hour]
    assert drawn["Redis memory (highest node)"] == [alerts.redis_memory_utilization]


def test_fallback_chart_counts_inference_nodes_per_pool(stack_plan: Inventory):
    (query,) = queries(
        charts(stack_plan)["Inference GPU nodes per pool (spot first, on-demand fallback)"]
    )
    series = query["timeSeriesFilter"]
    # The inference compute class covers every GPU pool, spot and on-demand (infra/cluster.py).
    assert (
        'metadata.user_labels."cloud.google.com/compute-class" = "gpu-inference"'
        in series["filter"]
    )
    assert series["aggregation"]["crossSeriesReducer"] == "REDUCE_COUNT"
    assert (
        'metadata.user_labels."cloud.google.com/gke-nodepool"'
        in series["aggregation"]["groupByFields"]
    )
    pools = {p.inputs["name"] for p in stack_plan.of_type("gcp:container/nodePool:NodePool")}
    classed = {
        p.inputs["name"]
        for p in stack_plan.of_type("gcp:container/nodePool:NodePool")
        if p.inputs["nodeConfig"]["labels"].get("cloud.google.com/compute-class") == "gpu-inference"
    }
    assert classed and classed < pools  # the GPU pools carry the class; the system pool not
    if stack_plan.stack == "prod":
        spot = {
            p.inputs["name"]
            for p in stack_plan.of_type("gcp:container/nodePool:NodePool")
            if p.inputs["nodeConfig"].get("spot")
        }
        assert spot and classed - spot, "prod charts spot pools and their on-demand fallback"


def test_the_dashboard_waits_for_nothing_it_charts(stack_plan: Inventory):
    """Cloud Monitoring does not check a dashboard's queries when it is created, and every
    alert's documentation links the dashboard: waiting for the SLO (which exists only from
    stage serving, after traffic) would hold back every alert on a new project (review.md #2)."""
    (dashboard,) = stack_plan.of_type(DASHBOARD)
    (slo,) = stack_plan.of_type(SLO)
    (log_metric,) = stack_plan.of_type(LOG_METRIC)
    assert not {slo.urn, log_metric.urn} & set(dashboard.options["dependencies"])
    assert not any(slo.urn in deps for deps in dashboard.options["propertyDependencies"].values())
    assert dashboard.inputs["project"] == stack_plan.outputs["project"]
    for policy in stack_plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy"):
        if policy.name != "alert-slo-burn-rate":
            assert slo.urn not in policy.options["dependencies"], policy.name


def test_console_url_of_a_dashboard_id():
    assert console_url("projects/123456/dashboards/4a3f-99", "signal-platform-prod") == (
        f"{CONSOLE}/4a3f-99?project=signal-platform-prod"
    )
