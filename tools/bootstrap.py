"""A stack's bootstrap as a shell script of gcloud commands (`python -m tools bootstrap`).

What the first `pulumi up` cannot create itself (infra/bootstrap.py says why each part): the
APIs that cannot enable themselves, the deploy and preview accounts with their roles, GitHub's
Workload Identity Federation, Pulumi's state bucket and secrets key with the accounts' grants on
them, and quota requests for what the node pools need at their most nodes, all derived from the
stack's configuration. Every command can run again (accounts, pools, the bucket, key ring and key
are created only when missing; bucket settings, bindings and quota preferences are set to what
the config says). Imported by the command only when it runs: it imports the program's modules.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from infra.bootstrap import (
    ATTRIBUTE_MAPPING,
    BILLING_ROLE,
    BOOTSTRAP_APIS,
    DEPLOYER_ROLES,
    GENERAL_CPU_QUOTA,
    GITHUB_ISSUER,
    IDENTITY_POOL,
    IDENTITY_PROVIDER,
    PREVIEWER_ROLES,
    SECRETS_KEY,
    SECRETS_KEY_RING,
    SECRETS_LOCATION,
    SECRETS_ROLES,
    STATE_NONCURRENT_DAYS,
    STATE_ROLES,
    cpu_quota,
    state_backend,
    state_env,
)
from infra.config import StackConfig, parse_quantity
from infra.workloads import SPOOL_VOLUME_SIZE
from tools.cost.schema import load_pricing


@dataclass(frozen=True)
class Quota:
    """One Compute Engine quota the stack needs: its Cloud Quotas id, region (None: global)
    and the value, with how it was worked out."""

    quota_id: str
    region: str | None
    value: int
    why: str
    # Asked for only where the project has the quota (a machine family's own vCPU quota).
    if_listed: bool = False


def gpu_quota_name(accelerator: str) -> str:
    """`nvidia-l4` → `NVIDIA-L4-GPUS`, `nvidia-tesla-t4` → `NVIDIA-T4-GPUS` (Compute Engine's
    GPU quota names drop the `tesla` of the accelerator type)."""
    return accelerator.upper().replace("TESLA-", "") + "-GPUS"


def quotas(config: StackConfig) -> list[Quota]:
    """What the node pools need at their most nodes, per region and in all: GPUs (spot ones on
    the preemptible quota), vCPUs per machine family's quota (spot VMs count against it unless
    preemptible CPUs are granted, so all of them), SSD-backed disk (boot disks and the signal
    service's spools)."""
    shapes = load_pricing()
    found: list[Quota] = []
    gpus_total = cpus_total = 0
    for name in config.regions:
        region = config.region(name)
        system = region.node_pools.system
        system_nodes = system.max_nodes * max(1, len(region.node_zones))
        pools = [(system, system_nodes), *((p, p.max_nodes) for p in region.node_pools.gpu)]
        labels = [
            f"{getattr(pool, 'name', 'system')} {n} x {pool.machine_type}" for pool, n in pools
        ]
        described = ", ".join(labels)
        gpus: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for pool in region.node_pools.gpu:
            kind = gpu_quota_name(pool.accelerator_type)
            gpus[f"{'PREEMPTIBLE-' if pool.spot else ''}{kind}-per-project-region"].append(
                (
                    pool.max_nodes * pool.accelerator_count,
                    f"{pool.name} {pool.max_nodes} x {pool.accelerator_count} {pool.accelerator_type}",
                )
            )
        cpus: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for (pool, nodes), label in zip(pools, labels, strict=True):
            cpus[cpu_quota(pool.machine_type)].append(
                (nodes * shapes.shape(pool.machine_type).vcpus, label)
            )
        region_gpus, region_cpus = _summed(gpus, name), _summed(cpus, name, GENERAL_CPU_QUOTA)
        found += region_gpus + region_cpus
        gpus_total += sum(q.value for q in region_gpus)
        cpus_total += sum(q.value for q in region_cpus)
        spools = config.workloads.signal_service.max_replicas  # one spool disk per replica
        disk = sum(
            nodes * pool.disk_size_gb for pool, nodes in pools if pool.disk_type != "pd-standard"
        ) + math.ceil(spools * parse_quantity(SPOOL_VOLUME_SIZE) / 10**9)
        found.append(
            Quota(
                "SSD-TOTAL-GB-per-project-region",
                name,
                disk,
                f"boot disks of {described}; {spools} spool disks of {SPOOL_VOLUME_SIZE}",
            )
        )
    regions = ", ".join(config.regions)
    found.append(Quota("GPUS-ALL-REGIONS-per-project", None, gpus_total, f"every GPU of {regions}"))
    found.append(
        Quota("CPUS-ALL-REGIONS-per-project", None, cpus_total, f"every vCPU of {regions}")
    )
    return found


def _summed(
    parts: dict[str, list[tuple[int, str]]], region: str, always: str | None = None
) -> list[Quota]:
    """One quota per id, its value the sum of its parts, each part named in why. With `always`,
    every other id is a family's own quota, asked for only where the project lists it."""
    return [
        Quota(
            quota_id,
            region,
            sum(count for count, _ in these),
            ", ".join(why for _, why in these),
            if_listed=always is not None and quota_id != always,
        )
        for quota_id, these in sorted(parts.items())
    ]


def preference_id(quota: Quota) -> str:
    """A quota preference's id, unique per quota and region (at most 63 characters)."""
    short = quota.quota_id.lower().removesuffix("-per-project-region").removesuffix("-per-project")
    return f"signal-platform-{short}-{quota.region or 'global'}"


def _own_account(member: str, project: str) -> str | None:
    """The account id of a member that is a service account of the stack's own project."""
    match = re.fullmatch(
        rf"serviceAccount:([a-z][a-z0-9-]{{4,28}}[a-z0-9])@{project}\.iam\.gserviceaccount\.com",
        member,
    )
    return match.group(1) if match else None


def _cmd(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


def script(config: StackConfig, stack: str, repository: str) -> str:
    """The bootstrap of one stack, as a bash script."""
    return "\n".join(_lines(config, stack, repository)) + "\n"


def _lines(config: StackConfig, stack: str, repository: str) -> Iterator[str]:
    project = config.project_id
    yield "#!/usr/bin/env bash"
    yield f"# Bootstrap of stack {stack} (project {project}): once, as a project owner, before the"
    yield '# first `pulumi up` (README, "Deploying for real").'
    yield f"# Generated by: python -m tools bootstrap --stack {stack} --github-repository {repository}"
    yield "set -euo pipefail"
    yield f"PROJECT={shlex.quote(project)}"
    yield 'QUOTA_CONTACT="${QUOTA_CONTACT:?set QUOTA_CONTACT: who Google may ask about the quota requests}"'
    yield ""
    yield "# 1. APIs that cannot enable themselves or are needed before Pulumi runs:"
    for api, why in BOOTSTRAP_APIS.items():
        yield f"#    {api}: {why}"
    yield _cmd("gcloud", "services", "enable", *BOOTSTRAP_APIS) + ' --project="$PROJECT"'
    yield 'PROJECT_NUMBER="$(gcloud projects describe "$PROJECT" --format="value(projectNumber)")"'
    yield ""
    yield "# 2. The deploy and preview identities (cluster.deployers, cluster.previewers) and roles."
    for group, members, roles in (
        ("deployers", config.cluster.deployers, DEPLOYER_ROLES),
        ("previewers", config.cluster.previewers, PREVIEWER_ROLES),
    ):
        for member in members:
            account = _own_account(member, project)
            if account is not None:
                email = member.split(":", 1)[1]
                yield (
                    f'gcloud iam service-accounts describe {email} --project="$PROJECT" >/dev/null 2>&1 || '
                    + _cmd("gcloud", "iam", "service-accounts", "create", account)
                    + f' --project="$PROJECT" --display-name={shlex.quote(f"signal-platform {group[:-1]} ({stack})")}'
                )
            for role, why in roles.items():
                yield f"# {role}: {why}"
                yield (
                    'gcloud projects add-iam-policy-binding "$PROJECT" '
                    + _cmd(f"--member={member}", f"--role={role}", "--condition=None")
                    + " >/dev/null"
                )
    if config.budget.billing_account:
        yield f"# The budget: {BILLING_ROLE} on billing account {config.budget.billing_account}."
        for member in config.cluster.deployers:
            yield (
                _cmd(
                    "gcloud",
                    "billing",
                    "accounts",
                    "add-iam-policy-binding",
                    config.budget.billing_account,
                    f"--member={member}",
                    f"--role={BILLING_ROLE}",
                )
                + " >/dev/null"
            )
    yield ""
    yield f"# 3. GitHub Actions' Workload Identity Federation: {repository} only; the deploy"
    yield f"#    accounts to its `{stack}` environment's jobs (deploy.yml, image.yml)."
    yield (
        f'gcloud iam workload-identity-pools describe {IDENTITY_POOL} --project="$PROJECT" --location=global >/dev/null 2>&1 || '
        + _cmd(
            "gcloud",
            "iam",
            "workload-identity-pools",
            "create",
            IDENTITY_POOL,
            "--location=global",
            "--display-name=GitHub Actions",
        )
        + ' --project="$PROJECT"'
    )
    mapping = ",".join(f"{k}={v}" for k, v in ATTRIBUTE_MAPPING.items())
    yield (
        f'gcloud iam workload-identity-pools providers describe {IDENTITY_PROVIDER} --workload-identity-pool={IDENTITY_POOL} --project="$PROJECT" --location=global >/dev/null 2>&1 || '
        + _cmd(
            "gcloud",
            "iam",
            "workload-identity-pools",
            "providers",
            "create-oidc",
            IDENTITY_PROVIDER,
            f"--workload-identity-pool={IDENTITY_POOL}",
            "--location=global",
            f"--issuer-uri={GITHUB_ISSUER}",
            f"--attribute-mapping={mapping}",
        )
        # The repository is checked (REPOSITORY_RE): nothing in it needs quoting.
        + f' --attribute-condition="assertion.repository==\'{repository}\'" --project="$PROJECT"'
    )
    principals = f"principalSet://iam.googleapis.com/projects/$PROJECT_NUMBER/locations/global/workloadIdentityPools/{IDENTITY_POOL}"
    for members, attribute in (
        (config.cluster.deployers, f"attribute.environment/{stack}"),
        (config.cluster.previewers, f"attribute.repository/{repository}"),
    ):
        for member in members:
            if _own_account(member, project) is None:
                continue
            yield (
                f"gcloud iam service-accounts add-iam-policy-binding {member.split(':', 1)[1]}"
                f' --project="$PROJECT" --role=roles/iam.workloadIdentityUser'
                f' --member="{principals}/{attribute}" >/dev/null'
            )
    yield f'echo "GCP_WORKLOAD_IDENTITY_PROVIDER=projects/$PROJECT_NUMBER/locations/global/workloadIdentityPools/{IDENTITY_POOL}/providers/{IDENTITY_PROVIDER}"'
    yield ""
    yield from _state_lines(config, stack)
    yield ""
    yield "# 5. Quota: what the node pools need at their most nodes (from the stack's config)."
    for quota in quotas(config):
        where = quota.region or "global"
        yield f"# {quota.quota_id} in {where}: {quota.value} ({quota.why})"
        dimensions = [f"--dimensions=region={quota.region}"] if quota.region else []
        update = (
            _cmd(
                "gcloud",
                "quotas",
                "preferences",
                "update",
                preference_id(quota),
                "--allow-missing",
                "--service=compute.googleapis.com",
                f"--quota-id={quota.quota_id}",
                f"--preferred-value={quota.value}",
                *dimensions,
                f"--justification=signal-platform {stack}: node pools at their most nodes",
            )
            + ' --email="$QUOTA_CONTACT" --project="$PROJECT"'
        )
        if not quota.if_listed:
            yield update
            continue
        # A family's own vCPU quota: asked for where the project lists it, said so where not.
        skipped = f"{quota.quota_id}: project $PROJECT has no such quota, nothing to ask for"
        yield (
            f"if {_cmd('gcloud', 'quotas', 'info', 'describe', quota.quota_id, '--service=compute.googleapis.com')}"
            f' --project="$PROJECT" >/dev/null 2>&1; then {update}; else echo "{skipped}"; fi'
        )


def _state_lines(config: StackConfig, stack: str) -> Iterator[str]:
    """Pulumi's state bucket and secrets key, and the accounts' grants on them."""
    bucket = state_backend(config.project_id)
    key = [f"--keyring={SECRETS_KEY_RING}", f"--location={SECRETS_LOCATION}"]
    yield "# 4. Pulumi's state and secrets (infra/bootstrap.py): the state bucket (versioned, uniform"
    yield "#    access, no public access), a key ring and key of the bootstrap's own (a `pulumi"
    yield "#    destroy` never schedules them), the deploy and preview accounts' grants on both."
    yield (
        f"gcloud storage buckets describe {bucket} >/dev/null 2>&1 || "
        + _cmd(
            "gcloud",
            "storage",
            "buckets",
            "create",
            bucket,
            f"--location={config.regions[0]}",
            "--uniform-bucket-level-access",
        )
        + ' --project="$PROJECT"'
    )
    lifecycle = {
        "rule": [
            {
                "action": {"type": "Delete"},
                "condition": {"daysSinceNoncurrentTime": STATE_NONCURRENT_DAYS},
            }
        ]
    }
    # One command a line: under `set -e` a failure inside an `&&` list would not stop the script.
    yield 'LIFECYCLE="$(mktemp)"'
    yield f'echo {shlex.quote(json.dumps(lifecycle))} >"$LIFECYCLE"'
    yield (
        _cmd(
            "gcloud",
            "storage",
            "buckets",
            "update",
            bucket,
            "--versioning",
            "--uniform-bucket-level-access",
            "--public-access-prevention",
        )
        + ' --lifecycle-file="$LIFECYCLE" >/dev/null'
    )
    yield 'rm -f "$LIFECYCLE"'
    yield (
        f'gcloud kms keyrings describe {SECRETS_KEY_RING} --location={SECRETS_LOCATION} --project="$PROJECT" >/dev/null 2>&1 || '
        + _cmd("gcloud", "kms", "keyrings", "create", SECRETS_KEY_RING, key[1])
        + ' --project="$PROJECT"'
    )
    yield (
        f'{_cmd("gcloud", "kms", "keys", "describe", SECRETS_KEY, *key)} --project="$PROJECT" >/dev/null 2>&1 || '
        + _cmd("gcloud", "kms", "keys", "create", SECRETS_KEY, *key, "--purpose=encryption")
        + ' --project="$PROJECT"'
    )
    for group, members in (
        ("deployers", config.cluster.deployers),
        ("previewers", config.cluster.previewers),
    ):
        for member in members:
            yield (
                _cmd(
                    "gcloud",
                    "storage",
                    "buckets",
                    "add-iam-policy-binding",
                    bucket,
                    f"--member={member}",
                    f"--role={STATE_ROLES[group]}",
                )
                + " >/dev/null"
            )
            yield (
                _cmd(
                    "gcloud",
                    "kms",
                    "keys",
                    "add-iam-policy-binding",
                    SECRETS_KEY,
                    *key,
                    f"--member={member}",
                    f"--role={SECRETS_ROLES[group]}",
                )
                + ' --project="$PROJECT" >/dev/null'
            )
    yield f"# deploy.yml derives both from the stack file (python -m tools bootstrap --stack {stack} --state-env);"
    yield "# its first run creates the stack (upsert) with this secrets provider, which the state then"
    yield "# records for every later run (PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER). From a shell: export"
    yield f"# both and PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER=true, then `pulumi stack select {stack}`."
    for name, value in state_env(config.project_id).items():
        yield f"echo {shlex.quote(f'{name}={value}')}"
