"""`python -m tools check`: plan a stack offline and run the real policy pack over it.

What `pulumi preview --policy-pack policies [--policy-pack-config FILE]` does, with no cloud and
no CLI: the offline engine plans the stack, the pack starts in its own virtualenv, and every
resource goes through Pulumi's Analyzer protocol (Analyze each, then AnalyzeStack). Violations
print grouped by enforcement level; any mandatory violation exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.engine import parse_overrides, read_project, stack_config
from tools.plan_command import add_program_arguments, plan_from_args, run_guarded, write_output

if TYPE_CHECKING:  # the analyzer (gRPC, jsonschema) loads only when a check runs
    from tools.analyzer import Analysis
    from tools.inventory import Inventory

LEVEL_ORDER = ("mandatory", "remediate", "advisory", "disabled")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_program_arguments(parser)
    parser.add_argument(
        "--policy-config",
        type=Path,
        metavar="FILE",
        help="policy config JSON, the format of `pulumi preview --policy-pack-config`",
    )
    parser.add_argument(
        "--policy-pack",
        type=Path,
        metavar="DIR",
        help="the policy pack directory (default: this repository's policies/)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help='write {"violations": [...], "policies": N, "resources": N} to FILE',
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check", help="plan a stack offline and check it against the policy pack"
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def check_inventory(
    inventory: Inventory,
    policy_config: dict[str, Any] | None = None,
    *,
    pack_dir: Path | None = None,
    stack_config: dict[str, str] | None = None,
) -> Analysis:
    """Run the pack over a planned stack, as a preview does."""
    from tools.analyzer import POLICY_PACK_DIR, PolicyPackProcess

    pack_dir = pack_dir or POLICY_PACK_DIR
    with PolicyPackProcess(
        pack_dir, project=inventory.project, stack=inventory.stack, stack_config=stack_config
    ) as pack:
        pack.configure(policy_config)
        return pack.analyze_all(inventory.resources)


def violation_rows(analysis: Analysis, inventory: Inventory) -> list[dict[str, Any]]:
    types = {r.urn: r.type for r in inventory.resources}
    return [
        {
            "policy": v.policy,
            "level": v.level,
            "urn": v.urn,
            "type": types.get(v.urn) if v.urn else None,
            "message": v.message,
        }
        for v in analysis.violations
    ]


def report_json(analysis: Analysis, inventory: Inventory) -> dict[str, Any]:
    return {
        "violations": violation_rows(analysis, inventory),
        "policies": analysis.policies,
        "resources": analysis.resources,
    }


def render_report(analysis: Analysis, inventory: Inventory, pack_name: str = "policies") -> str:
    lines = [
        f"checked {analysis.resources} resources of {inventory.project}/{inventory.stack} "
        f"against {analysis.policies} policies of {pack_name}",
    ]
    grouped = analysis.by_level()
    for level in LEVEL_ORDER:
        violations = grouped.get(level, [])
        if not violations:
            continue
        lines += ["", f"{level} ({len(violations)}):"]
        for v in violations:
            lines.append(f"  [{v.policy}] {v.urn or '(stack)'}")
            lines += [f"      {line}" for line in v.message.splitlines()]
    counts = ", ".join(f"{len(grouped[lv])} {lv}" for lv in LEVEL_ORDER if grouped.get(lv))
    if not counts:
        lines += ["", "no policy violations"]
    elif analysis.mandatory:
        lines += ["", f"{counts}: mandatory violations block the update"]
    else:
        lines += ["", f"{counts}: no mandatory violations"]
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    from tools.analyzer import POLICY_PACK_DIR, load_policy_config
    from tools.cost import stack_budget_config

    args.policy_pack = args.policy_pack or POLICY_PACK_DIR
    # Read the policy config first: a typo there should not cost a whole plan.
    policy_config = load_policy_config(args.policy_config) if args.policy_config else {}
    project = read_project(args.program)
    # The stack's config as the pack's process gets it (PULUMI_CONFIG), overrides applied.
    config = stack_config(project, args.stack, parse_overrides(args.config, project.name)).values
    inventory = plan_from_args(args)
    # The stack-level budget rule reads the cost estimate; an explicit config entry wins.
    policy_config = {**stack_budget_config(inventory, args.program, args.config), **policy_config}
    analysis = check_inventory(
        inventory, policy_config, pack_dir=args.policy_pack, stack_config=config
    )
    print(render_report(analysis, inventory, str(args.policy_pack)))
    if args.json:
        text = json.dumps(report_json(analysis, inventory), indent=2) + "\n"
        write_output(args.json, text, "--json")
    return 1 if analysis.mandatory else 0


def run(args: argparse.Namespace) -> int:
    def guarded(arguments: argparse.Namespace) -> int:
        from tools.analyzer import AnalyzerError

        try:
            return _check(arguments)
        except AnalyzerError as exc:  # the pack failed to start, or the policy config is bad
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run_guarded(guarded, args)


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.check ...`: the same command without the `tools` dispatcher."""
    parser = argparse.ArgumentParser(prog="python -m tools check", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
