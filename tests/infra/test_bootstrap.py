"""The bootstrap (infra/bootstrap.py, `python -m tools bootstrap`): what the first `pulumi up`
cannot create itself, held against the program's API list, the resources its plans declare
and the node pools they run."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from infra.bootstrap import BOOTSTRAP_APIS, DEPLOYER_ROLES, PREVIEWER_ROLES
from infra.cluster import PREVIEW_GATEWAY_ROLES
from infra.signal_platform import APIS
from tests.conftest import REPO
from tests.infra.stack_config import load
from tests.infra.test_apply_order import apis_of
from tools.bootstrap import gpu_quota_name, preference_id, quotas, script
from tools.cost.schema import load_pricing
from tools.inventory import Inventory

NODE_POOL = "gcp:container/nodePool:NodePool"
REPOSITORY = "acme-markets/signal-platform"
# APIs no project can have enabled by the program: Service Usage needs Cloud Resource Manager,
# and neither can enable itself; CI needs IAM Credentials and STS before Pulumi starts.
NOT_BY_THE_PROGRAM = {
    "cloudresourcemanager.googleapis.com",
    "serviceusage.googleapis.com",
    "iamcredentials.googleapis.com",
    "sts.googleapis.com",
}
# Which deployer role creates each module of resource the stacks declare (review.md #21): a
# module a plan gains without a decision here fails the test below.
ROLE_OF_MODULE = {
    "artifactregistry": "roles/artifactregistry.admin",
    "bigquery": "roles/bigquery.admin",
    "billing": None,  # the budget: roles/billing.costsManager on the billing account
    "binaryauthorization": "roles/binaryauthorization.policyEditor",
    "compute": "roles/compute.networkAdmin",
    "container": "roles/container.admin",
    "gkehub": "roles/gkehub.admin",
    "kms": "roles/cloudkms.admin",
    "logging": "roles/logging.configWriter",
    "monitoring": "roles/monitoring.editor",
    "networkconnectivity": "roles/networkconnectivity.editor",
    "projects": "roles/resourcemanager.projectIamAdmin",
    "pubsub": "roles/pubsub.admin",
    "redis": "roles/redis.admin",
    "serviceaccount": "roles/iam.serviceAccountAdmin",
    "storage": "roles/storage.admin",
}


def test_every_api_a_resource_needs_is_the_programs_or_the_bootstraps(stack_plan: Inventory):
    """The pack's type → API table (policies/rules/apply_order.yaml), over every resource of
    the plan: each API is enabled by the program or by the bootstrap before it."""
    needed = {api for resource in stack_plan.resources for api in apis_of(resource)}
    assert needed <= set(APIS) | set(BOOTSTRAP_APIS), needed - set(APIS) - set(BOOTSTRAP_APIS)
    assert not NOT_BY_THE_PROGRAM & set(APIS), "the program would enable what it cannot"
    assert set(BOOTSTRAP_APIS) >= NOT_BY_THE_PROGRAM


def test_the_deployer_may_create_every_kind_of_resource_the_stack_declares(stack_plan: Inventory):
    modules = {
        r.type.split(":")[1].split("/")[0]
        for r in stack_plan.resources
        if r.type.startswith("gcp:")
    }
    assert modules <= set(ROLE_OF_MODULE), (
        f"no deployer role decided for {modules - set(ROLE_OF_MODULE)}"
    )
    for module in modules:
        role = ROLE_OF_MODULE[module]
        assert role is None or role in DEPLOYER_ROLES, (module, role)
    # Node pools and clusters run as the node accounts; Kubernetes calls through the gateway
    # pass IAM (container.admin) before the deployers' RBAC binding exists.
    assert {
        "roles/iam.serviceAccountUser",
        "roles/container.admin",
        "roles/gkehub.gatewayEditor",
    } <= set(DEPLOYER_ROLES)
    assert set(PREVIEW_GATEWAY_ROLES) <= set(PREVIEWER_ROLES)


def _planned_pools(plan: Inventory) -> dict[str, list[tuple[str, int, int, str]]]:
    """Per region, each node pool as the plan declares it: (machine type, most nodes, disk GB,
    disk type); a regional pool's per-zone maximum counts in each of its zones."""
    regions = plan.regions()
    pools: dict[str, list[tuple[str, int, int, str]]] = {}
    for pool in plan.of_type(NODE_POOL):
        scaling = pool.inputs["autoscaling"]
        if "totalMaxNodeCount" in scaling:
            most = scaling["totalMaxNodeCount"]
        else:
            most = scaling["maxNodeCount"] * len(pool.inputs.get("nodeLocations") or [None])
        node = pool.inputs["nodeConfig"]
        pools.setdefault(regions[pool.urn], []).append(  # type: ignore[index]
            (node["machineType"], most, node["diskSizeGb"], node["diskType"])
        )
    return pools


def test_quota_requests_cover_the_planned_pools_at_their_most_nodes(stack_plan: Inventory):
    """Derived from the config, held against what the program deploys: vCPUs and SSD per
    region, GPUs per type and in all."""
    config = load(stack_plan.stack)
    requested = {(q.quota_id, q.region): q.value for q in quotas(config)}
    shapes = load_pricing()
    cpus_total = 0
    for region, pools in _planned_pools(stack_plan).items():
        cpus = sum(shapes.shape(machine).vcpus * most for machine, most, _, _ in pools)
        assert requested["CPUS-per-project-region", region] == cpus
        boot = sum(most * disk for _, most, disk, kind in pools if kind != "pd-standard")
        spools = math.ceil(config.workloads.signal_service.max_replicas * 4 * 2**30 / 10**9)
        assert requested["SSD-TOTAL-GB-per-project-region", region] == boot + spools
        cpus_total += cpus
    assert requested["CPUS-ALL-REGIONS-per-project", None] == cpus_total
    gpus = 0
    for name in config.regions:
        for pool in config.region(name).node_pools.gpu:
            kind = ("PREEMPTIBLE-" if pool.spot else "") + gpu_quota_name(pool.accelerator_type)
            assert requested[f"{kind}-per-project-region", name] >= pool.max_nodes
            gpus += pool.max_nodes * pool.accelerator_count
    assert requested["GPUS-ALL-REGIONS-per-project", None] == gpus > 0


def test_prod_asks_for_its_three_regions_spot_and_on_demand_l4s():
    requested = {(q.quota_id, q.region): q.value for q in quotas(load("prod"))}
    for region in ("us-central1", "us-east4", "europe-west4"):
        assert requested["PREEMPTIBLE-NVIDIA-L4-GPUS-per-project-region", region] == 8
        assert requested["NVIDIA-L4-GPUS-per-project-region", region] == 8
    assert requested["GPUS-ALL-REGIONS-per-project", None] == 48
    ids = [preference_id(q) for q in quotas(load("prod"))]
    assert len(ids) == len(set(ids)) and all(len(i) <= 63 for i in ids)


def test_gpu_quota_names_follow_compute_engines():
    assert gpu_quota_name("nvidia-l4") == "NVIDIA-L4-GPUS"
    assert gpu_quota_name("nvidia-tesla-t4") == "NVIDIA-T4-GPUS"
    assert gpu_quota_name("nvidia-a100-80gb") == "NVIDIA-A100-80GB-GPUS"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_script_is_bash_that_sets_up_what_the_stack_names(stack: str, tmp_path):
    config = load(stack)
    text = script(config, stack, REPOSITORY)
    path = tmp_path / "bootstrap.sh"
    path.write_text(text)
    subprocess.run(["bash", "-n", str(path)], check=True)  # parses as bash
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    enable = next(line for line in text.splitlines() if line.startswith("gcloud services enable"))
    assert set(enable.split()[3:-1]) == set(BOOTSTRAP_APIS)
    for member in config.cluster.deployers:
        account = member.split(":", 1)[1].split("@")[0]
        assert f"gcloud iam service-accounts create {account} " in text
        for role in DEPLOYER_ROLES:
            assert f"--member={member} --role={role} " in text
        # The deploy account: only its environment's jobs of the repository may act as it.
        assert re.search(
            rf"add-iam-policy-binding {re.escape(member.split(':', 1)[1])} .*"
            rf"workloadIdentityPools/github/attribute\.environment/{stack}\"",
            text,
        )
    for member in config.cluster.previewers:
        for role in PREVIEWER_ROLES:
            assert f"--member={member} --role={role} " in text
    assert f"--attribute-condition=\"assertion.repository=='{REPOSITORY}'\"" in text
    for quota in quotas(config):
        assert f"--quota-id={quota.quota_id} --preferred-value={quota.value}" in text


def _bootstrap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools", "bootstrap", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_prints_the_script_and_refuses_bad_input_in_one_line():
    done = _bootstrap("--stack", "dev", "--github-repository", REPOSITORY)
    assert done.returncode == 0, done.stderr
    assert done.stdout == script(load("dev"), "dev", REPOSITORY)
    bad = _bootstrap("--stack", "dev", "--github-repository", "not a repo")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == (
        "error: --github-repository 'not a repo' is not a GitHub repository; allowed: OWNER/REPO\n"
    )
    missing = _bootstrap("--stack", "staging", "--github-repository", REPOSITORY)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("error: ") and "Pulumi.staging.yaml" in missing.stderr
    assert "Traceback" not in missing.stderr
