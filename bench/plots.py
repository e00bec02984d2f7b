"""The benchmarks' pictures: the figures bench/ writes as JSON, drawn as SVG for bench/RESULTS.md.

Each benchmark that has a picture writes its figures with ``--json bench/results/NAME.json``
(``make bench`` does, then runs this script last); each JSON is validated before anything is
drawn, and a malformed one is refused with one line per problem naming the file and the key.

* ``engine.json`` (bench/engine.py): ``engine-cost.svg``, the cost per tick against the
  universe's size beside the old layout, the C reference and the targets; and
  ``engine-latency.svg``, the tick → signal latency distribution, fused against ONNX Runtime.
* ``autoscale.json`` (bench/autoscale.py): ``autoscale.svg``, each scaler's ready replicas
  over a trading day against the demand, and the open up close.
* ``spot.json`` (bench/spot.py): ``spot.svg``, each policy's ready GPU slots on spot and on
  on-demand nodes around a preemption wave, against the slots needed.

The pictures are deterministic: a fixed style, fixed SVG ids (``svg.hashsalt``) and no date
in the metadata, so rendering the same figures again changes no byte.

    .venv/bin/python bench/plots.py                              # bench/results/*.svg
    .venv/bin/python bench/plots.py --format png --out /tmp/plots

Exit codes: 0 drawn (a missing JSON is skipped with a note), 2 bad input (a malformed JSON, or
none of the JSON files there).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.typing import RcKeyType
from pydantic import ConfigDict, Field

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config_errors import ConfigError, ConfigModel, Problem, load_model, read_config_file

matplotlib.use("Agg")

RESULTS = Path(__file__).resolve().parent / "results"

# One look for every picture; the SVG ids are salted with a constant so reruns match.
STYLE: dict[RcKeyType, Any] = {
    "svg.hashsalt": "signal-platform-bench",
    "svg.fonttype": "none",  # text stays text: small files, readable diffs
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.titlesize": 11.0,
    "axes.titleweight": "bold",
    "axes.grid": True,
    "grid.color": "0.88",
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "legend.fontsize": 8.0,
    "lines.linewidth": 1.6,
}
# Colours by role, the same in every picture.
OURS, BASELINE, REFERENCE, OTHER = "#1f77b4", "#7f7f7f", "#ff7f0e", "#9467bd"
TARGET, GOAL, DEMAND, SHORT = "#d62728", "#2ca02c", "#bbbbbb", "#d62728"
SPOT, ON_DEMAND = "#2ca02c", "#ff7f0e"
POLICY_COLOURS = (BASELINE, OTHER, OURS, REFERENCE)
PNG_DPI = 110


# --------------------------------------------------------------------------- the JSON files


class Figures(ConfigModel):
    """A results file: the keys the pictures draw (a benchmark may write more), each section's
    cross-field rules in `rules`, as every configuration model of the repository has them."""

    model_config = ConfigDict(extra="ignore")


class CurvePoint(Figures):
    symbols: int = Field(gt=0)
    engine_ns: float = Field(gt=0)
    old_layout_ns: float = Field(gt=0)
    c_reference_ns: float = Field(gt=0)
    target_ns: float | None = Field(default=None, gt=0)


class Histogram(Figures):
    edges_us: list[float] = Field(min_length=2)
    counts: list[int] = Field(min_length=1)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        if len(self.counts) != len(self.edges_us) - 1:
            yield Problem(
                "counts",
                f"has {len(self.counts)} bins for {len(self.edges_us)} edges",
                allowed="one bin fewer than edges_us",
            )
        if any(b <= a for a, b in zip(self.edges_us, self.edges_us[1:], strict=False)):
            yield Problem("edges_us", "not increasing", allowed="increasing edges")
        if self.edges_us[0] <= 0:
            yield Problem("edges_us[0]", "not positive", self.edges_us[0], "> 0 (a log scale)")
        if min(self.counts) < 0 or sum(self.counts) == 0:
            yield Problem("counts", "negative or all 0", allowed="counts >= 0, some above 0")


class Latency(Figures):
    p50: float = Field(gt=0)
    p95: float = Field(gt=0)
    p99: float = Field(gt=0)
    histogram: Histogram


class LatencyPaths(Figures):
    tick_to_signal_fused: Latency
    tick_to_signal_onnxruntime: Latency


class Targets(Figures):
    latency_p95_us: dict[str, float] = Field(default_factory=dict)
    latency_goal_p95_us: dict[str, float] = Field(default_factory=dict)


class LoadAverage(Figures):
    before: float
    after: float


class EngineFigures(Figures):
    command: str
    curve: list[CurvePoint] = Field(min_length=1)
    latency_us: LatencyPaths
    latency_samples: int | None = None
    targets: Targets = Field(default_factory=Targets)
    load_average: LoadAverage | None = None


def _same_length(path: str, values: Sequence[object], expected: int, what: str) -> list[Problem]:
    if len(values) == expected:
        return []
    return [Problem(path, f"has {len(values)} minutes", allowed=f"{expected}, as {what}")]


class ScalerDay(Figures):
    violation_minutes: int = Field(ge=0)
    replica_hours: float = Field(ge=0)
    ready: list[int]


class Scaler(Figures):
    label: str
    violation_minutes: int = Field(ge=0)
    replica_hours: float = Field(ge=0)
    day: ScalerDay


class TradingDay(Figures):
    region: str
    day: int = Field(ge=0)
    open_minute: int = Field(ge=0, lt=1440)
    close_minute: int = Field(ge=0, lt=1440)
    demand_rps: list[float] = Field(min_length=1440, max_length=1440)


class AutoscaleFigures(Figures):
    command: str
    days: int = Field(gt=0)
    regions: list[str] = Field(min_length=1)
    pod_capacity_rps: float = Field(gt=0)
    startup_minutes: int = Field(ge=0)
    metric_lag_minutes: int = Field(ge=0)
    day: TradingDay
    policies: dict[str, Scaler] = Field(min_length=1)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        for name, scaler in self.policies.items():
            yield from _same_length(
                f"policies.{name}.day.ready", scaler.day.ready, 1440, "day.demand_rps"
            )


class SpotPolicy(Figures):
    policy: str
    minutes_covered: float = Field(ge=0, le=1)
    usd_per_day: float = Field(ge=0)
    spot_share: float = Field(ge=0, le=1)


class Wave(Figures):
    minute: int = Field(ge=0)
    zone: str
    fraction: float = Field(gt=0, le=1)
    stockout_until: int = Field(ge=0)


class ReadySlots(Figures):
    spot: list[int]
    on_demand: list[int]


class WaveWindow(Figures):
    start_minute: int = Field(ge=0)
    waves: list[Wave] = Field(min_length=1)
    needed_slots: list[int] = Field(min_length=2)
    ready_slots: dict[str, ReadySlots] = Field(min_length=1)


class SpotFigures(Figures):
    command: str
    days: int = Field(gt=0)
    slo_minutes: float = Field(gt=0, le=1)
    policies: list[SpotPolicy] = Field(min_length=1)
    window: WaveWindow

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        n = len(self.window.needed_slots)
        known = [p.policy for p in self.policies]
        for name, ready in self.window.ready_slots.items():
            path = f"window.ready_slots.{name}"
            yield from _same_length(f"{path}.spot", ready.spot, n, "window.needed_slots")
            yield from _same_length(f"{path}.on_demand", ready.on_demand, n, "window.needed_slots")
            if name not in known:
                yield Problem(path, "names no policy", name, ", ".join(known))


# --------------------------------------------------------------------------- the pictures


def _new_figure(height: float) -> Figure:
    return Figure(figsize=(9.0, height), layout="constrained")


def _source_note(figure: Figure, *lines: str) -> None:
    """Where the figures come from, in small print under the picture (room kept for it)."""
    height = figure.get_figheight()
    reserved = (0.06 + 0.13 * len(lines)) / height
    figure.get_layout_engine().set(rect=(0.0, reserved, 1.0, 1.0 - reserved))  # type: ignore[union-attr]
    figure.text(
        0.01,
        0.012,
        "\n".join(lines),
        fontsize=7,
        color="0.35",
        ha="left",
        va="bottom",
        linespacing=1.4,
    )


def _plain_number(value: float, _: int) -> str:
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def _log_axis(axis: Any, subs: Sequence[float] = (1.0, 2.0, 3.0, 5.0)) -> None:
    """A log axis labelled in plain numbers at 1, 2, 3, 5 x 10^k."""
    axis.set_major_locator(LogLocator(base=10.0, subs=subs))
    axis.set_major_formatter(FuncFormatter(_plain_number))
    axis.set_minor_formatter(NullFormatter())


def _load(figures: EngineFigures) -> str:
    if figures.load_average is None:
        return "machine load not recorded"
    load = figures.load_average
    return (
        f"the machine's 1-min load average: {load.before:.1f} before the run, {load.after:.1f} "
        f"after (a loaded machine makes absolute times pessimistic)"
    )


def engine_cost(figures: EngineFigures) -> Figure:
    """ns per tick against the number of symbols, log-log, with the targets."""
    figure = _new_figure(5.0)
    ax = figure.add_subplot()
    curve = sorted(figures.curve, key=lambda p: p.symbols)
    symbols = [p.symbols for p in curve]
    # Each line: its values, how far above its points they are written, its look.
    series: tuple[tuple[list[float], int, dict[str, Any]], ...] = (
        ([p.engine_ns for p in curve], -9, {"label": "engine (per-symbol records)", "color": OURS,
                                            "marker": "o", "lw": 2.6}),
        ([p.old_layout_ns for p in curve], 0, {"label": "old [field, symbol] layout",
                                               "color": BASELINE, "marker": "s"}),
        ([p.c_reference_ns for p in curve], 8, {"label": "C reference of the same kernel (gcc -O3)",
                                                "color": REFERENCE, "marker": "^", "ls": "--"}),
    )  # fmt: skip
    for values, above, look in series:
        ax.plot(symbols, values, **look)
        for x, y in zip(symbols, values, strict=True):
            ax.annotate(
                f"{y:.0f}",
                (x, y),
                textcoords="offset points",
                xytext=(9, above),
                va="center",
                fontsize=8,
                color=look["color"],
                fontweight="bold",
            )
    targets = [(p.symbols, p.target_ns) for p in curve if p.target_ns is not None]
    if targets:
        xs, ys = zip(*targets, strict=True)
        ax.plot(
            xs,
            ys,
            color=TARGET,
            linestyle=":",
            marker="_",
            markersize=16,
            mew=2,
            lw=1.4,
            label="target: at most",
        )
        for x, y in targets:
            ax.annotate(
                f"≤ {y:.0f}",
                (x, y),
                textcoords="offset points",
                xytext=(-9, 0),
                ha="right",
                va="center",
                fontsize=8,
                color=TARGET,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    ax.xaxis.set_major_formatter(FuncFormatter(_plain_number))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(symbols)
    low, high = symbols[0], symbols[-1]
    ax.set_xlim(low / 1.6, high * 1.6)
    ax.set_xlabel("symbols in the universe (log scale)")
    ax.set_ylabel("cost per tick, ns (median wall time; log scale)")
    ax.set_title("Feature engine: cost per tick against universe size (lower is better)")
    ax.legend(loc="upper left")
    _source_note(figure, figures.command, _load(figures))
    return figure


TAIL_SHOWN = 0.999  # the latency axis ends past this share of the slowest path's ticks


def engine_latency(figures: EngineFigures) -> Figure:
    """The tick → signal latency histograms, fused and through ONNX Runtime, with each
    path's p95 and the target; the axis ends past the slowest path's 99.9th percentile."""
    figure = _new_figure(4.8)
    ax = figure.add_subplot()
    paths = (
        (
            "fused: features + model in one compiled call",
            figures.latency_us.tick_to_signal_fused,
            OURS,
        ),
        ("engine, then ONNX Runtime", figures.latency_us.tick_to_signal_onnxruntime, BASELINE),
    )
    right = 0.0
    beyond = []
    for label, latency, colour in paths:
        edges = np.asarray(latency.histogram.edges_us)
        counts = np.asarray(latency.histogram.counts, dtype=np.float64)
        share = 100.0 * counts / counts.sum()
        ax.stairs(share, edges, color=colour, alpha=0.18, fill=True)
        ax.stairs(
            share,
            edges,
            color=colour,
            lw=1.8,
            label=f"{label}: p50 {latency.p50:g}, p95 {latency.p95:g}, p99 {latency.p99:g} µs",
        )
        ax.axvline(latency.p95, color=colour, lw=1.0, linestyle=":")
        # The first edge past TAIL_SHOWN of the ticks, and how many lie beyond the axis.
        last = int(np.searchsorted(np.cumsum(counts) / counts.sum(), TAIL_SHOWN)) + 1
        right = max(right, float(edges[min(last, len(edges) - 1)]))
        beyond.append((label.split(":")[0], counts))
        ax.annotate(
            f"p95 {latency.p95:g}",
            (latency.p95, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -3),
            textcoords="offset points",
            va="top",
            fontsize=8,
            color=colour,
        )
    key = "tick_to_signal_fused"
    for source, colour, word in (
        (figures.targets.latency_p95_us, TARGET, "target"),
        (figures.targets.latency_goal_p95_us, GOAL, "goal"),
    ):
        if key in source:
            ax.axvline(
                source[key],
                color=colour,
                lw=1.4,
                linestyle="--",
                label=f"{word}: fused p95 ≤ {source[key]:g} µs",
            )
    right *= 1.3
    ax.set_xscale("log")
    left = min(latency.histogram.edges_us[0] for _, latency, _ in paths)
    ax.set_xlim(left, right)
    _log_axis(ax.xaxis)
    ax.set_xlabel("tick → signal latency, µs (log scale; dotted: each path's p95)")
    ax.set_ylabel("share of ticks in each bin, %")
    ax.set_ylim(0, None)
    ax.set_title("Tick → signal latency at 1,000 symbols: fused vs ONNX Runtime")
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.93))
    hidden = ", ".join(
        f"{name} {int(counts[np.asarray(latency.histogram.edges_us[1:]) > right].sum()):,}"
        for (name, counts), (_, latency, _) in zip(beyond, paths, strict=True)
    )
    samples = f"{figures.latency_samples:,} ticks each" if figures.latency_samples else "ticks"
    _source_note(
        figure,
        figures.command,
        f"{samples}, 20 bins per decade; ticks beyond the axis's end: {hidden}",
        _load(figures),
    )
    return figure


def _clock_axis(ax: Axes, start: int, end: int, step: int) -> None:
    """Minutes on the x axis as UTC clock times every ``step`` minutes."""
    first = -(-start // step) * step
    ticks = list(range(first, end + 1, step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([_clock(t) for t in ticks])
    ax.set_xlim(start, end)


def _change_points(*series: np.ndarray) -> np.ndarray:
    """The indices where any of ``series`` (of one length) takes a new value, with the first
    and the last: drawn as post-steps through these alone, the series look the same."""
    stacked = np.vstack(series)
    changes = np.flatnonzero(np.any(np.diff(stacked, axis=1) != 0, axis=0)) + 1
    return np.unique(np.r_[0, changes, stacked.shape[1] - 1])


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The ``[first, end)`` index ranges where ``mask`` holds."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _clock(minute: int) -> str:
    """A minute of the day as hh:mm (the day's end as 24:00)."""
    rest = minute % 1440 if minute % 1440 or minute == 0 else 1440
    return f"{rest // 60:02d}:{rest % 60:02d}"


def autoscale(figures: AutoscaleFigures) -> Figure:
    """Ready replicas of each scaler against the demand (in pods needed), the whole day above
    and the open enlarged below."""
    figure = _new_figure(8.0)
    day = figures.day
    capacity = figures.pod_capacity_rps
    minutes = np.arange(1441)
    needed = np.asarray([*day.demand_rps, day.demand_rps[-1]]) / capacity
    whole, opening = figure.subplots(2, 1)
    zoom = (max(day.open_minute - 30, 0), min(day.open_minute + 90, 1440))
    scalers = list(figures.policies.values())
    for ax, (start, end), step in ((whole, (0, 1440), 120), (opening, zoom, 15)):
        # Minute steps only where a minute is wider than a hair (the file stays small).
        shown = slice(start, end + 1)
        ax.fill_between(
            minutes[shown],
            needed[shown],
            step="post" if ax is opening else None,
            color=DEMAND,
            alpha=0.8,
            lw=0,
            label=f"demand, in pods needed at {capacity:,.0f} rps per pod",
        )
        for index, scaler in enumerate(scalers):
            colour = POLICY_COLOURS[index % len(POLICY_COLOURS)]
            # The baseline first and wide, so it shows around a line drawn over it; ours on top.
            if index == 0:
                width, z = 3.6, 1.5
            elif index == len(scalers) - 1:
                width, z = 2.4, 3.0
            else:
                width, z = 1.5, 2.0
            ready = np.asarray([*scaler.day.ready, scaler.day.ready[-1]])
            ax.step(
                minutes,
                ready,
                where="post",
                color=colour,
                lw=width,
                zorder=z,
                label=f"{scaler.label}\n{scaler.day.violation_minutes} SLO-violating min, "
                f"{scaler.day.replica_hours:,.0f} replica-h this day",
            )
        _clock_axis(ax, start, end, step)
        ax.set_ylabel("ready replicas (pods)")
        ax.set_ylim(bottom=0)
        rps = ax.secondary_yaxis(
            "right", functions=(lambda r: r * capacity, lambda q: q / capacity)
        )
        rps.set_ylabel("requests per second")
        rps.yaxis.set_major_formatter(FuncFormatter(_plain_number))
    whole.axvspan(*zoom, color="0.5", alpha=0.1, lw=0)
    whole.set_title(
        f"Predictive vs reactive autoscaling: ready replicas against demand over a trading day "
        f"({day.region})"
    )
    whole.set_xlabel("time of day, UTC (shaded: enlarged below)")
    whole.legend(loc="upper left", labelspacing=0.8)
    opening.set_title(
        f"The open ({_clock(day.open_minute)} UTC) enlarged: a new pod serves "
        f"{figures.startup_minutes} minutes after it is asked for, metrics arrive "
        f"{figures.metric_lag_minutes} minute{'s' if figures.metric_lag_minutes != 1 else ''} late",
        fontsize=10,
    )
    opening.set_xlabel("time of day, UTC")
    totals = "; ".join(
        f"{name} {s.violation_minutes} / {s.replica_hours:,.0f}"
        for name, s in figures.policies.items()
    )
    _source_note(
        figure,
        f"{figures.command}  ·  deterministic simulation; the day shown is day {day.day + 1} "
        f"of {figures.days} in {day.region}",
        f"all {figures.days} days x {len(figures.regions)} regions, SLO-violating minutes / "
        f"replica-hours: {totals}",
    )
    return figure


def spot(figures: SpotFigures) -> Figure:
    """Each policy's ready slots on spot and on on-demand nodes around a wave, one panel each."""
    window = figures.window
    totals = {p.policy: p for p in figures.policies}
    names = list(window.ready_slots)
    figure = _new_figure(2.2 * len(names) + 1.6)
    axes = figure.subplots(len(names), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    n = len(window.needed_slots)
    minutes = window.start_minute + np.arange(n + 1)
    needed = np.asarray([*window.needed_slots, window.needed_slots[-1]])
    wave = window.waves[0]
    stockout_end = max(w.stockout_until for w in window.waves)
    top = 0
    for ax, name in zip(axes, names, strict=True):
        ready = window.ready_slots[name]
        on_spot = np.asarray([*ready.spot, ready.spot[-1]])
        on_demand = np.asarray([*ready.on_demand, ready.on_demand[-1]])
        short = (on_spot + on_demand < needed)[:-1]
        # Step series need only the minutes where something changes (the file stays small).
        keep = _change_points(on_spot, on_demand, needed)
        x, on_spot, on_demand, wanted = minutes[keep], on_spot[keep], on_demand[keep], needed[keep]
        ax.axvspan(
            wave.minute,
            stockout_end,
            color="0.5",
            alpha=0.12,
            lw=0,
            label="no spot capacity in the zones hit",
        )
        ax.stackplot(
            x,
            on_spot,
            on_demand,
            colors=(SPOT, ON_DEMAND),
            alpha=0.8,
            step="post",
            labels=("ready on spot nodes", "ready on on-demand nodes"),
        )
        ax.step(x, wanted, where="post", color="black", lw=1.5, label="GPU slots needed")
        for index, (first, end) in enumerate(_runs(short)):
            ax.axvspan(
                minutes[first],
                minutes[end],
                color=SHORT,
                alpha=0.25,
                lw=0,
                label="short: ready < needed" if index == 0 else None,
            )
        ax.axvline(wave.minute, color=SHORT, lw=1.4, linestyle="--", label="the wave")
        p = totals[name]
        ax.set_title(
            f"{name}: {int(short.sum())} short minutes here; whole run: "
            f"{p.minutes_covered:.2%} covered, ${p.usd_per_day:,.2f}/day, "
            f"{p.spot_share:.0%} spot",
            fontsize=9,
            loc="left",
        )
        ax.set_ylabel("GPU slots")
        top = max(top, int(needed.max()), int((on_spot + on_demand).max()))
    axes[0].set_ylim(0, top * 1.1 + 1)
    legend: dict[str, Any] = {}  # every panel's entries once (a panel may have no short minute)
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    axes[0].legend(list(legend.values()), list(legend), loc="upper left", ncols=3)
    zones = ", ".join(w.zone for w in window.waves)
    figure.suptitle(
        f"Spot vs on-demand GPU capacity under a preemption wave\n"
        f"{wave.fraction:.0%} of the spot nodes in {zones} reclaimed at once",
        fontsize=11,
        fontweight="bold",
    )
    last = axes[-1]
    _clock_axis(last, int(minutes[0]), int(minutes[-1]), 15)
    last.set_xlabel("time, UTC")
    _source_note(
        figure,
        f"{figures.command}  ·  deterministic simulation over {figures.days} days; the minutes "
        f"shown start on day {window.start_minute // 1440 + 1}",
        f"SLO: ready slots cover the slots needed in ≥ {figures.slo_minutes:.1%} of minutes",
    )
    return figure


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Source:
    """A results file, the benchmark that writes it and the pictures drawn from it."""

    file: str
    writer: str
    model: type[Figures]
    pictures: Mapping[str, Callable[[Any], Figure]]


SOURCES = (
    Source(
        "engine.json",
        "bench/engine.py --json",
        EngineFigures,
        {"engine-cost": engine_cost, "engine-latency": engine_latency},
    ),
    Source(
        "autoscale.json", "bench/autoscale.py --json", AutoscaleFigures, {"autoscale": autoscale}
    ),
    Source("spot.json", "bench/spot.py --json", SpotFigures, {"spot": spot}),
)


def load(source: Source, results: Path) -> Figures | None:
    """The validated figures of ``source`` in ``results``; None when the file is not there;
    `ConfigError` (one line per problem, naming the file and the key) when it is malformed."""
    path = results / source.file
    if not path.exists():
        return None
    return load_model(source.model, str(path), read_config_file(path))


def save(figure: Figure, path: Path) -> None:
    """Write ``figure`` with nothing that changes between runs (no date, salted SVG ids)."""
    kind = path.suffix.lstrip(".")
    metadata = {"Date": None} if kind == "svg" else {}
    with matplotlib.rc_context(STYLE):
        figure.savefig(path, format=kind, metadata=metadata, dpi=PNG_DPI)


class Malformed(ValueError):
    """Every malformed results file's problems, one line each, each naming its file."""

    def __init__(self, errors: Sequence[ConfigError]):
        super().__init__("\n".join(map(str, errors)))


def load_all(results: Path) -> list[tuple[Source, Figures]]:
    """Every results file in ``results``, validated; `Malformed` listing the problems of every
    malformed file, or when none is there; else a note on stderr for each one missing."""
    found: list[tuple[Source, Figures]] = []
    missing: list[Source] = []
    errors: list[ConfigError] = []
    for source in SOURCES:
        try:
            figures = load(source, results)
        except ConfigError as exc:
            errors.append(exc)
            continue
        if figures is None:
            missing.append(source)
        else:
            found.append((source, figures))
    if not found and not errors:
        names = ", ".join(s.file for s in SOURCES)
        errors.append(
            ConfigError(str(results), [Problem("", "holds no results to draw", allowed=names)])
        )
    if errors:
        raise Malformed(errors)
    for source in missing:
        print(
            f"plots: skipped {source.file}: not in {results} (written by {source.writer})",
            file=sys.stderr,
        )
    return found


def render(results: Path, out: Path, kind: str = "svg") -> list[Path]:
    """Draw every picture whose JSON is in ``results`` into ``out``, each JSON validated
    before anything is drawn; the files written."""
    found = load_all(results)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source, figures in found:
        for name, draw in source.pictures.items():
            with matplotlib.rc_context(STYLE):
                figure = draw(figures)
            path = out / f"{name}.{kind}"
            save(figure, path)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="folder of the benchmarks' JSON (default bench/results)",
    )
    parser.add_argument("--out", type=Path, help="folder for the pictures (default: --results)")
    parser.add_argument("--format", choices=("svg", "png"), default="svg")
    args = parser.parse_args(argv)
    try:
        for path in render(args.results, args.out or args.results, args.format):
            print(f"plots: wrote {path}")
    except Malformed as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
