"""Istio rules through the real pack."""

from __future__ import annotations

import pytest

from tests.policies.cases import DELETE, Case, assert_case, bad, mutate, ok
from tests.policies.test_kubernetes import DEPLOYMENT
from tests.policies.test_kubernetes import GOLDEN as DEPLOYMENT_GOLDEN
from tools.analyzer import PolicyPackProcess

PEER = "kubernetes:security.istio.io/v1:PeerAuthentication"
PEER_BETA = "kubernetes:security.istio.io/v1beta1:PeerAuthentication"
AUTHZ = "kubernetes:security.istio.io/v1:AuthorizationPolicy"
RULE = "kubernetes:networking.istio.io/v1:DestinationRule"

LEVELS = {
    "istio-peer-authentication-strict": "mandatory",
    "istio-peer-authentication-ports": "mandatory",
    "istio-authorization-positive-match": "mandatory",
    "istio-destination-rule-tls": "mandatory",
    "istio-sidecar-injection": "mandatory",
}

STRICT = {
    "apiVersion": "security.istio.io/v1",
    "kind": "PeerAuthentication",
    "metadata": {"name": "default", "namespace": "signal"},
    "spec": {"mtls": {"mode": "STRICT"}},
}
ALLOW_GATEWAY = {
    "apiVersion": "security.istio.io/v1",
    "kind": "AuthorizationPolicy",
    "metadata": {"name": "signal-from-gateway", "namespace": "signal"},
    "spec": {
        "selector": {"matchLabels": {"app": "signal"}},
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": ["cluster.local/ns/istio-ingress/sa/gateway"]}}],
                "to": [{"operation": {"methods": ["POST"], "paths": ["/signal.v1.Signals/*"]}}],
            }
        ],
    },
}
MUTUAL = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "signal", "namespace": "signal"},
    "spec": {
        "host": "signal.signal.svc.cluster.local",
        "trafficPolicy": {
            "tls": {"mode": "ISTIO_MUTUAL"},
            "connectionPool": {"http": {"http2MaxRequests": 1000}},
        },
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
    },
}
TEMPLATE_ANNOTATION = ("spec", "template", "metadata", "annotations", "sidecar.istio.io/inject")

CASES = [
    ok("istio-peer-authentication-strict", PEER, STRICT),
    ok(
        "istio-peer-authentication-strict",
        PEER_BETA,
        mutate(STRICT, {"apiVersion": "security.istio.io/v1beta1"}),
        "v1beta1",
    ),
    bad(
        "istio-peer-authentication-strict",
        PEER,
        mutate(STRICT, {"spec.mtls.mode": "PERMISSIVE"}),
        "permissive",
    ),
    bad(
        "istio-peer-authentication-strict",
        PEER,
        mutate(STRICT, {"spec": {}}),
        "unset",
        message="unset",
    ),
    ok("istio-peer-authentication-ports", PEER, STRICT),
    ok(
        "istio-peer-authentication-ports",
        PEER,
        mutate(STRICT, {"spec.portLevelMtls": {"8080": {"mode": "STRICT"}}}),
        "strict-port",
    ),
    bad(
        "istio-peer-authentication-ports",
        PEER,
        mutate(
            STRICT,
            {"spec.portLevelMtls": {"9090": {"mode": "DISABLE"}, "15021": {"mode": "PERMISSIVE"}}},
        ),
        "exceptions",
        expect=2,
    ),
    ok("istio-authorization-positive-match", AUTHZ, ALLOW_GATEWAY),
    ok(
        "istio-authorization-positive-match",
        AUTHZ,
        mutate(ALLOW_GATEWAY, {"spec": {}}),
        "allow-nothing",
    ),
    ok(
        "istio-authorization-positive-match",
        AUTHZ,
        mutate(
            ALLOW_GATEWAY,
            {
                "spec": {
                    "action": "DENY",
                    "rules": [{"from": [{"source": {"notNamespaces": ["signal"]}}]}],
                }
            },
        ),
        "deny-with-negative-match",
    ),
    bad(
        "istio-authorization-positive-match",
        AUTHZ,
        mutate(
            ALLOW_GATEWAY,
            {("spec", "rules", 0, "from", 0, "source"): {"notNamespaces": ["untrusted"]}},
        ),
        "negative-source",
        expect=2,
        message="ALLOW must match positively",
    ),
    bad(
        "istio-authorization-positive-match",
        AUTHZ,
        mutate(ALLOW_GATEWAY, {("spec", "rules", 0, "from"): DELETE}),
        "any-caller",
        message="allows any caller",
    ),
    bad(
        "istio-authorization-positive-match",
        AUTHZ,
        mutate(
            ALLOW_GATEWAY, {("spec", "rules", 0, "to", 0, "operation"): {"notPaths": ["/admin"]}}
        ),
        "negative-operation",
    ),
    bad(
        "istio-authorization-positive-match",
        AUTHZ,
        mutate(ALLOW_GATEWAY, {("spec", "rules", 0, "from", 0, "source", "principals"): ["*"]}),
        "wildcard",
        expect=2,
    ),
    ok("istio-destination-rule-tls", RULE, MUTUAL),
    ok(
        "istio-destination-rule-tls",
        RULE,
        mutate(
            MUTUAL,
            {"spec.host": "api.exchange.example.com", "spec.trafficPolicy.tls.mode": "SIMPLE"},
        ),
        "external-simple",
    ),
    bad(
        "istio-destination-rule-tls",
        RULE,
        mutate(MUTUAL, {"spec.trafficPolicy.tls.mode": "DISABLE"}),
        "disable",
    ),
    bad(
        "istio-destination-rule-tls",
        RULE,
        mutate(
            MUTUAL,
            {
                ("spec", "subsets", 0, "trafficPolicy"): {
                    "portLevelSettings": [{"port": {"number": 6379}, "tls": {"mode": "DISABLE"}}]
                }
            },
        ),
        "subset-port-disable",
        message="spec.subsets[0].trafficPolicy.portLevelSettings[0].tls.mode",
    ),
    bad(
        "istio-destination-rule-tls",
        RULE,
        mutate(MUTUAL, {"spec.trafficPolicy.tls.mode": "MUTUAL"}),
        "in-mesh-mutual",
        message="use ISTIO_MUTUAL",
    ),
    ok("istio-sidecar-injection", DEPLOYMENT, DEPLOYMENT_GOLDEN),
    bad(
        "istio-sidecar-injection",
        DEPLOYMENT,
        mutate(DEPLOYMENT_GOLDEN, {TEMPLATE_ANNOTATION: "false"}),
        "opt-out-annotation",
    ),
    bad(
        "istio-sidecar-injection",
        DEPLOYMENT,
        mutate(
            DEPLOYMENT_GOLDEN,
            {("spec", "template", "metadata", "labels", "sidecar.istio.io/inject"): "false"},
        ),
        "opt-out-label",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_istio_rule(pack: PolicyPackProcess, case: Case) -> None:
    assert_case(pack, case, LEVELS)
