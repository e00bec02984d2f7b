"""The Istio mesh of one cluster: Helm-installed control plane, STRICT mTLS, default deny,
persistent connection pools and locality-aware routing within the region.

One mesh per region: each cluster runs its own istiod with its own root of trust, and nothing
crosses regions inside the mesh. Why not one multi-primary mesh across the regions: it needs a
shared root (each cluster's `cacerts`, an intermediate under one root, whose private key Istio
must hold: Certificate Authority Service keeps its keys in its HSMs and cannot hand one out)
and a remote secret per peer (a long-lived token of every other cluster's API server), and
neither can be declared, rotated and checked offline here; without them istiod sees only its
own cluster's endpoints and a cross-cluster call fails mTLS, so cross-region distribution and
failover would be settings that do nothing. Not provided: a region's callers are served by
its own pods only (zones fail over inside the region); a regional outage is taken by routing
clients to another region's gateway.

Identity is SPIFFE: `cluster.local/ns/<ns>/sa/<ksa>`; callers are allowed by principal, never
by IP. Tracing is exported only where `mesh.tracingCollector` names a collector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import ConnectionPool, MeshSettings
from infra.identity import NAMESPACE as WORKLOAD_NAMESPACE
from infra.kube import METADATA_SERVER, PRIVATE_RANGES, app_peer, k8s_labels, namespace_peer, tcp

ISTIO_NAMESPACE = "istio-system"
GATEWAY_NAMESPACE = "istio-ingress"
GATEWAY = "istio-ingressgateway"
GATEWAY_LABELS = {"app": GATEWAY, "istio": "ingressgateway"}
API_GATEWAY = "signal-api"
TRUST_DOMAIN = "cluster.local"
TRACING_PROVIDER = "otel"
# Proxy drain on shutdown: inside the workloads' 25 s grace, after their preStop.
PROXY_DRAIN = "10s"
WORKLOAD_NAMESPACES = (WORKLOAD_NAMESPACE,)
ISTIOD = "istiod"
XDS_PORT = 15012  # istiod's xDS and CA port, which every sidecar calls
# The port istiod's sidecar-injection and validation webhooks listen on: the istiod chart's
# Service maps 443 to it, so the GKE control plane calls the nodes on 15017 (Istio docs,
# "Platform setup: Google Kubernetes Engine", private clusters).
WEBHOOK_PORT = 15017
# An Istio Gateway's annotation naming the TLS credentials (Secrets) it serves that the stack
# does not declare: documented operator prerequisites, which the policy pack accepts as such.
EXTERNAL_CREDENTIALS = "signal-platform/external-credentials"


def principal(namespace: str, service_account: str) -> str:
    """The SPIFFE identity (without `spiffe://`) Istio gives a Kubernetes service account."""
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


GATEWAY_PRINCIPAL = principal(GATEWAY_NAMESPACE, GATEWAY)


@dataclass(frozen=True)
class MeshService:
    """A service of the workload namespace as the mesh sees it."""

    name: str  # the Service, its pods' `app` label and its Kubernetes service account
    port: int  # the gRPC port callers use
    callers: tuple[str, ...]  # SPIFFE principals allowed to call it; nobody else may
    public: bool = False  # routed from the ingress gateway
    # A headless Service naming each pod (a StatefulSet's): callers address one replica
    # (a shard's owner) by its pod's name under it.
    replicas: str | None = None

    @property
    def host(self) -> str:
        return f"{self.name}.{WORKLOAD_NAMESPACE}.svc.cluster.local"

    @property
    def replicas_host(self) -> str | None:
        """The headless Service's name: a pod is ``<pod>.<replicas_host>``, and the mesh
        routes a call to that name to that pod through the headless Service's cluster."""
        if self.replicas is None:
            return None
        return f"{self.replicas}.{WORKLOAD_NAMESPACE}.svc.cluster.local"


def collector(tracing_collector: str) -> tuple[str, str, int]:
    """`<service>.<namespace>.svc.cluster.local:<port>` → (host, namespace, port)."""
    host, port = tracing_collector.rsplit(":", 1)
    return host, host.split(".")[1], int(port)


def baseline_policies(tracing_collector: str | None) -> dict[str, dict[str, Any]]:
    """The NetworkPolicies every mesh namespace starts from: deny all, then DNS, the mesh
    (istiod), Workload Identity (metadata server), Google APIs over Private Google Access and,
    where one is configured, the trace collector."""
    to_collector = []
    if tracing_collector is not None:
        _, namespace, port = collector(tracing_collector)
        to_collector = [{"to": [namespace_peer(namespace)], "ports": tcp(port)}]
    return {
        "default-deny": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "allow-dns": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [namespace_peer("kube-system")],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ],
        },
        "allow-platform": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{**namespace_peer(ISTIO_NAMESPACE), **app_peer(ISTIOD)}],
                    "ports": tcp(XDS_PORT),
                },
                *(
                    {"to": [{"ipBlock": {"cidr": cidr}}], "ports": tcp(metadata_port)}
                    for cidr, metadata_port in METADATA_SERVER
                ),
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}],
                    "ports": tcp(443),
                },
                *to_collector,
            ],
        },
    }


def connection_pool(pool: ConnectionPool) -> dict[str, Any]:
    """A DestinationRule's persistent HTTP/2 connection pool."""
    return {
        "tcp": {
            "maxConnections": pool.max_connections,
            "connectTimeout": pool.connect_timeout,
            "tcpKeepalive": {"time": pool.tcp_keepalive, "interval": "75s"},
        },
        "http": {
            "h2UpgradePolicy": "UPGRADE",
            "http2MaxRequests": pool.http2_max_requests,
            "http1MaxPendingRequests": pool.http1_max_pending_requests,
            "maxRequestsPerConnection": pool.max_requests_per_connection,
            "idleTimeout": pool.idle_timeout,
        },
    }


def default_deny(
    resource: str, namespace: str, labels: Mapping[str, str], opts: pulumi.ResourceOptions
) -> k8s.apiextensions.CustomResource:
    """The namespace's default-deny AuthorizationPolicy: an ALLOW policy with no rules matches
    nothing, so every request no other ALLOW policy matches is denied."""
    return k8s.apiextensions.CustomResource(
        resource,
        api_version="security.istio.io/v1",
        kind="AuthorizationPolicy",
        metadata={"name": "default-deny", "namespace": namespace, "labels": dict(labels)},
        spec={},
        opts=opts,
    )


class Mesh(pulumi.ComponentResource):
    """Istio on one cluster, the workload namespace, and the mesh policy of its services."""

    def __init__(
        self,
        name: str,
        settings: MeshSettings,
        cluster: str,
        services: Sequence[MeshService],
        labels: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:Mesh", name, None, opts)
        meta = k8s_labels(labels)

        def after(*resources: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, depends_on=list(resources))

        # ---- namespaces: Istio's own, the gateway's, and the workloads' (injected, restricted)
        self.namespaces = {
            ISTIO_NAMESPACE: self._namespace(f"{name}-ns-istio", ISTIO_NAMESPACE, meta, {}),
            GATEWAY_NAMESPACE: self._namespace(
                f"{name}-ns-ingress", GATEWAY_NAMESPACE, meta, {"istio-injection": "enabled"}
            ),
            WORKLOAD_NAMESPACE: self._namespace(
                f"{name}-ns-{WORKLOAD_NAMESPACE}",
                WORKLOAD_NAMESPACE,
                meta,
                {
                    "istio-injection": "enabled",
                    # Istio CNI sets up redirection: no NET_ADMIN init container in pods.
                    "pod-security.kubernetes.io/enforce": "restricted",
                },
            ),
        }
        self.namespace = WORKLOAD_NAMESPACE

        # ---- control plane, from Istio's Helm charts at the pinned version
        tracing: dict[str, Any] = {"enableTracing": False}
        if settings.tracing_collector is not None:
            host, _, port = collector(settings.tracing_collector)
            tracing = {
                "enableTracing": True,
                "extensionProviders": [
                    {"name": TRACING_PROVIDER, "opentelemetry": {"service": host, "port": port}}
                ],
                "defaultProviders": {"tracing": [TRACING_PROVIDER]},
            }
        self.base = self._chart(
            f"{name}-istio-base",
            "istio-base",
            "base",
            ISTIO_NAMESPACE,
            settings,
            {"defaultRevision": "default"},
            after(self.namespaces[ISTIO_NAMESPACE]),
        )
        self.cni = self._chart(
            f"{name}-istio-cni",
            "istio-cni",
            "cni",
            "kube-system",
            settings,
            {
                "global": {"platform": "gke"},
                "resources": settings.cni_resources.model_dump(),
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            after(self.base),
        )
        self.istiod = self._chart(
            f"{name}-istiod",
            ISTIOD,
            ISTIOD,
            ISTIO_NAMESPACE,
            settings,
            {
                "global": {
                    "platform": "gke",
                    # Names this cluster in the proxies' telemetry; one mesh per cluster.
                    "multiCluster": {"clusterName": cluster},
                    "logAsJson": True,
                    "proxy": {"resources": settings.proxy_resources.model_dump()},
                },
                "pilot": {
                    "replicaCount": settings.istiod_replicas,
                    "autoscaleMin": settings.istiod_replicas,
                    "autoscaleMax": settings.istiod_replicas * 3,
                    "cni": {"enabled": True},
                    "resources": settings.istiod_resources.model_dump(),
                },
                "meshConfig": {
                    "trustDomain": TRUST_DOMAIN,
                    "accessLogFile": "/dev/stdout",
                    "accessLogEncoding": "JSON",
                    "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
                    "localityLbSetting": {"enabled": True},
                    "defaultConfig": {
                        "holdApplicationUntilProxyStarts": True,
                        "terminationDrainDuration": PROXY_DRAIN,
                    },
                    **tracing,
                },
            },
            after(self.base, self.cni),
        )
        self.gateway = self._chart(
            f"{name}-istio-gateway",
            GATEWAY,
            "gateway",
            GATEWAY_NAMESPACE,
            settings,
            {
                "name": GATEWAY,
                "labels": GATEWAY_LABELS,
                # Internal passthrough load balancer: the API is reachable from the VPC only.
                "service": {
                    "type": "LoadBalancer",
                    "annotations": {"networking.gke.io/load-balancer-type": "Internal"},
                },
                "autoscaling": {
                    "enabled": True,
                    "minReplicas": settings.gateway_replicas,
                    "maxReplicas": settings.gateway_replicas * 5,
                    "targetCPUUtilizationPercentage": 70,
                },
                "resources": settings.gateway_resources.model_dump(),
                # Setting the pod's securityContext replaces the chart's fallback, which only
                # sets the sysctl that lets the gateway bind 80/443 unprivileged: keep it.
                "securityContext": {
                    "seccompProfile": {"type": "RuntimeDefault"},
                    "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                },
                "podDisruptionBudget": {"maxUnavailable": 1},
            },
            after(self.istiod, self.namespaces[GATEWAY_NAMESPACE]),
        )
        istio_ready = after(self.base, self.istiod)

        def in_namespace(namespace: str) -> pulumi.ResourceOptions:
            """A mesh object of `namespace`: after istiod (its CRDs and webhooks) and after the
            namespace itself (an object sent before it exists is refused)."""
            return after(self.base, self.istiod, self.namespaces[namespace])

        # ---- mTLS everywhere: mesh-wide STRICT, restated for the workload namespace
        self.peer_authentication = {
            namespace: k8s.apiextensions.CustomResource(
                f"{name}-mtls-{namespace}",
                api_version="security.istio.io/v1",
                kind="PeerAuthentication",
                metadata={"name": "default", "namespace": namespace, "labels": meta},
                spec={"mtls": {"mode": "STRICT"}},
                opts=in_namespace(namespace),
            )
            for namespace in (ISTIO_NAMESPACE, *WORKLOAD_NAMESPACES)
        }

        # ---- authorization: nothing is allowed unless a policy below allows it
        self.authorization: dict[str, k8s.apiextensions.CustomResource] = {}
        for namespace in WORKLOAD_NAMESPACES:
            self.authorization[f"{namespace}/default-deny"] = default_deny(
                f"{name}-deny-{namespace}", namespace, meta, in_namespace(namespace)
            )
        for service in services:
            self.authorization[f"{WORKLOAD_NAMESPACE}/{service.name}"] = (
                k8s.apiextensions.CustomResource(
                    f"{name}-allow-{service.name}",
                    api_version="security.istio.io/v1",
                    kind="AuthorizationPolicy",
                    metadata={
                        "name": f"{service.name}-callers",
                        "namespace": WORKLOAD_NAMESPACE,
                        "labels": meta,
                    },
                    spec={
                        "selector": {"matchLabels": {"app": service.name}},
                        "action": "ALLOW",
                        "rules": [
                            {
                                "from": [{"source": {"principals": list(service.callers)}}],
                                "to": [{"operation": {"ports": [str(service.port)]}}],
                            }
                        ],
                    },
                    opts=in_namespace(WORKLOAD_NAMESPACE),
                )
            )

        # ---- traffic: persistent HTTP/2 pools, outlier detection, locality within the region
        pool, outliers = settings.connection_pool, settings.outlier_detection
        self.destination_rules = {
            service.name: k8s.apiextensions.CustomResource(
                f"{name}-dr-{service.name}",
                api_version="networking.istio.io/v1",
                kind="DestinationRule",
                metadata={"name": service.name, "namespace": WORKLOAD_NAMESPACE, "labels": meta},
                spec={
                    "host": service.host,
                    "trafficPolicy": {
                        "connectionPool": connection_pool(pool),
                        # Ejects failing endpoints; failover between zones relies on it.
                        "outlierDetection": {
                            "consecutive5xxErrors": outliers.consecutive_errors,
                            "interval": outliers.interval,
                            "baseEjectionTime": outliers.base_ejection_time,
                            "maxEjectionPercent": outliers.max_ejection_percent,
                        },
                        # Same zone first, the region's other zones when it fails.
                        "loadBalancer": {
                            "simple": "LEAST_REQUEST",
                            "localityLbSetting": {"enabled": True},
                        },
                        "tls": {"mode": "ISTIO_MUTUAL"},
                    },
                },
                opts=in_namespace(WORKLOAD_NAMESPACE),
            )
            for service in services
        }
        # One named replica (a shard's owner): the same pools and mTLS, no balancing (the
        # caller chose the pod) and no ejection (there is no other endpoint to prefer).
        for service in services:
            if service.replicas is not None and service.replicas_host is not None:
                self.destination_rules[service.replicas] = k8s.apiextensions.CustomResource(
                    f"{name}-dr-{service.replicas}",
                    api_version="networking.istio.io/v1",
                    kind="DestinationRule",
                    metadata={
                        "name": service.replicas,
                        "namespace": WORKLOAD_NAMESPACE,
                        "labels": meta,
                    },
                    spec={
                        "host": service.replicas_host,
                        "trafficPolicy": {
                            "connectionPool": connection_pool(pool),
                            "tls": {"mode": "ISTIO_MUTUAL"},
                        },
                    },
                    opts=in_namespace(WORKLOAD_NAMESPACE),
                )

        api = settings.api
        self.api_gateway = k8s.apiextensions.CustomResource(
            f"{name}-api-gateway",
            api_version="networking.istio.io/v1",
            kind="Gateway",
            metadata={
                "name": API_GATEWAY,
                "namespace": GATEWAY_NAMESPACE,
                "labels": meta,
                # The TLS Secret is not the program's: the operator creates it in each cluster
                # from the internal PKI its clients trust (README, "Deploying for real"). Named
                # here so the policy pack knows it is expected, not forgotten.
                "annotations": {EXTERNAL_CREDENTIALS: api.tls_secret},
            },
            spec={
                "selector": {"istio": GATEWAY_LABELS["istio"]},
                "servers": [
                    {
                        "port": {"number": 443, "name": "https-grpc", "protocol": "HTTPS"},
                        "hosts": [api.host],
                        "tls": {
                            "mode": "SIMPLE",
                            "credentialName": api.tls_secret,
                            "minProtocolVersion": "TLSV1_2",
                        },
                    }
                ],
            },
            opts=after(self.gateway),
        )
        self.virtual_services = {
            service.name: k8s.apiextensions.CustomResource(
                f"{name}-vs-{service.name}",
                api_version="networking.istio.io/v1",
                kind="VirtualService",
                metadata={"name": service.name, "namespace": WORKLOAD_NAMESPACE, "labels": meta},
                spec={
                    "hosts": [api.host, service.host],
                    "gateways": [f"{GATEWAY_NAMESPACE}/{API_GATEWAY}", "mesh"],
                    "http": [
                        {
                            "name": "grpc-api",
                            "route": [
                                {
                                    "destination": {
                                        "host": service.host,
                                        "port": {"number": service.port},
                                    }
                                }
                            ],
                            "timeout": api.timeout,
                            "retries": {
                                "attempts": api.retries,
                                "perTryTimeout": api.per_try_timeout,
                                "retryOn": api.retry_on,
                            },
                        }
                    ],
                },
                opts=in_namespace(WORKLOAD_NAMESPACE),
            )
            for service in services
            if service.public
        }

        # Spans go only where a collector is configured (none is deployed by the program).
        self.telemetry: k8s.apiextensions.CustomResource | None = None
        if settings.tracing_collector is not None:
            self.telemetry = k8s.apiextensions.CustomResource(
                f"{name}-telemetry",
                api_version="telemetry.istio.io/v1",
                kind="Telemetry",
                metadata={"name": "mesh-default", "namespace": ISTIO_NAMESPACE, "labels": meta},
                spec={
                    "tracing": [
                        {
                            "providers": [{"name": TRACING_PROVIDER}],
                            "randomSamplingPercentage": settings.trace_sampling_percent,
                        }
                    ]
                },
                opts=istio_ready,
            )
        self.register_outputs({"namespace": self.namespace, "istio": settings.istio_version})

    def _namespace(
        self, resource: str, name: str, meta: Mapping[str, str], extra: Mapping[str, str]
    ) -> k8s.core.v1.Namespace:
        labels = {
            **meta,
            # Istio's control plane and gateway charts meet baseline; workloads meet restricted.
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
            **extra,
        }
        return k8s.core.v1.Namespace(
            resource,
            metadata={"name": name, "labels": labels},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _chart(
        self,
        resource: str,
        release: str,
        chart: str,
        namespace: str,
        settings: MeshSettings,
        values: Mapping[str, object],
        opts: pulumi.ResourceOptions,
    ) -> k8s.helm.v3.Release:
        return k8s.helm.v3.Release(
            resource,
            name=release,
            chart=chart,
            version=settings.istio_version,
            namespace=namespace,
            repository_opts={"repo": settings.chart_repository},
            values=dict(values),
            create_namespace=False,
            atomic=True,
            cleanup_on_fail=True,
            max_history=5,
            timeout=600,
            opts=opts,
        )
