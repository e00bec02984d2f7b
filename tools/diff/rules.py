"""Which input changes replace a resource: the table in replace_on_change.yaml (a source per
entry), loaded and checked, and the lookup a diff asks of it.

Pulumi's own `replaceOnChanges` resource option wins; then the type's entries; then, for types
of the gcp and kubernetes providers, the inputs that name a resource.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field

from app.config_errors import CamelConfigModel, ConfigError, load_model, read_config_file
from tools.inventory import Resource

# Shared with the policy pack (rules/fixed_names.py reads it; the pack imports nothing from tools),
# so it lives in the pack.
TABLE_PATH = Path(__file__).parents[2] / "policies" / "rules" / "replace_on_change.yaml"
Effect = Literal["update", "replace", "disruptive"]


class TableError(ConfigError):
    """replace_on_change.yaml is malformed: one line per problem, naming the key."""


class Entry(CamelConfigModel):
    """Input paths of one type whose change at or below them has one effect, and why."""

    paths: tuple[str, ...] = Field(min_length=1)
    effect: Literal["replace", "disruptive"]
    why: str = Field(min_length=3)
    source: str = Field(min_length=10)


class Table(CamelConfigModel):
    types: dict[str, tuple[Entry, ...]]
    identity: dict[Literal["gcp", "kubernetes"], Entry]


@dataclass(frozen=True)
class Rule:
    """An input path (`[*]` for any index) whose change at or below it has this effect."""

    path: str
    effect: Effect
    why: str
    source: str


@cache
def load_table(path: Path = TABLE_PATH) -> Table:
    try:
        return load_model(Table, str(path), read_config_file(path))
    except ConfigError as exc:
        raise TableError(exc.source, exc.problems) from None


def _rules(entries: tuple[Entry, ...]) -> tuple[Rule, ...]:
    return tuple(Rule(p, e.effect, e.why, e.source) for e in entries for p in e.paths)


def rules_of(resource_type: str) -> tuple[Rule, ...]:
    """The rules for a type, its own entries first, then the provider's identity inputs."""
    table = load_table()
    rules = _rules(table.types.get(resource_type, ()))
    provider = resource_type.split(":", 1)[0]
    if provider in table.identity:
        rules += _rules((table.identity[provider],))  # type: ignore[index]
    return rules


def normalize(path: str) -> str:
    return re.sub(r"\[\d+\]", "[*]", path)


def covers(rule_path: str, path: str) -> bool:
    normalized = normalize(path)
    return (
        normalized == rule_path
        or normalized.startswith(rule_path + ".")
        or normalized.startswith(rule_path + "[")
    )


def rule_for(resource: Resource, path: str) -> Rule | None:
    """The rule a change at `path` falls under: Pulumi's own replaceOnChanges option first,
    then the type's table, then identity inputs."""
    for option in resource.options.get("replaceOnChanges", []) or []:
        if option == "*" or covers(normalize(str(option)), path):
            return Rule(str(option), "replace", "replaceOnChanges resource option", "Pulumi")
    for rule in rules_of(resource.type):
        if covers(rule.path, path):
            return rule
    return None
