"""Kubernetes resource requests and limits: names and quantities as the API server parses them.

The values are copied verbatim into Deployments and Helm values, so a quantity the API server
would refuse (`8Gx`, `lots`) or a negative one (`-1Gi`) is refused here, and each request must
fit its limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import field_validator

from app.config_errors import Problem, checked
from infra.config.base import Model

# Kubernetes' quantity grammar (k8s.io/apimachinery resource.Quantity): a signed decimal and a
# binary-SI suffix, a decimal-SI suffix or a decimal exponent.
QUANTITY_RE = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE]|[eE][+-]?\d+)?$"
)
_SCALE = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
QUANTITY_ALLOWED = "a number with an optional suffix m, k, M, G, Ki, Mi, Gi, ... (e.g. 500m, 2Gi)"
# Resource names a container may request: the standard ones, hugepages, extended resources.
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
RESOURCE_NAME_RE = re.compile(
    r"^(?:cpu|memory|ephemeral-storage|hugepages-\d+(?:Ki|Mi|Gi)"
    r"|[a-z0-9]([a-z0-9.-]*[a-z0-9])?/[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)$"
)
GIB = Decimal(2) ** 30
# What every pod the program runs must say: the scheduler places it by its requests, the
# kubelet kills it by its memory limit (and the policy pack requires both).
REQUIRED_RESOURCES = (("requests", ("cpu", "memory")), ("limits", ("memory",)))


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity as a number (cores, bytes, devices); ValueError if it is none."""
    match = QUANTITY_RE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
        if suffix[:1] in ("e", "E"):
            return number * Decimal(10) ** int(suffix[1:])
        return number * _SCALE[suffix]
    except (InvalidOperation, OverflowError) as exc:
        raise ValueError(f"{text!r} is out of range") from exc


class Resources(Model):
    """A container's `resources`: requests and limits by resource name."""

    requests: dict[str, str]
    limits: dict[str, str]

    @field_validator("requests", "limits", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        # YAML reads `cpu: 1` as a number; Kubernetes reads it as the quantity "1".
        if isinstance(value, Mapping):
            return {
                k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for k, v in value.items()
            }
        return value

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        problems = list(_quantity_problems(value))
        return checked(value, problems)

    def quantity(self, kind: str, name: str) -> Decimal | None:
        """``kind`` ("requests" or "limits") of resource ``name``, parsed; None if unset."""
        text = (self.requests if kind == "requests" else self.limits).get(name)
        return None if text is None else parse_quantity(text)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        for name, request in self.requests.items():
            limit = self.limits.get(name)
            if limit is not None and parse_quantity(request) > parse_quantity(limit):
                yield Problem(
                    f"requests.{name}",
                    f"request above its limit ({limit})",
                    request,
                    f"<= limits.{name}",
                )


def _quantity_problems(values: Mapping[str, str]) -> Iterator[Problem]:
    for name, text in values.items():
        if not RESOURCE_NAME_RE.match(name):
            yield Problem(
                name,
                "not a Kubernetes resource name",
                name,
                "cpu, memory, ephemeral-storage, hugepages-<size>, or <domain>/<name>",
            )
            continue
        try:
            quantity = parse_quantity(text)
        except ValueError:
            yield Problem(name, "not a Kubernetes quantity", text, QUANTITY_ALLOWED)
            continue
        if quantity < 0:
            yield Problem(name, "a negative quantity", text, ">= 0")
        elif "/" in name and quantity != quantity.to_integral_value():
            yield Problem(name, "extended resources are whole units", text, "an integer")


def missing_resources(resources: Resources) -> list[tuple[str, str]]:
    """(kind, name) of each REQUIRED_RESOURCES entry ``resources`` leaves out."""
    return [
        (kind, name)
        for kind, names in REQUIRED_RESOURCES
        for name in names
        if name not in getattr(resources, kind)
    ]


def resource_gaps(resources: Resources, path: str) -> Iterator[Problem]:
    """A problem per required request or limit ``resources`` (at ``path``) leaves out."""
    for kind, name in missing_resources(resources):
        needed = dict(REQUIRED_RESOURCES)[kind]
        yield Problem(
            f"{path}.{kind}",
            f"{kind} lack {name}",
            dict(getattr(resources, kind)),
            f"{', '.join(needed)} set",
        )
