"""The inventory: every resource a plan declares, as the Pulumi engine and a policy pack see it.

Values a preview cannot know yet (a provider computes them) are the string `UNKNOWN`; secret
values are the string `SECRET`, their paths kept in `Resource.secrets`. Both markers are what
every JSON file and every line the engine writes shows.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# A value known only after the update (Pulumi's preview shows "(known after apply)").
UNKNOWN = "[unknown]"
# A secret value: masked wherever the engine writes or prints; its path is kept.
SECRET = "[secret]"

# "us-central1" or a zone of it ("us-central1-a"); multi-regions such as "US" are global.
_REGION_RE = re.compile(r"^([a-z]+-[a-z]+\d+)(-[a-z])?$")
# The inputs that place a resource, in the order a resource's own region is read from them.
PLACEMENT_INPUTS = ("region", "location", "zone")


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
    # Input paths (dotted) whose values are secrets: their values are SECRET.
    secrets: tuple[str, ...] = ()
    custom: bool = True
    # Resource options as the engine receives them (protect, ignoreChanges, dependsOn ...).
    options: dict[str, Any] = field(default_factory=dict)
    # Secret path -> a keyed digest of its value, so two plans made with the same key (a diff's
    # two sides) can tell a changed secret from an unchanged one without either value.
    secret_digests: dict[str, str] = field(default_factory=dict)

    @property
    def own_region(self) -> str | None:
        """The region named by the resource's own inputs (region, location or zone)."""
        return region_of(self.inputs)

    @property
    def is_provider(self) -> bool:
        return self.type.startswith("pulumi:providers:")


def region_of(inputs: dict[str, Any]) -> str | None:
    """The region that inputs (a resource's, or a provider's defaults) name, if any."""
    for key in PLACEMENT_INPUTS:
        value = inputs.get(key)
        # Locations are case-insensitive: Cloud Storage examples write "ASIA-SOUTH1".
        if isinstance(value, str) and (match := _REGION_RE.match(value.lower())):
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

    def regions(self, takes_default: Callable[[str], bool] | None = None) -> dict[str, str | None]:
        """Each resource's effective region by URN: its own inputs' (region, location, zone),
        else its provider's default region when the resource takes one, else its parent's,
        else its provider's.

        `takes_default(type)` says whether a type left without a region input is placed in its
        provider's default region (the SDK declares a `region` or `zone` input for it); by
        default the SDK installed here is asked (tools.sdk_types).
        """
        if takes_default is None:
            from tools.sdk_types import takes_default_region

            takes_default = takes_default_region
        index = self.by_urn()
        found: dict[str, str | None] = {}

        def provider_default(resource: Resource) -> str | None:
            provider = index.get(provider_urn(resource.provider) or "")
            if provider is None or not takes_default(resource.type):
                return None
            return region_of(provider.inputs)

        def resolve(resource: Resource, depth: int = 0) -> str | None:
            if resource.urn not in found:
                # A provider's region is only a default for its resources, not where it lives.
                region = None if resource.is_provider else resource.own_region
                if region is None and resource.custom and not resource.is_provider:
                    region = provider_default(resource)
                refs = [resource.parent, provider_urn(resource.provider)]
                if resource.is_provider:
                    # A provider built from a resource's outputs (a Kubernetes provider from a
                    # cluster's endpoint) works where that resource is: so do its resources.
                    deps = resource.options.get("propertyDependencies") or {}
                    refs += sorted({urn for urns in deps.values() for urn in urns})
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
            row["secretDigests"] = row.pop("secret_digests")
            resources.append(row)
        return {
            "stack": self.stack,
            "project": self.project,
            "resources": resources,
            "outputs": self.outputs,
        }

    def dumps(self) -> str:
        """The inventory as the JSON file `--json` writes."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.dumps())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inventory:
        resources = []
        for row in data["resources"]:
            fields = {k: v for k, v in row.items() if k != "secretDigests"}
            fields["secrets"] = tuple(row.get("secrets", ()))
            fields["secret_digests"] = dict(row.get("secretDigests") or {})
            resources.append(Resource(**fields))
        return cls(data["stack"], data["project"], resources, data.get("outputs", {}))

    def summary(self) -> str:
        """A table of resource counts by type and by effective region, for a terminal."""
        by_type = Counter(r.type for r in self.resources)
        regions = self.regions()
        # Components group resources and providers configure them; only the other custom
        # resources exist somewhere in the cloud.
        by_region = Counter(
            regions[r.urn] or "global" for r in self.resources if r.custom and not r.is_provider
        )
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
