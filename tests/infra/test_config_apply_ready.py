"""What a real `pulumi up` would refuse, refused by the config first: deprecated vulnerability
scanning, placeholder billing accounts, images without a registry or a real digest."""

from __future__ import annotations

import pytest

from infra.config import ARTIFACT_REPOSITORY, ConfigError, StackConfig
from infra.config.images import is_placeholder_digest, registry_host
from tests.infra.stack_config import load, section
from tools.inventory import Inventory

REAL_DIGEST = "sha256:" + "4f2a9c1e" * 8


def message(stack: str, **changes: object) -> str:
    with pytest.raises(ConfigError) as exc:
        load(stack, **changes)
    return str(exc.value)


# ---------------------------------------------------------------- vulnerability scanning


def test_basic_vulnerability_scanning_is_refused_citing_the_deprecation():
    text = message("dev", cluster={"vulnerabilityScanning": "VULNERABILITY_BASIC"})
    assert "signal-platform:cluster.vulnerabilityScanning: GKE no longer supports basic" in text
    assert "cloud.google.com/kubernetes-engine/docs/deprecations" in text
    assert "allowed: VULNERABILITY_DISABLED" in text


def test_scanning_is_off_by_default_and_enterprise_is_an_explicit_opt_in():
    assert load("dev").cluster.vulnerability_scanning == "VULNERABILITY_DISABLED"
    assert load("prod").cluster.vulnerability_scanning == "VULNERABILITY_DISABLED"
    cluster = {**section("prod", "cluster"), "vulnerabilityScanning": "VULNERABILITY_ENTERPRISE"}
    assert load("prod", cluster=cluster).cluster.vulnerability_scanning.endswith("ENTERPRISE")


# ---------------------------------------------------------------- billing accounts


@pytest.mark.parametrize(
    "account",
    [
        "000000-000000-000000",
        "111111-111111-111111",
        "AAAAAA-AAAAAA-AAAAAA",
        "123456-123456-123456",
        "012345-567890-ABCDEF",
        "0X0X0X-0X0X0X-0X0X0X",
        "XXXXXX-XXXXXX-XXXXXX",
    ],
)
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_placeholder_billing_accounts_are_refused(stack: str, account: str):
    budget = {**section(stack, "budget"), "billingAccount": account}
    text = message(stack, budget=budget)
    assert (
        f"signal-platform:budget.billingAccount: a placeholder, not a billing account (got {account!r})"
        in text
    )


def test_a_real_looking_account_is_taken_and_none_means_no_budget():
    budget = {**section("prod", "budget"), "billingAccount": "01A2B3-C4D5E6-F7A8B9"}
    assert load("prod", budget=budget).budget.billing_account == "01A2B3-C4D5E6-F7A8B9"
    for stack in ("dev", "prod"):
        assert load(stack).budget.billing_account is None, "the stack files carry no placeholder"
    assert "not a Cloud Billing account id" in message(
        "dev", budget={"monthlyUsd": 1, "billingAccount": "01a2b3-c4d5e6-f7a8b9z"}
    )


# ---------------------------------------------------------------- images


def test_registry_hosts_are_read_as_docker_reads_them():
    assert registry_host("nvcr.io/nvidia/tritonserver:25.06-py3") == "nvcr.io"
    assert registry_host("localhost/x") == "localhost"
    assert registry_host("registry:5000/team/x") == "registry:5000"
    assert registry_host("nvidia/tritonserver") is None  # Docker Hub's nvidia/ organisation
    assert registry_host("tritonserver:24.08-py3") is None
    assert is_placeholder_digest("sha256:" + "0" * 64) and not is_placeholder_digest(REAL_DIGEST)


def workloads_with(stack: str, key: str, image: str) -> dict:
    workloads = section(stack, "workloads")
    workloads[key]["image"] = image
    return workloads


@pytest.mark.parametrize(
    ("stack", "key", "image", "fragment"),
    [
        ("dev", "triton", "tritonserver:24.08-py3", "names no registry host"),
        ("dev", "signalService", f"signal-service@{REAL_DIGEST}", "names no registry host"),
        ("dev", "triton", "nvcr.io/nvidia/tritonserver@sha256:" + "0" * 64, "placeholder digest"),
        ("prod", "triton", "nvcr.io/nvidia/tritonserver:25.06-py3", "must be pinned by digest"),
        ("prod", "signalService", "x.io/s@sha256:" + "f" * 64, "placeholder digest"),
        ("dev", "triton", "nvcr.io/NVIDIA/Triton", "not an image reference"),
    ],
)
def test_bad_images_are_refused(stack: str, key: str, image: str, fragment: str):
    text = message(stack, workloads=workloads_with(stack, key, image))
    assert f"signal-platform:workloads.{key}.image: " in text
    assert fragment in text and repr(image) in text


def test_the_metrics_adapter_follows_the_same_rules_in_each_region_override():
    cluster = {**section("prod", "cluster"), "metricsAdapterImage": "adapter:v1"}
    override = section("prod", "regionOverrides")
    override["us-east4"] = {"cluster": cluster}
    text = message("prod", regionOverrides=override)
    assert (
        "signal-platform:regionOverrides.us-east4.cluster.metricsAdapterImage: image names no registry host"
        in text
    )
    assert (
        "regionOverrides.us-east4.cluster.metricsAdapterImage: prod images must be pinned" in text
    )


def test_prod_may_run_a_digest_less_image_only_when_listed_with_its_reason():
    cfg = load("prod")
    (listed,) = cfg.unpinned_images
    assert cfg.cluster.metrics_adapter_image == listed and len(cfg.unpinned_images[listed]) > 20
    # Without the entry the same image is refused; a stale or unexplained entry too.
    assert "prod images must be pinned by digest" in message("prod", unpinnedImages={})
    stale = {"nvcr.io/nvidia/tritonserver:1": "kept for a rollback we never did", listed: "x" * 20}
    assert "signal-platform:unpinnedImages.nvcr.io/nvidia/tritonserver:1: no image" in message(
        "prod", unpinnedImages=stale
    )
    assert "say why it has no digest" in message("prod", unpinnedImages={listed: "todo"})


def test_the_stacks_images_come_from_named_registries():
    for stack in ("dev", "prod"):
        cfg = load(stack)
        assert cfg.workloads.signal_service.image.startswith(cfg.image_registry + "/signal-service")
        assert cfg.workloads.triton.image.startswith("nvcr.io/nvidia/tritonserver")
    prod = load("prod")
    for image in (prod.workloads.signal_service.image, prod.workloads.triton.image):
        assert "@sha256:" in image


def test_deployers_are_iam_members():
    cluster = {"deployers": ["serviceAccount:deployer@p.iam.gserviceaccount.com", "bob"]}
    text = message("dev", cluster=cluster)
    assert (
        "signal-platform:cluster.deployers[1]: not an IAM member that can deploy (got 'bob')"
        in text
    )
    dev = load("dev").model_dump(by_alias=True)
    cfg = StackConfig.model_validate(
        {**dev, "cluster": {**dev["cluster"], "deployers": ["group:ops@x.com"]}}
    )
    assert cfg.cluster.deployers == ("group:ops@x.com",)


def test_previewers_are_iam_members_listed_once():
    previewer = "serviceAccount:previewer@p.iam.gserviceaccount.com"
    text = message("dev", cluster={**section("dev", "cluster"), "previewers": [previewer, "bob"]})
    assert (
        "signal-platform:cluster.previewers[1]: not an IAM member that can preview (got 'bob')"
        in text
    )
    twice = message("dev", cluster={**section("dev", "cluster"), "previewers": [previewer] * 2})
    assert "signal-platform:cluster.previewers[1]: listed twice" in twice
    for stack in ("dev", "prod"):
        (member,) = load(stack).cluster.previewers
        assert (
            member
            == f"serviceAccount:signal-previewer@signal-platform-{stack}.iam.gserviceaccount.com"
        )


def test_the_stacks_registry_is_the_repository_the_program_declares(stack_plan: Inventory):
    cfg = load(stack_plan.stack)
    (registry,) = stack_plan.of_type("gcp:artifactregistry/repository:Repository")
    host, project, repository = cfg.image_registry.split("/")
    assert registry.inputs["repositoryId"] == repository == ARTIFACT_REPOSITORY
    assert host == f"{registry.inputs['location']}-docker.pkg.dev" and project == cfg.project_id


# ---------------------------------------------------------------- images the pipeline pushes


def test_an_own_registry_image_is_one_the_image_workflow_pushed():
    """image.yml pushes `git-<commit>` tags and its pull request pins the digest: any other
    reference into the stack's own repository (dev's old `:dev`) would never pull
    (review.md #3). Prod pins digests anyway."""
    registry = load("dev").image_registry
    workloads = section("dev", "workloads")

    def with_image(image: str) -> dict:
        return {**workloads, "signalService": {**workloads["signalService"], "image": image}}

    refused = message("dev", workloads=with_image(f"{registry}/signal-service:dev"))
    assert refused == (
        "Pulumi.dev.yaml: signal-platform:workloads.signalService.image: the image workflow "
        f"never pushes this tag to the stack's registry (got '{registry}/signal-service:dev'); "
        f"allowed: {registry}/signal-service@sha256:<digest> (image.yml's pull request pins it) "
        "or :git-<40-hex commit>"
    )
    commit = "0123456789abcdef0123456789abcdef01234567"
    for accepted in (
        f"{registry}/signal-service@{REAL_DIGEST}",
        f"{registry}/signal-service:git-{commit}",
        # Another project's registry: not what this stack's pipeline pushes to.
        "us-docker.pkg.dev/another-project/images/signal-service:stable",
    ):
        assert (
            load("dev", workloads=with_image(accepted)).workloads.signal_service.image == accepted
        )


def test_both_stacks_run_the_digest_the_image_workflow_pinned():
    """The image workflow pins one digest in both stack files (stack_image.py pin)."""
    dev, prod = (load(s).workloads.signal_service.image for s in ("dev", "prod"))
    assert dev.split("@")[1] == prod.split("@")[1]
    assert dev.startswith(load("dev").image_registry) and prod.startswith(
        load("prod").image_registry
    )
