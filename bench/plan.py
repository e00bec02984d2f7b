"""Offline-engine benchmark: how long `tools plan` takes on the repository's prod and dev stacks.

For each stack, medians of repeated fresh processes:
  * the command a user runs, `python -m tools plan --stack S`: wall clock and the process's
    CPU time (on a busy machine, CPU time is the closer estimate of an idle one's wall clock:
    the plan is single-threaded and waits on nothing else) — the headline;
  * its parts, from a process that plans twice: import time (the engine's modules, and the
    SDK modules the program pulls in during its first plan) and the program's run (the second
    plan, everything imported);
  * the baseline, measured in the same run: a plan made the SDK's default way (a thread-pool
    hop per call to the mock monitor, the default garbage-collector thresholds), as the engine
    ran before its speed work, against the same plan made the engine's way, each from a cold
    start to the end of the first plan.
Target: prod under 5 s on an idle 2-core machine, goal 3 s. The last line is the headline.

    .venv/bin/python bench/plan.py [--quick] [--stacks prod dev]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S, GOAL_S = 5.0, 3.0

# A fresh process: import the engine, plan once (imports the SDK modules the program uses)
# and check its inputs, as `tools plan` does; say so; plan again (all imported: the program's
# run alone) and report each part.
CHILD = """
import json, sys, time
started = time.perf_counter()
from pathlib import Path
from tools.engine import PlanError, plan_here, read_project, stack_config
from tools.input_check import check_inputs
imported = time.perf_counter()
repo, stack, sdk_defaults = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
project = read_project(repo)
config = stack_config(project, stack)
first_start = time.perf_counter()
try:
    inventory = plan_here(project, stack, config, sdk_defaults=sdk_defaults)
except PlanError as exc:
    sys.exit(chr(10).join(f"error: {line}" for line in str(exc).splitlines()))
check_inputs(inventory)
first = time.perf_counter() - first_start
print("planned", time.process_time(), flush=True)
second_start = time.perf_counter()
plan_here(project, stack, config, sdk_defaults=sdk_defaults)
second = time.perf_counter() - second_start
print(json.dumps({
    "engine_import_s": imported - started,
    "sdk_import_s": max(first - second, 0.0),
    "run_s": second,
    "resources": len(inventory.resources),
}))
"""


def measure(stack: str, sdk_defaults: bool) -> dict[str, float]:
    """One fresh process: its wall clock to the first plan's end, and the parts it reports."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(REPO), stack, "1" if sdk_defaults else "0"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    first_line = child.stdout.readline().split()
    one_plan = time.perf_counter() - started
    rest = child.stdout.read()
    if child.wait(timeout=600) != 0 or first_line[:1] != ["planned"]:
        raise SystemExit(f"planning {stack} failed; run `python -m tools plan --stack {stack}`")
    result = json.loads(rest.strip().splitlines()[-1])
    result["one_plan_s"] = one_plan
    # The process's CPU time to the same point: on a busy machine, the closer estimate of what
    # an idle one takes (the plan is single-threaded and waits on nothing else).
    result["one_plan_cpu_s"] = float(first_line[1])
    return result


def command(stack: str) -> tuple[float, float]:
    """`python -m tools plan --stack S` end to end: (wall clock, CPU time of the process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tools", "plan", "--stack", stack],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr.strip() or f"planning {stack} failed")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description="How long `tools plan` takes on prod and dev.")
    parser.add_argument(
        "--quick", action="store_true", help="3 runs, the baseline once (default: 5 of each)"
    )
    parser.add_argument("--stacks", nargs="+", default=["prod", "dev"])
    args = parser.parse_args()
    runs = 3 if args.quick else 5
    parts_runs = 1 if args.quick else runs  # --quick stays under a minute on an idle box
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} cores, load average {load:.2f} at start; the command"
        f" {runs} times, its parts and the baseline {parts_runs}"
    )
    summary: dict[str, dict[str, float]] = {}
    for stack in args.stacks:
        walls, cpus, fast, slow = [], [], [], []
        for run in range(runs):  # interleaved, so load drifts hit every measure alike
            wall, cpu = command(stack)
            walls.append(wall)
            cpus.append(cpu)
            if run < parts_runs:
                fast.append(measure(stack, sdk_defaults=False))
                slow.append(measure(stack, sdk_defaults=True))
        row = {
            "wall": statistics.median(walls),
            "cpu": statistics.median(cpus),
            "engine_import": median(fast, "engine_import_s"),
            "sdk_import": median(fast, "sdk_import_s"),
            "run": median(fast, "run_s"),
            "first_plan_cpu": median(fast, "one_plan_cpu_s"),
            "baseline_plan_cpu": median(slow, "one_plan_cpu_s"),
            "baseline_run": median(slow, "run_s"),
            "resources": fast[0]["resources"],
        }
        summary[stack] = row
        print(
            f"{stack}: {row['resources']:.0f} resources; `tools plan` {row['wall']:.2f} s wall,"
            f" {row['cpu']:.2f} s CPU (medians of {runs}; wall"
            f" {', '.join(f'{w:.2f}' for w in walls)})"
        )
        print(
            f"  imports {row['engine_import'] + row['sdk_import']:.2f} s (engine"
            f" {row['engine_import']:.2f} s, SDK modules the program loads"
            f" {row['sdk_import']:.2f} s); the program's run {row['run']:.2f} s"
        )
        print(
            f"  baseline, the SDK's default way, cold start to first plan: CPU"
            f" {row['baseline_plan_cpu']:.2f} s against {row['first_plan_cpu']:.2f} s"
            f" ({row['baseline_plan_cpu'] / row['first_plan_cpu']:.2f}x); the program's run"
            f" {row['baseline_run']:.2f} s ({row['baseline_run'] / row['run']:.2f}x)"
        )
    load_end = os.getloadavg()[0]
    print(
        f"load average {load_end:.2f} at the end ({'idle' if max(load, load_end) < 0.5 else 'not idle'})"
    )
    name = "prod" if "prod" in summary else next(iter(summary))
    head = summary[name]
    idle = max(load, load_end) < 0.5
    # On an idle machine the wall clock is the figure; on a busy one, the CPU time.
    figure = head["wall"] if idle else head["cpu"]
    verdict = "meets" if figure < TARGET_S else "misses"
    goal = "meets" if figure < GOAL_S else "misses"
    others = "".join(
        f"; {s} {r['wall']:.2f} s (CPU {r['cpu']:.2f} s)" for s, r in summary.items() if s != name
    )
    print(
        f"plan: {name} {head['wall']:.2f} s wall, {head['cpu']:.2f} s CPU, median of {runs}"
        f" (imports {head['engine_import'] + head['sdk_import']:.2f} s, run {head['run']:.2f} s);"
        f" {head['baseline_plan_cpu'] / head['first_plan_cpu']:.2f}x less CPU than the SDK's"
        f" default path{others}; {verdict} the {TARGET_S:.0f} s target and {goal} the"
        f" {GOAL_S:.0f} s goal {'idle' if idle else f'by CPU time (load average {max(load, load_end):.1f})'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
