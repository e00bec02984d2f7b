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
from tools.diff.rules import Effect, covers, normalize, rule_for
from tools.inventory import SECRET, UNKNOWN, Inventory, Resource, provider_urn

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
        if ignored(head, path):
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
    return _changed(base, head, region, changes)


def _changed(
    base: Resource, head: Resource, region: str | None, changes: Sequence[InputChange]
) -> ResourceChange | None:
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
        secret_paths=frozenset((*base.secrets, *head.secrets)),
        protected=bool(base.options.get("protect")),
    )


def ignored(resource: Resource, path: str) -> bool:
    """Whether the resource's `ignoreChanges` option covers the path (Pulumi keeps the old
    value there, so a change shows nowhere)."""
    for option in resource.options.get("ignoreChanges") or ():
        option = re.sub(r'\["([^"\]]*)"\]', r".\1", str(option)).lstrip(".")
        if option == "*" or covers(normalize(option), path):
            return True
    return False


def _secret_changed(base: Resource, head: Resource, path: str, value: Any) -> bool:
    """Both sides show SECRET at `path`: their digests (made with the diff's shared key) tell
    whether the value behind it changed."""
    if value != SECRET:
        return False
    old, new = base.secret_digests.get(path), head.secret_digests.get(path)
    return old is not None and new is not None and old != new


def renames(base: Inventory, head: Inventory) -> dict[str, str]:
    """Head URN -> the base URN it was, where a resource's URN changed and one of its aliases
    names the old one (the engine then updates it in place, it neither deletes nor creates)."""
    before, after = base.by_urn(), head.by_urn()
    found: dict[str, str] = {}
    claimed: set[str] = set()
    for urn, resource in sorted(after.items()):
        if urn in before:
            continue
        for alias in resource.options.get("aliases") or ():
            if alias in before and alias not in after and alias not in claimed:
                found[urn] = alias
                claimed.add(alias)
                break
    return found


def diff_inventories(base: Inventory, head: Inventory) -> tuple[list[ResourceChange], int]:
    """Every resource that is added, removed, updated or replaced, and how many are unchanged.
    A resource renamed with an alias is compared with what it was."""
    before, after = base.by_urn(), head.by_urn()
    base_regions, head_regions = base.regions(), head.regions()
    was = renames(base, head)
    changes: list[ResourceChange] = []
    kept: dict[str, list[InputChange]] = {}  # head URN -> input changes, for both sides
    for urn in sorted(set(before) | set(after)):
        if urn in was.values():
            continue  # compared under its new URN
        if urn not in before and urn not in was:
            changes.append(_whole(after[urn], "add", head_regions.get(urn)))
        elif urn not in after:
            changes.append(_whole(before[urn], "remove", base_regions.get(urn)))
        else:
            old, new = before[was.get(urn, urn)], after[urn]
            change = diff_resource(old, new, head_regions.get(urn))
            kept[urn] = [
                *_provider_moved(old, new, before, after, was),
                *(change.changes if change else ()),
            ]
    _cascade(kept, before, after, was)
    unchanged = 0
    for urn, items in sorted(kept.items()):
        change = _changed(before[was.get(urn, urn)], after[urn], head_regions.get(urn), items)
        if change is None:
            unchanged += 1
        else:
            changes.append(change)
    return changes, unchanged


PROVIDER_SOURCE = "Pulumi engine, step generator: a changed provider reference (DiffConfig)"


def _provider_moved(
    old: Resource,
    new: Resource,
    before: Mapping[str, Resource],
    after: Mapping[str, Resource],
    was: Mapping[str, str],
) -> list[InputChange]:
    """A resource that moves to another provider is replaced when the new provider's
    configuration differs from the old one's where the provider replaces its resources (a
    Kubernetes provider pointed at another cluster); else it stays, as the engine decides."""
    old_ref, new_ref = provider_urn(old.provider), provider_urn(new.provider)
    if old_ref == new_ref or old_ref is None or new_ref is None or was.get(new_ref) == old_ref:
        return []
    old_provider, new_provider = before.get(old_ref), after.get(new_ref)
    if old_provider is None or new_provider is None:
        return []
    moved = diff_resource(old_provider, new_provider, None)
    for change in moved.replacing if moved else ():
        return [
            InputChange(
                "(provider)",
                old_ref,
                new_ref,
                "replace",
                why=f"it moves to a provider whose {change.path} differs, which replaces what"
                " it manages",
                source=PROVIDER_SOURCE,
            )
        ]
    return []


DEPENDENT_SOURCE = "Pulumi engine: dependent replacements (unknown inputs from a replaced resource)"


def _cascade(
    kept: dict[str, list[InputChange]],
    before: Mapping[str, Resource],
    after: Mapping[str, Resource],
    was: Mapping[str, str],
) -> None:
    """Replacements a replacement causes, as the engine plans them: a resource whose provider is
    replaced is replaced, and an input computed from a replaced resource (unknown in the plan)
    takes a new value, with the effect its path has (a subnetwork on a replaced network is
    replaced, a label from it is updated). Repeated until nothing new is replaced."""
    replaced = {u for u, items in kept.items() if any(c.effect == "replace" for c in items)}
    added = set(after) - set(before) - set(was)
    while True:
        new_replaced = set()
        for urn, items in kept.items():
            if urn in replaced:
                continue
            resource, old = after[urn], before[was.get(urn, urn)]
            causes = replaced | added
            if provider_urn(resource.provider) in replaced:
                items.append(
                    InputChange(
                        "(provider)",
                        provider_urn(resource.provider),
                        UNKNOWN,
                        "replace",
                        why="its provider is replaced",
                        source=DEPENDENT_SOURCE,
                    )
                )
            else:
                items += _inputs_from(resource, old, causes, {c.path for c in items})
            if any(c.effect == "replace" for c in items):
                new_replaced.add(urn)
        if not new_replaced:
            return
        replaced |= new_replaced


def _inputs_from(
    resource: Resource, old: Resource, causes: set[str], seen: set[str]
) -> list[InputChange]:
    """The unknown inputs of a resource that come from one of `causes` (replaced or new
    resources): each will take a new value."""
    found = []
    dependencies = resource.options.get("propertyDependencies") or {}
    flat, old_flat = flatten(resource.inputs), flatten(old.inputs)
    for key, urns in sorted(dependencies.items()):
        if not causes.intersection(urns):
            continue
        for path, value in flat.items():
            if value != UNKNOWN or path in seen or ignored(resource, path):
                continue
            if path != key and not path.startswith((key + ".", key + "[")):
                continue
            rule = rule_for(resource, path)
            found.append(
                InputChange(
                    path,
                    old_flat.get(path, ABSENT),
                    UNKNOWN,
                    rule.effect if rule else "update",
                    is_secret(resource.type, path, value, resource.secrets),
                    rule.why if rule else "",
                    rule.source if rule else DEPENDENT_SOURCE,
                )
            )
    return found


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
