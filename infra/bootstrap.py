"""What a stack's first `pulumi up` cannot create itself: its bootstrap, written down as data.

`python -m tools bootstrap --stack <stack>` prints it as the gcloud commands to run once per
project, before the first deploy (README, "Deploying for real"):

- `BOOTSTRAP_APIS`: APIs that cannot enable themselves or are needed before Pulumi runs. Service
  Usage enables every other API and reads the project through Cloud Resource Manager: while
  either is off, enabling anything fails ("Cloud Resource Manager API has not been used in
  project ..."; hashicorp/terraform-provider-google#6101, #11435), and so does the program's
  project lookup during the preview. GitHub's Workload Identity Federation exchanges its token
  with STS and impersonates the deploy account through IAM Credentials before Pulumi starts.
- The deploy and preview identities (`cluster.deployers`, `cluster.previewers`: the accounts of
  the stack's own project are created), the identity pool GitHub's workflows sign in through,
  and their project roles: `DEPLOYER_ROLES` (what creating every resource of the stack takes,
  one role per family, each with why) and `PREVIEWER_ROLES` (reading it all).
- Quota: a new project has no GPU quota and little CPU and SSD quota; the figures the pools need
  at their most nodes (tools/bootstrap.py derives them from the config), vCPUs under each machine
  family's own quota (`cpu_quota`).
- Pulumi's state and secrets: the state bucket behind `PULUMI_BACKEND_URL` and the Cloud KMS key
  behind `PULUMI_SECRETS_PROVIDER`, named from the project (`state_backend`, `secrets_provider`),
  with the deploy and preview accounts' grants on them (`STATE_ROLES`, `SECRETS_ROLES`). They are
  the bootstrap's, not the program's: a `pulumi destroy` must neither delete the state it writes
  nor schedule the destruction of the key that decrypts it. The first deploy creates the stack
  (deploy.yml's `upsert`) with that key as its secrets provider, which the state then records.

The program grants the deployers' and previewers' Connect Gateway roles itself too (for anyone
added later); the bootstrap grants the workflow identities theirs ahead of the first deploy, so
the first Kubernetes call does not race IAM's propagation of a grant made seconds before.
"""

from __future__ import annotations

from collections.abc import Mapping

BOOTSTRAP_APIS: Mapping[str, str] = {
    "cloudresourcemanager.googleapis.com": (
        "Service Usage and the program's project lookup read the project through it; it cannot "
        "enable itself"
    ),
    "serviceusage.googleapis.com": "enables every other API (the program's `APIS`)",
    "iam.googleapis.com": "creates the deploy and preview accounts and GitHub's identity pool",
    "iamcredentials.googleapis.com": (
        "CI impersonates the deploy and preview accounts (and GKE's Workload Identity mints "
        "the pods' tokens with it)"
    ),
    "sts.googleapis.com": "exchanges GitHub's OIDC token for a Google one (Workload Identity Federation)",
    "cloudquotas.googleapis.com": "the quota requests below",
    "storage.googleapis.com": "Pulumi's state bucket, read and written before the program runs",
    "cloudkms.googleapis.com": "the key of the stack's secrets, used before the program runs",
}

# One role per family of what the stack declares, and why (review.md #21). Project roles of
# the deploy identity; a Cloud Billing budget also needs roles/billing.costsManager on the
# billing account (`billing_commands`).
DEPLOYER_ROLES: Mapping[str, str] = {
    "roles/serviceusage.serviceUsageAdmin": "enables the APIs, makes service agents exist",
    "roles/resourcemanager.projectIamAdmin": "project IAM members and audit configs",
    "roles/iam.serviceAccountAdmin": "the workload and node accounts and their IAM",
    "roles/iam.serviceAccountUser": "clusters and node pools run as the node accounts (actAs)",
    "roles/cloudkms.admin": "key rings, keys and their IAM",
    "roles/compute.networkAdmin": "the VPC, subnets, routers and NAT",
    "roles/networkconnectivity.editor": "the service connection policies (Redis Cluster's PSC)",
    "roles/compute.securityAdmin": "firewall rules",
    "roles/container.admin": (
        "clusters and node pools, and the Kubernetes API through IAM before the deployers' "
        "cluster-admin binding exists (Connect Gateway authorises IAM, then RBAC)"
    ),
    "roles/gkehub.admin": "fleet memberships",
    "roles/gkehub.gatewayEditor": "the Kubernetes API through Connect Gateway",
    "roles/binaryauthorization.policyEditor": "the project's admission policy",
    "roles/redis.admin": "Memorystore for Redis Cluster",
    "roles/bigquery.admin": "the dataset, tables, views and their access",
    "roles/pubsub.admin": "topics, schemas, subscriptions and their IAM",
    "roles/storage.admin": "the models and audit-log buckets, their objects and IAM",
    "roles/artifactregistry.admin": "the image registry and its IAM (image.yml pushes to it)",
    "roles/ondemandscanning.admin": "image.yml scans the service image before pushing it",
    "roles/monitoring.editor": "channels, alert policies, the dashboard, the service and SLO",
    "roles/logging.configWriter": "the log-based metric and the audit sink",
}
BILLING_ROLE = "roles/billing.costsManager"  # on the billing account, for the budget

# `pulumi preview` reads every resource (refresh) and its IAM policy; the program adds the
# gateway's read-only roles (infra/cluster.py PREVIEW_GATEWAY_ROLES), granted here ahead too.
PREVIEWER_ROLES: Mapping[str, str] = {
    "roles/viewer": "reads every resource the stack declares",
    "roles/iam.securityReviewer": "reads their IAM policies",
    "roles/gkehub.gatewayReader": "reads the clusters through Connect Gateway",
    "roles/gkehub.viewer": "reads the fleet memberships",
}

# GitHub Actions' Workload Identity Federation (no keys): one pool and OIDC provider per
# project, limited to the repository; the deploy account to its environment's jobs.
IDENTITY_POOL = "github"
IDENTITY_PROVIDER = "github"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
ATTRIBUTE_MAPPING = {
    "google.subject": "assertion.sub",
    "attribute.repository": "assertion.repository",
    "attribute.environment": "assertion.environment",
    "attribute.ref": "assertion.ref",
}


# Compute Engine counts a VM's vCPUs against its machine family's regional quota: E2, N1 and the
# shared-core types against the general CPUS, every other family against its own (N2_CPUS,
# G2_CPUS, ...; Cloud Quotas id `<FAMILY>-CPUS-per-project-region`). Not every project lists
# every family's quota (Compute Engine's quota docs exempt some GPU families' VMs from CPU quota,
# their GPU quota alone applies), so a family's own quota is asked for only where the project has
# it (tools/bootstrap.py). CPUS-ALL-REGIONS counts every family.
GENERAL_CPU_FAMILIES = frozenset({"e2", "n1", "f1", "g1"})
GENERAL_CPU_QUOTA = "CPUS-per-project-region"


def cpu_quota(machine_type: str) -> str:
    """The Cloud Quotas id of the regional vCPU quota a machine type counts against:
    `e2-standard-4` → `CPUS-per-project-region`, `g2-standard-8` → `G2-CPUS-per-project-region`."""
    family = machine_type.split("-", 1)[0].lower()
    if family in GENERAL_CPU_FAMILIES:
        return GENERAL_CPU_QUOTA
    return f"{family.upper()}-CPUS-per-project-region"


# Pulumi's DIY backend in a bucket of the project (project ids are globally unique, so is the
# name), versioned (every checkpoint write keeps its predecessor), uniform access, no public
# access; and a key ring of its own for the stack's secrets (`global`: the URL stays the same
# whatever regions the stack lists). Key rings and keys cannot be deleted, so the names are fixed.
STATE_BUCKET_SUFFIX = "-pulumi-state"
# Every checkpoint write leaves a noncurrent version: kept this long to recover a state, then deleted.
STATE_NONCURRENT_DAYS = 30
SECRETS_LOCATION = "global"
SECRETS_KEY_RING = "pulumi-state"
SECRETS_KEY = "pulumi-secrets"


def state_bucket(project_id: str) -> str:
    return f"{project_id}{STATE_BUCKET_SUFFIX}"


def state_backend(project_id: str) -> str:
    """`PULUMI_BACKEND_URL` of a stack of the project."""
    return f"gs://{state_bucket(project_id)}"


def secrets_provider(project_id: str) -> str:
    """`PULUMI_SECRETS_PROVIDER` of a stack of the project (the key that wraps its data key)."""
    return (
        f"gcpkms://projects/{project_id}/locations/{SECRETS_LOCATION}"
        f"/keyRings/{SECRETS_KEY_RING}/cryptoKeys/{SECRETS_KEY}"
    )


def state_env(project_id: str) -> dict[str, str]:
    """The environment Pulumi reaches a stack's state and secrets with (deploy.yml's)."""
    return {
        "PULUMI_BACKEND_URL": state_backend(project_id),
        "PULUMI_SECRETS_PROVIDER": secrets_provider(project_id),
    }


# Each group's role on the state bucket and on the secrets key. `pulumi up` writes checkpoints,
# history, backups and its lock under `.pulumi/`, and creates the stack (encrypting its data key);
# `pulumi preview` only reads the checkpoint (the DIY backend takes no lock for a preview) and
# decrypts its secrets. `roles/cloudkms.admin` (DEPLOYER_ROLES) manages keys but cannot use them.
STATE_ROLES: Mapping[str, str] = {
    "deployers": "roles/storage.objectAdmin",
    "previewers": "roles/storage.objectViewer",
}
SECRETS_ROLES: Mapping[str, str] = {
    "deployers": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
    "previewers": "roles/cloudkms.cryptoKeyDecrypter",
}
