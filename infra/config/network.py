"""The VPC's settings and each region's address plan: ranges that never overlap.

A region's node, pod, service and control-plane ranges must not overlap one another, nor any
range of another region (the regions share one VPC and the mesh routes pod to pod across
them); the stack checks the second rule (`StackConfig.rules`) with `overlaps`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from app.config_errors import Problem
from infra.config.base import Model, refuse

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# GKE takes exactly a /28 for a private cluster's control plane (masterIpv4CidrBlock).
MASTER_PREFIX = 28


class NetworkSettings(Model):
    flow_log_sampling: float = Field(default=0.5, gt=0, le=1)
    nat_log_filter: Literal["ERRORS_ONLY", "TRANSLATIONS_ONLY", "ALL"] = "ERRORS_ONLY"


class RegionNetwork(Model):
    """Address plan of one region; derived from the region's position unless overridden."""

    nodes_cidr: str
    pods_cidr: str
    services_cidr: str
    master_cidr: str

    @field_validator("nodes_cidr", "pods_cidr", "services_cidr", "master_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            raise refuse(
                str(exc), value, "a network address in CIDR form, e.g. 10.0.0.0/20"
            ) from exc

    @classmethod
    def for_index(cls, index: int) -> RegionNetwork:
        return cls(
            nodes_cidr=f"10.{index}.0.0/20",
            pods_cidr=f"10.{64 + 4 * index}.0.0/14",
            services_cidr=f"10.{128 + index}.0.0/20",
            master_cidr=f"172.16.{index}.0/28",
        )

    def ranges(self) -> dict[str, IPNetwork]:
        """Each range by its key."""
        return {
            "nodesCidr": ipaddress.ip_network(self.nodes_cidr),
            "podsCidr": ipaddress.ip_network(self.pods_cidr),
            "servicesCidr": ipaddress.ip_network(self.services_cidr),
            "masterCidr": ipaddress.ip_network(self.master_cidr),
        }

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        master = ipaddress.ip_network(self.master_cidr)
        if master.prefixlen != MASTER_PREFIX:
            yield Problem(
                "masterCidr", "GKE's control plane takes a /28", self.master_cidr, "a /28 range"
            )
        yield from overlaps(self.ranges().items(), [])


def overlaps(
    ranges: Iterable[tuple[str, IPNetwork]], others: Iterable[tuple[str, IPNetwork]]
) -> Iterator[Problem]:
    """A problem for each range that overlaps an earlier one of ``ranges`` or one of
    ``others`` (named by where they are set)."""
    seen = list(others)
    for key, network in ranges:
        for other_key, other in seen:
            if network.version == other.version and network.overlaps(other):
                yield Problem(
                    key,
                    f"overlaps {other_key} ({other})",
                    str(network),
                    "ranges that share no address with any other range of the stack",
                )
                break
        seen.append((key, network))
