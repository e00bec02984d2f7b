"""First-apply rules through the real pack: a golden stack whose monitoring can be created on a
fresh project (PromQL conditions, a log-based metric waited for through a settle delay, a
declared metric descriptor, the SLO and its burn-rate alert in a later stage) and whose awaited
workloads run only what exists before the update; one change per violation."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tests.policies.cases import (
    UNKNOWN,
    StackCase,
    assert_stack_case,
    mutate,
    resource,
)
from tests.policies.cases import (
    stack_case as case,
)
from tests.policies.test_kubernetes import GOLDEN as DEPLOYMENT_INPUTS
from tools.analyzer import AnalyzerResource, PolicyPackProcess

LEVELS = {
    "apply-monitoring-metric-exists": "mandatory",
    "apply-workload-sources": "mandatory",
}

PROJECT = "signal-test"
SLO = "gcp:monitoring/slo:Slo"
ALERT = "gcp:monitoring/alertPolicy:AlertPolicy"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
LOG_METRIC = "gcp:logging/metric:Metric"
DESCRIPTOR = "gcp:monitoring/metricDescriptor:MetricDescriptor"
SLEEP = "time:index/sleep:Sleep"
REGISTRY = "gcp:artifactregistry/repository:Repository"
BUCKET = "gcp:storage/bucket:Bucket"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
JOB = "kubernetes:batch/v1:Job"

LATER = {"signal-platform-stage": "serving"}
REQUESTS = 'metric.type="prometheus.googleapis.com/requests_total/counter" resource.type="prometheus_target"'
SLO_INPUTS = {
    "service": "api",
    "sloId": "availability",
    "goal": 0.999,
    "requestBasedSli": {
        "goodTotalRatio": {
            "totalServiceFilter": REQUESTS,
            "badServiceFilter": f'{REQUESTS} metric.labels.code="INTERNAL"',
        }
    },
    "userLabels": LATER,
}


def promql(query: str) -> dict[str, Any]:
    return {
        "displayName": query,
        "conditionPrometheusQueryLanguage": {"query": query, "duration": "300s"},
    }


def threshold(filter_: str, kind: str = "conditionThreshold") -> dict[str, Any]:
    return {"displayName": filter_, kind: {"filter": filter_, "duration": "300s"}}


def alert(
    name: str, *conditions: dict[str, Any], labels: Any = None, **kw: Any
) -> AnalyzerResource:
    inputs = {"displayName": name, "combiner": "OR", "conditions": list(conditions)}
    if labels is not None:
        inputs["userLabels"] = labels
    return resource(ALERT, inputs, name, **kw)


def dashboard(*widgets: dict[str, Any], **kw: Any) -> AnalyzerResource:
    tiles = [{"widget": {"xyChart": {"dataSets": [{"timeSeriesQuery": w}]}}} for w in widgets]
    layout = {"displayName": "ops", "mosaicLayout": {"tiles": tiles}}
    return resource(DASHBOARD, {"dashboardJson": json.dumps(layout)}, "ops", **kw)


PREEMPTIONS = resource(
    LOG_METRIC,
    {"name": "preemptions", "filter": 'protoPayload.methodName="compute.instances.preempted"'},
    "preemptions",
)
SETTLE = resource(
    SLEEP, {"createDuration": "600s"}, "preemptions-settle", dependencies=[PREEMPTIONS.urn]
)
QUEUE = resource(
    DESCRIPTOR,
    {"type": "custom.googleapis.com/queue_depth", "metricKind": "GAUGE", "valueType": "INT64"},
    "queue-depth",
)
SLO_RESOURCE = resource(SLO, SLO_INPUTS, "availability")
DASHBOARD_RESOURCE = dashboard({"prometheusQuery": "sum(rate(requests_total[5m]))"})
ON_DASHBOARD = [DASHBOARD_RESOURCE.urn]
BURN = 'select_slo_burn_rate("projects/signal-test/services/api/serviceLevelObjectives/availability", "3600s")'
LOG_FILTER = 'metric.type="logging.googleapis.com/user/preemptions" resource.type="gce_instance"'
QUEUE_FILTER = 'metric.type="custom.googleapis.com/queue_depth" resource.type="global"'
REDIS_FILTER = 'metric.type="redis.googleapis.com/cluster/memory/maximum_utilization"'


def golden_monitoring(**replace: AnalyzerResource | None) -> dict[str, AnalyzerResource | None]:
    parts: dict[str, AnalyzerResource | None] = {
        "slo": SLO_RESOURCE,
        "burn-rate": alert(
            "burn-rate", threshold(BURN), labels=LATER, dependencies=[SLO_RESOURCE.urn]
        ),
        "dashboard": DASHBOARD_RESOURCE,
        "latency": alert(
            "latency", promql("histogram_quantile(0.95, x) > 0.1"), dependencies=ON_DASHBOARD
        ),
        "redis": alert("redis", threshold(REDIS_FILTER), dependencies=ON_DASHBOARD),
        "preemptions": PREEMPTIONS,
        "settle": SETTLE,
        "spot": alert("spot", threshold(LOG_FILTER), dependencies=[SETTLE.urn]),
        "queue-depth": QUEUE,
        "queue": alert("queue", threshold(QUEUE_FILTER), dependencies=[QUEUE.urn]),
    }
    parts.update(replace)
    return parts


# ------------------------------------------------------------------------------ workloads

REGISTRY_RESOURCE = resource(
    REGISTRY, {"location": "us-central1", "repositoryId": "signal", "format": "DOCKER"}, "images"
)
GCP_PROVIDER = resource("pulumi:providers:gcp", {"project": PROJECT}, "gcp")
REGISTRY_ON_PROVIDER = resource(
    REGISTRY,
    {"location": "us-central1", "repositoryId": "signal", "format": "DOCKER"},
    "images",
    provider=f"{GCP_PROVIDER.urn}::gcp-id",
)
MODELS = resource(BUCKET, {"name": "signal-test-models", "location": "US"}, "models")
OURS = f"us-central1-docker.pkg.dev/{PROJECT}/signal/service@sha256:" + "ab" * 32
STAGED = {"metadata.annotations": {"signal-platform/stage": "workloads"}}
GCSFUSE = {
    "driver": "gcsfuse.csi.storage.gke.io",
    "volumeAttributes": {"bucketName": "signal-test-models"},
}


def workload(
    changes: dict[Any, Any], name: str = "service", type_: str = DEPLOYMENT, **kw: Any
) -> AnalyzerResource:
    return resource(type_, mutate(DEPLOYMENT_INPUTS, changes), name, **kw)


def reads_models(read_only: bool = True, bucket: Any = "signal-test-models") -> dict[Any, Any]:
    return {
        "spec.template.spec.volumes": [
            {"name": "models", "csi": {**GCSFUSE, "volumeAttributes": {"bucketName": bucket}}}
        ],
        "spec.template.spec.containers.0.volumeMounts": [
            {"name": "models", "mountPath": "/models", "readOnly": read_only}
        ],
    }


def golden_workloads(**replace: AnalyzerResource | None) -> dict[str, AnalyzerResource | None]:
    parts: dict[str, AnalyzerResource | None] = {
        "gcp": GCP_PROVIDER,
        "images": REGISTRY_RESOURCE,
        "models": MODELS,
        # Ours, declared once the image is pushed; a third party's image; a writer of the bucket.
        "service": workload({"spec.template.spec.containers.0.image": OURS, **STAGED}),
        "triton": workload(
            {"spec.template.spec.containers.0.image": "nvcr.io/nvidia/tritonserver:25.06-py3"},
            "triton",
        ),
        "archiver": workload(reads_models(read_only=False), "archiver"),
        # Not awaited, and scaled to zero until its data is there.
        "loader": workload(
            {
                **reads_models(),
                "metadata.annotations": {"pulumi.com/skipAwait": "true"},
                "spec.replicas": 0,
            },
            "loader",
        ),
    }
    parts.update(replace)
    return parts


def golden(**replace: AnalyzerResource | None) -> tuple[AnalyzerResource, ...]:
    monitoring = {k: v for k, v in replace.items() if k in golden_monitoring()}
    workloads = {k: v for k, v in replace.items() if k not in monitoring}
    parts = {**golden_monitoring(**monitoring), **golden_workloads(**workloads)}
    return tuple(r for r in parts.values() if r is not None)


SERVICE_URN = workload({}).urn
UNLABELLED_SLO = resource(SLO, mutate(SLO_INPUTS, {"userLabels": {}}), "availability")

STACK_CASES = [
    *[case(policy, "golden", golden()) for policy in LEVELS],
    # ---- apply-monitoring-metric-exists
    case(
        "apply-monitoring-metric-exists",
        "slo-on-a-prometheus-counter-in-the-first-stage",
        golden(slo=UNLABELLED_SLO),
        2,
        urns=(SLO_RESOURCE.urn, SLO_RESOURCE.urn),
        message="requestBasedSli.goodTotalRatio.totalServiceFilter names "
        "prometheus.googleapis.com/requests_total/counter, which exists only once something writes it",
    ),
    case(
        "apply-monitoring-metric-exists",
        "the-cascade-from-an-slo",
        golden(
            slo=UNLABELLED_SLO,
            **{"burn-rate": alert("burn-rate", threshold(BURN), dependencies=[SLO_RESOURCE.urn])},
            dashboard=dashboard({"prometheusQuery": "x"}, dependencies=[SLO_RESOURCE.urn]),
        ),
        # The SLO's two filters; the burn-rate alert and the dashboard wait for it; the two
        # alerts that wait for the dashboard.
        6,
        message="waits for availability, which cannot be created on a fresh project",
    ),
    case(
        "apply-monitoring-metric-exists",
        "burn-rate-alert-names-the-slo-without-waiting",
        golden(**{"burn-rate": alert("burn-rate", threshold(BURN))}),
        1,
        message="names SLO availability without waiting for it",
    ),
    case(
        "apply-monitoring-metric-exists",
        "burn-rate-alert-on-a-failing-slo-without-waiting",
        golden(slo=UNLABELLED_SLO, **{"burn-rate": alert("burn-rate", threshold(BURN))}),
        3,
    ),
    case(
        "apply-monitoring-metric-exists",
        "threshold-on-a-gauge-nothing-has-written",
        golden(
            latency=alert(
                "latency",
                threshold('metric.type="prometheus.googleapis.com/DCGM_FI_DEV_GPU_UTIL/gauge"'),
                dependencies=ON_DASHBOARD,
            )
        ),
        1,
        message="use a PromQL condition",
    ),
    case(
        "apply-monitoring-metric-exists",
        "absence-on-a-workload-metric",
        golden(
            redis=alert(
                "redis",
                threshold('metric.type="workload.googleapis.com/jobs"', kind="conditionAbsent"),
            )
        ),
        1,
    ),
    case(
        "apply-monitoring-metric-exists",
        "mql-on-an-external-metric",
        golden(
            redis=alert(
                "redis",
                {
                    "displayName": "mql",
                    "conditionMonitoringQueryLanguage": {
                        "query": "fetch global | metric 'external.googleapis.com/prometheus/up'",
                        "duration": "60s",
                    },
                },
            )
        ),
        1,
    ),
    case(
        "apply-monitoring-metric-exists",
        "dashboard-filter-on-a-custom-metric",
        golden(
            dashboard=dashboard(
                {"timeSeriesFilter": {"filter": 'metric.type="custom.googleapis.com/signals"'}}
            )
        ),
        # The dashboard, and the two alerts that wait for it.
        3,
        message="chart it with PromQL",
    ),
    case(
        "apply-monitoring-metric-exists",
        "log-metric-without-a-settle-delay",
        golden(spot=alert("spot", threshold(LOG_FILTER), dependencies=[PREEMPTIONS.urn])),
        1,
        message="answers with 404 for up to 10 minutes",
    ),
    case(
        "apply-monitoring-metric-exists",
        "log-metric-settle-too-short",
        golden(
            settle=resource(
                SLEEP,
                {"createDuration": "30s"},
                "preemptions-settle",
                dependencies=[PREEMPTIONS.urn],
            )
        ),
        1,
    ),
    case(
        "apply-monitoring-metric-exists",
        "log-metric-settle-in-minutes",
        golden(
            settle=resource(
                SLEEP,
                {"createDuration": "10m"},
                "preemptions-settle",
                dependencies=[PREEMPTIONS.urn],
            )
        ),
    ),
    case(
        "apply-monitoring-metric-exists",
        "log-metric-not-waited-for",
        golden(spot=alert("spot", threshold(LOG_FILTER))),
        1,
        message="without waiting for preemptions",
    ),
    case(
        "apply-monitoring-metric-exists",
        "log-metric-the-stack-does-not-declare",
        golden(preemptions=None, settle=None, spot=alert("spot", threshold(LOG_FILTER))),
        1,
        message="which exists only once something writes it",
    ),
    case(
        "apply-monitoring-metric-exists",
        "descriptor-not-waited-for",
        golden(queue=alert("queue", threshold(QUEUE_FILTER))),
        1,
        message="without waiting for queue-depth",
    ),
    case(
        "apply-monitoring-metric-exists",
        "metric-that-predates-the-stack",
        golden(queue=alert("queue", threshold(QUEUE_FILTER)), **{"queue-depth": None}),
        config={"apply-monitoring-metric-exists": {"existingMetrics": ["custom.googleapis.com/*"]}},
    ),
    case(
        "apply-monitoring-metric-exists",
        "filters-known-after-the-update",
        golden(
            slo=resource(
                SLO,
                mutate(SLO_INPUTS, {"requestBasedSli": UNKNOWN, "userLabels": {}}),
                "availability",
            )
        ),
    ),
    # ---- apply-workload-sources
    case(
        "apply-workload-sources",
        "image-in-the-registry-the-stack-creates",
        golden(service=workload({"spec.template.spec.containers.0.image": OURS})),
        1,
        urns=(SERVICE_URN,),
        message="runs '" + OURS + "' from images, a registry this update creates",
    ),
    case(
        "apply-workload-sources",
        "registry-project-from-the-provider",
        golden(
            images=REGISTRY_ON_PROVIDER,
            service=workload({"spec.template.spec.containers.0.image": OURS}),
        ),
        1,
    ),
    case(
        "apply-workload-sources",
        "registry-of-another-project",
        golden(
            images=REGISTRY_ON_PROVIDER,
            service=workload(
                {"spec.template.spec.containers.0.image": OURS.replace(PROJECT, "shared-images")}
            ),
        ),
    ),
    case(
        "apply-workload-sources",
        "skips-the-await",
        golden(
            service=workload(
                {
                    "spec.template.spec.containers.0.image": OURS,
                    "metadata.annotations": {"pulumi.com/skipAwait": "true"},
                }
            )
        ),
    ),
    case(
        "apply-workload-sources",
        "zero-replicas",
        golden(
            service=workload({"spec.template.spec.containers.0.image": OURS, "spec.replicas": 0})
        ),
    ),
    case(
        "apply-workload-sources",
        "job-awaited-to-completion",
        golden(
            service=resource(
                JOB,
                {
                    "metadata": {"name": "migrate", "namespace": "apps"},
                    "spec": {
                        "template": {"spec": {"containers": [{"name": "migrate", "image": OURS}]}}
                    },
                },
                "migrate",
            )
        ),
        1,
    ),
    case(
        "apply-workload-sources",
        "reads-the-bucket-the-stack-creates",
        golden(triton=workload(reads_models(), "triton")),
        1,
        message="volume 'models' reads bucket models, which this update creates",
    ),
    case(
        "apply-workload-sources",
        "reads-a-bucket-named-by-an-output",
        golden(
            triton=dataclasses.replace(
                resource(
                    STATEFULSET, mutate(DEPLOYMENT_INPUTS, reads_models(bucket=UNKNOWN)), "triton"
                ),
                property_dependencies={"spec": (MODELS.urn,)},
            )
        ),
        1,
    ),
    case(
        "apply-workload-sources",
        "reads-a-bucket-named-by-another-output",
        golden(triton=workload(reads_models(bucket=UNKNOWN), "triton")),
    ),
    case(
        "apply-workload-sources",
        "reads-a-bucket-from-elsewhere",
        golden(triton=workload(reads_models(bucket="shared-models"), "triton")),
    ),
    case(
        "apply-workload-sources",
        "tag-the-pipeline-never-pushes",
        golden(
            service=workload(
                {
                    "spec.template.spec.containers.0.image": "us-docker.pkg.dev/shared/images/service:dev"
                }
            )
        ),
        1,
        config={
            "apply-workload-sources": {
                "pipelineImages": [
                    {"prefix": "us-docker.pkg.dev/shared/images/", "tags": ["git-[0-9a-f]{40}"]}
                ]
            }
        },
        message="tag 'dev', which the image pipeline for us-docker.pkg.dev/shared/images/ never pushes",
    ),
    case(
        "apply-workload-sources",
        "tag-the-pipeline-pushes",
        golden(
            service=workload(
                {
                    "spec.template.spec.containers.0.image": "us-docker.pkg.dev/shared/images/service:git-"
                    + "a" * 40
                }
            )
        ),
        config={
            "apply-workload-sources": {
                "pipelineImages": [
                    {"prefix": "us-docker.pkg.dev/shared/images/", "tags": ["git-[0-9a-f]{40}"]}
                ]
            }
        },
    ),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda c: c.id)
def test_first_apply_rule(pack: PolicyPackProcess, case: StackCase) -> None:
    assert_stack_case(pack, case, LEVELS)


def test_the_golden_stack_creates_on_a_fresh_project(pack: PolicyPackProcess) -> None:
    analysis = pack.analyze_all(golden())
    assert [v for v in analysis.violations if v.policy in LEVELS] == []
