"""Every Kubernetes object the plans declare is valid for the cluster it lands on.

Built-in kinds (Deployments, Services, HPAs, PDBs, NetworkPolicies, Namespaces, service accounts,
priority classes, RBAC, APIServices) validate strictly against the official schema of the
cluster's Kubernetes minor version, as `kubernetes-validate` ships it; unknown fields fail.
Custom resources (Istio, ComputeClass, PodMonitoring) have no official schema: their specs
validate against the typed CRD models in `tools.crd_models` (unknown fields fail there too)
and their metadata against the official ObjectMeta.

Schema version: the cluster's configured minor (`cluster.kubernetesMinorVersion`, which is the
cluster's `minMasterVersion`). A minor newer than the newest schema kubernetes-validate ships
falls back to that newest schema, and the test says so; an older one than it ships fails.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
from kubernetes_validate.utils import all_versions

from tests.conftest import REPO
from tools.crd_models import SPECS, crd_problems
from tools.engine import plan
from tools.inventory import UNKNOWN, Inventory, Resource

CLUSTER = "gcp:container/cluster:Cluster"
# Pulumi helpers under the kubernetes package that are not API objects.
NOT_OBJECTS = ("kubernetes:helm.sh/",)
CLUSTER_SCOPED_CUSTOM = {("cloud.google.com/v1", "ComputeClass")}


@pytest.fixture(scope="module", autouse=True)
def parsed_schemas_once() -> Iterator[None]:
    """kubernetes-validate parses its multi-megabyte schema files on every call; parse each
    once for this module (the schemas are read-only data)."""
    cached = functools.cache(kubernetes_validate.utils.schema_contents)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kubernetes_validate.utils, "schema_contents", cached)
        yield


def shipped_versions() -> list[tuple[int, int]]:
    return sorted({tuple(int(p) for p in v.split(".")[:2]) for v in all_versions()})  # type: ignore[misc]


def schema_version(minor: str) -> tuple[str, str | None]:
    """(schema version to validate with, why it differs from the cluster's, if it does)."""
    wanted = tuple(int(p) for p in minor.split("."))
    shipped = shipped_versions()
    if wanted in shipped:
        return f"{minor}.0", None
    newest = shipped[-1]
    if wanted > newest:
        version = f"{newest[0]}.{newest[1]}.0"
        return version, f"kubernetes-validate ships no {minor} schema; validated with {version}"
    raise AssertionError(f"Kubernetes {minor} is older than every schema kubernetes-validate ships")


def kubernetes_objects(plan: Inventory) -> list[Resource]:
    return [
        r
        for r in plan.resources
        if r.type.startswith("kubernetes:") and not r.type.startswith(NOT_OBJECTS)
    ]


def is_custom(resource: Resource) -> bool:
    return (resource.inputs.get("apiVersion"), resource.inputs.get("kind")) in SPECS


def cluster_minors(plan: Inventory) -> dict[str, str]:
    """Region → the Kubernetes minor its cluster runs (a zonal cluster's location is a zone)."""
    regions = plan.regions()
    return {regions[c.urn]: c.inputs["minMasterVersion"] for c in plan.of_type(CLUSTER)}  # type: ignore[misc]


# ---------------------------------------------------------------- the plans


def test_the_plans_declare_the_kinds_this_check_covers(stack_plan: Inventory):
    kinds = {r.inputs["kind"] for r in kubernetes_objects(stack_plan)}
    assert {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "PriorityClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "RoleBinding",
        "APIService",
        "ComputeClass",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "DestinationRule",
        "VirtualService",
        "Gateway",
        "PodMonitoring",
        "StorageClass",
    } <= kinds


def test_the_tracing_telemetry_validates_where_a_collector_is_configured():
    """No collector by default, so no Telemetry in the stacks' plans: validate the one a stack
    with a collector declares (review.md #11)."""
    traced = plan(
        REPO,
        "dev",
        {"signal-platform:mesh": '{"tracingCollector": "otel.tracing.svc.cluster.local:4317"}'},
    )
    (telemetry,) = [r for r in kubernetes_objects(traced) if r.inputs["kind"] == "Telemetry"]
    assert crd_problems(telemetry) == []


def test_built_in_objects_validate_against_the_clusters_schema(stack_plan: Inventory):
    regions = stack_plan.regions()
    minors = cluster_minors(stack_plan)
    checked = 0
    for resource in kubernetes_objects(stack_plan):
        if is_custom(resource):
            continue
        version, note = schema_version(minors[regions[resource.urn]])  # type: ignore[index]
        assert note is None, note  # the repository's clusters have a shipped schema
        try:
            kubernetes_validate.validate(resource.inputs, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # A kind with neither an official schema nor a CRD model would go unchecked.
            pytest.fail(f"{resource.type} has no official schema and no CRD model")
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{resource.name} ({resource.type}) is invalid for {version}: {exc.message}"
            )
        checked += 1
    assert checked >= 20 * len(minors)


def test_custom_resources_validate_against_their_models(stack_plan: Inventory):
    meta_version, _ = schema_version(min(cluster_minors(stack_plan).values()))
    custom = [r for r in kubernetes_objects(stack_plan) if is_custom(r)]
    assert custom
    for resource in custom:
        assert crd_problems(resource) == [], resource.name
        metadata = resource.inputs["metadata"]
        # ObjectMeta is the same for every kind: validate it as a ConfigMap's.
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata},
            meta_version,
            strict=True,
        )
        key = (resource.inputs["apiVersion"], resource.inputs["kind"])
        assert ("namespace" in metadata) is (key not in CLUSTER_SCOPED_CUSTOM), resource.name


# Where a preview cannot know a value yet: the signal service's config file names its region's
# Redis endpoint and carries its server CA, which Memorystore assigns, and the pods' config
# hash follows them.
KNOWN_AFTER_REDIS = {
    ("ConfigMap", ("data", "config.yaml")),
    ("ConfigMap", ("data", "redis-ca.pem")),
    (  # the signal service's pods roll with its config file
        "StatefulSet",
        ("spec", "template", "metadata", "annotations", "signal-platform/config-sha256"),
    ),
}


def _unknown_paths(value: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _unknown_paths(v, (*path, str(k)))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _unknown_paths(v, (*path, str(i)))]
    return [path] if value == UNKNOWN else []


def test_objects_are_known_at_plan_time_but_for_the_redis_endpoint(stack_plan: Inventory):
    late = set()
    for resource in kubernetes_objects(stack_plan):
        for path in _unknown_paths(resource.inputs):
            assert (resource.inputs["kind"], path) in KNOWN_AFTER_REDIS, (resource.name, path)
            late.add((resource.inputs["kind"], path))
        assert resource.inputs["metadata"]["name"], resource.name
    assert late == KNOWN_AFTER_REDIS


# ---------------------------------------------------------------- the check bites


def _first(plan: Inventory, type_token: str) -> Resource:
    return plan.of_type(type_token)[0]


def test_a_misspelled_field_deep_in_a_pod_fails(dev_plan: Inventory):
    deployment = copy.deepcopy(_first(dev_plan, "kubernetes:apps/v1:Deployment").inputs)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.33.0", strict=True)


def test_a_wrong_type_fails(dev_plan: Inventory):
    hpa = copy.deepcopy(
        _first(dev_plan, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler").inputs
    )
    hpa["spec"]["maxReplicas"] = "twenty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, "1.33.0", strict=True)


def test_a_misspelled_custom_resource_field_fails(dev_plan: Inventory):
    rule = _first(dev_plan, "kubernetes:networking.istio.io/v1:DestinationRule")
    broken = copy.deepcopy(rule.inputs)
    broken["spec"]["trafficPolicy"]["connectionPool"]["http"]["maxRequestPerConnection"] = 0
    problems = crd_problems(Resource(**{**rule.__dict__, "inputs": broken}))
    assert [(p, hint) for p, hint, _ in problems] == [
        (
            "spec.trafficPolicy.connectionPool.http.maxRequestPerConnection",
            "maxRequestsPerConnection",
        )
    ]


def test_schema_version_falls_back_only_to_the_newest_shipped():
    assert schema_version("1.33") == ("1.33.0", None)
    newest = shipped_versions()[-1]
    version, note = schema_version(f"{newest[0]}.{newest[1] + 1}")
    assert version == f"{newest[0]}.{newest[1]}.0" and note and "ships no" in note
    with pytest.raises(AssertionError):
        schema_version("1.10")
