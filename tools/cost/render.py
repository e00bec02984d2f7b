"""The estimate for people: a text table and a Markdown table, line items grouped by category
with subtotals, then the subtotals by region, the total, the cost per signal and the budget."""

from __future__ import annotations

import math

from tools.cost.estimate import CATEGORIES, Estimate

COLUMNS = ("region", "line item", "quantity", "unit price", "monthly")


def usd(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def unit_usd(value: float) -> str:
    sign, value = ("-", -value) if value < 0 else ("", value)
    text = f"{value:,.6f}".rstrip("0").rstrip(".") if value < 1 else f"{value:,.4f}"
    return f"{sign}${text}"


def _header(e: Estimate) -> str:
    return (
        f"Cost estimate for stack {e.stack}: {usd(e.total)}/month "
        f"(list prices as of {e.as_of}, {e.hours_per_month:g} h/month, {e.currency})"
    )


def _per_signal(e: Estimate) -> str:
    return f"Cost per trading signal at {e.signals_per_month:,} signals/month: ${e.per_signal:,.4f}"


def _budget(e: Estimate) -> str:
    if e.budget_usd is None:
        return ""
    share = e.total / e.budget_usd if e.budget_usd else math.inf
    state = "OVER BUDGET" if e.over_budget else "within budget"
    return f"Budget: {usd(e.budget_usd)}/month, {share:.0%} used ({state})"


def _rows(e: Estimate) -> dict[str, list[tuple[str, str, str, str, str]]]:
    """Each category's rows (region, item, quantity, unit price, monthly), in category order."""
    return {
        category: [
            (
                line.region,
                line.item,
                f"{line.quantity:,.2f} {line.unit}",
                unit_usd(line.unit_usd),
                usd(line.monthly_usd),
            )
            for line in e.in_category(category)
        ]
        for category in e.by_category()
    }


def render_text(e: Estimate) -> str:
    by_category = e.by_category()
    rows = _rows(e)
    subtotals = [f"subtotal {c}" for c in by_category] + [f"subtotal {r}" for r in e.by_region()]
    every = [COLUMNS, *(row for group in rows.values() for row in group)]
    widths = [max(len(row[i]) for row in every) for i in range(5)]
    widths[1] = max(widths[1], *(len(s) for s in subtotals), len("total"))

    def fmt(row: tuple[str, ...]) -> str:
        return (
            f"  {row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  "
            f"{row[3]:>{widths[3]}}  {row[4]:>{widths[4]}}"
        ).rstrip()

    out = [_header(e), "", fmt(COLUMNS)]
    for category, total in by_category.items():
        out += ["", f"{category}: {CATEGORIES[category]}"]
        out += [fmt(row) for row in rows[category]]
        out.append(fmt(("", f"subtotal {category}", "", "", usd(total))))
    out.append("")
    out += [fmt(("", f"subtotal {r}", "", "", usd(v))) for r, v in e.by_region().items()]
    out += [fmt(("", "total", "", "", usd(e.total))), "", _per_signal(e)]
    if e.budget_usd is not None:
        out.append(_budget(e))
    out += _unpriced_and_free(e, markdown=False)
    return "\n".join(out)


def render_markdown(e: Estimate) -> str:
    out = [f"**{_header(e)}**", "", _per_signal(e) + "  ", _budget(e), ""]
    out += [
        "| Category | Region | Line item | Quantity | Unit price | Monthly |",
        "|---|---|---|--:|--:|--:|",
    ]
    rows = _rows(e)
    for category, total in e.by_category().items():
        out += [f"| {category} | {' | '.join(_md(c) for c in row)} |" for row in rows[category]]
        out.append(f"| **{category}** | | **subtotal** | | | **{usd(total)}** |")
    out.append(f"| | | **total** | | | **{usd(e.total)}** |")
    regions = ", ".join(f"{r} {usd(v)}" for r, v in e.by_region().items())
    out += ["", f"By region: {regions}."]
    out += _unpriced_and_free(e, markdown=True)
    return "\n".join(out)


def _unpriced_and_free(e: Estimate, markdown: bool) -> list[str]:
    out: list[str] = []
    if e.unpriced:
        out += ["", f"Unpriced, not in the total ({len(e.unpriced)}):"]
        bullet = "- " if markdown else "  "
        out += [f"{bullet}{_code(u.type, markdown)} {u.name}: {u.reason}" for u in e.unpriced]
    if e.free:
        total_free = sum(f.count for f in e.free)
        out += [
            "",
            f"Free or priced in a usage line: {total_free} resources of {len(e.free)} types",
        ]
        if not markdown:
            out += [f"  {f.type} x{f.count}: {f.reason}" for f in e.free]
    return out


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str, markdown: bool) -> str:
    return f"`{text}`" if markdown else text
