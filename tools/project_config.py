"""Project-level configuration: `config:` in `Pulumi.yaml`, as the Pulumi CLI applies it.

A project declares keys with a type, a default or a value; a stack that does not set a key gets
the project's default (its own keys) or value (another namespace's, such as `gcp:region`), and a
key of the project's own namespace declared with neither must be set by every stack. Shorthand
(`greeting: hello`, `gcp:region: us-east4`) is a default for the project's keys and a value for
others. Stack values of typed keys must have that type, and keys declared `secret` must be
encrypted in the stack file. Each rule and message follows the CLI's (sdk/go/common/workspace:
Project.Validate, RewriteShorthandConfigValues, mergeConfig, ValidateConfigValue).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TYPES = ("string", "integer", "boolean", "array")
_ATTRIBUTES = ("type", "description", "items", "default", "value", "secret")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


class ProjectConfigError(Exception):
    """A declaration the CLI refuses, or a stack that does not satisfy the declarations."""


@dataclass(frozen=True)
class Declaration:
    key: str  # as Pulumi.yaml spells it
    full_key: str  # namespace:name
    type: str | None = None
    items: Any = None  # {"type": ..., "items": ...} for arrays
    default: Any = None
    value: Any = None
    secret: bool = False

    @property
    def given(self) -> Any:
        return self.default if self.default is not None else self.value


def declarations(raw: Any, project: str, file_name: str) -> tuple[Declaration, ...]:
    """The `config:` block of a project file, validated as the CLI validates it."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ProjectConfigError(
            f"{file_name}: config: is a {type(raw).__name__}; it must be a mapping of keys to"
            " a value or a declaration (type, default, value, secret, description, items)"
        )
    found = []
    for key, entry in sorted(raw.items()):
        own = ":" not in key or key.startswith(f"{project}:")
        full = key if ":" in key else f"{project}:{key}"
        if not isinstance(entry, dict):  # shorthand
            entry = {"default": entry} if own else {"value": entry}
        unknown = sorted(set(entry) - set(_ATTRIBUTES))
        if unknown:
            raise ProjectConfigError(
                f"{file_name}: config {key!r}: unknown attribute {unknown[0]!r}; allowed: "
                + ", ".join(_ATTRIBUTES)
                + (" (an object value goes under 'value:' or 'default:')" if own else "")
            )
        declared = Declaration(
            key,
            full,
            entry.get("type"),
            entry.get("items"),
            entry.get("default"),
            entry.get("value"),
            entry.get("secret") is True,
        )
        _validate(declared, own, file_name)
        found.append(declared)
    return tuple(found)


def _validate(d: Declaration, own: bool, file_name: str) -> None:
    where = f"{file_name}: config {d.key!r}"
    if d.default is not None and d.value is not None:
        raise ProjectConfigError(f"{where} cannot have both a 'default' and a 'value' attribute")
    if not own:
        if d.type is not None:
            raise ProjectConfigError(
                f"{where} is not in the project's namespace and should not declare a type"
            )
        if d.default is not None:
            raise ProjectConfigError(
                f"{where} is not in the project's namespace and should not define a default;"
                " use 'value:' instead"
            )
        if d.value is None:
            raise ProjectConfigError(f"{where} is in another namespace and must give a 'value:'")
        return
    if d.type is None:
        return
    if d.type not in TYPES:
        raise ProjectConfigError(
            f"{where}: type must be one of {', '.join(TYPES)} (got {d.type!r})"
        )
    if d.type == "array" and not isinstance(d.items, dict):
        raise ProjectConfigError(
            f"{where} declares an array but does not give the type of its 'items'"
        )
    if d.default is not None and not conforms(d.type, d.items, d.default):
        raise ProjectConfigError(
            f"{where}: the default {d.default!r} is not of the declared type"
            f" {type_name(d.type, d.items)!r}"
        )


def type_name(type_: str, items: Any) -> str:
    if isinstance(items, dict):
        return f"array<{type_name(str(items.get('type')), items.get('items'))}>"
    return type_


def conforms(type_: str, items: Any, value: Any) -> bool:
    """Whether a value has the declared type (the CLI's ValidateConfigValue: integers and
    booleans may be strings that read as one)."""
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return True
        return isinstance(value, str) and bool(_INTEGER.match(value))
    if type_ == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if type_ == "object":
        return isinstance(value, dict)
    if not isinstance(value, list) or not isinstance(items, dict):
        return False
    return all(conforms(str(items.get("type")), items.get("items"), item) for item in value)


def apply(
    declared: tuple[Declaration, ...],
    stack: str,
    stack_file: str,
    values: Mapping[str, str],
    raw_values: Mapping[str, Any],
    secret_keys: tuple[str, ...],
) -> dict[str, str]:
    """The stack's config (`values`, strings as the program gets them; `raw_values`, as YAML
    or the command line gave them) with the project's defaults and values merged under it."""
    from tools.stack_file import config_string

    merged = dict(values)
    # Only the project's own keys can lack both (another namespace's must give a value).
    missing = [d.key for d in declared if d.full_key not in merged and d.given is None]
    if missing:
        names = " and ".join(f"'{k}'" for k in missing)
        plural = "values" if len(missing) > 1 else "value"
        raise ProjectConfigError(
            f"{stack_file}: stack '{stack}' is missing configuration {plural} {names}, which"
            f" Pulumi.yaml declares without a default; set it here or with --config"
            f" {missing[0]}=VALUE"
        )
    for d in declared:
        if d.full_key not in merged:
            merged[d.full_key] = config_string(d.given)
        if d.type is None:
            continue
        if d.secret and d.full_key not in secret_keys:
            raise ProjectConfigError(
                f"{stack_file}: {d.full_key} must be encrypted, as Pulumi.yaml declares it"
                " secret (pulumi config set --secret)"
            )
        raw = raw_values.get(d.full_key, d.given if d.full_key not in values else None)
        raw = values[d.full_key] if raw is None else raw
        content = raw if isinstance(raw, list | dict) else merged[d.full_key]
        if not conforms(d.type, d.items, content):
            raise ProjectConfigError(
                f"{stack_file}: {d.full_key} must be of type {type_name(d.type, d.items)!r}"
                f" (Pulumi.yaml declares it; got {json.dumps(raw)})"
            )
    return merged
