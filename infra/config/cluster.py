"""The GKE cluster's settings and its node pools: control-plane access, maintenance, security.

Control-plane access: authorized networks are private ranges (RFC 1918 and RFC 6598's shared
space). A public range must say so (`public: true`), and all public ranges together may cover
at most `PUBLIC_ADDRESSES_LIMIT` addresses (a /16), so no set of ranges, however split, opens
the control plane to the internet.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from app.config_errors import Problem, checked
from infra.config.base import Model, StackContext, refuse
from infra.config.catalog import Catalog, load_catalog
from infra.config.images import ImageReference, image_problems
from infra.config.resources import Resources, resource_gaps

PRIVATE_RANGES = tuple(
    ipaddress.ip_network(cidr)
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
PUBLIC_ADDRESSES_LIMIT = 2**16
# A regional cluster's nodes run in three of its region's zones unless nodeZones says otherwise.
DEFAULT_NODE_ZONES = 3
# An IAM member that may deploy or preview through the Connect Gateway: a service account,
# user or group.
GATEWAY_MEMBER_RE = re.compile(r"^(serviceAccount|user|group):[^@\s]+@[^@\s]+\.[a-z]{2,}$")
# RFC 3339 date-time with an explicit offset (GKE's maintenance window format).
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$")


def is_private(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return any(
        network.version == private.version and network.subnet_of(private)  # type: ignore[arg-type]
        for private in PRIVATE_RANGES
    )


class AuthorizedNetwork(Model):
    cidr: str
    name: str
    # A range outside private address space must be marked as such (see the module docstring).
    public: bool = False

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise refuse(str(exc), value, "a CIDR range, e.g. 10.0.0.0/8") from exc
        if network.prefixlen == 0:
            raise refuse(
                "would expose the control plane to the internet", value, "a narrower range"
            )
        return str(network)

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        if not self.public and not is_private(self.network):
            yield Problem(
                "cidr",
                "a public range would expose the control plane to the internet",
                self.cidr,
                "a private range (10/8, 172.16/12, 192.168/16, 100.64/10), or public: true",
            )


# RFC 5545 recurrence rule parts and what each takes.
_WEEKDAY = r"(?:MO|TU|WE|TH|FR|SA|SU)"
_RRULE_PARTS: Mapping[str, tuple[str, str]] = {
    "FREQ": (
        r"SECONDLY|MINUTELY|HOURLY|DAILY|WEEKLY|MONTHLY|YEARLY",
        "DAILY, WEEKLY, MONTHLY, ...",
    ),
    "INTERVAL": (r"[1-9]\d*", "a positive integer"),
    "COUNT": (r"[1-9]\d*", "a positive integer"),
    "UNTIL": (r"\d{8}(?:T\d{6}Z?)?", "a date YYYYMMDD or date-time YYYYMMDDTHHMMSSZ"),
    "BYSECOND": (r"(?:[0-5]?\d|60)", "0 to 60"),
    "BYMINUTE": (r"[0-5]?\d", "0 to 59"),
    "BYHOUR": (r"(?:[01]?\d|2[0-3])", "0 to 23"),
    "BYDAY": (
        rf"(?:[+-]?(?:[1-9]|[1-4]\d|5[0-3]))?{_WEEKDAY}",
        "MO, TU, ... SU, optionally 1FR, -1SU",
    ),
    "BYMONTHDAY": (r"[+-]?(?:[1-9]|[12]\d|3[01])", "1 to 31 or -31 to -1"),
    "BYYEARDAY": (r"[+-]?(?:[1-9]\d?|[12]\d\d|3[0-5]\d|36[0-6])", "1 to 366 or -366 to -1"),
    "BYWEEKNO": (r"[+-]?(?:[1-9]|[1-4]\d|5[0-3])", "1 to 53 or -53 to -1"),
    "BYMONTH": (r"(?:[1-9]|1[0-2])", "1 to 12"),
    "BYSETPOS": (r"[+-]?(?:[1-9]\d?|[12]\d\d|3[0-5]\d|36[0-6])", "1 to 366 or -366 to -1"),
    "WKST": (_WEEKDAY, "MO, TU, ... SU"),
}
_LIST_PARTS = {p for p in _RRULE_PARTS if p.startswith("BY")}


def recurrence_problems(rule: str) -> Iterator[Problem]:
    """What is wrong with an RFC 5545 RRULE value (``FREQ=WEEKLY;BYDAY=SA,SU``)."""
    seen: set[str] = set()
    for part in rule.split(";"):
        key, sep, value = part.partition("=")
        if not sep or key not in _RRULE_PARTS:
            yield Problem(
                "", f"{part!r} is not a recurrence rule part", rule, ", ".join(_RRULE_PARTS)
            )
            continue
        if key in seen:
            yield Problem("", f"{key} is given twice", rule, "each part once")
        seen.add(key)
        pattern, allowed = _RRULE_PARTS[key]
        values = value.split(",") if key in _LIST_PARTS else [value]
        bad = [v for v in values if not re.fullmatch(pattern, v)]
        if bad:
            yield Problem("", f"{key}={value} is not valid", rule, f"{key}={allowed}")
    if "FREQ" not in seen:
        yield Problem("", "a recurrence rule needs FREQ", rule, "FREQ=DAILY, WEEKLY or MONTHLY ...")
    if {"COUNT", "UNTIL"} <= seen:
        yield Problem("", "COUNT and UNTIL exclude each other", rule, "one of them")


class MaintenanceWindow(Model):
    # RFC 5545 recurrence, in UTC: weekends, outside trading hours.
    start_time: str = "2026-01-03T04:00:00Z"
    end_time: str = "2026-01-03T10:00:00Z"
    recurrence: str = "FREQ=WEEKLY;BYDAY=SA,SU"

    @field_validator("start_time", "end_time")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        allowed = "an RFC 3339 date-time, e.g. 2026-01-03T04:00:00Z"
        if not RFC3339_RE.match(value):
            raise refuse("not an RFC 3339 date-time", value, allowed)
        try:
            datetime.fromisoformat(value)
        except ValueError as exc:
            raise refuse(f"not a valid date-time ({exc})", value, allowed) from exc
        return value

    @field_validator("recurrence")
    @classmethod
    def _recurrence(cls, value: str) -> str:
        problems = list(recurrence_problems(value))
        return checked(value, problems)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        start, end = datetime.fromisoformat(self.start_time), datetime.fromisoformat(self.end_time)
        if end <= start:
            yield Problem(
                "endTime", f"not after startTime ({self.start_time})", self.end_time, "> startTime"
            )


class ClusterSettings(Model):
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = "REGULAR"
    # The control plane's minimum minor (`minMasterVersion`): one the release channel offers
    # for new clusters, which it stops doing at the minor's end of standard support (1.33 and
    # 1.34 are past it by late 2026), and inside the Istio release's range (mesh.py). Check
    # `gcloud container get-server-config --flatten=channels` before a first apply.
    kubernetes_minor_version: str = "1.35"
    private_endpoint: bool = False
    master_authorized_networks: tuple[AuthorizedNetwork, ...] = (
        AuthorizedNetwork(cidr="10.0.0.0/8", name="internal"),
    )
    maintenance: MaintenanceWindow = MaintenanceWindow()
    deletion_protection: bool | None = None  # None: on in prod, off elsewhere
    # GKE security posture: BASIC is free; ENTERPRISE adds fleet-wide findings at a cost.
    security_posture: Literal["BASIC", "ENTERPRISE"] = "BASIC"
    # Workload vulnerability scanning: off by default (images are scanned by Artifact Analysis
    # on the registry); ENTERPRISE (advanced insights, GKE Enterprise) only as an opt-in.
    vulnerability_scanning: Literal["VULNERABILITY_DISABLED", "VULNERABILITY_ENTERPRISE"] = (
        "VULNERABILITY_DISABLED"
    )
    # Zones a regional cluster's nodes run in (the first N of the region's; 3 when unset); the
    # system pool's min/max node counts are per zone, GPU pools' counts are totals across
    # their zones. A zonal cluster's nodes run in its zone.
    node_zones: int | None = Field(default=None, ge=1, le=4)
    # A zonal cluster: its control plane and every node in one zone of the region, the first
    # (in the catalogue's order) that offers every GPU type its pools use. GKE's free tier
    # credits one zonal cluster's management fee per billing account; the control plane is a
    # single replica (99.5% SLA instead of 99.95%, unreachable while it upgrades) and a zone
    # outage stops the whole cluster. False: a regional cluster, control plane in three zones,
    # nodes in `nodeZones` of them.
    zonal: bool = False
    # Serves Cloud Monitoring metrics (GPU duty cycle, request rates) to the HPAs.
    metrics_adapter_image: ImageReference = (
        "gcr.io/gke-release/custom-metrics-stackdriver-adapter:v0.14.2-gke.0"
    )
    metrics_adapter_replicas: int = Field(default=2, ge=1, le=10)
    # IAM members that deploy to the cluster through the Connect Gateway (cluster-admin).
    deployers: tuple[str, ...] = ()
    # IAM members that preview through the Connect Gateway (read-only: Kubernetes `view`).
    previewers: tuple[str, ...] = ()
    metrics_adapter_resources: Resources = Resources(
        requests={"cpu": "250m", "memory": "200Mi"}, limits={"cpu": "500m", "memory": "400Mi"}
    )

    @property
    def zone_count(self) -> int:
        """How many zones the system pool's nodes run in."""
        return 1 if self.zonal else self.node_zones or DEFAULT_NODE_ZONES

    @field_validator("kubernetes_minor_version")
    @classmethod
    def _minor(cls, value: str) -> str:
        if not re.fullmatch(r"1\.\d{2}", value):
            raise ValueError("must be a Kubernetes minor version such as 1.33")
        return value

    @field_validator("deployers", "previewers")
    @classmethod
    def _gateway_members(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        action = "deploy" if info.field_name == "deployers" else "preview"
        problems = [
            Problem(
                f"[{i}]",
                f"not an IAM member that can {action}",
                member,
                "serviceAccount:<email>, user:<email> or group:<email>",
            )
            for i, member in enumerate(value)
            if not GATEWAY_MEMBER_RE.match(member)
        ]
        problems += [
            Problem(f"[{i}]", "listed twice", member, "each member once")
            for i, member in enumerate(value)
            if value.index(member) != i
        ]
        return checked(value, problems)

    @field_validator("vulnerability_scanning", mode="before")
    @classmethod
    def _not_deprecated(cls, value: Any) -> Any:
        if value == "VULNERABILITY_BASIC":
            raise refuse(
                "GKE no longer supports basic vulnerability scanning (shut down on 2025-07-31:"
                " https://cloud.google.com/kubernetes-engine/docs/deprecations"
                "/vulnerability-scanning-gkee)",
                value,
                "VULNERABILITY_DISABLED (images scanned by Artifact Analysis) or"
                " VULNERABILITY_ENTERPRISE",
            )
        return value

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        public = [n.network for n in self.master_authorized_networks if n.public]
        covered = sum(
            net.num_addresses
            for net in ipaddress.collapse_addresses(
                n
                for n in public
                if n.version == 4  # type: ignore[misc]
            )
        ) + sum(n.num_addresses for n in public if n.version == 6)
        if covered > PUBLIC_ADDRESSES_LIMIT:
            yield Problem(
                "masterAuthorizedNetworks",
                f"the public ranges together cover {covered:,} addresses",
                [n.cidr for n in self.master_authorized_networks if n.public],
                f"at most {PUBLIC_ADDRESSES_LIMIT:,} public addresses (a /16) in all",
            )
        yield from resource_gaps(self.metrics_adapter_resources, "metricsAdapterResources")
        if self.zonal and self.node_zones not in (None, 1):
            yield Problem(
                "nodeZones",
                "a zonal cluster runs its nodes in its one zone",
                self.node_zones,
                "no nodeZones with zonal: true (or 1), or zonal: false",
            )
        stack = StackContext.of(context)
        yield from image_problems(
            "metricsAdapterImage", self.metrics_adapter_image, stack.prod, stack.unpinned_images
        )


# --------------------------------------------------------------------------- node pools


# GKE's limits (cloud.google.com/kubernetes-engine/quotas): 1,000 nodes per node pool zone,
# 15,000 per cluster; Compute Engine boot disks stop at 65,536 GB.
MAX_NODES_PER_POOL_ZONE = 1_000
MAX_NODES_PER_CLUSTER = 15_000
MAX_BOOT_DISK_GB = 65_536


class NodePoolBase(Model):
    machine_type: str
    # Per zone (the system pool's counts; a GPU pool's are totals, see GpuPool).
    min_nodes: int = Field(default=0, ge=0, le=MAX_NODES_PER_POOL_ZONE)
    max_nodes: int = Field(default=3, ge=1, le=MAX_NODES_PER_POOL_ZONE)
    disk_size_gb: int = Field(default=100, ge=20, le=MAX_BOOT_DISK_GB)
    disk_type: Literal["pd-balanced", "pd-ssd", "pd-standard"] = "pd-balanced"

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        if self.min_nodes > self.max_nodes:
            yield Problem(
                "minNodes",
                f"minNodes is greater than maxNodes ({self.max_nodes})",
                self.min_nodes,
                "minNodes <= maxNodes",
            )


class SystemPool(NodePoolBase):
    machine_type: str = "e2-standard-4"
    min_nodes: int = Field(default=1, ge=1, le=MAX_NODES_PER_POOL_ZONE)
    max_nodes: int = Field(default=3, ge=1, le=MAX_NODES_PER_POOL_ZONE)

    @field_validator("machine_type")
    @classmethod
    def _known_shape(cls, value: str) -> str:
        # Its shape sizes the pool against what runs on it (infra/config/capacity.py).
        known = load_catalog().system_machines
        if value not in known:
            raise refuse("not a machine type of the catalogue", value, ", ".join(known))
        return value


class GpuPool(NodePoolBase):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,20}$")
    machine_type: str = "g2-standard-8"
    accelerator_type: str = "nvidia-l4"
    accelerator_count: int = Field(default=1, ge=1)
    spot: bool = True
    # Totals across the pool's zones (total_min/max_node_count): the cluster's limit bounds them.
    min_nodes: int = Field(default=0, ge=0, le=MAX_NODES_PER_CLUSTER)
    max_nodes: int = Field(default=4, ge=1, le=MAX_NODES_PER_CLUSTER)
    max_shared_clients_per_gpu: int = Field(default=2, ge=1, le=48)
    sharing_strategy: Literal["TIME_SHARING", "MPS"] = "TIME_SHARING"
    driver_version: Literal["DEFAULT", "LATEST"] = "LATEST"

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        catalog = load_catalog()
        machine = catalog.machines.get(self.machine_type)
        if machine is None:
            yield Problem(
                "machineType",
                "not a GPU machine type",
                self.machine_type,
                ", ".join(sorted(catalog.machines)),
            )
        elif machine["accelerator"] != self.accelerator_type:
            yield Problem(
                "acceleratorType",
                f"{self.machine_type} carries {machine['accelerator']}",
                self.accelerator_type,
                machine["accelerator"],
            )
        else:
            counts = machine.get("counts") or [machine["count"]]
            if self.accelerator_count not in counts:
                yield Problem(
                    "acceleratorCount",
                    f"{self.machine_type} takes a fixed number of GPUs",
                    self.accelerator_count,
                    ", ".join(map(str, counts)),
                )

    def slots(self) -> int:
        """Containers the pool holds at its maximum: one per shared GPU client."""
        return self.max_nodes * self.accelerator_count * self.max_shared_clients_per_gpu


class NodePools(Model):
    system: SystemPool = SystemPool()
    gpu: tuple[GpuPool, ...] = (GpuPool(name="l4-spot"),)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        names = [p.name for p in self.gpu]
        for i, name in enumerate(names):
            if names.count(name) > 1:
                yield Problem(f"gpu[{i}].name", "pool names must be unique", name, "unique names")
        if not StackContext.of(context).prod:
            return
        for i, pool in enumerate(self.gpu):
            has_fallback = any(
                not other.spot and other.accelerator_type == pool.accelerator_type
                for other in self.gpu
            )
            if pool.spot and not has_fallback:
                yield Problem(
                    f"gpu[{i}].spot",
                    f"prod spot pool {pool.name!r} has no on-demand fallback",
                    True,
                    f"an on-demand (spot: false) {pool.accelerator_type} pool beside it",
                )

    def region_rules(self, region: str, catalog: Catalog) -> Iterator[Problem]:
        """The GPU types the pools ask for are offered where they run."""
        offered = catalog.gpus_in(region)
        for i, pool in enumerate(self.gpu):
            if pool.accelerator_type not in offered:
                yield Problem(
                    f"gpu[{i}].acceleratorType",
                    f"GPU type not offered in {region} (catalogue of {catalog.as_of})",
                    pool.accelerator_type,
                    ", ".join(sorted(offered)) or "none: this region offers no GPUs",
                )
