"""`python -m tools plan`: run a stack's program offline and print or save its inventory.

Also the exit-code contract every command keeps (`run_guarded`): 0 ok; 1 the check failed
(mandatory policy violations, inputs the provider does not know, a diff's head that cannot be
planned); 2 the input is wrong (arguments, project or stack file, stack configuration, a
program that raises), printed as `error:` lines with no traceback unless `--verbose`; 3 the
engine itself failed (a bug: `--verbose` shows where).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from tools.engine import (
    PlanError,
    ProgramError,
    UnknownInputsError,
    parse_overrides,
    plan_checked,
    read_project,
)
from tools.inventory import Inventory

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


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
    add_verbose_argument(parser)


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print the full traceback when the program (or the engine) raises",
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
    result = plan_checked(args.program, args.stack, overrides)
    elapsed = time.perf_counter() - started
    inventory = result.inventory
    print(f"planned {len(inventory.resources)} resources in {elapsed:.1f}s", file=sys.stderr)
    level = "warning" if args.allow_unknown_inputs else "error"
    for problem in result.unknown_inputs:
        print(f"{level}: {problem}", file=sys.stderr)
    for type_token in result.unchecked_types:
        print(
            f"note: inputs of {type_token} not checked: no SDK class or CRD model", file=sys.stderr
        )
    # Unknown inputs fail the plan (a real `pulumi up` would reject or ignore them).
    if result.unknown_inputs and not args.allow_unknown_inputs:
        raise UnknownInputsError(
            f"{len(result.unknown_inputs)} input(s) the provider does not know; fix them, or"
            " pass --allow-unknown-inputs to report them as warnings"
        )
    return inventory


def write_output(path: Path, text: str, option: str) -> None:
    """Write what an output option (`--json FILE` ...) names, creating its directory; a path
    that cannot be written is bad input (exit 2), one line naming the option and why."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise PlanError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None
    print(f"wrote {path}", file=sys.stderr)


def run_guarded(action: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command under the exit-code contract (see the module docstring)."""
    verbose = bool(getattr(args, "verbose", False))
    try:
        return action(args)
    except ProgramError as exc:
        if verbose and exc.traceback_text:
            sys.stderr.write(exc.traceback_text)
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except PlanError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except UnknownInputsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except Exception as exc:  # a fault of the engine itself, never of the input
        if verbose:
            traceback.print_exc()
        print(
            f"error: internal error in the offline engine: {type(exc).__name__}: {exc}"
            + ("" if verbose else " (--verbose shows the traceback)"),
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _plan(args: argparse.Namespace) -> int:
    inventory = plan_from_args(args)
    print(inventory.summary())
    if args.json:
        write_output(args.json, inventory.dumps(), "--json")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_plan, args)
