"""The stack as stack rules read it: what each resource waits for, and the Kubernetes objects
each provider (each cluster) declares, by kind, namespace and name.

A resource waits for what it depends on (its dependencies and property dependencies) and, as a
child waits for its parent's registration, for everything its ancestors wait for. Two
Kubernetes objects are on the same cluster when they name the same provider (no provider: the
default one).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from rules.kit import StackResource
from rules.kube_objects import CLUSTER_SCOPED_KINDS, kube_type, namespace_of
from rules.values import UNKNOWN, as_list, get, is_unknown

Finding = tuple[str | None, str]

CLUSTER = "gcp:container/cluster:Cluster"
MEMBERSHIP = "gcp:gkehub/membership:Membership"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


class Graph:
    """The stack's resources and, for each, every URN it waits for before it is created."""

    def __init__(self, resources: list[StackResource]) -> None:
        self.resources = resources
        self.by_urn = {r.urn: r for r in resources}
        self._closure: dict[str, frozenset[str]] = {}

    @staticmethod
    def edges(r: StackResource) -> set[str]:
        found = set(r.dependencies)
        for urns in r.property_dependencies.values():
            found.update(urns)
        if r.parent:
            found.add(r.parent)
        return found

    def waits_for(self, r: StackResource) -> frozenset[str]:
        """URNs `r` transitively waits for: its dependencies, and its ancestors' (a child's
        registration waits for its parent's, which waits for the parent's dependencies)."""
        if r.urn in self._closure:
            return self._closure[r.urn]
        seen: set[str] = set()
        pending = list(self.edges(r))
        while pending:
            urn = pending.pop()
            if urn in seen:
                continue
            seen.add(urn)
            if urn in self._closure:
                seen |= self._closure[urn]
            elif urn in self.by_urn:
                pending.extend(self.edges(self.by_urn[urn]))
        self._closure[r.urn] = frozenset(seen)
        return self._closure[r.urn]

    def waits(self, r: StackResource, others: Iterable[StackResource]) -> bool:
        closure = self.waits_for(r)
        return any(o.urn in closure for o in others)

    def of_type(self, token: str) -> list[StackResource]:
        return [r for r in self.resources if r.type == token]

    def clusters_of(self, provider_urn: str | None, types: Iterable[str]) -> list[StackResource]:
        """The clusters (resources of `types`) a provider is built from: those it waits for.
        Empty when the provider is not in the stack or waits for none."""
        provider = self.by_urn.get(provider_urn or "")
        if provider is None:
            return []
        closure = self.waits_for(provider)
        wanted = set(types)
        return [
            self.by_urn[u]
            for u in sorted(closure)
            if u in self.by_urn and self.by_urn[u].type in wanted
        ]


def values_at(obj: Any, path: str) -> list[Any]:
    """The values at a dotted path; `name[]` walks a list. Absent steps give nothing;
    an unknown step gives UNKNOWN."""
    current: list[Any] = [obj]
    for step in path.split("."):
        walk = step.endswith("[]")
        key = step[:-2] if walk else step
        found: list[Any] = []
        for value in current:
            item = get(value, key) if key else value
            if item is None:
                continue
            if is_unknown(item):
                found.append(UNKNOWN)
            elif walk:
                found.extend(as_list(item))
            else:
                found.append(item)
        current = found
    return current


def short(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def must_wait(
    graph: Graph,
    r: StackResource,
    needed: list[StackResource],
    what: str,
    missing: str | None,
) -> Iterator[Finding]:
    """`r` needs one of `needed` to exist before it: a finding when the stack has none
    (`missing`; None: nothing to say) or when `r` waits for none of them."""
    if not needed:
        if missing is not None:
            yield (r.urn, missing)
    elif not graph.waits(r, needed):
        names = ", ".join(short(n.urn) for n in needed)
        yield (r.urn, f"{what} without waiting for {names}: add it to depends_on")


# ------------------------------------------------------------------------------ Kubernetes objects


def same(a: Any, b: Any) -> bool:
    """Two identity values match when equal or when either is unknown until the update."""
    return is_unknown(a) or is_unknown(b) or a == b


class KubeObjects:
    """The stack's Kubernetes objects (Helm releases apart), found by kind, namespace and name
    on one provider."""

    def __init__(self, resources: Iterable[StackResource]) -> None:
        self.objects = [r for r in resources if kube_type(r.type) is not None]
        self.releases = [r for r in resources if r.type == HELM_RELEASE]

    def of_kind(
        self, group: str, kind: str, provider: str | None, namespace: Any = None
    ) -> list[StackResource]:
        """Objects of `group`/`kind` on `provider`, in `namespace` when given."""
        found = []
        for r in self.objects:
            kt = kube_type(r.type)
            if kt is None or kt.group != group or kt.kind != kind or r.provider_urn != provider:
                continue
            if namespace is not None and not same(
                namespace_of(r.props, r.provider_props), namespace
            ):
                continue
            found.append(r)
        return found

    def named(
        self, group: str, kind: str, provider: str | None, namespace: Any, name: Any
    ) -> list[StackResource]:
        return [
            r
            for r in self.of_kind(group, kind, provider, namespace)
            if same(get(r.props, "metadata", "name"), name)
        ]

    def releases_in(self, provider: str | None, namespace: Any) -> list[StackResource]:
        """Helm releases on `provider` that install into `namespace` (they may declare any
        object there)."""
        return [
            r
            for r in self.releases
            if r.provider_urn == provider
            and same(
                get(
                    r.props,
                    "namespace",
                    default=get(r.provider_props, "namespace", default="default"),
                ),
                namespace,
            )
        ]


def is_namespaced(r: StackResource) -> bool:
    kt = kube_type(r.type)
    return kt is not None and kt.kind not in CLUSTER_SCOPED_KINDS


def region_of(location: Any) -> str | None:
    """A region from a Google Cloud location (`us-central1` or its zone `us-central1-a`)."""
    if not isinstance(location, str) or not location:
        return None
    parts = location.split("-")
    return "-".join(parts[:2]) if len(parts) >= 3 else location
