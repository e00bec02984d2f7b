"""Alerts, SLO, budget and audit trail, as the policy pack sees them in each stack's plan."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import CollectorRegistry

from app.alerting.service import Exports as DetectorExports
from app.autoscale.service import Exports as ScalerExports
from app.telemetry import Metrics
from infra.cluster import GPU_UTILIZATION, MONITORED_COMPONENTS
from infra.config import ConfigError
from infra.metrics import SERVER_ERROR_CODES, TRITON_QUEUE_US, TRITON_REQUESTS
from infra.observability import RUNBOOK, runbook_markdown
from tests.conftest import REPO
from tests.infra.stack_config import load, section
from tests.infra.staged import staged_plan
from tests.infra.test_apply_order import waits_for
from tools.engine import plan as plan_stack
from tools.inventory import UNKNOWN, Inventory, Resource

CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
SERVICE = "gcp:monitoring/customService:CustomService"
SLO = "gcp:monitoring/slo:Slo"
BUDGET = "gcp:billing/budget:Budget"
AUDIT = "gcp:projects/iAMAuditConfig:IAMAuditConfig"
BUCKET = "gcp:storage/bucket:Bucket"
BUCKET_IAM = "gcp:storage/bucketIAMMember:BucketIAMMember"
SINK = "gcp:logging/projectSink:ProjectSink"
LOG_METRIC = "gcp:logging/metric:Metric"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
COST_LABELS = {"cost-center", "env", "owner"}


def policies(plan: Inventory) -> dict[str, Resource]:
    return {p.inputs["displayName"]: p for p in plan.of_type(POLICY)}


def promql(plan: Inventory, name: str) -> str:
    (condition,) = policies(plan)[name].inputs["conditions"]
    return condition["conditionPrometheusQueryLanguage"]["query"]


def threshold_of(query: str) -> float:
    match = re.search(r"> ([0-9.e+-]+)$", query)
    assert match, query
    return float(match.group(1))


def test_channels_come_from_config(dev_plan: Inventory, prod_plan: Inventory):
    for plan, address in (
        (dev_plan, "signal-platform-dev@example.com"),
        (prod_plan, "signal-oncall@example.com"),
    ):
        (channel,) = plan.of_type(CHANNEL)
        assert channel.inputs["type"] == "email"
        assert channel.inputs["labels"] == {"email_address": address}
        assert set(channel.inputs["userLabels"]) >= COST_LABELS


def test_every_alert_notifies_every_channel_and_says_what_to_do(stack_plan: Inventory):
    channels = {c.name for c in stack_plan.of_type(CHANNEL)}
    channel_ids = {
        r.urn: r for r in stack_plan.resources if r.type == CHANNEL
    }  # names resolve from the channels' outputs
    assert channels and channel_ids
    found = policies(stack_plan)
    assert set(found) == {
        "signal-latency-p95",
        "signal-error-rate",
        "triton-queue-time",
        "gpu-duty-cycle",
        "spot-preemptions",
        "redis-memory",
        "slo-burn-rate",
        "signal-anomaly",  # infra/autoscale.py: the anomaly detectors' verdicts
    }
    for name, policy in found.items():
        notified = policy.inputs["notificationChannels"]
        assert len(notified) == len(channels), name
        # A channel's name is Cloud Monitoring's, known once it exists (unknown in a preview).
        assert all(
            n == UNKNOWN
            or n.startswith(f"projects/{stack_plan.outputs['project']}/notificationChannels/")
            for n in notified
        )
        assert policy.inputs["documentation"]["content"], name
        assert policy.inputs["severity"] in {"CRITICAL", "ERROR", "WARNING"}
        assert set(policy.inputs["userLabels"]) >= COST_LABELS, name
        assert set(channel_ids) <= set(policy.options["dependencies"]), name


def test_service_alerts_use_the_configured_thresholds(stack_plan: Inventory):
    alerts = load(stack_plan.stack).observability.alerts
    latency = promql(stack_plan, "signal-latency-p95")
    assert latency.startswith("histogram_quantile(0.95, sum by (cluster, le)")
    assert "signal_request_duration_seconds_bucket" in latency
    assert threshold_of(latency) == pytest.approx(alerts.latency_p95_ms / 1000) == 0.1
    errors = promql(stack_plan, "signal-error-rate")
    assert f'signal_requests_total{{code=~"{"|".join(SERVER_ERROR_CODES)}"}}' in errors
    assert "/ sum by (cluster) (rate(signal_requests_total[5m]))" in errors
    assert threshold_of(errors) == pytest.approx(alerts.error_rate)
    queue = promql(stack_plan, "triton-queue-time")
    assert "nv_inference_queue_duration_us" in queue and "nv_inference_request_success" in queue
    assert threshold_of(queue) == pytest.approx(alerts.triton_queue_ms * 1000)


def test_gpu_utilisation_alerts_outside_60_to_95_percent_on_gke_managed_dcgm(
    stack_plan: Inventory,
):
    """PromQL, not a threshold filter: the GPU pools start at zero nodes, so the DCGM series
    does not exist when the policy is created, and Cloud Monitoring refuses a threshold
    condition on a metric it has not seen (review.md #2)."""
    policy = policies(stack_plan)["gpu-duty-cycle"]
    assert policy.inputs["combiner"] == "OR"
    queries = [c["conditionPrometheusQueryLanguage"]["query"] for c in policy.inputs["conditions"]]
    assert all("conditionThreshold" not in c for c in policy.inputs["conditions"])
    assert sorted(queries) == sorted(
        [
            f"avg by (cluster) ({GPU_UTILIZATION}) < 60",
            f"avg by (cluster) ({GPU_UTILIZATION}) > 95",
        ]
    )
    assert all("duty_cycle" not in q for q in queries)


# Metric domains that exist only once something writes them (a user metric): a threshold or
# SLO filter naming one is refused until then (Cloud Monitoring's metric-descriptor check).
USER_METRIC_DOMAINS = (
    "prometheus.googleapis.com/",
    "custom.googleapis.com/",
    "workload.googleapis.com/",
    "external.googleapis.com/",
    "logging.googleapis.com/user/",
)


def test_no_threshold_condition_names_a_metric_that_appears_only_later(stack_plan: Inventory):
    """Every condition on a user metric is PromQL (not checked at creation); the only filters
    on one are the SLO's, which exists only from stage serving and says so."""
    checked = 0
    for policy in stack_plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy"):
        for condition in policy.inputs["conditions"]:
            for kind in ("conditionThreshold", "conditionAbsent"):
                if kind in condition:
                    checked += 1
                    assert not any(d in condition[kind]["filter"] for d in USER_METRIC_DOMAINS), (
                        policy.name,
                        condition["displayName"],
                    )
    assert checked >= 1  # Redis memory (Memorystore's own metric) and the burn rates
    for slo in stack_plan.of_type(SLO):
        assert slo.inputs["userLabels"]["signal-platform-stage"] == "serving"


def test_the_slo_and_its_alert_wait_for_stage_serving():
    """Before the service has served, its request counter does not exist and an SLO on it is
    refused: stages infrastructure and workloads declare neither the SLO nor its burn-rate
    alert, and nothing else depends on them."""
    for stage in ("infrastructure", "workloads"):
        staged = staged_plan("dev", stage)
        assert not staged.of_type(SLO)
        assert not staged.of_type("gcp:monitoring/customService:CustomService")
        assert "slo-burn-rate" not in policies(staged)
        assert set(policies(staged)) >= {"signal-latency-p95", "gpu-duty-cycle", "redis-memory"}


def test_spot_preemptions_are_counted_from_compute_engine_system_events(stack_plan: Inventory):
    (metric,) = stack_plan.of_type(LOG_METRIC)
    assert 'protoPayload.methodName="compute.instances.preempted"' in metric.inputs["filter"]
    assert metric.inputs["metricDescriptor"]["metricKind"] == "DELTA"
    policy = policies(stack_plan)["spot-preemptions"]
    (condition,) = policy.inputs["conditions"]
    # PromQL: not checked against the new metric's descriptor when the policy is created, so
    # the alert does not race Cloud Monitoring's registration of the log-based metric (404).
    assert "conditionThreshold" not in condition
    query = condition["conditionPrometheusQueryLanguage"]["query"]
    name = metric.inputs["name"]
    assert re.fullmatch(r"[a-z_]+", name), "a PromQL-safe name: the metric maps 1:1"
    assert f"increase(logging_googleapis_com:user_{name}{{" in query and "[1h]" in query
    assert (
        threshold_of(query) == load(stack_plan.stack).observability.alerts.spot_preemptions_per_hour
    )
    assert metric.urn in policy.options["dependencies"]


def test_redis_memory_alert(stack_plan: Inventory):
    (condition,) = policies(stack_plan)["redis-memory"].inputs["conditions"]
    threshold = condition["conditionThreshold"]
    assert 'resource.type = "redis.googleapis.com/Cluster"' in threshold["filter"]
    assert threshold["comparison"] == "COMPARISON_GT" and threshold["thresholdValue"] == 0.85


def test_slo_is_99_95_percent_availability_over_30_days(stack_plan: Inventory):
    (service,) = stack_plan.of_type(SERVICE)
    (slo,) = stack_plan.of_type(SLO)
    assert slo.inputs["service"] == service.inputs["serviceId"] == "signal-api"
    assert slo.inputs["goal"] == 0.9995
    assert slo.inputs["rollingPeriodDays"] == 30
    ratio = slo.inputs["requestBasedSli"]["goodTotalRatio"]
    # A request-based ratio counts requests: the request counter, never the latency histogram.
    assert ratio["totalServiceFilter"] == (
        'metric.type="prometheus.googleapis.com/signal_requests_total/counter" '
        'resource.type="prometheus_target"'
    )
    bad = ratio["badServiceFilter"]
    assert bad.startswith(ratio["totalServiceFilter"])
    assert f'code=monitoring.regex.full_match("{"|".join(SERVER_ERROR_CODES)}")' in bad
    assert "INVALID_ARGUMENT" not in bad, "a client's mistake is not the API's failure"
    assert set(slo.inputs["userLabels"]) >= COST_LABELS


def test_burn_rate_alert_watches_the_slo_in_a_fast_and_a_slow_window(stack_plan: Inventory):
    (slo,) = stack_plan.of_type(SLO)
    policy = policies(stack_plan)["slo-burn-rate"]
    name = (
        f"projects/{stack_plan.outputs['project']}/services/{slo.inputs['service']}"
        f"/serviceLevelObjectives/{slo.inputs['sloId']}"
    )
    windows = {}
    for condition in policy.inputs["conditions"]:
        threshold = condition["conditionThreshold"]
        match = re.fullmatch(r'select_slo_burn_rate\("([^"]+)", "(\d+s)"\)', threshold["filter"])
        assert match and match.group(1) == name
        windows[match.group(2)] = threshold["thresholdValue"]
    assert windows == {"3600s": 14.4, "21600s": 6}
    assert policy.inputs["severity"] == "CRITICAL"
    assert slo.urn in policy.options["dependencies"]


BILLING_ACCOUNT = "01A2B3-C4D5E6-F7A8B9"


@pytest.fixture(scope="module")
def billed_plans() -> dict[str, Inventory]:
    """Both stacks planned with a (well-formed) billing account for their budget."""
    plans = {}
    for stack, amount in (("dev", 900), ("prod", 9000)):
        budget = json.dumps({"monthlyUsd": amount, "billingAccount": BILLING_ACCOUNT})
        plans[stack] = plan_stack(REPO, stack, {"signal-platform:budget": budget})
    return plans


def test_budget_at_the_monthly_amount_with_50_90_100_percent_rules(billed_plans):
    for stack, amount in (("dev", "900"), ("prod", "9000")):
        billed = billed_plans[stack]
        (budget,) = billed.of_type(BUDGET)
        assert budget.inputs["billingAccount"] == BILLING_ACCOUNT
        assert budget.inputs["amount"] == {
            "specifiedAmount": {"currencyCode": "USD", "units": amount}
        }
        rules = [r["thresholdPercent"] for r in budget.inputs["thresholdRules"]]
        assert rules == [0.5, 0.9, 1]
        (project,) = budget.inputs["budgetFilter"]["projects"]
        assert re.fullmatch(r"projects/\d+", project)
        channels = budget.inputs["allUpdatesRule"]["monitoringNotificationChannels"]
        assert len(channels) == len(billed.of_type(CHANNEL)) >= 1


def test_no_budget_without_a_billing_account(stack_plan: Inventory):
    """The stack files name no billing account (a placeholder would be refused): the stacks
    plan without a Budget, which the pack reports as an advisory (apply-billing-budget)."""
    assert load(stack_plan.stack).budget.billing_account is None
    assert stack_plan.of_type(BUDGET) == []


def test_data_access_audit_logs_for_bigquery_and_redis(stack_plan: Inventory):
    configs = {a.inputs["service"]: a.inputs for a in stack_plan.of_type(AUDIT)}
    assert set(configs) == {"bigquery.googleapis.com", "redis.googleapis.com"}
    for config in configs.values():
        types = {c["logType"] for c in config["auditLogConfigs"]}
        assert {"DATA_READ", "DATA_WRITE"} <= types
        assert not any(c.get("exemptedMembers") for c in config["auditLogConfigs"])


def test_audit_logs_sink_to_a_cmek_bucket_locked_where_the_stack_is_protected(
    dev_plan: Inventory, prod_plan: Inventory
):
    for plan_, days, protected in ((dev_plan, 30, False), (prod_plan, 400, True)):
        bucket = plan_.named(BUCKET, "audit-logs")
        # A locked retention policy only where the stack protects its resources. Elsewhere
        # none (even an unlocked one keeps every object, and so the bucket, for its period)
        # and force_destroy: dev's `pulumi destroy` succeeds the same day (review.md #13).
        if protected:
            assert bucket.inputs["retentionPolicy"] == {
                "retentionPeriod": str(days * 86400),
                "isLocked": True,
            }
        else:
            assert "retentionPolicy" not in bucket.inputs
        assert bucket.inputs["forceDestroy"] is not protected
        assert bucket.inputs["lifecycleRules"] == [
            {"action": {"type": "Delete"}, "condition": {"age": days}}
        ]
        assert bucket.options["protect"] is protected
        assert bucket.inputs["encryption"]["defaultKmsKeyName"].endswith(
            "/keyRings/us-warehouse-keys/cryptoKeys/audit-logs"
        )
        assert bucket.inputs["publicAccessPrevention"] == "enforced"
        assert bucket.inputs["uniformBucketLevelAccess"] is True
        assert "versioning" not in bucket.inputs, "retention policies exclude versioning"
        assert set(bucket.inputs["labels"]) >= COST_LABELS
        (sink,) = plan_.of_type(SINK)
        assert sink.inputs["destination"] == f"storage.googleapis.com/{bucket.inputs['name']}"
        assert 'logName:"cloudaudit.googleapis.com"' in sink.inputs["filter"]
        assert sink.inputs["uniqueWriterIdentity"] is True
        writer = plan_.named(BUCKET_IAM, "audit-logs-writer")
        assert writer.inputs["role"] == "roles/storage.objectCreator"
        # The sink's writer identity: Logging makes it when it creates the sink.
        assert writer.inputs["member"] == UNKNOWN
        assert sink.urn in writer.options["dependencies"]


def test_the_audit_bucket_waits_for_cloud_storage_to_hold_its_key(stack_plan: Inventory):
    """The audit key's grant goes to Cloud Storage's agent, whose email comes from the data
    source that creates it (run once the Storage API is on), and the bucket waits for it."""
    (grant,) = [
        g
        for g in stack_plan.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
        if g.inputs["cryptoKeyId"].endswith("/us-warehouse-keys/cryptoKeys/audit-logs")
    ]
    api = stack_plan.named("gcp:projects/service:Service", "api-storage")
    assert api.urn in grant.options["dependencies"]
    bucket = stack_plan.named(BUCKET, "audit-logs")
    assert grant.urn in waits_for(stack_plan, bucket)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("stack", "changes", "expected"),
    [
        (
            "dev",
            {"observability": {"alerts": {"gpuDutyCycleMin": 95, "gpuDutyCycleMax": 60}}},
            ["signal-platform:observability.alerts.gpuDutyCycleMin", "not below gpuDutyCycleMax"],
        ),
        (
            "dev",
            {
                "observability": {
                    "notificationChannels": [
                        {"name": "ops", "type": "email", "address": "not-an-address"}
                    ]
                }
            },
            ["signal-platform:observability.notificationChannels[0].address", "not an email"],
        ),
        (
            "dev",
            {
                "observability": {
                    "notificationChannels": [
                        {"name": "hook", "type": "webhook_tokenauth", "address": "http://x.io"}
                    ]
                }
            },
            ["notificationChannels[0].address", "https://"],
        ),
        (
            "prod",
            {"observability": {"notificationChannels": []}},
            ["signal-platform:observability.notificationChannels", "prod alerts need somewhere"],
        ),
        (
            "dev",
            {"observability": {"sloGoal": 1.0}},
            ["signal-platform:observability.sloGoal", "< 1"],
        ),
        (
            "dev",
            {"budget": {"monthlyUsd": 900, "alertThresholds": [0.9, 0.5]}},
            ["signal-platform:budget.alertThresholds", "increasing"],
        ),
        (
            "prod",
            {"budget": {"monthlyUsd": 9000, "billingAccount": "000000-000000-000000"}},
            ["signal-platform:budget.billingAccount", "a placeholder, not a billing account"],
        ),
        (
            "dev",
            {"budget": {"monthlyUsd": 900, "billingAccount": "my-account"}},
            ["signal-platform:budget.billingAccount", "'my-account'"],
        ),
    ],
)
def test_bad_observability_config_is_named_precisely(stack: str, changes: dict, expected: list):
    with pytest.raises(ConfigError) as exc:
        load(stack, **changes)
    text = str(exc.value)
    for fragment in expected:
        assert fragment in text, text


def test_the_stacks_alert_config_loads_with_defaults():
    config = load("prod")
    assert config.observability.slo_goal == 0.9995
    assert section("prod", "observability")["notificationChannels"][0]["type"] == "email"


# ---------------------------------------------------------------- labels, across the data platform

DATA_COMPONENTS = ("RedisCluster", "Warehouse", "Messaging", "Observability")


def test_every_data_platform_resource_that_takes_labels_carries_the_cost_labels(
    stack_plan: Inventory,
):
    import inspect

    from tools.input_check import args_class

    config = load(stack_plan.stack)
    checked = 0
    for resource in stack_plan.resources:
        if not resource.custom or not any(
            f"signal:infra:{c}$" in resource.urn for c in DATA_COMPONENTS
        ):
            continue
        params = inspect.signature(args_class(resource.type).__init__).parameters
        for param, key in (("labels", "labels"), ("user_labels", "userLabels")):
            if param in params and (resource.type, key) != (CHANNEL, "labels"):  # its address
                labels = dict(resource.inputs.get(key) or {})
                # What exists only after traffic says so to the policy pack (stage serving).
                if labels.pop("signal-platform-stage", "serving") != "serving":
                    raise AssertionError((resource.type, resource.name, "stage label"))
                assert labels == config.labels, (resource.type, resource.name)
                checked += 1
    assert checked >= 20


# Triton's own metric names (Triton's metrics documentation): counters, without a suffix.
TRITON_METRICS = {"nv_inference_queue_duration_us", "nv_inference_request_success"}
PROMQL_FUNCTIONS = re.compile(r"\b[a-z_]+\s*\(")  # sum(, rate(, histogram_quantile(, ...
LOG_METRIC_PREFIX = "logging_googleapis_com:user_"


def exported_metrics() -> set[str]:
    """Every sample name the platform's processes expose to Prometheus, read from their own
    registries (the service's `app.telemetry.Metrics`, the scaler's and the detector's
    exports), in the exposition format: counters end in _total, histograms in
    _bucket/_sum/_count."""
    registry = CollectorRegistry()
    Metrics(registry)
    ScalerExports(registry)
    DetectorExports(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + s for family in registry.collect() for s in suffixes[family.type]}


def promql_metric_names(query: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once grouping clauses, label
    matchers, ranges, function names and numbers are taken out."""
    bare = re.sub(r"\bby\s*\([^)]*\)", " ", query)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = PROMQL_FUNCTIONS.sub(" ", bare)
    return set(re.findall(r"[A-Za-z_:][\w:]*", bare))


def readable_metrics(plan: Inventory) -> set[str]:
    """What a PromQL query in this stack may read: what our processes export, Triton's
    metrics, GKE's managed DCGM metric where the clusters collect it, and the stack's own
    log-based metrics."""
    names = exported_metrics() | TRITON_METRICS
    for cluster in plan.of_type("gcp:container/cluster:Cluster"):
        if "DCGM" in cluster.inputs["monitoringConfig"]["enableComponents"]:
            names.add(GPU_UTILIZATION)
    names |= {LOG_METRIC_PREFIX + m.inputs["name"] for m in plan.of_type(LOG_METRIC)}
    return names


def test_promql_metric_names_reads_only_metrics():
    query = (
        'sum by (cluster) (rate(signal_requests_total{code=~"UNKNOWN|INTERNAL"}[5m])) '
        "/ histogram_quantile(0.95, sum by (cluster, le) (rate(x_bucket[5m]))) > 0.001"
    )
    assert promql_metric_names(query) == {"signal_requests_total", "x_bucket"}


def test_every_promql_alert_reads_metrics_the_platform_exports(stack_plan: Inventory):
    """The names are the ones app/telemetry.py (and the scaler and detector) register, Triton's
    own, GKE's DCGM metric and the stack's log metrics: a renamed metric fails here."""
    readable = readable_metrics(stack_plan)
    assert "DCGM" in MONITORED_COMPONENTS
    queries = [
        condition["conditionPrometheusQueryLanguage"]["query"]
        for policy in stack_plan.of_type(POLICY)
        for condition in policy.inputs["conditions"]
        if "conditionPrometheusQueryLanguage" in condition
    ]
    assert len(queries) >= 5
    for query in queries:
        names = promql_metric_names(query)
        assert names and names <= readable, (query, names - readable)
    # The error-rate alert and the SLO split requests by their final gRPC code.
    assert Metrics(CollectorRegistry()).requests._labelnames == ("method", "code")
    assert {TRITON_QUEUE_US, TRITON_REQUESTS} == TRITON_METRICS


def test_every_alert_says_what_to_do_first_and_links_the_dashboard(stack_plan: Inventory):
    """Each policy's documentation is built from the dashboard's id (so it is unknown until the
    dashboard exists, and the policy waits for it), and opens with its runbook line."""
    (dashboard,) = stack_plan.of_type(DASHBOARD)
    found = policies(stack_plan)
    assert set(RUNBOOK) == set(found) - {"signal-anomaly"}  # infra/autoscale.py writes its own
    for name, policy in found.items():
        assert policy.inputs["documentation"]["content"] == UNKNOWN, name
        assert dashboard.urn in policy.options["dependencies"], name
    text = runbook_markdown("Alert: p95 above 100 ms.", RUNBOOK["signal-latency-p95"], "URL")
    assert text.splitlines()[0] == "Alert: p95 above 100 ms."
    assert f"**First:** {RUNBOOK['signal-latency-p95']}" in text
    assert text.endswith("[Operations dashboard](URL)")
