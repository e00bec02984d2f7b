"""Istio rules: mTLS everywhere and safe authorization patterns (Istio security best practices)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rules.kit import MANDATORY, Resource, Rules
from rules.kube_objects import is_kind, is_workload, pod_metadata
from rules.values import as_dict, as_list, get, is_unknown, shown

RULES = Rules("istio")
SECURITY = "security.istio.io"
NETWORKING = "networking.istio.io"
_NEGATIVE_SOURCE = (
    "notPrincipals",
    "notNamespaces",
    "notRequestPrincipals",
    "notIpBlocks",
    "notRemoteIpBlocks",
)
_NEGATIVE_OPERATION = ("notHosts", "notPorts", "notMethods", "notPaths")
_POSITIVE_IDENTITY = ("principals", "namespaces", "requestPrincipals")


def is_peer_authentication(token: str) -> bool:
    return is_kind(token, SECURITY, "PeerAuthentication")


def is_authorization_policy(token: str) -> bool:
    return is_kind(token, SECURITY, "AuthorizationPolicy")


def is_destination_rule(token: str) -> bool:
    return is_kind(token, NETWORKING, "DestinationRule")


@RULES.resource(
    "istio-peer-authentication-strict",
    level=MANDATORY,
    description="PeerAuthentication policies set mTLS mode STRICT.",
    source=("Istio security best practices, 'Mutual TLS'; Istio docs, 'Authentication policy'."),
    types=is_peer_authentication,
)
def peer_authentication_strict(r: Resource) -> Iterator[str]:
    mode = get(r.props, "spec", "mtls", "mode")
    if not is_unknown(mode) and mode != "STRICT":
        yield f"spec.mtls.mode must be STRICT (got {shown(mode)}; unset inherits PERMISSIVE from the mesh default)"


@RULES.resource(
    "istio-peer-authentication-ports",
    level=MANDATORY,
    description="PeerAuthentication has no PERMISSIVE or DISABLE port-level overrides.",
    source="Istio security best practices, 'Mutual TLS'.",
    types=is_peer_authentication,
)
def peer_authentication_ports(r: Resource) -> Iterator[str]:
    for port, setting in sorted(as_dict(get(r.props, "spec", "portLevelMtls")).items()):
        mode = get(setting, "mode")
        if mode in ("PERMISSIVE", "DISABLE"):
            yield f"spec.portLevelMtls[{port}].mode is {mode}: plaintext is accepted on that port"


@RULES.resource(
    "istio-authorization-positive-match",
    level=MANDATORY,
    description=(
        "ALLOW AuthorizationPolicies match positive principals or namespaces, never "
        "negations or wildcards."
    ),
    source=(
        "Istio security best practices, 'Use ALLOW-with-positive-matching and "
        "DENY-with-negative-match patterns'."
    ),
    types=is_authorization_policy,
)
def authorization_positive_match(r: Resource) -> Iterator[str]:
    spec = get(r.props, "spec")
    if is_unknown(spec):
        return
    action = get(spec, "action", default="ALLOW")
    if action != "ALLOW":
        return
    for index, rule in enumerate(as_list(get(spec, "rules"))):
        sources = get(rule, "from")
        # An unknown rule or source may well name principals: only judge what is known.
        identified = is_unknown(sources) or any(
            is_unknown(get(e, "source")) for e in as_list(sources)
        )
        for source_index, entry in enumerate(as_list(sources)):
            source = as_dict(get(entry, "source"))
            for field in _NEGATIVE_SOURCE:
                if field in source:
                    yield f"rules[{index}].from[{source_index}].source.{field}: ALLOW must match positively"
            identities = [v for f in _POSITIVE_IDENTITY for v in as_list(source.get(f))]
            if "*" in identities:
                yield f"rules[{index}].from[{source_index}]: '*' matches every identity"
            identified = identified or any(v != "*" for v in identities)
        for to_index, entry in enumerate(as_list(get(rule, "to"))):
            operation = as_dict(get(entry, "operation"))
            for field in _NEGATIVE_OPERATION:
                if field in operation:
                    yield f"rules[{index}].to[{to_index}].operation.{field}: ALLOW must match positively"
        if not identified:
            yield f"rules[{index}] allows any caller: match source principals or namespaces"


def _tls_modes(policy: Any, where: str) -> Iterator[tuple[str, Any]]:
    yield f"{where}.tls.mode", get(policy, "tls", "mode")
    for index, port in enumerate(as_list(get(policy, "portLevelSettings"))):
        yield f"{where}.portLevelSettings[{index}].tls.mode", get(port, "tls", "mode")


@RULES.resource(
    "istio-destination-rule-tls",
    level=MANDATORY,
    description="DestinationRules never disable mesh TLS (in-mesh hosts keep ISTIO_MUTUAL).",
    source=("Istio security best practices; Istio docs, 'DestinationRule ClientTLSSettings'."),
    types=is_destination_rule,
)
def destination_rule_tls(r: Resource) -> Iterator[str]:
    spec = as_dict(get(r.props, "spec"))
    host = get(spec, "host")
    in_mesh = isinstance(host, str) and (host.endswith(".svc.cluster.local") or "." not in host)
    policies = [("spec.trafficPolicy", get(spec, "trafficPolicy"))]
    for index, subset in enumerate(as_list(get(spec, "subsets"))):
        policies.append((f"spec.subsets[{index}].trafficPolicy", get(subset, "trafficPolicy")))
    for where, policy in policies:
        for path, mode in _tls_modes(policy, where):
            if mode == "DISABLE":
                yield f"{path} is DISABLE: traffic to {host} leaves the mesh's mTLS"
            elif in_mesh and mode in ("SIMPLE", "MUTUAL"):
                yield f"{path} is {mode} for in-mesh host {host}: use ISTIO_MUTUAL"


@RULES.resource(
    "istio-sidecar-injection",
    level=MANDATORY,
    description="Workloads do not opt out of sidecar injection.",
    source="Istio docs, 'Installing the sidecar: controlling the injection policy'.",
    types=is_workload,
)
def sidecar_injection_enabled(r: Resource) -> Iterator[str]:
    metadata = pod_metadata(r.type, r.props)
    for source in ("annotations", "labels"):
        value = get(metadata, source, "sidecar.istio.io/inject")
        if isinstance(value, str) and value.lower() == "false":
            yield f"pod template {source} sidecar.istio.io/inject=false opts out of the mesh (no mTLS)"
