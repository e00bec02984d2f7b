"""The diff as a pull-request comment (GitHub Markdown): a summary table, each stack's changes,
its cost change with a chart of the cost by category at base and head (mermaid, which GitHub
renders), and its policy findings."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from tools.cost import CATEGORIES, Estimate, usd
from tools.diff.compare import StackDiff
from tools.diff.describe import (
    ORDER,
    change_line,
    cost_deltas,
    cost_summary,
    describe,
    effect_note,
    levels,
    per_signal,
)

COMMENT_MARKER = "<!-- signal-platform:plan-diff -->"
_TITLE = {
    "replace": "Replaced (deleted and created again)",
    "remove": "Deleted",
    "update": "Updated in place",
    "add": "Added",
}
# Longer groups of changes fold into <details> in a PR comment.
FOLD_AFTER = 15


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def render_markdown(diffs: Sequence[StackDiff]) -> str:
    out = [COMMENT_MARKER, "## Offline plan diff", ""]
    if diffs:
        out.append(
            f"{diffs[0].base.label} → {diffs[0].head.label}, planned offline with no cloud credentials."
        )
    out += [
        "",
        "| Stack | Add | Update | Replace | Delete | Unchanged | Policy (new / resolved) | Monthly cost |",
        "|---|--:|--:|--:|--:|--:|---|---|",
    ]
    for d in diffs:
        if d.head.inventory is None:
            out.append(f"| {d.stack} | | | | | | | head failed to plan |")
            continue
        policy = (
            "not compared"
            if d.policy_error or d.head.violations is None
            else f"{len(d.policy_added)} / {len(d.policy_removed)}"
        )
        cost = _md(cost_summary(d) or "")
        if d.base.inventory is None:
            out.append(f"| {d.stack} | base failed to plan | | | | | {policy} | {cost} |")
            continue
        out.append(
            f"| {d.stack} | {d.count('add')} | {d.count('update')} | {d.count('replace')} "
            f"| {d.count('remove')} | {d.unchanged} | {policy} | {cost} |"
        )
    for d in diffs:
        out += ["", f"### {d.stack}", ""]
        if d.head.inventory is None:
            out += ["The head could not be planned:", "", "```", d.head.error or "", "```"]
            continue
        if d.base.inventory is None:
            out += [
                f"The base ({d.base.label}) could not be planned, so there is nothing to "
                "compare with:",
                "",
                "```",
                d.base.error or "",
                "```",
            ]
        for kind in ORDER:
            group = [c for c in d.changes if c.kind == kind]
            if not group:
                continue
            out += [f"**{_TITLE[kind]}: {len(group)}**", ""]
            folded = len(group) > FOLD_AFTER
            if folded:
                out += [f"<details><summary>{len(group)} resources</summary>", ""]
            for change in group:
                where = f" ({change.region})" if change.region else ""
                protect = (
                    " — protected: the delete will fail"
                    if change.protected and kind in ("remove", "replace")
                    else ""
                )
                out.append(f"- {_code(change.type)} **{_md(change.name)}**{where}{protect}")
                for item in change.changes:
                    line = f"  - {_code(change_line(item))}"
                    note = effect_note(item)
                    if note:
                        line += f" — {'**' if item.effect == 'replace' else '_'}{_md(note)}{'**' if item.effect == 'replace' else '_'}"
                    out.append(line)
            out += ["", "</details>", ""] if folded else [""]
        out += _cost_markdown(d)
        out += _policy_markdown(d)
        out += [f"> {n}" for n in d.notes]
    return "\n".join(out).rstrip() + "\n"


def _cost_markdown(d: StackDiff) -> list[str]:
    cost = cost_summary(d)
    if not cost or d.head.estimate is None:
        return []
    out = [f"**Cost:** {cost}. {per_signal(d.head.estimate)}.", ""]
    out += _category_table(d) + cost_chart(d)
    rows = cost_deltas(d)
    if rows:
        out += ["<details><summary>Cost lines that changed</summary>", ""]
        out += ["| Region | Line item | Base | Head |", "|---|---|--:|--:|"]
        out += [f"| {r} | {_md(i)} | {usd(o)} | {usd(n)} |" for i, r, o, n in rows]
        out += ["", "</details>", ""]
    if d.head.estimate.unpriced:
        names = ", ".join(sorted({_code(u.type) for u in d.head.estimate.unpriced}))
        out += [f"Unpriced (not in the total): {names}", ""]
    return out


def _policy_markdown(d: StackDiff) -> list[str]:
    if d.policy_error:
        return [f"**Policy:** not compared ({_md(d.policy_error)})", ""]
    if d.head.violations is None:
        return []
    out = [f"**Policy findings at head:** {levels(d.head.violations)}", ""]
    out += [f"- new: {_md(describe(v, d.head.inventory))}" for v in d.policy_added]
    out += [f"- resolved: {_md(describe(v, d.base.inventory))}" for v in d.policy_removed]
    if d.policy_added or d.policy_removed:
        out.append("")
    return out


def _base_estimate(d: StackDiff) -> Estimate | None:
    """The base's estimate, unless the base has no resources (a stack new in this change)."""
    if d.base.inventory is None or not d.base.inventory.resources:
        return None
    return d.base.estimate


def _categories(d: StackDiff) -> list[tuple[str, float | None, float]]:
    """(category, base, head) monthly cost for every category either side pays for."""
    head = d.head.estimate
    if head is None:
        return []
    base = _base_estimate(d)
    before = base.by_category() if base else {}
    after = head.by_category()
    return [
        (c, before.get(c, 0.0) if base else None, after.get(c, 0.0))
        for c in CATEGORIES
        if c in before or c in after
    ]


def _category_table(d: StackDiff) -> list[str]:
    rows = _categories(d)
    if not rows:
        return []
    out = ["| Category | Base | Head | Change |", "|---|--:|--:|--:|"]
    for category, old, new in rows:
        change = "" if old is None else _signed(new - old)
        out.append(f"| {category} | {'' if old is None else usd(old)} | {usd(new)} | {change} |")
    return [*out, ""]


def _signed(value: float) -> str:
    return "±$0.00" if abs(value) < 0.005 else ("+" if value > 0 else "") + usd(value)


def cost_chart(d: StackDiff) -> list[str]:
    """The stack's monthly cost by category at base and head side by side, as a mermaid bar
    chart (GitHub renders ```mermaid blocks); only the head's bars for a stack new in the
    change."""
    rows = _categories(d)
    if not rows:
        return []
    labels: list[str] = []
    values: list[float] = []
    for category, old, new in rows:
        if old is not None:
            labels.append(f"{category} base")
            values.append(old)
        labels.append(f"{category} head" if old is not None else category)
        values.append(new)
    low = math.floor(min(0.0, *values))
    high = math.ceil(max(1.0, *values) * 1.1)
    sides = "base and head" if any(old is not None for _, old, _ in rows) else "head"
    return [
        "```mermaid",
        "xychart-beta",
        f'    title "{d.stack}: monthly cost by category, {sides} (USD)"',
        f"    x-axis [{', '.join(json.dumps(label) for label in labels)}]",
        f'    y-axis "USD per month" {low} --> {high}',
        f"    bar [{', '.join(f'{v:.2f}' for v in values)}]",
        "```",
        "",
    ]
