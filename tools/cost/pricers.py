"""Pricing a plan: one pricer per billable resource type, the stack's usage lines, and the pass
that puts every resource in exactly one place.

Each resource ends priced (line items), `free` (a type that is not billed, or whose bill is a
usage line of its own, each with the reason) or `unpriced` (a type or price the estimate does
not know: listed, never counted as zero). A resource with any part unpriceable is unpriced as
a whole, so the total never holds half a resource. What exists comes from the plan; how much of
it runs and how much data flows comes from the stack's `cost` config; prices from pricing.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tools.cost.estimate import Category, Estimate, FreeType, LineItem, UnpricedResource
from tools.cost.schema import Pricing, Unpriceable, load_pricing
from tools.inventory import UNKNOWN, Inventory, Resource

if TYPE_CHECKING:  # infra.config is imported lazily: see tools.cost.usage.
    from infra.config import CostSettings

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
GKE_FREE_TIER = "gke.freeTier"
_ZONE_RE = re.compile(r"^([a-z]+-[a-z]+\d+)-[a-z]$")
_REGION_RE = re.compile(r"^[a-z]+-[a-z]+\d+$")
_KEY_RING_LOCATION = re.compile(r"/locations/([^/]+)/keyRings/")
# GKE's default machine type and boot disk when a node config leaves them out.
DEFAULT_MACHINE_TYPE = "e2-medium"
DEFAULT_DISK_GIB = 100
DEFAULT_DISK_TYPE = "pd-balanced"
# A regional cluster without nodeLocations runs its nodes in three of the region's zones.
DEFAULT_REGIONAL_ZONES = 3

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
    "gcp:projects/serviceIdentity:ServiceIdentity": "service agents are free",
    "gcp:binaryauthorization/policy:Policy": "Binary Authorization for GKE has no charge",
    "gcp:gkehub/membership:Membership": (
        "fleet membership and Connect gateway are free for GKE clusters without GKE Enterprise"
    ),
    "gcp:storage/bucketObject:BucketObject": "a small file in a bucket whose storage is priced",
}
# Billed, but by the stack's usage lines (data stored, images kept), not per resource.
USAGE_TYPES = ("gcp:bigquery/dataset:Dataset", "gcp:artifactregistry/repository:Repository")
_IAM_TYPE = re.compile(r"(IAM|Iam)(Member|Binding|Policy)$")


def free_reason(resource: Resource) -> str | None:
    if resource.type in FREE_TYPES:
        return FREE_TYPES[resource.type]
    if not resource.custom:
        return "component: groups resources, billed through its children"
    if resource.type.startswith("pulumi:providers:"):
        return "provider configuration"
    if resource.type.startswith("kubernetes:"):
        return "Kubernetes objects run on the node pools, which are priced"
    if resource.type.startswith("time:"):
        return "a delay or timestamp in the deploy itself: nothing runs or is billed in the cloud"
    if resource.type.startswith("gcp:") and _IAM_TYPE.search(resource.type):
        return "IAM grants are free"
    return None


@dataclass
class Pricer:
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
        category: Category,
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
            category=category,
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

    def cluster_of(self, pool: Resource) -> Resource | None:
        """The cluster a node pool belongs to (the pool depends on it)."""
        for urn in pool.options.get("dependencies", []):
            dependency = self.inventory.by_urn().get(urn)
            if dependency is not None and dependency.type == CLUSTER:
                return dependency
        return None


PricerFn = Callable[[Pricer, Resource], list[LineItem]]


# --------------------------------------------------------------------------- GKE


def _node_pool_zones(p: Pricer, resource: Resource, location: Any) -> int:
    locations = resource.inputs.get("nodeLocations")
    if isinstance(locations, list) and locations:
        return len(locations)
    cluster = p.cluster_of(resource) if resource.type == NODE_POOL else None
    cluster_zones = cluster.inputs.get("nodeLocations") if cluster else None
    if isinstance(cluster_zones, list) and cluster_zones:
        return len(cluster_zones)
    if isinstance(location, str) and _ZONE_RE.match(location):
        return 1
    return DEFAULT_REGIONAL_ZONES


def _pool_name(resource: Resource) -> str:
    name = resource.inputs.get("name")
    return name if isinstance(name, str) and name != UNKNOWN else resource.name


def _average_nodes(p: Pricer, resource: Resource, region: str, zones: int) -> tuple[float, str]:
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


def _is_spot(node_config: Mapping[str, Any]) -> bool:
    return bool(node_config.get("spot") or node_config.get("preemptible"))


def _gpu_type(node_config: Mapping[str, Any]) -> str | None:
    accelerators = node_config.get("guestAccelerators")
    if isinstance(accelerators, list):
        for accelerator in accelerators:
            if isinstance(accelerator, dict) and accelerator.get("type"):
                return str(accelerator["type"])
    return None


def _machine_hourly(
    p: Pricer, node_config: Mapping[str, Any], region: str, model: str
) -> tuple[float, str, str, bool]:
    """One node's hourly price under a pricing model (vCPUs + memory + GPUs), a description of
    the node, the first pricing item it used, and whether it carries GPUs."""
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
    return hourly, description, first, bool(gpu_type and gpus)


def _has_on_demand_fallback(p: Pricer, pool: Resource, node_config: Mapping[str, Any]) -> bool:
    """Whether the pool's cluster has an on-demand pool of the same kind (the same GPU, or for
    CPU pools the same machine type) to run what spot capacity cannot."""
    cluster = p.cluster_of(pool)
    if cluster is None:
        return True  # no cluster to look in: assume the fallback, the dearer reading
    gpu = _gpu_type(node_config)
    for other in p.inventory.of_type(NODE_POOL):
        config = other.inputs.get("nodeConfig") or {}
        if other.urn == pool.urn or _is_spot(config) or p.cluster_of(other) != cluster:
            continue
        if (gpu and _gpu_type(config) == gpu) or (
            not gpu and config.get("machineType") == node_config.get("machineType")
        ):
            return True
    return False


def _nodes(
    p: Pricer,
    resource: Resource,
    label: str,
    node_config: Mapping[str, Any],
    region: str,
    nodes: float,
    basis: str,
) -> list[LineItem]:
    """Node-hours (the spot share at spot prices, the rest on-demand where an on-demand pool
    takes it) and their boot disks."""
    on_demand, shape, on_demand_id, gpus = _machine_hourly(p, node_config, region, "onDemand")
    category: Category = "GPUs" if gpus else "compute"
    node_hours = nodes * p.hours
    running = nodes  # average nodes that exist, for their disks and NAT
    lines: list[LineItem] = []
    if _is_spot(node_config):
        spot_hourly, _, spot_id, _ = _machine_hourly(p, node_config, region, "spot")
        share = p.usage.spot_share
        lines.append(
            p.line(
                f"{label}: {shape} spot",
                category,
                region,
                node_hours * share,
                spot_id,
                resource,
                f"{nodes:g} avg nodes ({basis}), {share:.0%} of hours on spot",
                unit_usd=spot_hourly,
                unit="node-hour",
            )
        )
        if share < 1 and _has_on_demand_fallback(p, resource, node_config):
            lines.append(
                p.line(
                    f"{label}: {shape} on-demand fallback",
                    category,
                    region,
                    node_hours * (1 - share),
                    on_demand_id,
                    resource,
                    f"{1 - share:.0%} of hours without spot capacity run on-demand",
                    unit_usd=on_demand,
                    unit="node-hour",
                )
            )
        elif share < 1:
            # No on-demand pool beside it: hours without spot capacity run no node at all.
            running = nodes * share
    else:
        lines.append(
            p.line(
                f"{label}: {shape} on-demand",
                category,
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
            category,
            region,
            running * disk_gib,
            f"disk.{disk_type}",
            resource,
            f"{running:g} nodes x {disk_gib:g} GiB",
        )
    )
    p.nodes_by_region[region] = p.nodes_by_region.get(region, 0.0) + running
    return lines


def _price_node_pool(p: Pricer, resource: Resource) -> list[LineItem]:
    region = p.region_of(resource)
    zones = _node_pool_zones(p, resource, resource.inputs.get("location"))
    nodes, basis = _average_nodes(p, resource, region, zones)
    node_config = resource.inputs.get("nodeConfig") or {}
    label = f"GKE node pool {_pool_name(resource)}"
    return _nodes(p, resource, label, node_config, region, nodes, basis)


def is_zonal(cluster: Resource) -> bool:
    location = cluster.inputs.get("location")
    return isinstance(location, str) and bool(_ZONE_RE.match(location))


def _price_cluster(p: Pricer, resource: Resource) -> list[LineItem]:
    region = p.region_of(resource)
    inputs = resource.inputs
    if inputs.get("enableAutopilot"):
        raise Unpriceable("Autopilot pod resources are not priced (only Standard clusters are)")
    kind = "zonal" if is_zonal(resource) else "regional"
    lines = [
        p.line(
            f"GKE cluster management fee ({inputs.get('name') or resource.name}, {kind})",
            "compute",
            region,
            p.hours,
            "gke.clusterFee",
            resource,
        )
    ]
    if not inputs.get("removeDefaultNodePool") and not inputs.get("nodePools"):
        try:
            zones = _node_pool_zones(p, resource, inputs.get("location"))
            count = _number(inputs.get("initialNodeCount", 1))
            lines += _nodes(
                p,
                resource,
                "GKE default node pool",
                inputs.get("nodeConfig") or {},
                region,
                count * zones,
                f"{count:g} per zone x {zones} zones",
            )
        except Unpriceable as exc:
            # The fee is billed whatever the nodes are: only the default pool goes unpriced.
            p.unpriced.append(
                UnpricedResource(
                    resource.type, f"{resource.name} (default node pool)", resource.urn, str(exc)
                )
            )
    return lines


def _free_tier_credits(p: Pricer) -> list[LineItem]:
    """GKE's free tier, as negative lines against the zonal clusters' management fees, in plan
    order, until the month's credit is spent (never against a regional cluster's fee)."""
    if not p.usage.gke_free_tier:
        return []
    credit = p.pricing.credit(GKE_FREE_TIER)
    left = credit.amount
    lines: list[LineItem] = []
    fees = [
        line for line in p.lines if line.price_id == "gke.clusterFee" and line.resource is not None
    ]
    for fee in fees:
        cluster = p.inventory.by_urn().get(fee.resource or "")
        if cluster is None or not is_zonal(cluster) or left <= 0:
            continue
        covered = min(left, fee.monthly_usd)
        left -= covered
        lines.append(
            LineItem(
                item=f"GKE free-tier credit ({cluster.inputs.get('name') or cluster.name})",
                category="compute",
                region=fee.region,
                quantity=covered / fee.unit_usd,
                unit=fee.unit,
                unit_usd=-fee.unit_usd,
                monthly_usd=-covered,
                price_id=GKE_FREE_TIER,
                source=credit.source,
                resource=fee.resource,
                basis=(
                    f"${credit.amount:,.2f}/month per billing account against {credit.applies_to}"
                    f" (pricing page read {credit.as_of}; cost.gkeFreeTier)"
                ),
            )
        )
    return lines


# --------------------------------------------------------------------------- other types


def _price_redis_cluster(p: Pricer, resource: Resource) -> list[LineItem]:
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
            "Redis",
            region,
            nodes * p.hours,
            f"redis.cluster.{node_type}",
            resource,
            f"{shards:g} shards x (1 primary + {replicas:g} replicas) = {nodes:g} nodes",
        )
    ]


def _price_router_nat(p: Pricer, resource: Resource) -> list[LineItem]:
    region = resource.inputs.get("region") or p.region_of(resource)
    vms = p.nodes_by_region.get(region, 0.0)
    if vms <= 32:
        gateway = p.line(
            "Cloud NAT gateway",
            "networking",
            region,
            vms * p.hours,
            "nat.gateway.vm",
            resource,
            f"{vms:g} VMs (the region's average nodes)",
        )
    else:
        gateway = p.line(
            "Cloud NAT gateway",
            "networking",
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
            "networking",
            region,
            p.usage.nat_gib_per_month,
            "nat.dataProcessing",
            resource,
            "cost.natGibPerMonth",
        ),
        p.line(
            "Cloud NAT IP addresses",
            "networking",
            region,
            ips * p.hours,
            "nat.ipAddress",
            resource,
            f"{ips} address(es)" + ("" if manual else " (AUTO_ONLY allocates at least one)"),
        ),
    ]


def _price_crypto_key(p: Pricer, resource: Resource) -> list[LineItem]:
    if resource.inputs.get("skipInitialVersionCreation"):
        return []
    template = resource.inputs.get("versionTemplate") or {}
    level = template.get("protectionLevel") or "SOFTWARE"
    ring = _KEY_RING_LOCATION.search(str(resource.inputs.get("keyRing") or ""))
    region = display_location(ring.group(1)) if ring else p.regions.get(resource.urn) or "global"
    return [
        p.line(
            f"Cloud KMS key {resource.inputs.get('name') or resource.name} ({level})",
            "storage",
            region,
            1,
            f"kms.keyVersion.{level}",
            resource,
            "one active key version",
            unit_usd=p.pricing.price(f"kms.keyVersion.{level}", "global"),
        )
    ]


def _price_bucket(p: Pricer, resource: Resource) -> list[LineItem]:
    location = str(resource.inputs.get("location") or "US")
    storage_class = resource.inputs.get("storageClass") or "STANDARD"
    return [
        p.line(
            f"Cloud Storage bucket {resource.inputs.get('name') or resource.name}",
            "storage",
            display_location(location),
            p.usage.bucket_storage_gib,
            f"storage.{storage_class}",
            resource,
            "cost.bucketStorageGib",
        )
    ]


def _price_alert_policy(p: Pricer, resource: Resource) -> list[LineItem]:
    conditions = resource.inputs.get("conditions") or []
    return [
        p.line(
            f"Cloud Monitoring alert conditions ({resource.name})",
            "observability",
            "global",
            len(conditions),
            "monitoring.alertCondition",
            resource,
            f"{len(conditions)} condition(s)",
        )
    ]


def _price_address(p: Pricer, resource: Resource) -> list[LineItem]:
    if resource.inputs.get("addressType") == "INTERNAL":
        return []
    region = p.regions.get(resource.urn) or "global"
    return [
        p.line(
            f"static external IP {resource.inputs.get('name') or resource.name}",
            "networking",
            region,
            p.hours,
            "compute.externalIp",
            resource,
            "in use all month",
            unit_usd=p.pricing.price("compute.externalIp", "global"),
        )
    ]


def display_location(location: str) -> str:
    """A location as the estimate groups it: a region, or a multi-region in capitals (a zone
    counts in its region)."""
    lowered = location.lower()
    if _REGION_RE.match(lowered):
        return lowered
    zone = _ZONE_RE.match(lowered)
    return zone.group(1) if zone else location.upper()


PRICERS: dict[str, PricerFn] = {
    CLUSTER: _price_cluster,
    NODE_POOL: _price_node_pool,
    "gcp:redis/cluster:Cluster": _price_redis_cluster,
    "gcp:compute/routerNat:RouterNat": _price_router_nat,
    "gcp:kms/cryptoKey:CryptoKey": _price_crypto_key,
    "gcp:storage/bucket:Bucket": _price_bucket,
    "gcp:monitoring/alertPolicy:AlertPolicy": _price_alert_policy,
    "gcp:compute/address:Address": _price_address,
    "gcp:compute/globalAddress:GlobalAddress": _price_address,
}
# Node pools first: NAT gateways are priced by the nodes they serve.
_ORDER = {NODE_POOL: 0, CLUSTER: 0}


# --------------------------------------------------------------------------- stack usage


def _stack_usage_lines(p: Pricer) -> list[LineItem]:
    """Usage the stack pays for once, not per resource: data stored, scanned, sent, logged."""
    lines: list[LineItem] = []
    usage = p.usage
    datasets = p.inventory.of_type("gcp:bigquery/dataset:Dataset")
    if datasets:
        share = usage.bigquery_storage_gib / len(datasets)
        for dataset in datasets:
            location = display_location(str(dataset.inputs.get("location") or "US"))
            model = dataset.inputs.get("storageBillingModel") or "LOGICAL"
            name = dataset.inputs.get("datasetId") or dataset.name
            lines.append(
                _free_tier_line(
                    p,
                    f"BigQuery {model.lower()} storage ({name})",
                    "BigQuery",
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
                "BigQuery",
                display_location(str(first.inputs.get("location") or "US")),
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
                "Pub/Sub",
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
                "storage",
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
            "observability",
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
    p: Pricer,
    item: str,
    category: Category,
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
    return p.line(item, category, region, billable, price_id, resource, basis)


# --------------------------------------------------------------------------- the pass


def estimate(
    inventory: Inventory,
    usage: CostSettings,
    budget_usd: float | None = None,
    pricing: Pricing | None = None,
) -> Estimate:
    """Price every resource of a plan for one month."""
    pricing = pricing or load_pricing()
    p = Pricer(inventory, pricing, usage, inventory.regions())
    free: dict[str, tuple[int, str]] = {}
    for resource in inventory.resources:
        reason = free_reason(resource)
        if reason is not None:
            count, _ = free.get(resource.type, (0, reason))
            free[resource.type] = (count + 1, reason)
    billable = sorted(
        (r for r in inventory.resources if free_reason(r) is None and r.type not in USAGE_TYPES),
        key=lambda r: _ORDER.get(r.type, 1),
    )
    for resource in billable:
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
    try:
        p.lines += _free_tier_credits(p)
    except Unpriceable as exc:
        p.unpriced.append(UnpricedResource("(credit)", GKE_FREE_TIER, "", str(exc)))
    p.unpriced += _retention_notes(inventory)
    try:
        p.lines += _stack_usage_lines(p)
    except Unpriceable as exc:
        p.unpriced.append(UnpricedResource("(stack usage)", inventory.stack, "", str(exc)))
    for covered in USAGE_TYPES:
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
