"""`python -m tools diff`: what a change does to each stack, planned offline at base and head."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_STACKS = ("dev", "prod")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diff",
        help="plan stacks at a base ref and at head and show what changes, "
        "with policy findings and the cost delta",
    )
    parser.add_argument("--base", required=True, metavar="REF", help="git ref to compare with")
    parser.add_argument(
        "--head", metavar="REF", help="git ref of the change (default: the working tree)"
    )
    parser.add_argument(
        "--stack",
        action="append",
        dest="stacks",
        metavar="S",
        help=f"stack to diff (repeatable; default: {', '.join(DEFAULT_STACKS)})",
    )
    parser.add_argument(
        "--program", type=Path, default=Path.cwd(), help="Pulumi project directory (default: .)"
    )
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="also write the diff as a PR comment"
    )
    parser.add_argument("--no-policy", action="store_true", help="skip the policy comparison")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost estimates")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """0 when every head plans (a base that fails to plan is reported, not fatal), 1 when a
    head does not, 2 for a bad ref, program or argument."""
    # The diff machinery (git, the analyzer, pricing) loads only when a diff runs.
    from tools.diff import DiffError, Options, diff_stacks, render_markdown, render_text
    from tools.engine import PlanError
    from tools.plan_command import write_output

    stacks = args.stacks or list(DEFAULT_STACKS)
    options = Options(policy=not args.no_policy, cost=not args.no_cost)
    try:
        diffs = diff_stacks(args.program, stacks, args.base, args.head, options)
    except DiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render_text(diffs))
    if args.markdown:
        try:
            write_output(args.markdown, render_markdown(diffs), "--markdown")
        except PlanError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    failed = [d.stack for d in diffs if d.head.inventory is None]
    if failed:
        print(f"error: the head of {', '.join(failed)} could not be planned", file=sys.stderr)
        return 1
    return 0
