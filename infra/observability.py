"""Observability: alerts, the signal API's SLO, the billing budget and the audit trail.

- Notification channels come from `observability.notificationChannels`; every alert, the
  burn-rate alert and the budget notify all of them.
- Alert policies (thresholds from `observability.alerts`): signal p95 latency, signal error
  rate, Triton queue time, GPU utilisation outside its band, spot preemptions per hour and
  Redis memory. Every condition on a metric that appears only once something runs is PromQL,
  which Cloud Monitoring does not check against a metric descriptor at creation (a threshold
  condition on a metric it has not seen is refused): the service's and Triton's Prometheus
  metrics (Managed Service for Prometheus), GKE's managed DCGM GPU utilisation (reported for
  time-shared GPUs, unlike `kubernetes.io/container/accelerator/duty_cycle`; the GPU pools
  start at zero nodes) and the log-based count of Compute Engine's spot preemptions. Redis
  memory is Memorystore's own metric, which always exists.
- From stage `serving` only (the request counter exists once the service has served): a
  Cloud Monitoring service for the signal API with a request-based availability SLO
  (`observability.sloGoal`, rolling `sloWindowDays`) and a multi-window burn-rate alert.
- A billing budget of `budget.monthlyUsd` with a rule per `budget.alertThresholds`.
- Data-access audit logs (admin and data reads, data writes) for BigQuery and Redis, and a
  sink of every audit log to a CMEK bucket with a locked retention policy where the stack
  protects its resources (prod); elsewhere no retention policy and `force_destroy`, so the
  stack can be destroyed.

- The operations dashboard (infra/dashboard.py); every alert's documentation says what to do
  first (`RUNBOOK`) and links the dashboard.

The metrics and queries are infra/metrics.py's, shared with the dashboard.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import pulumi
import pulumi_gcp as gcp

from infra import metrics
from infra.config import AlertThresholds, Budget, ObservabilitySettings
from infra.dashboard import console_url, dashboard_json
from infra.metrics import BURN_RATE_WINDOWS, PREEMPTION_METRIC, SERVICE_ID, SLO_ID, slo_name

AUDITED_SERVICES = ("bigquery.googleapis.com", "redis.googleapis.com")
AUDIT_LOG_TYPES = ("ADMIN_READ", "DATA_READ", "DATA_WRITE")
AUDIT_FILTER = 'logName:"cloudaudit.googleapis.com"'

CHANNEL_LABELS = {"email": "email_address", "webhook_tokenauth": "url", "pubsub": "topic"}
# The label of what exists only from stage `serving`, after the service's first traffic: the
# policy pack reads it (a monitoring object on a metric that appears with traffic).
AFTER_TRAFFIC = {"signal-platform-stage": "serving"}

# What the on-call does first, per alert: the line each alert's documentation opens with, beside
# the link to the operations dashboard, whose charts it names.
RUNBOOK = {
    "signal-latency-p95": (
        "look at *Triton queue time* and *GPU duty cycle*: GPUs saturated means scale Triton out "
        "(`workloads.triton.maxReplicas`, the GPU pool's `maxNodes`); GPUs idle means the time "
        "is spent in the service: check Redis memory and the service's inference fallbacks."
    ),
    "signal-error-rate": (
        "find the failing code in the service's logs (`code` of `signal_requests_total`): "
        "UNAVAILABLE or DEADLINE_EXCEEDED point at Triton or Redis (their charts); errors that "
        "began with a deploy mean rolling that image back."
    ),
    "triton-queue-time": (
        "compare *GPU duty cycle*: above its band, add GPU capacity (Triton replicas, the pool's "
        "`maxNodes`); within it, Triton's dynamic batching delay or instance count is too low "
        "for the load."
    ),
    "gpu-duty-cycle": (
        "below the band the GPU pool is oversized for the load (lower `minNodes` or Triton's "
        "replicas); above it requests queue (raise them): check *Triton queue time* first."
    ),
    "spot-preemptions": (
        "check *Inference GPU nodes per pool*: the on-demand pools should be taking the load; "
        "if they sit at `maxNodes`, raise it or expect latency to rise until spot returns."
    ),
    "redis-memory": (
        "check *Redis memory* per cluster; add shards (`redis.shardCount`) before evictions "
        "lower the L2 hit rate, or shorten the cache TTL."
    ),
    "slo-burn-rate": (
        "find what fails on *Server-error ratio* and follow the error-rate runbook; hold "
        "deploys until the burn rate is back under 1."
    ),
}


def alert_documentation(
    what: str, first: str, dashboard_url: pulumi.Input[str]
) -> gcp.monitoring.AlertPolicyDocumentationArgsDict:
    """An alert's documentation: what fired, what to do first, the operations dashboard."""
    content = pulumi.Output.from_input(dashboard_url).apply(
        lambda url: runbook_markdown(what, first, url)
    )
    return {"content": content, "mime_type": "text/markdown"}


def runbook_markdown(what: str, first: str, url: str) -> str:
    return f"{what}\n\n**First:** {first}\n\n[Operations dashboard]({url})"


def promql_alerts(alerts: AlertThresholds) -> dict[str, tuple[str, str]]:
    """Alert name → (PromQL, what it means), per cluster."""
    return {
        "signal-latency-p95": (
            f"{metrics.latency_quantile(0.95)} > {alerts.latency_p95_ms / 1000:g}",
            f"p95 signal latency above {alerts.latency_p95_ms:g} ms",
        ),
        "signal-error-rate": (
            f"{metrics.server_error_ratio()} > {alerts.error_rate:g}",
            f"more than {alerts.error_rate:.2%} of signal requests fail on the server",
        ),
        "triton-queue-time": (
            f"{metrics.triton_queue_us()} > {alerts.triton_queue_ms * 1000:g}",
            f"Triton requests wait more than {alerts.triton_queue_ms:g} ms in its queue",
        ),
    }


@dataclass(frozen=True)
class Threshold:
    """A condition on a Cloud Monitoring time series."""

    name: str
    filter: str
    comparison: str
    value: float
    duration: str
    aligner: str
    reducer: str
    period: str = "300s"
    group_by: tuple[str, ...] = ()

    def condition(self) -> gcp.monitoring.AlertPolicyConditionArgsDict:
        return {
            "display_name": self.name,
            "condition_threshold": {
                "filter": self.filter,
                "comparison": self.comparison,
                "threshold_value": self.value,
                "duration": self.duration,
                "aggregations": [
                    {
                        "alignment_period": self.period,
                        "per_series_aligner": self.aligner,
                        "cross_series_reducer": self.reducer,
                        "group_by_fields": list(self.group_by),
                    }
                ],
                "trigger": {"count": 1},
            },
        }


def gpu_duty_cycle(alerts: AlertThresholds) -> dict[str, tuple[str, str]]:
    """GPU utilisation outside [min, max]: idle GPUs waste money, saturated ones add latency.
    GKE's managed DCGM metric, averaged over each cluster's GPUs: condition name → (PromQL,
    how long it must hold).

    Why PromQL: the GPU pools start at zero nodes, so no DCGM series exists until Triton first
    runs, and a threshold condition on a metric Cloud Monitoring has not seen is refused with
    404 ("Cannot find metric(s)", hashicorp/terraform-provider-google#11102). A PromQL
    condition is not checked against a descriptor when the policy is created."""
    utilization = metrics.gpu_utilization()
    return {
        f"GPU utilisation below {alerts.gpu_duty_cycle_min:g}%": (
            f"{utilization} < {alerts.gpu_duty_cycle_min:g}",
            "1800s",
        ),
        f"GPU utilisation above {alerts.gpu_duty_cycle_max:g}%": (
            f"{utilization} > {alerts.gpu_duty_cycle_max:g}",
            "900s",
        ),
    }


def promql_condition(
    meaning: str, query: str, duration: str
) -> gcp.monitoring.AlertPolicyConditionArgsDict:
    return {
        "display_name": meaning,
        "condition_prometheus_query_language": {
            "query": query,
            "duration": duration,
            "evaluation_interval": "60s",
        },
    }


def spot_preemptions(alerts: AlertThresholds, metric_name: str) -> str:
    """PromQL over the log-based preemption counter: more than the threshold in an hour.

    Why PromQL: an alert whose filter names a log-based metric is refused with 404 until
    Cloud Monitoring has registered the new metric (up to ten minutes after the metric is
    created, and the provider does not retry: hashicorp/terraform-provider-google#11102). A
    PromQL condition is not checked against the metric's descriptor when the policy is
    created, so the alert does not race the metric it reads; it depends on the metric only to
    be created after it."""
    return f"{metrics.preemptions_per_hour(metric_name)} > {alerts.spot_preemptions_per_hour:g}"


def redis_memory(alerts: AlertThresholds) -> Threshold:
    return Threshold(
        name=f"Redis memory above {alerts.redis_memory_utilization:.0%}",
        filter=metrics.redis_memory_filter(),
        comparison="COMPARISON_GT",
        value=alerts.redis_memory_utilization,
        duration="600s",
        aligner="ALIGN_MAX",
        reducer="REDUCE_MAX",
        group_by=("resource.label.cluster_id",),
    )


class Observability(pulumi.ComponentResource):
    """Channels, the SLO, the operations dashboard, alert policies that link it, the budget and
    the audit-log trail of the stack. `dashboard_url` is the dashboard's console page."""

    def __init__(
        self,
        name: str,
        project_id: str,
        project_number: pulumi.Input[str],
        settings: ObservabilitySettings,
        budget: Budget,
        audit_location: str,
        audit_kms_key: gcp.kms.CryptoKey,
        labels: Mapping[str, str],
        protect: bool,
        slo: bool,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`slo`: declare the availability SLO and its burn-rate alert (stage `serving`)."""
        super().__init__("signal:infra:Observability", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        user_labels = dict(labels)
        alerts = settings.alerts

        self.channels = {
            channel.name: gcp.monitoring.NotificationChannel(
                f"channel-{channel.name}",
                display_name=channel.name,
                type=channel.type,
                labels={CHANNEL_LABELS[channel.type]: channel.address},
                user_labels=user_labels,
                opts=child,
            )
            for channel in settings.notification_channels
        }
        channel_names = [c.name for c in self.channels.values()]

        self.preemptions = gcp.logging.Metric(
            PREEMPTION_METRIC,
            name=PREEMPTION_METRIC,
            description="Spot VMs reclaimed by Compute Engine",
            filter='resource.type="gce_instance" AND '
            'protoPayload.methodName="compute.instances.preempted"',
            metric_descriptor={"metric_kind": "DELTA", "value_type": "INT64", "unit": "1"},
            opts=child,
        )

        # ---- The operations dashboard. It waits for nothing it charts: Cloud Monitoring does
        # not check a dashboard's queries against metrics or SLOs when it is created.
        self.dashboard = gcp.monitoring.Dashboard(
            "operations-dashboard",
            project=project_id,
            dashboard_json=json.dumps(dashboard_json(project_id, alerts, labels)),
            opts=child,
        )
        self.dashboard_url: pulumi.Output[str] = self.dashboard.id.apply(
            lambda dashboard_id: console_url(dashboard_id, project_id)
        )

        def policy(
            key: str,
            conditions: Sequence[gcp.monitoring.AlertPolicyConditionArgsDict],
            severity: str,
            what: str,
            depends_on: Sequence[pulumi.Resource] = (),
            labels: Mapping[str, str] = MappingProxyType({}),
        ) -> gcp.monitoring.AlertPolicy:
            return gcp.monitoring.AlertPolicy(
                f"alert-{key}",
                display_name=key,
                combiner="OR",
                conditions=list(conditions),
                severity=severity,
                notification_channels=channel_names,
                documentation=alert_documentation(what, RUNBOOK[key], self.dashboard_url),
                alert_strategy={"auto_close": "86400s"},
                user_labels={**user_labels, **labels},
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
            )

        self.alerts: dict[str, gcp.monitoring.AlertPolicy] = {}
        for key, (query, meaning) in promql_alerts(alerts).items():
            condition = promql_condition(meaning, query, "300s")
            self.alerts[key] = policy(key, [condition], "ERROR", f"Alert: {meaning}.")

        self.alerts["gpu-duty-cycle"] = policy(
            "gpu-duty-cycle",
            [
                promql_condition(meaning, query, duration)
                for meaning, (query, duration) in gpu_duty_cycle(alerts).items()
            ],
            "WARNING",
            f"GPU duty cycle outside {alerts.gpu_duty_cycle_min:g}-{alerts.gpu_duty_cycle_max:g}%"
            ": below, the pool is oversized (scale in); above, requests queue (scale out).",
        )
        self.alerts["spot-preemptions"] = policy(
            "spot-preemptions",
            [
                promql_condition(
                    f"more than {alerts.spot_preemptions_per_hour} spot preemptions per hour",
                    spot_preemptions(alerts, PREEMPTION_METRIC),
                    "0s",
                )
            ],
            "WARNING",
            "Spot capacity is being reclaimed: the on-demand fallback pools take the load.",
            depends_on=[self.preemptions],
        )
        self.alerts["redis-memory"] = policy(
            "redis-memory",
            [redis_memory(alerts).condition()],
            "WARNING",
            "A Redis cluster is near its memory: add shards before evictions hurt hit rates.",
        )
        # ---- SLO: availability of the signal API, request-based, and its burn-rate alert.
        # Only from stage `serving`: an SLO whose filter names a metric Cloud Monitoring has
        # not seen is refused ("The metric referenced by the provided filter is unknown"), and
        # `signal_requests_total` exists once the service has served (README, "Deploying for
        # real"). The stage label says so to the policy pack.
        self.slo: gcp.monitoring.Slo | None = None
        if slo:
            self.slo = self._slo(settings, {**user_labels, **AFTER_TRAFFIC}, child)
            self.alerts["slo-burn-rate"] = policy(
                "slo-burn-rate",
                [
                    {
                        "display_name": f"error budget burning {rate:g}x over {window}",
                        "condition_threshold": {
                            "filter": metrics.burn_rate_filter(project_id, window),
                            "comparison": "COMPARISON_GT",
                            "threshold_value": rate,
                            "duration": "0s",
                        },
                    }
                    for window, rate in BURN_RATE_WINDOWS
                ],
                "CRITICAL",
                "The signal API is spending its error budget too fast to last the SLO window.",
                depends_on=[self.slo],
                labels=AFTER_TRAFFIC,
            )

        # ---- Budget.
        self.budget: gcp.billing.Budget | None = None
        if budget.billing_account:
            self.budget = gcp.billing.Budget(
                "budget",
                billing_account=budget.billing_account,
                display_name=f"signal-platform {project_id}",
                budget_filter={
                    "projects": [pulumi.Output.concat("projects/", project_number)],
                    "calendar_period": "MONTH",
                    "credit_types_treatment": "INCLUDE_ALL_CREDITS",
                },
                amount={
                    "specified_amount": {
                        "currency_code": "USD",
                        "units": str(int(budget.monthly_usd)),
                    }
                },
                threshold_rules=[
                    {"threshold_percent": t, "spend_basis": "CURRENT_SPEND"}
                    for t in budget.alert_thresholds
                ],
                all_updates_rule={
                    # Budgets take at most five monitoring channels.
                    "monitoring_notification_channels": channel_names[:5],
                    "disable_default_iam_recipients": False,
                },
                opts=child,
            )

        # ---- Audit: data-access logs, and every audit log kept where nobody can delete it.
        self.audit_configs = [
            gcp.projects.IAMAuditConfig(
                f"audit-{service.split('.')[0]}",
                project=project_id,
                service=service,
                audit_log_configs=[{"log_type": t} for t in AUDIT_LOG_TYPES],
                opts=child,
            )
            for service in AUDITED_SERVICES
        ]
        retention_days = settings.audit_log_retention_days
        self.audit_bucket = gcp.storage.Bucket(
            "audit-logs",
            name=f"{project_id}-audit-logs",
            location=audit_location.upper(),
            storage_class="STANDARD",
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            encryption={"default_kms_key_name": audit_kms_key.id},
            # Where the stack protects its resources (prod), a locked retention policy: it can
            # be lengthened, never shortened or removed, and nothing is deleted before it
            # expires, not even the bucket. Elsewhere (dev) none, and `force_destroy`: even an
            # unlocked retention policy keeps every object younger than it (and so the bucket)
            # for that long, so `pulumi destroy` would fail for a month. The lifecycle rule
            # ages the logs out either way.
            retention_policy=(
                {"retention_period": str(retention_days * 86400), "is_locked": True}
                if protect
                else None
            ),
            force_destroy=not protect,
            lifecycle_rules=[{"action": {"type": "Delete"}, "condition": {"age": retention_days}}],
            labels=dict(labels),
            opts=pulumi.ResourceOptions(parent=self, protect=protect),
        )
        self.audit_sink = gcp.logging.ProjectSink(
            "audit-logs",
            name="audit-logs",
            project=project_id,
            destination=pulumi.Output.concat("storage.googleapis.com/", self.audit_bucket.name),
            filter=AUDIT_FILTER,
            unique_writer_identity=True,
            description="Every Cloud Audit Log of the project, kept in a locked bucket",
            opts=child,
        )
        gcp.storage.BucketIAMMember(
            "audit-logs-writer",
            bucket=self.audit_bucket.name,
            role="roles/storage.objectCreator",
            member=self.audit_sink.writer_identity,
            opts=child,
        )
        self.register_outputs(
            {
                "auditBucket": self.audit_bucket.url,
                "slo": slo_name(project_id) if slo else None,
                "dashboard": self.dashboard_url,
            }
        )

    def _slo(
        self,
        settings: ObservabilitySettings,
        user_labels: Mapping[str, str],
        opts: pulumi.ResourceOptions,
    ) -> gcp.monitoring.Slo:
        """The signal API's availability SLO on its request counter (a request-based ratio
        counts requests, which the latency distribution does not)."""
        self.service = gcp.monitoring.CustomService(
            "service-signal-api",
            service_id=SERVICE_ID,
            display_name="signal API (gRPC)",
            user_labels=dict(user_labels),
            opts=opts,
        )
        total, bad = metrics.request_filters()
        return gcp.monitoring.Slo(
            "slo-signal-api-availability",
            service=self.service.service_id,
            slo_id=SLO_ID,
            display_name=f"{settings.slo_goal:.2%} of signal requests succeed "
            f"({settings.slo_window_days}-day rolling)",
            goal=settings.slo_goal,
            rolling_period_days=settings.slo_window_days,
            request_based_sli={
                "good_total_ratio": {"total_service_filter": total, "bad_service_filter": bad}
            },
            user_labels=dict(user_labels),
            opts=opts,
        )
