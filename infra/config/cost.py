"""The usage assumptions `python -m tools cost` prices the plan with."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pydantic import Field, field_validator

from app.config_errors import Problem
from infra.config.base import Model

POOL_USAGE_KEY_RE = re.compile(r"^(?:([a-z]+-[a-z]+\d+)/)?([a-z][a-z0-9-]{0,20})$")
# Usage past any stack's (an exbibyte, a quadrillion signals a month) would only print a bill
# of 300-digit figures.
MAX_GIB = 2**30
MAX_TIB = 2**20
MAX_SIGNALS_PER_MONTH = 10**15


@dataclass(frozen=True)
class PoolBounds:
    """What one region's node pool can average: the nodes it always runs (and why), and its
    most nodes, both across its zones."""

    least: int
    most: int
    why: str


class CostSettings(Model):
    """Usage assumptions `python -m tools cost` prices the plan with: the plan says what
    exists, these say how much of it runs and how much data flows through it."""

    # Share of a spot pool's node-hours that get spot capacity; the rest runs on-demand in the
    # fallback pool (the spot-first ComputeClass targets 95%).
    spot_share: float = Field(default=0.95, ge=0, le=1)
    # Where an autoscaled pool averages between its min and max nodes (0 = always at min),
    # for pools without an averageNodes entry.
    utilisation: float = Field(default=0.25, ge=0, le=1)
    # Average nodes of a pool across its zones, by pool name ("l4-spot") or for one region's
    # pool ("europe-west4/l4-spot", which wins over the plain name).
    average_nodes: dict[str, float] = Field(default_factory=dict)
    signals_per_month: int = Field(default=100_000, ge=1, le=MAX_SIGNALS_PER_MONTH)
    bigquery_storage_gib: float = Field(default=100, ge=0, le=MAX_GIB)
    bigquery_scanned_tib_per_month: float = Field(default=1, ge=0, le=MAX_TIB)
    pubsub_gib_per_month: float = Field(default=50, ge=0, le=MAX_GIB)  # published + delivered
    nat_gib_per_month: float = Field(default=50, ge=0, le=MAX_GIB)  # through each region's NAT
    logging_gib_per_month: float = Field(default=50, ge=0, le=MAX_GIB)
    bucket_storage_gib: float = Field(default=10, ge=0, le=MAX_GIB)  # in each bucket
    artifact_storage_gib: float = Field(default=20, ge=0, le=MAX_GIB)  # in each registry
    # Whether this stack's zonal clusters get GKE's free-tier credit: one per billing account,
    # so false when another stack's zonal or Autopilot cluster on the same account takes it.
    gke_free_tier: bool = True

    @field_validator("average_nodes")
    @classmethod
    def _average_nodes(cls, value: dict[str, float]) -> dict[str, float]:
        for key, nodes in value.items():
            if not POOL_USAGE_KEY_RE.match(key):
                raise ValueError(f"{key!r} is not a pool name or region/pool")
            if nodes < 0:
                raise ValueError(f"average nodes of {key} must be >= 0")
        return value

    def pool_rules(
        self, pools_by_region: Mapping[str, Mapping[str, PoolBounds]]
    ) -> Iterator[Problem]:
        """averageNodes entries name a pool (and region) the stack deploys, and stay between
        what the pool always runs and its most nodes in every region they apply to: an
        average below the floor would price capacity the stack cannot shed."""
        for key, nodes in self.average_nodes.items():
            match = POOL_USAGE_KEY_RE.match(key)
            if match is None:
                continue
            region, pool = match.groups()
            if region and region not in pools_by_region:
                yield Problem(
                    f"averageNodes.{key}",
                    "region the stack does not deploy",
                    key,
                    ", ".join(pools_by_region),
                )
                continue
            regions = [region] if region else list(pools_by_region)
            bounds = {r: pools_by_region[r][pool] for r in regions if pool in pools_by_region[r]}
            if not bounds:
                names = sorted({name for r in regions for name in pools_by_region[r]})
                yield Problem(f"averageNodes.{key}", "no such node pool", key, ", ".join(names))
                continue
            most = min(b.most for b in bounds.values())
            floor_region, floor = max(bounds.items(), key=lambda item: item[1].least)
            if nodes > most:
                yield Problem(
                    f"averageNodes.{key}",
                    f"more than the pool's most nodes ({most})",
                    nodes,
                    f"<= {most}",
                )
            elif nodes < floor.least:
                yield Problem(
                    f"averageNodes.{key}",
                    f"fewer than the pool always runs in {floor_region} ({floor.least}:"
                    f" {floor.why})",
                    nodes,
                    f">= {floor.least}",
                )
