"""The metrics the platform watches and the queries over them, shared by the alerts and the
operations dashboard.

- The signal service's Prometheus metrics (the names `app/telemetry.py` exports; a test holds
  them together) and Triton's, read through Google Cloud Managed Service for Prometheus.
- GKE's managed DCGM metric for GPU utilisation (reported for time-shared GPUs too).
- Google Cloud's own metrics: Memorystore's memory and GKE's node metrics, the latter carrying
  each node's Kubernetes labels (node pool, compute class) as metadata.
- The log-based counter of spot preemptions the program declares, and the SLO's burn rate.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.cluster import COMPUTE_CLASS_KEY, GPU_UTILIZATION, INFERENCE_COMPUTE_CLASS

# Prometheus metrics of the signal service (the gRPC API and its publisher) and of Triton.
REQUEST_LATENCY = "signal_request_duration_seconds"  # histogram by method
REQUESTS = "signal_requests_total"  # counter of finished requests, by method and gRPC code
PUBLISHED_MESSAGES = "signal_publish_batch_messages"  # histogram by topic: messages per batch
PUBLISH_BACKLOG = "signal_publish_backlog_messages"  # gauge by topic
TRITON_QUEUE_US = "nv_inference_queue_duration_us"  # counter: cumulative queue time
TRITON_REQUESTS = "nv_inference_request_success"  # counter
# gRPC statuses that are the server's fault; client mistakes (INVALID_ARGUMENT, NOT_FOUND)
# are answers, not failures.
SERVER_ERROR_CODES = (
    "UNKNOWN",
    "INTERNAL",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "DATA_LOSS",
    "RESOURCE_EXHAUSTED",
)
# Google Cloud metrics (Cloud Monitoring's metric lists for Memorystore and for GKE).
REDIS_MEMORY = "redis.googleapis.com/cluster/memory/maximum_utilization"
NODE_ALLOCATABLE_CORES = "kubernetes.io/node/cpu/allocatable_cores"
# The log-based counter of Compute Engine's spot preemption events (infra/observability.py).
PREEMPTION_METRIC = "spot_preemptions"

SERVICE_ID = "signal-api"
SLO_ID = "availability"
# (lookback, burn-rate threshold): the SRE workbook's page-worthy pair. 14.4x over an hour
# spends 2% of a 30-day budget; 6x over six hours spends 5%.
BURN_RATE_WINDOWS = (("3600s", 14.4), ("21600s", 6.0))


def _sum(by: Sequence[str]) -> str:
    return f"sum by ({', '.join(by)})" if by else "sum"


def codes_regex() -> str:
    return "|".join(SERVER_ERROR_CODES)


def latency_quantile(quantile: float, by: Sequence[str] = ("cluster",)) -> str:
    """PromQL: the signal API's latency quantile in seconds, per `by` (all requests)."""
    return (
        f"histogram_quantile({quantile:g}, {_sum((*by, 'le'))} "
        f"(rate({REQUEST_LATENCY}_bucket[5m])))"
    )


def server_error_ratio(by: Sequence[str] = ("cluster",)) -> str:
    """PromQL: the share of signal requests that ended with a server-error code."""
    return (
        f'{_sum(by)} (rate({REQUESTS}{{code=~"{codes_regex()}"}}[5m])) '
        f"/ {_sum(by)} (rate({REQUESTS}[5m]))"
    )


def triton_queue_us(by: Sequence[str] = ("cluster",)) -> str:
    """PromQL: Triton's mean queue time per request, in microseconds."""
    return f"{_sum(by)} (rate({TRITON_QUEUE_US}[5m])) / {_sum(by)} (rate({TRITON_REQUESTS}[5m]))"


def requests_per_second(by: Sequence[str] = ("method",)) -> str:
    return f"{_sum(by)} (rate({REQUESTS}[5m]))"


def published_per_second() -> str:
    """PromQL: messages published per second by topic (ticks in, signals out)."""
    return f"sum by (topic) (rate({PUBLISHED_MESSAGES}_sum[5m]))"


def publish_backlog() -> str:
    return f"sum by (topic) ({PUBLISH_BACKLOG})"


def gpu_utilization(by: Sequence[str] = ("cluster",)) -> str:
    """PromQL: GPU utilisation in percent, averaged over each group's GPUs."""
    return f"avg by ({', '.join(by)}) ({GPU_UTILIZATION})"


def preemptions_per_hour(metric_name: str = PREEMPTION_METRIC) -> str:
    """PromQL over the log-based preemption counter (the metric maps 1:1 into PromQL)."""
    series = f'logging_googleapis_com:user_{metric_name}{{monitored_resource="gce_instance"}}'
    return f"sum(increase({series}[1h]))"


def redis_memory_filter() -> str:
    return f'resource.type = "redis.googleapis.com/Cluster" AND metric.type = "{REDIS_MEMORY}"'


def inference_nodes_filter() -> str:
    """GKE's node metric on the nodes of the inference compute class (spot pools first, the
    on-demand pools it falls back to after): one series per node."""
    return (
        f'resource.type = "k8s_node" AND metric.type = "{NODE_ALLOCATABLE_CORES}" AND '
        f'metadata.user_labels."{COMPUTE_CLASS_KEY}" = "{INFERENCE_COMPUTE_CLASS}"'
    )


def slo_name(project_id: str) -> str:
    return f"projects/{project_id}/services/{SERVICE_ID}/serviceLevelObjectives/{SLO_ID}"


def burn_rate_filter(project_id: str, window: str) -> str:
    return f'select_slo_burn_rate("{slo_name(project_id)}", "{window}")'


def request_filters() -> tuple[str, str]:
    """(total, bad) request filters of the availability SLI, both on the request counter: a
    request-based ratio counts requests, which a distribution (the latency histogram) does
    not; bad ones are those that ended with a server-error code."""
    total = (
        f'metric.type="prometheus.googleapis.com/{REQUESTS}/counter" '
        'resource.type="prometheus_target"'
    )
    bad = f'{total} metric.labels.code=monitoring.regex.full_match("{codes_regex()}")'
    return total, bad
