"""Every rule of the pack, one module per domain; `ALL_POLICIES` is what `__main__` serves."""

from __future__ import annotations

from rules import (
    apply_order,
    compute,
    cost,
    data,
    first_apply,
    fixed_names,
    gke,
    iam,
    istio,
    kube_apply,
    kubernetes,
    mesh_reach,
    nodepool,
    rbac,
    secrets,
    serverless,
    sql,
    stack,
    storage,
)

DOMAINS = (
    gke,
    nodepool,
    kubernetes,
    rbac,
    istio,
    data,
    sql,
    storage,
    compute,
    serverless,
    secrets,
    iam,
    cost,
    stack,
    apply_order,
    first_apply,
    kube_apply,
    mesh_reach,
    fixed_names,
)
ALL_POLICIES = [policy for domain in DOMAINS for policy in domain.RULES.policies]

_names = [policy.name for policy in ALL_POLICIES]
_duplicates = sorted({name for name in _names if _names.count(name) > 1})
if _duplicates:
    raise ValueError(f"policy ids must be unique; duplicated: {', '.join(_duplicates)}")
