"""The inventory: every resource a plan declares, as the Pulumi engine and a policy pack see it."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# "us-central1" or a zone of it ("us-central1-a"); multi-regions such as "US" are global.
_REGION_RE = re.compile(r"^([a-z]+-[a-z]+\d+)(-[a-z])?$")


def provider_urn(reference: str | None) -> str | None:
    """The URN in a provider reference (`<urn>::<id>`)."""
    return reference.rsplit("::", 1)[0] if reference else None


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    parent: str | None
    provider: str | None
    inputs: dict[str, Any]
    # Input paths (dotted) whose values are secrets: masked in any rendering.
    secrets: tuple[str, ...] = ()
    custom: bool = True
    # Resource options as the engine receives them (protect, ignoreChanges, dependsOn ...).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def own_region(self) -> str | None:
        """The region named by the resource's own inputs (region, location or zone)."""
        for key in ("region", "location", "zone"):
            value = self.inputs.get(key)
            if isinstance(value, str) and (match := _REGION_RE.match(value)):
                return match.group(1)
        return None


@dataclass
class Inventory:
    stack: str
    project: str
    resources: list[Resource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_token: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, type_token: str, name: str) -> Resource:
        """The one resource of that type and name; KeyError naming what exists otherwise."""
        for resource in self.resources:
            if resource.type == type_token and resource.name == name:
                return resource
        names = sorted(r.name for r in self.of_type(type_token))
        raise KeyError(f"no {type_token} named {name!r}; the plan has {names}")

    def by_urn(self) -> dict[str, Resource]:
        return {r.urn: r for r in self.resources}

    def regions(self) -> dict[str, str | None]:
        """Each resource's region by URN: its own, else its parent's, else its provider's."""
        index = self.by_urn()
        found: dict[str, str | None] = {}

        def resolve(resource: Resource, depth: int = 0) -> str | None:
            if resource.urn not in found:
                # A provider's region is only a default for its resources, not where it lives.
                is_provider = resource.type.startswith("pulumi:providers:")
                region = None if is_provider else resource.own_region
                refs = (resource.parent, provider_urn(resource.provider))
                for ref in refs:
                    if region is None and ref in index and depth < 64:
                        region = resolve(index[ref], depth + 1)
                found[resource.urn] = region
            return found[resource.urn]

        for resource in self.resources:
            resolve(resource)
        return found

    def to_json(self) -> dict[str, Any]:
        resources = []
        for r in self.resources:
            row = asdict(r)
            row["secrets"] = list(r.secrets)
            resources.append(row)
        return {
            "stack": self.stack,
            "project": self.project,
            "resources": resources,
            "outputs": self.outputs,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inventory:
        resources = [
            Resource(**{**row, "secrets": tuple(row.get("secrets", ()))})
            for row in data["resources"]
        ]
        return cls(data["stack"], data["project"], resources, data.get("outputs", {}))

    def summary(self) -> str:
        """A table of resource counts by type and by region, for a terminal."""
        by_type = Counter(r.type for r in self.resources)
        regions = self.regions()
        # Components group resources; only custom resources exist somewhere in the cloud.
        by_region = Counter(regions[r.urn] or "global" for r in self.resources if r.custom)
        width = max((len(t) for t in by_type), default=4)
        components = sum(not r.custom for r in self.resources)
        lines = [
            f"stack {self.stack} of {self.project}: {len(self.resources)} resources"
            f" ({components} components)",
            "",
        ]
        lines.append(f"{'type':<{width}}  count")
        lines += [f"{t:<{width}}  {n:>5}" for t, n in sorted(by_type.items())]
        lines += ["", f"{'region (custom resources)':<{width}}  count"]
        lines += [f"{r:<{width}}  {n:>5}" for r, n in sorted(by_region.items())]
        if self.outputs:
            lines += ["", "outputs: " + ", ".join(sorted(self.outputs))]
        return "\n".join(lines)
