"""`python -m tools cost`: a stack's monthly cost from its plan, line items by category."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tools.plan_command import add_program_arguments, plan_from_args, run_guarded, write_output

if TYPE_CHECKING:  # pricing (and the config model it reads) loads only when cost runs
    from tools.cost import Estimate


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cost", help="price a stack's plan: monthly cost per line item, by category"
    )
    add_program_arguments(parser)
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the estimate as JSON")
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="write the estimate as Markdown"
    )
    parser.add_argument(
        "--policy-config",
        type=Path,
        metavar="FILE",
        help="write the budget rule's config (for pulumi preview --policy-pack-config FILE)",
    )
    parser.set_defaults(run=run)


def estimate_from_args(args: argparse.Namespace) -> Estimate:
    """Plan the stack the arguments name and price it with its own cost config."""
    from tools.cost import estimate, usage_from_stack

    inventory = plan_from_args(args)
    stack_usage = usage_from_stack(args.program, args.stack, args.config)
    return estimate(inventory, stack_usage.usage, stack_usage.budget_usd)


def _cost(args: argparse.Namespace) -> int:
    from tools.cost import PricingError, budget_policy_config, render_markdown, render_text

    try:
        result = estimate_from_args(args)
    except (PricingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_text(result))
    if args.json:
        write_output(args.json, json.dumps(result.to_json(), indent=2) + "\n", "--json")
    if args.policy_config:
        text = json.dumps(budget_policy_config(result), indent=2) + "\n"
        write_output(args.policy_config, text, "--policy-config")
    if args.markdown:
        write_output(args.markdown, render_markdown(result) + "\n", "--markdown")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_guarded(_cost, args)
