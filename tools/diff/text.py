"""The diff as text, for a terminal and CI logs."""

from __future__ import annotations

from collections.abc import Sequence

from tools.cost import usd
from tools.diff.compare import StackDiff
from tools.diff.describe import (
    ORDER,
    change_line,
    cost_deltas,
    cost_summary,
    describe,
    effect_note,
    headline,
    levels,
    per_signal,
)

_SYMBOL = {"add": "+", "remove": "-", "update": "~", "replace": "+-"}


def render_text(diffs: Sequence[StackDiff]) -> str:
    out: list[str] = []
    for d in diffs:
        out.append(f"stack {d.stack}: {d.base.label} → {d.head.label}")
        if d.head.inventory is None:
            out += ["  the head could not be planned:", _indent(d.head.error or "", 4), ""]
            continue
        if d.base.inventory is None:
            out += [
                "  the base could not be planned, so there is nothing to compare with:",
                _indent(d.base.error or "", 4),
                f"  head: {len(d.head.inventory.resources)} resources",
            ]
        else:
            out.append(f"  {headline(d)}")
        for kind in ORDER:
            for change in (c for c in d.changes if c.kind == kind):
                where = f" ({change.region})" if change.region else ""
                flag = "  REPLACE" if kind == "replace" else ""
                protect = (
                    "  (protected: the delete will fail)"
                    if change.protected and kind in ("remove", "replace")
                    else ""
                )
                out.append(
                    f"  {_SYMBOL[kind]:<2} {change.type} {change.name}{where}{flag}{protect}"
                )
                for item in change.changes:
                    out.append(f"       {change_line(item)}")
                    note = effect_note(item)
                    if note:
                        out.append(f"         {note}")
        cost = cost_summary(d)
        if cost:
            out += ["", f"  cost: {cost}"]
            for item, region, old, new in cost_deltas(d):
                out.append(f"    {region}: {item}: {usd(old)} → {usd(new)}")
            if d.head.estimate is not None:
                out.append(f"    {per_signal(d.head.estimate)}")
        out += _policy_text(d)
        out += [f"  note: {n}" for n in d.notes]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _policy_text(d: StackDiff) -> list[str]:
    if d.policy_error:
        return ["", f"  policy: not compared ({d.policy_error})"]
    if d.head.violations is None:
        return []
    out = ["", "  policy findings:"]
    out += [f"    new:      {describe(v, d.head.inventory)}" for v in d.policy_added]
    out += [f"    resolved: {describe(v, d.base.inventory)}" for v in d.policy_removed]
    if not d.policy_added and not d.policy_removed:
        out.append("    no change")
    out.append(f"    head: {levels(d.head.violations)}")
    return out


def _indent(text: str, width: int) -> str:
    return "\n".join(" " * width + line for line in text.splitlines())
