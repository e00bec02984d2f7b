"""The spot capacity model: invariants under random preemption waves, determinism, and the
fallback's behaviour through a regional stock-out."""

from __future__ import annotations

import numpy as np
import pytest

from app.autoscale.spot import (
    Fleet,
    OnDemandOnly,
    PoolSpec,
    PreemptionPlan,
    PreemptionSpec,
    SpotFirst,
    Wave,
    preemption_plan,
    simulate,
)

ZONES = ("z-a", "z-b", "z-c")
SPOT = PoolSpec("spot", spot=True, max_nodes=8, slots_per_node=2, usd_per_node_hour=0.34)
ON_DEMAND = PoolSpec("od", spot=False, max_nodes=6, slots_per_node=2, usd_per_node_hour=0.85)
POOLS = (SPOT, ON_DEMAND)
CALM = PreemptionPlan((), (), 3)


def day_of_demand(rng: np.random.Generator, minutes: int = 1440) -> np.ndarray:
    t = np.arange(minutes)
    shape = 2 + 8 * np.exp(-(((t - 900) / 120.0) ** 2))
    return np.maximum(np.round(shape + rng.normal(0, 0.5, minutes)), 1).astype(np.int64)


def test_without_preemption_spot_first_is_all_spot_and_always_covered() -> None:
    needed = day_of_demand(np.random.default_rng(0))
    outcome = simulate(SpotFirst(POOLS, ZONES), needed, CALM)
    assert outcome.violating_minutes == 0
    assert outcome.served_fraction == 1.0
    assert outcome.spot_share == 1.0
    assert outcome.preempted == 0
    on_demand = simulate(OnDemandOnly((ON_DEMAND,), ZONES), needed, CALM)
    assert on_demand.spot_share == 0.0
    # Spot-first carries headroom, yet costs well under on-demand.
    assert outcome.usd < 0.6 * on_demand.usd


@pytest.mark.parametrize("seed", range(4))
def test_invariants_under_random_waves(seed: int) -> None:
    rng = np.random.default_rng(seed)
    needed = day_of_demand(rng)
    spec = PreemptionSpec(waves_per_day=6, node_preemptions_per_day=1.0)
    plan = preemption_plan(spec, ZONES, len(needed), SPOT.max_nodes, rng)
    assert plan.waves  # the harsh rate does produce waves
    billed = {"spot": 0, "od": 0}

    def check(minute: int, fleet: Fleet) -> None:
        for pool in POOLS:
            assert len(fleet.alive(pool)) <= pool.max_nodes
        assert fleet.ready_slots(minute) <= sum(n.pool.slots_per_node for n in fleet.nodes)
        for node in fleet.nodes:
            assert node.zone in ZONES
            if node.fails_at is not None:
                assert node.pool.spot  # only spot creations fail
            else:
                billed[node.pool.name] += 1

    outcome = simulate(SpotFirst(POOLS, ZONES), needed, plan, observe=check)
    assert outcome.preempted > 0
    expected_usd = (billed["spot"] * SPOT.usd_per_node_hour + billed["od"] * 0.85) / 60
    assert outcome.usd == pytest.approx(expected_usd)
    assert outcome.spot_share == pytest.approx(billed["spot"] / (billed["spot"] + billed["od"]))
    assert 0 <= outcome.served_fraction <= 1
    assert outcome.violating_minutes == int((outcome.ready_slots < needed).sum())

    def never_spot(minute: int, fleet: Fleet) -> None:
        assert all(not n.pool.spot for n in fleet.nodes)

    on_demand = simulate(OnDemandOnly((ON_DEMAND,), ZONES), needed, plan, observe=never_spot)
    assert on_demand.preempted == 0 and on_demand.spot_share == 0.0


def test_plans_and_outcomes_are_deterministic() -> None:
    spec = PreemptionSpec(waves_per_day=4)
    plans = [
        preemption_plan(spec, ZONES, 2880, 8, np.random.default_rng(seed)) for seed in (5, 5, 6)
    ]
    assert plans[0] == plans[1]
    assert plans[0] != plans[2]
    needed = day_of_demand(np.random.default_rng(1), 2880)
    first, second = (simulate(SpotFirst(POOLS, ZONES), needed, plans[0]) for _ in range(2))
    assert first.usd == second.usd
    np.testing.assert_array_equal(first.ready_slots, second.ready_slots)
    low, high = spec.busy_window
    assert all(low <= w.minute % 1440 < high for w in plans[0].waves)


def regional_stockout(start: int = 100, until: int = 200) -> PreemptionPlan:
    waves = tuple(Wave(start, zone, 1.0, until) for zone in ZONES)
    return PreemptionPlan(waves, (), 3)


def test_fallback_covers_a_regional_stockout_then_returns_to_spot() -> None:
    needed = np.full(400, 8, dtype=np.int64)
    plan = regional_stockout()
    spot_only = simulate(SpotFirst(POOLS, ZONES, fallback=False), needed, plan)
    assert spot_only.violating_minutes >= 100  # nothing until the stock-out ends
    on_demand_seen = []

    def watch(minute: int, fleet: Fleet) -> None:
        on_demand_seen.append(len(fleet.alive(ON_DEMAND)))

    ours = simulate(SpotFirst(POOLS, ZONES), needed, plan, observe=watch)
    # On-demand is asked for the minute the notice arrives and serves after provisioning.
    assert 0 < ours.violating_minutes <= ON_DEMAND.provision_minutes
    assert max(on_demand_seen[100:200]) == 4  # 8 slots of demand, no on-demand headroom
    assert on_demand_seen[-1] == 0  # migrated back to spot once spot returned
    assert ours.spot_share > 0.7


def test_failed_creations_are_not_billed_and_back_off() -> None:
    needed = np.full(240, 4, dtype=np.int64)
    plan = regional_stockout(start=0, until=10_000)
    outcome = simulate(SpotFirst(POOLS, ZONES, fallback=False), needed, plan)
    assert outcome.usd == 0.0
    assert outcome.violating_minutes == 240
    # Exponential backoff (5, 10, 20, 30 minutes) per zone: few attempts, not one a minute.
    assert 3 <= outcome.failed_creations <= 3 * (240 // 30 + 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"wave_fraction": (0.9, 0.5)}, "wave_fraction"),
        ({"waves_per_day": -1}, "rates must be >= 0"),
        ({"busy_window": (600, 100)}, "busy_window"),
        ({"region_wide_share": 1.5}, "region_wide_share"),
    ],
)
def test_preemption_spec_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PreemptionSpec(**kwargs)
