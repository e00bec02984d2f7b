"""pricing.yaml: its schema and loader. Dated list prices and credits, each naming its page.

A region or SKU missing from the file is unpriceable (the estimate lists it, never counts it as
zero). Credits are amounts Google takes off the bill (GKE's free tier); the pricers apply them as
negative line items of their own.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field

from app.config_errors import CamelConfigModel, ConfigError, load_model, read_config_file

PRICING_PATH = Path(__file__).with_name("pricing.yaml")
SOURCE_PATTERN = r"^https://cloud\.google\.com/"
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


class PricingError(ConfigError):
    """pricing.yaml is malformed: one line per problem, naming the key (the repository's one
    config formatter)."""


class Unpriceable(Exception):
    """This resource (or a part of it) has no price: it goes to the unpriced list."""


class _Model(CamelConfigModel):
    """camelCase keys; unknown keys and non-finite numbers refused."""


class PriceItem(_Model):
    unit: str
    source: str = Field(pattern=SOURCE_PATTERN)
    # When its page was read, if later than the file's snapshot date.
    as_of: str | None = Field(default=None, pattern=DATE_PATTERN)
    prices: dict[str, float]
    free_quantity: float = Field(default=0, ge=0)
    note: str = ""


class Credit(_Model):
    """An amount off the bill each month, with what it applies to."""

    amount: float = Field(gt=0)
    unit: str
    source: str = Field(pattern=SOURCE_PATTERN)
    as_of: str = Field(pattern=DATE_PATTERN)
    applies_to: str
    note: str = ""


class MachineShape(_Model):
    family: str
    vcpus: int = Field(gt=0)
    memory_gib: float = Field(gt=0)
    gpu: str | None = None
    gpus: int = Field(default=0, ge=0)


class MachineTypes(_Model):
    source: str = Field(pattern=SOURCE_PATTERN)
    shapes: dict[str, MachineShape]


class Pricing(_Model):
    as_of: str = Field(pattern=DATE_PATTERN)
    currency: str
    hours_per_month: float = Field(gt=0)
    machine_types: MachineTypes
    items: dict[str, PriceItem]
    credits: dict[str, Credit] = Field(default_factory=dict)

    def item(self, item_id: str) -> PriceItem:
        try:
            return self.items[item_id]
        except KeyError:
            raise Unpriceable(f"pricing.yaml has no {item_id}") from None

    def price(self, item_id: str, location: str | None) -> float:
        """The unit price at a location (region or multi-region), else the global price."""
        item = self.item(item_id)
        for key in _location_keys(location):
            if key in item.prices:
                return item.prices[key]
        where = location or "an unknown location"
        raise Unpriceable(f"pricing.yaml has no {item_id} price for {where}")

    def credit(self, credit_id: str) -> Credit:
        try:
            return self.credits[credit_id]
        except KeyError:
            raise Unpriceable(f"pricing.yaml has no credit {credit_id}") from None

    def shape(self, machine_type: str) -> MachineShape:
        shape = self.machine_types.shapes.get(machine_type)
        if shape is None:
            raise Unpriceable(f"machine type {machine_type} is not in pricing.yaml")
        return shape


def _location_keys(location: str | None) -> list[str]:
    if not location:
        return ["global"]
    return [location, location.upper(), location.lower(), "global"]


@cache
def load_pricing(path: Path = PRICING_PATH) -> Pricing:
    try:
        return load_model(Pricing, str(path), read_config_file(Path(path)))
    except ConfigError as exc:
        raise PricingError(exc.source, exc.problems) from None
