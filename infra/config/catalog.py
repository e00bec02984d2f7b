"""The dated machine and GPU catalogue (`infra/catalog.yaml`): zones, GPUs per zone, shapes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

CATALOG_PATH = Path(__file__).resolve().parent.parent / "catalog.yaml"


@dataclass(frozen=True)
class MachineShape:
    """A general-purpose machine type: what a node of it has before GKE's reservations."""

    vcpus: float
    memory_gib: float


@dataclass(frozen=True)
class Catalog:
    """The dated GPU and machine catalogue (`infra/catalog.yaml`)."""

    as_of: str
    source: str
    zones: Mapping[str, tuple[str, ...]]
    gpu_zones: Mapping[str, Mapping[str, tuple[str, ...]]]
    machines: Mapping[str, Mapping[str, Any]]
    system_machines: Mapping[str, MachineShape]

    def gpus_in(self, region: str) -> Mapping[str, tuple[str, ...]]:
        return self.gpu_zones.get(region, {})


@cache
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    raw = yaml.safe_load(path.read_text())
    regions = raw["regions"]
    return Catalog(
        as_of=str(raw["as_of"]),
        source=raw["source"],
        zones={r: tuple(v["zones"]) for r, v in regions.items()},
        gpu_zones={
            r: {g: tuple(z) for g, z in (v.get("gpus") or {}).items()} for r, v in regions.items()
        },
        machines=raw["machines"],
        system_machines={
            name: MachineShape(float(shape["vcpus"]), float(shape["memory_gib"]))
            for name, shape in raw["system_machines"].items()
        },
    )
