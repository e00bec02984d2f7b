"""Unknown-input check: every key a program passes must be one the provider knows.

The SDK's mocks accept any dictionary, so a misspelled nested key (`enable_private_node`)
would reach the inventory silently and fail, or be ignored, only against the real provider.
This walks each resource's recorded inputs against the SDK's own input types (the resource's
`*Args` class and the nested `*Args` types its annotations name), at any depth, and reports
every key the provider does not declare with its path and the closest valid name. Custom
resources of CRDs (no SDK class) are checked against the typed models in `tools.crd_models`.
"""

from __future__ import annotations

import collections.abc
import difflib
import re
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from pulumi import _types as sdk_types

from tools.inventory import Inventory, Resource
from tools.sdk_types import args_class, input_fields

__all__ = ["UnknownInput", "args_class", "check_inputs", "closest", "unchecked_types"]

# Inputs the SDK itself adds to every provider registration.
PROVIDER_PLUMBING = {"version", "pluginDownloadURL"}


@dataclass(frozen=True)
class UnknownInput:
    resource: Resource
    path: str
    suggestion: str | None
    reason: str = "unknown input"

    def __str__(self) -> str:
        hint = f"; did you mean {self.suggestion!r}?" if self.suggestion else ""
        return f"{self.resource.type} {self.resource.name!r}: {self.path}: {self.reason}{hint}"


# A node of an input type tree: an object with known fields, a list, a map, or a leaf.
@dataclass(frozen=True)
class Shape:
    kind: str  # "object" | "list" | "map" | "any"
    fields: typing.Mapping[str, Any] | None = None  # wire name -> annotated type (objects)
    item: Any = None  # element / value annotation (lists and maps)


ANY = Shape("any")


def check_inputs(inventory: Inventory) -> list[UnknownInput]:
    """Every unknown key in the inventory's custom resources."""
    problems: list[UnknownInput] = []
    for resource in inventory.resources:
        if not resource.custom:
            continue
        args_cls = args_class(resource.type)
        if args_cls is not None:
            ignore = PROVIDER_PLUMBING if resource.type.startswith("pulumi:providers:") else set()
            problems += _walk(resource, resource.inputs, _shape_of_class(args_cls), "", ignore)
        elif _crd_models() is not None and _crd_models().spec_model(resource) is not None:
            metadata = resource.inputs.get("metadata")
            problems += _walk(
                resource, metadata, _shape_of_class(_object_meta()), "metadata", set()
            )
            problems += [
                UnknownInput(resource, *problem) for problem in _crd_models().crd_problems(resource)
            ]
    return problems


def unchecked_types(inventory: Inventory) -> list[str]:
    """Custom resource types neither an installed SDK nor a CRD model describes."""
    models = _crd_models()
    return sorted(
        {
            r.type
            for r in inventory.resources
            if r.custom
            and args_class(r.type) is None
            and (models is None or models.spec_model(r) is None)
        }
    )


@cache
def _crd_models() -> Any:
    """tools.crd_models, or None where pydantic is missing (a program's own virtualenv needs
    only pulumi and its SDKs): custom resources are then listed as not checked."""
    try:
        from tools import crd_models
    except ImportError:
        return None
    return crd_models


def _object_meta() -> type:
    from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

    return ObjectMetaArgs


@cache
def _shape_of_class(cls: type) -> Shape:
    return Shape("object", fields=input_fields(cls))


def _shape(annotation: Any) -> Shape:
    """What an annotation allows: an input type's fields, a list, a map, or anything."""
    annotation = sdk_types.unwrap_type(annotation)
    if isinstance(annotation, type) and sdk_types.is_input_type(annotation):
        return _shape_of_class(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, collections.abc.Sequence) and args:
        return Shape("list", item=args[0])
    if origin in (dict, collections.abc.Mapping) and len(args) == 2:
        return Shape("map", item=args[1])
    if origin is typing.Union:
        shapes = [_shape(a) for a in args if not _is_plumbing(a)]
        for kind in ("object", "list", "map"):
            found = [s for s in shapes if s.kind == kind]
            if found:
                return found[0]
    return ANY


def _is_plumbing(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return (
        annotation is type(None)
        or origin is collections.abc.Awaitable
        or (getattr(origin, "__name__", "") == "Output")
    )


def _walk(
    resource: Resource, value: Any, shape: Shape, path: str, ignore: set[str]
) -> list[UnknownInput]:
    problems: list[UnknownInput] = []
    if shape.kind == "object" and isinstance(value, dict):
        fields = shape.fields or {}
        for key, item in value.items():
            here = f"{path}.{key}" if path else key
            if key in fields:
                problems += _walk(resource, item, _shape(fields[key]), here, set())
            elif key not in ignore:
                problems.append(UnknownInput(resource, here, closest(key, fields)))
    elif shape.kind == "list" and isinstance(value, list):
        element = _shape(shape.item)
        for i, item in enumerate(value):
            problems += _walk(resource, item, element, f"{path}[{i}]", set())
    elif shape.kind == "map" and isinstance(value, dict):
        element = _shape(shape.item)
        for key, item in value.items():
            problems += _walk(resource, item, element, f"{path}.{key}", set())
    return problems


def closest(key: str, valid: typing.Iterable[str]) -> str | None:
    """The valid name a mistyped key most likely meant (snake_case keys compared as camelCase)."""
    camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), key)
    options = list(valid)
    match = difflib.get_close_matches(camel, options, n=1, cutoff=0.6)
    return match[0] if match else None
