"""Binary Authorization: the policy every cluster enforces allows exactly the images the stack
deploys (derived from its config), and denies the rest."""

from __future__ import annotations

import re

import pytest

from infra.admission import ISTIO_HUB, allowlist
from tests.infra.stack_config import load
from tools.inventory import Inventory

BINAUTHZ = "gcp:binaryauthorization/policy:Policy"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
ISTIO_IMAGES = ("proxyv2", "pilot", "install-cni")  # what the base/cni/istiod/gateway charts run


def admitted(image: str, patterns: list[str]) -> bool:
    """Binary Authorization's allowlist match: `*` matches within one path segment, a
    trailing `**` across segments (its documentation, "admissionWhitelistPatterns")."""
    for pattern in patterns:
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if re.fullmatch(regex, image):
            return True
    return False


def planned_images(plan: Inventory) -> set[str]:
    """Every container image of every pod template the plan declares."""
    images = set()
    for resource in plan.resources:
        if not resource.type.startswith("kubernetes:apps/v1:"):
            continue
        spec = resource.inputs["spec"]["template"]["spec"]
        for container in (*spec.get("initContainers", ()), *spec["containers"]):
            images.add(container["image"])
    return images


def test_the_project_denies_by_default_and_trusts_googles_system_images(stack_plan: Inventory):
    (policy,) = stack_plan.of_type(BINAUTHZ)
    assert policy.inputs["defaultAdmissionRule"] == {
        "evaluationMode": "ALWAYS_DENY",
        "enforcementMode": "ENFORCED_BLOCK_AND_AUDIT_LOG",
    }
    # GKE's add-ons, the GCS FUSE sidecar, Managed Prometheus, DCGM: Google's global policy.
    assert policy.inputs["globalPolicyEvaluationMode"] == "ENABLE"
    assert policy.inputs["project"] == stack_plan.outputs["project"]
    assert any(d.endswith("::api-binaryauthorization") for d in policy.options["dependencies"])


def test_every_image_the_stack_deploys_is_admitted(stack_plan: Inventory):
    (policy,) = stack_plan.of_type(BINAUTHZ)
    patterns = [p["namePattern"] for p in policy.inputs["admissionWhitelistPatterns"]]
    images = planned_images(stack_plan)
    assert len(images) >= 3  # the service, Triton, the metrics adapter
    version = load(stack_plan.stack).mesh.istio_version
    images |= {f"{ISTIO_HUB}/{name}:{version}" for name in ISTIO_IMAGES}
    for image in images:
        assert admitted(image, patterns), image


@pytest.mark.parametrize(
    "image",
    [
        "docker.io/library/busybox:latest",  # anything else from Docker Hub
        "nvcr.io/nvidia/cuda:12.4.0-base-ubuntu22.04",  # another NGC repository
        "us-central1-docker.pkg.dev/someone-else/signal/signal-service@sha256:" + "ab" * 32,
        "gcr.io/gke-release-evil/custom-metrics-stackdriver-adapter:v1",
    ],
)
def test_an_image_the_stack_does_not_deploy_is_refused(dev_plan: Inventory, image: str):
    (policy,) = dev_plan.of_type(BINAUTHZ)
    patterns = [p["namePattern"] for p in policy.inputs["admissionWhitelistPatterns"]]
    assert not admitted(image, patterns)


def test_patterns_are_the_configured_repositories_at_any_version():
    assert allowlist(
        [
            "nvcr.io/nvidia/tritonserver@sha256:" + "75" * 32,
            "nvcr.io/nvidia/tritonserver:25.06-py3",
            "gcr.io/gke-release/custom-metrics-stackdriver-adapter:v0.14.2-gke.0",
        ]
    ) == [
        "docker.io/istio/*",
        "gcr.io/gke-release/custom-metrics-stackdriver-adapter*",
        "nvcr.io/nvidia/tritonserver*",
    ]
