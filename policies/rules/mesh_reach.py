"""What the control plane and the mesh must reach on a cluster, and whether the stack declares
it: webhook and APIService backends behind NetworkPolicies (GKE's API server calls them from
konnectivity agent pods), the TLS credential of an Istio gateway, the in-cluster endpoints
config values name, and the shared root and remote secrets a multi-cluster locality setting
needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rules.helm_charts import rendered_objects
from rules.kit import MANDATORY, Rules, StackResource, schema, string_list
from rules.kube_objects import containers, kind_of, kube_type, labels_match, namespace_of, pod_spec
from rules.stack_graph import (
    CLUSTER,
    HELM_RELEASE,
    Finding,
    Graph,
    KubeObjects,
    region_of,
    same,
    short,
)
from rules.values import as_dict, as_int, as_list, as_str_map, get, is_unknown

RULES = Rules("apply-order")

ISTIO_NETWORKING = "networking.istio.io"
SERVICE = ("core", "Service")
SECRET = ("core", "Secret")


# ------------------------------------------------------------------------------ backends


@dataclass(frozen=True)
class Backend:
    what: str  # "APIService v1beta1.custom.metrics.k8s.io"
    via: StackResource  # the APIService or webhook configuration
    namespace: Any
    pod_labels: dict[str, Any]
    ports: frozenset[Any]  # the target port: its number and, when known, its name


def _backend_pods(objects: KubeObjects, service: StackResource) -> tuple[dict[str, Any], Any]:
    """The labels of the pods a Service selects, and their pod spec: a workload's template when
    the stack declares one it selects, else the selector's own labels (a subset of the pods')
    and no spec."""
    selector = as_dict(get(service.props, "spec", "selector"))
    namespace = namespace_of(service.props, service.provider_props)
    for workload in objects.objects:
        spec = pod_spec(workload.type, workload.props)
        if workload.provider_urn != service.provider_urn or not spec:
            continue
        if not same(namespace_of(workload.props, workload.provider_props), namespace):
            continue
        labels = as_dict(get(workload.props, "spec", "template", "metadata", "labels"))
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            return labels, spec
    return selector, None


def _target_ports(target: Any, spec: Any) -> frozenset[Any]:
    """A target port as a NetworkPolicy may name it: its number and its container port name."""
    number = as_int(target)
    found = {target if number is None else number}
    for container in containers(spec):
        for port in as_list(get(container.spec, "ports")):
            if get(port, "name") == target or (
                number is not None and as_int(get(port, "containerPort")) == number
            ):
                found |= {get(port, "name"), as_int(get(port, "containerPort"))}
    return frozenset(p for p in found if p is not None)


def backends(objects: KubeObjects) -> list[Backend]:
    """The in-cluster backends the API server calls: APIService and admission webhook services."""
    found = []
    for r in objects.objects:
        kind = kind_of(r.type)
        if kind == "APIService":
            refs = [
                (f"APIService {get(r.props, 'metadata', 'name')}", get(r.props, "spec", "service"))
            ]
        elif kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            refs = [
                (f"webhook {get(hook, 'name')}", get(hook, "clientConfig", "service"))
                for hook in as_list(get(r.props, "webhooks"))
            ]
        else:
            continue
        for what, ref in refs:
            if not isinstance(ref, dict):
                continue
            name, namespace = get(ref, "name"), get(ref, "namespace")
            port = as_int(get(ref, "port", default=443))
            for service in objects.named(*SERVICE, r.provider_urn, namespace, name):
                for entry in as_list(get(service.props, "spec", "ports")):
                    if as_int(get(entry, "port")) == port:
                        labels, spec = _backend_pods(objects, service)
                        ports = _target_ports(get(entry, "targetPort", default=port), spec)
                        found.append(Backend(what, r, namespace, labels, ports))
    return found


def _isolates_ingress(policy: StackResource) -> bool:
    types = get(policy.props, "spec", "policyTypes")
    return types is None or "Ingress" in as_list(types) or is_unknown(types)


def _port_allowed(rule: Any, target: frozenset[Any]) -> bool:
    ports = get(rule, "ports")
    if ports is None or is_unknown(ports) or not as_list(ports):
        return True
    numbers = [p for p in target if isinstance(p, int)]
    for entry in as_list(ports):
        allowed, end = get(entry, "port"), as_int(get(entry, "endPort"))
        if allowed is None or is_unknown(allowed) or allowed in target:
            return True
        low = as_int(allowed)
        if low is not None and any(low <= n <= (end or low) for n in numbers):
            return True
    return False


def _admits(
    policy: StackResource, rule: Any, agent_namespace: str, agent_labels: dict[str, Any]
) -> bool:
    """Whether an ingress rule admits the konnectivity agents (any source, or their pods)."""
    peers = get(rule, "from")
    if peers is None or is_unknown(peers) or not as_list(peers):
        return True
    namespace_labels = {"kubernetes.io/metadata.name": agent_namespace}
    for peer in as_list(peers):
        if get(peer, "ipBlock") is not None:
            continue
        namespaces, pods = get(peer, "namespaceSelector"), get(peer, "podSelector")
        if is_unknown(namespaces) or is_unknown(pods):
            return True
        if namespaces is None:
            in_namespace = same(namespace_of(policy.props, policy.provider_props), agent_namespace)
        else:
            in_namespace = labels_match(namespaces, namespace_labels)
        if in_namespace and (pods is None or labels_match(pods, agent_labels)):
            return True
    return False


@RULES.stack(
    "apply-webhook-backend-reachable",
    level=MANDATORY,
    description="On GKE (a provider built from a gcp Cluster), a NetworkPolicy that isolates the "
    "pods behind an APIService or admission webhook admits the konnectivity agents "
    "(kube-system, k8s-app: konnectivity-agent) on the target port: the API server's calls "
    "arrive from those pods, so an ipBlock of the control-plane range alone leaves the API "
    "unavailable.",
    source="tigera/operator#5212 (on AKS and GKE the API server reaches in-cluster webhooks "
    "through konnectivity agent pods); GKE docs, 'Network policy' (Dataplane V2 enforces it for "
    "every pod source).",
    config=schema(
        {
            "agentNamespace": {"type": "string", "default": "kube-system"},
            "agentLabels": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "default": {"k8s-app": "konnectivity-agent"},
            },
            "clusterTypes": string_list(
                [CLUSTER], "cluster types whose API server uses konnectivity"
            ),
        }
    ),
)
def webhook_backend_reachable(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    graph = Graph(resources)
    objects = KubeObjects(resources)
    agent_namespace = str(config["agentNamespace"])
    agent_labels = as_dict(config["agentLabels"])
    cluster_types = [str(t) for t in config["clusterTypes"]]
    for backend in backends(objects):
        if not graph.clusters_of(backend.via.provider_urn, cluster_types):
            continue
        isolating = [
            p
            for p in objects.of_kind(
                "networking.k8s.io", "NetworkPolicy", backend.via.provider_urn, backend.namespace
            )
            if _isolates_ingress(p)
            and labels_match(get(p.props, "spec", "podSelector"), backend.pod_labels)
        ]
        if not isolating:
            continue
        admitted = any(
            _admits(p, rule, agent_namespace, agent_labels) and _port_allowed(rule, backend.ports)
            for p in isolating
            for rule in as_list(get(p.props, "spec", "ingress"))
        )
        if not admitted:
            names = ", ".join(short(p.urn) for p in isolating)
            yield (
                backend.via.urn,
                f"{backend.what}'s backend in {backend.namespace} is isolated by {names}, which "
                f"admit no konnectivity agent ({agent_namespace}, {agent_labels}) on port "
                f"{'/'.join(sorted(map(str, backend.ports)))}: the API server cannot call it",
            )


# ------------------------------------------------------------------------------ gateway TLS


def _credentials(server: Any) -> list[Any]:
    tls = get(server, "tls")
    if get(tls, "mode") in ("PASSTHROUGH", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL"):
        return []
    names = [get(tls, "credentialName"), *as_list(get(tls, "credentialNames"))]
    return [n for n in names if n is not None and n != ""]


def _workload_namespaces(objects: KubeObjects, gateway: StackResource) -> set[Any]:
    """Namespaces of the gateway workloads a Gateway's selector picks, Helm-rendered ones too."""
    selector = {"matchLabels": as_dict(get(gateway.props, "spec", "selector"))}
    found = set()
    candidates = [(w.type, w.props, w.provider_props) for w in objects.objects]
    for release in objects.releases:
        if release.provider_urn == gateway.provider_urn:
            namespace = get(release.props, "namespace")
            for o in rendered_objects(release.type, release.props, release.name):
                props = {
                    **o.props,
                    "metadata": {**as_dict(get(o.props, "metadata")), "namespace": namespace},
                }
                candidates.append((o.type, props, release.provider_props))
    for token, props, provider_props in candidates:
        if not pod_spec(token, props):
            continue
        labels = as_dict(get(props, "spec", "template", "metadata", "labels"))
        if labels_match(selector, labels):
            found.add(namespace_of(props, provider_props))
    return found


def _provides_secret(r: StackResource, name: Any) -> bool:
    kt = kube_type(r.type)
    if kt is None:
        return False
    if (kt.group, kt.kind) == SECRET:
        return same(get(r.props, "metadata", "name"), name)
    if (kt.group, kt.kind) == ("cert-manager.io", "Certificate"):
        return same(get(r.props, "spec", "secretName"), name)
    if (kt.group, kt.kind) == ("external-secrets.io", "ExternalSecret"):
        target = get(r.props, "spec", "target", "name", default=get(r.props, "metadata", "name"))
        return same(target, name)
    return False


@RULES.stack(
    "apply-gateway-credential",
    level=MANDATORY,
    description="An Istio Gateway server's tls.credentialName names a Secret (or a cert-manager "
    "Certificate's or an ExternalSecret's target) the stack declares on the same provider, in "
    "the Gateway's namespace or its workload's, or one declared external (the Gateway's "
    "annotation or config externalCredentials): istiod drops a server whose credential it "
    "cannot find.",
    source="Istio docs, analysis message IST0161 InvalidGatewayCredential (the secret must exist "
    "in the namespace of the gateway workload); Istio docs, 'cert-manager' integration.",
    config=schema(
        {
            "externalAnnotation": {
                "type": "string",
                "description": "Gateway annotation listing (comma-separated) credentials created "
                "outside the stack",
                "default": "signal-platform/external-credentials",
            },
            "externalCredentials": string_list(
                [], "credentials created outside the stack (name or namespace/name)"
            ),
        }
    ),
)
def gateway_credential(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    objects = KubeObjects(resources)
    external = {str(c) for c in config["externalCredentials"]}
    for gateway in objects.objects:
        kt = kube_type(gateway.type)
        if kt is None or (kt.group, kt.kind) != (ISTIO_NETWORKING, "Gateway"):
            continue
        namespace = namespace_of(gateway.props, gateway.provider_props)
        annotated = as_str_map(get(gateway.props, "metadata", "annotations")).get(
            str(config["externalAnnotation"]), ""
        )
        declared_external = external | {c.strip() for c in str(annotated).split(",") if c.strip()}
        namespaces = {namespace} | _workload_namespaces(objects, gateway)
        for server in as_list(get(gateway.props, "spec", "servers")):
            for credential in _credentials(server):
                if is_unknown(credential) or credential in declared_external:
                    continue
                if any(f"{n}/{credential}" in declared_external for n in namespaces):
                    continue
                if any(
                    _provides_secret(r, credential)
                    and r.provider_urn == gateway.provider_urn
                    and any(same(namespace_of(r.props, r.provider_props), n) for n in namespaces)
                    for r in objects.objects
                ):
                    continue
                shown = ", ".join(sorted(str(n) for n in namespaces))
                yield (
                    gateway.urn,
                    f"tls.credentialName {credential!r} names no Secret the stack declares in "
                    f"{shown} (nor a Certificate or ExternalSecret that writes it): istiod drops "
                    "this server; declare it, or list it as external (annotation "
                    f"{config['externalAnnotation']})",
                )


# ------------------------------------------------------------------------------ endpoints

_ENDPOINT_RE = re.compile(r"([A-Za-z0-9$()_.-]+)\.svc(?:\.cluster\.local)?(?::(\d+))?(?![\w.-])")


@dataclass(frozen=True)
class Endpoint:
    where: str
    service: str
    namespace: str
    port: int | None


def _endpoints_in(text: Any, where: str, need_port: bool) -> list[Endpoint]:
    if not isinstance(text, str):
        return []
    found = []
    for match in _ENDPOINT_RE.finditer(text):
        labels = match.group(1).split(".")
        port = int(match.group(2)) if match.group(2) else None
        if len(labels) < 2 or (need_port and port is None):
            continue
        found.append(Endpoint(where, labels[-2], labels[-1], port))
    return found


def endpoints(r: StackResource) -> list[Endpoint]:
    """In-cluster endpoints (`<svc>.<ns>.svc[.cluster.local]:<port>`) a config value names:
    container env, args and command, ConfigMap data, Istio meshConfig extension providers."""
    found: list[Endpoint] = []
    for container in containers(pod_spec(r.type, r.props)):
        for field in ("args", "command"):
            for item in as_list(get(container.spec, field)):
                found += _endpoints_in(item, f"{container.label} {field}", need_port=True)
        for env in as_list(get(container.spec, "env")):
            found += _endpoints_in(
                get(env, "value"), f"{container.label} env {get(env, 'name')}", True
            )
    if kind_of(r.type) == "ConfigMap":
        for key, value in as_dict(get(r.props, "data")).items():
            found += _endpoints_in(value, f"data.{key}", need_port=True)
    mesh = get(r.props, "values", "meshConfig") if r.type == HELM_RELEASE else None
    if kube_type(r.type) is not None and kind_of(r.type) == "IstioOperator":
        mesh = get(r.props, "spec", "meshConfig")
    for provider in as_list(get(mesh, "extensionProviders")):
        for kind, spec in as_dict(provider).items():
            service, port = get(spec, "service"), as_int(get(spec, "port"))
            if isinstance(service, str):
                text = f"{service}:{port}" if port is not None else service
                found += _endpoints_in(
                    text, f"meshConfig.extensionProviders {kind}", need_port=False
                )
    return found


@RULES.stack(
    "apply-in-cluster-endpoint",
    level=MANDATORY,
    description="A config value that names an in-cluster endpoint "
    "(`<svc>.<ns>.svc[.cluster.local]:<port>` in container env, args or command, ConfigMap data, "
    "Istio meshConfig extension providers) names a Service the stack declares on the same "
    "provider, on a port it serves (or in a namespace a Helm release of the stack installs into, "
    "or listed in config externalServices): otherwise every call to it fails.",
    source="Kubernetes docs, 'DNS for Services and Pods' (<service>.<namespace>.svc resolves "
    "only for a Service that exists); Istio docs, 'Telemetry API: tracing extension providers'.",
    config=schema(
        {
            "externalServices": string_list(
                ["kubernetes.default", "kube-dns.kube-system"],
                "services (<svc>.<ns>) declared outside the stack (the cluster's own by default)",
            )
        }
    ),
)
def in_cluster_endpoint(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    objects = KubeObjects(resources)
    external = {str(s) for s in config["externalServices"]}
    for r in [*objects.objects, *objects.releases]:
        for endpoint in endpoints(r):
            if f"{endpoint.service}.{endpoint.namespace}" in external or "$(" in endpoint.service:
                continue
            services = objects.named(*SERVICE, r.provider_urn, endpoint.namespace, endpoint.service)
            if not services:
                if objects.releases_in(r.provider_urn, endpoint.namespace):
                    continue  # a chart installed there may declare it
                yield (
                    r.urn,
                    f"{endpoint.where} names {endpoint.service}.{endpoint.namespace}.svc, but the "
                    f"stack declares no Service {endpoint.service} in namespace "
                    f"{endpoint.namespace}: every call to it fails",
                )
                continue
            service = services[0]
            ports = [as_int(get(p, "port")) for p in as_list(get(service.props, "spec", "ports"))]
            headless = get(service.props, "spec", "clusterIP") == "None"
            if (
                endpoint.port is not None
                and not headless
                and ports
                and None not in ports
                and endpoint.port not in ports
            ):
                yield (
                    r.urn,
                    f"{endpoint.where} calls {endpoint.service}.{endpoint.namespace}.svc on port "
                    f"{endpoint.port}, which Service {short(service.urn)} does not serve "
                    f"({', '.join(map(str, ports))})",
                )


# ------------------------------------------------------------------------------ multi-cluster


def _locality_settings(r: StackResource) -> list[tuple[str, Any]]:
    kt = kube_type(r.type)
    settings: list[tuple[str, Any]] = []
    if kt is not None and (kt.group, kt.kind) == (ISTIO_NETWORKING, "DestinationRule"):
        policies = [("spec.trafficPolicy", get(r.props, "spec", "trafficPolicy"))]
        policies += [
            (f"spec.subsets[{i}].trafficPolicy", get(s, "trafficPolicy"))
            for i, s in enumerate(as_list(get(r.props, "spec", "subsets")))
        ]
        for where, policy in list(policies):
            policies += [
                (f"{where}.portLevelSettings[{i}]", p)
                for i, p in enumerate(as_list(get(policy, "portLevelSettings")))
            ]
        settings = [
            (f"{w}.loadBalancer.localityLbSetting", get(p, "loadBalancer", "localityLbSetting"))
            for w, p in policies
        ]
    elif r.type == HELM_RELEASE:
        settings = [
            (
                "values.meshConfig.localityLbSetting",
                get(r.props, "values", "meshConfig", "localityLbSetting"),
            )
        ]
    return [(w, s) for w, s in settings if isinstance(s, dict)]


def named_regions(setting: Any) -> set[str]:
    """Regions a localityLbSetting names in its distribute and failover entries."""
    localities: list[Any] = []
    for entry in as_list(get(setting, "distribute")):
        localities.append(get(entry, "from"))
        localities += list(as_dict(get(entry, "to")).keys())
    for entry in as_list(get(setting, "failover")):
        localities += [get(entry, "from"), get(entry, "to")]
    regions = {str(loc).split("/")[0] for loc in localities if isinstance(loc, str)}
    return {r for r in regions if r and r != "*"}


def _istiod_namespace(objects: KubeObjects, provider: str | None) -> Any:
    for release in objects.releases:
        if release.provider_urn == provider and get(release.props, "chart") == "istiod":
            return get(release.props, "namespace", default="istio-system")
    return "istio-system"


@RULES.stack(
    "apply-mesh-multicluster",
    level=MANDATORY,
    description="A localityLbSetting (DestinationRule or meshConfig) that sends traffic to or "
    "fails over to other regions is backed by a multi-cluster mesh on its cluster: a shared root "
    "(a `cacerts` Secret, or a Certificate writing it, in istiod's namespace) and one remote "
    'secret (label istio/multiCluster: "true") per peer region; without them each istiod '
    "knows only its own cluster's endpoints and its own self-signed root.",
    source="Istio docs, 'Install Multi-Primary' (remote secrets per peer cluster) and 'Plug in "
    "CA Certificates' (a common root in cacerts).",
)
def mesh_multicluster(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    graph = Graph(resources)
    objects = KubeObjects(resources)
    for r in [*objects.objects, *objects.releases]:
        for where, setting in _locality_settings(r):
            regions = named_regions(setting)
            clusters = graph.clusters_of(r.provider_urn, [CLUSTER])
            own = {region_of(get(c.props, "location")) for c in clusters} - {None}
            peers = regions - own if own else (regions if len(regions) > 1 else set())
            if not peers:
                continue
            namespace = _istiod_namespace(objects, r.provider_urn)
            root = [
                o
                for o in objects.objects
                if o.provider_urn == r.provider_urn
                and _provides_secret(o, "cacerts")
                and same(namespace_of(o.props, o.provider_props), namespace)
            ]
            remote = [
                s
                for s in objects.of_kind(*SECRET, r.provider_urn)
                if str(
                    as_str_map(get(s.props, "metadata", "labels")).get("istio/multiCluster")
                ).lower()
                == "true"
            ]
            missing = []
            if not root:
                missing.append(f"a shared root (cacerts in {namespace})")
            if len(remote) < len(peers):
                missing.append(
                    f"remote secrets for {len(peers)} peer cluster(s), {len(remote)} declared"
                )
            if missing:
                yield (
                    r.urn,
                    f"{where} names {', '.join(sorted(peers))}, but the cluster has no "
                    f"{' and no '.join(missing)}: traffic never leaves the cluster (and would "
                    "fail mTLS across roots)",
                )
