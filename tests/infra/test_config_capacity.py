"""The system pool must hold what the program schedules on it: the config refuses a pool too
small for the sum of the pods' requests (dev and prod alike), and the requests it sums are the
ones the program deploys."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from infra.config import ConfigError, MachineShape, allocatable, system_pods
from infra.config.resources import GIB, parse_quantity
from tests.infra.stack_config import load, section
from tools.inventory import Inventory

SIDECAR_INJECTION = "istio-injection"


def refusal(stack: str, **changes: object) -> str:
    with pytest.raises(ConfigError) as exc:
        load(stack, **changes)
    return str(exc.value)


def test_allocatable_follows_gkes_reservations():
    # e2-standard-4: 6% of the first core, 1% of the second, 0.5% of the next two; 25% of the
    # first 4 GiB, 20% of the next 4, 10% of the next 8, and 100 MiB for eviction.
    cpu, memory = allocatable(MachineShape(vcpus=4, memory_gib=16))
    assert cpu == pytest.approx(4 - 0.06 - 0.01 - 0.01)
    assert memory == pytest.approx(16 - 1 - 0.8 - 0.8 - 100 / 1024)
    # Beyond 128 GiB only 2% is kept back.
    _, large = allocatable(MachineShape(vcpus=32, memory_gib=256))
    assert large == pytest.approx(256 - (1 + 0.8 + 0.8 + 0.06 * 112 + 0.02 * 128) - 100 / 1024)


def test_a_dev_system_pool_too_small_for_its_pods_is_refused_naming_both_figures():
    pools = section("dev", "nodePools")
    pools["system"] = {"machineType": "e2-standard-2", "minNodes": 1, "maxNodes": 1}
    text = refusal("dev", nodePools=pools, cluster={"nodeZones": 1})
    (line,) = [line for line in text.splitlines() if "system.maxNodes" in line]
    assert line.startswith("Pulumi.dev.yaml: signal-platform:nodePools.system.maxNodes: ")
    cfg = load("dev")
    pods = system_pods(cfg.mesh, cfg.cluster, cfg.workloads, cfg.intelligence)
    cpu = sum(p.cpu * p.replicas for p in pods)
    memory = sum(p.memory_gib * p.replicas for p in pods)
    node_cpu, node_memory = allocatable(MachineShape(2, 8))
    node_cpu, node_memory = node_cpu - 0.1, node_memory - 100 / 1024  # the istio-cni agent
    assert (
        f"holds at most 1 e2-standard-2 nodes ({node_cpu:.2f} vCPU, {node_memory:.2f} GiB" in line
    )
    assert f"request {cpu:.2f} vCPU, {memory:.2f} GiB" in line
    per_zone = max(-(-cpu // node_cpu), -(-memory // node_memory))
    assert f"(got 1); allowed: >= {per_zone:.0f} per zone, or a larger machineType" in line


def test_the_same_check_protects_each_prod_region():
    pools = section("prod", "nodePools")
    pools["system"] = {"machineType": "e2-standard-4", "minNodes": 1, "maxNodes": 1}
    override = section("prod", "regionOverrides")
    override["us-east4"] = {
        "nodePools": pools,
        "cluster": {**section("prod", "cluster"), "nodeZones": 1},
    }
    text = refusal("prod", regionOverrides=override)
    assert re.search(
        r"signal-platform:regionOverrides\.us-east4\.nodePools\.system\.maxNodes: the system pool"
        r" of us-east4 holds at most 1 e2-standard-4 nodes .* request \d+\.\d\d vCPU",
        text,
    ), text


def test_a_pod_larger_than_any_node_is_refused_at_the_machine_type():
    mesh = {
        "istiodResources": {
            "requests": {"cpu": "1", "memory": "16Gi"},
            "limits": {"memory": "16Gi"},
        }
    }
    text = refusal("dev", mesh=mesh)
    assert (
        "signal-platform:nodePools.system.machineType: one istiod pod requests 1.00 vCPU, 16.00 GiB"
        in text
    )
    assert "a machine type whose node holds the largest pod" in text


def test_the_repository_stacks_fit_their_system_pools():
    for stack in ("dev", "prod"):
        load(stack)  # would raise


# ---------------------------------------------------------------- same numbers as the program


def _requests(resources: dict) -> tuple[Decimal, Decimal]:
    requests = (resources or {}).get("requests") or {}
    return (
        parse_quantity(requests.get("cpu", "0")),
        parse_quantity(requests.get("memory", "0")),
    )


def planned_system_pods(plan: Inventory) -> list[tuple[int, float, float]]:
    """(replicas, cores, GiB per pod) of each workload the plan puts on the system pool."""
    injected = {
        r.inputs["metadata"]["name"]
        for r in plan.of_type("kubernetes:core/v1:Namespace")
        if r.inputs["metadata"].get("labels", {}).get(SIDECAR_INJECTION) == "enabled"
    }
    releases = {
        r.inputs["chart"]: r.inputs["values"] for r in plan.of_type("kubernetes:helm.sh/v3:Release")
    }
    proxy = _requests(releases["istiod"]["global"]["proxy"]["resources"])
    pods = [
        (
            releases["istiod"]["pilot"]["replicaCount"],
            *_requests(releases["istiod"]["pilot"]["resources"]),
        ),
        (
            releases["gateway"]["autoscaling"]["minReplicas"],
            *_requests(releases["gateway"]["resources"]),
        ),
    ]
    # A workload an HPA scales carries no replica count (the HPA owns it): its floor counts.
    floors = {
        (h.provider, h.inputs["spec"]["scaleTargetRef"]["kind"], h.inputs["metadata"]["name"]): h
        for h in plan.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    }
    workloads = [
        *plan.of_type("kubernetes:apps/v1:Deployment"),
        *plan.of_type("kubernetes:apps/v1:StatefulSet"),  # the signal service (its shards)
    ]
    for deployment in workloads:
        spec = deployment.inputs["spec"]
        kind = deployment.type.rsplit(":", 1)[1]
        scaler = floors.get((deployment.provider, kind, deployment.inputs["metadata"]["name"]))
        replicas = scaler.inputs["spec"]["minReplicas"] if scaler else spec["replicas"]
        template = spec["template"]
        containers = template["spec"]["containers"]
        if any(
            "nvidia.com/gpu" in (c.get("resources") or {}).get("requests", {}) for c in containers
        ):
            continue  # the GPU pools' (tainted): Triton
        parts = [_requests(c.get("resources")) for c in containers]
        if deployment.inputs["metadata"]["namespace"] in injected:
            parts.append(proxy)
        annotations = template["metadata"].get("annotations") or {}
        if annotations.get("gke-gcsfuse/volumes") == "true":
            parts.append(
                (
                    parse_quantity(annotations["gke-gcsfuse/cpu-limit"]),
                    parse_quantity(annotations["gke-gcsfuse/memory-limit"]),
                )
            )
        pods.append(
            (
                replicas,
                sum((p[0] for p in parts), Decimal(0)),
                sum((p[1] for p in parts), Decimal(0)),
            )
        )
    return sorted(
        (n, round(float(cpu), 6), round(float(memory / GIB), 6)) for n, cpu, memory in pods
    )


def test_the_check_sums_what_the_program_deploys(dev_plan: Inventory):
    cfg = load("dev")
    configured = sorted(
        (p.replicas, p.cpu, p.memory_gib)
        for p in system_pods(cfg.mesh, cfg.cluster, cfg.workloads, cfg.intelligence)
    )
    rounded = [(n, round(cpu, 6), round(memory, 6)) for n, cpu, memory in configured]
    assert planned_system_pods(dev_plan) == rounded


def test_the_per_node_agent_is_sized_as_the_check_assumes(dev_plan: Inventory):
    (cni,) = [
        r.inputs["values"]
        for r in dev_plan.of_type("kubernetes:helm.sh/v3:Release")
        if r.inputs["chart"] == "cni"
    ]
    assert _requests(cni["resources"]) == _requests(load("dev").mesh.cni_resources.model_dump())
