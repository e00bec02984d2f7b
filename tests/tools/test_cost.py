"""`python -m tools cost`: prices from pricing.yaml, usage from the stack's cost config.

The small stack's figures are computed here by hand, straight from pricing.yaml's numbers, so a
pricing rule that drifts (per-zone counts, spot share, free tiers, NAT by nodes) fails a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.analyzer import PolicyPackProcess
from tools.cost import (
    BUDGET_POLICY,
    CATEGORIES,
    PRICING_PATH,
    Estimate,
    PricingError,
    StackUsage,
    budget_policy_config,
    estimate,
    load_pricing,
    render_markdown,
    render_text,
    usage_from_stack,
)
from tools.engine import plan
from tools.inventory import UNKNOWN, Inventory, Resource

REPO = Path(__file__).resolve().parents[2]
HOURS = 730
RAW = yaml.safe_load(PRICING_PATH.read_text())
ITEMS = RAW["items"]


def price(item: str, location: str) -> float:
    prices = ITEMS[item]["prices"]
    return prices[location] if location in prices else prices["global"]


def node_hourly(machine: dict[str, Any], model: str, region: str) -> float:
    family = machine["family"]
    hourly = machine["vcpus"] * price(f"compute.{family}.vcpu.{model}", region)
    hourly += machine["memoryGib"] * price(f"compute.{family}.memory.{model}", region)
    if machine.get("gpus"):
        hourly += machine["gpus"] * price(f"gpu.{machine['gpu']}.{model}", region)
    return hourly


SHAPES = RAW["machineTypes"]["shapes"]

SMALL_PROGRAM = """
import pulumi_gcp as gcp

cluster = gcp.container.Cluster(
    "gke", name="gke", location="us-central1", node_locations=["us-central1-a", "us-central1-b"],
    remove_default_node_pool=True, initial_node_count=1, deletion_protection=False)
gcp.container.NodePool(
    "system", name="system", cluster=cluster.id, location="us-central1",
    autoscaling={"min_node_count": 1, "max_node_count": 3},
    node_config={"machine_type": "e2-standard-4", "disk_size_gb": 50, "disk_type": "pd-balanced"})
gcp.container.NodePool(
    "gpu", name="gpu", cluster=cluster.id, location="us-central1", node_locations=["us-central1-a"],
    autoscaling={"total_min_node_count": 0, "total_max_node_count": 4},
    node_config={"machine_type": "g2-standard-8", "spot": True,
                 "guest_accelerators": [{"type": "nvidia-l4", "count": 1}]})
# The spot pool's on-demand twin: the spot share's remainder is priced on the spot pool's line.
gcp.container.NodePool(
    "gpu-ondemand", name="gpu-ondemand", cluster=cluster.id, location="us-central1",
    node_locations=["us-central1-a"],
    autoscaling={"total_min_node_count": 0, "total_max_node_count": 4},
    node_config={"machine_type": "g2-standard-8", "spot": False,
                 "guest_accelerators": [{"type": "nvidia-l4", "count": 1}]})
# Two zonal clusters: GKE's free tier covers the first one's fee and the rest of the credit
# goes to the second. The lab's spot pool has no on-demand twin: hours without spot capacity
# run no node.
lab = gcp.container.Cluster(
    "lab", name="lab", location="us-central1-b", remove_default_node_pool=True,
    initial_node_count=1, deletion_protection=False)
gcp.container.NodePool(
    "lab-gpu", name="lab-gpu", cluster=lab.id, location="us-central1-b", node_count=1,
    node_config={"machine_type": "g2-standard-4", "spot": True,
                 "guest_accelerators": [{"type": "nvidia-l4", "count": 1}]})
gcp.container.Cluster(
    "lab2", name="lab2", location="us-central1-c", remove_default_node_pool=True,
    initial_node_count=1, deletion_protection=False)
# A region pricing.yaml has no prices for: its nodes are unpriced, never zero.
tokyo = gcp.container.Cluster(
    "tokyo", name="tokyo", location="asia-northeast1", remove_default_node_pool=True,
    initial_node_count=1, deletion_protection=False)
gcp.container.NodePool(
    "tokyo-pool", name="tokyo-pool", cluster=tokyo.id, location="asia-northeast1", node_count=1,
    node_config={"machine_type": "e2-standard-4"})
gcp.redis.Cluster(
    "cache", name="cache", region="us-central1", shard_count=2, replica_count=1,
    node_type="REDIS_STANDARD_SMALL", psc_configs=[{"network": "projects/p/global/networks/n"}])
network = gcp.compute.Network("net", auto_create_subnetworks=False)
router = gcp.compute.Router("router", region="us-central1", network=network.id)
gcp.compute.RouterNat(
    "nat", router=router.name, region="us-central1", nat_ip_allocate_option="AUTO_ONLY",
    source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES")
dataset = gcp.bigquery.Dataset(
    "ds", dataset_id="signals", location="US", storage_billing_model="PHYSICAL")
gcp.bigquery.Table("ticks", dataset_id=dataset.dataset_id, table_id="ticks",
                   deletion_protection=False)
gcp.pubsub.Topic("ticks", name="ticks")
gcp.pubsub.Topic("replayable", name="replayable", message_retention_duration="86400s")
gcp.projects.IAMMember("viewer", project="p", role="roles/viewer", member="user:a@example.com")
# A type the pricer does not know.
gcp.sql.DatabaseInstance(
    "db", database_version="POSTGRES_16", region="us-central1",
    settings={"tier": "db-f1-micro"}, deletion_protection=False)
"""

SMALL_STACK = {
    "config": {
        "gcp:project": "cost-test",
        "costprog:budget": {"monthlyUsd": 5000},
        "costprog:cost": {
            "utilisation": 0.5,
            "spotShare": 0.8,
            "averageNodes": {"gpu": 1.5, "gpu-ondemand": 0},
            "signalsPerMonth": 40000,
            "bigqueryStorageGib": 210,
            "bigqueryScannedTibPerMonth": 3,
            "pubsubGibPerMonth": 1034,
            "natGibPerMonth": 100,
            "loggingGibPerMonth": 150,
        },
    }
}


@pytest.fixture(scope="module")
def small_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("costprog")
    (root / "Pulumi.yaml").write_text("name: costprog\nruntime: python\n")
    (root / "Pulumi.small.yaml").write_text(yaml.safe_dump(SMALL_STACK))
    (root / "__main__.py").write_text(textwrap.dedent(SMALL_PROGRAM))
    return root


@pytest.fixture(scope="module")
def small(small_program: Path) -> tuple[Inventory, Estimate]:
    inventory = plan(small_program, "small")
    stack_usage = usage_from_stack(small_program, "small")
    return inventory, estimate(inventory, stack_usage.usage, stack_usage.budget_usd)


def monthly(e: Estimate, fragment: str) -> float:
    lines = [line for line in e.lines if fragment in line.item]
    assert lines, f"no line item containing {fragment!r}: {[line.item for line in e.lines]}"
    return sum(line.monthly_usd for line in lines)


def test_pricing_is_dated_sourced_and_complete():
    pricing = load_pricing()
    assert pricing.as_of == RAW["asOf"] and pricing.hours_per_month == HOURS
    for item_id, item in pricing.items.items():
        assert item.source.startswith("https://cloud.google.com/"), item_id
        assert item.prices and all(v > 0 for v in item.prices.values()), item_id
    required = [
        "gke.clusterFee",
        "gpu.nvidia-l4.onDemand",
        "gpu.nvidia-l4.spot",
        "bigquery.storage.PHYSICAL",
        "bigquery.query.onDemand",
        "pubsub.throughput",
        "nat.gateway.vm",
        "nat.dataProcessing",
        "logging.ingestion",
        *(
            f"compute.{f}.{r}.{m}"
            for f in ("e2", "g2")
            for r in ("vcpu", "memory")
            for m in ("onDemand", "spot")
        ),
        *(
            f"redis.cluster.{t}"
            for t in (
                "REDIS_SHARED_CORE_NANO",
                "REDIS_STANDARD_SMALL",
                "REDIS_HIGHMEM_MEDIUM",
                "REDIS_HIGHMEM_XLARGE",
            )
        ),
    ]
    missing = [item for item in required if item not in pricing.items]
    assert not missing
    # Every stack region has a price for every regional figure the stacks use.
    for item_id in required:
        prices = pricing.items[item_id].prices
        assert "global" in prices or {"us-central1", "us-east4", "europe-west4"} <= set(prices)
    # Spot is always cheaper than on-demand, region by region.
    for family in ("e2", "g2"):
        for resource in ("vcpu", "memory"):
            spot = pricing.items[f"compute.{family}.{resource}.spot"].prices
            on_demand = pricing.items[f"compute.{family}.{resource}.onDemand"].prices
            assert all(spot[r] < on_demand[r] for r in spot)
    assert all(
        s.gpu == "nvidia-l4" for n, s in pricing.machine_types.shapes.items() if n.startswith("g2-")
    )
    # Credits name their page, the date it was read and what they apply to.
    assert set(pricing.credits) == {"gke.freeTier"}
    for credit_id, credit in pricing.credits.items():
        assert credit.source.startswith("https://cloud.google.com/"), credit_id
        assert credit.as_of >= pricing.as_of and credit.applies_to and credit.amount > 0
    assert pricing.credits["gke.freeTier"].amount == 74.40


def test_small_stack_against_hand_computed_figures(small: tuple[Inventory, Estimate]):
    _, e = small
    e2, g2, g2_small = SHAPES["e2-standard-4"], SHAPES["g2-standard-8"], SHAPES["g2-standard-4"]
    uc1 = "us-central1"
    # Per-zone autoscaling (1..3 per zone, 2 zones of the cluster) at utilisation 0.5: 4 nodes.
    system_nodes = 2 + 0.5 * (6 - 2)
    credit = RAW["credits"]["gke.freeTier"]["amount"]
    expected = {
        "GKE cluster management fee": 4 * HOURS * 0.10,
        # The month's credit: all of the first zonal cluster's fee, the rest off the second's.
        "GKE free-tier credit (lab)": -HOURS * 0.10,
        "GKE free-tier credit (lab2)": -(credit - HOURS * 0.10),
        "GKE node pool system: e2-standard-4": system_nodes
        * HOURS
        * node_hourly(e2, "onDemand", uc1),
        "GKE node pool system: boot disks": system_nodes * 50 * price("disk.pd-balanced", uc1),
        "GKE node pool gpu: g2-standard-8 + 1 x nvidia-l4 spot": (
            1.5 * HOURS * 0.8 * node_hourly(g2, "spot", uc1)
        ),
        "GKE node pool gpu: g2-standard-8 + 1 x nvidia-l4 on-demand fallback": (
            1.5 * HOURS * 0.2 * node_hourly(g2, "onDemand", uc1)
        ),
        "GKE node pool gpu: boot disks": 1.5 * 100 * price("disk.pd-balanced", uc1),
        "GKE node pool gpu-ondemand:": 0.0,
        # No on-demand twin: 80% of the hours on spot, the rest without a node (nor its disk).
        "GKE node pool lab-gpu: g2-standard-4 + 1 x nvidia-l4 spot": (
            1 * HOURS * 0.8 * node_hourly(g2_small, "spot", uc1)
        ),
        "GKE node pool lab-gpu: boot disks": 0.8 * 100 * price("disk.pd-balanced", uc1),
        "Memorystore Redis Cluster": 2
        * 2
        * HOURS
        * price("redis.cluster.REDIS_STANDARD_SMALL", uc1),
        # NAT serves the region's 4 + 1.5 + 0 + 0.8 average nodes.
        "Cloud NAT gateway": 6.3 * HOURS * 0.0014,
        "Cloud NAT data processing": 100 * 0.045,
        "Cloud NAT IP addresses": HOURS * 0.005,
        "BigQuery physical storage": (210 - 10) * price("bigquery.storage.PHYSICAL", "US"),
        "BigQuery on-demand queries": (3 - 1) * 6.25,
        "Pub/Sub throughput": (1034 - 10) / 1024 * 40,
        "Cloud Logging ingestion": (150 - 50) * 0.50,
    }
    for fragment, figure in expected.items():
        assert monthly(e, fragment) == pytest.approx(figure, rel=1e-9, abs=1e-9), fragment
    assert e.total == pytest.approx(sum(expected.values()), rel=1e-9)
    assert not [line for line in e.lines if "lab-gpu" in line.item and "on-demand" in line.item]
    assert e.per_signal == pytest.approx(e.total / 40000)
    assert e.budget_usd == 5000 and not e.over_budget
    assert e.by_region()[uc1] + e.by_region()["asia-northeast1"] + e.by_region()[
        "US"
    ] + e.by_region()["global"] == pytest.approx(e.total)


def test_unknown_types_and_regions_are_listed_unpriced_never_zero(
    small: tuple[Inventory, Estimate],
):
    inventory, e = small
    unpriced = {u.name: u for u in e.unpriced}
    assert set(unpriced) == {"db", "tokyo-pool", "replayable"}
    assert "retained-message storage" in unpriced["replayable"].reason
    assert unpriced["db"].type == "gcp:sql/databaseInstance:DatabaseInstance"
    assert "asia-northeast1" in unpriced["tokyo-pool"].reason
    priced_urns = {line.resource for line in e.lines}
    assert not {u.urn for u in e.unpriced} & priced_urns
    free = {f.type: f for f in e.free}
    assert free["gcp:projects/iAMMember:IAMMember"].count == 1
    assert "throughput" in free["gcp:pubsub/topic:Topic"].reason
    # Every resource is priced, unpriced or free: none is silently dropped.
    for resource in inventory.resources:
        assert (
            resource.urn in priced_urns
            or resource.urn in {u.urn for u in e.unpriced}
            or resource.type in free
        ), resource.urn
    text = render_text(e)
    assert "Unpriced, not in the total (3):" in text and "tokyo-pool" in text


def test_a_node_count_unknown_until_apply_is_unpriced():
    pool = Resource(
        type="gcp:container/nodePool:NodePool",
        name="pool",
        urn="urn:pulumi:s::p::gcp:container/nodePool:NodePool::pool",
        parent=None,
        provider=None,
        inputs={"location": "us-central1", "nodeCount": UNKNOWN, "nodeConfig": {}},
    )
    odd = Resource(
        type="gcp:container/nodePool:NodePool",
        name="odd",
        urn="urn:pulumi:s::p::gcp:container/nodePool:NodePool::odd",
        parent=None,
        provider=None,
        inputs={
            "location": "us-central1",
            "nodeCount": 1,
            "nodeConfig": {"machineType": "x9-huge"},
        },
    )
    from infra.config import CostSettings

    e = estimate(Inventory("s", "p", [pool, odd]), CostSettings())
    reasons = {u.name: u.reason for u in e.unpriced}
    assert "not a number" in reasons["pool"]
    assert "x9-huge" in reasons["odd"]
    assert all(line.resource not in (pool.urn, odd.urn) for line in e.lines)


def test_cost_command_writes_the_table_and_json(small_program: Path, tmp_path: Path):
    out, policy = tmp_path / "cost.json", tmp_path / "budget.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools",
            "cost",
            "--stack",
            "small",
            "--program",
            str(small_program),
            "--json",
            str(out),
            "--policy-config",
            str(policy),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["stack"] == "small" and data["budgetMonthlyUsd"] == 5000
    assert data["totalMonthlyUsd"] == pytest.approx(
        sum(r["monthlyUsd"] for r in data["lines"]), abs=0.01
    )
    assert data["perSignalUsd"] == pytest.approx(data["totalMonthlyUsd"] / 40000, rel=1e-3)
    assert {u["name"] for u in data["unpriced"]} == {"db", "tokyo-pool", "replayable"}
    assert json.loads(policy.read_text()) == {
        BUDGET_POLICY: {"estimatedMonthlyUsd": data["totalMonthlyUsd"], "budgetMonthlyUsd": 5000.0}
    }
    assert f"${data['totalMonthlyUsd']:,.2f}" in result.stdout
    assert "Cost per trading signal at 40,000 signals/month" in result.stdout
    assert "us-central1" in result.stdout and "subtotal" in result.stdout


def test_bad_cost_config_names_the_key(small_program: Path):
    with pytest.raises(ValueError, match=r"costprog:cost\.spotShare"):
        usage_from_stack(small_program, "small", ['costprog:cost={"spotShare": 2}'])


# --------------------------------------------------------------------------- the repository


@pytest.fixture(scope="module")
def stack_usages() -> dict[str, StackUsage]:
    return {s: usage_from_stack(REPO, s) for s in ("dev", "prod")}


def test_dev_and_prod_are_priced_within_budget(stack_plan: Inventory, stack_usages):
    stack_usage = stack_usages[stack_plan.stack]
    e = estimate(stack_plan, stack_usage.usage, stack_usage.budget_usd)
    assert e.budget_usd is not None and 0 < e.total <= e.budget_usd, render_text(e)
    assert e.per_signal < 0.50
    priced = {line.resource for line in e.lines}
    free = {f.type for f in e.free}
    unpriced = {u.urn for u in e.unpriced}
    for resource in stack_plan.resources:
        assert resource.urn in priced or resource.urn in unpriced or resource.type in free
    # What is unpriced says which part of its bill is missing; a type the tool knows nothing
    # of is only a log-based metric (Monitoring ingestion of a few samples a minute).
    unknown = {u.type for u in e.unpriced if u.reason == "no price for this type"}
    assert unknown <= {"gcp:logging/metric:Metric"}, unknown


def test_dev_gpu_pool_against_hand_figures(dev_plan: Inventory, stack_usages):
    """Pulumi.dev.yaml: l4-spot is g2-standard-8 + 1 L4, averageNodes 0.5, spotShare 0.95, and
    dev has no on-demand GPU pool: the 5% of hours without spot capacity run no GPU node."""
    pools = [
        r
        for r in dev_plan.of_type("gcp:container/nodePool:NodePool")
        if r.inputs.get("name") == "l4-spot"
    ]
    assert len(pools) == 1, "the dev plan should declare the l4-spot GPU pool"
    e = estimate(dev_plan, stack_usages["dev"].usage, stack_usages["dev"].budget_usd)
    g2 = SHAPES["g2-standard-8"]
    uc1 = "us-central1"
    expected = 0.5 * HOURS * 0.95 * node_hourly(g2, "spot", uc1)
    assert monthly(e, "GKE node pool l4-spot: g2-standard-8") == pytest.approx(expected)
    assert monthly(e, "GKE node pool l4-spot: boot disks") == pytest.approx(
        0.5 * 0.95 * 100 * price("disk.pd-balanced", uc1)
    )
    assert {line.category for line in e.lines if "l4-spot" in line.item} == {"GPUs"}


def test_dev_fits_the_plans_budget_and_prod_costs_no_more_per_signal(
    stack_plan: Inventory, stack_usages
):
    """Dev at $400/month or less; prod's cost per signal no higher than its $0.0120
    at 500k signals a month before dev was right-sized."""
    usage = stack_usages[stack_plan.stack]
    e = estimate(stack_plan, usage.usage, usage.budget_usd)
    if stack_plan.stack == "dev":
        assert e.total <= 400, render_text(e)
        assert e.budget_usd == 400, "the budget rule holds dev to the plan's target"
        # The zonal cluster's fee, and GKE's free-tier credit as its own negative line.
        (fee,) = [line for line in e.lines if line.price_id == "gke.clusterFee"]
        (credit,) = [line for line in e.lines if line.price_id == "gke.freeTier"]
        assert "zonal" in fee.item and credit.monthly_usd == pytest.approx(-fee.monthly_usd)
        assert credit.source.startswith("https://cloud.google.com/kubernetes-engine/pricing")
    else:
        assert usage.usage.signals_per_month == 500_000
        assert round(e.per_signal, 4) <= 0.0120, render_text(e)
        assert not [line for line in e.lines if line.price_id == "gke.freeTier"], (
            "regional clusters never get the free tier"
        )


def test_the_free_tier_credit_goes_when_another_stack_takes_it(dev_plan: Inventory):
    from infra.config import CostSettings

    with_credit = estimate(dev_plan, CostSettings())
    without = estimate(dev_plan, CostSettings(gke_free_tier=False))
    assert not [line for line in without.lines if line.price_id == "gke.freeTier"]
    assert without.total - with_credit.total == pytest.approx(HOURS * 0.10)


def test_line_items_are_grouped_by_category_with_subtotals(small: tuple[Inventory, Estimate]):
    _, e = small
    assert {line.category for line in e.lines} <= set(CATEGORIES)
    by_category = e.by_category()
    assert list(by_category) == [c for c in CATEGORIES if c in by_category], "category order"
    assert sum(by_category.values()) == pytest.approx(e.total)
    assert by_category["GPUs"] == pytest.approx(
        sum(line.monthly_usd for line in e.lines if "gpu" in line.item)
    )
    assert by_category["Redis"] == pytest.approx(monthly(e, "Memorystore"))
    assert by_category["BigQuery"] == pytest.approx(monthly(e, "BigQuery"))
    data = e.to_json()
    assert data["byCategory"] == {k: round(v, 2) for k, v in by_category.items()}
    assert {row["category"] for row in data["lines"]} == set(by_category)
    text = render_text(e).splitlines()
    for category, total in by_category.items():
        start = text.index(f"{category}: {CATEGORIES[category]}")
        end = next(i for i in range(start, len(text)) if f"subtotal {category}" in text[i])
        assert text[end].endswith(f"${total:,.2f}") or text[end].endswith(f"-${-total:,.2f}")
        items = {line.item for line in e.lines if line.category == category}
        assert {i for i in items if any(i in row for row in text[start:end])} == items
    markdown = render_markdown(e)
    assert "| Category | Region | Line item |" in markdown
    assert f"| **GPUs** | | **subtotal** | | | **${by_category['GPUs']:,.2f}** |" in markdown


def test_pricing_errors_name_the_key(tmp_path: Path):
    broken = dict(RAW)
    broken["credits"] = {"gke.freeTier": {**RAW["credits"]["gke.freeTier"], "asOf": "soon"}}
    path = tmp_path / "pricing.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(PricingError) as error:
        load_pricing(path)
    assert f"{path}: credits.gke.freeTier.asOf: String should match pattern" in str(error.value)


@pytest.fixture(scope="module")
def prod_pack(prod_plan: Inventory):
    with PolicyPackProcess(project=prod_plan.project, stack="prod") as pack:
        yield pack


def test_budget_rule_fails_a_stack_pushed_over_budget(
    prod_plan: Inventory, stack_usages, prod_pack
):
    usage = stack_usages["prod"].usage
    within = estimate(prod_plan, usage, stack_usages["prod"].budget_usd)
    over = estimate(prod_plan, usage, budget_usd=100.0)
    assert budget_policy_config(over)[BUDGET_POLICY] == {
        "estimatedMonthlyUsd": round(over.total, 2),
        "budgetMonthlyUsd": 100.0,
    }

    def budget_violations(e: Estimate) -> list:
        prod_pack.configure(budget_policy_config(e))
        violations = prod_pack.analyze_stack(prod_plan.resources)
        return [v for v in violations if v.policy == BUDGET_POLICY]

    failing = budget_violations(over)
    assert len(failing) == 1 and failing[0].level == "mandatory"
    assert "exceeds the budget of $100.00/month" in failing[0].message
    assert budget_violations(within) == []


def test_check_command_fails_a_stack_pushed_over_budget(
    tmp_path: Path, dev_plan: Inventory, monkeypatch: pytest.MonkeyPatch
):
    """`tools check` hands the estimate to the pack's budget rule: a $10 budget fails. (The
    session's dev plan stands in for planning again: the budget does not change the plan.)"""
    from tools import check

    monkeypatch.setattr(check, "plan_from_args", lambda args: dev_plan)
    out = tmp_path / "check.json"
    parser = argparse.ArgumentParser()
    check.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "check",
            "--stack",
            "dev",
            "--program",
            str(REPO),
            "--config",
            'signal-platform:budget={"monthlyUsd": 10}',
            "--json",
            str(out),
        ]
    )
    assert args.run(args) == 1
    budget = [v for v in json.loads(out.read_text())["violations"] if v["policy"] == BUDGET_POLICY]
    assert len(budget) == 1 and budget[0]["level"] == "mandatory"
    assert "exceeds the budget of $10.00/month" in budget[0]["message"]


@pytest.mark.parametrize(
    ("cost", "path", "message"),
    [
        ({"averageNodes": {"l4-spt": 1}}, "cost.averageNodes.l4-spt", "no such node pool"),
        (
            {"averageNodes": {"asia-northeast1/l4-spot": 1}},
            "cost.averageNodes.asia-northeast1/l4-spot",
            "region the stack does not deploy",
        ),
        ({"spotShare": 1.5}, "cost.spotShare", "less than or equal to 1"),
        ({"signalsPerMonth": 0}, "cost.signalsPerMonth", "greater than or equal to 1"),
        ({"natGibPerMonh": 1}, "cost.natGibPerMonh", "unknown key"),
    ],
)
def test_cost_config_errors_name_the_key(cost: dict, path: str, message: str):
    from infra.config import ConfigError
    from tests.infra.stack_config import load

    with pytest.raises(ConfigError) as error:
        load("dev", cost=cost)
    text = str(error.value)
    assert f"signal-platform:{path}" in text and message in text, text


def test_a_cluster_whose_default_pool_cannot_be_priced_keeps_its_management_fee():
    # A public GKE example: the default pool on a machine type pricing.yaml lacks. The fee is
    # billed whatever the nodes are; only the pool is unpriced.
    cluster = Resource(
        type="gcp:container/cluster:Cluster",
        name="gke",
        urn="urn:pulumi:s::p::gcp:container/cluster:Cluster::gke",
        parent=None,
        provider=None,
        inputs={
            "location": "us-west1-a",
            "initialNodeCount": 2,
            "nodeConfig": {"machineType": "x9-huge"},
        },
    )
    from infra.config import CostSettings

    e = estimate(Inventory("s", "p", [cluster]), CostSettings())
    fees = [line.price_id for line in e.lines if line.resource == cluster.urn]
    assert "gke.clusterFee" in fees and not [f for f in fees if f.startswith("compute.")]
    (unpriced,) = e.unpriced
    assert unpriced.name == "gke (default node pool)" and "x9-huge" in unpriced.reason
