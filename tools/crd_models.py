"""Typed models of the custom resources this repository declares (Istio, GKE ComputeClass).

Their CRDs ship no SDK classes, so the unknown-input check validates their specs here:
only the fields of the upstream CRDs that this repository may use, with their types and
enumerations; anything else is reported like an unknown SDK input.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from tools.inventory import Resource


class Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# ---------------------------------------------------------------- shared Istio types


class WorkloadSelector(Spec):
    match_labels: dict[str, str] = {}


class PortSelector(Spec):
    number: int


# ---------------------------------------------------------------- security.istio.io/v1

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class Mtls(Spec):
    mode: MtlsMode


class PeerAuthenticationSpec(Spec):
    selector: WorkloadSelector | None = None
    mtls: Mtls | None = None
    port_level_mtls: dict[str, Mtls] | None = None


class Source(Spec):
    principals: list[str] | None = None
    not_principals: list[str] | None = None
    request_principals: list[str] | None = None
    namespaces: list[str] | None = None
    not_namespaces: list[str] | None = None
    ip_blocks: list[str] | None = None
    not_ip_blocks: list[str] | None = None


class Operation(Spec):
    hosts: list[str] | None = None
    ports: list[str] | None = None
    methods: list[str] | None = None
    paths: list[str] | None = None
    not_methods: list[str] | None = None
    not_paths: list[str] | None = None


class From(Spec):
    source: Source


class To(Spec):
    operation: Operation


class Condition(Spec):
    key: str
    values: list[str] | None = None
    not_values: list[str] | None = None


class Rule(Spec):
    from_: list[From] | None = None
    to: list[To] | None = None
    when: list[Condition] | None = None

    model_config = ConfigDict(
        alias_generator=lambda name: "from" if name == "from_" else to_camel(name),
        populate_by_name=True,
        extra="forbid",
    )


class AuthorizationPolicySpec(Spec):
    selector: WorkloadSelector | None = None
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] | None = None
    rules: list[Rule] | None = None


class RequestAuthenticationSpec(Spec):
    selector: WorkloadSelector | None = None
    jwt_rules: list[dict[str, Any]] | None = None


# ---------------------------------------------------------------- networking.istio.io/v1


class TcpKeepalive(Spec):
    time: str | None = None
    interval: str | None = None
    probes: int | None = None


class TcpSettings(Spec):
    max_connections: int | None = None
    connect_timeout: str | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: str | None = None


class HttpSettings(Spec):
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: str | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: int | None = None


class ConnectionPool(Spec):
    tcp: TcpSettings | None = None
    http: HttpSettings | None = None


class LocalityMapping(Spec):
    from_: str
    to: dict[str, int] | str

    model_config = ConfigDict(
        alias_generator=lambda name: "from" if name == "from_" else name,
        populate_by_name=True,
        extra="forbid",
    )


class LocalityLbSetting(Spec):
    enabled: bool | None = None
    distribute: list[LocalityMapping] | None = None
    failover: list[LocalityMapping] | None = None
    failover_priority: list[str] | None = None


class LoadBalancer(Spec):
    simple: (
        Literal[
            "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"
        ]
        | None
    ) = None
    locality_lb_setting: LocalityLbSetting | None = None
    warmup_duration_secs: str | None = None


class OutlierDetection(Spec):
    consecutive5xx_errors: int | None = None
    consecutive_gateway_errors: int | None = None
    interval: str | None = None
    base_ejection_time: str | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None
    split_external_local_origin_errors: bool | None = None

    model_config = ConfigDict(
        alias_generator=lambda name: (
            "consecutive5xxErrors" if name == "consecutive5xx_errors" else to_camel(name)
        ),
        populate_by_name=True,
        extra="forbid",
    )


class ClientTls(Spec):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]
    sni: str | None = None
    subject_alt_names: list[str] | None = None


class PortTrafficPolicy(Spec):
    port: PortSelector
    connection_pool: ConnectionPool | None = None
    load_balancer: LoadBalancer | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTls | None = None


class TrafficPolicy(Spec):
    connection_pool: ConnectionPool | None = None
    load_balancer: LoadBalancer | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTls | None = None
    port_level_settings: list[PortTrafficPolicy] | None = None


class Subset(Spec):
    name: str
    labels: dict[str, str] | None = None
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Spec):
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] | None = None
    export_to: list[str] | None = None
    workload_selector: WorkloadSelector | None = None


class StringMatch(Spec):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class HttpMatch(Spec):
    name: str | None = None
    uri: StringMatch | None = None
    port: int | None = None
    headers: dict[str, StringMatch] | None = None
    gateways: list[str] | None = None


class Destination(Spec):
    host: str
    subset: str | None = None
    port: PortSelector | None = None


class RouteDestination(Spec):
    destination: Destination
    weight: int | None = None


class Retries(Spec):
    attempts: int | None = None
    per_try_timeout: str | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None


class HttpRoute(Spec):
    name: str | None = None
    match: list[HttpMatch] | None = None
    route: list[RouteDestination] | None = None
    timeout: str | None = None
    retries: Retries | None = None


class VirtualServiceSpec(Spec):
    hosts: list[str]
    gateways: list[str] | None = None
    http: list[HttpRoute] | None = None
    export_to: list[str] | None = None


class GatewayPort(Spec):
    number: int
    name: str
    protocol: Literal["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"]


class ServerTls(Spec):
    mode: Literal[
        "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
    ]
    credential_name: str | None = None
    min_protocol_version: Literal["TLS_AUTO", "TLSV1_2", "TLSV1_3"] | None = None


class Server(Spec):
    port: GatewayPort
    hosts: list[str]
    tls: ServerTls | None = None
    name: str | None = None


class GatewaySpec(Spec):
    selector: dict[str, str]
    servers: list[Server]


class IstioEgressListener(Spec):
    hosts: list[str]


class SidecarSpec(Spec):
    workload_selector: WorkloadSelector | None = None
    egress: list[IstioEgressListener] | None = None
    outbound_traffic_policy: dict[Literal["mode"], Literal["REGISTRY_ONLY", "ALLOW_ANY"]] | None = (
        None
    )


# ---------------------------------------------------------------- telemetry.istio.io/v1


class TracingProvider(Spec):
    name: str


class Tracing(Spec):
    providers: list[TracingProvider] | None = None
    random_sampling_percentage: float | None = None


class TelemetrySpec(Spec):
    selector: WorkloadSelector | None = None
    tracing: list[Tracing] | None = None


# ---------------------------------------------------------------- monitoring.googleapis.com/v1


class LabelSelector(Spec):
    match_labels: dict[str, str] | None = None


class ScrapeEndpoint(Spec):
    port: int | str
    path: str | None = None
    interval: str | None = None
    timeout: str | None = None
    scheme: Literal["http", "https"] | None = None


class PodMonitoringSpec(Spec):
    selector: LabelSelector
    endpoints: list[ScrapeEndpoint]


# ---------------------------------------------------------------- cloud.google.com/v1


class GpuRequirement(Spec):
    type: str
    count: int
    driver_version: Literal["default", "latest"] | None = None


class Priority(Spec):
    machine_family: str | None = None
    machine_type: str | None = None
    spot: bool | None = None
    gpu: GpuRequirement | None = None
    min_cores: int | None = None
    min_memory_gb: int | None = None
    nodepools: list[str] | None = None


class NodePoolAutoCreation(Spec):
    enabled: bool


class ActiveMigration(Spec):
    optimize_rule_priority: bool


class ComputeClassSpec(Spec):
    priorities: list[Priority]
    node_pool_auto_creation: NodePoolAutoCreation | None = None
    when_unsatisfiable: Literal["ScaleUpAnyway", "DoNotScaleUp"] | None = None
    active_migration: ActiveMigration | None = None


SPECS: dict[tuple[str, str], type[Spec]] = {
    ("security.istio.io/v1", "PeerAuthentication"): PeerAuthenticationSpec,
    ("security.istio.io/v1", "AuthorizationPolicy"): AuthorizationPolicySpec,
    ("security.istio.io/v1", "RequestAuthentication"): RequestAuthenticationSpec,
    ("networking.istio.io/v1", "DestinationRule"): DestinationRuleSpec,
    ("networking.istio.io/v1", "VirtualService"): VirtualServiceSpec,
    ("networking.istio.io/v1", "Gateway"): GatewaySpec,
    ("networking.istio.io/v1", "Sidecar"): SidecarSpec,
    ("telemetry.istio.io/v1", "Telemetry"): TelemetrySpec,
    ("cloud.google.com/v1", "ComputeClass"): ComputeClassSpec,
    ("monitoring.googleapis.com/v1", "PodMonitoring"): PodMonitoringSpec,
}
TOP_LEVEL = {"apiVersion", "kind", "metadata", "spec"}


def spec_model(resource: Resource) -> type[Spec] | None:
    """The typed model of a Kubernetes custom resource, if this repository models its kind."""
    if not resource.type.startswith("kubernetes:"):
        return None
    return SPECS.get((resource.inputs.get("apiVersion"), resource.inputs.get("kind")))  # type: ignore[arg-type]


def crd_problems(resource: Resource) -> list[tuple[str, str | None, str]]:
    """(path, closest valid name, reason) for each unknown or ill-typed field of a modelled
    custom resource."""
    model = spec_model(resource)
    if model is None:
        return []
    problems = [
        (k, _closest(k, TOP_LEVEL), "unknown input") for k in resource.inputs if k not in TOP_LEVEL
    ]
    try:
        model.model_validate(resource.inputs.get("spec") or {})
    except ValidationError as exc:
        names = _aliases(model)
        for error in exc.errors():
            path = "spec" + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]
            )
            if error["type"] == "extra_forbidden":
                problems.append((path, _closest(str(error["loc"][-1]), names), "unknown input"))
            else:
                problems.append(
                    (path, None, f"invalid value: {error['msg']} (got {error.get('input')!r})")
                )
    return problems


def _closest(key: str, names: Any) -> str | None:
    match = difflib.get_close_matches(key, list(names), n=1)
    return match[0] if match else None


def _aliases(model: type[BaseModel], seen: set[type] | None = None) -> list[str]:
    """Every field name (as written in YAML) in a model tree, for suggestions."""
    seen = seen if seen is not None else set()
    if model in seen:
        return []
    seen.add(model)
    names: list[str] = []
    for name, field in model.model_fields.items():
        names.append(field.alias or name)
        for candidate in _model_types(field.annotation):
            names += _aliases(candidate, seen)
    return names


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _model_types(arg)]
