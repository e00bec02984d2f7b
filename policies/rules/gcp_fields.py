"""Where Google Cloud resource types keep their labels and which location inputs their provider
fills in: the table generate_gcp_fields.py derives from the pulumi-gcp SDK (rules/gcp_fields.json)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TABLE: dict[str, Any] = json.loads((Path(__file__).parent / "gcp_fields.json").read_text())
SOURCE: str = _TABLE["source"]


@dataclass(frozen=True)
class LabelField:
    path: tuple[str, ...]  # from the resource's inputs to its label map
    provider_defaults: bool  # the provider's defaultLabels reach it (the type has effectiveLabels)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


LABEL_FIELDS: dict[str, LabelField] = {
    token: LabelField(tuple(entry["path"].split(".")), bool(entry["providerDefaults"]))
    for token, entry in _TABLE["labels"].items()
}
# type token → {input field: the provider config key that fills it when unset}
PROVIDER_LOCATIONS: dict[str, Mapping[str, str]] = _TABLE["providerLocations"]


def label_field(token: str, props: Mapping[str, Any]) -> LabelField | None:
    """Where a resource keeps its labels; None for types that take none."""
    if token in LABEL_FIELDS:
        return LABEL_FIELDS[token]
    if token.startswith("gcp:") and isinstance(props.get("labels"), dict):
        return LabelField(("labels",), True)  # a type newer than the table
    return None
