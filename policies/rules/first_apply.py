"""What a fresh project does not hold on the first `pulumi up`: images in a registry the same
update creates, data in a bucket it creates, metrics nothing has written yet; and the markers
that declare an object only in a later stage, once those exist.

What the pack can see, and so what these rules judge: a workload's image reference and the
Artifact Registry repositories the stack declares (host `<location>-docker.pkg.dev`, path
`<project>/<repositoryId>/`); its Cloud Storage FUSE volumes and the buckets the stack declares;
the metric types monitoring objects name in their filters, and the metrics the stack declares.
It cannot see an image pipeline or a bucket's contents: an image in a registry the stack
creates cannot exist before the update, whatever its tag; a bucket the stack creates holds only
what the stack itself uploads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from rules.apply_order import TABLES, registry_host
from rules.kit import MANDATORY, Rules, StackResource, schema, string_list
from rules.kube_objects import containers, kind_of, pod_spec
from rules.kubernetes import parse_image
from rules.stack_graph import Finding, Graph, short
from rules.values import as_dict, as_int, as_list, as_str_map, get, is_unknown

RULES = Rules("apply-order")

SLO = "gcp:monitoring/slo:Slo"
ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
LOG_METRIC = "gcp:logging/metric:Metric"
METRIC_DESCRIPTOR = "gcp:monitoring/metricDescriptor:MetricDescriptor"
REGISTRY = "gcp:artifactregistry/repository:Repository"
BUCKET = "gcp:storage/bucket:Bucket"
GCSFUSE_DRIVER = "gcsfuse.csi.storage.gke.io"
SKIP_AWAIT = "pulumi.com/skipAwait"
USER_LOG_METRIC = "logging.googleapis.com/user/"

USER_DOMAINS = tuple(TABLES["user_metrics"]["domains"])
_FILTER_METRIC_RE = re.compile(r'metric\.type\s*=\s*"([^"]+)"')
_MQL_METRIC_RE = re.compile(
    r"((?:prometheus|custom|workload|external)\.googleapis\.com/[\w./-]+"
    r"|logging\.googleapis\.com/user/[\w.-]+)"
)
_SLO_REF_RE = re.compile(r'select_slo_\w+\(\s*"([^"]+)"')
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

# The workload kinds pulumi-kubernetes waits for (readiness, or completion for a Job).
AWAITED_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod", "Job"}
SCALABLE_KINDS = {"Deployment", "StatefulSet", "ReplicaSet"}

STAGE_SOURCE = (
    "Pulumi docs, pulumi-kubernetes resource readiness (the `pulumi.com/skipAwait` annotation; "
    "a Deployment that never becomes ready fails the update after 10 minutes); "
    "Artifact Registry docs, 'Repository and image names' (<location>-docker.pkg.dev/<project>/"
    "<repository>/<image>); GKE docs, 'Cloud Storage FUSE CSI driver' (volumeAttributes.bucketName)"
)


def markers_schema(description: str, default: dict[str, list[str]]) -> dict[str, Any]:
    """The config schema of stage markers: label or annotation key → the values that mark an
    object declared only in a later stage."""
    return {
        "type": "object",
        "description": description,
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
        "default": default,
    }


def shown_markers(markers: Mapping[str, Any]) -> str:
    """The first marker value of each key, as an object's labels would carry it."""
    return "{" + ", ".join(f"{k}: {as_list(v)[0]}" for k, v in markers.items() if as_list(v)) + "}"


def marked(labels: Any, markers: Mapping[str, Any]) -> str | None:
    """The `key=value` of the first marker (key → accepted values) `labels` carry, if any."""
    labels = as_str_map(labels)
    for key, values in markers.items():
        if key in labels and labels[key] in as_list(values):
            return f"{key}={labels[key]}"
    return None


# ------------------------------------------------------------------------------ metrics


def _metrics_in(text: Any, query_language: bool) -> list[str]:
    if not isinstance(text, str):
        return []
    found = _MQL_METRIC_RE.findall(text) if query_language else _FILTER_METRIC_RE.findall(text)
    return [m for m in found if m.startswith(USER_DOMAINS)]


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, text) for every string under `value`."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def metric_uses(r: StackResource) -> list[tuple[str, str]]:
    """(where, metric type) for every user-domain metric `r` names where Cloud Monitoring checks
    it exists when `r` is created: SLI filters, threshold and absence filters, MQL, dashboard
    filters and MQL. PromQL is never checked, so never listed."""
    uses: list[tuple[str, str]] = []
    if r.type == SLO:
        for key in ("requestBasedSli", "windowsBasedSli"):
            for where, text in _strings(get(r.props, key), key):
                uses += [(where, m) for m in _metrics_in(text, query_language=False)]
    elif r.type == ALERT_POLICY:
        for i, condition in enumerate(as_list(get(r.props, "conditions"))):
            for kind, field in (
                ("conditionThreshold", "filter"),
                ("conditionThreshold", "denominatorFilter"),
                ("conditionAbsent", "filter"),
                ("conditionMonitoringQueryLanguage", "query"),
            ):
                text = get(condition, kind, field)
                query_language = kind == "conditionMonitoringQueryLanguage"
                where = f"conditions[{i}].{kind}.{field}"
                uses += [(where, m) for m in _metrics_in(text, query_language)]
    elif r.type == DASHBOARD:
        for where, text in _strings(_dashboard(r), "dashboardJson"):
            key = where.rsplit(".", 1)[-1]
            if key in ("filter", "timeSeriesQueryLanguage"):
                uses += [(where, m) for m in _metrics_in(text, key == "timeSeriesQueryLanguage")]
    return uses


def _dashboard(r: StackResource) -> dict[str, Any]:
    text = get(r.props, "dashboardJson")
    if not isinstance(text, str):
        return {}
    try:
        return as_dict(json.loads(text))
    except ValueError:
        return {}


def labels_of(r: StackResource) -> Any:
    if r.type == DASHBOARD:
        return get(_dashboard(r), "labels")
    return get(r.props, "userLabels")


def _seconds(duration: Any) -> float | None:
    """A Go duration ("600s", "10m", "1m30s") in seconds."""
    if not isinstance(duration, str) or not duration:
        return None
    parts = _DURATION_RE.findall(duration)
    if "".join(n + u for n, u in parts) != duration:
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


class Metrics:
    """The metrics the stack declares, and what a consumer of one must wait for."""

    def __init__(self, graph: Graph, config: Mapping[str, Any]) -> None:
        self.graph = graph
        self.existing = [str(m) for m in config["existingMetrics"]]
        self.settle_types = set(config["settleTypes"])
        self.settle_seconds = float(config["logMetricSettleSeconds"])
        self.log_metrics = graph.of_type(LOG_METRIC)
        self.descriptors = graph.of_type(METRIC_DESCRIPTOR)

    def predates(self, metric: str) -> bool:
        return any(
            metric == e or (e.endswith("*") and metric.startswith(e[:-1])) for e in self.existing
        )

    def problem(self, r: StackResource, metric: str) -> str | None:
        """Why creating `r`, which names `metric`, fails on a fresh project (None: it does not)."""
        if self.predates(metric):
            return None
        if metric.startswith(USER_LOG_METRIC):
            name = metric.removeprefix(USER_LOG_METRIC)
            declared = [m for m in self.log_metrics if _names(m, "name", name)]
            if declared:
                return self._log_metric_problem(r, declared)
        declared = [d for d in self.descriptors if _names(d, "type", metric)]
        if declared:
            if self.graph.waits(r, declared):
                return None
            return f"without waiting for {short(declared[0].urn)}, which declares it"
        return "which exists only once something writes it"

    def _log_metric_problem(self, r: StackResource, metrics: list[StackResource]) -> str | None:
        if not self.graph.waits(r, metrics):
            return f"without waiting for {short(metrics[0].urn)}, which declares it"
        for settle in self.graph.waits_for(r):
            delay = self.graph.by_urn.get(settle)
            if delay is None or delay.type not in self.settle_types:
                continue
            seconds = _seconds(get(delay.props, "createDuration"))
            if self.graph.waits(delay, metrics) and (seconds or 0) >= self.settle_seconds:
                return None
        return (
            f"declared by {short(metrics[0].urn)}, which Cloud Monitoring answers with 404 for up "
            f"to 10 minutes after it is created, and it waits for no settle delay of "
            f"{self.settle_seconds:g}s after it"
        )


def _names(r: StackResource, key: str, wanted: str) -> bool:
    value = get(r.props, key)
    return value == wanted or is_unknown(value)


def _advice(r: StackResource, markers: Mapping[str, Any]) -> str:
    later = (
        f"declare it only in a stage after the metric has data (labels {shown_markers(markers)})"
    )
    if r.type == ALERT_POLICY:
        return f"use a PromQL condition (conditionPrometheusQueryLanguage), or {later}"
    if r.type == DASHBOARD:
        return f"chart it with PromQL (prometheusQuery), or {later}"
    return f"declare the metric first and wait for it, or {later}"


def _slo_refs(r: StackResource, slos: list[StackResource]) -> list[StackResource]:
    """The SLOs of the stack an alert's select_slo_* filters name."""
    if r.type != ALERT_POLICY:
        return []
    named: list[StackResource] = []
    for condition in as_list(get(r.props, "conditions")):
        for kind in ("conditionThreshold", "conditionAbsent"):
            for path in _SLO_REF_RE.findall(str(get(condition, kind, "filter", default=""))):
                parts = path.split("/")
                service, slo_id = (parts[-3], parts[-1]) if len(parts) >= 3 else (None, None)
                named += [
                    s
                    for s in slos
                    if get(s.props, "sloId") in (slo_id, None)
                    and str(get(s.props, "service")).rsplit("/", 1)[-1] == service
                ]
    return named


@RULES.stack(
    "apply-monitoring-metric-exists",
    level=MANDATORY,
    description="An SLO, a threshold or absence alert condition (or MQL) or a dashboard filter "
    "names a user-defined metric (Prometheus, custom, workload, external, log-based) only when "
    "it exists before the object is created: the stack declares it and the object waits for it "
    "(a log-based metric also for a settle delay), it predates the stack (config "
    "existingMetrics), or the object is declared in a later stage (config afterDataLabels). "
    "Alert conditions use PromQL, which is not checked at creation. Everything that waits for "
    "such an object, or an alert that names such an SLO, is reported with it.",
    source=TABLES["user_metrics"]["source"],
    config=schema(
        {
            "afterDataLabels": markers_schema(
                "user labels that mark a monitoring object declared only once its metrics have "
                "data (a later stage of the stack)",
                {"signal-platform-stage": ["serving"]},
            ),
            "existingMetrics": string_list(
                [], "metric types (a trailing * for a prefix) that exist before the stack"
            ),
            "settleTypes": string_list(
                ["time:index/sleep:Sleep"], "resource types that delay what waits for them"
            ),
            "logMetricSettleSeconds": {"type": "number", "minimum": 0, "default": 600},
        }
    ),
)
def monitoring_metric_exists(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    graph = Graph(resources)
    metrics = Metrics(graph, config)
    markers = as_dict(config["afterDataLabels"])
    slos = graph.of_type(SLO)
    failing: dict[str, str] = {}  # urn → why it cannot be created
    for r in resources:
        if marked(labels_of(r), markers):
            continue
        for where, metric in metric_uses(r):
            problem = metrics.problem(r, metric)
            if problem is None:
                continue
            kind = r.type.rsplit(":", 1)[-1]
            failing.setdefault(r.urn, f"it names {metric} {problem}")
            yield (
                r.urn,
                f"{where} names {metric}, {problem}: creating this {kind} on a fresh project "
                f"fails; {_advice(r, markers)}",
            )
    for r in resources:
        if r.urn in failing or marked(labels_of(r), markers):
            continue
        closure = graph.waits_for(r)
        named = [s for s in _slo_refs(r, slos) if s.urn not in closure]
        blocked = sorted(u for u in failing if u in closure) + [
            s.urn for s in named if s.urn in failing
        ]
        if blocked:
            first = blocked[0]
            yield (
                r.urn,
                f"waits for {short(first)}, which cannot be created on a fresh project "
                f"({failing[first]}): so this is never created either",
            )
        for slo in named:
            if slo.urn not in failing:
                yield (
                    r.urn,
                    f"names SLO {short(slo.urn)} without waiting for it: add it to depends_on",
                )


# ------------------------------------------------------------------------------ workloads


def _registries(graph: Graph) -> list[tuple[StackResource, Any, Any, Any]]:
    """(repository, host, project, repository id) of every Docker repository the stack creates."""
    found = []
    for repo in graph.of_type(REGISTRY):
        if get(repo.props, "format") not in (None, "DOCKER") and not is_unknown(
            get(repo.props, "format")
        ):
            continue
        location = get(repo.props, "location")
        host = location if is_unknown(location) else f"{location}-docker.pkg.dev"
        project = get(repo.props, "project", default=get(repo.provider_props, "project"))
        found.append((repo, host, project, get(repo.props, "repositoryId")))
    return found


def _matches(value: Any, wanted: Any) -> bool:
    return is_unknown(wanted) or wanted is None or value == wanted


def _in_registry(
    image: str, registries: list[tuple[StackResource, Any, Any, Any]]
) -> StackResource | None:
    host = registry_host(image)
    if host is None or not host.endswith("-docker.pkg.dev"):
        return None
    path = parse_image(image)[0].split("/")[1:]
    if len(path) < 3:
        return None
    for repo, repo_host, project, repo_id in registries:
        if (
            _matches(host, repo_host)
            and _matches(path[0], project)
            and _matches(path[1], repo_id)
            and not (repo_id is None and project is None)
        ):
            return repo
    return None


def _read_buckets(graph: Graph, r: StackResource) -> list[tuple[str, StackResource]]:
    """(volume, bucket) for each Cloud Storage FUSE volume of `r` that mounts, read-only, a bucket
    the stack creates."""
    spec = pod_spec(r.type, r.props)
    buckets = graph.of_type(BUCKET)
    mounts: dict[str, list[bool]] = {}
    for container in containers(spec):
        for mount in as_list(get(container.spec, "volumeMounts")):
            mounts.setdefault(str(get(mount, "name")), []).append(get(mount, "readOnly") is True)
    sources = {u for urns in r.property_dependencies.values() for u in urns}
    found = []
    for volume in as_list(get(spec, "volumes")):
        csi = get(volume, "csi")
        if get(csi, "driver") != GCSFUSE_DRIVER:
            continue
        name = str(get(volume, "name"))
        read_only = get(csi, "readOnly") is True or (bool(mounts.get(name)) and all(mounts[name]))
        if not read_only:
            continue
        wanted = get(csi, "volumeAttributes", "bucketName")
        for bucket in buckets:
            bucket_name = get(bucket.props, "name")
            if (isinstance(wanted, str) and wanted == bucket_name) or (
                is_unknown(wanted) and bucket.urn in sources
            ):
                found.append((name, bucket))
    return found


def _unpushed_tag(image: str, pipelines: list[Any]) -> str | None:
    """Why `image` names a tag its pipeline never pushes (config pipelineImages), if it does."""
    repo, tag, digest = parse_image(image)
    if digest:
        return None
    for pipeline in pipelines:
        prefix, patterns = str(get(pipeline, "prefix", default="")), as_list(get(pipeline, "tags"))
        pushed = any(re.fullmatch(str(p), tag or "latest") for p in patterns)
        if prefix and repo.startswith(prefix) and not pushed:
            shown = ", ".join(map(str, patterns))
            return f"tag {tag or 'latest'!r}, which the image pipeline for {prefix} never pushes ({shown})"
    return None


@RULES.stack(
    "apply-workload-sources",
    level=MANDATORY,
    description='A workload Pulumi waits for (no `pulumi.com/skipAwait: "true"`, replicas not '
    "0) runs only images and data that exist before the update: not an image in a registry the "
    "same stack creates, not a tag the image pipeline never pushes (config pipelineImages), not "
    "a read-only Cloud Storage FUSE mount of a bucket the stack creates; otherwise it skips the "
    "await with 0 replicas or is declared in a later stage (config laterStageAnnotations).",
    source=STAGE_SOURCE,
    config=schema(
        {
            "laterStageAnnotations": markers_schema(
                "annotations that mark a workload declared only in a stage after its images are "
                "pushed and its data uploaded",
                {"signal-platform/stage": ["workloads", "serving"]},
            ),
            "pipelineImages": {
                "type": "array",
                "description": "image name prefixes the stack's image pipeline pushes to, with "
                "the tags (regular expressions) it pushes",
                "items": {
                    "type": "object",
                    "properties": {
                        "prefix": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["prefix", "tags"],
                },
                "default": [],
            },
        }
    ),
)
def workload_sources(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    graph = Graph(resources)
    registries = _registries(graph)
    markers = as_dict(config["laterStageAnnotations"])
    pipelines = as_list(config["pipelineImages"])
    for r in resources:
        kind = kind_of(r.type)
        if kind not in AWAITED_KINDS or not r.type.startswith("kubernetes:"):
            continue
        annotations = as_str_map(get(r.props, "metadata", "annotations"))
        if str(annotations.get(SKIP_AWAIT, "")).lower() == "true" or marked(annotations, markers):
            continue
        if kind in SCALABLE_KINDS and as_int(get(r.props, "spec", "replicas")) == 0:
            continue
        reasons = []
        for container in containers(pod_spec(r.type, r.props)):
            image = get(container.spec, "image")
            if not isinstance(image, str) or is_unknown(image):
                continue
            repo = _in_registry(image, registries)
            if repo is not None:
                reasons.append(
                    f"{container.label} runs {image!r} from {short(repo.urn)}, a registry this "
                    "update creates (nothing is pushed there yet)"
                )
            elif (why := _unpushed_tag(image, pipelines)) is not None:
                reasons.append(f"{container.label} runs {image!r}: {why}")
        for volume, bucket in _read_buckets(graph, r):
            reasons.append(
                f"volume {volume!r} reads bucket {short(bucket.urn)}, which this update creates "
                "(it holds only what the stack itself uploads)"
            )
        for reason in reasons:
            yield (
                r.urn,
                f"{kind} is awaited but {reason}: it cannot become ready on the first "
                f'`pulumi up`, which then fails; annotate it {SKIP_AWAIT}: "true" with '
                f"replicas 0, or declare it only in a later stage (annotation {shown_markers(markers)})",
            )
