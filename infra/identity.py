"""Identity: one Google service account per workload and node pool, Workload Identity, KMS.

Least privilege: project-level roles are only the telemetry writers each identity needs;
access to data (topics, tables, buckets, keys) is granted on the resource itself, by the
module that declares it. Keys rotate at most every 90 days and are protected from deletion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

NAMESPACE = "signals"
KEY_ROTATION = "7776000s"  # 90 days: CIS GCP 1.10
ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"


@dataclass(frozen=True)
class WorkloadIdentity:
    """A Kubernetes service account and the Google service account it acts as."""

    account_id: str
    namespace: str
    ksa: str
    project_roles: tuple[str, ...]


WORKLOADS: Mapping[str, WorkloadIdentity] = {
    "signal-service": WorkloadIdentity(
        "signal-service",
        NAMESPACE,
        "signal-service",
        ("roles/monitoring.metricWriter", "roles/cloudtrace.agent", "roles/logging.logWriter"),
    ),
    "triton": WorkloadIdentity(
        "triton",
        NAMESPACE,
        "triton",
        ("roles/monitoring.metricWriter", "roles/logging.logWriter"),
    ),
}

# The minimum a GKE node needs (GKE hardening guide: "least privilege node service account").
NODE_ROLES = (
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/autoscaling.metricsWriter",
)

# Service agents that encrypt with our keys, by key purpose (their email templates take the
# project number).
KEY_USERS: Mapping[str, tuple[str, ...]] = {
    "gke-secrets": ("service-{n}@container-engine-robot.iam.gserviceaccount.com",),
    "disks": ("service-{n}@compute-system.iam.gserviceaccount.com",),
    "redis": ("service-{n}@cloud-redis.iam.gserviceaccount.com",),
    "artifacts": (
        "service-{n}@gcp-sa-artifactregistry.iam.gserviceaccount.com",
        "service-{n}@gs-project-accounts.iam.gserviceaccount.com",
    ),
    "bigquery": ("bq-{n}@bigquery-encryption.iam.gserviceaccount.com",),
    "pubsub": ("service-{n}@gcp-sa-pubsub.iam.gserviceaccount.com",),
    # The audit-log bucket, written by Cloud Storage on the log sink's behalf.
    "audit-logs": ("service-{n}@gs-project-accounts.iam.gserviceaccount.com",),
}
REGIONAL_KEYS = ("gke-secrets", "disks", "redis", "artifacts")
WAREHOUSE_KEYS = ("bigquery", "pubsub", "audit-logs")


def monitoring_viewer(
    name: str,
    project_id: str,
    project_number: pulumi.Input[str],
    namespace: str,
    ksa: str,
    opts: pulumi.ResourceOptions | None = None,
) -> gcp.projects.IAMMember:
    """Lets a Kubernetes service account read Cloud Monitoring as itself: a Workload Identity
    Federation principal (no Google service account, no key). The principal names the
    namespace and account, not the cluster, so one grant serves every cluster."""
    return gcp.projects.IAMMember(
        name,
        project=project_id,
        role="roles/monitoring.viewer",
        member=pulumi.Output.from_input(project_number).apply(
            lambda n: (
                f"principal://iam.googleapis.com/projects/{n}/locations/global/"
                f"workloadIdentityPools/{project_id}.svc.id.goog/subject/ns/{namespace}/sa/{ksa}"
            )
        ),
        opts=opts,
    )


class ServiceAccounts(pulumi.ComponentResource):
    """Google service accounts for the workloads (bound to their KSAs) and the node pools."""

    def __init__(
        self,
        name: str,
        project_id: str,
        node_pools: Sequence[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:ServiceAccounts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.workloads: dict[str, gcp.serviceaccount.Account] = {}
        self.nodes: dict[str, gcp.serviceaccount.Account] = {}

        for key, workload in WORKLOADS.items():
            account = gcp.serviceaccount.Account(
                f"sa-{key}",
                account_id=workload.account_id,
                display_name=f"{key} workload ({workload.namespace}/{workload.ksa})",
                opts=child,
            )
            gcp.serviceaccount.IAMMember(
                f"sa-{key}-workload-identity",
                service_account_id=account.name,
                role="roles/iam.workloadIdentityUser",
                member=f"serviceAccount:{project_id}.svc.id.goog[{workload.namespace}/{workload.ksa}]",
                opts=child,
            )
            self._project_roles(f"sa-{key}", project_id, account, workload.project_roles, child)
            self.workloads[key] = account

        for pool in node_pools:
            account = gcp.serviceaccount.Account(
                f"sa-nodes-{pool}",
                account_id=f"gke-nodes-{pool}"[:30],
                display_name=f"GKE nodes of pool {pool}",
                opts=child,
            )
            self._project_roles(f"sa-nodes-{pool}", project_id, account, NODE_ROLES, child)
            self.nodes[pool] = account

        self.register_outputs({k: a.email for k, a in {**self.workloads, **self.nodes}.items()})

    @staticmethod
    def _project_roles(
        prefix: str,
        project_id: str,
        account: gcp.serviceaccount.Account,
        roles: Sequence[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        for role in roles:
            gcp.projects.IAMMember(
                f"{prefix}-{role.removeprefix('roles/').replace('.', '-')}",
                project=project_id,
                role=role,
                member=account.member,
                opts=opts,
            )


class KeyRing(pulumi.ComponentResource):
    """A KMS key ring in one location with a key per purpose, each usable by its service agent."""

    def __init__(
        self,
        name: str,
        location: str,
        purposes: Sequence[str],
        project_number: pulumi.Input[str],
        labels: Mapping[str, str],
        hsm: bool,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("signal:infra:KeyRing", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.key_ring = gcp.kms.KeyRing(name, name=name, location=location, opts=child)
        self.keys: dict[str, gcp.kms.CryptoKey] = {}
        for purpose in purposes:
            key = gcp.kms.CryptoKey(
                f"{name}-{purpose}",
                name=purpose,
                key_ring=self.key_ring.id,
                purpose="ENCRYPT_DECRYPT",
                rotation_period=KEY_ROTATION,
                version_template={
                    "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION",
                    "protection_level": "HSM" if hsm else "SOFTWARE",
                },
                labels=dict(labels),
                # A destroyed key destroys every byte it encrypted.
                opts=pulumi.ResourceOptions(parent=self, protect=True),
            )
            for i, template in enumerate(KEY_USERS[purpose]):
                gcp.kms.CryptoKeyIAMMember(
                    f"{name}-{purpose}-agent-{i}",
                    crypto_key_id=key.id,
                    role=ENCRYPTER,
                    member=pulumi.Output.from_input(project_number).apply(
                        lambda n, t=template: f"serviceAccount:{t.format(n=n)}"
                    ),
                    opts=child,
                )
            self.keys[purpose] = key
        self.register_outputs({p: k.id for p, k in self.keys.items()})
