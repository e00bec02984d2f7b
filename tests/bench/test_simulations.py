"""The simulations behind bench/: seeded and deterministic, scoring what they claim to score.

Not benchmarks: small runs that check the machinery (same seed, same figures; the scoring
rules on hand-made cases; the last line a reader greps)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import alerting, autoscale, spot
from bench.sim_common import REGIONS, intraday_profile, trading_days


def test_trading_days_are_seeded_and_shaped() -> None:
    region = REGIONS[0]
    a, bursts_a = trading_days(region, 3, np.random.default_rng([1, 2]))
    b, bursts_b = trading_days(region, 3, np.random.default_rng([1, 2]))
    c, _ = trading_days(region, 3, np.random.default_rng([1, 3]))
    np.testing.assert_array_equal(a, b)
    assert bursts_a == bursts_b
    assert not np.array_equal(a, c)
    profile = intraday_profile(region)
    # The open is the day's peak; lunch is below the mid-morning; overnight is the floor.
    assert int(profile.argmax()) == region.open_minute
    assert profile[region.open_minute + 150] < profile[region.open_minute + 60]
    assert profile.min() == pytest.approx(0.04)


def test_autoscale_simulation_is_deterministic_and_predictive_wins_the_open() -> None:
    loads = autoscale.workloads(2, seed=3)
    again = autoscale.workloads(2, seed=3)
    np.testing.assert_array_equal(loads[0].demand, again[0].demand)
    load = loads[0]
    reactive = autoscale.simulate(load.demand, autoscale.REACTIVE, None)
    repeat = autoscale.simulate(load.demand, autoscale.REACTIVE, None)
    np.testing.assert_array_equal(reactive.violating, repeat.violating)
    predictive = autoscale.simulate(
        load.demand,
        autoscale.PREDICTIVE,
        autoscale.make_scaler(load.history, autoscale.PREDICTIVE),
    )
    opens = lambda o: autoscale.causes(load, o.violating)["open"]  # noqa: E731
    assert opens(predictive) < opens(reactive)
    assert predictive.violation_minutes < reactive.violation_minutes


def test_alerting_scoring_rules() -> None:
    values = np.zeros(3000)
    s = alerting.Scenario(
        "x",
        values,
        [alerting.Incident("spike", 1500, 1510), alerting.Incident("shift", 2000, 2100)],
        eval_start=1000,
    )
    active = np.zeros(3000, dtype=bool)
    active[1505:1508] = True  # catches the spike 5 minutes in
    active[1512:1515] = True  # same episode (gap under 10 minutes)
    active[2500:2502] = True  # a false alert
    active[500:510] = True  # before evaluation: ignored
    score = alerting.evaluate([(s, active)])
    assert alerting.episodes(active, 1000) == [(1505, 1514), (2500, 2501)]
    assert (score.precision, score.recall) == (0.5, 0.5)
    assert score.detect_minutes == [5]
    rule = alerting.StaticRule(high=1.0, low=-np.inf, minutes=3)
    series = np.array([0, 2, 2, 0, 2, 2, 2, 2, 0], dtype=float)
    assert rule.alerts(series).tolist() == [False] * 6 + [True, True, False]


def test_alerting_scenarios_are_seeded() -> None:
    kind = alerting.SERIES[0]
    a = alerting.scenario(kind, np.random.default_rng([7, 0, 0]))
    b = alerting.scenario(kind, np.random.default_rng([7, 0, 0]))
    np.testing.assert_array_equal(a.values, b.values)
    assert a.incidents == b.incidents and a.incidents
    for incident in a.incidents:  # every incident lies in the evaluated days
        assert a.eval_start <= incident.start < incident.end <= len(a.values)


def test_spot_benchmark_is_deterministic_and_prints_its_headline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = spot.run(2, 7, spot.Scenario(2.0, 0.2))
    second = spot.run(2, 7, spot.Scenario(2.0, 0.2))
    assert [o.usd for o in first] == [o.usd for o in second]
    assert [o.policy for o in first] == [
        "on-demand only",
        "spot only",
        "spot-first + on-demand fallback",
    ]
    assert spot.main(["--quick", "--days", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("spot: fallback covers ") and "of on-demand" in last
