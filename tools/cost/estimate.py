"""The estimate's data: line items, each in a category, what is unpriced or free, and totals.

A line item is one billed (or credited) quantity at one unit price; its category says which
part of the platform it pays for, in the order `CATEGORIES` lists them. The JSON form
(`Estimate.to_json`) is what `--json` writes and other tools read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from pydantic.alias_generators import to_camel

Category = Literal[
    "compute", "GPUs", "Redis", "BigQuery", "Pub/Sub", "networking", "observability", "storage"
]
# What each category pays for, in the order the estimate shows them.
CATEGORIES: dict[Category, str] = {
    "compute": "GKE clusters (fees and their credits) and CPU node pools",
    "GPUs": "GPU node pools: the GPUs, the machines they come with and their disks",
    "Redis": "Memorystore Redis Cluster nodes",
    "BigQuery": "warehouse storage and queries",
    "Pub/Sub": "message throughput",
    "networking": "Cloud NAT and external addresses",
    "observability": "log ingestion and alert conditions",
    "storage": "Cloud Storage buckets, Artifact Registry and KMS keys",
}
K = TypeVar("K")


@dataclass(frozen=True)
class LineItem:
    item: str  # what is billed, for a reader
    category: Category
    region: str  # a region, a multi-region (US) or "global"
    quantity: float
    unit: str
    unit_usd: float  # negative for a credit
    monthly_usd: float
    price_id: str  # the pricing.yaml item (or credit)
    source: str  # the pricing page
    resource: str | None = None  # URN of the resource billed, None for stack usage lines
    basis: str = ""  # the usage assumption behind the quantity


@dataclass(frozen=True)
class UnpricedResource:
    type: str
    name: str
    urn: str
    reason: str


@dataclass(frozen=True)
class FreeType:
    type: str
    count: int
    reason: str


@dataclass
class Estimate:
    stack: str
    as_of: str
    currency: str
    hours_per_month: float
    signals_per_month: int
    budget_usd: float | None
    lines: list[LineItem] = field(default_factory=list)
    unpriced: list[UnpricedResource] = field(default_factory=list)
    free: list[FreeType] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(line.monthly_usd for line in self.lines)

    @property
    def per_signal(self) -> float:
        return self.total / self.signals_per_month

    @property
    def over_budget(self) -> bool:
        return self.budget_usd is not None and self.total > self.budget_usd

    def by_region(self) -> dict[str, float]:
        return _totals(self.lines, lambda line: line.region, sorted)

    def by_category(self) -> dict[Category, float]:
        """Monthly cost of each category that has a line, in `CATEGORIES` order."""
        return _totals(self.lines, lambda line: line.category, _in_category_order)

    def in_category(self, category: Category) -> list[LineItem]:
        """A category's lines, by region and item."""
        return sorted(
            (line for line in self.lines if line.category == category),
            key=lambda line: (line.region, line.item),
        )

    def by_price(self) -> dict[tuple[str, str], float]:
        """Monthly cost by (line item, region): what a cost delta compares."""
        totals: dict[tuple[str, str], float] = {}
        for line in self.lines:
            key = (line.item, line.region)
            totals[key] = totals.get(key, 0.0) + line.monthly_usd
        return totals

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "asOf": self.as_of,
            "currency": self.currency,
            "hoursPerMonth": self.hours_per_month,
            "totalMonthlyUsd": round(self.total, 2),
            "signalsPerMonth": self.signals_per_month,
            "perSignalUsd": round(self.per_signal, 6),
            "budgetMonthlyUsd": self.budget_usd,
            "byCategory": {k: round(v, 2) for k, v in self.by_category().items()},
            "byRegion": {k: round(v, 2) for k, v in self.by_region().items()},
            "lines": [_camel(asdict(line)) for line in self.lines],
            "unpriced": [asdict(u) for u in self.unpriced],
            "free": [asdict(f) for f in self.free],
        }


def _totals(
    lines: Iterable[LineItem],
    key: Callable[[LineItem], K],
    order: Callable[[Iterable[K]], Iterable[K]],
) -> dict[K, float]:
    totals: dict[K, float] = {}
    for line in lines:
        totals[key(line)] = totals.get(key(line), 0.0) + line.monthly_usd
    return {k: totals[k] for k in order(totals)}


def _in_category_order(categories: Iterable[Category]) -> list[Category]:
    present = set(categories)
    return [c for c in CATEGORIES if c in present]


def _camel(row: dict[str, Any]) -> dict[str, Any]:
    return {to_camel(k): v for k, v in row.items()}
