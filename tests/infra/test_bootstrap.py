"""The bootstrap (infra/bootstrap.py, `python -m tools bootstrap`): what the first `pulumi up`
cannot create itself, held against the program's API list, the resources its plans declare
and the node pools they run; its script run twice against a gcloud stand-in that remembers what
exists (Pulumi's state bucket and secrets key among it)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest

from infra.bootstrap import (
    BOOTSTRAP_APIS,
    DEPLOYER_ROLES,
    PREVIEWER_ROLES,
    SECRETS_ROLES,
    STATE_ROLES,
    cpu_quota,
    secrets_provider,
    state_backend,
)
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
    """Derived from the config, held against what the program deploys: vCPUs per region under
    each planned pool's machine family's quota (E2 on CPUS, G2 on G2-CPUS), SSD per region,
    GPUs per type and in all."""
    config = load(stack_plan.stack)
    found = quotas(config)
    requested = {(q.quota_id, q.region): q.value for q in found}
    shapes = load_pricing()
    cpus_total = 0
    for region, pools in _planned_pools(stack_plan).items():
        by_family: dict[str, int] = {}
        for machine, most, _, _ in pools:
            quota = cpu_quota(machine)
            by_family[quota] = by_family.get(quota, 0) + shapes.shape(machine).vcpus * most
        cpu_ids = {q for q, r in requested if r == region and q.endswith("CPUS-per-project-region")}
        assert cpu_ids == set(by_family)
        assert {"CPUS-per-project-region", "G2-CPUS-per-project-region"} <= cpu_ids
        for quota, cpus in by_family.items():
            assert requested[quota, region] == cpus, quota
        cpus = sum(by_family.values())
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
    # A family's own quota is asked for only where the project lists it; CPUS always.
    assert all(q.if_listed == (q.quota_id == "G2-CPUS-per-project-region") for q in found)


def test_each_machine_family_counts_against_its_own_vcpu_quota():
    assert cpu_quota("e2-standard-4") == "CPUS-per-project-region"
    assert cpu_quota("n1-standard-8") == "CPUS-per-project-region"
    assert cpu_quota("g2-standard-8") == "G2-CPUS-per-project-region"
    assert cpu_quota("n2-standard-4") == "N2-CPUS-per-project-region"
    assert cpu_quota("n2d-standard-4") == "N2D-CPUS-per-project-region"
    assert cpu_quota("a2-highgpu-1g") == "A2-CPUS-per-project-region"


def test_prod_asks_for_g2_vcpus_apart_from_the_system_pools():
    """prod: two L4 pools of 8 x g2-standard-8 per region (128 G2 vCPUs), the system pool's
    E2 vCPUs on CPUS, and every vCPU in CPUS-ALL-REGIONS."""
    config = load("prod")
    requested = {(q.quota_id, q.region): q.value for q in quotas(config)}
    total = 0
    for region in ("us-central1", "us-east4", "europe-west4"):
        assert requested["G2-CPUS-per-project-region", region] == 128
        system = config.region(region).node_pools.system
        e2 = system.max_nodes * max(1, len(config.region(region).node_zones)) * 4
        assert requested["CPUS-per-project-region", region] == e2
        total += 128 + e2
    assert requested["CPUS-ALL-REGIONS-per-project", None] == total


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
    # Pulumi's state bucket and secrets key, created only when missing, and the grants on them.
    bucket = state_backend(config.project_id)
    assert bucket == f"gs://{config.project_id}-pulumi-state"
    assert (
        f"gcloud storage buckets describe {bucket} >/dev/null 2>&1 || "
        f"gcloud storage buckets create {bucket} --location={config.regions[0]} "
    ) in text
    assert (
        f"gcloud storage buckets update {bucket} --versioning --uniform-bucket-level-access"
        " --public-access-prevention "
    ) in text
    ring, key = "pulumi-state", "pulumi-secrets"
    assert secrets_provider(config.project_id) == (
        f"gcpkms://projects/{config.project_id}/locations/global/keyRings/{ring}/cryptoKeys/{key}"
    )
    assert f"gcloud kms keyrings describe {ring} --location=global " in text
    assert re.search(rf"gcloud kms keys describe {key} .*\|\| gcloud kms keys create {key} ", text)
    for group, members in (
        ("deployers", config.cluster.deployers),
        ("previewers", config.cluster.previewers),
    ):
        for member in members:
            assert (
                f"gcloud storage buckets add-iam-policy-binding {bucket} --member={member}"
                f" --role={STATE_ROLES[group]} "
            ) in text
            assert re.search(
                rf"gcloud kms keys add-iam-policy-binding {key} .*--member={re.escape(member)}"
                rf" --role={re.escape(SECRETS_ROLES[group])} ",
                text,
            )
    # The deployer writes state and creates the stack (encrypting its data key); the previewer
    # only reads and decrypts. cloudkms.admin alone can use no key.
    assert STATE_ROLES == {
        "deployers": "roles/storage.objectAdmin",
        "previewers": "roles/storage.objectViewer",
    }
    assert SECRETS_ROLES == {
        "deployers": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
        "previewers": "roles/cloudkms.cryptoKeyDecrypter",
    }
    assert {"storage.googleapis.com", "cloudkms.googleapis.com"} <= set(BOOTSTRAP_APIS)


# A stand-in for gcloud that keeps what exists in a file: `describe` answers from it, `create`
# adds to it (and fails, as gcloud does, on what exists); every call is logged, a lifecycle file
# with its content, as the script passes a temporary one.
FAKE_GCLOUD = """
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
record = [a.split("=", 1)[0] if a.startswith("--lifecycle-file=") else a for a in args]
for a in args:
    if a.startswith("--lifecycle-file="):
        record.append(json.loads(Path(a.split("=", 1)[1]).read_text()))
with open(os.environ["GCLOUD_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
state = Path(os.environ["GCLOUD_STATE"])
exists = set(json.loads(state.read_text())) if state.exists() else set()
if args[:2] == ["projects", "describe"]:
    print("123456789")
    sys.exit(0)
if args[:3] == ["quotas", "info", "describe"]:
    sys.exit(0 if args[3] in os.environ["LISTED"].split(",") else 1)
verb = next((i for i, a in enumerate(args) if a in ("describe", "create", "create-oidc")), None)
if verb is None:
    sys.exit(0)
name = next(a for a in args[verb + 1:] if not a.startswith("-")).split("@")[0]
key = " ".join(args[:verb]) + " " + name
if args[verb] == "describe":
    sys.exit(0 if key in exists else 1)
if key in exists:
    sys.exit("ERROR: already exists: " + key)
exists.add(key)
state.write_text(json.dumps(sorted(exists)))
"""


def _run_with_fake_gcloud(text: str, tmp_path, listed: str) -> tuple[str, list[list]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f"#!{sys.executable}\n{FAKE_GCLOUD}")
    gcloud.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    path = tmp_path / "bootstrap.sh"
    path.write_text(text)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "QUOTA_CONTACT": "ops@example.com",
        "GCLOUD_LOG": str(log),
        "GCLOUD_STATE": str(tmp_path / "state.json"),
        "LISTED": listed,
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, [json.loads(line) for line in log.read_text().splitlines()]


def test_the_script_runs_again_without_creating_anything_twice(tmp_path):
    """Run twice against a gcloud that remembers what exists: the first run creates the accounts,
    identity pool and provider, state bucket, key ring and key; the second creates nothing and
    sets the same settings, grants and quota preferences again."""
    config = load("dev")
    text = script(config, "dev", REPOSITORY)
    bucket = state_backend(config.project_id)
    out, first = _run_with_fake_gcloud(text, tmp_path, listed="")
    created = [c for c in first if "create" in c or "create-oidc" in c]
    assert any(c[:4] == ["storage", "buckets", "create", bucket] for c in created), created
    assert any(c[:4] == ["kms", "keyrings", "create", "pulumi-state"] for c in created)
    assert any(c[:4] == ["kms", "keys", "create", "pulumi-secrets"] for c in created)
    assert "--purpose=encryption" in next(c for c in created if c[:2] == ["kms", "keys"])
    assert len(created) == 2 + 1 + 1 + 3  # two accounts, pool, provider, bucket, ring, key
    (update,) = [c for c in first if c[:3] == ["storage", "buckets", "update"]]
    assert {"--versioning", "--uniform-bucket-level-access", "--public-access-prevention"} <= set(
        w for w in update if isinstance(w, str)
    )
    assert update[-1] == {
        "rule": [{"action": {"type": "Delete"}, "condition": {"daysSinceNoncurrentTime": 30}}]
    }
    # G2's own vCPU quota is not listed here: not asked for, and the run says so.
    quota_ids = [
        w
        for c in first
        if c[:3] == ["quotas", "preferences", "update"]
        for w in c
        if isinstance(w, str) and w.startswith("--quota-id=")
    ]
    assert "--quota-id=G2-CPUS-per-project-region" not in quota_ids
    assert "--quota-id=CPUS-per-project-region" in quota_ids
    assert "G2-CPUS-per-project-region: project signal-platform-dev has no such quota" in out
    assert f"PULUMI_BACKEND_URL={bucket}\n" in out
    assert f"PULUMI_SECRETS_PROVIDER={secrets_provider(config.project_id)}\n" in out
    assert not list(tmp_path.glob("tmp*")), "the lifecycle file is removed"

    _, second = _run_with_fake_gcloud(text, tmp_path, listed="G2-CPUS-per-project-region")
    assert not [c for c in second if "create" in c or "create-oidc" in c]
    bindings = [c for c in second if "add-iam-policy-binding" in c]
    assert bindings == [c for c in first if "add-iam-policy-binding" in c]
    assert [c for c in second if c[:3] == ["storage", "buckets", "update"]] == [update]
    # Listed: G2's vCPUs are asked for under their own quota.
    assert any(
        c[:3] == ["quotas", "preferences", "update"]
        and "--quota-id=G2-CPUS-per-project-region" in c
        and "--preferred-value=16" in c
        for c in second
    )


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


def test_the_state_env_is_the_stacks_from_where_the_project_keeps_its_stack_files(tmp_path):
    """`--state-env` (deploy.yml's) prints the two URLs only, from the stack file in the
    project's stackConfigDir when it names one."""
    (tmp_path / "stacks").mkdir()
    (tmp_path / "infra").mkdir()  # Pulumi.yaml's main: the project is read as Pulumi reads it
    (tmp_path / "Pulumi.yaml").write_text(
        (REPO / "Pulumi.yaml").read_text() + "stackConfigDir: stacks\n"
    )
    (tmp_path / "stacks" / "Pulumi.prod.yaml").write_text((REPO / "Pulumi.prod.yaml").read_text())
    done = _bootstrap("--stack", "prod", "--state-env", "--program", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "PULUMI_BACKEND_URL=gs://signal-platform-prod-pulumi-state\n"
        "PULUMI_SECRETS_PROVIDER=gcpkms://projects/signal-platform-prod/locations/global"
        "/keyRings/pulumi-state/cryptoKeys/pulumi-secrets\n"
    )
    both = _bootstrap("--stack", "prod", "--state-env", "--github-repository", REPOSITORY)
    assert both.returncode == 2 and both.stdout == "" and "not allowed with" in both.stderr
