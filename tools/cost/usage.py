"""A stack's usage assumptions and budget, as the estimate and the pack's budget rule read them.

What exists comes from the plan; how much of it runs comes from the stack's `cost` config
(`infra.config.CostSettings`, validated by the stack config's own rules), and the budget's
amount from `budget.monthlyUsd`. `tools check` hands the estimate to the pack's stack-level
`cost-monthly-budget` rule through the policy config built here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.cost.estimate import Estimate
from tools.cost.pricers import estimate
from tools.engine import parse_overrides, read_project, read_stack_config
from tools.inventory import Inventory

if TYPE_CHECKING:  # infra.config is imported lazily: see usage_from_values.
    from infra.config import CostSettings

BUDGET_POLICY = "cost-monthly-budget"


@dataclass(frozen=True)
class StackUsage:
    usage: CostSettings
    budget_usd: float | None


def usage_from_values(values: Mapping[str, str], project: str, source: str) -> StackUsage:
    """The `<project>:cost` and `<project>:budget` keys of a stack's config (as the language
    host passes it), validated; defaults where absent. Bad settings raise
    `app.config_errors.ConfigError` (a ValueError): one line per problem."""
    # Imported here, not at module level: `python -m tools plan` runs other programs (a base
    # ref's `infra` package) in this process, which must find no `infra` already imported.
    from app.config_errors import ConfigError, Problem, load_model
    from infra.config import CostSettings

    raw_cost = _decoded(values.get(f"{project}:cost")) or {}
    usage = load_model(CostSettings, source, raw_cost, root=f"{project}:cost")
    # Only the budget's amount is the estimate's business (the program validates the rest).
    budget = _decoded(values.get(f"{project}:budget"))
    monthly = budget.get("monthlyUsd") if isinstance(budget, dict) else None
    if monthly is None:
        return StackUsage(usage, None)
    if (
        isinstance(monthly, bool)
        or not isinstance(monthly, int | float)
        or not 0 < monthly < math.inf
    ):
        raise ConfigError(
            source,
            [
                Problem(
                    f"{project}:budget.monthlyUsd", "not a budget", monthly, "a finite number > 0"
                )
            ],
        )
    return StackUsage(usage, float(monthly))


def usage_from_stack(
    program_dir: Path, stack: str, config_overrides: Iterable[str] | None = None
) -> StackUsage:
    project = read_project(Path(program_dir))
    values = read_stack_config(project.stack_path(stack), project.name)
    values.update(parse_overrides(list(config_overrides or []), project.name))
    return usage_from_values(values, project.name, f"Pulumi.{stack}.yaml")


def _decoded(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def budget_policy_config(estimate: Estimate) -> dict[str, Any]:
    """The policy-pack config that hands the estimate to the stack-level budget rule
    (`cost-monthly-budget`); empty when the stack declares no budget."""
    if estimate.budget_usd is None:
        return {}
    return {
        BUDGET_POLICY: {
            "estimatedMonthlyUsd": round(estimate.total, 2),
            "budgetMonthlyUsd": float(estimate.budget_usd),
        }
    }


def stack_budget_config(
    inventory: Inventory, program_dir: Path, config_overrides: Iterable[str] | None = None
) -> dict[str, Any]:
    """The budget rule's policy config for a planned stack, priced with its own cost config:
    what `tools check` hands the pack so `cost-monthly-budget` sees the estimate."""

    stack_usage = usage_from_stack(program_dir, inventory.stack, config_overrides)
    return budget_policy_config(estimate(inventory, stack_usage.usage, stack_usage.budget_usd))
