"""The cost estimate: a planned inventory priced with `tools/pricing.yaml` and usage assumptions.

What exists comes from the plan (resource types and their inputs, camelCase as the engine sees
them); how much of it runs and how much data flows comes from the stack's `cost` config
(`infra.config.CostSettings`); prices come from the dated `pricing.yaml`. Every resource ends in
exactly one of three places: priced line items, `free` (a type that is not billed, or whose
bill is a usage line of its own, each with the reason), or `unpriced` (a type or price the
estimate does not know: listed, never counted as zero). A resource with any part unpriceable
is unpriced as a whole, so the total never holds half a resource.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from tools.engine import parse_overrides, read_project, read_stack_config
from tools.inventory import UNKNOWN, Inventory, Resource

if TYPE_CHECKING:  # infra.config is imported lazily: see usage_from_stack.
    from infra.config import CostSettings

PRICING_PATH = Path(__file__).with_name("pricing.yaml")
BUDGET_POLICY = "cost-monthly-budget"
_ZONE_RE = re.compile(r"^([a-z]+-[a-z]+\d+)-[a-z]$")
_REGION_RE = re.compile(r"^[a-z]+-[a-z]+\d+$")
_KEY_RING_LOCATION = re.compile(r"/locations/([^/]+)/keyRings/")
# GKE's default machine type and boot disk when a node config leaves them out.
DEFAULT_MACHINE_TYPE = "e2-medium"
DEFAULT_DISK_GIB = 100
DEFAULT_DISK_TYPE = "pd-balanced"
# A regional cluster without nodeLocations runs its nodes in three of the region's zones.
DEFAULT_REGIONAL_ZONES = 3


class PricingError(Exception):
    """pricing.yaml is malformed."""


class Unpriceable(Exception):
    """This resource (or a part of it) has no price: it goes to the unpriced list."""


# --------------------------------------------------------------------------- pricing.yaml


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class PriceItem(_Model):
    unit: str
    source: str = Field(pattern=r"^https://cloud\.google\.com/")
    prices: dict[str, float]
    free_quantity: float = Field(default=0, ge=0)
    note: str = ""


class MachineShape(_Model):
    family: str
    vcpus: int = Field(gt=0)
    memory_gib: float = Field(gt=0)
    gpu: str | None = None
    gpus: int = Field(default=0, ge=0)


class MachineTypes(_Model):
    source: str = Field(pattern=r"^https://cloud\.google\.com/")
    shapes: dict[str, MachineShape]


class Pricing(_Model):
    as_of: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    currency: str
    hours_per_month: float = Field(gt=0)
    machine_types: MachineTypes
    items: dict[str, PriceItem]

    def item(self, item_id: str) -> PriceItem:
        try:
            return self.items[item_id]
        except KeyError:
            raise Unpriceable(f"pricing.yaml has no {item_id}") from None

    def price(self, item_id: str, location: str | None) -> float:
        """The unit price at a location (region or multi-region), else the global price."""
        item = self.item(item_id)
        for key in _location_keys(location):
            if key in item.prices:
                return item.prices[key]
        where = location or "an unknown location"
        raise Unpriceable(f"pricing.yaml has no {item_id} price for {where}")

    def shape(self, machine_type: str) -> MachineShape:
        shape = self.machine_types.shapes.get(machine_type)
        if shape is None:
            raise Unpriceable(f"machine type {machine_type} is not in pricing.yaml")
        return shape


def _location_keys(location: str | None) -> list[str]:
    if not location:
        return ["global"]
    return [location, location.upper(), location.lower(), "global"]


@cache
def load_pricing(path: Path = PRICING_PATH) -> Pricing:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PricingError(f"{path}: {exc}") from exc
    try:
        return Pricing.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r:.60})"
            for err in exc.errors()
        ]
        raise PricingError(f"{path}: " + "; ".join(problems)) from exc


# --------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class LineItem:
    item: str  # what is billed, for a reader
    region: str  # a region, a multi-region (US) or "global"
    quantity: float
    unit: str
    unit_usd: float
    monthly_usd: float
    price_id: str  # the pricing.yaml item
    source: str  # the pricing page
    resource: str | None = None  # URN of the resource billed, None for stack usage lines
    basis: str = ""  # the usage assumption behind the quantity


@dataclass(frozen=True)
class UnpricedResource:
    type: str
    name: str
    urn: str
    reason: str


@dataclass(frozen=True)
class FreeType:
    type: str
    count: int
    reason: str


@dataclass
class Estimate:
    stack: str
    as_of: str
    currency: str
    hours_per_month: float
    signals_per_month: int
    budget_usd: float | None
    lines: list[LineItem] = field(default_factory=list)
    unpriced: list[UnpricedResource] = field(default_factory=list)
    free: list[FreeType] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(line.monthly_usd for line in self.lines)

    @property
    def per_signal(self) -> float:
        return self.total / self.signals_per_month

    def by_region(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for line in self.lines:
            totals[line.region] = totals.get(line.region, 0.0) + line.monthly_usd
        return dict(sorted(totals.items()))

    def by_price(self) -> dict[tuple[str, str], float]:
        """Monthly cost by (line item, region): what a cost delta compares."""
        totals: dict[tuple[str, str], float] = {}
        for line in self.lines:
            key = (line.item, line.region)
            totals[key] = totals.get(key, 0.0) + line.monthly_usd
        return totals

    @property
    def over_budget(self) -> bool:
        return self.budget_usd is not None and self.total > self.budget_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "asOf": self.as_of,
            "currency": self.currency,
            "hoursPerMonth": self.hours_per_month,
            "totalMonthlyUsd": round(self.total, 2),
            "signalsPerMonth": self.signals_per_month,
            "perSignalUsd": round(self.per_signal, 6),
            "budgetMonthlyUsd": self.budget_usd,
            "byRegion": {k: round(v, 2) for k, v in self.by_region().items()},
            "lines": [_camel_dict(asdict(line)) for line in self.lines],
            "unpriced": [asdict(u) for u in self.unpriced],
            "free": [asdict(f) for f in self.free],
        }

    def render_text(self) -> str:
        return "\n".join(_render(self, markdown=False))

    def render_markdown(self) -> str:
        return "\n".join(_render(self, markdown=True))


def _camel_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {to_camel(k): v for k, v in row.items()}


def budget_policy_config(estimate: Estimate) -> dict[str, Any]:
    """The policy-pack config that hands the estimate to the stack-level budget rule
    (`cost-monthly-budget`); empty when the stack declares no budget."""
    if estimate.budget_usd is None:
        return {}
    return {
        BUDGET_POLICY: {
            "estimatedMonthlyUsd": round(estimate.total, 2),
            "budgetMonthlyUsd": float(estimate.budget_usd),
        }
    }


# --------------------------------------------------------------------------- usage


@dataclass(frozen=True)
class StackUsage:
    usage: CostSettings
    budget_usd: float | None


def usage_from_values(values: Mapping[str, str], project: str, source: str) -> StackUsage:
    """The `<project>:cost` and `<project>:budget` keys of a stack's config (as the language
    host passes it), validated; defaults where absent. Bad settings raise
    `app.config_errors.ConfigError` (a ValueError): one line per problem."""
    # Imported here, not at module level: `python -m tools plan` runs other programs (a base
    # ref's `infra` package) in this process, which must find no `infra` already imported.
    from app.config_errors import ConfigError, Problem, load_model
    from infra.config import CostSettings

    raw_cost = _decoded(values.get(f"{project}:cost")) or {}
    usage = load_model(CostSettings, source, raw_cost, root=f"{project}:cost")
    # Only the budget's amount is the estimate's business (the program validates the rest).
    budget = _decoded(values.get(f"{project}:budget"))
    monthly = budget.get("monthlyUsd") if isinstance(budget, dict) else None
    if monthly is None:
        return StackUsage(usage, None)
    if (
        isinstance(monthly, bool)
        or not isinstance(monthly, int | float)
        or not 0 < monthly < math.inf
    ):
        raise ConfigError(
            source,
            [
                Problem(
                    f"{project}:budget.monthlyUsd", "not a budget", monthly, "a finite number > 0"
                )
            ],
        )
    return StackUsage(usage, float(monthly))


def usage_from_stack(
    program_dir: Path, stack: str, config_overrides: Iterable[str] | None = None
) -> StackUsage:
    project = read_project(Path(program_dir))
    values = read_stack_config(project.root / f"Pulumi.{stack}.yaml", project.name)
    values.update(parse_overrides(list(config_overrides or []), project.name))
    return usage_from_values(values, project.name, f"Pulumi.{stack}.yaml")


def _decoded(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


# --------------------------------------------------------------------------- pricing a plan

# Types that are never billed, or whose bill is a usage line priced elsewhere: explicit, so a
# new billable type is never silently free.
FREE_TYPES: dict[str, str] = {
    "pulumi:pulumi:Stack": "Pulumi bookkeeping",
    "gcp:projects/service:Service": "enabling an API is free",
    "gcp:serviceaccount/account:Account": "service accounts are free",
    "gcp:compute/network:Network": "VPC networks are free",
    "gcp:compute/subnetwork:Subnetwork": "subnets are free (flow logs are in the logging line)",
    "gcp:compute/firewall:Firewall": "VPC firewall rules are free",
    "gcp:compute/router:Router": "Cloud Router without BGP sessions is free (NAT priced apart)",
    "gcp:compute/route:Route": "static routes are free",
    "gcp:kms/keyRing:KeyRing": "key rings are free (key versions are priced)",
    "gcp:pubsub/schema:Schema": "Pub/Sub schemas are free",
    "gcp:pubsub/topic:Topic": "priced in the Pub/Sub throughput line",
    "gcp:pubsub/subscription:Subscription": "priced in the Pub/Sub throughput line",
    "gcp:bigquery/table:Table": "priced in the BigQuery storage and query lines",
    "gcp:monitoring/notificationChannel:NotificationChannel": "notification channels are free",
    "gcp:monitoring/customService:CustomService": "services and SLOs are free",
    "gcp:monitoring/slo:Slo": "services and SLOs are free",
    "gcp:monitoring/dashboard:Dashboard": "dashboards are free",
    "gcp:billing/budget:Budget": "budgets are free",
    "gcp:logging/projectSink:ProjectSink": "log routing is free (the destination is priced)",
    "gcp:projects/iAMAuditConfig:IAMAuditConfig": "audit log volume is in the logging line",
    "gcp:networkconnectivity/serviceConnectionPolicy:ServiceConnectionPolicy": (
        "service connection policies are free (the Redis nodes are priced)"
    ),
}
_IAM_TYPE = re.compile(r"(IAM|Iam)(Member|Binding|Policy)$")


def _free_reason(resource: Resource) -> str | None:
    if resource.type in FREE_TYPES:
        return FREE_TYPES[resource.type]
    if not resource.custom:
        return "component: groups resources, billed through its children"
    if resource.type.startswith("pulumi:providers:"):
        return "provider configuration"
    if resource.type.startswith("kubernetes:"):
        return "Kubernetes objects run on the node pools, which are priced"
    if resource.type.startswith("gcp:") and _IAM_TYPE.search(resource.type):
        return "IAM grants are free"
    return None


@dataclass
class _Pricer:
    """The state of one pricing pass: the plan, prices, usage and what was found."""

    inventory: Inventory
    pricing: Pricing
    usage: CostSettings
    regions: dict[str, str | None]
    lines: list[LineItem] = field(default_factory=list)
    unpriced: list[UnpricedResource] = field(default_factory=list)
    nodes_by_region: dict[str, float] = field(default_factory=dict)

    @property
    def hours(self) -> float:
        return self.pricing.hours_per_month

    def line(
        self,
        item: str,
        region: str,
        quantity: float,
        price_id: str,
        resource: Resource | None,
        basis: str = "",
        unit_usd: float | None = None,
        unit: str | None = None,
    ) -> LineItem:
        """A line priced with one pricing.yaml item, or with `unit_usd` (and `unit`) computed
        from several items, `price_id` naming the first of them."""
        entry = self.pricing.item(price_id)
        if unit_usd is None:
            unit_usd = self.pricing.price(price_id, region)
        return LineItem(
            item=item,
            region=region,
            quantity=quantity,
            unit=unit or entry.unit,
            unit_usd=unit_usd,
            monthly_usd=quantity * unit_usd,
            price_id=price_id,
            source=entry.source,
            resource=resource.urn if resource else None,
            basis=basis,
        )

    def region_of(self, resource: Resource) -> str:
        region = self.regions.get(resource.urn)
        if region is None:
            raise Unpriceable("its region is unknown (no region, location or zone input)")
        return region


PricerFn = Callable[[_Pricer, Resource], list[LineItem]]


def _node_pool_zones(p: _Pricer, resource: Resource, location: Any) -> int:
    locations = resource.inputs.get("nodeLocations")
    if isinstance(locations, list) and locations:
        return len(locations)
    for urn in resource.options.get("dependencies", []):
        dependency = p.inventory.by_urn().get(urn)
        if dependency is not None and dependency.type == "gcp:container/cluster:Cluster":
            cluster_zones = dependency.inputs.get("nodeLocations")
            if isinstance(cluster_zones, list) and cluster_zones:
                return len(cluster_zones)
    if isinstance(location, str) and _ZONE_RE.match(location):
        return 1
    return DEFAULT_REGIONAL_ZONES


def _pool_name(resource: Resource) -> str:
    name = resource.inputs.get("name")
    return name if isinstance(name, str) and name != UNKNOWN else resource.name


def _average_nodes(p: _Pricer, resource: Resource, region: str, zones: int) -> tuple[float, str]:
    """The pool's average node count across its zones, and where that number came from."""
    name = _pool_name(resource)
    for key in (f"{region}/{name}", name):
        if key in p.usage.average_nodes:
            return p.usage.average_nodes[key], f"cost.averageNodes.{key}"
    autoscaling = resource.inputs.get("autoscaling")
    if isinstance(autoscaling, dict) and autoscaling:
        if "totalMinNodeCount" in autoscaling or "totalMaxNodeCount" in autoscaling:
            low = _number(autoscaling.get("totalMinNodeCount", 0))
            high = _number(autoscaling.get("totalMaxNodeCount", low))
            scope = "total"
        else:
            low = _number(autoscaling.get("minNodeCount", 0)) * zones
            high = _number(autoscaling.get("maxNodeCount", 0)) * zones
            scope = f"{zones} zones"
        average = low + p.usage.utilisation * (high - low)
        return average, f"{low:g}..{high:g} nodes ({scope}) at utilisation {p.usage.utilisation:g}"
    fixed = resource.inputs.get("nodeCount", resource.inputs.get("initialNodeCount", 0))
    return _number(fixed) * zones, f"{_number(fixed):g} nodes per zone x {zones} zones"


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unpriceable(f"node count {value!r} is not a number (unknown until apply?)")
    return float(value)


def _machine_hourly(
    p: _Pricer, node_config: Mapping[str, Any], region: str, model: str
) -> tuple[float, str, str]:
    """One node's hourly price under a pricing model (vCPUs + memory + GPUs), a description of
    the node, and the first pricing item it used."""
    machine_type = node_config.get("machineType") or DEFAULT_MACHINE_TYPE
    shape = p.pricing.shape(machine_type)
    first = f"compute.{shape.family}.vcpu.{model}"
    hourly = shape.vcpus * p.pricing.price(first, region)
    hourly += shape.memory_gib * p.pricing.price(f"compute.{shape.family}.memory.{model}", region)
    gpu_type, gpus = shape.gpu, shape.gpus
    accelerators = node_config.get("guestAccelerators")
    if isinstance(accelerators, list) and accelerators:
        counted = [a for a in accelerators if isinstance(a, dict)]
        gpu_type = str(counted[0].get("type")) if counted else gpu_type
        # A G2 machine type carries its GPUs: the accelerators list names them, never adds.
        gpus = max(gpus, int(sum(_number(a.get("count", 1)) for a in counted)))
    description = machine_type
    if gpu_type and gpus:
        hourly += gpus * p.pricing.price(f"gpu.{gpu_type}.{model}", region)
        description += f" + {gpus} x {gpu_type}"
    return hourly, description, first


def _nodes(
    p: _Pricer,
    resource: Resource,
    label: str,
    node_config: Mapping[str, Any],
    region: str,
    nodes: float,
    basis: str,
) -> list[LineItem]:
    """Node-hours (the spot share at spot prices, the rest on-demand) and their boot disks."""
    spot = bool(node_config.get("spot") or node_config.get("preemptible"))
    on_demand, shape, on_demand_id = _machine_hourly(p, node_config, region, "onDemand")
    node_hours = nodes * p.hours
    lines: list[LineItem] = []
    if spot:
        spot_hourly, _, spot_id = _machine_hourly(p, node_config, region, "spot")
        share = p.usage.spot_share
        lines.append(
            p.line(
                f"{label}: {shape} spot",
                region,
                node_hours * share,
                spot_id,
                resource,
                f"{nodes:g} avg nodes ({basis}), {share:.0%} of hours on spot",
                unit_usd=spot_hourly,
                unit="node-hour",
            )
        )
        if share < 1:
            lines.append(
                p.line(
                    f"{label}: {shape} on-demand fallback",
                    region,
                    node_hours * (1 - share),
                    on_demand_id,
                    resource,
                    f"{1 - share:.0%} of hours without spot capacity run on-demand",
                    unit_usd=on_demand,
                    unit="node-hour",
                )
            )
    else:
        lines.append(
            p.line(
                f"{label}: {shape} on-demand",
                region,
                node_hours,
                on_demand_id,
                resource,
                f"{nodes:g} avg nodes ({basis})",
                unit_usd=on_demand,
                unit="node-hour",
            )
        )
    disk_gib = _number(node_config.get("diskSizeGb", DEFAULT_DISK_GIB))
    disk_type = node_config.get("diskType") or DEFAULT_DISK_TYPE
    lines.append(
        p.line(
            f"{label}: boot disks {disk_type}",
            region,
            nodes * disk_gib,
            f"disk.{disk_type}",
            resource,
            f"{nodes:g} nodes x {disk_gib:g} GiB",
        )
    )
    p.nodes_by_region[region] = p.nodes_by_region.get(region, 0.0) + nodes
    return lines


def _price_node_pool(p: _Pricer, resource: Resource) -> list[LineItem]:
    region = p.region_of(resource)
    zones = _node_pool_zones(p, resource, resource.inputs.get("location"))
    nodes, basis = _average_nodes(p, resource, region, zones)
    node_config = resource.inputs.get("nodeConfig") or {}
    label = f"GKE node pool {_pool_name(resource)}"
    return _nodes(p, resource, label, node_config, region, nodes, basis)


def _price_cluster(p: _Pricer, resource: Resource) -> list[LineItem]:
    region = p.region_of(resource)
    inputs = resource.inputs
    if inputs.get("enableAutopilot"):
        raise Unpriceable("Autopilot pod resources are not priced (only Standard clusters are)")
    lines = [
        p.line(
            f"GKE cluster management fee ({inputs.get('name') or resource.name})",
            region,
            p.hours,
            "gke.clusterFee",
            resource,
        )
    ]
    if not inputs.get("removeDefaultNodePool") and not inputs.get("nodePools"):
        zones = _node_pool_zones(p, resource, inputs.get("location"))
        count = _number(inputs.get("initialNodeCount", 1))
        nodes = count * zones
        lines += _nodes(
            p,
            resource,
            "GKE default node pool",
            inputs.get("nodeConfig") or {},
            region,
            nodes,
            f"{count:g} per zone x {zones} zones",
        )
    return lines


def _price_redis_cluster(p: _Pricer, resource: Resource) -> list[LineItem]:
    inputs = resource.inputs
    region = inputs.get("region") or p.region_of(resource)
    node_type = inputs.get("nodeType") or "REDIS_HIGHMEM_MEDIUM"
    shards = _number(inputs.get("shardCount"))
    replicas = _number(inputs.get("replicaCount", 0))
    nodes = shards * (1 + replicas)
    persistence = (inputs.get("persistenceConfig") or {}).get("mode")
    if persistence == "AOF":
        p.unpriced.append(
            UnpricedResource(
                resource.type,
                resource.name,
                resource.urn,
                "AOF persistence storage is not priced (its nodes are)",
            )
        )
    return [
        p.line(
            f"Memorystore Redis Cluster {inputs.get('name') or resource.name}: {node_type}",
            region,
            nodes * p.hours,
            f"redis.cluster.{node_type}",
            resource,
            f"{shards:g} shards x (1 primary + {replicas:g} replicas) = {nodes:g} nodes",
        )
    ]


def _price_router_nat(p: _Pricer, resource: Resource) -> list[LineItem]:
    region = resource.inputs.get("region") or p.region_of(resource)
    vms = p.nodes_by_region.get(region, 0.0)
    if vms <= 32:
        gateway = p.line(
            "Cloud NAT gateway",
            region,
            vms * p.hours,
            "nat.gateway.vm",
            resource,
            f"{vms:g} VMs (the region's average nodes)",
        )
    else:
        gateway = p.line(
            "Cloud NAT gateway",
            region,
            p.hours,
            "nat.gateway.max",
            resource,
            f"{vms:g} VMs: more than 32, the capped hourly rate",
        )
    manual = resource.inputs.get("natIpAllocateOption") == "MANUAL_ONLY"
    ips = len(resource.inputs.get("natIps") or []) if manual else 1
    return [
        gateway,
        p.line(
            "Cloud NAT data processing",
            region,
            p.usage.nat_gib_per_month,
            "nat.dataProcessing",
            resource,
            "cost.natGibPerMonth",
        ),
        p.line(
            "Cloud NAT IP addresses",
            region,
            ips * p.hours,
            "nat.ipAddress",
            resource,
            f"{ips} address(es)" + ("" if manual else " (AUTO_ONLY allocates at least one)"),
        ),
    ]


def _price_crypto_key(p: _Pricer, resource: Resource) -> list[LineItem]:
    if resource.inputs.get("skipInitialVersionCreation"):
        return []
    template = resource.inputs.get("versionTemplate") or {}
    level = template.get("protectionLevel") or "SOFTWARE"
    ring = _KEY_RING_LOCATION.search(str(resource.inputs.get("keyRing") or ""))
    region = _display_location(ring.group(1)) if ring else p.regions.get(resource.urn) or "global"
    return [
        p.line(
            f"Cloud KMS key {resource.inputs.get('name') or resource.name} ({level})",
            region,
            1,
            f"kms.keyVersion.{level}",
            resource,
            "one active key version",
            unit_usd=p.pricing.price(f"kms.keyVersion.{level}", "global"),
        )
    ]


def _price_bucket(p: _Pricer, resource: Resource) -> list[LineItem]:
    location = str(resource.inputs.get("location") or "US")
    storage_class = resource.inputs.get("storageClass") or "STANDARD"
    return [
        p.line(
            f"Cloud Storage bucket {resource.inputs.get('name') or resource.name}",
            _display_location(location),
            p.usage.bucket_storage_gib,
            f"storage.{storage_class}",
            resource,
            "cost.bucketStorageGib",
        )
    ]


def _price_alert_policy(p: _Pricer, resource: Resource) -> list[LineItem]:
    conditions = resource.inputs.get("conditions") or []
    return [
        p.line(
            f"Cloud Monitoring alert conditions ({resource.name})",
            "global",
            len(conditions),
            "monitoring.alertCondition",
            resource,
            f"{len(conditions)} condition(s)",
        )
    ]


def _price_address(p: _Pricer, resource: Resource) -> list[LineItem]:
    if resource.inputs.get("addressType") == "INTERNAL":
        return []
    region = p.regions.get(resource.urn) or "global"
    return [
        p.line(
            f"static external IP {resource.inputs.get('name') or resource.name}",
            region,
            p.hours,
            "compute.externalIp",
            resource,
            "in use all month",
            unit_usd=p.pricing.price("compute.externalIp", "global"),
        )
    ]


def _display_location(location: str) -> str:
    lowered = location.lower()
    if _REGION_RE.match(lowered):
        return lowered
    zone = _ZONE_RE.match(lowered)
    return zone.group(1) if zone else location.upper()


PRICERS: dict[str, PricerFn] = {
    "gcp:container/cluster:Cluster": _price_cluster,
    "gcp:container/nodePool:NodePool": _price_node_pool,
    "gcp:redis/cluster:Cluster": _price_redis_cluster,
    "gcp:compute/routerNat:RouterNat": _price_router_nat,
    "gcp:kms/cryptoKey:CryptoKey": _price_crypto_key,
    "gcp:storage/bucket:Bucket": _price_bucket,
    "gcp:monitoring/alertPolicy:AlertPolicy": _price_alert_policy,
    "gcp:compute/address:Address": _price_address,
    "gcp:compute/globalAddress:GlobalAddress": _price_address,
}
# Node pools first: NAT gateways are priced by the nodes they serve.
_ORDER = {"gcp:container/nodePool:NodePool": 0, "gcp:container/cluster:Cluster": 0}


def _stack_usage_lines(p: _Pricer) -> list[LineItem]:
    """Usage the stack pays for once, not per resource: data stored, scanned, sent, logged."""
    lines: list[LineItem] = []
    usage = p.usage
    datasets = p.inventory.of_type("gcp:bigquery/dataset:Dataset")
    if datasets:
        share = usage.bigquery_storage_gib / len(datasets)
        for dataset in datasets:
            location = _display_location(str(dataset.inputs.get("location") or "US"))
            model = dataset.inputs.get("storageBillingModel") or "LOGICAL"
            lines.append(
                _free_tier_line(
                    p,
                    f"BigQuery {model.lower()} storage ({dataset.inputs.get('datasetId') or dataset.name})",
                    location,
                    share,
                    f"bigquery.storage.{model}",
                    dataset,
                    "cost.bigqueryStorageGib",
                )
            )
        first = datasets[0]
        lines.append(
            _free_tier_line(
                p,
                "BigQuery on-demand queries",
                _display_location(str(first.inputs.get("location") or "US")),
                usage.bigquery_scanned_tib_per_month,
                "bigquery.query.onDemand",
                None,
                "cost.bigqueryScannedTibPerMonth",
            )
        )
    if p.inventory.of_type("gcp:pubsub/topic:Topic"):
        lines.append(
            _free_tier_line(
                p,
                "Pub/Sub throughput",
                "global",
                usage.pubsub_gib_per_month / 1024,
                "pubsub.throughput",
                None,
                f"cost.pubsubGibPerMonth = {usage.pubsub_gib_per_month:g} GiB",
            )
        )
    repositories = p.inventory.of_type("gcp:artifactregistry/repository:Repository")
    if repositories:
        lines.append(
            _free_tier_line(
                p,
                f"Artifact Registry storage ({len(repositories)} repositories)",
                "global",
                usage.artifact_storage_gib * len(repositories),
                "artifactregistry.storage",
                None,
                "cost.artifactStorageGib per repository",
            )
        )
    lines.append(
        _free_tier_line(
            p,
            "Cloud Logging ingestion",
            "global",
            usage.logging_gib_per_month,
            "logging.ingestion",
            None,
            "cost.loggingGibPerMonth",
        )
    )
    return lines


def _retention_notes(inventory: Inventory) -> list[UnpricedResource]:
    """Pub/Sub storage of retained messages is billed per GiB-month on top of throughput; the
    estimate has no volume for it, so it says so instead of counting it as zero."""
    notes = []
    for resource in inventory.resources:
        retains = (
            resource.type == "gcp:pubsub/topic:Topic"
            and resource.inputs.get("messageRetentionDuration")
        ) or (
            resource.type == "gcp:pubsub/subscription:Subscription"
            and resource.inputs.get("retainAckedMessages")
        )
        if retains:
            notes.append(
                UnpricedResource(
                    resource.type,
                    resource.name,
                    resource.urn,
                    "retained-message storage is not priced (its throughput is)",
                )
            )
    return notes


def _free_tier_line(
    p: _Pricer,
    item: str,
    region: str,
    quantity: float,
    price_id: str,
    resource: Resource | None,
    basis: str,
) -> LineItem:
    free = p.pricing.item(price_id).free_quantity
    billable = max(0.0, quantity - free)
    if free:
        basis += f"; {min(quantity, free):g} of {quantity:g} in the free tier"
    return p.line(item, region, billable, price_id, resource, basis)


def estimate(
    inventory: Inventory,
    usage: CostSettings,
    budget_usd: float | None = None,
    pricing: Pricing | None = None,
) -> Estimate:
    """Price every resource of a plan for one month."""
    pricing = pricing or load_pricing()
    p = _Pricer(inventory, pricing, usage, inventory.regions())
    free: dict[str, tuple[int, str]] = {}
    billable = sorted(
        (r for r in inventory.resources if _free_reason(r) is None),
        key=lambda r: _ORDER.get(r.type, 1),
    )
    for resource in inventory.resources:
        reason = _free_reason(resource)
        if reason is not None:
            count, _ = free.get(resource.type, (0, reason))
            free[resource.type] = (count + 1, reason)
    for resource in billable:
        if resource.type == "gcp:bigquery/dataset:Dataset":
            continue  # priced in the stack's usage lines below
        if resource.type == "gcp:artifactregistry/repository:Repository":
            continue
        pricer = PRICERS.get(resource.type)
        if pricer is None:
            p.unpriced.append(
                UnpricedResource(
                    resource.type, resource.name, resource.urn, "no price for this type"
                )
            )
            continue
        try:
            lines = pricer(p, resource)
        except Unpriceable as exc:
            p.unpriced.append(
                UnpricedResource(resource.type, resource.name, resource.urn, str(exc))
            )
            continue
        if lines:
            p.lines += lines
        else:  # e.g. an internal address, a key without versions
            count, _ = free.get(resource.type, (0, ""))
            free[resource.type] = (count + 1, "nothing billable with these inputs")
    p.unpriced += _retention_notes(inventory)
    try:
        p.lines += _stack_usage_lines(p)
    except Unpriceable as exc:
        p.unpriced.append(UnpricedResource("(stack usage)", inventory.stack, "", str(exc)))
    for covered in ("gcp:bigquery/dataset:Dataset", "gcp:artifactregistry/repository:Repository"):
        resources = inventory.of_type(covered)
        if resources and all(u.type != "(stack usage)" for u in p.unpriced):
            free[covered] = (len(resources), "priced in the stack's usage lines")
    return Estimate(
        stack=inventory.stack,
        as_of=pricing.as_of,
        currency=pricing.currency,
        hours_per_month=pricing.hours_per_month,
        signals_per_month=usage.signals_per_month,
        budget_usd=budget_usd,
        lines=p.lines,
        unpriced=p.unpriced,
        free=[FreeType(t, n, reason) for t, (n, reason) in sorted(free.items())],
    )


# --------------------------------------------------------------------------- rendering


def usd(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def unit_usd(value: float) -> str:
    return f"${value:,.6f}".rstrip("0").rstrip(".") if value < 1 else f"${value:,.4f}"


def _render(e: Estimate, markdown: bool) -> list[str]:
    header = (
        f"Cost estimate for stack {e.stack}: {usd(e.total)}/month "
        f"(list prices as of {e.as_of}, {e.hours_per_month:g} h/month, {e.currency})"
    )
    per_signal = (
        f"Cost per trading signal at {e.signals_per_month:,} signals/month: ${e.per_signal:,.4f}"
    )
    budget = ""
    if e.budget_usd is not None:
        share = e.total / e.budget_usd if e.budget_usd else math.inf
        state = "OVER BUDGET" if e.over_budget else "within budget"
        budget = f"Budget: {usd(e.budget_usd)}/month, {share:.0%} used ({state})"
    rows = [
        (
            line.region,
            line.item,
            f"{line.quantity:,.2f} {line.unit}",
            unit_usd(line.unit_usd),
            usd(line.monthly_usd),
        )
        for line in sorted(e.lines, key=lambda x: (x.region, x.item))
    ]
    subtotals = [
        (region, f"subtotal {region}", "", "", usd(v)) for region, v in e.by_region().items()
    ]
    out: list[str] = []
    if markdown:
        out += [f"**{header}**", "", per_signal + "  ", budget, ""]
        out += ["| Region | Line item | Quantity | Unit price | Monthly |", "|---|---|--:|--:|--:|"]
        out += [f"| {' | '.join(_md(c) for c in row)} |" for row in rows]
        out += [f"| {r} | **subtotal** | | | {v} |" for r, _, _, _, v in subtotals]
        out += [f"| | **total** | | | **{usd(e.total)}** |"]
    else:
        widths = [
            max(
                len(str(r[i]))
                for r in [*rows, ("region", "line item", "quantity", "unit price", "monthly")]
            )
            for i in range(5)
        ]
        widths[1] = max(widths[1], max((len(s[1]) for s in subtotals), default=0))

        def fmt(row: tuple[str, ...]) -> str:
            return (
                f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  "
                f"{row[3]:>{widths[3]}}  {row[4]:>{widths[4]}}"
            ).rstrip()

        out += [header, ""]
        out += [fmt(("region", "line item", "quantity", "unit price", "monthly"))]
        out += [fmt(row) for row in rows]
        out += [""] + [fmt(s) for s in subtotals]
        out += [fmt(("", "total", "", "", usd(e.total))), "", per_signal]
        if budget:
            out.append(budget)
    if e.unpriced:
        out += ["", f"Unpriced, not in the total ({len(e.unpriced)}):"]
        bullet = "- " if markdown else "  "
        out += [f"{bullet}{_code(u.type, markdown)} {u.name}: {u.reason}" for u in e.unpriced]
    if e.free:
        total_free = sum(f.count for f in e.free)
        out += [
            "",
            f"Free or priced in a usage line: {total_free} resources of {len(e.free)} types",
        ]
        if not markdown:
            out += [f"  {f.type} x{f.count}: {f.reason}" for f in e.free]
    return out


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str, markdown: bool) -> str:
    return f"`{text}`" if markdown else text


def stack_budget_config(
    inventory: Inventory, program_dir: Path, config_overrides: Iterable[str] | None = None
) -> dict[str, Any]:
    """The budget rule's policy config for a planned stack, priced with its own cost config:
    what `tools check` hands the pack so `cost-monthly-budget` sees the estimate."""
    stack_usage = usage_from_stack(program_dir, inventory.stack, config_overrides)
    return budget_policy_config(estimate(inventory, stack_usage.usage, stack_usage.budget_usd))
