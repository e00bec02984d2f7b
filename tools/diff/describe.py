"""How a diff reads, in both renderers: values, changed inputs and their effect, the counts, the
cost change and the policy findings, each worded once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tools.analyzer import Violation
from tools.cost import Estimate, usd
from tools.diff.compare import ABSENT, InputChange, Kind, StackDiff
from tools.inventory import SECRET, UNKNOWN, Inventory

MASK = SECRET
# Change kinds in the order a reviewer reads them.
ORDER: tuple[Kind, ...] = ("replace", "remove", "update", "add")
MAX_VALUE = 80


def show(value: Any, secret: bool = False) -> str:
    if value is ABSENT:
        return "(absent)"
    if secret:
        return MASK
    if value == UNKNOWN:
        return "(known after apply)"
    if isinstance(value, str):
        lines = value.splitlines()
        if len(lines) > 1:
            first = lines[0].strip() or lines[1].strip()
            return _clip(json.dumps(first)) + f" (+{len(lines) - 1} lines)"
        return _clip(json.dumps(value))
    return _clip(json.dumps(value, sort_keys=True, default=str))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def change_line(change: InputChange) -> str:
    old, new = show(change.old, change.secret), show(change.new, change.secret)
    if change.secret and change.old is not ABSENT and change.new is not ABSENT:
        new += " (changed)"
    return f"{change.path}: {old} → {new}"


def effect_note(change: InputChange) -> str:
    if change.effect == "replace":
        return f"forces replacement: {change.why} [{change.source}]"
    if change.effect == "disruptive":
        return f"in place, but {change.why} [{change.source}]"
    return ""


_VERBS: tuple[tuple[Kind, str], ...] = (
    ("add", "add"),
    ("update", "update"),
    ("replace", "replace"),
    ("remove", "delete"),
)


def headline(d: StackDiff) -> str:
    counts = ", ".join(f"{d.count(kind)} to {verb}" for kind, verb in _VERBS)
    return f"{counts}, {d.unchanged} unchanged"


def cost_summary(d: StackDiff) -> str | None:
    base, head = d.base.estimate, d.head.estimate
    if head is None:
        return None
    if base is None or d.base.inventory is None or not d.base.inventory.resources:
        return f"{usd(head.total)}/month"
    delta = head.total - base.total
    percent = f", {delta / base.total:+.0%}" if base.total else ""
    sign = "+" if delta >= 0 else ""
    return f"{usd(base.total)} → {usd(head.total)}/month ({sign}{usd(delta)}{percent})"


def cost_deltas(d: StackDiff) -> list[tuple[str, str, float, float]]:
    """(line item, region, base, head) for every line whose monthly cost changed."""
    if d.base.estimate is None or d.head.estimate is None:
        return []
    before, after = d.base.estimate.by_price(), d.head.estimate.by_price()
    rows = []
    for key in sorted(set(before) | set(after), key=lambda k: (k[1], k[0])):
        old, new = before.get(key, 0.0), after.get(key, 0.0)
        if abs(new - old) >= 0.005:
            rows.append((key[0], key[1], old, new))
    return rows


def describe(v: Violation, inventory: Inventory | None) -> str:
    where = "the stack"
    if v.urn and inventory is not None:
        resource = inventory.by_urn().get(v.urn)
        where = f"{resource.type} {resource.name}" if resource else v.urn
    elif v.urn:
        where = v.urn
    return f"[{v.level}] {v.policy} on {where}: {v.message}"


def per_signal(e: Estimate) -> str:
    text = f"head: ${e.per_signal:,.4f} per signal at {e.signals_per_month:,} signals/month"
    if e.budget_usd is not None:
        text += f"; budget {usd(e.budget_usd)}" + (" EXCEEDED" if e.over_budget else "")
    return text


def levels(violations: Sequence[Violation]) -> str:
    counts: dict[str, int] = {}
    for v in violations:
        counts[v.level] = counts.get(v.level, 0) + 1
    return ", ".join(f"{n} {level}" for level, n in sorted(counts.items())) or "no findings"
