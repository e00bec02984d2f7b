"""Comparing two plans: every resource added, removed, updated or replaced, each changed input
old → new with its effect, secrets masked, and a stack's two sides with their findings.

Resources are matched by URN. A masked value changed when its digests differ (both sides are
planned with one digest key per diff run).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tools.analyzer import Violation
from tools.cost import Estimate
from tools.diff.rules import Effect, rule_for
from tools.inventory import SECRET, Inventory, Resource

Kind = Literal["add", "remove", "update", "replace"]
BQ_SCHEMA_SOURCE = (
    "terraform-provider-google google/services/bigquery/resource_bigquery_table.go, schema "
    "CustomizeDiff"
)


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class InputChange:
    path: str
    old: Any
    new: Any
    effect: Effect
    secret: bool = False
    why: str = ""
    source: str = ""


@dataclass(frozen=True)
class ResourceChange:
    kind: Kind
    type: str
    name: str
    urn: str
    region: str | None
    changes: tuple[InputChange, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)  # added/removed: all inputs, flat
    secret_paths: frozenset[str] = frozenset()
    protected: bool = False

    @property
    def replacing(self) -> list[InputChange]:
        return [c for c in self.changes if c.effect == "replace"]

    @property
    def disruptive(self) -> list[InputChange]:
        return [c for c in self.changes if c.effect == "disruptive"]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Inputs as leaf paths (`a.b[0].c`, the engine's secret-path syntax). Lists of scalars
    are one leaf; empty objects and lists are leaves, so adding or clearing one shows."""
    if isinstance(value, dict):
        if not value:
            return {prefix: {}} if prefix else {}
        out: dict[str, Any] = {}
        for key in sorted(value):
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix: value}


# Keys whose string values are credentials, whatever the provider says.
SECRET_KEY_RE = re.compile(
    r"(password|passwd|secret|token|private_?key|credential|api_?key|auth_?string|"
    r"client_?key|key_?data|access_?key|ssh_?key)",
    re.IGNORECASE,
)
SECRET_TYPES = {
    "kubernetes:core/v1:Secret": ("data", "stringData"),
    "gcp:secretmanager/secretVersion:SecretVersion": ("secretData",),
}


def is_secret(resource_type: str, path: str, value: Any, secret_paths: Sequence[str]) -> bool:
    for secret in secret_paths:
        if path == secret or any(
            path.startswith(secret + sep) or secret.startswith(path + sep) for sep in ".["
        ):
            return True
    for root in SECRET_TYPES.get(resource_type, ()):
        if path == root or path.startswith(root + ".") or path.startswith(root + "["):
            return True
    if isinstance(value, bool | int | float) or value is None or value is ABSENT:
        return False
    segments = re.split(r"[.\[\]]+", path)
    return any(SECRET_KEY_RE.search(segment) for segment in segments if segment)


def _schema_change(old: Any, new: Any) -> tuple[Effect, str] | None:
    """A BigQuery table schema (JSON): removing or retyping a column replaces the table."""
    try:
        old_fields = {f["name"]: f.get("type") for f in json.loads(old)}
        new_fields = {f["name"]: f.get("type") for f in json.loads(new)}
    except (TypeError, ValueError, KeyError):
        return None
    dropped = sorted(set(old_fields) - set(new_fields))
    retyped = sorted(n for n in old_fields if n in new_fields and old_fields[n] != new_fields[n])
    if dropped or retyped:
        what = ", ".join([*(f"{n} removed" for n in dropped), *(f"{n} retyped" for n in retyped)])
        return "replace", f"columns {what}: BigQuery cannot drop or retype in place"
    return None


def diff_resource(base: Resource, head: Resource, region: str | None) -> ResourceChange | None:
    old, new = flatten(base.inputs), flatten(head.inputs)
    secret_paths = (*base.secrets, *head.secrets)
    changes: list[InputChange] = []
    for path in sorted(set(old) | set(new)):
        before, after = old.get(path, ABSENT), new.get(path, ABSENT)
        if before == after and not _secret_changed(base, head, path, before):
            continue
        rule = rule_for(head, path)
        effect: Effect = rule.effect if rule else "update"
        why, source = (rule.why, rule.source) if rule else ("", "")
        if head.type == "gcp:bigquery/table:Table" and path == "schema":
            schema = _schema_change(before, after)
            if schema is not None:
                effect, why, source = schema[0], schema[1], BQ_SCHEMA_SOURCE
        secret = is_secret(head.type, path, after if after is not ABSENT else before, secret_paths)
        changes.append(InputChange(path, before, after, effect, secret, why, source))
    if not changes:
        return None
    kind: Kind = "replace" if any(c.effect == "replace" for c in changes) else "update"
    return ResourceChange(
        kind,
        head.type,
        head.name,
        head.urn,
        region,
        tuple(changes),
        secret_paths=frozenset(secret_paths),
        protected=bool(base.options.get("protect")),
    )


def _secret_changed(base: Resource, head: Resource, path: str, value: Any) -> bool:
    """Both sides show SECRET at `path`: their digests (made with the diff's shared key) tell
    whether the value behind it changed."""
    if value != SECRET:
        return False
    old, new = base.secret_digests.get(path), head.secret_digests.get(path)
    return old is not None and new is not None and old != new


def diff_inventories(base: Inventory, head: Inventory) -> tuple[list[ResourceChange], int]:
    """Every resource that is added, removed, updated or replaced, and how many are unchanged."""
    before, after = base.by_urn(), head.by_urn()
    base_regions, head_regions = base.regions(), head.regions()
    changes: list[ResourceChange] = []
    unchanged = 0
    for urn in sorted(set(before) | set(after)):
        if urn not in before:
            r = after[urn]
            changes.append(_whole(r, "add", head_regions.get(urn)))
        elif urn not in after:
            r = before[urn]
            changes.append(_whole(r, "remove", base_regions.get(urn)))
        else:
            change = diff_resource(before[urn], after[urn], head_regions.get(urn))
            if change is None:
                unchanged += 1
            else:
                changes.append(change)
    return changes, unchanged


def _whole(resource: Resource, kind: Kind, region: str | None) -> ResourceChange:
    return ResourceChange(
        kind,
        resource.type,
        resource.name,
        resource.urn,
        region,
        inputs=flatten(resource.inputs),
        secret_paths=frozenset(resource.secrets),
        protected=bool(resource.options.get("protect")),
    )


# --------------------------------------------------------------------------- a stack's two sides


@dataclass
class Side:
    label: str  # "main (abc1234)" or "working tree"
    inventory: Inventory | None = None
    error: str | None = None  # why it could not be planned
    estimate: Estimate | None = None
    estimate_error: str | None = None
    violations: list[Violation] | None = None


@dataclass
class StackDiff:
    stack: str
    base: Side
    head: Side
    changes: list[ResourceChange] = field(default_factory=list)
    unchanged: int = 0
    policy_added: list[Violation] = field(default_factory=list)
    policy_removed: list[Violation] = field(default_factory=list)
    policy_error: str | None = None
    notes: list[str] = field(default_factory=list)

    def count(self, kind: Kind) -> int:
        return sum(c.kind == kind for c in self.changes)

    @property
    def cost_delta(self) -> float | None:
        if self.base.estimate is None or self.head.estimate is None:
            return None
        return self.head.estimate.total - self.base.estimate.total


def compare(stack: str, base: Side, head: Side) -> StackDiff:
    result = StackDiff(stack, base, head)
    if head.inventory is not None and base.inventory is not None:
        result.changes, result.unchanged = diff_inventories(base.inventory, head.inventory)
    if base.violations is not None and head.violations is not None:
        key = _violation_key
        base_keys = {key(v) for v in base.violations}
        head_keys = {key(v) for v in head.violations}
        result.policy_added = [v for v in head.violations if key(v) not in base_keys]
        result.policy_removed = [v for v in base.violations if key(v) not in head_keys]
    return result


def _violation_key(v: Violation) -> tuple[str, str, str]:
    return (v.policy, v.urn or "", v.message)
