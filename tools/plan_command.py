"""`python -m tools plan`: run a stack's program offline and print or save its inventory."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from tools.engine import PlanError, parse_overrides, plan, read_project
from tools.inventory import Inventory


def add_program_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every command that plans a stack takes."""
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument(
        "--program", type=Path, default=Path.cwd(), help="Pulumi project directory (default: .)"
    )
    parser.add_argument(
        "--config",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value (repeatable)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="plan a stack offline and summarise its resources")
    add_program_arguments(parser)
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the inventory as JSON")
    parser.set_defaults(run=run)


def plan_from_args(args: argparse.Namespace) -> Inventory:
    """Plan the stack the arguments name, reporting progress on stderr."""
    project = read_project(args.program)
    overrides = parse_overrides(args.config, project.name)
    print(f"planning {project.name} stack {args.stack} ({project.root}) ...", file=sys.stderr)
    started = time.perf_counter()
    inventory = plan(args.program, args.stack, overrides)
    elapsed = time.perf_counter() - started
    print(f"planned {len(inventory.resources)} resources in {elapsed:.1f}s", file=sys.stderr)
    return inventory


def run_guarded(action, args: argparse.Namespace) -> int:
    """Run a command: project errors exit 2 with their message, a failing program exits 1
    with its traceback."""
    try:
        return action(args)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the program under plan raised: show it as Pulumi would
        traceback.print_exc()
        print(f"\nerror: the program failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _plan(args: argparse.Namespace) -> int:
    inventory = plan_from_args(args)
    print(inventory.summary())
    if args.json:
        inventory.write(args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_plan, args)
