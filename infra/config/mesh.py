"""The Istio mesh of every cluster (one per region): versions, traffic policy, tracing, pod sizes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

from app.config_errors import Problem
from infra.config.base import DURATION_PATTERN, Model
from infra.config.resources import Resources, resource_gaps

# Istio minor → the Kubernetes minors it supports (istio.io/latest/docs/releases/supported-releases).
ISTIO_KUBERNETES: Mapping[str, tuple[str, ...]] = {
    "1.28": ("1.30", "1.31", "1.32", "1.33", "1.34"),
    "1.29": ("1.31", "1.32", "1.33", "1.34", "1.35"),
    "1.30": ("1.32", "1.33", "1.34", "1.35", "1.36"),
}


def seconds(duration: str) -> float:
    """A DURATION_PATTERN value ("500ms", "2s") in seconds."""
    return int(duration[:-2]) / 1000 if duration.endswith("ms") else float(duration[:-1])


class ConnectionPool(Model):
    """Envoy connection pool toward a service: persistent HTTP/2, bounded queues."""

    max_connections: int = Field(default=1024, ge=1, le=100_000)
    http2_max_requests: int = Field(default=4096, ge=1, le=1_000_000)
    http1_max_pending_requests: int = Field(default=1024, ge=1, le=100_000)
    # 0 = unlimited: connections stay open and are reused (no per-request TLS handshakes).
    max_requests_per_connection: int = Field(default=0, ge=0, le=2**31 - 1)  # Istio's int32
    connect_timeout: str = Field(default="1s", pattern=DURATION_PATTERN)
    idle_timeout: str = Field(default="3600s", pattern=DURATION_PATTERN)
    tcp_keepalive: str = Field(default="300s", pattern=DURATION_PATTERN)


class OutlierDetection(Model):
    consecutive_errors: int = Field(default=5, ge=1, le=1000)  # consecutive 5xx / gRPC errors
    interval: str = Field(default="10s", pattern=DURATION_PATTERN)
    base_ejection_time: str = Field(default="30s", pattern=DURATION_PATTERN)
    max_ejection_percent: int = Field(default=50, ge=1, le=100)


class ApiRoute(Model):
    """Timeouts and retries of the public gRPC API at the gateway."""

    host: str = Field(default="api.signals.internal", pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
    tls_secret: str = Field(default="signal-api-tls", pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    timeout: str = Field(default="2s", pattern=DURATION_PATTERN)
    retries: int = Field(default=2, ge=0, le=10)
    per_try_timeout: str = Field(default="500ms", pattern=DURATION_PATTERN)
    retry_on: str = "connect-failure,refused-stream,unavailable,cancelled,resource-exhausted"

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        # Envoy's route timeout bounds every try: a longer try is cut short by it.
        if seconds(self.per_try_timeout) > seconds(self.timeout):
            yield Problem(
                "perTryTimeout",
                f"longer than the route's timeout ({self.timeout})",
                self.per_try_timeout,
                "<= timeout",
            )


class MeshSettings(Model):
    """The Istio mesh of every cluster (one mesh per region): versions, traffic policy, tracing."""

    istio_version: str = Field(default="1.30.5", pattern=r"^\d+\.\d+\.\d+$")
    chart_repository: str = Field(
        default="https://istio-release.storage.googleapis.com/charts", pattern=r"^https://"
    )
    istiod_replicas: int = Field(default=2, ge=1, le=10)
    gateway_replicas: int = Field(default=2, ge=1, le=50)
    trace_sampling_percent: float = Field(default=1.0, ge=0, le=100)
    # An OpenTelemetry collector (`<service>.<namespace>.svc.cluster.local:<port>`) the sidecars
    # and the service send spans to. None (the default): no spans are exported and nothing may
    # call such a namespace. The program deploys no collector: set it only to one you deploy.
    tracing_collector: str | None = Field(
        default=None, pattern=r"^[a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local:\d+$"
    )
    connection_pool: ConnectionPool = ConnectionPool()
    outlier_detection: OutlierDetection = OutlierDetection()
    api: ApiRoute = ApiRoute()
    # What the mesh's own pods ask of the system pool (capacity.py sums them): istiod, the
    # ingress gateway, every injected sidecar, the istio-cni node agent (the chart's default
    # requests, with limits).
    istiod_resources: Resources = Resources(
        requests={"cpu": "500m", "memory": "2Gi"}, limits={"cpu": "2", "memory": "4Gi"}
    )
    gateway_resources: Resources = Resources(
        requests={"cpu": "500m", "memory": "512Mi"}, limits={"cpu": "2", "memory": "1Gi"}
    )
    proxy_resources: Resources = Resources(
        requests={"cpu": "100m", "memory": "128Mi"}, limits={"cpu": "1", "memory": "512Mi"}
    )
    cni_resources: Resources = Resources(
        requests={"cpu": "100m", "memory": "100Mi"}, limits={"cpu": "500m", "memory": "256Mi"}
    )

    @property
    def istio_minor(self) -> str:
        return ".".join(self.istio_version.split(".")[:2])

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        if self.istio_minor not in ISTIO_KUBERNETES:
            yield Problem(
                "istioVersion",
                "Istio minor without a known Kubernetes support range",
                self.istio_version,
                ", ".join(f"{m}.x" for m in ISTIO_KUBERNETES),
            )
        pods = {
            "istiodResources": self.istiod_resources,
            "gatewayResources": self.gateway_resources,
            "proxyResources": self.proxy_resources,
            "cniResources": self.cni_resources,
        }
        for key, resources in pods.items():
            yield from resource_gaps(resources, key)
