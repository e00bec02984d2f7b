"""Predictive vs reactive autoscaling on the same synthetic trading days.

Each region's traffic (bench/sim_common.py) runs minute by minute through the same
capacity model: a Deployment whose new pods serve only after a start-up delay, scaled by
the Kubernetes HPA algorithm (app/autoscale/hpa.py). The baseline HPA scales on CPU alone
(target 70%, the service's default); the predictive HPA also reads the external metric
the predictive scaler publishes (app/autoscale/scaler.py), fitted by statsmodels on the
preceding days and updated online. A minute violates the SLO when demand exceeds what
the ready pods serve within the latency target. Replica-hours count every pod that exists,
starting ones included.

    .venv/bin/python bench/autoscale.py            # 20 evaluation days, 3 regions
    .venv/bin/python bench/autoscale.py --quick    # 5 days (under a minute)
    .venv/bin/python bench/autoscale.py --quick --json bench/results/autoscale.json

The last line carries the headline figures and the ratios against the baseline. ``--json``
also writes each policy's totals and, minute by minute, the demand and the replicas of one
trading day (the first evaluated day of the busiest region), which ``bench/plots.py`` draws.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.autoscale.forecast import SeasonalForecaster
from app.autoscale.hpa import Deployment, HorizontalPodAutoscaler, HpaSpec
from app.autoscale.scaler import PredictiveScaler, ScalingPolicy
from bench.sim_common import (
    MINUTES_PER_DAY,
    REGIONS,
    NewsBurst,
    RegionTraffic,
    ratio,
    table,
    trading_days,
)

POD_CAPACITY_RPS = 500.0  # within the latency SLO (workloads.signalService.targetRequestsPerSecond)
# CPU utilisation a saturated pod reports (its limit is twice its request).
CPU_CEILING = 2.0
MIN_REPLICAS, MAX_REPLICAS = 2, 40
HISTORY_DAYS = 10


@dataclass(frozen=True)
class SimParams:
    startup_minutes: int = 4
    metric_lag_minutes: int = 1
    # The HPA's CPU target: the whole policy for the reactive baseline, a backstop for
    # surprises when the predictive scaler's metric is beside it.
    cpu_target: float = 0.7
    # The HPA's requests-per-second-per-pod target (a Pods metric); None: not used.
    pods_target: float | None = None
    # Predictive only: the scaler's policy (ScalingPolicy's defaults, as deployed).
    target_utilisation: float = ScalingPolicy().target_utilisation
    headroom_sigmas: float = ScalingPolicy().headroom_sigmas


# CPU-only scaling, the baseline (target 70%, the service's default).
REACTIVE = SimParams(cpu_target=0.7)
# The HPA infra/workloads.py deploys without the scaler: CPU 70% and 500 requests/s per pod.
DEPLOYED = SimParams(cpu_target=0.7, pods_target=POD_CAPACITY_RPS)
# With the scaler: its forecast replicas, CPU relaxed to 80% as a backstop for surprises,
# and the requests-per-pod metric kept.
PREDICTIVE = SimParams(cpu_target=0.8, pods_target=POD_CAPACITY_RPS)


@dataclass(frozen=True)
class Outcome:
    violation_minutes: int
    replica_hours: float
    unserved_rps_minutes: float  # demand above ready capacity, summed over minutes
    demand_rps_minutes: float
    violating: np.ndarray  # bool per minute
    replicas: np.ndarray  # pods that exist (starting ones included), per minute
    ready: np.ndarray  # pods that serve, per minute


def simulate(
    demand: np.ndarray,
    params: SimParams,
    scaler: PredictiveScaler | None,
    first_phase: int = 0,
) -> Outcome:
    """Run one region's demand (requests per second, one value per minute) through the HPA
    and the Deployment; with ``scaler`` the HPA also reads its published replicas."""
    spec = HpaSpec(
        min_replicas=MIN_REPLICAS,
        max_replicas=MAX_REPLICAS,
        cpu_target=params.cpu_target,
        pods_target=params.pods_target,
        external_target=1.0 if scaler is not None else None,
    )
    hpa = HorizontalPodAutoscaler(spec)
    initial = max(MIN_REPLICAS, math.ceil(demand[0] / (POD_CAPACITY_RPS * params.cpu_target)))
    deployment = Deployment(initial, params.startup_minutes)
    lag = max(params.metric_lag_minutes, 1)
    cpu_seen: list[float] = []  # per minute, what metrics-server reports
    rps_seen: list[float] = []  # requests per second per ready pod (the Pods metric)
    ready_seen: list[int] = []
    external_seen: list[float | None] = []
    violating = np.zeros(len(demand), dtype=bool)
    replicas = np.zeros(len(demand), dtype=np.int64)
    unserved = 0.0
    for t, rate in enumerate(demand):
        if t >= lag:
            desired = hpa.recommend(
                deployment.replicas,
                ready_seen[t - lag],
                cpu_utilisation=cpu_seen[t - lag],
                external_value=external_seen[t - lag],
                pods_value=rps_seen[t - lag],
            )
            deployment.scale(desired, t)
        ready = deployment.ready(t)
        replicas[t] = deployment.replicas
        capacity = ready * POD_CAPACITY_RPS
        if rate > capacity:
            violating[t] = True
            unserved += rate - capacity
        cpu_seen.append(min(rate / capacity, CPU_CEILING) if ready else CPU_CEILING)
        # Every request is counted where it arrives, served in time or not.
        rps_seen.append(rate / ready if ready else rate)
        ready_seen.append(ready)
        deployment.tick()
        if scaler is not None:
            phase = (first_phase + t) % MINUTES_PER_DAY
            scaler.observe(float(rate), phase)
            external_seen.append(float(scaler.decide(phase + 1).desired))
        else:
            external_seen.append(None)
    return Outcome(
        int(violating.sum()),
        deployment.pod_minutes / 60.0,
        unserved,
        float(demand.sum()),
        violating,
        replicas,
        np.asarray(ready_seen, dtype=np.int64),
    )


def make_scaler(history: np.ndarray, params: SimParams) -> PredictiveScaler:
    policy = ScalingPolicy(
        pod_capacity_rps=POD_CAPACITY_RPS,
        target_utilisation=params.target_utilisation,
        startup_minutes=params.startup_minutes,
        metric_lag_minutes=params.metric_lag_minutes,
        headroom_sigmas=params.headroom_sigmas,
        min_replicas=MIN_REPLICAS,
        max_replicas=MAX_REPLICAS,
    )
    forecaster = SeasonalForecaster.fit(history, MINUTES_PER_DAY, horizon=policy.lead_minutes)
    return PredictiveScaler(policy, forecaster)


@dataclass(frozen=True)
class Workload:
    region: RegionTraffic
    history: np.ndarray
    demand: np.ndarray
    bursts: list[NewsBurst]


def workloads(days: int, seed: int) -> list[Workload]:
    """Each region's fitting history and evaluation days, from its own seeded stream."""
    out = []
    for index, region in enumerate(REGIONS):
        rng = np.random.default_rng([seed, index])
        traffic, bursts = trading_days(region, HISTORY_DAYS + days, rng)
        split = HISTORY_DAYS * MINUTES_PER_DAY
        evaluated = [
            NewsBurst(b.day - HISTORY_DAYS, b.minute, b.amplitude)
            for b in bursts
            if b.day >= HISTORY_DAYS
        ]
        out.append(Workload(region, traffic[:split], traffic[split:], evaluated))
    return out


def run_policy(loads: list[Workload], params: SimParams, predictive: bool) -> list[Outcome]:
    return [
        simulate(w.demand, params, make_scaler(w.history, params) if predictive else None)
        for w in loads
    ]


CAUSES = ("open", "close", "news", "other")


def causes(w: Workload, violating: np.ndarray) -> dict[str, int]:
    """Violating minutes by what was happening: the first 20 minutes of the session (and of
    a foreign open), the last 30 minutes, the 30 minutes after a news burst, or else."""
    days = len(violating) // MINUTES_PER_DAY
    label = np.full(len(violating), 3)
    r = w.region
    for day in range(days):
        base = day * MINUTES_PER_DAY
        label[base + r.close_minute - 30 : base + r.close_minute + 5] = 1
        for opened in (r.open_minute, r.foreign_open_minute):
            if opened is not None:
                label[base + opened - 2 : base + opened + 20] = 0
    for b in w.bursts:
        start = b.day * MINUTES_PER_DAY + b.minute
        label[start : start + 30] = 2
    return {c: int((violating & (label == i)).sum()) for i, c in enumerate(CAUSES)}


def totals(outcomes: list[Outcome]) -> tuple[int, float, float]:
    unserved = sum(o.unserved_rps_minutes for o in outcomes)
    demand = sum(o.demand_rps_minutes for o in outcomes)
    return (
        sum(o.violation_minutes for o in outcomes),
        sum(o.replica_hours for o in outcomes),
        unserved / demand,
    )


def figures_json(
    loads: list[Workload],
    results: dict[str, list[Outcome]],
    labels: dict[str, str],
    days: int,
    startup_minutes: int,
    command: str,
) -> dict:
    """What ``--json`` writes: the run, each policy's totals, and one trading day minute by
    minute (the first evaluated day of the region with the highest peak)."""
    index = max(range(len(loads)), key=lambda i: loads[i].region.peak_rps)
    day = slice(0, MINUTES_PER_DAY)
    policies = {}
    for name, outcomes in results.items():
        violations, replica_hours, unserved = totals(outcomes)
        o = outcomes[index]
        policies[name] = {
            "label": labels[name],
            "violation_minutes": violations,
            "replica_hours": round(replica_hours, 1),
            "unserved_fraction": round(unserved, 6),
            "day": {
                "violation_minutes": int(o.violating[day].sum()),
                "replica_hours": round(float(o.replicas[day].sum()) / 60.0, 1),
                "replicas": o.replicas[day].tolist(),
                "ready": o.ready[day].tolist(),
            },
        }
    return {
        "command": command,
        "days": days,
        "regions": [w.region.region for w in loads],
        "pod_capacity_rps": POD_CAPACITY_RPS,
        "startup_minutes": startup_minutes,
        "metric_lag_minutes": REACTIVE.metric_lag_minutes,
        "day": {
            "region": loads[index].region.region,
            "day": 0,
            "open_minute": loads[index].region.open_minute,
            "close_minute": loads[index].region.close_minute,
            "demand_rps": [round(float(r), 1) for r in loads[index].demand[day]],
        },
        "policies": policies,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 evaluation days, no sweep")
    parser.add_argument("--days", type=int, default=None, help="evaluation days (default 20)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--startup-minutes", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write the totals and one day's series here")
    args = parser.parse_args(argv)
    days = args.days or (5 if args.quick else 20)
    started = time.perf_counter()
    startup = {"startup_minutes": args.startup_minutes}
    policies = {
        "reactive": (replace(REACTIVE, **startup), False),
        "deployed": (replace(DEPLOYED, **startup), False),
        "predictive": (replace(PREDICTIVE, **startup), True),
    }
    loads = workloads(days, args.seed)
    results = {name: run_policy(loads, p, predictive) for name, (p, predictive) in policies.items()}
    labels = {
        "reactive": "reactive HPA: CPU 70% (baseline)",
        "deployed": "reactive HPA: CPU 70% + 500 rps/pod",
        "predictive": "predictive + CPU 80% + 500 rps/pod",
    }

    print(
        f"{days} trading days x {len(loads)} regions, seed {args.seed}, pod start-up "
        f"{args.startup_minutes} min, metric lag {REACTIVE.metric_lag_minutes} min, "
        f"{POD_CAPACITY_RPS:.0f} rps per pod within the SLO"
    )
    rows = []
    for i, w in enumerate(loads):
        rows.append(
            [
                w.region.region,
                *(results[n][i].violation_minutes for n in policies),
                *(results[n][i].replica_hours for n in policies),
            ]
        )
    print(
        table(
            [
                "region",
                "violating min: CPU",
                "CPU+rps",
                "predictive",
                "replica-h: CPU",
                "CPU+rps",
                "predictive",
            ],
            rows,
        )
    )
    print()
    cause_rows = []
    for name in policies:
        counts: dict[str, int] = dict.fromkeys(CAUSES, 0)
        for w, o in zip(loads, results[name], strict=True):
            for cause, n in causes(w, o.violating).items():
                counts[cause] += n
        cause_rows.append([labels[name], *(counts[c] for c in CAUSES)])
    print("violating minutes by cause (open: first 20 min of a session; close: last 30 min;")
    print("news: 30 min after an unscheduled burst)")
    print(table(["scaler", *CAUSES], cause_rows))
    print()

    summary = {name: totals(results[name]) for name in policies}
    rows = [[labels[n], v, v / days, h, f"{u:.3%}"] for n, (v, h, u) in summary.items()]
    if not args.quick:
        # The frontier: what each scaler buys at other targets.
        for cpu in (0.5, 0.6, 0.8):
            v, h, u = totals(run_policy(loads, replace(REACTIVE, cpu_target=cpu, **startup), False))
            rows.append([f"reactive HPA: CPU {cpu:.0%}", v, v / days, h, f"{u:.3%}"])
        for cpu in (0.5, 0.6):
            variant = replace(DEPLOYED, cpu_target=cpu, **startup)
            v, h, u = totals(run_policy(loads, variant, False))
            rows.append([f"reactive HPA: CPU {cpu:.0%} + 500 rps/pod", v, v / days, h, f"{u:.3%}"])
        for cpu, util in ((0.7, 0.9), (0.8, 0.8), (0.9, 0.9)):
            variant = replace(PREDICTIVE, cpu_target=cpu, target_utilisation=util, **startup)
            v, h, u = totals(run_policy(loads, variant, True))
            rows.append(
                [f"predictive {util:.0%} + CPU {cpu:.0%} + 500 rps/pod", v, v / days, h, f"{u:.3%}"]
            )
    print(table(["scaler", "SLO-violating min", "per day", "replica-hours", "unserved"], rows))
    if args.json:
        command = " ".join(["bench/autoscale.py", *(sys.argv[1:] if argv is None else argv)])
        figures = figures_json(loads, results, labels, days, args.startup_minutes, command)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, separators=(",", ":")) + "\n")
    print(f"({time.perf_counter() - started:.1f}s)")
    (v_r, h_r, _), (v_d, h_d, _), (v_p, h_p, _) = (summary[n] for n in policies)
    print(
        f"autoscale: predictive {v_p} SLO-violating min, {h_p:,.0f} replica-h vs CPU HPA "
        f"{v_r} min, {h_r:,.0f} replica-h (violations {ratio(v_p, v_r)}, replica-hours "
        f"{ratio(h_p, h_r)}); vs CPU+rps HPA {v_d} min, {h_d:,.0f} replica-h (violations "
        f"{ratio(v_p, v_d)}, replica-hours {ratio(h_p, h_d)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
