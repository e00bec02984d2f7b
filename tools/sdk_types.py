"""The installed SDKs' own description of a resource type: its `*Args` class and input fields.

A Pulumi package registers its modules with the SDK when imported (`pulumi_gcp`,
`pulumi_kubernetes`, `pulumi_random` ...); a type token (`gcp:compute/router:Router`) then
names the module and class whose `*Args` declares every input the provider accepts.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import typing
from functools import cache
from typing import Any

from pulumi import _types as sdk_types
from pulumi.runtime import rpc

# Optional inputs through which a resource left without a placement takes its provider's
# default region or zone (the Google provider's GetRegion/GetLocation fall back to them).
DEFAULT_PLACEMENT_INPUTS = ("region", "zone", "location")
# Types whose optional placement input defaults to something else (terraform-provider-google
# schema defaults): they are not placed in the provider's region.
PLACEMENT_DEFAULTS_ELSEWHERE = {
    "gcp:bigquery/dataset:Dataset": "location defaults to the US multi-region",
    "gcp:dataproc/cluster:Cluster": "region defaults to global",
}


@cache
def args_class(type_token: str) -> type | None:
    """The SDK's `*Args` class for a resource type token, if the package is installed."""
    found = _class_of(type_token)
    return getattr(importlib.import_module(found[0]), f"{found[1]}Args", None) if found else None


@cache
def resource_class(type_token: str) -> type | None:
    """The SDK's resource class for a type token, if the package is installed."""
    found = _class_of(type_token)
    return getattr(importlib.import_module(found[0]), found[1], None) if found else None


def _class_of(type_token: str) -> tuple[str, str] | None:
    """(module, class name) that the installed SDK registered for a type token."""
    pkg, _, rest = type_token.partition(":")
    if pkg == "pulumi" and rest.startswith("providers:"):
        provider_pkg = rest.removeprefix("providers:")
        _import_package(provider_pkg)
        package = rpc._RESOURCE_PACKAGES.get(provider_pkg)
        if not package:
            return None
        info = package[0].pkg_info  # type: ignore[attr-defined]
        return info["fqn"], info["class"]
    _import_package(pkg)
    module_name = rest.rsplit(":", 1)[0]
    for module in rpc._RESOURCE_MODULES.get(f"{pkg}:{module_name}", []):
        info = getattr(module, "mod_info", None) or {}
        class_name = info.get("classes", {}).get(type_token)
        if class_name:
            return info["fqn"], class_name
    return None


def _import_package(pkg: str) -> None:
    """Import `pulumi_<pkg>` when the plan ran elsewhere (the program's own virtualenv), so
    its modules are registered here too; a package not installed here stays unknown."""
    if pkg not in rpc._RESOURCE_PACKAGES:
        try:
            importlib.import_module(f"pulumi_{pkg.replace('-', '_')}")
        except ImportError:
            return


@cache
def input_fields(cls: type) -> typing.Mapping[str, Any]:
    """Wire (camelCase) input name -> annotated type, for an `*Args` or nested input class."""
    return sdk_types.input_type_types(cls)


@cache
def output_fields(type_token: str) -> typing.Mapping[str, Any]:
    """Wire output name -> annotated type for a resource type; empty when not installed."""
    cls = resource_class(type_token)
    return sdk_types.resource_types(cls) if cls is not None else {}


@cache
def nested_output_fields(annotation: Any) -> tuple[str, Any]:
    """What an output annotation holds: ("object", {wire name: type}), ("list", item type),
    ("map", value type) or ("leaf", None)."""
    annotation = sdk_types.unwrap_type(annotation)
    if isinstance(annotation, type) and sdk_types.is_output_type(annotation):
        return "object", sdk_types.output_type_types(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, collections.abc.Sequence) and args:
        return "list", args[0]
    if origin in (dict, collections.abc.Mapping) and len(args) == 2:
        return "map", args[1]
    return "leaf", None


@cache
def takes_default_region(type_token: str) -> bool:
    """Whether a resource of this type left without a placement input is placed in its
    provider's default region or zone: the SDK declares an optional `region`, `zone` or
    `location` for it (Cloud SQL, Cloud Functions, GKE clusters, routers ...), and the
    provider does not default it to something else."""
    if type_token.startswith("pulumi:") or type_token in PLACEMENT_DEFAULTS_ELSEWHERE:
        return False
    cls = args_class(type_token)
    if cls is None:
        return False
    parameters = inspect.signature(cls.__init__).parameters
    return any(
        name in parameters and parameters[name].default is not inspect.Parameter.empty
        for name in DEFAULT_PLACEMENT_INPUTS
    )
