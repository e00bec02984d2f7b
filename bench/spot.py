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
Prices: g2-standard-8 (8 vCPU, 32 GiB, one L4) in us-central1 from tools/cost/pricing.yaml
(as of 2026-11-20): on-demand $0.8536/h, spot $0.3414/h.

    .venv/bin/python bench/spot.py                      # 20 days, a sweep of wave rates
    .venv/bin/python bench/spot.py --quick              # 20 days, no sweep
    .venv/bin/python bench/spot.py --waves-per-day 4    # another preemption rate
    .venv/bin/python bench/spot.py --quick --json bench/results/spot.json

The last line carries the headline figures and the ratios against the baselines. ``--json``
also writes each policy's totals and, minute by minute around the first wave that hits every
zone (or the first wave), the slots needed and each policy's ready slots on spot and on
on-demand nodes, which ``bench/plots.py`` draws.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.autoscale.spot import (
    Fleet,
    OnDemandOnly,
    Policy,
    PoolSpec,
    PreemptionPlan,
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


@dataclass(frozen=True)
class Traced:
    """One policy's outcome and its ready GPU slots per minute, on spot and on on-demand nodes."""

    outcome: SpotOutcome
    spot_slots: np.ndarray
    on_demand_slots: np.ndarray


def traced_run(days: int, seed: int, scenario: Scenario) -> tuple[PreemptionPlan, list[Traced]]:
    """Every policy through the same demand and the same preemption plan."""
    needed = demand(days, seed)
    spec = PreemptionSpec(
        waves_per_day=scenario.waves_per_day,
        node_preemptions_per_day=scenario.node_preemptions_per_day,
    )
    plan = preemption_plan(
        spec, ZONES, len(needed), SPOT.max_nodes, np.random.default_rng([seed, 200])
    )
    traced = []
    for policy in policies():
        slots = np.zeros((2, len(needed)), dtype=np.int64)  # [spot, on-demand] per minute

        def observe(minute: int, fleet: Fleet, slots: np.ndarray = slots) -> None:
            for node in fleet.nodes:
                if node.ready(minute):
                    slots[0 if node.pool.spot else 1, minute] += node.pool.slots_per_node

        outcome = simulate(policy, needed, plan, observe=observe)
        traced.append(Traced(outcome, slots[0], slots[1]))
    return plan, traced


def run(days: int, seed: int, scenario: Scenario) -> list[SpotOutcome]:
    return [t.outcome for t in traced_run(days, seed, scenario)[1]]


def figures_json(
    plan: PreemptionPlan,
    traced: list[Traced],
    needed: np.ndarray,
    seed: int,
    scenario: Scenario,
    command: str,
) -> dict:
    """What ``--json`` writes: the run, each policy's totals, and the minutes around the first
    wave that hits every zone (the first wave if none does; the plan must have one), from an
    hour before it to an hour after its last zone has spot capacity again."""
    days = len(needed) // 1440
    zones_hit: dict[int, list[str]] = {}
    for w in plan.waves:
        zones_hit.setdefault(w.minute, []).append(w.zone)
    minute = next((m for m, z in zones_hit.items() if len(z) == len(ZONES)), plan.waves[0].minute)
    wave = [w for w in plan.waves if w.minute == minute]
    start = max(minute - 60, 0)
    end = min(max(w.stockout_until for w in wave) + 60, len(needed))
    window = slice(start, end)
    return {
        "command": command,
        "days": days,
        "seed": seed,
        "waves_per_day": scenario.waves_per_day,
        "node_preemptions_per_day": scenario.node_preemptions_per_day,
        "slo_minutes": SLO_MINUTES,
        "policies": [
            {
                "policy": t.outcome.policy,
                "minutes_covered": round(1 - t.outcome.violating_fraction, 6),
                "usd_per_day": round(t.outcome.usd / days, 2),
                "spot_share": round(t.outcome.spot_share, 4),
            }
            for t in traced
        ],
        "window": {
            "start_minute": start,
            "waves": [
                {
                    "minute": w.minute,
                    "zone": w.zone,
                    "fraction": round(w.fraction, 3),
                    "stockout_until": w.stockout_until,
                }
                for w in wave
            ],
            "needed_slots": needed[window].tolist(),
            "ready_slots": {
                t.outcome.policy: {
                    "spot": t.spot_slots[window].tolist(),
                    "on_demand": t.on_demand_slots[window].tolist(),
                }
                for t in traced
            },
        },
    }


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
    parser.add_argument("--json", type=Path, help="write the totals and a wave's minutes here")
    args = parser.parse_args(argv)
    days = args.days
    started = time.perf_counter()
    scenario = Scenario(args.waves_per_day, args.node_preemptions_per_day)
    plan, traced = traced_run(days, args.seed, scenario)
    if args.json and not plan.waves:
        print(f"spot: --json draws a preemption wave, and this run has none "
              f"(--waves-per-day {args.waves_per_day:g}); allowed: a rate that makes one",
              file=sys.stderr)  # fmt: skip
        return 2
    outcomes = [t.outcome for t in traced]
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
    if args.json:
        command = " ".join(["bench/spot.py", *(sys.argv[1:] if argv is None else argv)])
        figures = figures_json(plan, traced, needed, args.seed, scenario, command)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, separators=(",", ":")) + "\n")
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
