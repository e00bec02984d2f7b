"""Anomaly detector vs static thresholds on labelled synthetic incidents.

Three series per minute, driven by a region's trading-day load (bench/sim_common.py):
p99 latency (ms), error ratio (errors over requests, binomial, so noisy overnight) and
GPU utilisation (%). Each scenario is 7 clean days to learn from, then 14 days in which
each day gets one of: nothing, a noisy quiet day (noise x2.5, no incident), a spike
(3-10 min), a slow drift (a ramp over 1-3 h, held 1 h) or a level shift (2-6 h); incidents
start at any time of day. Every incident is labelled with its window.

* detector: app/alerting/detector.py, its thresholds picked for the best F1 on the same
  tuning set (the service's defaults, app/alerting/config.py, are reported too);
* static: ``value > T`` (GPU: ``> T_high`` or ``< T_low``) for ``k`` minutes in a row,
  with T and k picked for the best F1 on a separate labelled tuning set drawn from the
  same generator: the static rule's best case.

Alerts are episodes (active minutes, gaps under 10 min merged). An episode overlapping an
incident window (plus 30 min) is a true positive, else a false one; precision = true
episodes / all episodes, recall = incidents with an alert / incidents, time to detect =
first alert minute in the window - incident start.

    .venv/bin/python bench/alerting.py            # 6 scenarios per series
    .venv/bin/python bench/alerting.py --quick    # 2 scenarios per series

The last line carries the headline figures and the ratios against the static thresholds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.alerting.config import DEFAULT_SERIES
from app.alerting.detector import AnomalyDetector, DetectorSettings
from bench.sim_common import MINUTES_PER_DAY, REGIONS, ratio, table, trading_days

# What `python -m app.alerting` runs with, per series.
SERVICE_DEFAULTS = {series.name: series.detector for series in DEFAULT_SERIES}
WARMUP_DAYS = 7
EVAL_DAYS = 14
MERGE_GAP = 10
GRACE = 30
KINDS = ("spike", "drift", "shift")
DAY_KINDS = ("none", "noisy", *KINDS)
DAY_WEIGHTS = (0.2, 0.2, 0.2, 0.2, 0.2)


@dataclass(frozen=True)
class Incident:
    kind: str
    start: int  # minute index in the series
    end: int  # exclusive


@dataclass(frozen=True)
class Scenario:
    series: str
    values: np.ndarray
    incidents: list[Incident]
    eval_start: int  # first evaluated minute


@dataclass(frozen=True)
class SeriesKind:
    name: str
    direction: str
    # normal value from load (0..~1.5), noise multiplier, rng -> values
    make: Callable[[np.ndarray, np.ndarray, float, np.random.Generator], np.ndarray]
    # value, progress 0..1 of the incident, magnitude -> incident value
    spike: Callable[[np.ndarray, float], np.ndarray]
    shift: Callable[[np.ndarray, np.ndarray], np.ndarray]
    magnitude: Callable[[str, np.random.Generator], float]
    settings: DetectorSettings


def _ar_noise(n: int, sigma: float, rng: np.random.Generator, phi: float = 0.6) -> np.ndarray:
    innovations = rng.normal(0.0, sigma * np.sqrt(1 - phi * phi), n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + innovations[i]
        out[i] = acc
    return out


def _latency(
    load: np.ndarray, rps: np.ndarray, noise: float, rng: np.random.Generator
) -> np.ndarray:
    # Autoscaled: p99 rises with load, but gently.
    return (12.0 + 10.0 * load) * np.exp(_ar_noise(len(load), 0.06 * noise, rng))


def _errors(
    load: np.ndarray, rps: np.ndarray, noise: float, rng: np.random.Generator
) -> np.ndarray:
    requests = np.maximum(rps * 60.0, 1.0).astype(np.int64)
    p = 0.001 + 0.001 * load
    if noise > 1.0:  # overdispersed: bursts of errors that mean nothing
        p = p * np.exp(rng.normal(0.0, 0.35 * noise, len(p)))
    return rng.binomial(requests, np.clip(p, 0, 1)) / requests


def _gpu(load: np.ndarray, rps: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    # Triton's HPA adds replicas past its duty-cycle target: utilisation saturates with load.
    util = 5.0 + 70.0 * np.tanh(load / 0.3) + _ar_noise(len(load), 2.5 * noise, rng)
    return np.clip(util, 0.0, 100.0)


SERIES: tuple[SeriesKind, ...] = (
    SeriesKind(
        "latency_p99_ms",
        "up",
        _latency,
        spike=lambda v, m: v * m,
        shift=lambda v, m: v * (1.0 + m),
        magnitude=lambda kind, rng: float(
            rng.uniform(0.6, 2.0) if kind == "spike" else rng.uniform(0.25, 0.8)
        ),
        settings=SERVICE_DEFAULTS["latency_p99_ms"],
    ),
    SeriesKind(
        "error_ratio",
        "up",
        _errors,
        spike=lambda v, m: v + m,
        shift=lambda v, m: v + m,
        magnitude=lambda kind, rng: float(
            rng.uniform(0.004, 0.02) if kind == "spike" else rng.uniform(0.0015, 0.005)
        ),
        settings=SERVICE_DEFAULTS["error_ratio"],
    ),
    SeriesKind(
        "gpu_utilisation",
        "both",
        _gpu,
        spike=lambda v, m: v * (1.0 - m),
        shift=lambda v, m: np.clip(v * (1.0 + m), 0.0, 100.0),
        magnitude=lambda kind, rng: float(
            rng.uniform(0.8, 1.0)
            if kind == "spike"
            else rng.choice([-1, 1]) * rng.uniform(0.3, 0.6)
        ),
        settings=SERVICE_DEFAULTS["gpu_utilisation"],
    ),
)


def scenario(kind: SeriesKind, rng: np.random.Generator) -> Scenario:
    days = WARMUP_DAYS + EVAL_DAYS
    region = REGIONS[int(rng.integers(0, len(REGIONS)))]
    rps, _ = trading_days(region, days, rng)
    load = rps / region.peak_rps
    day_kinds = [str(k) for k in rng.choice(DAY_KINDS, size=EVAL_DAYS, p=DAY_WEIGHTS)]
    noise = np.ones(days)
    for i, k in enumerate(day_kinds):
        if k == "noisy":
            noise[WARMUP_DAYS + i] = 2.5
    values = np.concatenate(
        [
            kind.make(
                load[d * MINUTES_PER_DAY : (d + 1) * MINUTES_PER_DAY],
                rps[d * MINUTES_PER_DAY : (d + 1) * MINUTES_PER_DAY],
                float(noise[d]),
                rng,
            )
            for d in range(days)
        ]
    )
    incidents = []
    for i, k in enumerate(day_kinds):
        if k not in KINDS:
            continue
        day_start = (WARMUP_DAYS + i) * MINUTES_PER_DAY
        magnitude = kind.magnitude(k, rng)
        if k == "spike":
            length = int(rng.integers(3, 11))
            start = day_start + int(rng.integers(0, MINUTES_PER_DAY - length))
            window = slice(start, start + length)
            values[window] = kind.spike(values[window], magnitude)
        elif k == "drift":
            ramp = int(rng.integers(60, 181))
            length = ramp + 60
            start = day_start + int(rng.integers(0, MINUTES_PER_DAY - length))
            progress = np.minimum(np.arange(length) / ramp, 1.0)
            window = slice(start, start + length)
            values[window] = kind.shift(values[window], magnitude * progress)
        else:
            length = int(rng.integers(120, 361))
            start = day_start + int(rng.integers(0, MINUTES_PER_DAY - length))
            window = slice(start, start + length)
            values[window] = kind.shift(values[window], np.full(length, magnitude))
        incidents.append(Incident(k, start, start + length))
    return Scenario(kind.name, values, incidents, WARMUP_DAYS * MINUTES_PER_DAY)


def scenarios(per_series: int, seed: int) -> list[tuple[SeriesKind, Scenario]]:
    out = []
    for index, kind in enumerate(SERIES):
        for n in range(per_series):
            out.append((kind, scenario(kind, np.random.default_rng([seed, index, n]))))
    return out


# ---------------------------------------------------------------- alert rules


def detector_alerts(
    kind: SeriesKind, s: Scenario, settings: DetectorSettings | None = None
) -> np.ndarray:
    detector = AnomalyDetector(settings or kind.settings)
    active = np.zeros(len(s.values), dtype=bool)
    for minute, value in enumerate(s.values):
        active[minute] = detector.update(minute, float(value)).active
    return active


@dataclass(frozen=True)
class StaticRule:
    high: float
    low: float
    minutes: int

    def alerts(self, values: np.ndarray) -> np.ndarray:
        breach = ((values > self.high) | (values < self.low)).astype(np.int64)
        # Breached in each of the last `minutes` minutes.
        in_window = np.convolve(breach, np.ones(self.minutes, dtype=np.int64))[: len(values)]
        return in_window >= self.minutes


def tune_static(kind: SeriesKind, tuning: list[Scenario]) -> StaticRule:
    """The static rule with the best F1 over the tuning scenarios."""
    normal = np.concatenate([s.values[: s.eval_start] for s in tuning])
    highs = [float(np.quantile(normal, q)) for q in (0.99, 0.995, 0.999)]
    highs += [float(normal.max() * f) for f in (1.0, 1.1, 1.25, 1.5)]
    lows = [-np.inf]
    if kind.direction == "both":
        lows += [float(np.quantile(normal, q)) for q in (0.001, 0.005, 0.01)]
    best: tuple[float, StaticRule] | None = None
    for high in highs:
        for low in lows:
            for minutes in (1, 2, 3, 5):
                rule = StaticRule(high, low, minutes)
                score = evaluate([(s, rule.alerts(s.values)) for s in tuning]).f1
                if best is None or score > best[0]:
                    best = (score, rule)
    assert best is not None
    return best[1]


def tune_detector(kind: SeriesKind, tuning: list[Scenario]) -> DetectorSettings:
    """The detector thresholds with the best F1 over the tuning scenarios (the same
    treatment the static rule gets)."""
    best: tuple[float, DetectorSettings] | None = None
    for slow in (3.0, 4.0, 5.0):
        for fast in (6.0, 8.0):
            settings = kind.settings.model_copy(
                update={"slow_threshold": slow, "fast_threshold": fast}
            )
            score = evaluate([(s, detector_alerts(kind, s, settings)) for s in tuning]).f1
            if best is None or score > best[0]:
                best = (score, settings)
    assert best is not None
    return best[1]


# ---------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Score:
    episodes: int
    true_episodes: int
    incidents: int
    detected: int
    detect_minutes: list[int]
    by_kind: dict[str, tuple[int, int]]  # kind -> (detected, incidents)
    # (scenario id, incident index) -> minutes to detect, for paired comparisons
    detections: dict[tuple[int, int], int]

    @property
    def precision(self) -> float:
        return self.true_episodes / self.episodes if self.episodes else 1.0

    @property
    def recall(self) -> float:
        return self.detected / self.incidents if self.incidents else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def median_detect(self) -> float:
        return float(np.median(self.detect_minutes)) if self.detect_minutes else float("nan")


def episodes(active: np.ndarray, start: int) -> list[tuple[int, int]]:
    """Alert episodes from ``start`` on, gaps under MERGE_GAP minutes merged."""
    out: list[tuple[int, int]] = []
    idx = np.flatnonzero(active[start:]) + start
    for minute in idx:
        if out and minute - out[-1][1] <= MERGE_GAP:
            out[-1] = (out[-1][0], int(minute))
        else:
            out.append((int(minute), int(minute)))
    return out


def evaluate(runs: list[tuple[Scenario, np.ndarray]]) -> Score:
    n_episodes = true_episodes = n_incidents = detected = 0
    detect: list[int] = []
    detections: dict[tuple[int, int], int] = {}
    by_kind: dict[str, list[int]] = {k: [0, 0] for k in KINDS}
    for s, active in runs:
        eps = episodes(active, s.eval_start)
        n_episodes += len(eps)
        for a, b in eps:
            if any(a < i.end + GRACE and b >= i.start for i in s.incidents):
                true_episodes += 1
        for index, i in enumerate(s.incidents):
            n_incidents += 1
            by_kind[i.kind][1] += 1
            hits = np.flatnonzero(active[i.start : i.end + GRACE])
            if len(hits):
                detected += 1
                by_kind[i.kind][0] += 1
                detect.append(int(hits[0]))
                detections[(id(s), index)] = int(hits[0])
    return Score(
        n_episodes,
        true_episodes,
        n_incidents,
        detected,
        detect,
        {k: (v[0], v[1]) for k, v in by_kind.items()},
        detections,
    )


def paired_detect(a: Score, b: Score) -> tuple[float, float, int]:
    """Median minutes to detect of each over the incidents both detected."""
    both = sorted(set(a.detections) & set(b.detections))
    if not both:
        return float("nan"), float("nan"), 0
    return (
        float(np.median([a.detections[k] for k in both])),
        float(np.median([b.detections[k] for k in both])),
        len(both),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 scenarios per series")
    parser.add_argument("--scenarios", type=int, default=None, help="per series (default 6)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    per_series = args.scenarios or (2 if args.quick else 6)
    started = time.perf_counter()
    test = scenarios(per_series, args.seed)
    tuning = scenarios(2 if args.quick else 3, args.seed + 1000)

    runs: dict[str, list[tuple[Scenario, np.ndarray]]] = {"tuned": [], "default": [], "static": []}
    rows = []
    chosen = []
    for kind in SERIES:
        tune_set = [s for k, s in tuning if k is kind]
        rule = tune_static(kind, tune_set)
        settings = tune_detector(kind, tune_set)
        low = "" if rule.low == -np.inf else f" or < {rule.low:.4g}"
        chosen.append(
            f"  {kind.name}: static > {rule.high:.4g}{low} for {rule.minutes} min; detector "
            f"{settings.direction}, slow {settings.slow_threshold:g}, fast "
            f"{settings.fast_threshold:g} (defaults {kind.settings.slow_threshold:g}, "
            f"{kind.settings.fast_threshold:g})"
        )
        mine = [(s, detector_alerts(kind, s, settings)) for k, s in test if k is kind]
        default = [(s, detector_alerts(kind, s)) for k, s in test if k is kind]
        theirs = [(s, rule.alerts(s.values)) for k, s in test if k is kind]
        runs["tuned"] += mine
        runs["default"] += default
        runs["static"] += theirs
        d, st = evaluate(mine), evaluate(theirs)
        rows.append(
            [
                kind.name,
                f"{d.precision:.2f} / {st.precision:.2f}",
                f"{d.recall:.2f} / {st.recall:.2f}",
                f"{d.median_detect:.0f} / {st.median_detect:.0f}",
                f"{d.episodes - d.true_episodes} / {st.episodes - st.true_episodes}",
            ]
        )
    d, dd, st = (evaluate(runs[k]) for k in ("tuned", "default", "static"))
    print(
        f"{per_series} scenarios per series x {EVAL_DAYS} evaluated days, seed {args.seed}: "
        f"{d.incidents} labelled incidents; both rules tuned for F1 on separate scenarios:"
    )
    print("\n".join(chosen))
    print(
        table(
            ["series", "precision (detector / static)", "recall", "median TTD min", "false alerts"],
            rows,
        )
    )
    print()
    kind_rows = []
    for k in KINDS:
        dk, sk = d.by_kind[k], st.by_kind[k]
        kind_rows.append([k, f"{dk[0]}/{dk[1]}", f"{sk[0]}/{sk[1]}"])
    print(table(["incident", "detected (detector)", "detected (static)"], kind_rows))
    print()
    print(
        table(
            ["rule", "precision", "recall", "F1", "median TTD min", "alert episodes"],
            [
                [
                    "anomaly detector (tuned)",
                    d.precision,
                    d.recall,
                    d.f1,
                    d.median_detect,
                    d.episodes,
                ],
                [
                    "anomaly detector (defaults)",
                    dd.precision,
                    dd.recall,
                    dd.f1,
                    dd.median_detect,
                    dd.episodes,
                ],
                [
                    "static thresholds (tuned)",
                    st.precision,
                    st.recall,
                    st.f1,
                    st.median_detect,
                    st.episodes,
                ],
            ],
        )
    )
    mine_ttd, static_ttd, both = paired_detect(d, st)
    print(
        f"time to detect on the {both} incidents both caught: detector {mine_ttd:.0f} min, "
        f"static {static_ttd:.0f} min (medians)"
    )
    print(f"({time.perf_counter() - started:.1f}s)")
    print(
        f"alerting: detector precision {d.precision:.2f}, recall {d.recall:.2f} vs static "
        f"precision {st.precision:.2f}, recall {st.recall:.2f}; median TTD on incidents both "
        f"caught {mine_ttd:.0f} vs {static_ttd:.0f} min; recall {ratio(d.recall, st.recall)}, "
        f"precision {ratio(d.precision, st.precision)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
