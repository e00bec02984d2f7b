"""The pack as a whole: its rule inventory, test coverage of every rule, and robustness of every
rule against preview unknowns, absent fields and wrongly shaped values."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from tests.policies import (
    test_apply_order,
    test_compute,
    test_cost,
    test_data,
    test_first_apply,
    test_fixed_names,
    test_gke,
    test_helm,
    test_iam,
    test_istio,
    test_kube_apply,
    test_kubernetes,
    test_mesh_reach,
    test_nodepool,
    test_rbac,
    test_secrets,
    test_serverless,
    test_sql,
    test_stack,
    test_storage,
)
from tests.policies.cases import UNKNOWN, Case, StackCase, analyze_case, every_leaf, resource
from tools.analyzer import PolicyPackProcess

DOMAINS = (
    test_gke,
    test_nodepool,
    test_kubernetes,
    test_rbac,
    test_helm,
    test_istio,
    test_data,
    test_sql,
    test_storage,
    test_compute,
    test_serverless,
    test_secrets,
    test_iam,
    test_cost,
    test_stack,
    test_apply_order,
    test_first_apply,
    test_kube_apply,
    test_mesh_reach,
    test_fixed_names,
)
LEVELS: dict[str, str] = {k: v for m in DOMAINS for k, v in m.LEVELS.items()}
RESOURCE_CASES: list[Case] = [c for m in DOMAINS for c in getattr(m, "CASES", [])]
STACK_CASES: list[StackCase] = [c for m in DOMAINS for c in getattr(m, "STACK_CASES", [])]
STANDARDS = (
    "CIS ",
    "Checkov",
    "Polaris",
    "kube-score",
    "Pod Security Standards",
    "Istio",
    "docs",
    "FinOps Foundation",
)


def _goldens() -> list[Case]:
    """Every compliant case that asserts no rule at all fires: the pack's golden resources."""
    seen: set[tuple[str, str]] = set()
    goldens = []
    for case in RESOURCE_CASES:
        key = (case.type, repr(case.inputs))
        if case.expect == 0 and case.strict and case.config is None and key not in seen:
            seen.add(key)
            goldens.append(case)
    return goldens


GOLDENS = _goldens()
# One golden per type is enough to probe shapes (the rules read by type, not by variant).
ONE_PER_TYPE = list({c.type: c for c in reversed(GOLDENS)}.values())


def test_rule_inventory(pack: PolicyPackProcess) -> None:
    info = pack.info()
    names = [p.name for p in info.policies]
    assert len(names) >= 50
    assert len(set(names)) == len(names)
    for policy in info.policies:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", policy.name), policy.name
        assert "Source: " in policy.description, policy.name
        source = policy.description.split("Source: ", 1)[1]
        assert any(s in source for s in STANDARDS), (
            f"{policy.name} names no known standard: {source}"
        )
        assert policy.tags, f"{policy.name} has no domain tag"
    # The levels are part of the contract: every rule's level is pinned by its domain's tests.
    assert {p.name: p.level for p in info.policies} == LEVELS
    stack_rules = {p.name for p in info.policies if p.kind == "stack"}
    assert stack_rules == {c.policy for c in STACK_CASES}


def test_pack_version_comes_from_pulumipolicy_yaml(pack: PolicyPackProcess) -> None:
    assert pack.info().name == "signal-platform"
    assert pack.info().version == "0.1.0"


def test_every_rule_has_a_compliant_and_a_violating_case(pack: PolicyPackProcess) -> None:
    compliant = Counter(c.policy for c in [*RESOURCE_CASES, *STACK_CASES] if c.expect == 0)
    violating = Counter(c.policy for c in [*RESOURCE_CASES, *STACK_CASES] if c.expect > 0)
    names = {p.name for p in pack.info().policies}
    assert sorted(n for n in names if not compliant[n]) == []
    assert sorted(n for n in names if not violating[n]) == []


def test_case_ids_are_unique() -> None:
    ids = Counter(c.id for c in [*RESOURCE_CASES, *STACK_CASES])
    assert [i for i, n in ids.items() if n > 1] == []


def _crashes(violations: list[Any]) -> list[Any]:
    return [
        v for v in violations if "internal error" in v.message or "can't run policy" in v.message
    ]


@pytest.mark.parametrize("golden", GOLDENS, ids=lambda c: f"{c.type.split(':')[-1]}:{c.id}")
def test_unknown_values_never_violate(pack: PolicyPackProcess, golden: Case) -> None:
    """During preview any input may be unknown: every leaf unknown, or every top-level field
    unknown, yields no violation and no 'cannot run during preview' diagnostic."""
    leaves = every_leaf(dict(golden.inputs), UNKNOWN)
    tops = {k: UNKNOWN for k in golden.inputs}
    for inputs in (leaves, tops):
        found = analyze_case(pack, replace(golden, inputs=inputs))
        assert found == [], found


@pytest.mark.parametrize("golden", ONE_PER_TYPE, ids=lambda c: f"{c.type.split(':')[-1]}:{c.id}")
def test_wrong_shapes_and_absent_fields_never_crash(pack: PolicyPackProcess, golden: Case) -> None:
    """Absent fields, and objects where lists are expected (and the reverse), are read safely."""
    assert _crashes(analyze_case(pack, replace(golden, inputs={}))) == []
    for key in golden.inputs:
        for wrong in ("text", 7, [{"a": 1}, "b"], {"a": [1]}, None):
            inputs = {**golden.inputs, key: wrong}
            assert _crashes(analyze_case(pack, replace(golden, inputs=inputs))) == [], (key, wrong)


STACK_GOLDENS = [m for m in DOMAINS if hasattr(m, "golden") and hasattr(m, "STACK_CASES")]


@pytest.mark.parametrize("domain", STACK_GOLDENS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_unknown_values_never_violate_stack_rules(pack: PolicyPackProcess, domain: Any) -> None:
    """A domain's golden stack with every input leaf unknown (dependencies, parents and
    providers kept) yields no violation of that domain's rules."""
    stack = [replace(r, inputs=every_leaf(dict(r.inputs), UNKNOWN)) for r in domain.golden()]
    found = [v for v in pack.analyze_stack(stack) if v.policy in domain.LEVELS]
    assert found == []


def test_unknown_stack_never_violates(pack: PolicyPackProcess) -> None:
    stack = [
        resource(r.type, every_leaf(dict(r.inputs), UNKNOWN), r.name, dependencies=r.dependencies)
        for r in test_stack.golden()
    ]
    assert pack.analyze_stack(stack) == []
