"""Apply order and existence: what a real `pulumi up` needs to exist before each resource, read
from the stack's dependency graph, so a stack that plans clean offline also applies.

A resource waits for what it depends on (rules/stack_graph.py). The tables (type → API,
bootstrap APIs, service agents, where each type names a CMEK key, deprecated values, charts that
register webhooks, distribution metrics, user metric domains, fixed names) live in
apply_order.yaml, each with its source.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rules.iam_grants import iam_members, is_iam_type
from rules.kit import ADVISORY, MANDATORY, Resource, Rules, StackResource, schema, string_list
from rules.kube_objects import containers, is_kind, is_workload, pod_spec
from rules.stack_graph import CLUSTER, HELM_RELEASE, Finding, Graph, must_wait, short, values_at
from rules.values import UNKNOWN, as_dict, as_int, as_list, get, is_unknown

RULES = Rules("apply-order")


def read_tables(path: Path) -> dict[str, Any]:
    """A YAML file of tables (a mapping), read once when the pack loads."""
    data: Any = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of tables")
    return data


TABLES = read_tables(Path(__file__).with_suffix(".yaml"))

SERVICE = "gcp:projects/service:Service"
SERVICE_IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"
CRYPTO_KEY = "gcp:kms/cryptoKey:CryptoKey"
FIREWALL = "gcp:compute/firewall:Firewall"
PSC_POLICY = "gcp:networkconnectivity/serviceConnectionPolicy:ServiceConnectionPolicy"
REDIS_CLUSTER = "gcp:redis/cluster:Cluster"
BUDGET = "gcp:billing/budget:Budget"
SLO = "gcp:monitoring/slo:Slo"
LOG_METRIC = "gcp:logging/metric:Metric"
ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
REDIS_SERVICE_CLASS = "gcp-memorystore-redis"

_AGENT_RE = re.compile(
    r"^(?:serviceAccount:)?(?:service-|bq-)\d+@([a-z0-9-]+)\.iam\.gserviceaccount\.com$"
)
_POOL_RES = (
    re.compile(r"^serviceAccount:([a-z0-9.-]+\.svc\.id\.goog)\["),
    re.compile(r"workloadIdentityPools/([a-z0-9.-]+\.svc\.id\.goog)/"),
)
_METRIC_TYPE_RE = re.compile(r'metric\.type\s*=\s*"([^"]+)"')
_PLACEHOLDER_DIGEST_RE = re.compile(r"@sha256:([0-9a-f])\1{63}$")


def service_of(r: StackResource) -> Any:
    return get(r.props, "service")


def granted_members(r: StackResource) -> list[Any]:
    """Members an IAM resource or a BigQuery dataset's access list grants to."""
    if is_iam_type(r.type):
        return [member for _, member in iam_members(Resource(r.type, r.name, r.urn, r.props))]
    if r.type in ("gcp:bigquery/dataset:Dataset", "gcp:bigquery/datasetAccess:DatasetAccess"):
        accesses = as_list(get(r.props, "accesses")) or [r.props]
        return [
            member
            for access in accesses
            for member in (get(access, "userByEmail"), get(access, "iamMember"))
            if member is not None
        ]
    return []


# ------------------------------------------------------------------------------ service agents


@dataclass(frozen=True)
class Agent:
    domain: str
    service: str
    exists: str  # identity, data-source or api


AGENTS: dict[str, Agent] = {
    domain: Agent(domain, spec["service"], spec["exists"])
    for domain, spec in TABLES["agents"].items()
    if domain != "source"
}


def agent_of(member: Any) -> Agent | None:
    if not isinstance(member, str):
        return None
    match = _AGENT_RE.match(member)
    return AGENTS.get(match.group(1)) if match else None


def agent_makers(graph: Graph, agent: Agent) -> list[StackResource]:
    """What makes `agent` exist in this stack: its ServiceIdentity, or (created with the API or
    by a data source that runs after it) its API's enablement."""
    identities = [
        r for r in graph.of_type(SERVICE_IDENTITY) if service_of(r) in (agent.service, UNKNOWN)
    ]
    if agent.exists == "identity":
        return identities
    return identities + [
        r for r in graph.of_type(SERVICE) if service_of(r) in (agent.service, UNKNOWN)
    ]


@RULES.stack(
    "apply-service-agent-exists",
    level=MANDATORY,
    description="A grant to a Google service agent waits for the agent to exist: its "
    "ServiceIdentity, or for agents created by their API or its data source, the API's "
    "enablement (a grant to a missing agent fails with 'service account does not exist').",
    source=TABLES["agents"]["source"],
)
def service_agent_exists(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    graph = Graph(resources)
    manages_apis = bool(graph.of_type(SERVICE))
    for r in resources:
        for member in granted_members(r):
            agent = agent_of(member)
            if agent is None:
                continue
            if agent.exists == "identity":
                missing: str | None = (
                    f"grants to {member}, the {agent.service} agent, which is created lazily, "
                    f"and the stack declares no ServiceIdentity for {agent.service}"
                )
            elif manages_apis:
                missing = (
                    f"grants to {member}, the {agent.service} agent, but the stack does not "
                    f"enable {agent.service}, which makes it"
                )
            else:
                missing = None  # enabled outside the stack
            yield from must_wait(
                graph,
                r,
                agent_makers(graph, agent),
                f"grants to {member}, the {agent.service} agent,",
                missing,
            )


# ------------------------------------------------------------------------------ CMEK grants


@dataclass(frozen=True)
class KeyUse:
    path: str
    agent: Agent


CMEK_USES: dict[str, tuple[KeyUse, ...]] = {
    token: tuple(KeyUse(use["path"], AGENTS[use["agent"]]) for use in uses)
    for token, uses in TABLES["cmek"].items()
    if token != "source"
}


def _key_path(value: str) -> str:
    return value.split("/cryptoKeyVersions/")[0]


class Keys:
    """Which CryptoKey a value names, by its path when known, else by the URNs it came from."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.path_of: dict[str, str] = {}
        for key in graph.of_type(CRYPTO_KEY):
            ring, name = get(key.props, "keyRing"), get(key.props, "name")
            if isinstance(ring, str) and isinstance(name, str):
                self.path_of[key.urn] = f"{ring}/cryptoKeys/{name}"
        self.urn_of = {path: urn for urn, path in self.path_of.items()}

    def named(self, r: StackResource, field: str, value: Any) -> set[str]:
        """Identities (key paths and CryptoKey URNs) of the key `r` names in `field`."""
        found: set[str] = set()
        if isinstance(value, str) and value:
            found.add(_key_path(value))
        keys = [u for u in r.property_dependencies.get(field, ()) if self._is_key(u)]
        if not found and not keys and field not in r.property_dependencies:
            # No property dependencies to go by: the keys it depends on directly.
            keys = [u for u in r.dependencies if self._is_key(u)]
        found.update(keys)
        for item in list(found):
            if item in self.path_of:
                found.add(self.path_of[item])
            if item in self.urn_of:
                found.add(self.urn_of[item])
        return found

    def declared(self, key: set[str]) -> bool:
        """Whether the stack declares the key (a key from elsewhere has its grants there too)."""
        return any(item in self.path_of or item in self.urn_of for item in key)

    def _is_key(self, urn: str) -> bool:
        resource = self.graph.by_urn.get(urn)
        return resource is not None and resource.type == CRYPTO_KEY


def encrypter_grants(graph: Graph, keys: Keys, agent: Agent, key: set[str]) -> list[StackResource]:
    """Grants of the encrypter role on `key` (or project-wide) to `agent`."""
    found = []
    for r in graph.resources:
        if not is_iam_type(r.type) or get(r.props, "role") not in (ENCRYPTER, UNKNOWN):
            continue
        if r.type.startswith("gcp:kms/cryptoKeyIAM"):
            if not keys.named(r, "cryptoKeyId", get(r.props, "cryptoKeyId")) & key:
                continue
        elif not r.type.startswith("gcp:projects/"):
            continue
        members = granted_members(r)
        if any(agent_of(m) == agent for m in members) or (
            any(is_unknown(m) for m in members) and _member_from(r, agent_makers(graph, agent))
        ):
            found.append(r)
    return found


def _member_from(r: StackResource, makers: list[StackResource]) -> bool:
    """Whether a member known only after the update comes from what makes the agent exist
    (the `member`'s property dependencies, else the grant's direct dependencies): a
    ServiceIdentity's output, or a data source called once the agent's API is on."""
    sources = r.property_dependencies.get("member") or r.property_dependencies.get("members")
    direct = set(sources) if sources else set(r.dependencies)
    return any(m.urn in direct for m in makers)


@RULES.stack(
    "apply-cmek-grant",
    level=MANDATORY,
    description="A resource that names a CMEK key the stack declares waits for the grant of "
    "roles/cloudkms.cryptoKeyEncrypterDecrypter on that key to its own service's agent.",
    source=TABLES["cmek"]["source"],
)
def cmek_grant(resources: list[StackResource], config: Mapping[str, Any]) -> Iterator[Finding]:
    graph = Graph(resources)
    keys = Keys(graph)
    for r in resources:
        for use in CMEK_USES.get(r.type, ()):
            field = use.path.split(".")[0].removesuffix("[]")
            for value in values_at(r.props, use.path):
                key = keys.named(r, field, value)
                if not keys.declared(key):
                    continue  # untraceable yet, or a key (and its grants) from elsewhere
                shown = value if isinstance(value, str) else next(iter(sorted(key)))
                yield from must_wait(
                    graph,
                    r,
                    encrypter_grants(graph, keys, use.agent, key),
                    f"{use.path} names key {short(shown)}, which the {use.agent.service} agent "
                    "uses,",
                    f"{use.path} names key {short(shown)}, but the stack grants {ENCRYPTER} "
                    f"on it to no {use.agent.domain} agent ({use.agent.service}): creating "
                    "it fails",
                )


# ------------------------------------------------------------------------------ APIs


def apis_needed(r: StackResource) -> set[str]:
    """The Google APIs creating `r` calls (apply_order.yaml `apis`)."""
    table = TABLES["apis"]
    needed: set[str] = set()
    if r.type in table["types"]:
        apis = table["types"][r.type]
        needed.update(apis if isinstance(apis, list) else [apis])
    elif r.type.startswith("gcp:"):
        module = r.type.split(":")[1].split("/")[0]
        if module in table["modules"]:
            needed.add(table["modules"][module])
    for field in table["fields"]:
        if field["type"] != r.type:
            continue
        for value in values_at(r.props, field["path"]):
            if is_unknown(value) or value is None:
                continue
            if (
                ("in" in field and value in field["in"])
                or ("not_in" in field and value not in field["not_in"])
                or ("contains" in field and field["contains"] in str(value))
            ):
                needed.add(field["api"])
    return needed


BOOTSTRAP_APIS = frozenset(TABLES["bootstrap_apis"]["apis"])


@RULES.stack(
    "apply-api-enabled",
    level=MANDATORY,
    description="On a stack that enables APIs (projects.Service), every resource waits for the "
    "enablement of each Google API it calls, and each of those APIs is enabled (bootstrap APIs, "
    "which no stack can enable for itself, are prerequisites instead).",
    source=TABLES["apis"]["source"],
)
def api_enabled(resources: list[StackResource], config: Mapping[str, Any]) -> Iterator[Finding]:
    graph = Graph(resources)
    services = graph.of_type(SERVICE)
    if not services:
        return  # the stack does not manage APIs
    by_api: dict[str, list[StackResource]] = {}
    unknown: list[StackResource] = []  # services named only after the update: any API
    for service in services:
        api = service_of(service)
        if isinstance(api, str):
            by_api.setdefault(api, []).append(service)
        else:
            unknown.append(service)
    for r in resources:
        for api in sorted(apis_needed(r) - BOOTSTRAP_APIS):
            yield from must_wait(
                graph,
                r,
                by_api.get(api, []) + unknown,
                f"{r.type} needs {api}",
                f"{r.type} needs {api}, which the stack does not enable",
            )


@RULES.stack(
    "apply-bootstrap-apis",
    level=ADVISORY,
    description="A stack does not enable the APIs the first `pulumi up` needs before it can run "
    "(Resource Manager, Service Usage, IAM Credentials, STS): they cannot bootstrap themselves "
    "and are prerequisites, enabled out of band.",
    source=TABLES["bootstrap_apis"]["source"],
)
def bootstrap_apis(resources: list[StackResource], config: Mapping[str, Any]) -> Iterator[Finding]:
    for service in resources:
        api = service_of(service) if service.type == SERVICE else None
        if api in BOOTSTRAP_APIS:
            yield (
                service.urn,
                f"enables {api}, which must already be on before the stack can run: enable it "
                "as a prerequisite of the first `pulumi up` (gcloud services enable) and drop it "
                "from the stack",
            )


# ------------------------------------------------------------------------------ Workload Identity


def identity_pools(r: StackResource) -> set[str]:
    pools: set[str] = set()
    for member in granted_members(r):
        if isinstance(member, str):
            for pattern in _POOL_RES:
                if match := pattern.search(member):
                    pools.add(match.group(1))
    return pools


@RULES.stack(
    "apply-workload-identity-pool",
    level=MANDATORY,
    description="A grant to a Workload Identity principal (PROJECT.svc.id.goog) waits for a "
    "cluster that creates the pool: IAM refuses members of a pool that does not exist yet.",
    source="GKE docs, 'Authenticate to Google Cloud APIs from GKE workloads' (the pool is "
    "created with the first cluster that enables Workload Identity).",
    config=schema({"externalPools": string_list([], "pools created outside this stack")}),
)
def workload_identity_pool(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    graph = Graph(resources)
    external = set(config["externalPools"])
    clusters = graph.of_type(CLUSTER)
    for r in resources:
        for pool in sorted(identity_pools(r) - external):
            creators = [
                c
                for c in clusters
                if get(c.props, "workloadIdentityConfig", "workloadPool") in (pool, UNKNOWN)
            ]
            yield from must_wait(
                graph,
                r,
                creators,
                f"grants to a principal of {pool}, a pool its first cluster creates,",
                f"grants to a principal of {pool}, which no cluster of the stack creates",
            )


# ------------------------------------------------------------------------------ images


def registry_host(image: str) -> str | None:
    """The registry host an image reference names (Docker's rule: the first path component,
    when it has a dot or a port, or is localhost); None means Docker Hub by default."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


@RULES.resource(
    "apply-image-registry",
    level=MANDATORY,
    description="Container images name their registry host (no silent Docker Hub default) and "
    "no placeholder digest (one repeated hex digit, such as all zeros).",
    source="Docker docs, 'docker image tag' (a reference without a host resolves to docker.io); "
    "GKE docs, 'Using container image digests'.",
    types=is_workload,
)
def image_registry(r: Resource) -> Iterator[str]:
    for container in containers(pod_spec(r.type, r.props)):
        image = get(container.spec, "image")
        if not isinstance(image, str) or is_unknown(image):
            continue
        if registry_host(image) is None:
            yield f"{container.label} image {image!r} names no registry host (it would pull from Docker Hub)"
        if _PLACEHOLDER_DIGEST_RE.search(image):
            yield f"{container.label} image {image!r} is pinned to a placeholder digest"


# ------------------------------------------------------------------------------ control plane ports


@dataclass(frozen=True)
class Backend:
    what: str  # e.g. "APIService v1beta1.custom.metrics.k8s.io"
    port: int
    provider: str | None  # the Kubernetes provider that declares it: which cluster it runs on


def _service_target(graph: Graph, ref: Any) -> int | None:
    """The target port of the Service an APIService or webhook names (None: cannot tell)."""
    name, namespace = get(ref, "name"), get(ref, "namespace")
    port = as_int(get(ref, "port", default=443))
    for service in graph.resources:
        if not is_kind(service.type, "core", "Service"):
            continue
        if (
            get(service.props, "metadata", "name") != name
            or get(service.props, "metadata", "namespace") != namespace
        ):
            continue
        for entry in as_list(get(service.props, "spec", "ports")):
            if as_int(get(entry, "port")) == port:
                target = get(entry, "targetPort", default=port)
                if as_int(target) is not None:
                    return as_int(target)
                return _named_port(
                    graph, as_dict(get(service.props, "spec", "selector")), target, namespace
                )
    return None


def _named_port(graph: Graph, selector: dict[str, Any], name: Any, namespace: Any) -> int | None:
    for r in graph.resources:
        if not is_workload(r.type) or get(r.props, "metadata", "namespace") != namespace:
            continue
        labels = as_dict(get(r.props, "spec", "template", "metadata", "labels"))
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            continue
        for container in containers(pod_spec(r.type, r.props)):
            for port in as_list(get(container.spec, "ports")):
                if get(port, "name") == name:
                    return as_int(get(port, "containerPort"))
    return None


def control_plane_backends(graph: Graph) -> list[Backend]:
    """What the control plane calls on the nodes: APIService and webhook backends, and those of
    charts known to register webhooks (apply_order.yaml `control_plane_charts`)."""
    backends: list[Backend] = []
    for r in graph.resources:
        if is_kind(r.type, "apiregistration.k8s.io", "APIService"):
            refs = [
                (
                    "APIService " + str(get(r.props, "metadata", "name")),
                    get(r.props, "spec", "service"),
                )
            ]
        elif is_kind(
            r.type, "admissionregistration.k8s.io", "ValidatingWebhookConfiguration"
        ) or is_kind(r.type, "admissionregistration.k8s.io", "MutatingWebhookConfiguration"):
            refs = [
                (f"webhook {get(hook, 'name')}", get(hook, "clientConfig", "service"))
                for hook in as_list(get(r.props, "webhooks"))
            ]
        elif r.type == HELM_RELEASE:
            chart = get(r.props, "chart")
            ports = TABLES["control_plane_charts"].get(chart, []) if isinstance(chart, str) else []
            backends += [
                Backend(f"chart {chart}'s webhooks", int(p), r.provider_urn) for p in ports
            ]
            continue
        else:
            continue
        for what, ref in refs:
            if isinstance(ref, dict):
                port = _service_target(graph, ref)
                if port is not None:
                    backends.append(Backend(what, port, r.provider_urn))
    return backends


def _opens(firewall: StackResource, source: ipaddress.IPv4Network, port: int) -> bool:
    props = firewall.props
    if get(props, "direction", default="INGRESS") != "INGRESS" or get(props, "disabled") is True:
        return False
    ranges = as_list(get(props, "sourceRanges"))
    if not any(_covers(cidr, source) for cidr in ranges):
        return False
    for allow in as_list(get(props, "allows")):
        if get(allow, "protocol") not in ("tcp", "all", "6"):
            continue
        ports = get(allow, "ports")
        if ports is None or is_unknown(ports) or not as_list(ports):
            return True
        for spec in as_list(ports):
            low, _, high = str(spec).partition("-")
            if low.isdigit() and int(low) <= port <= int(high or low):
                return True
    return False


def _covers(cidr: Any, source: ipaddress.IPv4Network) -> bool:
    try:
        return source.subnet_of(ipaddress.IPv4Network(str(cidr)))
    except ValueError:
        return False


def _runs_on(graph: Graph, backend: Backend, cluster: StackResource) -> bool:
    """Whether `backend` runs on `cluster`: its provider waits for the cluster (a provider
    built from the cluster's outputs). Without a provider in the stack to go by: every cluster."""
    provider = graph.by_urn.get(backend.provider or "")
    if provider is None:
        return True
    return cluster.urn in graph.waits_for(provider)


@RULES.stack(
    "apply-control-plane-ports",
    level=MANDATORY,
    description="A private cluster's control plane reaches every APIService and admission-webhook "
    "backend it must call: an INGRESS firewall from its CIDR opens each backend's target port.",
    source="GKE docs, 'Add firewall rules for specific use cases' (private clusters: the control "
    "plane reaches nodes on 443 and 10250 only by default).",
)
def control_plane_ports(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    graph = Graph(resources)
    backends = control_plane_backends(graph)
    firewalls = graph.of_type(FIREWALL)
    for cluster in graph.of_type(CLUSTER):
        if get(cluster.props, "privateClusterConfig", "enablePrivateNodes") is not True:
            continue
        cidr = get(cluster.props, "privateClusterConfig", "masterIpv4CidrBlock")
        try:
            source = ipaddress.IPv4Network(str(cidr))
        except ValueError:
            continue  # unknown or unset: GKE picks it, nothing to tell yet
        mine = [b for b in backends if _runs_on(graph, b, cluster)]
        for port in sorted({b.port for b in mine}):
            if not any(_opens(f, source, port) for f in firewalls):
                what = ", ".join(sorted({b.what for b in mine if b.port == port}))
                yield (
                    cluster.urn,
                    f"the control plane ({source}) cannot reach tcp:{port} ({what}): no INGRESS "
                    "firewall from its CIDR opens it",
                )


# ------------------------------------------------------------------------------ SLOs


@RULES.stack(
    "apply-slo-counts-requests",
    level=MANDATORY,
    description="A request-based SLI's good, bad and total filters count requests: none of them "
    "names a distribution metric.",
    source=TABLES["distribution_metrics"]["source"],
)
def slo_counts_requests(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    distributions = set(TABLES["distribution_metrics"]["metrics"])
    for metric in resources:
        if (
            metric.type == LOG_METRIC
            and get(metric.props, "metricDescriptor", "valueType") == "DISTRIBUTION"
        ):
            distributions.add(
                f"logging.googleapis.com/user/{get(metric.props, 'name', default=metric.name)}"
            )
    for slo in resources:
        if slo.type != SLO:
            continue
        ratio = get(slo.props, "requestBasedSli", "goodTotalRatio")
        for key in ("goodServiceFilter", "badServiceFilter", "totalServiceFilter"):
            text = get(ratio, key)
            if not isinstance(text, str):
                continue
            for metric_type in _METRIC_TYPE_RE.findall(text):
                if metric_type in distributions or (
                    metric_type.startswith("prometheus.googleapis.com/")
                    and metric_type.endswith("/histogram")
                ):
                    yield (
                        slo.urn,
                        f"requestBasedSli.goodTotalRatio.{key} counts {metric_type}, a distribution: "
                        "use a counter of requests",
                    )


# ------------------------------------------------------------------------------ deprecated values


@dataclass(frozen=True)
class Deprecated:
    type: str
    path: str
    values: tuple[str, ...]
    instead: str
    source: str


DEPRECATED: tuple[Deprecated, ...] = tuple(
    Deprecated(
        entry["type"],
        entry["path"],
        tuple(entry["value"]) if isinstance(entry["value"], list) else (entry["value"],),
        entry["instead"],
        entry["source"],
    )
    for entry in TABLES["deprecated"]
)


@RULES.resource(
    "apply-deprecated-value",
    level=MANDATORY,
    description="No setting uses a value Google has deprecated or removed while the provider still "
    "accepts it (table with sources in rules/apply_order.yaml).",
    source="; ".join(sorted({d.source for d in DEPRECATED})),
    types={d.type for d in DEPRECATED},
)
def deprecated_value(r: Resource) -> Iterator[str]:
    for entry in DEPRECATED:
        if entry.type != r.type:
            continue
        for value in values_at(r.props, entry.path):
            if value in entry.values:
                yield f"{entry.path} is {value!r}, which Google no longer supports: use {entry.instead} ({entry.source})"


# ------------------------------------------------------------------------------ Redis PSC


def _same_network(a: Any, b: Any) -> bool:
    if is_unknown(a) or is_unknown(b):
        return True
    return (
        isinstance(a, str) and isinstance(b, str) and a.rsplit("/", 1)[-1] == b.rsplit("/", 1)[-1]
    )


@RULES.stack(
    "apply-redis-psc-policy",
    level=MANDATORY,
    description="A Memorystore for Redis Cluster waits for a service connection policy "
    "(gcp-memorystore-redis) on its network in its region: without one its PSC endpoints are "
    "never created.",
    source="Memorystore for Redis Cluster docs, 'Networking: service connection policies'.",
)
def redis_psc_policy(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[Finding]:
    graph = Graph(resources)
    policies = [
        p
        for p in graph.of_type(PSC_POLICY)
        if get(p.props, "serviceClass") in (REDIS_SERVICE_CLASS, UNKNOWN)
    ]
    for cluster in graph.of_type(REDIS_CLUSTER):
        region = get(cluster.props, "region")
        for network in values_at(cluster.props, "pscConfigs[].network"):
            matching = [
                p
                for p in policies
                if (is_unknown(region) or get(p.props, "location") in (region, UNKNOWN))
                and _same_network(get(p.props, "network"), network)
            ]
            shown = "its network" if is_unknown(network) else str(network).rsplit("/", 1)[-1]
            yield from must_wait(
                graph,
                cluster,
                matching,
                f"reaches {shown} through a service connection policy",
                f"no service connection policy for {REDIS_SERVICE_CLASS} on {shown} in {region}",
            )


# ------------------------------------------------------------------------------ budget


@RULES.stack(
    "apply-billing-budget",
    level=ADVISORY,
    description="A stack that runs a project (it enables the project's APIs) declares a Cloud "
    "Billing budget (it needs a real billing account; without one the stack plans without a "
    "budget).",
    source="Cloud Billing docs, 'Create, edit, or delete budgets and budget alerts'.",
)
def billing_budget(resources: list[StackResource], config: Mapping[str, Any]) -> Iterator[Finding]:
    runs_a_project = any(r.type == SERVICE for r in resources)
    if runs_a_project and not any(r.type == BUDGET for r in resources):
        yield (
            None,
            "the stack enables its project's APIs but declares no billing budget "
            "(gcp:billing/budget:Budget): nobody is told when its spend runs away; set a "
            "billing account for it",
        )
