"""bench/plots.py: each benchmark's JSON drawn as a picture, byte for byte the same on a rerun,
and a malformed JSON refused with one line naming the file and the key.

The fixtures are small figures of the shape the benchmarks write; the last tests hold the
benchmarks' own --json output to what the pictures read."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import autoscale, plots, spot

PICTURES = ("engine-cost", "engine-latency", "autoscale", "spot")


def _histogram(center_us: float, n: int, seed: int) -> dict[str, Any]:
    samples = np.random.default_rng(seed).lognormal(np.log(center_us), 0.1, n)
    edges = 10.0 ** (np.arange(-10, 61) / 20)
    counts, _ = np.histogram(samples, edges)
    return {"edges_us": edges.tolist(), "counts": counts.tolist()}


def _latency(p50: float, seed: int) -> dict[str, Any]:
    return {"p50": p50, "p95": p50 * 1.1, "p99": p50 * 1.3, "histogram": _histogram(p50, 500, seed)}


def engine_figures() -> dict[str, Any]:
    curve = [
        {
            "symbols": 1000,
            "engine_ns": 32.5,
            "old_layout_ns": 71.1,
            "c_reference_ns": 37.3,
            "target_ns": 30.0,
        },
        {
            "symbols": 100000,
            "engine_ns": 76.1,
            "old_layout_ns": 292.8,
            "c_reference_ns": 76.4,
            "target_ns": 150.0,
        },
    ]
    return {
        "command": "bench/engine.py --quick --json engine.json",
        "curve": curve,
        "latency_us": {
            "single_tick_update": _latency(1.2, 1),
            "tick_to_signal_fused": _latency(8.0, 2),
            "tick_to_signal_onnxruntime": _latency(40.0, 3),
        },
        "latency_samples": 500,
        "targets": {
            "latency_p95_us": {"tick_to_signal_fused": 20.0},
            "latency_goal_p95_us": {"tick_to_signal_fused": 10.0},
        },
        "load_average": {"before": 2.5, "after": 2.7},
    }


def autoscale_figures() -> dict[str, Any]:
    minute = np.arange(1440)
    demand = 300.0 + 8000.0 * np.exp(-(((minute - 870) / 60.0) ** 2))
    needed = np.ceil(demand / 500.0).astype(int)

    def scaler(label: str, lag: int) -> dict[str, Any]:
        ready = np.maximum(np.roll(needed, lag), 2)
        return {
            "label": label,
            "violation_minutes": int((ready < demand / 500.0).sum()),
            "replica_hours": float(ready.sum() / 60),
            "day": {
                "violation_minutes": 3,
                "replica_hours": float(ready.sum() / 60),
                "ready": ready.tolist(),
            },
        }

    return {
        "command": "bench/autoscale.py --quick --json autoscale.json",
        "days": 1,
        "regions": ["us-east4"],
        "pod_capacity_rps": 500.0,
        "startup_minutes": 4,
        "metric_lag_minutes": 1,
        "day": {
            "region": "us-east4",
            "day": 0,
            "open_minute": 870,
            "close_minute": 1260,
            "demand_rps": demand.round(1).tolist(),
        },
        "policies": {
            "reactive": scaler("reactive HPA: CPU 70% (baseline)", 5),
            "predictive": scaler("predictive + CPU 80%", 0),
        },
    }


def spot_figures() -> dict[str, Any]:
    needed = [4, 4, 5, 5, 6, 6, 6, 5, 5, 4]
    return {
        "command": "bench/spot.py --quick --json spot.json",
        "days": 1,
        "slo_minutes": 0.995,
        "policies": [
            {
                "policy": "on-demand only",
                "minutes_covered": 1.0,
                "usd_per_day": 30.0,
                "spot_share": 0.0,
            },
            {
                "policy": "spot-first + on-demand fallback",
                "minutes_covered": 0.997,
                "usd_per_day": 21.0,
                "spot_share": 0.97,
            },
        ],
        "window": {
            "start_minute": 1000,
            "waves": [
                {"minute": 1003, "zone": "us-central1-a", "fraction": 0.6, "stockout_until": 1007}
            ],
            "needed_slots": needed,
            "ready_slots": {
                "on-demand only": {"spot": [0] * 10, "on_demand": [6] * 10},
                "spot-first + on-demand fallback": {
                    "spot": [6, 6, 6, 2, 2, 2, 2, 2, 6, 6],
                    "on_demand": [0, 0, 0, 0, 2, 4, 4, 4, 0, 0],
                },
            },
        },
    }


FIGURES = {
    "engine.json": engine_figures,
    "autoscale.json": autoscale_figures,
    "spot.json": spot_figures,
}


def write_results(folder: Path, **replace: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in FIGURES.items():
        (folder / name).write_text(json.dumps(replace.get(name.removesuffix(".json"), make())))
    return folder


def test_every_picture_is_drawn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = write_results(tmp_path / "results")
    assert plots.main(["--results", str(results)]) == 0
    written = capsys.readouterr().out.splitlines()
    assert written == [f"plots: wrote {results / name}.svg" for name in PICTURES]
    titles = {
        "engine-cost": "Feature engine: cost per tick against universe size",
        "engine-latency": "fused vs ONNX Runtime",
        "autoscale": "Predictive vs reactive autoscaling",
        "spot": "Spot vs on-demand GPU capacity under a preemption wave",
    }
    for name, title in titles.items():
        svg = (results / f"{name}.svg").read_text()
        assert svg.startswith("<?xml") and "<svg" in svg and len(svg) > 5000
        assert title in svg  # text is kept as text (svg.fonttype none)
        assert "<dc:date>" not in svg
    out = tmp_path / "png"
    assert plots.main(["--results", str(results), "--out", str(out), "--format", "png"]) == 0
    for name in PICTURES:
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_writes_the_same_bytes(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results")
    first, second = tmp_path / "first", tmp_path / "second"
    assert plots.main(["--results", str(results), "--out", str(first)]) == 0
    assert plots.main(["--results", str(results), "--out", str(second)]) == 0
    for name in PICTURES:
        assert (first / f"{name}.svg").read_bytes() == (second / f"{name}.svg").read_bytes()


def _without(data: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    parent: Any = data
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return data


@pytest.mark.parametrize(
    ("source", "path", "key"),
    [
        ("engine", ("curve", 1, "engine_ns"), "curve[1].engine_ns"),
        (
            "engine",
            ("latency_us", "tick_to_signal_onnxruntime", "histogram"),
            "latency_us.tick_to_signal_onnxruntime.histogram",
        ),
        ("engine", ("command",), "command"),
        ("autoscale", ("day", "demand_rps"), "day.demand_rps"),
        ("autoscale", ("policies", "predictive", "day", "ready"), "policies.predictive.day.ready"),
        ("spot", ("window", "needed_slots"), "window.needed_slots"),
        (
            "spot",
            ("window", "ready_slots", "on-demand only", "on_demand"),
            "window.ready_slots.on-demand only.on_demand",
        ),
    ],
)
def test_a_missing_key_is_refused_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    source: str,
    path: tuple[str | int, ...],
    key: str,
) -> None:
    broken = _without(FIGURES[f"{source}.json"](), path)
    results = write_results(tmp_path, **{source: broken})
    assert plots.main(["--results", str(results)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"{results / source}.json: {key}: required key is missing"]
    assert not captured.out and not list(results.glob("*.svg"))  # nothing drawn


def test_inconsistent_figures_are_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = engine_figures()
    engine["latency_us"]["tick_to_signal_fused"]["histogram"]["counts"].pop()
    scaling = autoscale_figures()
    scaling["policies"]["reactive"]["day"]["ready"] = [2] * 1439
    capacity = spot_figures()
    capacity["window"]["ready_slots"]["spot only"] = {"spot": [1] * 10, "on_demand": [0] * 10}
    results = write_results(tmp_path, engine=engine, autoscale=scaling, spot=capacity)
    assert plots.main(["--results", str(results)]) == 2
    # Every file's problems at once, one line each.
    assert capsys.readouterr().err.splitlines() == [
        f"{results}/engine.json: latency_us.tick_to_signal_fused.histogram.counts: has 69 bins "
        f"for 71 edges; allowed: one bin fewer than edges_us",
        f"{results}/autoscale.json: policies.reactive.day.ready: has 1439 minutes; allowed: "
        f"1440, as day.demand_rps",
        f"{results}/spot.json: window.ready_slots.spot only: names no policy (got 'spot only'); "
        f"allowed: on-demand only, spot-first + on-demand fallback",
    ]
    assert not list(results.glob("*.svg"))


def test_not_json_and_no_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert plots.main(["--results", str(empty)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{empty}: holds no results to draw; allowed: engine.json, autoscale.json, spot.json"
    ]
    (empty / "spot.json").write_text('{"command": "x",\n "days": }')
    assert plots.main(["--results", str(empty)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{empty}/spot.json:2:10: not JSON: Expecting value"
    ]


def test_a_missing_file_is_skipped_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = write_results(tmp_path)
    (results / "engine.json").unlink()
    assert plots.main(["--results", str(results)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"plots: skipped engine.json: not in {results} (written by bench/engine.py --json)"
    ]
    assert sorted(p.name for p in results.glob("*.svg")) == ["autoscale.svg", "spot.svg"]


# --- the benchmarks' own --json, read by the pictures -------------------------------------------


def test_the_simulations_json_is_what_the_pictures_read(tmp_path: Path) -> None:
    assert spot.main(["--quick", "--days", "2", "--json", str(tmp_path / "spot.json")]) == 0
    assert (
        autoscale.main(["--quick", "--days", "1", "--json", str(tmp_path / "autoscale.json")]) == 0
    )
    written = plots.load(plots.SOURCES[2], tmp_path)
    assert isinstance(written, plots.SpotFigures)
    window = written.window
    # The window holds the wave, and every policy's capacity is split into spot and on-demand.
    assert (
        window.start_minute
        <= window.waves[0].minute
        < window.start_minute + len(window.needed_slots)
    )
    assert set(window.ready_slots) == {p.policy for p in written.policies}
    on_demand_only = window.ready_slots["on-demand only"]
    assert sum(on_demand_only.spot) == 0 and sum(on_demand_only.on_demand) > 0
    scaling = plots.load(plots.SOURCES[1], tmp_path)
    assert isinstance(scaling, plots.AutoscaleFigures)
    assert list(scaling.policies) == ["reactive", "deployed", "predictive"]
    assert scaling.day.region == "us-east4"
    assert [p.name for p in plots.render(tmp_path, tmp_path)] == ["autoscale.svg", "spot.svg"]


def test_the_engine_latency_distribution_is_what_the_pictures_read() -> None:
    from bench import engine  # the engine's bench compiles the kernel: only here

    samples = [8_000 + (i * 37) % 2_000 for i in range(1_000)] + [45_000]
    latency = plots.Latency.model_validate(engine.distribution_us(samples))
    assert sum(latency.histogram.counts) == len(samples)
    edges = latency.histogram.edges_us
    assert edges[0] <= 8.0 and edges[-1] >= 45.0
    assert latency.p50 == pytest.approx(9.0, abs=0.1)
