"""Reachability rules through the real pack: a golden GKE cluster whose metrics adapter admits
the konnectivity agents, whose Istio gateway's credential is declared, whose config names only
declared in-cluster services, and whose cross-region locality setting has a shared root and
remote secrets; one change per violation."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.policies.cases import (
    DELETE,
    K8S_PROVIDER,
    UNKNOWN,
    StackCase,
    assert_stack_case,
    mutate,
    resource,
)
from tests.policies.cases import (
    stack_case as case,
)
from tools.analyzer import AnalyzerResource, PolicyPackProcess

LEVELS = {
    "apply-webhook-backend-reachable": "mandatory",
    "apply-gateway-credential": "mandatory",
    "apply-in-cluster-endpoint": "mandatory",
    "apply-mesh-multicluster": "mandatory",
}

GKE = "gcp:container/cluster:Cluster"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
API_SERVICE = "kubernetes:apiregistration.k8s.io/v1:APIService"
WEBHOOK = "kubernetes:admissionregistration.k8s.io/v1:ValidatingWebhookConfiguration"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
GATEWAY = "kubernetes:networking.istio.io/v1:Gateway"
DESTINATION_RULE = "kubernetes:networking.istio.io/v1:DestinationRule"
CERTIFICATE = "kubernetes:cert-manager.io/v1:Certificate"
HELM = "kubernetes:helm.sh/v3:Release"

CLUSTER = resource(GKE, {"name": "c1", "location": "us-central1"}, "cluster")
PROVIDER = dataclasses.replace(
    resource(
        K8S_PROVIDER,
        {"kubeconfig": "apiVersion: v1", "clusterIdentifier": UNKNOWN},
        "k8s",
        dependencies=[CLUSTER.urn],
    ),
    property_dependencies={"clusterIdentifier": (CLUSTER.urn,)},
)
ON = f"{PROVIDER.urn}::provider-id"
# A cluster the stack does not create: no telling whether its API server uses konnectivity.
ELSEWHERE = resource(K8S_PROVIDER, {"kubeconfig": "apiVersion: v1"}, "elsewhere")
ON_ELSEWHERE = f"{ELSEWHERE.urn}::provider-id"


def on(
    type_: str, inputs: dict[str, Any], name: str, provider: str = ON, **kw: Any
) -> AnalyzerResource:
    return resource(type_, inputs, name, provider=provider, **kw)


# ------------------------------------------------------------------------------ the adapter

ADAPTER = {
    "metadata": {"name": "adapter", "namespace": "custom-metrics"},
    "spec": {
        "selector": {"matchLabels": {"app": "adapter"}},
        "template": {
            "metadata": {"labels": {"app": "adapter", "tier": "metrics"}},
            "spec": {
                "containers": [
                    {
                        "name": "adapter",
                        "image": "gcr.io/gke-release/adapter:v1",
                        "ports": [{"name": "https", "containerPort": 6443}],
                    }
                ]
            },
        },
    },
}
ADAPTER_SERVICE = {
    "metadata": {"name": "adapter", "namespace": "custom-metrics"},
    "spec": {"selector": {"app": "adapter"}, "ports": [{"port": 443, "targetPort": 6443}]},
}
API = {
    "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
    "spec": {"service": {"name": "adapter", "namespace": "custom-metrics"}},
}
DEFAULT_DENY = {
    "metadata": {"name": "default-deny", "namespace": "custom-metrics"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
}
KONNECTIVITY = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "konnectivity-agent"}},
}
API_SERVER = {
    "metadata": {"name": "api-server", "namespace": "custom-metrics"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "adapter"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"ipBlock": {"cidr": "172.16.0.0/28"}}, KONNECTIVITY],
                "ports": [{"port": 6443, "protocol": "TCP"}],
            }
        ],
    },
}

# ------------------------------------------------------------------------------ the gateway

GATEWAY_WORKLOAD = {
    "metadata": {"name": "ingressgateway", "namespace": "istio-ingress"},
    "spec": {
        "selector": {"matchLabels": {"istio": "ingressgateway"}},
        "template": {
            "metadata": {"labels": {"istio": "ingressgateway"}},
            "spec": {
                "containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.30.5"}]
            },
        },
    },
}
GATEWAY_INPUTS = {
    "metadata": {"name": "api", "namespace": "istio-ingress"},
    "spec": {
        "selector": {"istio": "ingressgateway"},
        "servers": [
            {
                "hosts": ["api.internal"],
                "port": {"name": "https", "number": 443, "protocol": "HTTPS"},
                "tls": {"mode": "SIMPLE", "credentialName": "api-tls"},
            }
        ],
    },
}
TLS_SECRET = {
    "metadata": {"name": "api-tls", "namespace": "istio-ingress"},
    "type": "kubernetes.io/tls",
}

# ------------------------------------------------------------------------------ endpoints

COLLECTOR = {
    "metadata": {"name": "collector", "namespace": "observability"},
    "spec": {"selector": {"app": "collector"}, "ports": [{"name": "otlp", "port": 4317}]},
}
REPLICAS = {
    "metadata": {"name": "replicas", "namespace": "apps"},
    "spec": {"clusterIP": "None", "selector": {"app": "service"}, "ports": [{"port": 50051}]},
}
SERVICE_APP = {
    "metadata": {"name": "service", "namespace": "apps"},
    "spec": {
        "selector": {"matchLabels": {"app": "service"}},
        "template": {
            "metadata": {"labels": {"app": "service"}},
            "spec": {
                "containers": [
                    {
                        "name": "service",
                        "image": "gcr.io/p/service:1",
                        "args": [
                            "--advertise",
                            "$(POD_NAME).replicas.apps.svc.cluster.local:50051",
                        ],
                        "env": [
                            {
                                "name": "OTLP",
                                "value": "http://collector.observability.svc.cluster.local:4317",
                            }
                        ],
                    }
                ]
            },
        },
    },
}
MESH_CONFIG = {
    "extensionProviders": [
        {
            "name": "otel",
            "opentelemetry": {"service": "collector.observability.svc.cluster.local", "port": 4317},
        }
    ],
    "localityLbSetting": {"enabled": True},
}
ISTIOD = {"chart": "istiod", "namespace": "istio-system", "values": {"meshConfig": MESH_CONFIG}}

# ------------------------------------------------------------------------------ multi-cluster

FAILOVER = {
    "enabled": True,
    "failover": [{"from": "us-central1", "to": "us-east4"}],
}
DR = {
    "metadata": {"name": "service", "namespace": "apps"},
    "spec": {
        "host": "service.apps.svc.cluster.local",
        "trafficPolicy": {"loadBalancer": {"localityLbSetting": FAILOVER}},
    },
}
CACERTS = {"metadata": {"name": "cacerts", "namespace": "istio-system"}}
REMOTE = {
    "metadata": {
        "name": "istio-remote-secret-c2",
        "namespace": "istio-system",
        "labels": {"istio/multiCluster": "true"},
    }
}


def certificate(name: str, namespace: str, secret: str) -> AnalyzerResource:
    """A cert-manager Certificate that writes `secret`."""
    inputs = {"metadata": {"name": name, "namespace": namespace}, "spec": {"secretName": secret}}
    return on(CERTIFICATE, inputs, name)


def golden(**replace: AnalyzerResource | None) -> tuple[AnalyzerResource, ...]:
    parts: dict[str, AnalyzerResource | None] = {
        "cluster": CLUSTER,
        "provider": PROVIDER,
        "elsewhere": ELSEWHERE,
        "adapter": on(DEPLOYMENT, ADAPTER, "adapter"),
        "adapter-service": on(SERVICE, ADAPTER_SERVICE, "adapter-service"),
        "api": on(API_SERVICE, API, "api"),
        "default-deny": on(NETPOL, DEFAULT_DENY, "default-deny"),
        "api-server": on(NETPOL, API_SERVER, "api-server"),
        "gateway-workload": on(DEPLOYMENT, GATEWAY_WORKLOAD, "ingressgateway"),
        "gateway": on(GATEWAY, GATEWAY_INPUTS, "gateway"),
        "tls": on(SECRET, TLS_SECRET, "api-tls"),
        "collector": on(SERVICE, COLLECTOR, "collector"),
        "replicas": on(SERVICE, REPLICAS, "replicas"),
        "service": on(DEPLOYMENT, SERVICE_APP, "service"),
        "istiod": on(HELM, ISTIOD, "istiod"),
        "dr": on(DESTINATION_RULE, DR, "dr"),
        "cacerts": on(SECRET, CACERTS, "cacerts"),
        "remote": on(SECRET, REMOTE, "remote-c2"),
    }
    parts.update(replace)
    return tuple(r for r in parts.values() if r is not None)


def api_server(ingress: list[Any]) -> AnalyzerResource:
    return on(NETPOL, mutate(API_SERVER, {"spec.ingress": ingress}), "api-server")


def with_env(value: str) -> AnalyzerResource:
    env = [{"name": "OTLP", "value": value}]
    return on(
        DEPLOYMENT, mutate(SERVICE_APP, {"spec.template.spec.containers.0.env": env}), "service"
    )


API_URN = resource(API_SERVICE, API, "api").urn
GATEWAY_URN = resource(GATEWAY, GATEWAY_INPUTS, "gateway").urn
CONTROL_PLANE_ONLY = [{"from": [{"ipBlock": {"cidr": "172.16.0.0/28"}}], "ports": [{"port": 6443}]}]

STACK_CASES = [
    *[case(policy, "golden", golden()) for policy in LEVELS],
    # ---- apply-webhook-backend-reachable
    case(
        "apply-webhook-backend-reachable",
        "control-plane-range-only",
        golden(**{"api-server": api_server(CONTROL_PLANE_ONLY)}),
        1,
        urns=(API_URN,),
        message="admit no konnectivity agent",
    ),
    case(
        "apply-webhook-backend-reachable",
        "agents-on-another-port",
        golden(**{"api-server": api_server([{"from": [KONNECTIVITY], "ports": [{"port": 443}]}])}),
        1,
    ),
    case(
        "apply-webhook-backend-reachable",
        "agents-admitted-on-the-named-port",
        golden(
            **{"api-server": api_server([{"from": [KONNECTIVITY], "ports": [{"port": "https"}]}])}
        ),
    ),
    case(
        "apply-webhook-backend-reachable",
        "agents-of-any-namespace",
        golden(
            **{
                "api-server": api_server(
                    [
                        {
                            "from": [{**KONNECTIVITY, "namespaceSelector": {}}],
                            "ports": [{"port": 6443}],
                        }
                    ]
                )
            }
        ),
    ),
    case(
        "apply-webhook-backend-reachable",
        "pods-of-the-policy-namespace-only",
        golden(
            **{
                "api-server": api_server(
                    [
                        {
                            "from": [{"podSelector": KONNECTIVITY["podSelector"]}],
                            "ports": [{"port": 6443}],
                        }
                    ]
                )
            }
        ),
        1,
    ),
    case(
        "apply-webhook-backend-reachable",
        "any-source",
        golden(**{"api-server": api_server([{"ports": [{"port": 6443}]}])}),
    ),
    case(
        "apply-webhook-backend-reachable",
        "nothing-isolates-the-backend",
        golden(**{"api-server": None, "default-deny": None}),
    ),
    case(
        "apply-webhook-backend-reachable",
        "webhook-backend",
        golden(
            **{"api-server": api_server(CONTROL_PLANE_ONLY)},
            webhook=on(
                WEBHOOK,
                {
                    "metadata": {"name": "adapter-check"},
                    "webhooks": [
                        {
                            "name": "check.adapter.io",
                            "clientConfig": {
                                "service": {"name": "adapter", "namespace": "custom-metrics"}
                            },
                        }
                    ],
                },
                "webhook",
            ),
        ),
        2,
        message="webhook check.adapter.io's backend",
    ),
    case(
        "apply-webhook-backend-reachable",
        "cluster-from-elsewhere",
        golden(
            **{
                "api-server": on(
                    NETPOL,
                    mutate(API_SERVER, {"spec.ingress": CONTROL_PLANE_ONLY}),
                    "api-server",
                    ON_ELSEWHERE,
                ),
                "default-deny": on(NETPOL, DEFAULT_DENY, "default-deny", ON_ELSEWHERE),
                "adapter": on(DEPLOYMENT, ADAPTER, "adapter", ON_ELSEWHERE),
                "adapter-service": on(SERVICE, ADAPTER_SERVICE, "adapter-service", ON_ELSEWHERE),
                "api": on(API_SERVICE, API, "api", ON_ELSEWHERE),
            }
        ),
    ),
    # ---- apply-gateway-credential
    case(
        "apply-gateway-credential",
        "credential-not-declared",
        golden(tls=None),
        1,
        urns=(GATEWAY_URN,),
        message="tls.credentialName 'api-tls' names no Secret the stack declares in istio-ingress",
    ),
    case(
        "apply-gateway-credential",
        "secret-in-another-namespace",
        golden(tls=on(SECRET, mutate(TLS_SECRET, {"metadata.namespace": "apps"}), "api-tls")),
        1,
    ),
    case(
        "apply-gateway-credential",
        "secret-on-another-cluster",
        golden(tls=on(SECRET, TLS_SECRET, "api-tls", ON_ELSEWHERE)),
        1,
    ),
    case(
        "apply-gateway-credential",
        "secret-beside-the-gateway-workload",
        golden(
            gateway=on(GATEWAY, mutate(GATEWAY_INPUTS, {"metadata.namespace": "apps"}), "gateway"),
        ),
    ),
    case(
        "apply-gateway-credential",
        "written-by-a-certificate",
        golden(tls=certificate("api", "istio-ingress", "api-tls")),
    ),
    case(
        "apply-gateway-credential",
        "external-by-annotation",
        golden(
            tls=None,
            gateway=on(
                GATEWAY,
                mutate(
                    GATEWAY_INPUTS,
                    {
                        "metadata.annotations": {
                            "signal-platform/external-credentials": "other, api-tls"
                        }
                    },
                ),
                "gateway",
            ),
        ),
    ),
    case(
        "apply-gateway-credential",
        "external-by-config",
        golden(tls=None),
        config={"apply-gateway-credential": {"externalCredentials": ["istio-ingress/api-tls"]}},
    ),
    case(
        "apply-gateway-credential",
        "passthrough-needs-no-credential",
        golden(
            tls=None,
            gateway=on(
                GATEWAY,
                mutate(GATEWAY_INPUTS, {"spec.servers.0.tls": {"mode": "PASSTHROUGH"}}),
                "gateway",
            ),
        ),
    ),
    case(
        "apply-gateway-credential",
        "credential-known-after-the-update",
        golden(
            tls=None,
            gateway=on(
                GATEWAY,
                mutate(GATEWAY_INPUTS, {"spec.servers.0.tls.credentialName": UNKNOWN}),
                "gateway",
            ),
        ),
    ),
    # ---- apply-in-cluster-endpoint
    case(
        "apply-in-cluster-endpoint",
        "collector-not-declared",
        golden(collector=None),
        2,
        message="names collector.observability.svc, but the stack declares no Service collector",
    ),
    case(
        "apply-in-cluster-endpoint",
        "port-the-service-does-not-serve",
        golden(service=with_env("collector.observability.svc:4318")),
        1,
        message="on port 4318, which Service collector does not serve (4317)",
    ),
    case(
        "apply-in-cluster-endpoint",
        "pod-address-under-an-undeclared-headless-service",
        golden(replicas=None),
        1,
        message="names replicas.apps.svc",
    ),
    case(
        "apply-in-cluster-endpoint",
        "configmap-data",
        golden(
            config=on(
                CONFIG_MAP,
                {
                    "metadata": {"name": "service", "namespace": "apps"},
                    "data": {
                        "config.yaml": "otlp_endpoint: tracing.observability.svc.cluster.local:4317\n"
                    },
                },
                "config",
            )
        ),
        1,
        message="data.config.yaml names tracing.observability.svc",
    ),
    case(
        "apply-in-cluster-endpoint",
        "the-clusters-own-api-server",
        golden(service=with_env("https://kubernetes.default.svc:443")),
    ),
    case(
        "apply-in-cluster-endpoint",
        "installed-by-a-chart",
        golden(
            collector=None,
            chart=on(
                HELM, {"chart": "opentelemetry-collector", "namespace": "observability"}, "otel"
            ),
        ),
    ),
    case(
        "apply-in-cluster-endpoint",
        "service-declared-outside-the-stack",
        golden(collector=None, service=with_env("https://kubernetes.default.svc:443")),
        config={"apply-in-cluster-endpoint": {"externalServices": ["collector.observability"]}},
        # Config replaces the defaults: kubernetes.default is no longer listed.
        expect=1,
        message="names kubernetes.default.svc",
    ),
    case(
        "apply-in-cluster-endpoint",
        "no-tracing",
        golden(
            collector=None,
            istiod=on(
                HELM, mutate(ISTIOD, {"values.meshConfig.extensionProviders": DELETE}), "istiod"
            ),
            service=on(
                DEPLOYMENT,
                mutate(SERVICE_APP, {"spec.template.spec.containers.0.env": DELETE}),
                "service",
            ),
        ),
    ),
    # ---- apply-mesh-multicluster
    case(
        "apply-mesh-multicluster",
        "no-shared-root",
        golden(cacerts=None),
        1,
        message="names us-east4, but the cluster has no a shared root (cacerts in istio-system)",
    ),
    case(
        "apply-mesh-multicluster",
        "root-written-by-a-certificate",
        golden(cacerts=certificate("mesh-ca", "istio-system", "cacerts")),
    ),
    case(
        "apply-mesh-multicluster",
        "no-remote-secret",
        golden(remote=None),
        1,
        message="remote secrets for 1 peer cluster(s), 0 declared",
    ),
    case(
        "apply-mesh-multicluster",
        "distribute-to-two-peers",
        golden(
            dr=on(
                DESTINATION_RULE,
                mutate(
                    DR,
                    {
                        "spec.trafficPolicy.loadBalancer.localityLbSetting": {
                            "distribute": [
                                {
                                    "from": "us-central1/*",
                                    "to": {
                                        "us-central1/*": 50,
                                        "us-east4/*": 30,
                                        "europe-west4/*": 20,
                                    },
                                }
                            ]
                        }
                    },
                ),
                "dr",
            )
        ),
        1,
        message="names europe-west4, us-east4",
    ),
    case(
        "apply-mesh-multicluster",
        "mesh-wide-failover",
        golden(
            remote=None,
            istiod=on(
                HELM, mutate(ISTIOD, {"values.meshConfig.localityLbSetting": FAILOVER}), "istiod"
            ),
        ),
        2,
    ),
    case(
        "apply-mesh-multicluster",
        "own-region-only",
        golden(
            cacerts=None,
            remote=None,
            dr=on(
                DESTINATION_RULE,
                mutate(
                    DR,
                    {
                        "spec.trafficPolicy.loadBalancer.localityLbSetting": {
                            "distribute": [
                                {"from": "us-central1/*", "to": {"us-central1/us-central1-a": 100}}
                            ]
                        }
                    },
                ),
                "dr",
            ),
        ),
    ),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda c: c.id)
def test_mesh_reach_rule(pack: PolicyPackProcess, case: StackCase) -> None:
    assert_stack_case(pack, case, LEVELS)


def test_the_golden_cluster_reaches_what_it_calls(pack: PolicyPackProcess) -> None:
    analysis = pack.analyze_all(golden())
    assert [v for v in analysis.violations if v.policy in LEVELS] == []
