"""What the system pool must hold: the requests of every pod the program schedules on it.

Everything but Triton runs on the system pool (GPU pools are tainted): Istio's control plane
and gateway, the metrics adapter, the signal service, the predictive scaler and the anomaly
detector, each injected pod with its Istio sidecar (and the signal service with GKE's Cloud
Storage FUSE sidecar), and the istio-cni agent on every node. The figures come from the same
settings the program deploys with, at their baseline replica counts; a pool whose largest
size, after GKE's reservations (cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes),
cannot hold them is refused. GKE's own kube-system pods are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from app.config_errors import Problem
from infra.config.catalog import MachineShape
from infra.config.cluster import ClusterSettings, NodePools
from infra.config.intelligence import IntelligenceSettings
from infra.config.mesh import MeshSettings
from infra.config.resources import GIB, Resources
from infra.config.workloads import GCS_FUSE_SIDECAR, Workloads

# GKE's reservations, as (up to this many cores or GiB, the share reserved of that slice).
CPU_RESERVATION = ((1, 0.06), (2, 0.01), (4, 0.005), (math.inf, 0.0025))
MEMORY_RESERVATION = ((4, 0.25), (8, 0.20), (16, 0.10), (128, 0.06), (math.inf, 0.02))
EVICTION_THRESHOLD_GIB = 100 / 1024


@dataclass(frozen=True)
class PodRequests:
    """One kind of pod on the system pool: how many, and what each requests in all."""

    name: str
    replicas: int
    cpu: float  # cores
    memory_gib: float


def _tiered(amount: float, tiers: tuple[tuple[float, float], ...]) -> float:
    reserved, floor = 0.0, 0.0
    for ceiling, share in tiers:
        reserved += max(0.0, min(amount, ceiling) - floor) * share
        floor = ceiling
    return reserved


def allocatable(shape: MachineShape) -> tuple[float, float]:
    """(cores, GiB) a node of ``shape`` gives pods after GKE's reservations."""
    cpu = shape.vcpus - _tiered(shape.vcpus, CPU_RESERVATION)
    memory = shape.memory_gib - _tiered(shape.memory_gib, MEMORY_RESERVATION)
    return cpu, memory - EVICTION_THRESHOLD_GIB


def _pod(name: str, replicas: int, *containers: Resources) -> PodRequests:
    cpu = sum((c.quantity("requests", "cpu") or Decimal(0) for c in containers), Decimal(0))
    memory = sum((c.quantity("requests", "memory") or Decimal(0) for c in containers), Decimal(0))
    return PodRequests(name, replicas, float(cpu), float(memory / GIB))


def system_pods(
    mesh: MeshSettings,
    cluster: ClusterSettings,
    workloads: Workloads,
    intelligence: IntelligenceSettings,
) -> list[PodRequests]:
    """The pods the program schedules on one region's system pool (not the per-node agent)."""
    proxy = mesh.proxy_resources
    signal = workloads.signal_service
    pods = [
        _pod("istiod", mesh.istiod_replicas, mesh.istiod_resources),
        _pod("istio-gateway", mesh.gateway_replicas, mesh.gateway_resources),
        _pod(
            "metrics-adapter",
            cluster.metrics_adapter_replicas,
            cluster.metrics_adapter_resources,
            proxy,
        ),
        _pod("signal-service", signal.replicas, signal.resources, proxy, GCS_FUSE_SIDECAR),
    ]
    if intelligence.predictive_scaling.enabled:
        pods.append(_pod("scaler", intelligence.replicas, intelligence.resources, proxy))
    if intelligence.anomaly_detection.enabled:
        pods.append(_pod("detector", intelligence.replicas, intelligence.resources, proxy))
    return pods


def room(shape: MachineShape, per_node: Resources) -> tuple[float, float]:
    """(cores, GiB) one node of ``shape`` leaves for pods once the per-node agent runs."""
    agent = _pod("per-node", 1, per_node)
    cpu, memory = allocatable(shape)
    return cpu - agent.cpu, memory - agent.memory_gib


def requested(pods: list[PodRequests]) -> tuple[float, float]:
    """(cores, GiB) the pods request in all, every replica counted."""
    return sum(p.cpu * p.replicas for p in pods), sum(p.memory_gib * p.replicas for p in pods)


def nodes_needed(shape: MachineShape, pods: list[PodRequests], per_node: Resources) -> int:
    """The fewest nodes of ``shape`` whose room adds up to the pods' requests: a floor (the
    scheduler packs whole pods, so it may need more, never fewer)."""
    cpu, memory = room(shape, per_node)
    need_cpu, need_memory = requested(pods)
    return max(1, math.ceil(need_cpu / cpu - 1e-9), math.ceil(need_memory / memory - 1e-9))


def system_pool_rules(
    region: str,
    zones: int,
    pools: NodePools,
    shape: MachineShape,
    pods: list[PodRequests],
    per_node: Resources,
) -> Iterator[Problem]:
    """The pool at its largest (``maxNodes`` in each of ``zones``) holds ``pods``; paths
    relative to the node pools."""
    system = pools.system
    cpu, memory = room(shape, per_node)
    nodes = system.max_nodes * zones
    need_cpu, need_memory = requested(pods)
    for pod in pods:
        if pod.cpu > cpu or pod.memory_gib > memory:
            yield Problem(
                "system.machineType",
                f"one {pod.name} pod requests {pod.cpu:.2f} vCPU, {pod.memory_gib:.2f} GiB; one"
                f" {system.machine_type} node has {cpu:.2f} vCPU, {memory:.2f} GiB for pods",
                system.machine_type,
                "a machine type whose node holds the largest pod",
            )
            return
    if need_cpu > nodes * cpu or need_memory > nodes * memory:
        per_zone = max(math.ceil(need_cpu / cpu / zones), math.ceil(need_memory / memory / zones))
        table = ", ".join(f"{p.name} {p.replicas}x{p.cpu:g}/{p.memory_gib:.2f}Gi" for p in pods)
        yield Problem(
            "system.maxNodes",
            f"the system pool of {region} holds at most {nodes} {system.machine_type} nodes"
            f" ({nodes * cpu:.2f} vCPU, {nodes * memory:.2f} GiB for pods); the pods the"
            f" program schedules on it request {need_cpu:.2f} vCPU, {need_memory:.2f} GiB"
            f" ({table})",
            system.max_nodes,
            f">= {per_zone} per zone, or a larger machineType",
        )
