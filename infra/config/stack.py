"""The whole stack's configuration: its sections, the rules that span them, and loading.

`Pulumi.<stack>.yaml` → `StackConfig.load(...)` → one validated, frozen model. Each section
checks its own rules (`rules()` on its model); `StackConfig.rules` adds what needs the whole
stack: the environment (prod rules), the catalogue per region, overrides, ranges across
regions, what the system pool must hold. Every problem of a file is reported at once, each
naming the file, the key path, the value and what is allowed.

The environment follows the stack's name: a stack whose name says prod, dev or staging
(`prod`, `prod-eu`, `team-dev`, `production`) must set that environment, unless it says why
not in `environmentMismatchReason`. Until it does, that mismatch is reported first and prod's
rules wait (they would judge the stack by an environment that may be the mistake).
"""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from app.config_errors import Problem, checked, problems_from
from infra.config.base import NAMESPACE, ConfigError, Model, StackContext, refuse
from infra.config.capacity import nodes_needed, requested, system_pods, system_pool_rules
from infra.config.catalog import load_catalog
from infra.config.cluster import ClusterSettings, NodePools
from infra.config.cost import CostSettings, PoolBounds
from infra.config.data import BigQuerySettings, PubSubSettings, RedisSettings
from infra.config.images import REFERENCE_RE, digest
from infra.config.intelligence import IntelligenceSettings
from infra.config.mesh import ISTIO_KUBERNETES, MeshSettings
from infra.config.network import NetworkSettings, RegionNetwork, overlaps
from infra.config.observability import Budget, ObservabilitySettings
from infra.config.providers import PROVIDER_PACKAGES, provider_config_keys
from infra.config.workloads import Workloads

# Configuration namespaces a stack file may use: the project's and the providers' it runs.
KNOWN_NAMESPACES = (NAMESPACE, "gcp", "kubernetes", "pulumi")
REQUIRED_LABELS = ("cost-center", "env", "owner")
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
PROJECT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
# Words in a stack's name that say its environment.
ENVIRONMENT_WORDS = {
    "dev": "dev",
    "development": "dev",
    "staging": "staging",
    "stage": "staging",
    "stg": "staging",
    "prod": "prod",
    "production": "prod",
    "prd": "prod",
}
# The Artifact Registry repository the stack declares for its images (infra/artifacts.py).
ARTIFACT_REPOSITORY = "signal"
MISMATCH_REASON = "environmentMismatchReason"
# What .github/workflows/image.yml pushes to that repository: `git-<commit>` tags (the
# repository's tags are immutable) and the digest its pull request pins.
PUSHED_TAG_RE = re.compile(r"^git-[0-9a-f]{40}$")
Environment = Literal["dev", "staging", "prod"]
STAGES = ("infrastructure", "workloads", "serving")
Stage = Literal["infrastructure", "workloads", "serving"]


def environment_named_by(stack: str) -> str | None:
    """The environment a stack's name says (`prod-eu` → prod), or None."""
    words = re.split(r"[^a-z0-9]+", stack.lower())
    named = {ENVIRONMENT_WORDS[w] for w in words if w in ENVIRONMENT_WORDS}
    return named.pop() if len(named) == 1 else None


def environment_settled(stack: str, environment: object, reason: object) -> bool:
    """The stack's name agrees with its environment, or ``reason`` (environmentMismatchReason)
    says why not. Until then the environment's own rules (prod's) are not applied: they would
    judge a stack by an environment that may be the mistake."""
    return environment_named_by(stack) in (None, environment) or reason is not None


def environment_problems(stack: str, environment: object, reason: object) -> Iterator[Problem]:
    """The name/environment mismatch nothing explains, or a reason without a mismatch."""
    named = environment_named_by(stack)
    if not environment_settled(stack, environment, reason):
        yield Problem(
            "environment",
            f"stack {stack!r} is named for {named}",
            environment,
            f"{named}, or environmentMismatchReason: <why this stack differs>",
        )
    elif reason is not None and (named is None or named == environment):
        yield Problem(
            "environmentMismatchReason",
            f"no mismatch to explain: stack {stack!r} and environment {environment!r} agree",
            reason,
            "no environmentMismatchReason",
        )


def once_for_all_regions(found: Iterable[tuple[str, Problem]]) -> Iterator[Problem]:
    """Problems of a rule run per region, a problem that differs between regions only by the
    region it names given once, naming them all: regions sharing a setting share its problem."""
    merged: dict[tuple[str, str, str, str], tuple[Problem, list[str]]] = {}
    for region, problem in found:
        name = re.compile(rf"\b{re.escape(region)}\b(?!-)")  # not its zones (us-east4-a)
        key = (
            problem.path,
            name.sub("\0", problem.message),
            repr(problem.value),
            name.sub("\0", problem.allowed),
        )
        merged.setdefault(key, (problem, []))[1].append(region)
    for (_, message, _, allowed), (problem, regions) in merged.items():
        names = ", ".join(regions)
        yield replace(
            problem, message=message.replace("\0", names), allowed=allowed.replace("\0", names)
        )


class RegionOverride(Model):
    node_pools: NodePools | None = None
    cluster: ClusterSettings | None = None
    redis: RedisSettings | None = None
    network: RegionNetwork | None = None


@dataclass(frozen=True)
class RegionConfig:
    name: str
    index: int
    zones: tuple[str, ...]  # every zone of the region (the catalogue's)
    network: RegionNetwork
    cluster: ClusterSettings
    node_pools: NodePools
    redis: RedisSettings

    @property
    def zone(self) -> str | None:
        """A zonal cluster's zone: the region's first that offers every GPU type its pools
        use (None for a regional cluster, or when no zone offers them all)."""
        if not self.cluster.zonal:
            return None
        offered = load_catalog().gpus_in(self.name)
        needed = {pool.accelerator_type for pool in self.node_pools.gpu}
        return next(
            (z for z in self.zones if all(z in offered.get(gpu, ()) for gpu in needed)), None
        )

    @property
    def location(self) -> str:
        """The cluster's location: its zone when zonal, else the region."""
        return self.zone or self.name

    @property
    def node_zones(self) -> tuple[str, ...]:
        """The zones the system pool's nodes run in (its node counts are per zone)."""
        if self.cluster.zonal:
            return (self.zone,) if self.zone else ()
        return self.zones[: self.cluster.zone_count]

    def gpu_zones(self, accelerator: str) -> tuple[str, ...]:
        """The zones a GPU pool of ``accelerator`` runs in: every zone of the region that
        offers it (more zones, more spot capacity), or the zonal cluster's own."""
        offered = load_catalog().gpus_in(self.name).get(accelerator, ())
        return tuple(z for z in offered if not self.cluster.zonal or z == self.zone)


class StackConfig(Model):
    """The whole stack, as validated once at program start."""

    stack: str
    project_id: str
    environment: Environment
    # Why this stack's environment differs from the one its name says (see the docstring).
    environment_mismatch_reason: str | None = Field(default=None, min_length=10)
    regions: tuple[str, ...] = Field(min_length=1)
    labels: dict[str, str]
    budget: Budget
    network: NetworkSettings = NetworkSettings()
    cluster: ClusterSettings = ClusterSettings()
    node_pools: NodePools = NodePools()
    region_overrides: dict[str, RegionOverride] = Field(default_factory=dict)
    redis: RedisSettings = RedisSettings()
    bigquery: BigQuerySettings = BigQuerySettings()
    pubsub: PubSubSettings = PubSubSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    workloads: Workloads = Workloads()
    mesh: MeshSettings = MeshSettings()
    intelligence: IntelligenceSettings = IntelligenceSettings()
    cost: CostSettings = CostSettings()
    # Prod images without a digest, by exact reference, each with the reason it has none.
    unpinned_images: dict[str, str] = Field(default_factory=dict)
    # How far a deploy goes (README "Deploying for real"): a new project's first `pulumi up`
    # creates the platform (`infrastructure`); the image pipeline's pull request that pins
    # the pushed digest moves it to `workloads`; once the service has served traffic (its
    # request counter exists in Cloud Monitoring), `serving` adds the SLO and its alert.
    stage: Stage = "serving"
    # KMS key rings cannot be deleted: a stack re-created after `pulumi destroy` needs new
    # key ring names. 1: `<location>-keys`; n > 1: `<location>-keys-<n>`.
    key_ring_generation: int = Field(default=1, ge=1, le=99)

    @field_validator("project_id")
    @classmethod
    def _project_id(cls, value: str) -> str:
        if not PROJECT_ID_RE.match(value):
            raise refuse(
                "not a valid GCP project id",
                value,
                "6-30 chars, lowercase letters, digits, hyphens, starting with a letter",
            )
        return value

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = sorted(load_catalog().zones)
        problems = []
        if len(set(value)) != len(value):
            problems.append(Problem("", "regions are listed twice", list(value), "unique regions"))
        for i, region in enumerate(value):
            if region not in known:
                close = difflib.get_close_matches(region, known, n=1)
                hint = f"unknown region (did you mean {close[0]}?)" if close else "unknown region"
                problems.append(Problem(f"[{i}]", hint, region, ", ".join(known)))
        return checked(value, problems)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        problems = [
            Problem(label, "required cost label is missing", allowed=", ".join(REQUIRED_LABELS))
            for label in REQUIRED_LABELS
            if not value.get(label)
        ]
        problems += [
            Problem(
                key,
                "not a valid GCP label",
                text,
                "lowercase letters, digits, '_' and '-', at most 63 characters",
            )
            for key, text in value.items()
            if not LABEL_KEY_RE.match(key) or not LABEL_VALUE_RE.match(text)
        ]
        return checked(value, problems)

    @field_validator("unpinned_images")
    @classmethod
    def _reasons(cls, value: dict[str, str]) -> dict[str, str]:
        short = [
            Problem(k, "say why it has no digest", r, ">= 10 characters")
            for k, r in value.items()
            if len(r.strip()) < 10
        ]
        return checked(value, short)

    # ---- derived

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def prod_rules_apply(self) -> bool:
        """Prod's rules judge this stack: it is prod, and its name does not say otherwise."""
        reason = self.environment_mismatch_reason
        return self.is_prod and environment_settled(self.stack, self.environment, reason)

    @property
    def deletion_protection(self) -> bool:
        setting = self.cluster.deletion_protection
        return self.is_prod if setting is None else setting

    @property
    def deploys_workloads(self) -> bool:
        """The stage runs the stack's own image and model (after `infrastructure`)."""
        return STAGES.index(self.stage) >= STAGES.index("workloads")

    @property
    def has_slo(self) -> bool:
        """The stage declares the SLO on the service's request counter (`serving`)."""
        return self.stage == "serving"

    def key_ring_name(self, base: str) -> str:
        """A key ring's name in this generation (`keyRingGeneration`)."""
        return base if self.key_ring_generation == 1 else f"{base}-{self.key_ring_generation}"

    @property
    def image_registry(self) -> str:
        """Where the stack's own images live: its Artifact Registry repository."""
        return f"{self.regions[0]}-docker.pkg.dev/{self.project_id}/{ARTIFACT_REPOSITORY}"

    def region(self, name: str) -> RegionConfig:
        """The settings of one region: the stack's, with that region's overrides applied."""
        override = self.region_overrides.get(name) or RegionOverride()
        index = self.regions.index(name)
        return RegionConfig(
            name=name,
            index=index,
            zones=load_catalog().zones[name],
            network=override.network or RegionNetwork.for_index(index),
            cluster=override.cluster or self.cluster,
            node_pools=override.node_pools or self.node_pools,
            redis=override.redis or self.redis,
        )

    def _where(self, region: str, section: str) -> str:
        """The key that sets ``section`` for ``region``: its override, else the stack's."""
        override = self.region_overrides.get(region)
        key = {"nodePools": "node_pools"}.get(section, section)
        if override is not None and getattr(override, key) is not None:
            return f"regionOverrides.{region}.{section}"
        return section

    # ---- rules that need the whole stack

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        yield from self._environment_rules()
        for region in self.region_overrides:
            if region not in self.regions:
                yield Problem(
                    f"regionOverrides.{region}",
                    "override for a region the stack does not deploy",
                    region,
                    ", ".join(self.regions),
                )
        found = [(name, p) for name in self.regions for p in self._region_rules(self.region(name))]
        yield from once_for_all_regions(found)
        yield from self._network_rules()
        yield from self._unpinned_image_rules()
        yield from self._own_image_rules()
        storage = self.pubsub.storage_rules(self.regions, self.bigquery.location)
        yield from (p.under("regions") for p in storage)
        yield from self._gpu_rules()
        yield from (p.under("cost") for p in self.cost.pool_rules(self._pool_sizes()))

    def _pool_sizes(self) -> dict[str, dict[str, PoolBounds]]:
        """Each region's node pools: the nodes each always runs and its most nodes. The
        system pool runs at least what the pods scheduled on it request."""
        sizes: dict[str, dict[str, PoolBounds]] = {}
        for name in self.regions:
            region = self.region(name)
            zones = max(1, len(region.node_zones))  # no zone is a problem of its own
            system = region.node_pools.system
            shape = load_catalog().system_machines[system.machine_type]
            pods = system_pods(self.mesh, region.cluster, self.workloads, self.intelligence)
            cpu, memory = requested(pods)
            needed = nodes_needed(shape, pods, self.mesh.cni_resources)
            least = max(system.min_nodes * zones, needed)
            why = (
                f"the pods scheduled on it request {cpu:.2f} vCPU, {memory:.2f} GiB:"
                f" {needed} {system.machine_type} node(s)"
                if needed >= system.min_nodes * zones
                else f"minNodes {system.min_nodes} x {zones} zone(s)"
            )
            sizes[name] = {"system": PoolBounds(least, system.max_nodes * zones, why)}
            for pool in region.node_pools.gpu:
                sizes[name][pool.name] = PoolBounds(
                    pool.min_nodes, pool.max_nodes, f"minNodes {pool.min_nodes}"
                )
        return sizes

    def _environment_rules(self) -> Iterator[Problem]:
        reason = self.environment_mismatch_reason
        yield from environment_problems(self.stack, self.environment, reason)
        # The env label follows the environment once the stack's name and it agree.
        label = self.labels.get("env")
        settled = environment_settled(self.stack, self.environment, reason)
        if label and label != self.environment and settled:
            yield Problem(
                "labels.env", "must equal the stack's environment", label, self.environment
            )

    def _region_rules(self, region: RegionConfig) -> Iterator[Problem]:
        catalog = load_catalog()
        pools_at = self._where(region.name, "nodePools")
        rules = region.node_pools.region_rules(region.name, catalog)
        yield from (p.under(pools_at) for p in rules)
        supported = ISTIO_KUBERNETES[self.mesh.istio_minor]
        minor = region.cluster.kubernetes_minor_version
        if minor not in supported:
            yield Problem(
                f"{self._where(region.name, 'cluster')}.kubernetesMinorVersion",
                f"Istio {self.mesh.istio_version} does not support this Kubernetes version",
                minor,
                ", ".join(supported),
            )
        if self.prod_rules_apply:
            redis_at = self._where(region.name, "redis")
            yield from (p.under(redis_at) for p in region.redis.prod_rules(region.name))
        yield from self._zone_rules(region)
        zones = len(region.node_zones)
        if not zones:  # a zonal cluster without a zone: _zone_rules said so
            return
        pods = system_pods(self.mesh, region.cluster, self.workloads, self.intelligence)
        shape = catalog.system_machines[region.node_pools.system.machine_type]
        capacity = system_pool_rules(
            region.name, zones, region.node_pools, shape, pods, self.mesh.cni_resources
        )
        yield from (p.under(pools_at) for p in capacity)

    def _zone_rules(self, region: RegionConfig) -> Iterator[Problem]:
        """A zonal cluster needs a zone of its region that offers every GPU its pools use."""
        if not region.cluster.zonal or region.zone is not None:
            return
        offered = load_catalog().gpus_in(region.name)
        gpus = sorted({pool.accelerator_type for pool in region.node_pools.gpu})
        where = "; ".join(f"{gpu} in {', '.join(offered.get(gpu, ())) or 'none'}" for gpu in gpus)
        yield Problem(
            f"{self._where(region.name, 'cluster')}.zonal",
            f"no zone of {region.name} offers every GPU type the pools use ({where})",
            True,
            "zonal: false (a regional cluster), or GPU pools of one type a zone offers",
        )

    def _network_rules(self) -> Iterator[Problem]:
        """No range of one region overlaps a range of another (the regions share the VPC)."""
        seen: list[tuple[str, Any]] = []
        # Derived plans never overlap each other: check overridden ones against all of them.
        ordered = sorted(self.regions, key=lambda r: self._where(r, "network") != "network")
        for name in ordered:
            at = self._where(name, "network")
            where = at if at != "network" else f"regions[{self.regions.index(name)}] (derived)"
            ranges = [(f"{where}.{k}", n) for k, n in self.region(name).network.ranges().items()]
            yield from overlaps(ranges, seen)
            seen += ranges

    def _unpinned_image_rules(self) -> Iterator[Problem]:
        """Each accepted digest-less image is one the stack uses (a stale entry is refused)."""
        clusters = [self.cluster] + [o.cluster for o in self.region_overrides.values() if o.cluster]
        images = {self.workloads.signal_service.image, self.workloads.triton.image}
        images |= {c.metrics_adapter_image for c in clusters}
        for image in self.unpinned_images:
            if image not in images:
                yield Problem(
                    f"unpinnedImages.{image}",
                    "no image of the stack is this reference",
                    image,
                    ", ".join(sorted(images)),
                )

    def _own_image_rules(self) -> Iterator[Problem]:
        """An image in the stack's own registry is one the image workflow pushed: pinned by
        digest, or tagged `git-<commit>` (a tag it never pushes would never pull)."""
        image = self.workloads.signal_service.image
        if not image.startswith(f"{self.image_registry}/"):
            return
        match = REFERENCE_RE.match(image)
        tag = match["tag"] if match else None
        if digest(image) is None and not (tag and PUSHED_TAG_RE.match(tag)):
            yield Problem(
                "workloads.signalService.image",
                "the image workflow never pushes this tag to the stack's registry",
                image,
                f"{image.split('@')[0].rsplit(':', 1)[0]}@sha256:<digest> (image.yml's pull request "
                "pins it) or :git-<40-hex commit>",
            )

    def _gpu_rules(self) -> Iterator[Problem]:
        """Triton fits the GPU pools of every region; shared GPUs take one GPU per container."""
        triton = self.workloads.triton
        regions = [self.region(r) for r in self.regions]
        shared = any(p.max_shared_clients_per_gpu > 1 for r in regions for p in r.node_pools.gpu)
        # GKE's GPU sharing gives each container one shared GPU: a request of 1 is one slot.
        if shared and triton.gpu_request not in (None, "1"):
            yield Problem(
                "workloads.triton.resources.requests.nvidia.com/gpu",
                "containers on shared GPUs can request only one GPU",
                triton.gpu_request,
                '"1"',
            )
        for region in regions:
            slots = sum(p.slots() for p in region.node_pools.gpu)
            if triton.max_replicas > slots:
                yield Problem(
                    "workloads.triton.maxReplicas",
                    f"more Triton replicas than the GPU pools of {region.name} can hold ({slots})",
                    triton.max_replicas,
                    f"<= {slots}, or larger GPU pools",
                )

    # ---- loading

    @classmethod
    def load(cls, stack: str, values: Mapping[str, Any], source: str | None = None) -> StackConfig:
        """Validate a Pulumi config map (`{"signal-platform:regions": "[...]", ...}`)."""
        source = source or f"Pulumi.{stack}.yaml"
        data, problems = _namespace_values(values)
        # The name/environment mismatch first, from the raw values, so it is reported even
        # when a section fails (rules() says it again once all validate: one line, see
        # ConfigError); prod's rules wait until it is settled (`_context`).
        environment = data.get("environment")
        if environment in typing.get_args(Environment):
            mismatch = environment_problems(stack, environment, data.get(MISMATCH_REASON))
            problems = [p.under(f"{NAMESPACE}:") for p in mismatch] + problems
        model: StackConfig | None = None
        try:
            context = {"stack": _context(stack, data)}
            model = cls.model_validate({"stack": stack, **data}, context=context)
        except ValidationError as exc:
            problems += [p.under(f"{NAMESPACE}:") for p in problems_from(exc, cls)]
        if problems or model is None:
            raise ConfigError(source, problems)
        return model

    @classmethod
    def from_pulumi(cls) -> StackConfig:
        """Read the running program's configuration (what the language host passed in)."""
        import pulumi
        from pulumi.runtime import config as runtime_config

        # The SDK has no public "all keys" accessor; its config map and the env fallback are
        # what pulumi.Config reads, so reading them sees exactly the same values.
        values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
        return cls.load(pulumi.get_stack(), values)


# --------------------------------------------------------------------------- helpers


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _context(stack: str, data: Mapping[str, Any]) -> StackContext:
    """What the sections' rules need to know of the stack, read before it is validated: prod's
    rules apply to a stack that says prod and whose name agrees (or explains why not)."""
    unpinned = data.get("unpinnedImages")
    environment = data.get("environment")
    return StackContext(
        prod=environment == "prod"
        and environment_settled(stack, environment, data.get(MISMATCH_REASON)),
        unpinned_images=unpinned if isinstance(unpinned, dict) else {},
    )


def _unknown_provider_key(key: str, namespace: str, name: str, value: Any) -> Problem:
    """A `gcp:`/`kubernetes:` key its provider does not read, with the closest one it does."""
    keys = sorted(provider_config_keys(namespace))
    close = difflib.get_close_matches(name, keys, n=1)
    hint = f"did you mean {namespace}:{close[0]}?" if close else "no such key"
    package = PROVIDER_PACKAGES[namespace]
    return Problem(
        key,
        f"unknown key, {hint}",
        value,
        f"a key the installed {package} provider reads (its {len(keys)} config keys)",
    )


def _namespace_values(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Our namespace's keys, decoded. Keys in no known namespace, unknown keys of ours and
    keys the gcp/kubernetes providers do not read are problems with the closest valid name."""
    fields = StackConfig.model_fields
    known = sorted({field.alias or name for name, field in fields.items()} - {"stack"})
    data: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in values.items():
        namespace, _, name = key.partition(":")
        if namespace not in KNOWN_NAMESPACES:
            close = difflib.get_close_matches(namespace, KNOWN_NAMESPACES, n=1)
            hint = f", did you mean {close[0]}:{name}?" if close else ""
            allowed = ", ".join(f"{ns}:" for ns in KNOWN_NAMESPACES)
            problems.append(Problem(key, f"unknown namespace {namespace!r}{hint}", value, allowed))
        elif namespace == NAMESPACE and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {NAMESPACE}:{close[0]}?" if close else "no such key"
            problems.append(Problem(key, f"unknown key, {hint}", value, ", ".join(known)))
        elif namespace in PROVIDER_PACKAGES and name not in provider_config_keys(namespace):
            problems.append(_unknown_provider_key(key, namespace, name, value))
        elif namespace == NAMESPACE:
            data[name] = _decode(value)
    gcp_project = values.get("gcp:project")
    if "projectId" not in data and gcp_project is not None:
        data["projectId"] = gcp_project
    elif gcp_project is not None and data["projectId"] != gcp_project:
        problems.append(
            Problem(
                f"{NAMESPACE}:projectId",
                "differs from gcp:project, the project the provider creates resources in",
                data["projectId"],
                str(gcp_project),
            )
        )
    return data, problems
