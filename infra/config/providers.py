"""The configuration keys of the providers the program runs (`gcp:`, `kubernetes:`), as their
installed SDKs declare them: nothing copied by hand, so an SDK upgrade brings its new keys.

A provider's stack-config keys are its provider arguments (`gcp:region`, `kubernetes:context`);
SDKs generated with a `config` module also list config-only keys there (`gcp:` has two, such as
`skipRegionValidation`). Both are read: the `config/vars.py` module by parsing it (its getters
call `__config__.get('<key>')`), the provider arguments from the `ProviderArgs` getters' names.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from functools import cache
from pathlib import Path

# Namespace → the SDK package that declares its keys.
PROVIDER_PACKAGES = {"gcp": "pulumi_gcp", "kubernetes": "pulumi_kubernetes"}


@cache
def provider_config_keys(namespace: str) -> frozenset[str]:
    """Every key the `namespace:` provider reads from stack config."""
    package = importlib.import_module(PROVIDER_PACKAGES[namespace])
    return _vars_module_keys(Path(inspect.getfile(package)).parent) | _provider_args_keys(
        package.__name__
    )


def _vars_module_keys(package_dir: Path) -> frozenset[str]:
    path = package_dir / "config" / "vars.py"
    if not path.is_file():
        return frozenset()
    keys = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "__config__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            keys.add(node.args[0].value)
    return frozenset(keys)


def _provider_args_keys(package: str) -> frozenset[str]:
    args = importlib.import_module(f"{package}.provider").ProviderArgs
    return frozenset(
        getattr(member.fget, "_pulumi_name", name)
        for name, member in vars(args).items()
        if isinstance(member, property)
    )
