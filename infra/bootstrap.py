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
  at their most nodes (tools/bootstrap_command.py derives them from the config).

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
