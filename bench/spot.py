"""Spot preemption waves against spot-first + on-demand fallback GPU pools.

One region's GPU pools as Pulumi.prod.yaml declares them (read from the stack: an L4 spot
pool and its on-demand fallback, Triton replicas per GPU by time-sharing, the catalogue's
L4 zones) serve a day of GPU demand shaped like the trading day (bench/sim_common.py),
requested ahead of load. Preemption waves (a share of one zone's spot nodes reclaimed at
once, then no spot capacity in that zone for 30-120 min) and single-node preemptions hit
every policy identically (app/autoscale/spot.py):

* on-demand only: the no-risk baseline, full price;
* spot only: spot with the same spare-node headroom, no fallback;
* spot-first + on-demand fallback (the platform's ComputeClass): on-demand only for what
  spot cannot give, migrated back to spot when spot returns.

The capacity SLO: ready GPU slots cover the slots needed in at least 99.5% of minutes.
Prices: g2-standard-8 (8 vCPU, 32 GiB, one L4) in us-central1 from tools/pricing.yaml
(as of 2026-11-20): on-demand $0.8536/h, spot $0.3414/h.

    .venv/bin/python bench/spot.py                      # 20 days, a sweep of wave rates
    .venv/bin/python bench/spot.py --quick              # 20 days, no sweep
    .venv/bin/python bench/spot.py --waves-per-day 4    # another preemption rate

The last line carries the headline figures and the ratios against the baselines.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.autoscale.spot import (
    OnDemandOnly,
    Policy,
    PoolSpec,
    PreemptionSpec,
    SpotFirst,
    SpotOutcome,
    preemption_plan,
    simulate,
)
from bench.sim_common import REGIONS, ratio, table, trading_days
from infra.config import NAMESPACE, StackConfig, load_catalog
from tools.engine import read_stack_config

REPO = Path(__file__).resolve().parent.parent
REGION = "us-central1"
USD_PER_NODE_HOUR = {True: 0.3414, False: 0.8536}  # g2-standard-8 spot / on-demand, above


def prod_pool(spot: bool) -> PoolSpec:
    """The prod stack's own GPU pool of that kind in REGION, so the simulation follows the
    configuration it is meant to justify."""
    config = StackConfig.load("prod", read_stack_config(REPO / "Pulumi.prod.yaml", NAMESPACE))
    pool = next(p for p in config.region(REGION).node_pools.gpu if p.spot is spot)
    return PoolSpec(
        pool.name,
        spot=spot,
        max_nodes=pool.max_nodes,
        slots_per_node=pool.accelerator_count * pool.max_shared_clients_per_gpu,
        usd_per_node_hour=USD_PER_NODE_HOUR[spot],
    )


ZONES = load_catalog().gpus_in(REGION)["nvidia-l4"]
SPOT = prod_pool(spot=True)
ON_DEMAND = prod_pool(spot=False)
POOLS = (SPOT, ON_DEMAND)
RPS_PER_SLOT = 600.0  # requests per second one Triton replica serves within the SLO
SLO_MINUTES = 0.995  # share of minutes in which ready slots must cover the slots needed
HEADROOM = 0.15


def demand(days: int, seed: int) -> np.ndarray:
    """GPU slots needed per minute: us-central1's trading days at RPS_PER_SLOT."""
    region = next(r for r in REGIONS if r.region == "us-central1")
    rps, _ = trading_days(region, days, np.random.default_rng([seed, 100]))
    return np.maximum(np.ceil(rps / RPS_PER_SLOT), 1).astype(np.int64)


# The on-demand baseline gets a pool as large as both pools together.
ON_DEMAND_ONLY = PoolSpec(
    "l4-ondemand",
    spot=False,
    max_nodes=SPOT.max_nodes + ON_DEMAND.max_nodes,
    slots_per_node=2,
    usd_per_node_hour=ON_DEMAND.usd_per_node_hour,
)


def policies() -> list[Policy]:
    return [
        OnDemandOnly((ON_DEMAND_ONLY,), ZONES),
        SpotFirst(POOLS, ZONES, headroom=HEADROOM, fallback=False),
        SpotFirst(POOLS, ZONES, headroom=HEADROOM, fallback=True),
    ]


@dataclass(frozen=True)
class Scenario:
    waves_per_day: float
    node_preemptions_per_day: float


def run(days: int, seed: int, scenario: Scenario) -> list[SpotOutcome]:
    needed = demand(days, seed)
    spec = PreemptionSpec(
        waves_per_day=scenario.waves_per_day,
        node_preemptions_per_day=scenario.node_preemptions_per_day,
    )
    plan = preemption_plan(
        spec, ZONES, len(needed), SPOT.max_nodes, np.random.default_rng([seed, 200])
    )
    return [simulate(policy, needed, plan) for policy in policies()]


def _rows(outcomes: list[SpotOutcome], days: int) -> list[list[object]]:
    rows = []
    for o in outcomes:
        rows.append(
            [
                o.policy,
                o.violating_minutes,
                f"{1 - o.violating_fraction:.3%}",
                "yes" if 1 - o.violating_fraction >= SLO_MINUTES else "NO",
                f"{o.served_fraction:.4%}",
                f"${o.usd / days:,.2f}",
                f"{o.spot_share:.1%}",
                o.preempted,
            ]
        )
    return rows


HEADERS = [
    "policy",
    "short min",
    "minutes covered",
    "SLO",
    "slot-min served",
    "cost/day",
    "spot share",
    "preempted",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="no sweep of preemption rates")
    parser.add_argument("--days", type=int, default=20, help="days (default 20)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--waves-per-day",
        type=float,
        default=2.0,
        help="preemption waves per day in the region (default 2)",
    )
    parser.add_argument(
        "--node-preemptions-per-day",
        type=float,
        default=0.2,
        help="background preemptions per spot node per day (default 0.2)",
    )
    args = parser.parse_args(argv)
    days = args.days
    started = time.perf_counter()
    scenario = Scenario(args.waves_per_day, args.node_preemptions_per_day)
    outcomes = run(days, args.seed, scenario)
    needed = demand(days, args.seed)
    print(
        f"{days} days, seed {args.seed}: {scenario.waves_per_day:g} waves/day, "
        f"{scenario.node_preemptions_per_day:g} preemptions/spot node/day; demand "
        f"{needed.min()}-{needed.max()} GPU slots; pools: spot {SPOT.max_nodes} nodes, "
        f"on-demand {ON_DEMAND.max_nodes} nodes, {SPOT.slots_per_node} slots/node; "
        f"SLO: slots covered in >= {SLO_MINUTES:.1%} of minutes"
    )
    print(table(HEADERS, _rows(outcomes, days)))
    if not args.quick:
        print()
        print("preemption-rate sweep (spot-first + fallback; spot only in brackets)")
        rows = []
        for waves in (0.5, 1.0, 2.0, 4.0, 8.0):
            o = run(days, args.seed, Scenario(waves, scenario.node_preemptions_per_day))
            _, spot_only, ours = o
            rows.append(
                [
                    f"{waves:g} waves/day",
                    f"{1 - ours.violating_fraction:.3%} ({1 - spot_only.violating_fraction:.3%})",
                    f"{ours.served_fraction:.4%} ({spot_only.served_fraction:.4%})",
                    f"${ours.usd / days:,.2f}",
                    f"{ours.spot_share:.1%}",
                ]
            )
        print(table(["rate", "minutes covered", "slot-min served", "cost/day", "spot share"], rows))
    print(f"({time.perf_counter() - started:.1f}s)")
    on_demand, spot_only, ours = outcomes
    print(
        f"spot: fallback covers {1 - ours.violating_fraction:.3%} of minutes "
        f"(SLO {SLO_MINUTES:.1%}) at {ours.spot_share:.1%} spot, ${ours.usd / days:,.2f}/day; "
        f"spot only {1 - spot_only.violating_fraction:.3%}; on-demand only "
        f"${on_demand.usd / days:,.2f}/day; cost {ratio(ours.usd, on_demand.usd)} of "
        f"on-demand, short minutes {ratio(ours.violating_minutes, spot_only.violating_minutes)} "
        f"of spot only"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
