"""`python -m tools plan`: run a stack's program offline and print or save its inventory."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from tools.engine import PlanError, UnknownInputsError, parse_overrides, plan, read_project
from tools.input_check import check_inputs, unchecked_types
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
    parser.add_argument(
        "--allow-unknown-inputs",
        action="store_true",
        help="report inputs the provider does not know as warnings instead of errors",
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
    _check_inputs(inventory, allow_unknown=args.allow_unknown_inputs)
    return inventory


def _check_inputs(inventory: Inventory, allow_unknown: bool) -> None:
    """Unknown inputs fail the plan (a real `pulumi up` would reject or ignore them)."""
    unknown = check_inputs(inventory)
    level = "warning" if allow_unknown else "error"
    for problem in unknown:
        print(f"{level}: {problem}", file=sys.stderr)
    for type_token in unchecked_types(inventory):
        print(
            f"note: inputs of {type_token} not checked: no SDK class or CRD model", file=sys.stderr
        )
    if unknown and not allow_unknown:
        raise UnknownInputsError(
            f"{len(unknown)} input(s) the provider does not know; fix them, or pass"
            " --allow-unknown-inputs to report them as warnings"
        )


def run_guarded(action, args: argparse.Namespace) -> int:
    """Run a command: project errors exit 2 with their message, a failing program exits 1
    with its traceback."""
    try:
        return action(args)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UnknownInputsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
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
