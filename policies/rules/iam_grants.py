"""Who an IAM resource grants what: the (role, member) pairs of any service's IAM Member,
Binding or Policy resource, and which of them are public."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from rules.kit import Resource
from rules.values import as_list, get

PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")


def iam_members(r: Resource) -> list[tuple[str, Any]]:
    """(role, member) pairs of an IAM Member, Binding or Policy resource (any service)."""
    props = r.props
    role = get(props, "role")
    if "member" in props:
        return [(role, get(props, "member"))]
    if "members" in props:
        return [(role, m) for m in as_list(get(props, "members"))]
    data = get(props, "policyData")
    if isinstance(data, str):
        try:
            policy = json.loads(data)
        except ValueError:
            return []
        return [
            (get(binding, "role"), member)
            for binding in as_list(get(policy, "bindings"))
            for member in as_list(get(binding, "members"))
        ]
    return []


def is_iam_type(token: str) -> bool:
    """IAM Member/Binding/Policy resources of every service (`...IAMMember`, `...IamBinding`)."""
    kind = token.rsplit(":", 1)[-1].lower()
    return token.startswith("gcp:") and kind.endswith(("iammember", "iambinding", "iampolicy"))


def iam_module(token: str) -> str:
    """The service module of a type token (`gcp:pubsub/topicIAMMember:...` → `pubsub`)."""
    return token.split(":")[1].split("/")[0]


def iam_types_of(*modules: str) -> Callable[[str], bool]:
    return lambda token: is_iam_type(token) and iam_module(token) in modules


def public_members(r: Resource) -> Iterator[str]:
    for role, member in iam_members(r):
        if member in PUBLIC_MEMBERS:
            yield f"grants {role} to {member}"
