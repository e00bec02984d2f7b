"""Test cases for the policy pack: resources sent through the real pack over the Analyzer protocol.

Each domain's test module builds a golden (fully compliant) resource and derives violating ones
from it by small mutations, so a violation case shows exactly which field a rule reads. A case
names one policy and the number of its violations; `strict` cases also assert no *other* rule
fires, which keeps golden resources honest.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tools.analyzer import AnalyzerResource, PolicyPackProcess, Violation

# The inventory's marker for a value unknown until the update (the client sends Pulumi's sentinel).
from tools.inventory import UNKNOWN as UNKNOWN

PROJECT = "signal-platform"
STACK = "test"
DELETE = object()
GCP_PROVIDER = "pulumi:providers:gcp"
K8S_PROVIDER = "pulumi:providers:kubernetes"
COST_LABELS = {"cost-center": "trading", "env": "test", "owner": "platform"}

Path = str | tuple[str | int, ...]


def urn(type_: str, name: str) -> str:
    return f"urn:pulumi:{STACK}::{PROJECT}::{type_}::{name}"


def mutate(base: Mapping[str, Any], changes: Mapping[Path, Any]) -> dict[str, Any]:
    """A deep copy of `base` with each path set (dotted string or tuple; DELETE removes)."""
    # A JSON round trip, not deepcopy: deepcopy keeps objects shared between two places shared.
    result = json.loads(json.dumps(base))
    for path, value in changes.items():
        if isinstance(path, str):
            keys: tuple[str | int, ...] = tuple(
                int(k) if k.isdigit() else k for k in path.split(".")
            )
        else:
            keys = path
        target: Any = result
        for key in keys[:-1]:
            if isinstance(key, int):
                target = target[key]
            else:
                if not isinstance(target.get(key), dict | list):
                    target[key] = {}
                target = target[key]
        last = keys[-1]
        if value is DELETE:
            if isinstance(last, int):
                del target[last]
            else:
                target.pop(last, None)
        else:
            target[last] = copy.deepcopy(value)
    return result


def resource(
    type_: str,
    inputs: Mapping[str, Any],
    name: str = "subject",
    *,
    protect: bool = False,
    parent: str | None = None,
    provider: str | None = None,
    dependencies: Iterable[str] = (),
    delete_before_replace: bool | None = None,
) -> AnalyzerResource:
    return AnalyzerResource(
        type=type_,
        name=name,
        urn=urn(type_, name),
        inputs=inputs,
        protect=protect,
        parent=parent,
        provider=provider,
        dependencies=tuple(dependencies),
        delete_before_replace=delete_before_replace,
    )


@dataclass(frozen=True)
class Case:
    policy: str
    type: str
    inputs: Mapping[str, Any]
    expect: int  # violations of `policy`; 0 means compliant
    label: str
    provider: Mapping[str, Any] | None = None  # the provider's inputs
    provider_type: str = GCP_PROVIDER
    config: Mapping[str, Any] | None = None  # policy config (the --policy-pack-config shape)
    protect: bool = False
    message: str | None = None  # some violation message contains this
    strict: bool = True  # no other policy may fire
    also: frozenset[str] = field(default_factory=frozenset)  # other policies allowed to fire

    @property
    def id(self) -> str:
        return f"{self.policy}:{self.label}"


def ok(
    policy: str, type_: str, inputs: Mapping[str, Any], label: str = "golden", **kw: Any
) -> Case:
    return Case(policy, type_, inputs, 0, label, **kw)


def bad(
    policy: str, type_: str, inputs: Mapping[str, Any], label: str, expect: int = 1, **kw: Any
) -> Case:
    return Case(policy, type_, inputs, expect, label, **kw)


def analyze_case(pack: PolicyPackProcess, case: Case) -> list[Violation]:
    pack.configure(case.config or {})
    provider = None
    if case.provider is not None:
        provider = AnalyzerResource(
            type=case.provider_type,
            name="provider",
            urn=urn(case.provider_type, "provider"),
            inputs=case.provider,
        )
    subject = resource(case.type, case.inputs, protect=case.protect)
    return pack.analyze(subject, provider)


def assert_case(pack: PolicyPackProcess, case: Case, levels: Mapping[str, str]) -> None:
    found = analyze_case(pack, case)
    crashes = [v for v in found if "internal error" in v.message]
    assert not crashes, crashes
    mine = [v for v in found if v.policy == case.policy]
    assert len(mine) == case.expect, f"{case.id}: expected {case.expect}, got {mine}"
    for violation in mine:
        assert violation.level == levels[case.policy], violation
        assert violation.urn == urn(case.type, "subject")
    if case.message is not None:
        assert any(case.message in v.message for v in mine), [v.message for v in mine]
    if case.strict:
        others = {v.policy for v in found} - {case.policy} - case.also
        assert not others, (
            f"{case.id}: other rules fired: {[v for v in found if v.policy in others]}"
        )


@dataclass(frozen=True)
class StackCase:
    policy: str
    resources: tuple[AnalyzerResource, ...]
    expect: int
    label: str
    config: Mapping[str, Any] | None = None
    urns: tuple[str | None, ...] | None = None  # where each violation is reported, in order
    message: str | None = None

    @property
    def id(self) -> str:
        return f"{self.policy}:{self.label}"


def stack_case(
    policy: str, label: str, resources: tuple[AnalyzerResource, ...], expect: int = 0, **kw: Any
) -> StackCase:
    """A stack case: `expect` violations of `policy` over `resources` (0: compliant)."""
    return StackCase(policy, resources, expect, label, **kw)


def assert_stack_case(pack: PolicyPackProcess, case: StackCase, levels: Mapping[str, str]) -> None:
    pack.configure(case.config or {})
    found = pack.analyze_stack(case.resources)
    crashes = [v for v in found if "internal error" in v.message]
    assert not crashes, crashes
    mine = [v for v in found if v.policy == case.policy]
    assert len(mine) == case.expect, f"{case.id}: expected {case.expect}, got {mine}"
    for violation in mine:
        assert violation.level == levels[case.policy], violation
    if case.message is not None:
        assert any(case.message in v.message for v in mine), [v.message for v in mine]
    if case.urns is not None:
        assert sorted(v.urn or "" for v in mine) == sorted(u or "" for u in case.urns)


def every_leaf(value: Any, replacement: Any) -> Any:
    """`value` with every scalar leaf replaced (lists and objects kept)."""
    if isinstance(value, dict):
        return {k: every_leaf(v, replacement) for k, v in value.items()}
    if isinstance(value, list):
        return [every_leaf(v, replacement) for v in value]
    return replacement
