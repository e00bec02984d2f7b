"""The cost estimate: a planned stack priced for one month, by category, region and signal.

- `schema`: pricing.yaml (beside this file), dated list prices and credits with their pages;
- `estimate`: the estimate's data, line items by category, totals and the JSON form;
- `pricers`: one pricer per billable resource type, the stack's usage lines, the pricing pass;
- `usage`: the stack's usage assumptions and budget, and the budget rule's policy config;
- `render`: the text and Markdown tables.

`python -m tools cost` (tools/cost_command.py) is the command; `tools check` and `tools diff`
import what they need from here.
"""

from tools.cost.estimate import CATEGORIES, Category, Estimate, FreeType, LineItem, UnpricedResource
from tools.cost.pricers import FREE_TYPES, PRICERS, estimate
from tools.cost.render import render_markdown, render_text, unit_usd, usd
from tools.cost.schema import PRICING_PATH, Pricing, PricingError, Unpriceable, load_pricing
from tools.cost.usage import (
    BUDGET_POLICY,
    StackUsage,
    budget_policy_config,
    stack_budget_config,
    usage_from_stack,
    usage_from_values,
)

__all__ = [
    "BUDGET_POLICY",
    "CATEGORIES",
    "FREE_TYPES",
    "PRICERS",
    "PRICING_PATH",
    "Category",
    "Estimate",
    "FreeType",
    "LineItem",
    "Pricing",
    "PricingError",
    "StackUsage",
    "Unpriceable",
    "UnpricedResource",
    "budget_policy_config",
    "estimate",
    "load_pricing",
    "render_markdown",
    "render_text",
    "stack_budget_config",
    "unit_usd",
    "usage_from_stack",
    "usage_from_values",
    "usd",
]
