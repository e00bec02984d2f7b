"""Cost rules: cost-allocation labels, allowed regions, and the stack's monthly budget."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from rules.effective import effective_labels, effective_locations
from rules.kit import (
    MANDATORY,
    NotApplicable,
    Resource,
    Rules,
    StackResource,
    schema,
    string_list,
)
from rules.values import as_list, get, is_unknown

RULES = Rules("cost")
GCP_PROVIDER = "pulumi:providers:gcp"
_REGION = re.compile(r"^[a-z]+-[a-z]+\d+$")
_ZONE = re.compile(r"^([a-z]+-[a-z]+\d+)-[a-z]$")
DEFAULT_REGIONS = [
    "us-central1",
    "us-east1",
    "us-east4",
    "us-west1",
    "us-west4",
    "europe-west1",
    "europe-west4",
    "asia-northeast1",
    "asia-southeast1",
]


@RULES.resource(
    "cost-required-labels",
    level=MANDATORY,
    description=(
        "Every resource that takes labels carries the cost-allocation labels, on the "
        "resource or through the provider's defaultLabels."
    ),
    source=(
        "Checkov CKV_GCP_21 (cluster labels); Google Cloud docs, 'Best practices for "
        "labels: cost allocation'."
    ),
    types=lambda token: token.startswith("gcp:"),
    config=schema({"requiredLabels": string_list(["cost-center", "env", "owner"])}),
)
def required_labels(r: Resource) -> Iterator[str]:
    labels = effective_labels(r.type, r.props, r.provider_props)
    if labels is None:
        raise NotApplicable("this resource type takes no labels")
    if is_unknown(labels.values):
        return
    missing = [k for k in r.config["requiredLabels"] if labels.values.get(k) in (None, "")]
    if missing:
        path = labels.field.dotted
        where = (
            f"{path} or the provider's defaultLabels" if labels.field.provider_defaults else path
        )
        yield f"missing cost labels {', '.join(missing)} (set them in {where})"


def _region_of(value: str) -> str | None:
    lowered = value.lower()
    if _REGION.match(lowered):
        return lowered
    zone = _ZONE.match(lowered)
    return zone.group(1) if zone else None


def _locations(r: Resource) -> Iterator[tuple[str, Any]]:
    """(what to call it in a message, value): the effective region, location and zone, then
    each of nodeLocations."""
    for location in effective_locations(r.type, r.props, r.provider_props):
        origin = f" (the provider's {location.provider_key})" if location.provider_key else ""
        yield f"{location.field}{origin}", location.value
    for index, zone in enumerate(as_list(get(r.props, "nodeLocations"))):
        yield f"nodeLocations[{index}]", zone


def _applies_to_regions(token: str) -> bool:
    # BigQuery locations have their own rule (bigquery-allowed-locations).
    return token == GCP_PROVIDER or (
        token.startswith("gcp:") and not token.startswith("gcp:bigquery/")
    )


@RULES.resource(
    "cost-allowed-regions",
    level=MANDATORY,
    description="Resources and providers stay in the allowed regions and multi-regions.",
    source=("Google Cloud docs, 'Resource locations' organization policy (gcp.resourceLocations)."),
    types=_applies_to_regions,
    config=schema(
        {
            "allowedRegions": string_list(DEFAULT_REGIONS),
            "allowedMultiRegions": string_list(["global", "us", "eu"]),
        }
    ),
)
def allowed_regions(r: Resource) -> Iterator[str]:
    regions = {str(x).lower() for x in r.config["allowedRegions"]}
    multi = {str(x).lower() for x in r.config["allowedMultiRegions"]}
    for key, value in _locations(r):
        if not isinstance(value, str) or is_unknown(value) or not value:
            continue
        region = _region_of(value)
        if region is not None and region not in regions:
            yield f"{key} {value!r} is outside the allowed regions ({', '.join(sorted(regions))})"
        elif region is None and value.lower() not in multi:
            yield f"{key} {value!r} is not an allowed multi-region ({', '.join(sorted(multi))})"


@RULES.stack(
    "cost-monthly-budget",
    level=MANDATORY,
    description=(
        "The stack's estimated monthly cost stays within its budget (both passed as "
        "policy config; skipped when absent)."
    ),
    source="FinOps Foundation, 'Budget management'.",
    config=schema(
        {
            "estimatedMonthlyUsd": {"type": "number", "minimum": 0},
            "budgetMonthlyUsd": {"type": "number", "minimum": 0},
        }
    ),
)
def monthly_budget(
    resources: list[StackResource], config: Mapping[str, Any]
) -> Iterator[tuple[str | None, str]]:
    estimate, budget = config.get("estimatedMonthlyUsd"), config.get("budgetMonthlyUsd")
    if not isinstance(estimate, int | float) or not isinstance(budget, int | float):
        raise NotApplicable("no estimatedMonthlyUsd and budgetMonthlyUsd in the policy config")
    if estimate > budget:
        stack = next((r.urn for r in resources if r.type == "pulumi:pulumi:Stack"), None)
        yield stack, f"estimated ${estimate:,.2f}/month exceeds the budget of ${budget:,.2f}/month"
