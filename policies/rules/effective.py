"""Effective values: what a Google Cloud resource ends up with once its provider fills in what the
program left unset (the provider's `defaultLabels`, `region` and `zone`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rules.gcp_fields import PROVIDER_LOCATIONS, LabelField, label_field
from rules.values import UNKNOWN, as_dict, as_str_map, get, is_unknown


@dataclass(frozen=True)
class Labels:
    field: LabelField
    values: Any  # the merged labels (dict), or UNKNOWN when any part is unknown


def effective_labels(
    token: str, props: Mapping[str, Any], provider_props: Mapping[str, Any]
) -> Labels | None:
    """The SDK's `effectiveLabels`: the provider's defaultLabels, overridden by the resource's own
    labels (defaults only where the type has effectiveLabels); None for types without labels."""
    field = label_field(token, props)
    if field is None:
        return None
    own = get(dict(props), *field.path)
    defaults = get(dict(provider_props), "defaultLabels") if field.provider_defaults else None
    if is_unknown(own) or is_unknown(defaults):
        return Labels(field, UNKNOWN)
    return Labels(field, {**as_str_map(defaults), **as_dict(own)})


@dataclass(frozen=True)
class Location:
    field: str  # the input (region, location, zone)
    value: Any
    provider_key: str | None  # set when the value is the provider's default for that input


def effective_locations(
    token: str, props: Mapping[str, Any], provider_props: Mapping[str, Any]
) -> Iterator[Location]:
    """The resource's region, location and zone inputs: each its own value, else the provider's
    `region`/`zone` where the provider fills that input in."""
    defaults = PROVIDER_LOCATIONS.get(token, {})
    for field in ("region", "location", "zone"):
        value = get(dict(props), field)
        if value is None and field in defaults:
            key = defaults[field]
            value = get(dict(provider_props), key)
            if value is not None:
                yield Location(field, value, key)
            continue
        if value is not None:
            yield Location(field, value, None)
